/**
 * Upstream kube-proxy v1.26 (envtest assets) as an oracle: running it in a test cluster's node-1,
 * waiting for it to have synced, and reading its `iptables-save` / `ip6tables-save` with kproxy's
 * intended departures taken out (test/e2e/oracle.test.ts lists them).
 */
import { execa } from 'execa';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { NODE1_IP, NODE2_IP, TestCluster } from '../e2e/harness/cluster.ts';
import { node } from './objects.ts';
import { RealApiServer, UPSTREAM_IN_NAMESPACE, type EnvtestAssets } from './envtest.ts';

const UNORDERED = new Set(['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-EXTERNAL-SERVICES', 'KUBE-PROXY-FIREWALL']);
const BUILTIN = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** `iptables-save` or `ip6tables-save` as `table chain` → rules, with the intended departures (oracle.test.ts) taken out. */
export function comparable(save: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  let table = '';
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    if (table !== 'nat' && table !== 'filter') continue;
    const declared = /^:(\S+)/.exec(line)?.[1];
    const rule = /^-A (\S+) (.*)$/.exec(line);
    const chain = declared ?? rule?.[1];
    if (chain === undefined || chain === 'KUBE-PROXY-CANARY') continue;
    // Departure 5: v1.28+'s KUBE-FIREWALL (filter), empty without localhost NodePorts, and its jumps.
    if (table === 'filter' && (chain === 'KUBE-FIREWALL' || rule?.[2] === '-j KUBE-FIREWALL')) continue;
    const key = `${table} ${chain}`;
    out[key] ??= [];
    if (!rule || (chain.startsWith('KUBE-FW-') && / will be dropped by KUBE-PROXY-FIREWALL"?$/.test(rule[2]!) && !rule[2]!.includes(' -j '))) continue;
    // Departure 6: v1.29+ counts the conntrack-INVALID drop in an nfacct object when it can.
    out[key].push(rule[2]!.replace(/ -m nfacct --nfacct-name +ct_state_invalid_dropped_pkts/, ''));
  }
  for (const [key, rules] of Object.entries(out)) {
    const chain = key.split(' ')[1]!;
    if (UNORDERED.has(chain) || BUILTIN.has(chain)) rules.sort();
    // Built-in chains kproxy never writes to appear in one dump and not the other.
    if (BUILTIN.has(chain) && rules.length === 0) delete out[key];
  }
  return out;
}

/** Upstream kube-proxy of `assets`' version in `cluster`'s node-1, in the background, its log in the cluster's folder. Its metrics must listen on 127.0.0.1:10249. */
export function startUpstream(cluster: TestCluster, args: readonly string[], assets: EnvtestAssets) {
  return execa('ip', ['netns', 'exec', cluster.ns('node-1'), join(assets.dir, 'kube-proxy'), ...args], {
    reject: false,
    buffer: false,
    stdout: 'ignore',
    stderr: { file: join(cluster.dir, 'kube-proxy.log') },
  });
}

/**
 * Upstream's flags for the oracles: iptables mode as node-1, syncing at once and never
 * periodically, its servers on node-1's loopback (metrics on 127.0.0.1:10249).
 * @param clusterCIDR `--cluster-cidr`, one CIDR per family
 */
export function upstreamArgs(kubeconfig: string, clusterCIDR: string): string[] {
  return [
    '--kubeconfig',
    kubeconfig,
    '--hostname-override',
    'node-1',
    '--proxy-mode',
    'iptables',
    '--cluster-cidr',
    clusterCIDR,
    // v1.26's dual-stack proxier takes its node IP from --bind-address (0.0.0.0 by default), not from
    // the Node object as its single-stack one and kproxy do; name it, so both see node-1's address.
    '--bind-address',
    NODE1_IP,
    '--iptables-localhost-nodeports=false',
    '--iptables-min-sync-period',
    '0s',
    '--iptables-sync-period',
    '1h',
    ...UPSTREAM_IN_NAMESPACE,
    '--metrics-bind-address',
    '127.0.0.1:10249',
    '--healthz-bind-address',
    '127.0.0.1:10256',
    '--v',
    '1',
  ];
}

/**
 * Gives the API server's own Service to another proxy (the label upstream and kproxy both honour):
 * the API server rewrites its endpoints now and then, so two proxies could see different versions.
 * Right after start the API server may not have made the Service yet, or may update it meanwhile
 * (409): retried, bounded (50 tries, 200 ms apart).
 * @throws Error with the last answer when it never succeeds
 */
export async function hideKubernetesService(api: RealApiServer): Promise<void> {
  const path = '/api/v1/namespaces/default/services/kubernetes';
  let last = '';
  for (let i = 0; i < 50; i++) {
    const got = await api.request('GET', path);
    if (got.status === 200) {
      const kubernetes = got.body as { metadata: { labels?: Record<string, string> } };
      kubernetes.metadata.labels = { ...kubernetes.metadata.labels, 'service.kubernetes.io/service-proxy-name': 'elsewhere' };
      const put = await api.request('PUT', path, kubernetes);
      if (put.status === 200) return;
      last = `PUT: HTTP ${put.status}`;
    } else last = `GET: HTTP ${got.status}`;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`labelling default/kubernetes failed: ${last}`);
}

/**
 * Whether upstream has synced since `since` and has no change queued after its last sync, in any
 * IP family: v1.26 exports one unlabelled series of each sync timestamp, v1.36 one per `ip_family`.
 */
async function syncedSince(cluster: TestCluster, since: number): Promise<boolean> {
  const body = (await cluster.httpGet('node-1', 'http://127.0.0.1:10249/metrics')).body ?? '';
  const series = (name: string) => {
    const out = new Map<string, number>();
    for (const m of body.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) out.set(m[1] ?? '', Number(m[2]) * 1000);
    return out;
  };
  const last = series('kubeproxy_sync_proxy_rules_last_timestamp_seconds');
  const queued = series('kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds');
  // A family whose proxier had nothing to do (v1.36's IPv6 one, for IPv4 changes) does not sync.
  const families = [...last];
  return families.some(([, at]) => at >= since) && families.every(([labels, at]) => at >= (queued.get(labels) ?? 0));
}

/**
 * Waits (bounded: 300 polls, 30 s) until upstream has synced everything: a sync ended after
 * `since` and after the last change it queued, twice in a row 150 ms apart (an event still in
 * flight would queue another sync).
 */
export async function upstreamSettled(cluster: TestCluster, since: number): Promise<void> {
  const end = Date.now() + 30_000;
  let settled = 0;
  for (let i = 0; i < 300 && Date.now() < end && settled < 2; i++) {
    settled = (await syncedSince(cluster, since)) ? settled + 1 : 0;
    await new Promise((r) => setTimeout(r, 150));
  }
  if (settled < 2) {
    // Its last errors say why (a failed restore, a flag it refuses).
    const log = readFileSync(join(cluster.dir, 'kube-proxy.log'), 'utf8').split('\n');
    expect.fail(
      `upstream kube-proxy did not sync in time; its last errors:\n${log
        .filter((l) => /^E/.test(l))
        .slice(-8)
        .join('\n')}`,
    );
  }
}

/** The Services, EndpointSlices, Nodes and ServiceCIDRs (v1.33 and later) as `api` serves them, with kind and apiVersion (list items have none): what `kproxy sync` is fed beside upstream. */
export async function servedObjects(api: RealApiServer): Promise<object[]> {
  const list = async (path: string, kind: string, apiVersion: string) => {
    const r = await api.request('GET', path);
    // ServiceCIDRs: a server before v1.33 answers 404.
    if (r.status === 404 && kind === 'ServiceCIDR') return [];
    return (r.body as { items: object[] }).items.map((item) => ({ kind, apiVersion, ...item }));
  };
  return [
    ...(await list('/api/v1/services', 'Service', 'v1')),
    ...(await list('/apis/discovery.k8s.io/v1/endpointslices', 'EndpointSlice', 'discovery.k8s.io/v1')),
    ...(await list('/api/v1/nodes', 'Node', 'v1')),
    ...(await list('/apis/networking.k8s.io/v1/servicecidrs', 'ServiceCIDR', 'networking.k8s.io/v1')),
  ];
}

/** The example cluster's objects as a client would create them (no server-set metadata), without the API server's own Service. */
export function exampleObjects(items: readonly Record<string, unknown>[]): object[] {
  return items
    .map((o) => {
      const c = structuredClone(o) as { metadata: Record<string, unknown>; kind: string };
      for (const f of ['resourceVersion', 'uid', 'managedFields', 'creationTimestamp', 'generation']) delete c.metadata[f];
      return c;
    })
    .filter((o) => !(o.kind === 'Service' && o.metadata.name === 'kubernetes'));
}

/**
 * The oracles' rig: a real API server of `assets`' version with node-1 and node-2, upstream
 * kube-proxy of the same version in one test cluster's node-1 and an empty cluster for `kproxy
 * sync` beside it, in `mode`. {@link program} loads a cluster into both; `stop()` removes it all.
 */
export class OracleRig {
  readonly api: RealApiServer;
  readonly upstream: TestCluster;
  readonly ours: TestCluster;
  readonly mode: 'iptables' | 'nftables';
  readonly #assets: EnvtestAssets;
  readonly #kubeconfig: string;
  #proxy: ReturnType<typeof startUpstream> | undefined;
  #written: { kind: string; namespace: string | undefined; name: string }[] = [];

  private constructor(api: RealApiServer, upstream: TestCluster, ours: TestCluster, mode: 'iptables' | 'nftables', assets: EnvtestAssets, kubeconfig: string) {
    this.api = api;
    this.upstream = upstream;
    this.ours = ours;
    this.mode = mode;
    this.#assets = assets;
    this.#kubeconfig = kubeconfig;
  }

  /** Starts the API server, both clusters and upstream (with `upstreamArgs` in `mode`). */
  static async start(mode: 'iptables' | 'nftables', assets: EnvtestAssets): Promise<OracleRig> {
    const api = await RealApiServer.start([], assets);
    const made: TestCluster[] = [];
    try {
      for (const n of [node('node-1', 'zone-a', [NODE1_IP]), node('node-2', 'zone-b', [NODE2_IP])]) await api.apply(n);
      await hideKubernetesService(api);
      const upstream = await TestCluster.create([], [], mode);
      made.push(upstream);
      const ours = await TestCluster.create([], [], mode);
      made.push(ours);
      const port = await upstream.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
      const kubeconfig = join(upstream.dir, 'kubeconfig');
      writeFileSync(kubeconfig, api.kubeconfig(api.adminToken, `https://127.0.0.1:${port}`));
      const rig = new OracleRig(api, upstream, ours, mode, assets, kubeconfig);
      void rig.restartUpstream();
      return rig;
    } catch (err) {
      for (const c of made) await c.destroy();
      await api.stop();
      throw err;
    }
  }

  /** (Re)starts upstream with the oracles' flags in the rig's mode, plus `extra`. */
  restartUpstream(extra: readonly string[] = []): Promise<void> {
    const old = this.#proxy;
    old?.kill('SIGKILL');
    const args = upstreamArgs(this.#kubeconfig, '10.244.0.0/16').map((a) => (a === 'iptables' ? this.mode : a));
    this.#proxy = startUpstream(this.upstream, [...args, ...extra], this.#assets);
    return old ? old.then(() => undefined) : Promise.resolve();
  }

  /**
   * Replaces the cluster's objects in the API, waits for upstream to have synced them, and syncs
   * kproxy (`--proxy-mode`, node-1, `--cluster-cidr 10.244.0.0/16` and `flags`) with the objects as
   * the API server serves them.
   */
  async program(objects: readonly object[], flags: readonly string[] = []): Promise<void> {
    for (const o of this.#written) await this.api.remove(o.kind, o.namespace, o.name);
    this.#written = [];
    for (const o of objects) {
      const created = await this.api.apply(o);
      this.#written.push({ kind: created.kind ?? (o as { kind: string }).kind, namespace: created.metadata.namespace, name: created.metadata.name });
    }
    await upstreamSettled(this.upstream, Date.now());
    await this.ours.sync(await servedObjects(this.api), ['--cluster-cidr', '10.244.0.0/16', ...flags]);
  }

  async stop(): Promise<void> {
    this.#proxy?.kill('SIGKILL');
    await this.#proxy;
    await this.upstream.destroy();
    await this.ours.destroy();
    await this.api.stop();
  }
}
