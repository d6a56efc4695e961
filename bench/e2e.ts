/**
 * One proxy mode end to end, at N Services × E endpoints, in network namespaces made here:
 *
 * - cold start: empty kernel → every rule (plan + render + write through the mode's writer), next
 *   to the kernel floor: the same input applied alone by the tool (`nft -j -f` of the same batch;
 *   `iptables-restore` of the same whole tables);
 * - one endpoint change: EndpointSlice in → state → plan → render (all three incremental, as
 *   `kproxy run` does) → delta → in the kernel, next to the floor: the same delta applied alone
 *   (`nft -j -f`, `iptables-restore --noflush`) to a twin namespace holding the same rules;
 * - nftables only, layouts (cold `nft -j -f` alone): kproxy's, and kproxy's without ClientIP-affinity
 *   Services (their per-endpoint sets are the one superlinear term).
 *
 * `--families 4,6` measures a dual-stack cluster (bench/cluster.ts): both families' rules are
 * planned, rendered and written one after the other, as kproxy's two reconcilers do, and their
 * floors are the two tools' runs added up; the changes alternate between an IPv4 and an IPv6
 * EndpointSlice, and after each both families sync (the unchanged one writes nothing).
 *
 * Usage: `node bench/e2e.ts --mode iptables|nftables [--sizes 1000,10000] [--endpoints 10]
 * [--runs 3] [--families 4|4,6] [--layout-sizes 1000,5000,10000] [--out bench/results/<mode>.json]`.
 * Needs root (netns, nft, iptables, ip6tables). Every namespace is deleted when the run ends, pass or fail.
 * @module
 */
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { IptablesRenderCache, renderIptables, type IptablesRuleset } from '../src/backends/iptables/render.ts';
import { buildChangeScript } from '../src/backends/iptables/restore.ts';
import { IptablesWriter, systemIptables } from '../src/backends/iptables/writer.ts';
import { deltaBatch, fullBatch } from '../src/backends/nftables/batch.ts';
import { toBatch, type NftCommand } from '../src/backends/nftables/json.ts';
import { NftRenderCache, renderNftables, type NftRuleset } from '../src/backends/nftables/render.ts';
import { NftWriter, systemNft } from '../src/backends/nftables/writer.ts';
import { PlanCache, planProxy } from '../src/planner/plan.ts';
import type { IPFamily } from '../src/state/ip.ts';
import type { ProxyStateStore } from '../src/state/store.ts';
import { benchConfig, benchPlan, benchSlice, benchStore } from './cluster.ts';
import { applyAlone, iptablesFloorInput, nftFloorInput, restoreCommands } from './floor.ts';

const { values: args } = parseArgs({
  options: {
    mode: { type: 'string', default: 'nftables' },
    sizes: { type: 'string', default: '1000,10000' },
    endpoints: { type: 'string', default: '10' },
    runs: { type: 'string', default: '3' },
    'layout-sizes': { type: 'string', default: '' },
    families: { type: 'string', default: '4' },
    out: { type: 'string' },
  },
});
if (args.mode !== 'iptables' && args.mode !== 'nftables') throw new Error(`--mode must be iptables or nftables, not ${args.mode}`);
const MODE = args.mode;
const FAMILIES = args.families.split(',').map((f): IPFamily => {
  if (f !== '4' && f !== '6') throw new Error(`--families takes 4, 6 or 4,6, not ${args.families}`);
  return f === '6' ? 6 : 4;
});
const DUAL = FAMILIES.length > 1;
const OUT = args.out ?? `bench/results/${MODE}${DUAL ? '-dualstack' : ''}.json`;
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

/** Applies an nft batch with plain `nft -j -f` (the floor); returns ms. */
const floor = (ns: string, commands: readonly NftCommand[]): Promise<number> =>
  applyAlone(ns, { mode: 'nftables', family: 4, text: JSON.stringify(toBatch(commands)), commands: commands.length }, dir);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => Math.round(x);

/** One size of the end-to-end run (bench/results/<mode>.json `rows`). */
export interface Row {
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
  /** The IP families of the cluster; for dual-stack, the change figures also per family of the changed slice. */
  families: IPFamily[];
  changeMsByFamily?: Record<string, number>;
  changeFloorMsByFamily?: Record<string, number>;
}

/**
 * What the benchmark needs of a mode: a writer into one namespace, the rules as the kernel floor
 * applies them from empty, and the same delta the writer sends, applied alone.
 */
interface ModeUnderTest<R> {
  render(store: ProxyStateStore): R;
  writer(ns: string): { write(rules: R): Promise<unknown> };
  /** Resets `ns` to empty, then applies the whole of `rules` with the tool alone; returns [ms, commands, bytes]. */
  coldFloor(ns: string, rules: R): Promise<[number, number, number]>;
  /** Applies the change from `previous` to `next` with the tool alone; returns [ms, commands, bytes]. */
  changeFloor(ns: string, previous: R, next: R): Promise<[number, number, number]>;
}

function nftables(family: IPFamily): ModeUnderTest<NftRuleset> {
  const plans = new PlanCache();
  const cache = new NftRenderCache();
  let stale: readonly string[] = [];
  return {
    render: (store) => renderNftables(planProxy(store.servicePortStates(), store.node, benchConfig(family), plans), cache),
    writer(ns) {
      const w = new NftWriter(systemNft(['ip', 'netns', 'exec', ns]));
      return { write: (rules) => w.write(rules, { verify: false }) };
    },
    async coldFloor(ns, rules) {
      const input = nftFloorInput(rules, family); // replaces the table
      return [await applyAlone(ns, input, dir), input.commands, input.text.length];
    },
    async changeFloor(ns, previous, next) {
      const delta = deltaBatch(previous, next, stale);
      stale = delta.stale;
      return [await floor(ns, delta.commands), delta.commands.length, JSON.stringify(toBatch(delta.commands)).length];
    },
  };
}

function iptables(family: IPFamily): ModeUnderTest<IptablesRuleset> {
  const plans = new PlanCache();
  const cache = new IptablesRenderCache();
  return {
    render: (store) => renderIptables(planProxy(store.servicePortStates(), store.node, benchConfig(family), plans), { conntrackTCPBeLiberal: false }, cache),
    writer(ns) {
      const w = new IptablesWriter(systemIptables(family, ['ip', 'netns', 'exec', ns]));
      return { write: (rules) => w.write(rules, { verify: false }) };
    },
    async coldFloor(ns, rules) {
      // The same whole tables the writer restores into an empty namespace.
      const input = iptablesFloorInput(rules, family);
      return [await applyAlone(ns, input, dir), input.commands, input.text.length];
    },
    async changeFloor(ns, previous, next) {
      const text = buildChangeScript(previous, next) ?? '';
      return [await applyAlone(ns, { mode: 'iptables', family, text, commands: restoreCommands(text) }, dir, ['--noflush']), restoreCommands(text), text.length];
    },
  };
}

/** One family's mode under test with its writer and the rules it last wrote. */
interface FamilyUnderTest<R> {
  readonly family: IPFamily;
  readonly m: ModeUnderTest<R>;
  readonly writer: { write(rules: R): Promise<unknown> };
  rules: R | undefined;
}

async function measure<R>(n: number, mode: (family: IPFamily) => ModeUnderTest<R>): Promise<Row> {
  const RUNS = runsFor(n);
  const store = benchStore(n, E, FAMILIES);
  const [ours, twin] = [await netns(), await netns()];
  const cold: number[] = [];
  const coldFloor: number[] = [];
  const planRender: number[] = [];
  const fresh = () =>
    FAMILIES.map((family): FamilyUnderTest<R> => {
      const m = mode(family);
      return { family, m, writer: m.writer(ours), rules: undefined };
    });
  let under = fresh();
  let coldCommands = 0;
  let coldBytes = 0;
  for (let r = 0; r < RUNS; r++) {
    await emptyNamespace(ours);
    under = fresh(); // cold: no caches
    const t = performance.now();
    let rendering = 0;
    // As kproxy's reconcilers: each family planned, rendered and written in turn.
    for (const f of under) {
      const t0 = performance.now();
      f.rules = f.m.render(store);
      rendering += performance.now() - t0;
      await f.writer.write(f.rules);
    }
    planRender.push(rendering);
    cold.push(performance.now() - t);
    await emptyNamespace(twin);
    let floorMs = 0;
    coldCommands = 0;
    coldBytes = 0;
    for (const f of under) {
      const [ms, commands, bytes] = await f.m.coldFloor(twin, f.rules!);
      floorMs += ms;
      coldCommands += commands;
      coldBytes += bytes;
    }
    coldFloor.push(floorMs);
  }
  // One endpoint change, a different Service each run; with two families, RUNS changes of each, alternating.
  const change: number[] = [];
  const changePR: number[] = [];
  const changeWrite: number[] = [];
  const changeFloor: number[] = [];
  const byFamily = new Map<IPFamily, { ms: number[]; floor: number[] }>(FAMILIES.map((f) => [f, { ms: [], floor: [] }]));
  let commands = 0;
  let bytes = 0;
  const changes = RUNS * FAMILIES.length;
  for (let r = 0; r < changes; r++) {
    const family = FAMILIES[r % FAMILIES.length]!;
    const i = Math.floor(((r + 1) * n) / (changes + 1));
    const t0 = performance.now();
    store.applyEndpointSlice(benchSlice(i, E, r + 1, family));
    let rendering = 0;
    const previous = under.map((f) => f.rules!);
    for (const f of under) {
      const t = performance.now();
      const next = f.m.render(store);
      rendering += performance.now() - t;
      await f.writer.write(next);
      f.rules = next;
    }
    const t2 = performance.now();
    change.push(t2 - t0);
    changePR.push(rendering);
    changeWrite.push(t2 - t0 - rendering);
    const changed = under.findIndex((f) => f.family === family);
    const [ms, c, b] = await under[changed]!.m.changeFloor(twin, previous[changed]!, under[changed]!.rules!);
    changeFloor.push(ms);
    byFamily.get(family)!.ms.push(t2 - t0);
    byFamily.get(family)!.floor.push(ms);
    commands = c;
    bytes = b;
  }
  for (const ns of [ours, twin]) await execa('ip', ['netns', 'del', ns]);
  namespaces.splice(namespaces.indexOf(ours), 2);
  const perFamily = (pick: (x: { ms: number[]; floor: number[] }) => number[]) => Object.fromEntries([...byFamily].map(([f, x]) => [`IPv${f}`, ms(median(pick(x)))]));
  return {
    services: n,
    endpoints: n * E * FAMILIES.length,
    planRenderMs: ms(median(planRender)),
    coldMs: ms(median(cold)),
    coldFloorMs: ms(median(coldFloor)),
    coldCommands,
    coldBytes,
    changeMs: ms(median(change)),
    changePlanRenderMs: ms(median(changePR)),
    changeWriteMs: ms(median(changeWrite)),
    changeFloorMs: ms(median(changeFloor)),
    changeCommands: commands,
    changeBytes: bytes,
    families: [...FAMILIES],
    ...(DUAL ? { changeMsByFamily: perFamily((x) => x.ms), changeFloorMsByFamily: perFamily((x) => x.floor) } : {}),
  };
}

/** Removes every rule of both modes from a bench namespace. */
async function emptyNamespace(ns: string): Promise<void> {
  await execa('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset'], { timeout: 600_000 });
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
  const { stdout: tool } = await execa(MODE === 'nftables' ? 'nft' : 'iptables', ['--version']);
  const { stdout: kernel } = await execa('uname', ['-r']);
  const rows: Row[] = [];
  for (const n of SIZES) {
    const row = MODE === 'nftables' ? await measure(n, nftables) : await measure(n, iptables);
    console.error(JSON.stringify(row));
    rows.push(row);
  }
  const layoutRows = [];
  for (const n of LAYOUT_SIZES) {
    const row = await layouts(n);
    console.error(JSON.stringify(row));
    layoutRows.push(row);
  }
  const result = {
    date: new Date().toISOString(),
    mode: MODE,
    families: FAMILIES,
    tool,
    kernel,
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    endpointsPerService: E,
    runs: RUNS,
    rows,
    layouts: layoutRows,
  };
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result, null, 2));
} finally {
  for (const ns of namespaces) await execa('ip', ['netns', 'del', ns], { reject: false });
  rmSync(dir, { recursive: true, force: true });
}
