/**
 * What nft itself costs, at N Services × E endpoints, with nothing of kproxy's in the timed part:
 * the floors behind the nftables targets of bench/README.md ("nftables floors").
 *
 * - **cold**: the whole table (kproxy's full batch) loaded into an empty namespace by `nft -j -f`
 *   (JSON, what kproxy sends) and by `nft -f` (the same batch in nft's text syntax): the
 *   JSON-vs-text gap, and the input sizes;
 * - **cold, in one transaction or in stages**: the same table by `nft -j -f` in one run, and in the
 *   runs kproxy's writer cuts it into where there is no table (batch.ts `stagedFullBatch`, at the
 *   writer's STAGE_COMMANDS), each with nft's peak RSS (GNU time), on pages as the run before left
 *   them and on fresh ones: while another process holds 2 GiB it has just touched, which takes the
 *   pages the runs before freed (on this VM a page no process touched lately costs a host fault;
 *   `kproxy run` meets that when the API server's lists and its own start have just taken memory);
 * - **one change, on the loaded table**: the pieces an endpoint change is made of, each timed
 *   alone as one `nft -j -f` transaction: `flush chain` of the Service's chain; that flush plus
 *   one plain rule; that flush plus one `dnat` rule; kproxy's whole delta for a new endpoint
 *   address (flush + the chain's rules + the hairpin set element), in JSON and in text; one
 *   element deleted from a plain set.
 *
 * Each figure is the median of `--runs` round trips (each piece and its inverse, so every run is a
 * real change and the table ends as it began). Usage: `node bench/nft-floor.ts [--services 10000] [--endpoints 10] [--runs 7]
 * [--out bench/results/nft-floor.json]`. Needs root and GNU time (`/usr/bin/time`, Debian package `time`); the
 * namespace is deleted when it ends.
 * @module
 */
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { deltaBatch, fullBatch, stagedFullBatch } from '../src/backends/nftables/batch.ts';
import type { NftCommand } from '../src/backends/nftables/json.ts';
import { NftRenderCache, renderNftables } from '../src/backends/nftables/render.ts';
import { formatBatch } from '../src/backends/nftables/text.ts';
import { STAGE_COMMANDS } from '../src/backends/nftables/writer.ts';
import { PlanCache, planProxy } from '../src/planner/plan.ts';
import { BENCH_CONFIG, benchSlice, benchStore } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    endpoints: { type: 'string', default: '10' },
    runs: { type: 'string', default: '7' },
    out: { type: 'string', default: 'bench/results/nft-floor.json' },
  },
});
const N = Number(args.services);
const E = Number(args.endpoints);
const RUNS = Number(args.runs);
const dir = mkdtempSync(join(tmpdir(), 'kproxy-nft-floor-'));
const ns = `kpfloor-${process.pid}`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Seconds one `nft` run takes inside the namespace. */
async function timed(nftArgs: string[]): Promise<number> {
  const t0 = performance.now();
  await execa('ip', ['netns', 'exec', ns, 'nft', ...nftArgs], { timeout: 600_000 });
  return (performance.now() - t0) / 1000;
}

/** One `nft -j -f` per file, in turn: seconds in all, and the largest nft's peak RSS in MiB (GNU time's %M). */
async function timedRuns(files: readonly string[]): Promise<{ seconds: number; peakMiB: number }> {
  const t0 = performance.now();
  let peak = 0;
  for (const f of files) {
    const { stderr } = await execa('ip', ['netns', 'exec', ns, '/usr/bin/time', '-f', '%M', 'nft', '-j', '-f', f], { timeout: 600_000 });
    peak = Math.max(peak, Number(stderr.trim().split('\n').at(-1)) / 1024);
  }
  return { seconds: (performance.now() - t0) / 1000, peakMiB: Math.round(peak) };
}

/** Touches and holds `bytes` in another process until the returned release is called. */
async function holdMemory(bytes: number): Promise<() => Promise<void>> {
  const p = execa(process.execPath, ['-e', `const b = Buffer.alloc(${bytes}, 1); process.stdout.write('held\\n'); setInterval(() => b[0]++, 60_000);`]);
  await new Promise((resolve, reject) => {
    p.stdout.once('data', resolve);
    p.catch(reject);
  });
  return async () => {
    p.kill();
    await p.catch(() => undefined);
  };
}

function file(name: string, commands: readonly NftCommand[], form: 'json' | 'text'): string {
  const path = join(dir, name);
  writeFileSync(path, formatBatch(commands, form));
  return path;
}

// The table, and one endpoint change of Service 100 (a new address for its first endpoint), both ways.
const store = benchStore(N, E);
const plans = new PlanCache();
const renders = new NftRenderCache();
const before = renderNftables(planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, plans), renders);
// Service 100 (or the last one, in a smaller cluster): a new address for its first endpoint.
store.applyEndpointSlice(benchSlice(Math.min(100, N - 1), E, 1));
const after = renderNftables(planProxy(store.servicePortStates(), store.node, BENCH_CONFIG, plans), renders);
const forward = deltaBatch(before, after, []).commands;
const backward = deltaBatch(after, before, []).commands;
const full = fullBatch(before).commands;
const chain = forward.find((c): c is { flush: { chain: { family: 'ip'; table: string; name: string } } } => 'flush' in c)!.flush.chain;
const ruleOf = (match: (c: NftCommand) => boolean) => forward.find(match)!;
const dnatRule = ruleOf((c) => 'add' in c && 'rule' in c.add && JSON.stringify(c).includes('"dnat"'));
const plainRule: NftCommand = {
  add: {
    rule: { family: 'ip', table: chain.table, chain: chain.name, expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '10.96.0.100' } }, { accept: null }] },
  },
} as unknown as NftCommand;
const elementOps = forward.filter((c) => JSON.stringify(c).includes('"element"'));

const results: Record<string, unknown> = { date: new Date().toISOString(), services: N, endpoints: E, runs: RUNS };
try {
  await execa('ip', ['netns', 'add', ns]);
  const { stdout: version } = await execa('nft', ['--version']);
  results.tool = version.trim();
  const fullJson = file('full.json', full, 'json');
  const fullText = file('full.nft', full, 'text');
  results.fullJsonBytes = formatBatch(full, 'json').length;
  results.fullTextBytes = formatBatch(full, 'text').length;
  results.fullCommands = full.length;
  const cold = { json: [] as number[], text: [] as number[] };
  for (let r = 0; r < Math.min(RUNS, 3); r++) {
    for (const form of ['json', 'text'] as const) {
      await execa('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset']);
      cold[form].push(await timed(form === 'json' ? ['-j', '-f', fullJson] : ['-f', fullText]));
    }
  }
  results.coldJsonSeconds = median(cold.json);
  results.coldTextSeconds = median(cold.text);
  console.log(`cold: nft -j -f ${median(cold.json).toFixed(2)} s, nft -f ${median(cold.text).toFixed(2)} s`);

  // One transaction or kproxy's stages, on pages as left and on fresh ones, in turn.
  const stages = stagedFullBatch(before, STAGE_COMMANDS).stages.map((commands, i) => file(`stage-${i}.json`, commands, 'json'));
  const layouts = { one: [fullJson], stages };
  const staged: Record<string, { seconds: number[]; peakMiB: number }> = {};
  for (let r = 0; r < Math.min(RUNS, 3); r++) {
    for (const [layout, files] of Object.entries(layouts)) {
      for (const pages of ['reused', 'fresh'] as const) {
        await execa('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset']);
        const release = pages === 'fresh' ? await holdMemory(2 * 1024 ** 3) : undefined;
        try {
          const run = await timedRuns(files);
          const row = (staged[`${layout} ${pages}`] ??= { seconds: [], peakMiB: 0 });
          row.seconds.push(run.seconds);
          row.peakMiB = Math.max(row.peakMiB, run.peakMiB);
        } finally {
          await release?.();
        }
      }
    }
  }
  results.stageCommands = STAGE_COMMANDS;
  results.stages = stages.length;
  results.coldLayouts = Object.fromEntries(Object.entries(staged).map(([key, row]) => [key, { seconds: median(row.seconds), peakMiB: row.peakMiB }]));
  for (const [key, row] of Object.entries(staged)) console.log(`cold, ${key} pages: ${median(row.seconds).toFixed(2)} s, nft peak ${row.peakMiB} MiB`);

  // The table stays loaded (the text run was last); time the pieces of one change.
  const pieces: [string, NftCommand[], NftCommand[]][] = [
    ['flush chain', [forward[0]!], [forward[0]!]],
    ['flush chain + one plain rule', [{ flush: { chain } }, plainRule], [{ flush: { chain } }, plainRule]],
    ['flush chain + one dnat rule', [{ flush: { chain } }, dnatRule], [{ flush: { chain } }, dnatRule]],
    ["kproxy's delta (JSON)", [...forward], [...backward]],
    ['one set element deleted, then added back', elementOps, deltaBatch(after, before, []).commands.filter((c) => JSON.stringify(c).includes('"element"'))],
  ];
  const change: Record<string, number> = {};
  for (const [name, there, back] of pieces) {
    const a = file('there.json', there, 'json');
    const b = file('back.json', back, 'json');
    // There and back each run, so every piece starts from the table as loaded.
    const times: number[] = [];
    for (let r = 0; r < RUNS; r++) times.push(await timed(['-j', '-f', a]), await timed(['-j', '-f', b]));
    change[name] = median(times);
  }
  // The same delta in nft's text syntax.
  const ta = file('there.nft', forward, 'text');
  const tb = file('back.nft', backward, 'text');
  const text: number[] = [];
  for (let r = 0; r < RUNS; r++) text.push(await timed(['-f', ta]), await timed(['-f', tb]));
  change["kproxy's delta (text)"] = median(text);
  results.changeSeconds = change;
  for (const [k, v] of Object.entries(change)) console.log(`${k}: ${(v * 1000).toFixed(0)} ms`);
} finally {
  await execa('ip', ['netns', 'del', ns], { reject: false });
  rmSync(dir, { recursive: true, force: true });
}
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify(results, null, 2)}\n`);
