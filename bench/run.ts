/**
 * `kproxy run` side by side with upstream kube-proxy, as an operator runs them: against a real
 * kube-apiserver (envtest assets, KUBEBUILDER_ASSETS; `--assets oldest` v1.26, the default, or
 * `newest` v1.36) holding N Services × E endpoints, each proxy alone in a fresh node namespace
 * made here. Proxies: `kproxy-iptables`, `kproxy-nftables`, `upstream` (kube-proxy of the same
 * assets, iptables mode), `upstream-nftables` (the same, nftables mode: v1.33 and later) and
 * `upstream-minimize` (v1.26 with `--feature-gates=MinimizeIPTablesRestore=true`). Per proxy and N:
 *
 * - **cold start**: process start → every rule in the kernel. kproxy: its first sync that wrote
 *   every service port (log line); upstream: its first completed sync
 *   (`kubeproxy_sync_proxy_rules_last_timestamp_seconds`; it syncs only once its informers have
 *   listed everything). A proxy that has not finished within `--cold-limit` seconds is stopped and
 *   reported as such; the later phases are skipped for it. CPU seconds of the process and its
 *   children (iptables-restore, nft) over the cold start.
 * - **RSS after the cold sync**: 10 s after it, so every proxy has settled.
 * - **periodic work**: CPU share of one core over `--quiet-seconds` with nothing changing.
 * - **one endpoint change → its rule in the kernel**: `--changes` changes one at a time, each a
 *   new endpoint address in one EndpointSlice; iptables modes: from just before the API write
 *   until `iptables -t nat -S KUBE-SEP-…` of the new endpoint's chain (upstream's name, which
 *   kproxy shares) succeeds, polled every 20 ms, for both proxies alike. nftables mode: kproxy's
 *   logged `programmingSeconds` (the slice's trigger-time annotation → the nft transaction
 *   returned), as `nft list chain` costs 0.9 s at 10k and cannot be polled; upstream's own
 *   measure of the same, its `kubeproxy_network_programming_duration_seconds` (one change at a
 *   time: the histogram's growth is that change).
 * - **churn**: one change a second for `--churn-seconds`: CPU share, then RSS.
 * - **restart on a loaded node** (kproxy only): kill -9, start again → first full sync.
 * - **the floor** (kproxy only): the tool alone applying the synthetic cluster's rules (floor.ts;
 *   the same mix of Services and endpoints, without default/kubernetes) into a fresh namespace,
 *   next to the same API server and on the same kernel, once before each of `--cold-runs` cold
 *   starts (each in a fresh node namespace; the row gives their median, and the last is the one
 *   the later phases follow): the floor of the cold-start target.
 *
 * Usage: `KUBEBUILDER_ASSETS=… node bench/run.ts [--services 1000,10000] [--endpoints 10]
 * [--assets oldest|newest] [--proxies kproxy-iptables,kproxy-nftables,upstream,upstream-minimize,upstream-nftables] [--cold-limit 600]
 * [--quiet-seconds 60] [--changes 7] [--churn-seconds 300] [--cold-runs 3] [--out bench/results/run.json]
 * [--keep earlier.json --why "…"]`. With `--keep`, the rows of an earlier results file that this
 * invocation does not run (by proxy and size) are carried into `--out`, and `invocations` says
 * which rows came from which invocation, and why (`--why`).
 * Services are loaded incrementally: the 1k run's cluster grows into the 10k one. Needs root.
 * Every namespace and process it makes is removed when it ends, pass or fail.
 * @module
 */
import { execa } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { ASSET_SETS, RealApiServer, UPSTREAM_IN_NAMESPACE } from '../test/support/envtest.ts';
import { TestCluster } from '../test/e2e/harness/cluster.ts';
import { endpointChainName } from '../src/backends/iptables/names.ts';
import type { SyncPhases } from '../src/runner/schedule.ts';
import { benchNode, benchService, benchSlice } from './cluster.ts';
import { applyAlone, benchFloorInput, type FloorInput } from './floor.ts';
import { forApi, kproxyHeap, type HeapFigures, logLines, parallel, pidIn, sleep, usage, type LogLine } from './proc.ts';

const PROXIES = ['kproxy-iptables', 'kproxy-nftables', 'upstream', 'upstream-minimize', 'upstream-nftables'] as const;
type Proxy = (typeof PROXIES)[number];

const { values: args } = parseArgs({
  options: {
    services: { type: 'string', default: '1000,10000' },
    endpoints: { type: 'string', default: '10' },
    proxies: { type: 'string', default: 'kproxy-iptables,kproxy-nftables,upstream,upstream-minimize' },
    /** Which version of the envtest assets runs the API server and upstream kube-proxy: `oldest` (v1.26) or `newest` (v1.36). */
    assets: { type: 'string', default: 'oldest' },
    'cold-limit': { type: 'string', default: '600' },
    'quiet-seconds': { type: 'string', default: '60' },
    changes: { type: 'string', default: '7' },
    'churn-seconds': { type: 'string', default: '300' },
    'sync-period': { type: 'string', default: '30s' },
    'cold-runs': { type: 'string', default: '3' },
    out: { type: 'string', default: 'bench/results/run.json' },
    keep: { type: 'string' },
    why: { type: 'string' },
  },
});
const SIZES = args.services.split(',').map(Number);
const ASSETS = args.assets === 'newest' ? ASSET_SETS.at(-1) : ASSET_SETS[0];
const E = Number(args.endpoints);
const TRIGGER = 'endpoints.kubernetes.io/last-change-trigger-time';
/** The bench mix's first Services would take 10.96.0.0 (the range's network address) and 10.96.0.1 (the API server's own). */
const FIRST = 2;
/**
 * Upstream's metrics and healthz addresses inside its node namespace: below the bench's NodePort
 * range (10000-50000, set on the API server), or a NodePort on 127.0.0.1 would capture them
 * (upstream's default `--iptables-localhost-nodeports`).
 */
const UPSTREAM_METRICS_ADDRESS = '127.0.0.1:9249';
const UPSTREAM_HEALTHZ_ADDRESS = '127.0.0.1:9256';
const t = () => new Date().toISOString().slice(11, 19);
const say = (s: string) => console.log(`[${t()}] ${s}`);

/** Creates Services [from, to) of the mix with their EndpointSlices. */
async function load(api: RealApiServer, from: number, to: number): Promise<void> {
  const started = Date.now();
  await parallel(to - from, 16, async (k) => {
    await api.create(forApi(benchService(FIRST + from + k)));
    await api.create(forApi(benchSlice(FIRST + from + k, E)));
  });
  say(`loaded Services ${from}..${to - 1} × ${E} endpoints in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** One row of bench/results/run.json. Times in seconds, memory in MiB, CPU shares of one core. */
export interface RunRow {
  proxy: Proxy;
  services: number;
  endpoints: number;
  /** Process start → every rule in the kernel (kproxy: the median of coldStartRuns); undefined when one did not finish within coldLimitSeconds. */
  coldStartSeconds?: number;
  /** kproxy: each cold start, each in a fresh node namespace, the last one the row's other phases follow. */
  coldStartRuns?: number[];
  coldLimitSeconds: number;
  coldCpuSeconds: number;
  /** Of coldCpuSeconds, the children's that had exited (iptables-restore, nft, …). */
  coldChildCpuSeconds?: number;
  /** RSS when a cold start that did not finish was stopped. */
  rssAtLimitMiB?: number;
  rssAfterColdMiB?: number;
  /** kproxy only, at the same moment, from its /metrics (prom-client's Node.js metrics): where the RSS goes. */
  heapAfterCold?: HeapFigures;
  /** kproxy only: where its cold start went, from its log (seconds after process start). */
  coldPhases?: ColdPhases;
  quietSeconds?: number;
  quietCoreShare?: number;
  /** One endpoint change at a time → its rule in the kernel. */
  changeSeconds?: number[];
  changeMedianSeconds?: number;
  changeMaxSeconds?: number;
  churnSeconds?: number;
  churnChanges?: number;
  churnCoreShare?: number;
  rssAfterChurnMiB?: number;
  restartSeconds?: number;
  /** kproxy only: the tool alone applying the same rules into a fresh namespace, one run before each cold start (floor.ts). */
  coldFloorSeconds?: number[];
}

/** Marks of a kproxy cold start, seconds after process start: every initial list received, the first complete sync begun. */
export interface ColdPhases {
  listedSeconds: number;
  syncBeganSeconds: number;
  /** The complete sync's own account of its time, per family (its log line's `phasesMs`). */
  phasesMs?: Record<string, SyncPhases>;
}

/** A proxy process under test in its own node namespace. */
interface Running {
  readonly pid: number;
  /** Resolves with the seconds from start to its first complete sync, or undefined past the limit. */
  readonly synced: (began: number, limitMs: number, since?: number) => Promise<number | undefined>;
  /** nftables mode: latencies of changes the proxy reported (kproxy's log, upstream's network-programming metric) since `mark`. */
  readonly logged?: (from: number) => Promise<number[]>;
  /** Where `logged` starts: kproxy's log length, or upstream's metric count. */
  readonly mark?: () => Promise<number>;
  /** kproxy: the marks of its first complete sync, once `synced` has seen it. */
  readonly coldPhases?: (began: number) => ColdPhases | undefined;
  readonly stop: () => Promise<void>;
}

/** A process's command line; empty when it has exited (a process of the namespace may end between the listing and the read). */

/** kproxy run; `n` service ports make a complete sync. */
function startKproxy(c: TestCluster, kubeconfig: string, n: number): Promise<Running> {
  const flags = ['--kubeconfig', kubeconfig, '--hostname-override', 'node-0', '--cluster-cidr', '10.64.0.0/10', '--iptables-sync-period', args['sync-period']];
  const logs = c.startAgent(flags);
  return pidIn(c, 'src/cli/main.ts').then((pid) => ({
    pid,
    async synced(began, limitMs, since = 0) {
      while (Date.now() < began + limitMs) {
        const lines = logLines(logs.stderr).slice(since);
        const done = lines.find((l) => l.msg === 'proxy rules synced' && (l.servicePorts ?? 0) >= n);
        if (done) return (Date.parse(done.time) - began) / 1000;
        const failed = lines.find((l) => l.msg.startsWith('syncing proxy rules failed'));
        if (failed) throw new Error(`kproxy failed: ${JSON.stringify(failed)}`);
        await sleep(100);
      }
      return undefined;
    },
    logged: (from) =>
      Promise.resolve(
        logLines(logs.stderr)
          .slice(from)
          .flatMap((l) => (l.programmingSeconds === undefined ? [] : [l.programmingSeconds])),
      ),
    mark: () => Promise.resolve(logLines(logs.stderr).length),
    coldPhases(began) {
      const lines = logLines(logs.stderr);
      const done = lines.find((l) => l.msg === 'proxy rules synced' && (l.servicePorts ?? 0) >= n);
      const listed = lines.filter((l) => l.msg === 'initial list received').at(-1);
      if (!done || !listed || done.seconds === undefined) return undefined;
      const at = (l: LogLine) => (Date.parse(l.time) - began) / 1000;
      return { listedSeconds: at(listed), syncBeganSeconds: Math.round((at(done) - done.seconds) * 1000) / 1000, ...(done.phasesMs ? { phasesMs: done.phasesMs } : {}) };
    },
    stop: () => c.stopAgent('SIGKILL'),
  }));
}

/** Upstream's network-programming histogram of IPv4 (v1.36 labels it; v1.26 does not): observations and their sum. */
async function programming(c: TestCluster): Promise<{ count: number; sum: number }> {
  const body = (await c.httpGet('node-1', `http://${UPSTREAM_METRICS_ADDRESS}/metrics`).catch(() => ({ body: '' }))).body ?? '';
  const read = (what: 'count' | 'sum') => Number(new RegExp(`^kubeproxy_network_programming_duration_seconds_${what}(?:\\{ip_family="IPv4"\\})? (\\S+)$`, 'm').exec(body)?.[1] ?? 0);
  return { count: read('count'), sum: read('sum') };
}

async function startUpstream(c: TestCluster, kubeconfig: string, minimize: boolean, nftables = false): Promise<Running> {
  let last = { count: 0, sum: 0 };
  const child = execa(
    'ip',
    [
      'netns',
      'exec',
      c.ns('node-1'),
      join(ASSETS!.dir, 'kube-proxy'),
      '--kubeconfig',
      kubeconfig,
      '--hostname-override',
      'node-0',
      '--proxy-mode',
      nftables ? 'nftables' : 'iptables',
      '--cluster-cidr',
      '10.64.0.0/10',
      // v1.26's dual-stack proxier takes its node IP from --bind-address.
      '--bind-address',
      '192.0.2.1',
      // Both modes' periods (v1.36 has no --nftables-* period flags).
      '--iptables-sync-period',
      args['sync-period'],
      '--iptables-min-sync-period',
      '1s',
      ...UPSTREAM_IN_NAMESPACE,
      '--metrics-bind-address',
      UPSTREAM_METRICS_ADDRESS,
      '--healthz-bind-address',
      UPSTREAM_HEALTHZ_ADDRESS,
      ...(minimize ? ['--feature-gates', 'MinimizeIPTablesRestore=true'] : []),
      '--v',
      '1',
    ],
    { reject: false, buffer: false, stdout: 'ignore', stderr: { file: join(c.dir, `kube-proxy-${Date.now()}.log`) } },
  );
  const pid = await pidIn(c, 'kube-proxy');
  return {
    pid,
    async synced(began, limitMs) {
      while (Date.now() < began + limitMs) {
        const body = (await c.httpGet('node-1', `http://${UPSTREAM_METRICS_ADDRESS}/metrics`).catch(() => ({ body: '' }))).body ?? '';
        // v1.26: one series; v1.36: one per ip_family (the IPv4 one carries the Services here).
        const last = Number(/^kubeproxy_sync_proxy_rules_last_timestamp_seconds(?:\{ip_family="IPv4"\})? (\S+)$/m.exec(body)?.[1] ?? 0);
        if (last * 1000 > began) return last - began / 1000;
        await sleep(250);
      }
      return undefined;
    },
    // One change at a time: the histogram's growth since the mark is that change's latency.
    async mark() {
      last = await programming(c);
      return last.count;
    },
    async logged(from) {
      const now = await programming(c);
      return now.count > from ? [(now.sum - last.sum) / (now.count - from)] : [];
    },
    async stop() {
      child.kill('SIGKILL');
      await child;
    },
  };
}

/** Writes a new address for the first endpoint of Service i; returns the write time and the new endpoint's KUBE-SEP chain. */
async function changeEndpoint(api: RealApiServer, i: number, generation: number): Promise<{ at: number; chain: string }> {
  const slice = forApi(benchSlice(i, E, generation)) as { metadata: Record<string, unknown>; endpoints: { addresses: string[] }[] };
  const at = Date.now();
  slice.metadata.annotations = { [TRIGGER]: new Date(at).toISOString() };
  await api.apply(slice);
  const chain = endpointChainName(`ns${i % 100}/svc${i}:http`, 'TCP', `${slice.endpoints[0]!.addresses[0]}:8080`);
  return { at, chain };
}

let generation = 1;

const scratch = mkdtempSync(join(tmpdir(), 'kproxy-run-'));
const floorInputs = new Map<string, FloorInput>();

/** The tool alone applying the rules of `n` Services into a fresh namespace, once: seconds. */
async function floorOnce(mode: 'iptables' | 'nftables', n: number): Promise<number> {
  const key = `${mode} ${n}`;
  let input = floorInputs.get(key);
  if (!input) floorInputs.set(key, (input = benchFloorInput(mode, n, E)));
  const ns = `kpfloor-${process.pid}`;
  await execa('ip', ['netns', 'add', ns]);
  try {
    return (await applyAlone(ns, input, scratch)) / 1000;
  } finally {
    await execa('ip', ['netns', 'del', ns], { reject: false });
  }
}

/** Serves the API server into the cluster's node namespace; returns the kubeconfig for a proxy there. */
async function connect(c: TestCluster, ours: boolean): Promise<string> {
  const port = await c.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
  const kubeconfig = join(c.dir, 'kubeconfig');
  writeFileSync(kubeconfig, api.kubeconfig(ours ? api.kproxyToken : api.adminToken, `https://127.0.0.1:${port}`));
  return kubeconfig;
}

/** One more cold start of kproxy, in a node namespace of its own that is removed after: seconds, or undefined past the limit. */
async function coldOnce(mode: 'iptables' | 'nftables', n: number): Promise<number | undefined> {
  const c = await TestCluster.create([], [], mode);
  try {
    const kubeconfig = await connect(c, true);
    const began = Date.now();
    const p = await startKproxy(c, kubeconfig, n + 1);
    const cold = await p.synced(began, Number(args['cold-limit']) * 1000);
    await p.stop();
    return cold;
  } finally {
    await c.destroy();
  }
}

async function runProxy(api: RealApiServer, proxy: Proxy, n: number): Promise<RunRow> {
  const mode = proxy === 'kproxy-nftables' || proxy === 'upstream-nftables' ? 'nftables' : 'iptables';
  const c = await TestCluster.create([], [], mode);
  const row: RunRow = { proxy, services: n, endpoints: E, coldLimitSeconds: Number(args['cold-limit']), coldCpuSeconds: 0 };
  try {
    const ours = proxy.startsWith('kproxy');
    const kubeconfig = await connect(c, ours);
    // +1: the API server's own default/kubernetes Service.
    const start = () => (ours ? startKproxy(c, kubeconfig, n + 1) : startUpstream(c, kubeconfig, proxy === 'upstream-minimize', proxy === 'upstream-nftables'));

    // kproxy: floors and cold starts taken in turn, so a drift of the machine's speed touches both
    // alike; the last cold start is the one the later phases follow.
    const colds: (number | undefined)[] = [];
    if (ours) {
      row.coldFloorSeconds = [];
      const runs = Math.max(1, Number(args['cold-runs']));
      for (let r = 0; r < runs; r++) {
        row.coldFloorSeconds.push(await floorOnce(mode, n));
        if (r < runs - 1) colds.push(await coldOnce(mode, n));
      }
      say(
        `${proxy} at ${n}: the tool alone, same rules: ${row.coldFloorSeconds.map((x) => x.toFixed(2)).join(', ')} s; cold starts before the last: ${colds.map((x) => x?.toFixed(2) ?? 'not done').join(', ')} s`,
      );
    }
    say(`${proxy} at ${n}: cold start`);
    const began = Date.now();
    const p = await start();
    const cold = await p.synced(began, row.coldLimitSeconds * 1000);
    const coldUsage = usage(p.pid);
    row.coldCpuSeconds = coldUsage.cpu;
    row.coldChildCpuSeconds = coldUsage.childCpu;
    if (cold === undefined) {
      row.rssAtLimitMiB = Math.round(usage(p.pid).rssMiB);
      say(`${proxy} at ${n}: no complete sync within ${row.coldLimitSeconds} s (${row.coldCpuSeconds.toFixed(0)} CPU s); stopped`);
      await p.stop();
      return row;
    }
    colds.push(cold);
    if (colds.every((x) => x !== undefined)) {
      row.coldStartRuns = colds;
      row.coldStartSeconds = quantile(row.coldStartRuns, 0.5);
    }
    const phases = p.coldPhases?.(began);
    if (phases) {
      row.coldPhases = phases;
      say(`${proxy} at ${n}: lists received at ${phases.listedSeconds.toFixed(2)} s, the complete sync began at ${phases.syncBeganSeconds.toFixed(2)} s`);
    }
    await sleep(10_000);
    row.rssAfterColdMiB = Math.round(usage(p.pid).rssMiB);
    if (ours) {
      const heap = await kproxyHeap(c);
      if (heap) {
        row.heapAfterCold = heap;
        say(`${proxy} at ${n}: heap ${heap.usedMiB} MiB used of ${heap.totalMiB}, ${heap.externalMiB} MiB external`);
      }
    }
    say(`${proxy} at ${n}: cold start ${cold.toFixed(1)} s, ${row.coldCpuSeconds.toFixed(1)} CPU s, RSS ${row.rssAfterColdMiB} MiB`);

    const quietSeconds = Number(args['quiet-seconds']);
    const q0 = usage(p.pid);
    await sleep(quietSeconds * 1000);
    row.quietSeconds = quietSeconds;
    row.quietCoreShare = (usage(p.pid).cpu - q0.cpu) / quietSeconds;
    say(`${proxy} at ${n}: quiet ${quietSeconds} s: ${(row.quietCoreShare * 100).toFixed(2)} % of a core`);

    // One change at a time, each waited for.
    const changes: number[] = [];
    for (let k = 0; k < Number(args.changes); k++) {
      // Not a Service with internalTrafficPolicy Local (one in 50 of the mix): without a local
      // endpoint it has no KUBE-SEP- chains to wait for, in upstream or in kproxy.
      let i = FIRST + ((generation * 7) % n);
      if (i % 50 === 7) i++;
      const from = (await p.mark?.()) ?? 0;
      const { at, chain } = await changeEndpoint(api, i, generation++ % 60);
      let landed: number | undefined;
      for (let poll = 0; poll < 3_000 && landed === undefined && Date.now() < at + 60_000; poll++) {
        if (mode === 'nftables') landed = (await p.logged!(from))[0];
        else if ((await execa('ip', ['netns', 'exec', c.ns('node-1'), 'iptables', '-w', '-t', 'nat', '-S', chain], { reject: false })).exitCode === 0) landed = (Date.now() - at) / 1000;
        if (landed === undefined) await sleep(20);
      }
      if (landed === undefined) say(`${proxy} at ${n}: change ${k} did not land within 60 s`);
      else changes.push(landed);
      await sleep(1_500);
    }
    row.changeSeconds = changes;
    row.changeMedianSeconds = quantile(changes, 0.5);
    row.changeMaxSeconds = Math.max(...changes);
    say(`${proxy} at ${n}: changes landed in ${changes.map((s) => s.toFixed(3)).join(', ')} s`);

    // Churn: one change a second.
    const churnSeconds = Number(args['churn-seconds']);
    const c0 = usage(p.pid);
    const churnEnd = Date.now() + churnSeconds * 1000;
    let churned = 0;
    while (Date.now() < churnEnd) {
      const next = Date.now() + 1_000;
      await changeEndpoint(api, FIRST + ((generation * 7) % n), generation++ % 60);
      churned++;
      await sleep(Math.max(0, next - Date.now()));
    }
    row.churnSeconds = churnSeconds;
    row.churnChanges = churned;
    row.churnCoreShare = (usage(p.pid).cpu - c0.cpu) / churnSeconds;
    await sleep(5_000);
    row.rssAfterChurnMiB = Math.round(usage(p.pid).rssMiB);
    say(`${proxy} at ${n}: churn ${churned} changes: ${(row.churnCoreShare * 100).toFixed(1)} % of a core, RSS ${row.rssAfterChurnMiB} MiB`);

    await p.stop();
    if (ours) {
      const again = Date.now();
      const q = await start();
      const restart = await q.synced(again, row.coldLimitSeconds * 1000, 0);
      if (restart !== undefined) row.restartSeconds = restart;
      say(`${proxy} at ${n}: restart on the loaded node ${restart?.toFixed(1) ?? 'did not finish'} s`);
      await q.stop();
    }
    return row;
  } finally {
    await c.destroy();
  }
}

if (!ASSETS || !existsSync(join(ASSETS.dir, 'kube-proxy'))) {
  console.log('bench/run.ts needs KUBEBUILDER_ASSETS with kube-apiserver, etcd and kube-proxy (README: "Against a real kube-apiserver"); nothing measured');
  process.exit(0);
}
if (ASSETS.minor >= 30 && args.proxies.includes('upstream-minimize')) throw new Error(`upstream-minimize needs the MinimizeIPTablesRestore feature gate, gone in ${ASSETS.version} (GA in v1.28)`);
say(`API server and upstream kube-proxy ${ASSETS.version}`);
const api = await RealApiServer.start(['--service-node-port-range=10000-50000', '--max-requests-inflight=1000'], ASSETS);
const rows: RunRow[] = [];
interface Invocation {
  date: string;
  rows: string[];
  why?: string;
}
/** The earlier file's rows and invocations, when `--keep` names one. */
const kept = args.keep ? (JSON.parse(readFileSync(args.keep, 'utf8')) as { date: string; rows: RunRow[]; invocations?: Invocation[] }) : undefined;
const save = () => {
  mkdirSync(dirname(args.out), { recursive: true });
  const cpus = (readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm) ?? []).length;
  const date = new Date().toISOString();
  const id = (r: RunRow) => `${r.proxy} ${r.services}×${r.endpoints}`;
  const ran = new Set(rows.map(id));
  const carried = (kept?.rows ?? []).filter((r) => !ran.has(id(r)));
  const invocations: Invocation[] = [];
  if (carried.length > 0) {
    const keptIds = new Set(carried.map(id));
    for (const inv of kept!.invocations ?? [{ date: kept!.date, rows: kept!.rows.map(id) }]) {
      const still = inv.rows.filter((r) => keptIds.has(r));
      if (still.length > 0) invocations.push({ ...inv, rows: still });
    }
    invocations.push({ date, rows: rows.map(id), ...(args.why ? { why: args.why } : {}) });
  }
  const order = (r: RunRow) => (r.services * 100 + r.endpoints) * 10 + PROXIES.indexOf(r.proxy);
  const all = [...carried, ...rows].sort((a, b) => order(a) - order(b));
  writeFileSync(args.out, `${JSON.stringify({ date, kubernetes: ASSETS.version, ...(invocations.length > 0 ? { invocations } : {}), cpus, syncPeriod: args['sync-period'], rows: all }, null, 2)}\n`);
};
try {
  await api.applyManifest(join(import.meta.dirname, '../manifests/rbac.yaml'));
  for (let ns = 0; ns < 100; ns++) await api.ensureNamespace(`ns${ns}`);
  await api.apply(benchNode());
  let loaded = 0;
  for (const n of SIZES) {
    await load(api, loaded, n);
    loaded = n;
    for (const proxy of args.proxies.split(',') as Proxy[]) {
      rows.push(await runProxy(api, proxy, n));
      save();
    }
  }
} finally {
  await api.stop();
  rmSync(scratch, { recursive: true, force: true });
}
save();
console.log(JSON.stringify(rows, null, 2));
