/**
 * Turns bench/results/*.json into the tables and the SVG chart of bench/README.md, between its
 * `<!-- results:begin -->` and `<!-- results:end -->` markers. Usage: `npm run bench:report`.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface Row {
  services: number; endpoints: number; planRenderMs: number; coldMs: number; coldFloorMs: number; coldCommands: number; coldBytes: number;
  changeMs: number; changePlanRenderMs: number; changeWriteMs: number; changeFloorMs: number; changeCommands: number; changeBytes: number;
}
interface Layout { services: number; kproxyLayoutMs: number; withoutAffinityMs: number }
interface Result { date: string; nft: string; kernel: string; node: string; cpus: number; endpointsPerService: number; runs: number; rows: Row[]; layouts: Layout[] }

const DIR = import.meta.dirname;
const r = JSON.parse(readFileSync(join(DIR, 'results/nftables.json'), 'utf8')) as Result;
const s = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms} ms`);
const kb = (b: number) => (b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(1)} kB`);
const k = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));
const perK = (ms: number, n: number) => `${(ms / n).toFixed(2)} ms`;

const table = [
  `Run ${r.date.slice(0, 10)}: ${r.nft}, Linux ${r.kernel}, Node ${r.node}, ${r.cpus} CPUs; ${r.endpointsPerService} endpoints per Service; median of ${r.runs} runs (1 at 50k).`,
  '',
  '| Services | endpoints | plan + render | cold start | kernel floor | ratio | per Service | batch | one change | of it: plan + render | write | floor | ratio | delta |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...r.rows.map((x) =>
    `| ${k(x.services)} | ${k(x.endpoints)} | ${s(x.planRenderMs)} | ${s(x.coldMs)} | ${s(x.coldFloorMs)} | ${(x.coldMs / x.coldFloorMs).toFixed(2)} | ${perK(x.coldMs, x.services)} | ${x.coldCommands} cmds, ${kb(x.coldBytes)} | ${s(x.changeMs)} | ${s(x.changePlanRenderMs)} | ${s(x.changeWriteMs)} | ${s(x.changeFloorMs)} | ${(x.changeWriteMs / x.changeFloorMs).toFixed(2)} | ${x.changeCommands} cmds, ${kb(x.changeBytes)} |`),
  '',
  'Layouts, cold start (`nft -j -f` of the whole table into an empty namespace):',
  '',
  '| Services | kproxy | kproxy, no affinity Services |',
  '|---|---|---|',
  ...r.layouts.map((x) => `| ${k(x.services)} | ${s(x.kproxyLayoutMs)} | ${s(x.withoutAffinityMs)} |`),
  '',
  '![cold start and one change, nftables mode](nftables.svg)',
].join('\n');

/** A log-log line chart: cold start, its floor, and one change, against the Service count. */
function chart(rows: readonly Row[]): string {
  const W = 640, H = 360, L = 70, R = 20, T = 30, B = 50;
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
  out.push(`<text x="${L}" y="${T - 12}">nftables mode: time from empty / from one EndpointSlice change to rules in the kernel (log scale)</text>`);
  series.forEach((ser, i) => {
    out.push(`<polyline fill="none" stroke="${ser.color}" stroke-width="2" points="${ser.v.map((v, j) => `${px(xs[j]!)},${py(v)}`).join(' ')}"/>`);
    for (const [j, v] of ser.v.entries()) out.push(`<circle cx="${px(xs[j]!)}" cy="${py(v)}" r="3" fill="${ser.color}"/>`);
    out.push(`<rect x="${L + 10}" y="${T + 8 + i * 16}" width="12" height="3" fill="${ser.color}"/>`, `<text x="${L + 28}" y="${T + 13 + i * 16}">${ser.name}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

writeFileSync(join(DIR, 'nftables.svg'), chart(r.rows));
const readme = readFileSync(join(DIR, 'README.md'), 'utf8');
const begin = '<!-- results:begin -->';
const end = '<!-- results:end -->';
const at = readme.indexOf(begin);
const until = readme.indexOf(end);
if (at < 0 || until < 0) throw new Error(`bench/README.md has no ${begin} … ${end} markers`);
writeFileSync(join(DIR, 'README.md'), `${readme.slice(0, at + begin.length)}\n${table}\n${readme.slice(until)}`);
console.log(table);
