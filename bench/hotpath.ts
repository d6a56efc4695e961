/**
 * The pure hot path, measured with tinybench (no kernel, no I/O):
 *
 * - cold plan + render of the whole cluster, per mode, at each size (empty caches every iteration);
 * - one endpoint change at each size: the EndpointSlice is applied to the state, the planner and
 *   the renderer reuse every unchanged service port (as `kproxy run` does), and the change is
 *   computed (iptables: the `--noflush` script; nftables: the delta batch); time and bytes;
 * - memory: RSS and V8 heap after loading the state, planning and rendering one mode, in a fresh
 *   process per size and mode (`--memory N --mode M` is that child);
 * - `settled`: the cold plan and one change again, 15 samples each with a full garbage collection
 *   before every sample (median): the work itself, without the collections the garbage of earlier
 *   iterations causes, which tinybench's back-to-back iterations include and which grow with the
 *   heap the process holds; single-stack runs add the settled cold plan again with a second
 *   dual-stack-sized copy of the state held and unused (`withBallastMs`): the cost of a bigger heap
 *   alone, without more work.
 *
 * `--families 4,6`: a dual-stack cluster (bench/cluster.ts); every figure covers both families
 * (two plans, two renders, two diffs), and the changes alternate between an IPv4 and an IPv6 slice.
 *
 * Usage: `node --expose-gc bench/hotpath.ts [--sizes 1000,10000,50000] [--endpoints 10]
 * [--families 4|4,6] [--out bench/results/hotpath.json]`.
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
import { PlanCache, planProxy, type ProxyPlan } from '../src/planner/plan.ts';
import type { IPFamily } from '../src/state/ip.ts';
import type { ProxyStateStore } from '../src/state/store.ts';
import { benchConfig, benchSlice, benchStore } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,50000' },
    endpoints: { type: 'string', default: '10' },
    out: { type: 'string', default: 'bench/results/hotpath.json' },
    memory: { type: 'string' },
    mode: { type: 'string', default: 'iptables' },
    families: { type: 'string', default: '4' },
  },
});
const E = Number(args.endpoints);
const FAMILIES = args.families.split(',').map(Number) as IPFamily[];
/** One plan per family, with a plan cache per family when given (as each reconciler has its own). */
const planAll = (store: ProxyStateStore, caches?: readonly PlanCache[]): ProxyPlan[] => FAMILIES.map((f, i) => planProxy(store.servicePortStates(), store.node, benchConfig(f), caches?.[i]));
const OPTIONS = { conntrackTCPBeLiberal: false };
const gc = (globalThis as { gc?: () => void }).gc;

if (args.memory !== undefined) {
  // Child: load N Services, plan and render one mode with its caches (what `run` holds), report memory.
  const store = benchStore(Number(args.memory), E, FAMILIES);
  const plans = planAll(
    store,
    FAMILIES.map(() => new PlanCache()),
  );
  const held = plans.map((plan) => (args.mode === 'nftables' ? renderNftables(plan, new NftRenderCache()) : renderIptables(plan, OPTIONS, new IptablesRenderCache())));
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
  const store = benchStore(n, E, FAMILIES);
  // Cold: every service port planned and rendered from nothing.
  const cold = new Bench({ time: n >= 50_000 ? 0 : 2_000, iterations: n >= 50_000 ? 3 : 5, warmupIterations: 1 });
  cold.add(
    'plan',
    () =>
      void planAll(
        store,
        FAMILIES.map(() => new PlanCache()),
      ),
  );
  const plans = planAll(store);
  cold.add('render iptables', () => void plans.map((plan) => renderIptables(plan, OPTIONS, new IptablesRenderCache())));
  cold.add('render nftables', () => void plans.map((plan) => renderNftables(plan, new NftRenderCache())));
  await cold.run();

  // One endpoint change: a different Service every iteration, caches warm, every family synced.
  const caches = FAMILIES.map(() => new PlanCache());
  const ipt = FAMILIES.map(() => new IptablesRenderCache());
  const nft = FAMILIES.map(() => new NftRenderCache());
  let p = planAll(store, caches);
  let prevIpt: IptablesRuleset[] = p.map((plan, i) => renderIptables(plan, OPTIONS, ipt[i]));
  let prevNft: NftRuleset[] = p.map((plan, i) => renderNftables(plan, nft[i]));
  let generation = 0;
  const change = new Bench({ time: 2_000, iterations: 20, warmupIterations: 3 });
  const apply = () => {
    generation++;
    // Generations wrap so that endpoint addresses stay valid (benchSlice's addresses grow with it).
    store.applyEndpointSlice(benchSlice((generation * 7919) % n, E, 1 + (generation % 63), FAMILIES[generation % FAMILIES.length]));
    p = planAll(store, caches);
  };
  const iptChange = () => {
    const next = p.map((plan, i) => renderIptables(plan, OPTIONS, ipt[i]));
    const bytes = next.reduce((sum, r, i) => sum + (buildChangeScript(prevIpt[i], r) ?? '').length, 0);
    prevIpt = next;
    return bytes;
  };
  const nftChange = () => {
    const next = p.map((plan, i) => renderNftables(plan, nft[i]));
    const bytes = next.reduce((sum, r, i) => sum + JSON.stringify(toBatch(deltaBatch(prevNft[i]!, r, []).commands)).length, 0);
    prevNft = next;
    return bytes;
  };
  change.add('one change, iptables', () => {
    apply();
    iptChange();
  });
  change.add('one change, nftables', () => {
    apply();
    nftChange();
  });
  await change.run();
  // The size of one change, from the state both backends last rendered.
  p = planAll(store, caches);
  iptChange();
  nftChange();
  apply();
  const scriptBytes = iptChange();
  const deltaBytes = nftChange();
  const memoryOf = async (mode: string) =>
    JSON.parse(
      (await execa(process.execPath, ['--expose-gc', '--max-old-space-size=16384', import.meta.filename, '--memory', String(n), '--endpoints', String(E), '--mode', mode, '--families', args.families]))
        .stdout,
    ) as {
      rssMB: number;
      heapMB: number;
    };
  const [memIpt, memNft] = [await memoryOf('iptables'), await memoryOf('nftables')];
  const settledMs = (f: () => void) => {
    const xs: number[] = [];
    for (let i = 0; i < 15; i++) {
      gc?.();
      const t = performance.now();
      f();
      xs.push(performance.now() - t);
    }
    return +xs.sort((a, b) => a - b)[7]!.toFixed(2);
  };
  const coldPlan = () =>
    void planAll(
      store,
      FAMILIES.map(() => new PlanCache()),
    );
  const coldPlanMs = settledMs(coldPlan);
  // Single-stack only: the same plan beside an unused dual-stack-sized state (a bigger heap, no more work).
  const beside = (held: ProxyStateStore) => {
    const ms = settledMs(coldPlan);
    // Read after the measurement, so the unused state stays reachable throughout it.
    return held.serviceCount === n ? ms : NaN;
  };
  const withBallastMs = FAMILIES.length === 1 ? beside(benchStore(n, E, [4, 6])) : undefined;
  const settled = {
    coldPlanMs,
    ...(withBallastMs === undefined ? {} : { withBallastMs }),
    changeIptablesMs: settledMs(() => {
      apply();
      iptChange();
    }),
    changeNftablesMs: settledMs(() => {
      apply();
      nftChange();
    }),
  };
  const row = {
    services: n,
    endpoints: n * E * FAMILIES.length,
    families: FAMILIES,
    coldPlan: stat(cold, 'plan'),
    coldRenderIptables: stat(cold, 'render iptables'),
    coldRenderNftables: stat(cold, 'render nftables'),
    changeIptables: stat(change, 'one change, iptables'),
    changeNftables: stat(change, 'one change, nftables'),
    changeIptablesBytes: scriptBytes,
    changeNftablesBytes: deltaBytes,
    rssMB: { iptables: memIpt.rssMB, nftables: memNft.rssMB },
    heapMB: { iptables: memIpt.heapMB, nftables: memNft.heapMB },
    settled,
  };
  console.error(JSON.stringify(row));
  rows.push(row);
  gc?.();
}
const result = { date: new Date().toISOString(), families: FAMILIES, node: process.version, cpus: (await import('node:os')).cpus().length, endpointsPerService: E, rows };
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify(result, null, 2));
