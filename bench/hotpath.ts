/**
 * The pure hot path, measured with tinybench (no kernel, no I/O):
 *
 * - cold plan + render of the whole cluster, per mode, at each size (empty caches every iteration);
 * - one endpoint change at each size: the EndpointSlice is applied to the state, the planner and
 *   the renderer reuse every unchanged service port (as `kproxy run` does), and the change is
 *   computed (iptables: the `--noflush` script; nftables: the delta batch); time and bytes;
 * - memory: RSS and V8 heap after loading the state, planning and rendering one mode, in a fresh
 *   process per size and mode (`--memory N --mode M` is that child).
 *
 * Usage: `node --expose-gc bench/hotpath.ts [--sizes 1000,10000,50000] [--endpoints 10]
 * [--out bench/results/hotpath.json]`.
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import { IptablesRenderCache, renderIptables, type IptablesRuleset } from '../src/backends/iptables/render.ts';
import { buildChangeScript } from '../src/backends/iptables/restore.ts';
import { deltaBatch } from '../src/backends/nftables/batch.ts';
import { toBatch } from '../src/backends/nftables/json.ts';
import { NftRenderCache, renderNftables, type NftRuleset } from '../src/backends/nftables/render.ts';
import { PlanCache, planProxy } from '../src/planner/plan.ts';
import { BENCH_CONFIG, benchSlice, benchStore } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,50000' },
    endpoints: { type: 'string', default: '10' },
    out: { type: 'string', default: 'bench/results/hotpath.json' },
    memory: { type: 'string' },
    mode: { type: 'string', default: 'iptables' },
  },
});
const E = Number(args.endpoints);
const OPTIONS = { conntrackTCPBeLiberal: false };
const gc = (globalThis as { gc?: () => void }).gc;

if (args.memory !== undefined) {
  // Child: load N Services, plan and render one mode with its caches (what `run` holds), report memory.
  const store = benchStore(Number(args.memory), E);
  const plan = planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, new PlanCache());
  const held = [args.mode === 'nftables' ? renderNftables(plan, new NftRenderCache()) : renderIptables(plan, OPTIONS, new IptablesRenderCache())];
  gc?.();
  const m = process.memoryUsage();
  console.log(JSON.stringify({ services: Number(args.memory), rssMB: Math.round(m.rss / 2 ** 20), heapMB: Math.round(m.heapUsed / 2 ** 20), held: held.length }));
  process.exit(0);
}

interface Stat {
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  samples: number;
}
const stat = (b: Bench, name: string): Stat => {
  const r = b.getTask(name)!.result;
  if (r.state !== 'completed') throw new Error(`${name}: ${r.state}`);
  return { meanMs: +r.latency.mean.toFixed(2), p50Ms: +r.latency.p50.toFixed(2), p99Ms: +r.latency.p99.toFixed(2), samples: Math.round(r.latency.samples?.length ?? r.totalTime / r.latency.mean) };
};

const rows = [];
for (const n of args.sizes.split(',').map(Number)) {
  const store = benchStore(n, E);
  // Cold: every service port planned and rendered from nothing.
  const cold = new Bench({ time: n >= 50_000 ? 0 : 2_000, iterations: n >= 50_000 ? 3 : 5, warmupIterations: 1 });
  cold.add('plan', () => void planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, new PlanCache()));
  const plan = planProxy(store.servicePortStates(), store.node, BENCH_CONFIG);
  cold.add('render iptables', () => void renderIptables(plan, OPTIONS, new IptablesRenderCache()));
  cold.add('render nftables', () => void renderNftables(plan, new NftRenderCache()));
  await cold.run();

  // One endpoint change: a different Service every iteration, caches warm.
  const plans = new PlanCache();
  const ipt = new IptablesRenderCache();
  const nft = new NftRenderCache();
  let p = planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, plans);
  let prevIpt: IptablesRuleset = renderIptables(p, OPTIONS, ipt);
  let prevNft: NftRuleset = renderNftables(p, nft);
  let generation = 0;
  const change = new Bench({ time: 2_000, iterations: 20, warmupIterations: 3 });
  const apply = () => {
    generation++;
    // Generations wrap so that endpoint addresses stay valid (benchSlice's addresses grow with it).
    store.applyEndpointSlice(benchSlice((generation * 7919) % n, E, 1 + (generation % 63)));
    p = planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, plans);
  };
  change.add('one change, iptables', () => {
    apply();
    const next = renderIptables(p, OPTIONS, ipt);
    buildChangeScript(prevIpt, next);
    prevIpt = next;
  });
  change.add('one change, nftables', () => {
    apply();
    const next = renderNftables(p, nft);
    JSON.stringify(toBatch(deltaBatch(prevNft, next, []).commands));
    prevNft = next;
  });
  await change.run();
  // The size of one change, from the state both backends last rendered.
  p = planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, plans);
  prevIpt = renderIptables(p, OPTIONS, ipt);
  prevNft = renderNftables(p, nft);
  apply();
  const scriptBytes = (buildChangeScript(prevIpt, renderIptables(p, OPTIONS, ipt)) ?? '').length;
  const deltaBytes = JSON.stringify(toBatch(deltaBatch(prevNft, renderNftables(p, nft), []).commands)).length;
  const memoryOf = async (mode: string) =>
    JSON.parse((await execa(process.execPath, ['--expose-gc', '--max-old-space-size=16384', import.meta.filename, '--memory', String(n), '--endpoints', String(E), '--mode', mode])).stdout) as {
      rssMB: number;
      heapMB: number;
    };
  const [memIpt, memNft] = [await memoryOf('iptables'), await memoryOf('nftables')];
  const row = {
    services: n,
    endpoints: n * E,
    coldPlan: stat(cold, 'plan'),
    coldRenderIptables: stat(cold, 'render iptables'),
    coldRenderNftables: stat(cold, 'render nftables'),
    changeIptables: stat(change, 'one change, iptables'),
    changeNftables: stat(change, 'one change, nftables'),
    changeIptablesBytes: scriptBytes,
    changeNftablesBytes: deltaBytes,
    rssMB: { iptables: memIpt.rssMB, nftables: memNft.rssMB },
    heapMB: { iptables: memIpt.heapMB, nftables: memNft.heapMB },
  };
  console.error(JSON.stringify(row));
  rows.push(row);
  gc?.();
}
const result = { date: new Date().toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length, endpointsPerService: E, rows };
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify(result, null, 2));
