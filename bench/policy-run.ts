/**
 * `kproxy run` with and without `--network-policy`, as an operator runs it: against a real
 * kube-apiserver (envtest assets, KUBEBUILDER_ASSETS, the newest set) holding the synthetic
 * cluster of policy-cluster.ts (P pods, Q NetworkPolicies, L of the pods on this node), each run
 * alone in a fresh node namespace made here, in nftables mode. Per run:
 *
 * - **cold start**: process start → the first NetworkPolicy table written (log line; without the
 *   flag: the first Service sync), and CPU seconds (with nft's) over it;
 * - **RSS** 10 s after it, and **idle CPU**: share of one core over `--quiet-seconds` with nothing changing;
 * - **a pod relabelled through the API → the policy table written**: a remote pod becomes a peer of a
 *   local pod's policy; from just before the API write to the log line of the sync that wrote it;
 * - **the window of a new pod**: a pod created on this node, its status then given its address
 *   (as the kubelet does once the sandbox has one), until its address is in the table's
 *   `ingress-ip` map, polled every 20 ms: how long a new pod its policies isolate is not yet isolated;
 * - **churn**: one pod relabelled a second for `--churn-seconds`: CPU share, then RSS.
 *
 * Usage: `KUBEBUILDER_ASSETS=… node bench/policy-run.ts [--pods 10000] [--policies 1000] [--local 100]
 * [--quiet-seconds 60] [--changes 5] [--churn-seconds 60] [--out bench/results/policy-run.json]`.
 * Needs root. Every namespace and process it makes is removed when it ends, pass or fail.
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { ASSET_SETS, RealApiServer } from '../test/support/envtest.ts';
import { ROOT, TestCluster } from '../test/e2e/harness/cluster.ts';
import { BENCH_POLICY_NODE, nsOf, policyCluster, v4 } from './policy-cluster.ts';
import { forApi, kproxyHeap, logLines, parallel, pidIn, sleep, usage, type HeapFigures } from './proc.ts';

const { values: args } = parseArgs({
  options: {
    pods: { type: 'string', default: '10000' },
    policies: { type: 'string', default: '1000' },
    local: { type: 'string', default: '100' },
    'quiet-seconds': { type: 'string', default: '60' },
    changes: { type: 'string', default: '5' },
    'churn-seconds': { type: 'string', default: '60' },
    out: { type: 'string', default: 'bench/results/policy-run.json' },
  },
});
const SIZE = { pods: Number(args.pods), policies: Number(args.policies), local: Number(args.local) };
const ASSETS = ASSET_SETS.at(-1);
const say = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

const cluster = policyCluster(SIZE);
/** New pods: numbers past the cluster's that land in ns-00 with app a0, which ns-00's first policy isolates. */
let nextPod = Math.ceil(SIZE.pods / 100) * 100;

/** The API server with the cluster in it. */
async function loadCluster(api: RealApiServer): Promise<void> {
  const t0 = Date.now();
  await api.applyManifest(join(ROOT, 'manifests/rbac.yaml'));
  await api.applyManifest(join(ROOT, 'manifests/rbac-networkpolicy.yaml'));
  await api.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: BENCH_POLICY_NODE }, status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] } });
  for (const n of cluster.namespaces) {
    await api.create(n);
    // No controller manager to make it: a pod needs its namespace's default ServiceAccount.
    await api.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: (n.metadata as { name: string }).name } });
  }
  await parallel(cluster.pods.length, 32, async (j) => api.create(forApi(cluster.pods[j]!)));
  await parallel(cluster.policies.length, 16, async (i) => api.create(forApi(cluster.policies[i]!)));
  say(`loaded ${cluster.pods.length} pods and ${cluster.policies.length} NetworkPolicies in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

interface Run {
  readonly networkPolicy: boolean;
  coldSeconds?: number;
  coldCpuSeconds?: number;
  rssMiB?: number;
  heap?: HeapFigures;
  idleCpuShare?: number;
  relabelSeconds?: number[];
  newPodWindowSeconds?: number[];
  churnCpuShare?: number;
  churnRssMiB?: number;
}

async function runOnce(api: RealApiServer, networkPolicy: boolean): Promise<Run> {
  const c = await TestCluster.create([], [], 'nftables');
  const row: Run = { networkPolicy };
  try {
    const port = await c.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
    const kubeconfig = join(c.dir, 'kubeconfig');
    writeFileSync(kubeconfig, api.kubeconfig(api.kproxyToken, `https://127.0.0.1:${port}`));
    const began = Date.now();
    const logs = c.startAgent(['--kubeconfig', kubeconfig, '--hostname-override', BENCH_POLICY_NODE, '--cluster-cidr', '10.64.0.0/10', ...(networkPolicy ? ['--network-policy'] : [])]);
    const pid = await pidIn(c, 'src/cli/main.ts');
    const done = networkPolicy ? 'NetworkPolicy table synced' : 'proxy rules synced';
    /** The time of the first `done` line after line `from`, in ms since the epoch. */
    const logged = async (from: number, limitMs: number): Promise<number | undefined> => {
      const end = Date.now() + limitMs;
      while (Date.now() < end) {
        const line = logLines(logs.stderr)
          .slice(from)
          .find((l) => l.msg === done);
        if (line) return Date.parse(line.time);
        await sleep(20);
      }
      return undefined;
    };
    const at = await logged(0, 300_000);
    if (at === undefined) throw new Error(`no '${done}' within 300 s: ${logs.stderr}`);
    row.coldSeconds = round((at - began) / 1000);
    row.coldCpuSeconds = round(usage(pid).cpu, 2);
    await sleep(10_000);
    row.rssMiB = Math.round(usage(pid).rssMiB);
    const heap = await kproxyHeap(c);
    if (heap) row.heap = heap;
    const quiet = Number(args['quiet-seconds']);
    const cpu0 = usage(pid).cpu;
    await sleep(quiet * 1000);
    row.idleCpuShare = round((usage(pid).cpu - cpu0) / quiet, 4);
    say(`${networkPolicy ? 'with' : 'without'} --network-policy: cold ${row.coldSeconds} s, RSS ${row.rssMiB} MiB (heap ${JSON.stringify(row.heap)}), idle ${(row.idleCpuShare * 100).toFixed(1)} %`);
    if (networkPolicy) {
      row.relabelSeconds = [];
      row.newPodWindowSeconds = [];
      for (let k = 0; k < Number(args.changes); k++) {
        // A remote pod of ns-00 (app a0) becomes an a1: a peer of ns-00's first policy, which isolates local pod 0.
        const remote = 100 * (k + 1);
        const from = logLines(logs.stderr).length;
        const t0 = Date.now();
        await api.label('Pod', nsOf(remote), `pod-${remote}`, { app: 'a1' });
        const t1 = await logged(from, 30_000);
        row.relabelSeconds.push(t1 === undefined ? NaN : round((t1 - t0) / 1000));
        // A new pod on this node: created, then given its address, as the kubelet does.
        const j = nextPod;
        nextPod += 100;
        const p = cluster.pod(j) as { spec: Record<string, unknown>; status: unknown; metadata: Record<string, unknown> };
        const pending = { ...forApi(p), spec: { ...p.spec, nodeName: BENCH_POLICY_NODE }, status: undefined };
        await api.create(pending);
        const current = (await api.request('GET', `/api/v1/namespaces/${nsOf(j)}/pods/pod-${j}`)).body as { metadata: Record<string, unknown> };
        const t2 = Date.now();
        await api.request('PUT', `/api/v1/namespaces/${nsOf(j)}/pods/pod-${j}/status`, { ...pending, metadata: current.metadata, status: p.status });
        let t3: number | undefined;
        for (let i = 0; i < 1500 && t3 === undefined; i++) {
          const map = await execa('ip', ['netns', 'exec', c.ns('node-1'), 'nft', 'list', 'map', 'inet', 'kproxy-policy', 'ingress-ip'], { reject: false });
          if (map.stdout.includes(`${v4(j)} :`)) t3 = Date.now();
          else await sleep(20);
        }
        row.newPodWindowSeconds.push(t3 === undefined ? NaN : round((t3 - t2) / 1000));
        await sleep(1500);
      }
      say(`relabel → table ${JSON.stringify(row.relabelSeconds)} s; new pod window ${JSON.stringify(row.newPodWindowSeconds)} s`);
      const churn = Number(args['churn-seconds']);
      const cpu1 = usage(pid).cpu;
      const end = Date.now() + churn * 1000;
      for (let k = 0; Date.now() < end; k++) {
        const j = (SIZE.local + 1 + k) % SIZE.pods;
        await api.label('Pod', nsOf(j), `pod-${j}`, { app: `a${(j + k + 1) % 10}` });
        await sleep(1000);
      }
      row.churnCpuShare = round((usage(pid).cpu - cpu1) / churn, 4);
      row.churnRssMiB = Math.round(usage(pid).rssMiB);
      say(`churn: ${(row.churnCpuShare * 100).toFixed(1)} % of a core, RSS ${row.churnRssMiB} MiB`);
    }
  } finally {
    await c.stopAgent('SIGKILL').catch(() => undefined);
    await c.destroy();
  }
  return row;
}

async function main() {
  if (!ASSETS) throw new Error('set KUBEBUILDER_ASSETS (see test/support/envtest.ts)');
  const api = await RealApiServer.start([], ASSETS);
  try {
    await loadCluster(api);
    const runs = [await runOnce(api, false), await runOnce(api, true)];
    const out = {
      date: new Date().toISOString(),
      host: { cpus: cpus().length, node: process.version, kernel: (await execa('uname', ['-r'])).stdout.trim(), apiServer: ASSETS.version },
      size: SIZE,
      runs: runs.map((r) => ({
        ...r,
        ...(r.relabelSeconds ? { relabelMedianSeconds: median(r.relabelSeconds) } : {}),
        ...(r.newPodWindowSeconds ? { newPodWindowMedianSeconds: median(r.newPodWindowSeconds), newPodWindowMaxSeconds: Math.max(...r.newPodWindowSeconds) } : {}),
      })),
    };
    mkdirSync(dirname(args.out), { recursive: true });
    writeFileSync(args.out, `${JSON.stringify(out, null, 2)}\n`);
    say(`written to ${args.out}`);
  } finally {
    await api.stop();
  }
}

await main();
