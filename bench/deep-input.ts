/**
 * What a value nested deep costs a file command (issue 24): `bin/kproxy dry-run --from FILE`, as an
 * operator runs it, on each file of test/support/deep.ts (every format, the deep Service beside a
 * valid neighbour) at each depth. Each row is the wall time around the launcher, the time inside
 * the process and its peak RSS (the `command done` debug line), the exit status, and whether the
 * neighbour's rules came out. Results go to bench/results/deep-input.json; `npm run bench:report`
 * puts them in bench/README.md.
 *
 * Usage: `node bench/deep-input.ts [--depths 100,1000,10000,100000] [--runs 3] [--out bench/results/deep-input.json]`.
 * Needs no root: dry-run changes nothing.
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeDeepFiles } from '../test/support/deep.ts';

const { values: args } = parseArgs({
  options: {
    depths: { type: 'string', default: '100,1000,10000,100000' },
    runs: { type: 'string', default: '3' },
    out: { type: 'string', default: 'bench/results/deep-input.json' },
  },
});
const ROOT = join(import.meta.dirname, '..');
const KPROXY = join(ROOT, 'bin/kproxy');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Row {
  readonly depth: number;
  readonly file: string;
  readonly bytes: number;
  readonly wallSeconds: number;
  readonly processSeconds: number;
  readonly maxRssMiB: number;
  readonly exitCode: number;
  readonly neighbourRules: boolean;
}

const work = mkdtempSync(join(tmpdir(), 'kproxy-bench-deep-'));
const rows: Row[] = [];
try {
  for (const depth of args.depths.split(',').map(Number)) {
    const { dir, files } = writeDeepFiles(work, depth);
    for (const f of files) {
      const path = join(dir, f.name);
      // typed.json and typed.yaml keep the neighbour's slice in a file beside them.
      const from = f.name.startsWith('typed.') ? ['--from', path, '--from', join(dir, `typed-slice.${f.name.split('.')[1]}`)] : ['--from', path];
      const samples: { wall: number; process: number; rss: number; exitCode: number; neighbour: boolean }[] = [];
      for (let i = 0; i < Number(args.runs); i++) {
        const t0 = performance.now();
        const r = await execa(KPROXY, ['dry-run', ...from, '--hostname-override', 'node-1', '--ip-family', '4', '--log-level', 'debug'], { reject: false, timeout: 300_000, maxBuffer: 1 << 28 });
        const wall = (performance.now() - t0) / 1000;
        const done = String(r.stderr)
          .split('\n')
          .filter((l) => l.includes('"command done"'))
          .map((l) => JSON.parse(l) as { seconds: number; maxRssMiB: number })[0];
        samples.push({
          wall,
          process: done?.seconds ?? NaN,
          rss: done?.maxRssMiB ?? NaN,
          exitCode: r.exitCode ?? -1,
          neighbour: f.neighbourIP === undefined || String(r.stdout).includes(`-d ${f.neighbourIP} `),
        });
      }
      rows.push({
        depth,
        file: f.name,
        bytes: statSync(path).size,
        wallSeconds: median(samples.map((s) => s.wall)),
        processSeconds: median(samples.map((s) => s.process)),
        maxRssMiB: median(samples.map((s) => s.rss)),
        exitCode: Math.max(...samples.map((s) => s.exitCode)),
        neighbourRules: samples.every((s) => s.neighbour),
      });
      console.log(JSON.stringify(rows.at(-1)));
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify({ date: new Date().toISOString(), runs: Number(args.runs), node: process.version, rows }, null, 2)}\n`);
