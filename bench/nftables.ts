/**
 * nftables mode end to end, at N Services × E endpoints, in network namespaces made here:
 *
 * - cold start: empty kernel → kproxy's whole table (render + JSON + `nft -j -f`), next to the
 *   kernel floor: `nft -j -f` of the same batch file, timed alone;
 * - one endpoint change: EndpointSlice in → state → plan → render → delta → in the kernel, next to
 *   the floor: `nft -j -f` of the same delta, applied to a twin namespace holding the same table;
 * - layouts, cold start only (`nft -j -f` alone): kproxy's, and kproxy's with no ClientIP-affinity
 *   Services (their per-endpoint sets are the one superlinear term).
 *
 * Usage: `npm run bench:nftables -- [--sizes 1000,10000,50000] [--endpoints 10] [--runs 3]
 * [--layout-sizes 1000,5000,10000] [--out bench/results/nftables.json]`. Needs root (netns, nft).
 * Every namespace is deleted when the run ends, pass or fail.
 * @module
 */
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { deltaBatch, fullBatch } from '../src/backends/nftables/batch.ts';
import { toBatch, type NftCommand } from '../src/backends/nftables/json.ts';
import { renderNftables } from '../src/backends/nftables/render.ts';
import { NftWriter, systemNft } from '../src/backends/nftables/writer.ts';
import { benchPlan, benchSlice, benchStore } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,50000' },
    endpoints: { type: 'string', default: '10' },
    runs: { type: 'string', default: '3' },
    'layout-sizes': { type: 'string', default: '1000,5000,10000' },
    out: { type: 'string', default: 'bench/results/nftables.json' },
  },
});
const SIZES = args.sizes.split(',').map(Number);
const E = Number(args.endpoints);
const RUNS = Number(args.runs);
/** Runs per size: one at 50k Services and above, where a cold start takes minutes. */
const runsFor = (n: number) => (n >= 50_000 ? 1 : RUNS);
const LAYOUT_SIZES = args['layout-sizes'] ? args['layout-sizes'].split(',').map(Number) : [];
const dir = mkdtempSync(join(tmpdir(), 'kproxy-bench-'));
const namespaces: string[] = [];

async function netns(): Promise<string> {
  const ns = `kpbench-${process.pid}-${namespaces.length}`;
  await execa('ip', ['netns', 'add', ns]);
  namespaces.push(ns);
  return ns;
}

async function nftIn(ns: string, ...a: string[]): Promise<void> {
  await execa('ip', ['netns', 'exec', ns, 'nft', ...a], { timeout: 600_000 });
}

/** Applies a batch with plain `nft -j -f` (the floor); returns ms. */
async function floor(ns: string, commands: readonly NftCommand[]): Promise<number> {
  const file = join(dir, 'floor.json');
  writeFileSync(file, JSON.stringify(toBatch(commands)));
  const t = performance.now();
  await nftIn(ns, '-j', '-f', file);
  return performance.now() - t;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => Math.round(x);

interface Row {
  services: number;
  endpoints: number;
  planRenderMs: number;
  coldMs: number;
  coldFloorMs: number;
  coldCommands: number;
  coldBytes: number;
  changeMs: number;
  changePlanRenderMs: number;
  changeWriteMs: number;
  changeFloorMs: number;
  changeCommands: number;
  changeBytes: number;
}

async function measure(n: number): Promise<Row> {
  const RUNS = runsFor(n);
  const store = benchStore(n, E);
  let t = performance.now();
  let rules = renderNftables(benchPlan(store));
  const planRenderMs = performance.now() - t;
  const [ours, twin] = [await netns(), await netns()];
  const cold: number[] = [];
  const coldFloor: number[] = [];
  const full = fullBatch(rules);
  let writer = new NftWriter(systemNft(['ip', 'netns', 'exec', ours]));
  for (let r = 0; r < RUNS; r++) {
    if (r > 0) await nftIn(ours, 'delete', 'table', 'ip', 'kube-proxy');
    writer = new NftWriter(systemNft(['ip', 'netns', 'exec', ours]));
    t = performance.now();
    await writer.write(renderNftables(benchPlan(store)), { verify: false });
    cold.push(performance.now() - t);
    coldFloor.push(await floor(twin, full.commands)); // replaces the table each time
  }
  // One endpoint change, a different Service each run.
  const change: number[] = [];
  const changePR: number[] = [];
  const changeWrite: number[] = [];
  const changeFloor: number[] = [];
  let commands = 0;
  let bytes = 0;
  let twinStale: readonly string[] = [];
  for (let r = 0; r < RUNS; r++) {
    const i = Math.floor(((r + 1) * n) / (RUNS + 1));
    const t0 = performance.now();
    store.applyEndpointSlice(benchSlice(i, E, r + 1));
    const next = renderNftables(benchPlan(store));
    const t1 = performance.now();
    await writer.write(next, { verify: false });
    const t2 = performance.now();
    change.push(t2 - t0);
    changePR.push(t1 - t0);
    changeWrite.push(t2 - t1);
    const delta = deltaBatch(rules, next, twinStale);
    twinStale = delta.stale;
    commands = delta.commands.length;
    bytes = JSON.stringify(toBatch(delta.commands)).length;
    changeFloor.push(await floor(twin, delta.commands));
    rules = next;
  }
  for (const ns of [ours, twin]) await execa('ip', ['netns', 'del', ns]);
  namespaces.splice(namespaces.indexOf(ours), 2);
  return {
    services: n,
    endpoints: n * E,
    planRenderMs: ms(planRenderMs),
    coldMs: ms(median(cold)),
    coldFloorMs: ms(median(coldFloor)),
    coldCommands: full.commands.length,
    coldBytes: JSON.stringify(toBatch(full.commands)).length,
    changeMs: ms(median(change)),
    changePlanRenderMs: ms(median(changePR)),
    changeWriteMs: ms(median(changeWrite)),
    changeFloorMs: ms(median(changeFloor)),
    changeCommands: commands,
    changeBytes: bytes,
  };
}

async function layouts(n: number): Promise<{ services: number; kproxyLayoutMs: number; withoutAffinityMs: number }> {
  const plan = benchPlan(benchStore(n, E));
  const rules = renderNftables(plan);
  const noAffinity = renderNftables({ ...plan, servicePorts: plan.servicePorts.map((sp) => ({ ...sp, affinityTimeoutSeconds: undefined })) });
  const ns = await netns();
  try {
    // Each batch starts by replacing the table, so they run one after the other in one namespace.
    const kproxyLayoutMs = await floor(ns, fullBatch(rules).commands);
    const withoutAffinityMs = await floor(ns, fullBatch(noAffinity).commands);
    return { services: n, kproxyLayoutMs: ms(kproxyLayoutMs), withoutAffinityMs: ms(withoutAffinityMs) };
  } finally {
    await execa('ip', ['netns', 'del', ns]);
    namespaces.splice(namespaces.indexOf(ns), 1);
  }
}

try {
  const { stdout: nftVersion } = await execa('nft', ['--version']);
  const { stdout: kernel } = await execa('uname', ['-r']);
  const rows: Row[] = [];
  for (const n of SIZES) {
    const row = await measure(n);
    console.error(JSON.stringify(row));
    rows.push(row);
  }
  const layoutRows = [];
  for (const n of LAYOUT_SIZES) {
    const row = await layouts(n);
    console.error(JSON.stringify(row));
    layoutRows.push(row);
  }
  const result = { date: new Date().toISOString(), nft: nftVersion, kernel, node: process.version, cpus: (await import('node:os')).cpus().length, endpointsPerService: E, runs: RUNS, rows, layouts: layoutRows };
  mkdirSync(dirname(args.out), { recursive: true });
  writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result, null, 2));
} finally {
  for (const ns of namespaces) await execa('ip', ['netns', 'del', ns], { reject: false });
  rmSync(dir, { recursive: true, force: true });
}
