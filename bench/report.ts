/**
 * Turns bench/results/*.json into the tables and the SVG chart of bench/README.md, between its
 * `<!-- results:begin -->` and `<!-- results:end -->` markers. Usage: `npm run bench:report`.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Row } from './e2e.ts';
import type { RunRow } from './run.ts';
import { policyTables } from './report-policy.ts';

interface Layout {
  services: number;
  kproxyLayoutMs: number;
  withoutAffinityMs: number;
}
interface E2E {
  date: string;
  mode: string;
  tool: string;
  kernel: string;
  node: string;
  cpus: number;
  endpointsPerService: number;
  runs: number;
  rows: Row[];
  layouts: Layout[];
}
interface Stat {
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  samples: number;
}
interface HotRow {
  services: number;
  endpoints: number;
  coldPlan: Stat;
  coldRenderIptables: Stat;
  coldRenderNftables: Stat;
  changeIptables: Stat;
  changeNftables: Stat;
  changeIptablesBytes: number;
  changeNftablesBytes: number;
  rssMB: Record<'iptables' | 'nftables', number>;
  heapMB: Record<'iptables' | 'nftables', number>;
  /** With a full GC before each sample (hotpath.ts); absent in older results. */
  settled?: { coldPlanMs: number; withBallastMs?: number; changeIptablesMs: number; changeNftablesMs: number };
}
interface Hot {
  date: string;
  node: string;
  cpus: number;
  endpointsPerService: number;
  rows: HotRow[];
}

const DIR = import.meta.dirname;
const load = <T>(name: string) => JSON.parse(readFileSync(join(DIR, 'results', name), 'utf8')) as T;
const hot = load<Hot>('hotpath.json');
const modes = [load<E2E>('iptables.json'), load<E2E>('nftables.json')];
const s = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 10 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`);
const kb = (b: number) => (b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(1)} kB`);
const k = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));
const perK = (ms: number, n: number) => `${((ms / n) * 1000).toFixed(0)} µs`;
const x2 = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const mib = (v: number | undefined) => (v === undefined ? '–' : `${v} MiB`);

const hotTable = [
  `Pure hot path (bench/hotpath.ts, tinybench; ${hot.date.slice(0, 10)}, Node ${hot.node}, ${hot.cpus} CPUs, ${hot.endpointsPerService} endpoints per Service). Mean per operation; cold = empty caches; one change = one EndpointSlice applied, re-planned, re-rendered and diffed, a different Service each iteration.`,
  '',
  '| Services | cold plan | cold render, iptables | cold render, nftables | cold plan + render (iptables / nftables) | per Service | one change, iptables | its script | one change, nftables | its delta | RSS (iptables / nftables) | heap |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...hot.rows.map((x) => {
    const ipt = x.coldPlan.meanMs + x.coldRenderIptables.meanMs;
    const nft = x.coldPlan.meanMs + x.coldRenderNftables.meanMs;
    return `| ${k(x.services)} | ${s(x.coldPlan.meanMs)} | ${s(x.coldRenderIptables.meanMs)} | ${s(x.coldRenderNftables.meanMs)} | ${s(ipt)} / ${s(nft)} | ${perK(ipt, x.services)} / ${perK(nft, x.services)} | ${s(x.changeIptables.meanMs)} | ${kb(x.changeIptablesBytes)} | ${s(x.changeNftables.meanMs)} | ${kb(x.changeNftablesBytes)} | ${x.rssMB.iptables} / ${x.rssMB.nftables} MB | ${x.heapMB.iptables} / ${x.heapMB.nftables} MB |`;
  }),
];

const e2eTable = (r: E2E) => [
  `**${r.mode} mode** end to end (bench/e2e.ts; ${r.date.slice(0, 10)}, ${r.tool}, Linux ${r.kernel}, Node ${r.node}, ${r.cpus} CPUs; median of ${r.runs} runs). Floor = the same input applied by the tool alone: ${r.mode === 'nftables' ? '`nft -j -f`' : '`iptables-restore` of the same whole tables (cold), `iptables-restore --noflush` of the same change script (one change)'}.`,
  '',
  '| Services | endpoints | cold start | of it: plan + render | kernel floor | ratio | per Service | input | one change | of it: plan + render | write | floor | ratio | change |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...r.rows.map(
    (x) =>
      `| ${k(x.services)} | ${k(x.endpoints)} | ${s(x.coldMs)} | ${s(x.planRenderMs)} | ${s(x.coldFloorMs)} | ${x2(x.coldMs, x.coldFloorMs)} | ${perK(x.coldMs, x.services)} | ${x.coldCommands} ${r.mode === 'nftables' ? 'cmds' : 'lines'}, ${kb(x.coldBytes)} | ${s(x.changeMs)} | ${s(x.changePlanRenderMs)} | ${s(x.changeWriteMs)} | ${s(x.changeFloorMs)} | ${x2(x.changeMs, x.changeFloorMs)} | ${x.changeCommands} ${r.mode === 'nftables' ? 'cmds' : 'lines'}, ${kb(x.changeBytes)} |`,
  ),
  ...(r.layouts.length === 0
    ? []
    : [
        '',
        'Layouts, cold start (`nft -j -f` of the whole table into an empty namespace):',
        '',
        '| Services | kproxy | kproxy, no affinity Services |',
        '|---|---|---|',
        ...r.layouts.map((x) => `| ${k(x.services)} | ${s(x.kproxyLayoutMs)} | ${s(x.withoutAffinityMs)} |`),
      ]),
  '',
  `![cold start and one change, ${r.mode} mode](${r.mode}.svg)`,
];

/** Each target of issue 5 at 10k Services, with the measured value and whether it is met. */
function targets(): string[] {
  const h = hot.rows.find((x) => x.services === 10_000);
  const [ipt, nft] = modes.map((m) => m.rows.find((x) => x.services === 10_000));
  const row = (what: string, target: string, value: string, met: boolean) => `| ${what} | ${target} | ${value} | ${met ? 'met' : '**missed**'} |`;
  const out = ['| at 10k Services × 10 endpoints | target | measured | |', '|---|---|---|---|'];
  if (h) {
    const a = h.coldPlan.meanMs + h.coldRenderIptables.meanMs;
    const b = h.coldPlan.meanMs + h.coldRenderNftables.meanMs;
    out.push(row('cold plan + render, iptables', '≤ 150 ms', s(a), a <= 150), row('cold plan + render, nftables', '≤ 150 ms', s(b), b <= 150));
    for (const m of ['iptables', 'nftables'] as const) out.push(row(`RSS after loading, ${m} mode`, '≤ 200 MB', `${h.rssMB[m]} MB`, h.rssMB[m] <= 200));
  }
  if (nft) out.push(row('one endpoint change end to end, nftables', '≤ 50 ms', s(nft.changeMs), nft.changeMs <= 50));
  if (ipt) out.push(row('one endpoint change end to end, iptables', '≤ 1.5× minimal-restore floor', x2(ipt.changeMs, ipt.changeFloorMs), ipt.changeMs <= 1.5 * ipt.changeFloorMs));
  for (const [m, r] of [
    ['iptables', ipt],
    ['nftables', nft],
  ] as const)
    if (r) out.push(row(`cold start, ${m}`, '≤ 1.2× kernel floor', x2(r.coldMs, r.coldFloorMs), r.coldMs <= 1.2 * r.coldFloorMs));
  return out;
}

/** bench/results/names.json: how much of iptables mode's cold render is upstream's SHA-256 chain names (names.ts). */
function namesTable(): string[] {
  let doc: { date: string; node: string; runs: number; rows: { services: number; hashes: number; planMs: number; renderMs: number; namesMs: number }[] };
  try {
    doc = JSON.parse(readFileSync(join(DIR, 'results/names.json'), 'utf8')) as typeof doc;
  } catch {
    return ['(no results yet: run `node --expose-gc bench/names.ts`)'];
  }
  const out = [
    `Where iptables mode's cold plan + render goes (\`bench/names.ts\`, ${doc.date.slice(0, 10)}, Node ${doc.node}; medians of ${doc.runs}, a GC before each): the chain names alone are one SHA-256 per service port and per endpoint, as upstream names its chains.`,
    '',
    '| Services | cold plan | cold render, iptables | of it: the chain names | SHA-256 digests |',
    '|---|---|---|---|---|',
  ];
  for (const r of doc.rows) out.push(`| ${k(r.services)} | ${s(r.planMs)} | ${s(r.renderMs)} | ${s(r.namesMs)} (${Math.round((100 * r.namesMs) / r.renderMs)} %) | ${r.hashes} |`);
  return out;
}

const table = [...hotTable, '', ...targets(), '', ...namesTable(), '', ...modes.flatMap((m) => [...e2eTable(m), ''])].join('\n');

/** A log-log line chart: cold start, its floor, and one change, against the Service count. */
function chart(rows: readonly Row[], mode: string): string {
  const W = 640,
    H = 360,
    L = 70,
    R = 20,
    T = 30,
    B = 50;
  const xs = rows.map((x) => x.services);
  const series = [
    { name: 'cold start', color: '#1f77b4', v: rows.map((x) => x.coldMs) },
    { name: 'cold start, kernel floor', color: '#aec7e8', v: rows.map((x) => x.coldFloorMs) },
    { name: 'one endpoint change', color: '#d62728', v: rows.map((x) => x.changeMs) },
    { name: 'one change, kernel floor', color: '#ff9896', v: rows.map((x) => x.changeFloorMs) },
  ];
  const all = series.flatMap((x) => x.v);
  const [x0, x1] = [Math.log10(Math.min(...xs)), Math.log10(Math.max(...xs))];
  const [y0, y1] = [Math.floor(Math.log10(Math.min(...all))), Math.ceil(Math.log10(Math.max(...all)))];
  const px = (v: number) => L + ((Math.log10(v) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (v: number) => H - B - ((Math.log10(v) - y0) / (y1 - y0 || 1)) * (H - T - B);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  for (let e = y0; e <= y1; e++) {
    const y = py(10 ** e);
    out.push(`<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#ddd"/>`, `<text x="${L - 6}" y="${y + 4}" text-anchor="end">${s(10 ** e)}</text>`);
  }
  for (const x of xs) out.push(`<line x1="${px(x)}" x2="${px(x)}" y1="${T}" y2="${H - B}" stroke="#eee"/>`, `<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${k(x)}</text>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">Services (${rows[0]?.endpoints && rows[0].endpoints / rows[0].services} endpoints each), log scale</text>`);
  out.push(`<text x="${L}" y="${T - 12}">${mode} mode: time from empty / from one EndpointSlice change to rules in the kernel (log scale)</text>`);
  series.forEach((ser, i) => {
    out.push(`<polyline fill="none" stroke="${ser.color}" stroke-width="2" points="${ser.v.map((v, j) => `${px(xs[j]!)},${py(v)}`).join(' ')}"/>`);
    for (const [j, v] of ser.v.entries()) out.push(`<circle cx="${px(xs[j]!)}" cy="${py(v)}" r="3" fill="${ser.color}"/>`);
    out.push(`<rect x="${L + 10}" y="${T + 8 + i * 16}" width="12" height="3" fill="${ser.color}"/>`, `<text x="${L + 28}" y="${T + 13 + i * 16}">${ser.name}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** bench/results/run.json: `kproxy run` beside upstream kube-proxy against a real API server (run.ts). */
interface RunDoc {
  date: string;
  /** The API server's and upstream's version; absent in v1.26 files. */
  kubernetes?: string;
  /** When the rows come from more than one invocation: which rows each ran, and why. */
  invocations?: { date: string; rows: string[]; why?: string }[];
  cpus: number;
  syncPeriod: string;
  rows: RunRow[];
}

const PROXY_NAMES: Record<RunRow['proxy'], string> = {
  'kproxy-iptables': 'kproxy, iptables',
  'kproxy-nftables': 'kproxy, nftables',
  upstream: 'upstream v1.26',
  'upstream-minimize': 'upstream + MinimizeIPTablesRestore',
  'upstream-nftables': 'upstream, nftables',
};

/**
 * The side-by-side table of a run.ts results file, per size, with ratios against upstream: run.json
 * (v1.26, against upstream iptables mode) or run-v1.36.json (each kproxy mode against upstream's same mode).
 */
function runTable(file = 'results/run.json'): string[] {
  let doc: RunDoc;
  try {
    doc = JSON.parse(readFileSync(join(DIR, file), 'utf8')) as RunDoc;
  } catch {
    return [`No results yet: run \`KUBEBUILDER_ASSETS=… node bench/run.ts\` (needs the envtest assets) for bench/${file}.`];
  }
  const version = doc.kubernetes ?? 'v1.26';
  const sameMode = version !== 'v1.26';
  const name = (r: RunRow) =>
    r.proxy === 'upstream' ? `upstream ${version}${sameMode ? ', iptables' : ''}` : r.proxy === 'upstream-nftables' ? `upstream ${version}, nftables` : PROXY_NAMES[r.proxy];
  const pct = (v: number | undefined) => (v === undefined ? '–' : `${(v * 100).toFixed(v < 0.01 ? 2 : 1)} %`);
  const sec = (v: number | undefined) => (v === undefined ? '–' : `${v.toFixed(v < 1 ? 3 : v < 10 ? 2 : 1)} s`);
  const ratio = (ours: number | undefined, theirs: number | undefined) => (ours === undefined || theirs === undefined || theirs === 0 ? '' : ` (${(ours / theirs).toFixed(2)}×)`);
  // Shapes: Services × endpoints per Service, by Service count then endpoints.
  const shapes = [...new Map(doc.rows.map((r) => [`${r.services}×${r.endpoints}`, [r.services, r.endpoints] as const])).values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const mixed = new Set(doc.rows.map((r) => r.endpoints)).size > 1;
  const split =
    doc.invocations && doc.invocations.length > 1
      ? ` The rows come from ${doc.invocations.length} invocations: ${doc.invocations.map((i) => `one (finished ${i.date.slice(0, 10)} ${i.date.slice(11, 16)} UTC) ran ${i.rows.join(', ')}${i.why ? ` (${i.why})` : ''}`).join('; ')}.`
      : '';
  const out = [
    `${split ? 'Runs' : 'One run'} of \`bench/run.ts\` (${doc.date.slice(0, 10)}, ${doc.cpus} CPUs, sync period ${doc.syncPeriod}${mixed ? '' : `, ${doc.rows[0]?.endpoints ?? 10} endpoints per Service`}): each proxy alone in a fresh node namespace against the same real kube-apiserver ${version}. Ratios in parentheses are against ${sameMode ? `upstream ${version} in the same mode` : 'upstream v1.26 without the feature gate'}.${split}`,
  ];
  for (const [n, e] of shapes) {
    const rows = doc.rows.filter((r) => r.services === n && r.endpoints === e);
    const baseOf = (r: RunRow) => rows.find((x) => x.proxy === (sameMode && r.proxy.endsWith('nftables') ? 'upstream-nftables' : 'upstream'));
    const cold = (r: RunRow) =>
      r.coldStartSeconds === undefined
        ? `not done in ${r.coldLimitSeconds} s (stopped; ${r.coldCpuSeconds.toFixed(0)} CPU s, RSS ${mib(r.rssAtLimitMiB)})`
        : sec(r.coldStartSeconds) +
          ratio(r.coldStartSeconds, baseOf(r)?.coldStartSeconds) +
          (r.coldStartRuns && r.coldStartRuns.length > 1 ? `, median of ${r.coldStartRuns.map((x) => x.toFixed(2)).join(', ')}` : '');
    const line = (label: string, cell: (r: RunRow) => string) => `| ${label} | ${rows.map(cell).join(' | ')} |`;
    out.push(
      '',
      mixed ? `**${k(n)} Services × ${e} endpoint${e === 1 ? '' : 's'}** (+ default/kubernetes)` : `**${k(n)} Services** (+ default/kubernetes)`,
      '',
      `| | ${rows.map(name).join(' | ')} |`,
      `|---|${rows.map(() => '---|').join('')}`,
      line('process start → every rule in the kernel', cold),
      line(
        'CPU seconds over the cold start (of which its tools: iptables-restore, nft, …)',
        (r) =>
          `${r.coldCpuSeconds.toFixed(1)}${r.coldChildCpuSeconds === undefined ? '' : ` (${r.coldChildCpuSeconds.toFixed(1)})`}${ratio(r.coldCpuSeconds, baseOf(r)?.coldStartSeconds === undefined ? undefined : baseOf(r)!.coldCpuSeconds)}`,
      ),
      line('RSS after the cold sync', (r) => mib(r.rssAfterColdMiB) + ratio(r.rssAfterColdMiB, baseOf(r)?.rssAfterColdMiB)),
      line('of which V8 heap, used / reserved (kproxy /metrics)', (r) => (r.heapAfterCold ? `${r.heapAfterCold.usedMiB} / ${r.heapAfterCold.totalMiB} MiB` : '–')),
      line('cold start: lists received / complete sync begun', (r) => (r.coldPhases ? `${sec(r.coldPhases.listedSeconds)} / ${sec(r.coldPhases.syncBeganSeconds)}` : '–')),
      line('of the complete sync, per family: plan / render / write', (r) => {
        const phases = r.coldPhases?.phasesMs;
        if (!phases) return '–';
        const ms = (x: number) => (x < 1000 ? `${Math.round(x)} ms` : `${(x / 1000).toFixed(2)} s`);
        return Object.entries(phases)
          .map(([family, p]) => `${family} ${ms(p.plan)} / ${ms(p.render)} / ${ms(p.write)}`)
          .join('; ');
      }),
      line('floor: the tool alone, the same rules, before each cold start (median)', (r) =>
        r.coldFloorSeconds ? `${sec(runFloor(r))} (${r.coldFloorSeconds.map((x) => x.toFixed(2)).join(', ')})` : '–',
      ),
      line('CPU, nothing changing', (r) => (r.quietSeconds === undefined ? '–' : `${pct(r.quietCoreShare)} over ${r.quietSeconds} s`)),
      line('one endpoint change → its rule in the kernel: median / max', (r) =>
        r.changeSeconds === undefined ? '–' : `${sec(r.changeMedianSeconds)} / ${sec(r.changeMaxSeconds)} (${r.changeSeconds.length})${ratio(r.changeMedianSeconds, baseOf(r)?.changeMedianSeconds)}`,
      ),
      line('CPU under one change a second', (r) => (r.churnSeconds === undefined ? '–' : `${pct(r.churnCoreShare)} over ${r.churnSeconds} s`)),
      line('RSS after the churn', (r) => mib(r.rssAfterChurnMiB) + ratio(r.rssAfterChurnMiB, baseOf(r)?.rssAfterChurnMiB)),
      line('restart on the loaded node', (r) => (r.proxy.startsWith('kproxy') ? sec(r.restartSeconds) : '–')),
    );
  }
  return out;
}

/** The median of a run row's own floor measurements, seconds; undefined when it has none. */
function runFloor(r: RunRow | undefined): number | undefined {
  const xs = r?.coldFloorSeconds;
  return xs && xs.length > 0 ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : undefined;
}

/** Upstream v1.26's RSS at 10k Services on a quiet cluster, as issue 12 measured it (upstream does not finish a first sync here). */
const ISSUE_UPSTREAM_RSS_10K_MIB = 237;

/** Issue 12's targets, from run.json, the end-to-end floors (iptables.json, nftables.json), startup.json and nft-floor.json. */
function targetTable(): string[] {
  let run: RunDoc;
  try {
    run = JSON.parse(readFileSync(join(DIR, 'results/run.json'), 'utf8')) as RunDoc;
  } catch {
    return [];
  }
  const row = (proxy: RunRow['proxy'], n: number) => run.rows.find((r) => r.proxy === proxy && r.services === n);
  // The run's own floor (measured beside it) when it has one, else the end-to-end table's; seconds.
  const e2eFloor = (mode: string, n: number) => {
    const ms = modes.find((m) => m.mode === mode)?.rows.find((r) => r.services === n)?.coldFloorMs;
    return ms === undefined ? undefined : ms / 1000;
  };
  const floorOf = (mode: string, p: RunRow['proxy'], n: number) => runFloor(row(p, n)) ?? e2eFloor(mode, n);
  /** How the same start compares with `e2e.ts`'s floor, when the verdict used the run's own. */
  const e2eNote = (mode: string, n: number, f: number, text: (e: number) => string) => {
    const e = e2eFloor(mode, n);
    return e === undefined || e === f ? '' : `; against \`e2e.ts\`'s floor (${e.toFixed(2)} s): ${text(e)}`;
  };
  const met = (ok: boolean | undefined, text: string) => (ok === undefined ? `${text} (not measured)` : `${text} ${ok ? 'met' : '**missed**'}`);
  const out = ['| target (issue 12) | kproxy, iptables | kproxy, nftables |', '|---|---|---|'];
  const both = (label: string, cell: (mode: 'iptables' | 'nftables', proxy: RunRow['proxy']) => string) =>
    out.push(`| ${label} | ${cell('iptables', 'kproxy-iptables')} | ${cell('nftables', 'kproxy-nftables')} |`);
  const up1k = row('upstream', 1000);
  const up10k = row('upstream', 10000);
  both('RSS after the cold sync ≤ 2× upstream at 1k', (_, p) => {
    const r = row(p, 1000);
    return r?.rssAfterColdMiB === undefined || up1k?.rssAfterColdMiB === undefined
      ? '–'
      : met(r.rssAfterColdMiB <= 2 * up1k.rssAfterColdMiB, `${r.rssAfterColdMiB} MiB against ${2 * up1k.rssAfterColdMiB}`);
  });
  both('RSS after the cold sync ≤ upstream at 10k', (_, p) => {
    const r = row(p, 10000);
    if (r?.rssAfterColdMiB === undefined) return '–';
    if (up10k?.rssAfterColdMiB !== undefined) return met(r.rssAfterColdMiB <= up10k.rssAfterColdMiB, `${r.rssAfterColdMiB} MiB against ${up10k.rssAfterColdMiB}`);
    // Upstream never finished here: the issue's own measurement of upstream at 10k, quiet, is the bar.
    return met(
      r.rssAfterColdMiB <= ISSUE_UPSTREAM_RSS_10K_MIB,
      `${r.rssAfterColdMiB} MiB against ${ISSUE_UPSTREAM_RSS_10K_MIB} (the issue's figure for upstream; here it never finished, ${mib(up10k?.rssAtLimitMiB)} when stopped)`,
    );
  });
  both('per-Service RSS slope, 1k → 10k', (_, p) => {
    const [a, b] = [row(p, 1000)?.rssAfterColdMiB, row(p, 10000)?.rssAfterColdMiB];
    return a === undefined || b === undefined ? '–' : `${(((b - a) * 1024) / 9000).toFixed(1)} KiB per Service (issue: upstream ≈ 18)`;
  });
  both('process start → every rule ≤ floor + 1 s at 1k', (mode, p) => {
    const [r, f] = [row(p, 1000)?.coldStartSeconds, floorOf(mode, p, 1000)];
    if (r === undefined || f === undefined) return '–';
    return met(r <= f + 1, `${r.toFixed(2)} s against ${(f + 1).toFixed(2)} s${e2eNote(mode, 1000, f, (e) => `${r.toFixed(2)} s against ${(e + 1).toFixed(2)} s`)}`);
  });
  both('process start → every rule ≤ 1.3× floor at 10k', (mode, p) => {
    const [r, f] = [row(p, 10000)?.coldStartSeconds, floorOf(mode, p, 10000)];
    if (r === undefined || f === undefined) return '–';
    return met(r <= 1.3 * f, `${(r / f).toFixed(2)}× (${r.toFixed(1)} s against ${f.toFixed(2)} s${e2eNote(mode, 10000, f, (e) => `${(r / e).toFixed(2)}×`)})`);
  });
  both('one endpoint change at 10k (nftables ≤ 50 ms)', (mode, p) => {
    const r = row(p, 10000);
    if (r?.changeMedianSeconds === undefined) return '–';
    const text = `median ${Math.round(r.changeMedianSeconds * 1000)} ms`;
    return mode === 'nftables' ? met(r.changeMedianSeconds <= 0.05, text) : text;
  });
  out.push(
    '',
    run.rows.some((r) => r.coldFloorSeconds)
      ? `Floors: the tool alone writing the same rules into an empty namespace, measured by \`run.ts\` once before each of its cold starts, on the same kernel and next to the same API server (the "floor" row above; each side is the median of its three runs); for comparison, the floors of the end-to-end tables above (\`e2e.ts\`, ${[...new Set(modes.map((m) => m.date.slice(0, 10)))].join(' and ')}), measured in a process of their own without an API server.`
      : `Floors: the tool alone writing the same rules into an empty namespace, from the end-to-end tables above (\`e2e.ts\`, ${[...new Set(modes.map((m) => m.date.slice(0, 10)))].join(' and ')}).`,
  );
  return out;
}

/** bench/results/startup.json: the file commands' start (startup.ts). */
function startupTable(): string[] {
  let doc: { date: string; runs: number; rows: { command: string; wallSeconds: number; processSeconds: number; maxRssMiB: number }[]; baselines: { what: string; maxRssMiB: number }[] };
  try {
    doc = JSON.parse(readFileSync(join(DIR, 'results/startup.json'), 'utf8')) as typeof doc;
  } catch {
    return ['No results yet: run `node bench/startup.ts`.'];
  }
  const out = [
    `\`bench/startup.ts\` (${doc.date.slice(0, 10)}; medians of ${doc.runs} runs, compile cache filled): \`bin/kproxy\` on the bundled example (10 Services).`,
    '',
    '| command | wall time | peak RSS |',
    '|---|---|---|',
  ];
  for (const r of doc.rows) out.push(`| \`kproxy ${r.command}\` | ${r.wallSeconds.toFixed(2)} s | ${r.maxRssMiB} MiB |`);
  for (const b of doc.baselines) out.push(`| ${b.what} | | ${b.maxRssMiB} MiB |`);
  return out;
}

/** bench/results/deep-input.json: files with a value nested deep (deep-input.ts). */
function deepInputTable(): string[] {
  let doc: {
    date: string;
    runs: number;
    rows: { depth: number; file: string; bytes: number; wallSeconds: number; processSeconds: number; maxRssMiB: number; exitCode: number; neighbourRules: boolean }[];
  };
  try {
    doc = JSON.parse(readFileSync(join(DIR, 'results/deep-input.json'), 'utf8')) as typeof doc;
  } catch {
    return ['No results yet: run `node bench/deep-input.ts`.'];
  }
  const depths = [...new Set(doc.rows.map((r) => r.depth))];
  const files = [...new Set(doc.rows.map((r) => r.file))];
  const cell = (r: (typeof doc.rows)[number] | undefined) =>
    r === undefined ? '' : `${r.wallSeconds.toFixed(2)} s, ${r.maxRssMiB} MiB${r.exitCode === 0 && r.neighbourRules ? '' : ` (exit ${r.exitCode}${r.neighbourRules ? '' : ', neighbour lost'})`}`;
  const out = [
    `\`bench/deep-input.ts\` (${doc.date.slice(0, 10)}; medians of ${doc.runs} runs): \`kproxy dry-run --from FILE --ip-family 4\`, wall time and peak RSS, on each file of test/support/deep.ts; every run exited 0 with the neighbour's rules unless the cell says otherwise.`,
    '',
    `| file | ${depths.map((d) => `${d.toLocaleString('en')} levels`).join(' | ')} |`,
    `|---|${depths.map(() => '---').join('|')}|`,
  ];
  for (const f of files) out.push(`| \`${f}\` | ${depths.map((d) => cell(doc.rows.find((r) => r.file === f && r.depth === d))).join(' | ')} |`);
  return out;
}

/** bench/results/inspect.json: the operator commands at scale (inspect.ts). */
function inspectTable(): string[] {
  let doc: {
    date: string;
    runs: number;
    kernel: string;
    rows: { services: number; mode: string; command: string; wallSeconds?: number | null; processSeconds?: number | null; maxRssMiB?: number | null; exitCode?: number | null; note?: string }[];
  };
  try {
    doc = JSON.parse(readFileSync(join(DIR, 'results/inspect.json'), 'utf8')) as typeof doc;
  } catch {
    return ['No results yet: run `node bench/inspect.ts` (as root).'];
  }
  const notes = doc.rows.some((r) => r.note);
  const out = [
    `\`bench/inspect.ts\` (${doc.date.slice(0, 10)}, kernel ${doc.kernel}; each row's own date in \`results/inspect.json\`): \`bin/kproxy\` as an operator runs it, N Services × 10 endpoints from a file; \`list\` and \`explain\` medians of ${doc.runs} runs, \`verify\` once, right after \`sync\` in a fresh network namespace.`,
    '',
    ...(notes ? ['| Services | mode | command | wall time | peak RSS | note |', '|---|---|---|---|---|---|'] : ['| Services | mode | command | wall time | peak RSS |', '|---|---|---|---|---|']),
  ];
  for (const r of doc.rows) {
    const wall = typeof r.wallSeconds === 'number' ? `${r.wallSeconds.toFixed(2)} s` : '—';
    const rss = typeof r.maxRssMiB === 'number' ? `${r.maxRssMiB} MiB` : '—';
    out.push(`| ${r.services} | ${r.mode} | \`${r.command}\` | ${wall} | ${rss} |${notes ? ` ${r.note ?? ''} |` : ''}`);
  }
  return out;
}

/** bench/results/memory.json: the live heap per stage of a cold sync (memory.ts). */
function memoryTable(): string[] {
  let doc: { date: string; node: string; rows: { services: number; endpoints: number; mode: string; heapMiB: number; stages: { stage: string; addedMiB: number }[] }[] };
  try {
    doc = JSON.parse(readFileSync(join(DIR, 'results/memory.json'), 'utf8')) as typeof doc;
  } catch {
    return ['No results yet: run `node --expose-gc bench/memory.ts`.'];
  }
  const cols = doc.rows;
  const out = [
    `\`bench/memory.ts\` (${doc.date.slice(0, 10)}, Node ${doc.node}): live heap added by each stage of a cold sync, MiB, after full collections.`,
    '',
    `| stage | ${cols.map((r) => `${k(r.services)} ${r.mode}`).join(' | ')} |`,
    `|---|${cols.map(() => '---|').join('')}`,
  ];
  for (const [i, stage] of (cols[0]?.stages ?? []).entries())
    out.push(`| ${stage.stage.replace(/ \(transient.*$/, ' (transient)')} | ${cols.map((r) => r.stages[i]?.addedMiB.toFixed(1) ?? '–').join(' | ')} |`);
  out.push(`| **live heap at the end** | ${cols.map((r) => `**${r.heapMiB}**`).join(' | ')} |`);
  return out;
}

/** bench/results/nft-floor.json: what nft itself costs (nft-floor.ts). */
function nftFloorTable(): string[] {
  let doc: {
    date: string;
    tool: string;
    services: number;
    endpoints: number;
    runs: number;
    fullJsonBytes: number;
    fullTextBytes: number;
    coldJsonSeconds: number;
    coldTextSeconds: number;
    fullCommands?: number;
    stageCommands?: number;
    stages?: number;
    /** Keys `one|stages reused|fresh`; absent in older results. */
    coldLayouts?: Record<string, { seconds: number; peakMiB: number }>;
    changeSeconds: Record<string, number>;
  };
  try {
    doc = JSON.parse(readFileSync(join(DIR, 'results/nft-floor.json'), 'utf8')) as typeof doc;
  } catch {
    return ['No results yet: run `node bench/nft-floor.ts` (root).'];
  }
  const out = [
    `\`bench/nft-floor.ts\` (${doc.date.slice(0, 10)}, ${doc.tool}, ${k(doc.services)} Services × ${doc.endpoints} endpoints; medians of ${doc.runs} runs): nft alone, nothing of kproxy's timed.`,
    '',
    '| cold: the whole table into an empty namespace | seconds | input |',
    '|---|---|---|',
    `| \`nft -j -f\` (JSON, what kproxy sends) | ${doc.coldJsonSeconds.toFixed(2)} s | ${kb(doc.fullJsonBytes)} |`,
    `| \`nft -f\` (the same batch as text) | ${doc.coldTextSeconds.toFixed(2)} s (JSON is ${(doc.coldJsonSeconds / doc.coldTextSeconds).toFixed(2)}×) | ${kb(doc.fullTextBytes)} |`,
    '',
  ];
  const l = doc.coldLayouts;
  if (l) {
    const cell = (key: string) => `${l[key]!.seconds.toFixed(2)} s`;
    out.push(
      `| cold, \`nft -j -f\` | pages as the last run left them | fresh pages (another process holds 2 GiB) | nft's peak RSS |`,
      '|---|---|---|---|',
      `| one transaction | ${cell('one reused')} | ${cell('one fresh')} | ${l['one reused']!.peakMiB} MiB${doc.fullCommands ? ` (${((l['one reused']!.peakMiB * 1024) / doc.fullCommands).toFixed(1)} KiB per command, ${doc.fullCommands.toLocaleString('en')} commands)` : ''} |`,
      `| ${doc.stages} transactions of ≤ ${k(doc.stageCommands!)} commands (kproxy, where there is no table) | ${cell('stages reused')} | ${cell('stages fresh')} | ${l['stages reused']!.peakMiB} MiB |`,
      '',
    );
  }
  out.push('| one transaction on the loaded table | milliseconds |', '|---|---|');
  for (const [name, seconds] of Object.entries(doc.changeSeconds)) out.push(`| ${name} | ${Math.round(seconds * 1000)} ms |`);
  return out;
}

/** The issue-13 bound: dual-stack costs at most this many times single-stack (two families of rules, nothing quadratic). */
const DUAL_STACK_BOUND = 2.2;

/**
 * bench/results/dualstack/: the same size measured single-stack and dual-stack in one session
 * (`e2e.ts --families 4` and `4,6` per mode, `hotpath.ts --families 4` and `4,6`), with the ratio
 * of each figure against the bound.
 */
function dualStackTable(): string[] {
  const at = (name: string) => join(DIR, 'results/dualstack', name);
  let e2e: Record<string, E2E>;
  let hotpath: Record<string, Hot>;
  try {
    e2e = Object.fromEntries(['iptables-4', 'iptables-4,6', 'nftables-4', 'nftables-4,6'].map((n) => [n, JSON.parse(readFileSync(at(`${n}.json`), 'utf8')) as E2E]));
    hotpath = Object.fromEntries(['4', '4,6'].map((n) => [n, JSON.parse(readFileSync(at(`hotpath-${n}.json`), 'utf8')) as Hot]));
  } catch {
    return ['(no results yet: run `bench/e2e.ts --families 4` and `--families 4,6` per mode and `bench/hotpath.ts` likewise, with `--out bench/results/dualstack/…`)'];
  }
  const judged = (single: number, dual: number) => {
    const r = dual / single;
    return `${x2(dual, single)}${r <= DUAL_STACK_BOUND ? '' : ' **over**'}`;
  };
  const out = ['| at 10k Services, 10 endpoints per family | single-stack | dual-stack | ratio (bound 2.2×) |', '|---|---|---|---|'];
  for (const mode of ['iptables', 'nftables']) {
    const one = e2e[`${mode}-4`]!.rows.at(-1)!;
    const two = e2e[`${mode}-4,6`]!.rows.at(-1)!;
    out.push(`| ${mode}: cold start, every rule in the kernel | ${s(one.coldMs)} | ${s(two.coldMs)} | ${judged(one.coldMs, two.coldMs)} |`);
    out.push(`| ${mode}: its floor (the tools alone) | ${s(one.coldFloorMs)} | ${s(two.coldFloorMs)} | ${x2(two.coldFloorMs, one.coldFloorMs)} |`);
    out.push(`| ${mode}: cold start against its floor | ${x2(one.coldMs, one.coldFloorMs)} | ${x2(two.coldMs, two.coldFloorMs)} | |`);
    const by = two.changeMsByFamily ?? {};
    const floorBy = two.changeFloorMsByFamily ?? {};
    out.push(
      `| ${mode}: one endpoint change → in the kernel (median; dual: IPv4 slice / IPv6 slice, both families synced) | ${s(one.changeMs)} | ${s(by.IPv4 ?? NaN)} / ${s(by.IPv6 ?? NaN)} | ${judged(one.changeMs, Math.max(by.IPv4 ?? NaN, by.IPv6 ?? NaN))} |`,
    );
    out.push(`| ${mode}: its floor (the changed family's delta alone) | ${s(one.changeFloorMs)} | ${s(floorBy.IPv4 ?? NaN)} / ${s(floorBy.IPv6 ?? NaN)} | |`);
  }
  const h1 = hotpath['4']!.rows.at(-1)!;
  const h2 = hotpath['4,6']!.rows.at(-1)!;
  for (const [label, pick] of [
    ['hot path: cold plan', (r: HotRow) => r.coldPlan.p50Ms],
    ['hot path: cold plan + render, iptables', (r: HotRow) => r.coldPlan.p50Ms + r.coldRenderIptables.p50Ms],
    ['hot path: cold plan + render, nftables', (r: HotRow) => r.coldPlan.p50Ms + r.coldRenderNftables.p50Ms],
    ['hot path: one change, iptables (p50)', (r: HotRow) => r.changeIptables.p50Ms],
    ['hot path: one change, nftables (p50)', (r: HotRow) => r.changeNftables.p50Ms],
    ['hot path, GC settled before each sample: cold plan', (r: HotRow) => r.settled?.coldPlanMs ?? NaN],
    ['hot path, GC settled: one change, iptables', (r: HotRow) => r.settled?.changeIptablesMs ?? NaN],
    ['hot path, GC settled: one change, nftables', (r: HotRow) => r.settled?.changeNftablesMs ?? NaN],
    ['hot path: RSS after load + plan + render, iptables', (r: HotRow) => r.rssMB.iptables],
    ['hot path: RSS after load + plan + render, nftables', (r: HotRow) => r.rssMB.nftables],
  ] as const) {
    const unit = label.includes('RSS') ? (v: number) => `${v} MiB` : s;
    out.push(`| ${label} | ${unit(pick(h1))} | ${unit(pick(h2))} | ${judged(pick(h1), pick(h2))} |`);
  }
  const ballast = h1.settled?.withBallastMs;
  if (ballast !== undefined && h1.settled)
    out.push(
      '',
      `The same single-stack cold plan, GC settled, with an unused dual-stack-sized copy of the state held beside it: ${s(ballast)} against ${s(h1.settled.coldPlanMs)} (${x2(ballast, h1.settled.coldPlanMs)}): the bigger heap alone, with no more work.`,
    );
  const d = e2e['iptables-4,6']!;
  out.push('', `${d.tool}, ${d.kernel}, ${d.cpus} CPUs, Node ${d.node}; ${d.runs} runs per figure (median), measured ${d.date.slice(0, 10)}; each pair in one session.`);
  return out;
}

/** Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `text`. */
function between(text: string, name: string, body: string): string {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const at = text.indexOf(begin);
  const until = text.indexOf(end);
  if (at < 0 || until < 0) throw new Error(`bench/README.md has no ${begin} … ${end} markers`);
  return `${text.slice(0, at + begin.length)}\n${body}\n${text.slice(until)}`;
}

for (const m of modes) writeFileSync(join(DIR, `${m.mode}.svg`), chart(m.rows, m.mode));
const run = [...runTable(), '', ...targetTable()].join('\n');
const run136 = runTable('results/run-v1.36.json').join('\n');
const floor = nftFloorTable().join('\n');
const memory = memoryTable().join('\n');
const startup = startupTable().join('\n');
const dualStack = dualStackTable().join('\n');
const inspect = inspectTable().join('\n');
const deepInput = deepInputTable().join('\n');
const policy = policyTables(DIR).join('\n');
let readme = readFileSync(join(DIR, 'README.md'), 'utf8');
for (const [name, body] of [
  ['results', table],
  ['run', run],
  ['run-v1.36', run136],
  ['nft-floor', floor],
  ['memory', memory],
  ['startup', startup],
  ['dualstack', dualStack],
  ['inspect', inspect],
  ['deep-input', deepInput],
  ['policy', policy],
] as const)
  readme = between(readme, name, body);
writeFileSync(join(DIR, 'README.md'), readme);
console.log(table);
console.log(run);
