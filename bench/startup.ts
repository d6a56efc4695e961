/**
 * How fast the file commands start and how much memory they take: `bin/kproxy dry-run` of the
 * bundled example (10 Services), both modes, as an operator runs it. One untimed run first fills
 * Node's compile cache (as the image ships it filled); then `--runs` runs, each reporting its own
 * time since process start and peak RSS (the `command done` debug line), plus the wall time
 * around the launcher. Medians.
 *
 * Usage: `node bench/startup.ts [--runs 7] [--out bench/results/startup.json]`. Needs nothing but the repo.
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '7' }, out: { type: 'string', default: 'bench/results/startup.json' } } });
const ROOT = join(import.meta.dirname, '..');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const rows = [];
for (const mode of ['iptables', 'nftables']) {
  const argv = ['dry-run', '--from', join(ROOT, 'examples'), '--proxy-mode', mode, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16', '--log-level', 'debug'];
  const once = async () => {
    const t0 = performance.now();
    const r = await execa(join(ROOT, 'bin/kproxy'), argv);
    const wall = (performance.now() - t0) / 1000;
    const done = r.stderr
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; seconds?: number; maxRssMiB?: number })
      .find((l) => l.msg === 'command done');
    if (!done) throw new Error('no "command done" line');
    return { wall, seconds: done.seconds!, maxRssMiB: done.maxRssMiB! };
  };
  await once();
  const runs = [];
  for (let i = 0; i < Number(args.runs); i++) runs.push(await once());
  const row = {
    command: `dry-run --proxy-mode ${mode}`,
    wallSeconds: median(runs.map((r) => r.wall)),
    processSeconds: median(runs.map((r) => r.seconds)),
    maxRssMiB: median(runs.map((r) => r.maxRssMiB)),
  };
  rows.push(row);
  console.log(`${row.command}: ${row.wallSeconds.toFixed(3)} s wall, ${row.processSeconds.toFixed(3)} s in the process, peak RSS ${row.maxRssMiB} MiB`);
}
// The floor under `kproxy run`: Node alone, Node with the whole API client loaded, and Node with
// the parts `run` loads (src/sources/client-node.ts: no generated API classes or models), with
// bin/kproxy's flags.
const baselines = [];
for (const [what, code] of [
  ['node (bin/kproxy flags), nothing loaded', ''],
  ["node + import('@kubernetes/client-node')", "await import('@kubernetes/client-node');"],
  ['node + src/sources/client-node.ts (what `run` loads)', "await import('./src/sources/client-node.ts');"],
] as const) {
  const peaks = [];
  for (let i = 0; i < Number(args.runs); i++) {
    const script = `${code} console.log(Math.round(process.resourceUsage().maxRSS / 1024))`;
    const r = await execa(process.execPath, ['--expose-gc', '--max-semi-space-size=2', '--input-type=module', '-e', script], { cwd: ROOT, env: { NODE_COMPILE_CACHE: join(ROOT, '.compile-cache') } });
    peaks.push(Number(r.stdout.trim()));
  }
  baselines.push({ what, maxRssMiB: median(peaks) });
  console.log(`${what}: peak RSS ${median(peaks)} MiB`);
}
// TypeScript as bin/kproxy runs it, against plain JavaScript: a one-line module as .mts and as
// .mjs, the .mts with an empty compile cache (Node loads its type stripper) and with a filled one
// (as the image ships it).
const scratch = mkdtempSync(join(tmpdir(), 'kproxy-startup-'));
try {
  const line = 'console.log(Math.round(process.resourceUsage().maxRSS / 1024));';
  writeFileSync(join(scratch, 'm.mts'), `const unit: string = 'MiB';\n${line}\n`);
  writeFileSync(join(scratch, 'm.mjs'), `const unit = 'MiB';\n${line}\n`);
  for (const [what, file, cache] of [
    ['node + a one-line .mjs module', 'm.mjs', 'warm'],
    ['node + the same as .mts, compile cache empty', 'm.mts', 'empty'],
    ['node + the same as .mts, compile cache filled', 'm.mts', 'warm'],
  ] as const) {
    const peaks = [];
    for (let i = 0; i < Number(args.runs); i++) {
      const dir = join(scratch, cache === 'empty' ? `cache-${i}` : 'cache');
      if (cache === 'warm' && i === 0) await execa(process.execPath, [join(scratch, file)], { env: { NODE_COMPILE_CACHE: dir } });
      const r = await execa(process.execPath, ['--expose-gc', '--max-semi-space-size=2', '--disable-warning=ExperimentalWarning', join(scratch, file)], { env: { NODE_COMPILE_CACHE: dir } });
      peaks.push(Number(r.stdout.trim()));
    }
    baselines.push({ what, maxRssMiB: median(peaks) });
    console.log(`${what}: peak RSS ${median(peaks)} MiB`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify({ date: new Date().toISOString(), runs: Number(args.runs), rows, baselines }, null, 2)}\n`);
