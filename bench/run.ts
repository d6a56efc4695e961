/**
 * `kproxy run` as an operator runs it: against a real kube-apiserver v1.26 (envtest assets,
 * KUBEBUILDER_ASSETS) holding N Services × E endpoints, in a node namespace made here, in both
 * modes. What it measures, per mode:
 *
 * - **cold start**: process start → the first sync that wrote every service port (its log line);
 * - **periodic work**: CPU seconds of kproxy and its children (iptables, nft) over a window of
 *   several sync periods with nothing changing, as a share of one core;
 * - **changes under periodic work**: over a second window, one EndpointSlice change every
 *   `--change-every` seconds; each change carries the EndpointSlice controller's trigger-time
 *   annotation, and kproxy logs how long after it the change was in the kernel (the sync's
 *   `programmingSeconds`); median and max;
 * - **restart on a loaded node**: kill -9, start again → first sync done, against the cold start;
 * - RSS after the cold sync and at the end.
 *
 * Usage: `KUBEBUILDER_ASSETS=… node bench/run.ts [--services 10000] [--endpoints 10]
 * [--modes iptables,nftables] [--quiet-seconds 180] [--churn-seconds 120] [--change-every 1]
 * [--out bench/results/run.json]`. Needs root. Every namespace and process it makes is removed
 * when it ends, pass or fail.
 * @module
 */
import { execa } from 'execa';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { RealApiServer } from '../test/support/envtest.ts';
import { TestCluster } from '../test/e2e/harness/cluster.ts';
import { benchService, benchSlice } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    endpoints: { type: 'string', default: '10' },
    modes: { type: 'string', default: 'iptables,nftables' },
    'quiet-seconds': { type: 'string', default: '180' },
    'churn-seconds': { type: 'string', default: '120' },
    'change-every': { type: 'string', default: '1' },
    'sync-period': { type: 'string', default: '30s' },
    out: { type: 'string', default: 'bench/results/run.json' },
  },
});
const N = Number(args.services);
const E = Number(args.endpoints);
const TRIGGER = 'endpoints.kubernetes.io/last-change-trigger-time';
/** The bench mix's first Services would take 10.96.0.0 (the range's network address) and 10.96.0.1 (the API server's own). */
const FIRST = 2;
const t = () => new Date().toISOString().slice(11, 19);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` over 0..n-1 with `limit` calls in flight. */
async function parallel(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** Strips what the API server sets itself from a bench object. */
function forApi<T extends object>(o: T): T {
  const c = structuredClone(o) as { metadata: Record<string, unknown> };
  delete c.metadata.uid;
  delete c.metadata.resourceVersion;
  return c as T;
}

async function load(api: RealApiServer): Promise<void> {
  const started = Date.now();
  for (let ns = 0; ns < 100; ns++) await api.ensureNamespace(`ns${ns}`);
  await api.apply({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-0', labels: { 'topology.kubernetes.io/zone': 'zone-0' } },
    status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
  });
  await parallel(N, 16, async (i) => {
    await api.create(forApi(benchService(FIRST + i)));
    await api.create(forApi(benchSlice(FIRST + i, E)));
  });
  console.log(`[${t()}] loaded ${N} Services and EndpointSlices × ${E} endpoints in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

interface LogLine {
  readonly time: string;
  readonly msg: string;
  readonly full?: boolean;
  readonly seconds?: number;
  readonly servicePorts?: number;
  readonly programmingSeconds?: number;
}
const logLines = (file: string): LogLine[] =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);

/** CPU seconds (own and of waited-for children) and RSS of a process, from /proc. */
function usage(pid: number): { cpu: number; rssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { cpu: ticks / 100, rssMiB: Number(rss) / 1024 };
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

async function runMode(api: RealApiServer, mode: 'iptables' | 'nftables'): Promise<Record<string, unknown>> {
  const c = await TestCluster.create([], [], mode);
  try {
    const port = await c.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
    const kubeconfig = join(c.dir, 'kubeconfig');
    writeFileSync(kubeconfig, api.kubeconfig(api.kproxyToken, `https://127.0.0.1:${port}`));
    const flags = ['--kubeconfig', kubeconfig, '--hostname-override', 'node-0', '--cluster-cidr', '10.64.0.0/10', '--iptables-sync-period', args['sync-period']];
    const pidOf = async () => {
      for (let i = 0; i < 100; i++) {
        for (const pid of (await execa('ip', ['netns', 'pids', c.ns('node-1')], { reject: false })).stdout.split('\n').filter(Boolean)) {
          if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('src/cli/main.ts')) return Number(pid);
        }
        await sleep(100);
      }
      throw new Error('kproxy process not found');
    };
    /** Starts kproxy run; resolves when its first sync that wrote every service port is logged. */
    const start = async () => {
      const began = Date.now();
      const logs = c.startAgent(flags);
      const pid = await pidOf();
      const end = began + 20 * 60_000;
      while (Date.now() < end) {
        const done = logLines(logs.stderr).find((l) => l.msg === 'proxy rules synced' && (l.servicePorts ?? 0) >= N);
        if (done) return { logs, pid, seconds: (Date.parse(done.time) - began) / 1000 };
        const failed = logLines(logs.stderr).find((l) => l.msg.startsWith('syncing proxy rules failed'));
        if (failed) throw new Error(`kproxy failed: ${JSON.stringify(failed)}`);
        await sleep(250);
      }
      throw new Error('no complete sync within 20 minutes');
    };

    console.log(`[${t()}] ${mode}: cold start`);
    const cold = await start();
    const rssCold = usage(cold.pid).rssMiB;
    console.log(`[${t()}] ${mode}: cold start ${cold.seconds.toFixed(1)} s, RSS ${rssCold.toFixed(0)} MiB`);

    // Quiet: nothing changes; the periodic verify is the only work.
    const q0 = usage(cold.pid);
    const quietSeconds = Number(args['quiet-seconds']);
    await sleep(quietSeconds * 1000);
    const q1 = usage(cold.pid);
    const quietShare = (q1.cpu - q0.cpu) / quietSeconds;
    const verifies = logLines(cold.logs.stderr).filter((l) => l.msg === 'proxy rules synced' && l.full).length;
    console.log(`[${t()}] ${mode}: quiet ${quietSeconds} s: ${(quietShare * 100).toFixed(2)} % of a core, ${verifies} verifying syncs`);

    // Churn: one EndpointSlice change every --change-every seconds while the periodic work goes on.
    const churnSeconds = Number(args['churn-seconds']);
    const every = Number(args['change-every']);
    const c0 = usage(cold.pid);
    const before = logLines(cold.logs.stderr).length;
    const churnEnd = Date.now() + churnSeconds * 1000;
    let generation = 1;
    while (Date.now() < churnEnd) {
      const i = FIRST + ((generation * 7) % N);
      const slice = forApi(benchSlice(i, E, generation % 60)) as { metadata: Record<string, unknown> };
      slice.metadata.annotations = { [TRIGGER]: new Date().toISOString() };
      await api.apply(slice);
      generation++;
      await sleep(every * 1000);
    }
    await sleep(3_000);
    const c1 = usage(cold.pid);
    const landed = logLines(cold.logs.stderr)
      .slice(before)
      .flatMap((l) => (l.programmingSeconds === undefined ? [] : [l.programmingSeconds]));
    const churnShare = (c1.cpu - c0.cpu) / (churnSeconds + 3);
    console.log(
      `[${t()}] ${mode}: ${generation - 1} changes, landed median ${quantile(landed, 0.5).toFixed(3)} s, max ${Math.max(...landed).toFixed(3)} s; ${(churnShare * 100).toFixed(1)} % of a core`,
    );
    const rssEnd = usage(cold.pid).rssMiB;

    // Restart on the loaded node.
    await c.stopAgent('SIGKILL');
    const restart = await start();
    console.log(`[${t()}] ${mode}: restart on a loaded node ${restart.seconds.toFixed(1)} s (cold ${cold.seconds.toFixed(1)} s)`);
    await c.stopAgent('SIGKILL');
    return {
      mode,
      services: N,
      endpoints: E,
      coldStartSeconds: cold.seconds,
      rssAfterColdMiB: Math.round(rssCold),
      quietSeconds,
      quietCoreShare: quietShare,
      verifyingSyncsWhileQuiet: verifies,
      churnSeconds,
      changes: generation - 1,
      changesLanded: landed.length,
      landedMedianSeconds: quantile(landed, 0.5),
      landedP95Seconds: quantile(landed, 0.95),
      landedMaxSeconds: Math.max(...landed),
      churnCoreShare: churnShare,
      rssEndMiB: Math.round(rssEnd),
      restartSeconds: restart.seconds,
    };
  } finally {
    await c.destroy();
  }
}

const api = await RealApiServer.start(['--service-node-port-range=10000-50000', '--max-requests-inflight=1000']);
const results: Record<string, unknown>[] = [];
try {
  await api.applyManifest(join(import.meta.dirname, '../manifests/rbac.yaml'));
  await load(api);
  for (const mode of args.modes.split(',') as ('iptables' | 'nftables')[]) results.push(await runMode(api, mode));
} finally {
  await api.stop();
}
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify({ date: new Date().toISOString(), results }, null, 2)}\n`);
console.log(JSON.stringify(results, null, 2));
