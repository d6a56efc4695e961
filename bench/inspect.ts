/**
 * What the operator commands cost at scale, run as an operator runs them (`bin/kproxy`):
 * `list` and `explain` of N Services × 10 endpoints read from a file, and `verify` of a node that
 * `sync` just wrote (in a network namespace made here), both modes. Each row reports the wall time
 * around the launcher, the time inside the process and its peak RSS (the `command done` debug line).
 * `verify` reads the whole table (`iptables-save` per table, `nft -j list table`); a read that does
 * not finish within `--timeout` seconds is recorded as such.
 *
 * Usage (root, for verify): `node bench/inspect.ts [--sizes 1000,10000] [--modes iptables,nftables]
 * [--runs 3] [--timeout 300] [--out bench/results/inspect.json] [--keep]` (`--keep`: rows not measured
 * this time stay from the earlier file). Only the namespace it creates is touched; it is removed at the end.
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_NODE, benchNode, benchService, benchSlice } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000' },
    runs: { type: 'string', default: '3' },
    timeout: { type: 'string', default: '300' },
    out: { type: 'string', default: 'bench/results/inspect.json' },
    modes: { type: 'string', default: 'iptables,nftables' },
    keep: { type: 'boolean', default: false },
  },
});
const ROOT = join(import.meta.dirname, '..');
const KPROXY = join(ROOT, 'bin/kproxy');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const NS = `kpbench-inspect-${process.pid}`;

interface Row {
  readonly services: number;
  readonly mode: string;
  readonly command: string;
  readonly wallSeconds: number | undefined;
  readonly processSeconds: number | undefined;
  readonly maxRssMiB: number | undefined;
  readonly exitCode: number | undefined;
  readonly note?: string;
}

/** Runs bin/kproxy (in the namespace when `inNs`); the `command done` figures, or why there are none. */
async function measure(argv: readonly string[], inNs: boolean): Promise<Omit<Row, 'services' | 'mode' | 'command'>> {
  const t0 = performance.now();
  const cmd = inNs ? ['ip', 'netns', 'exec', NS, KPROXY] : [KPROXY];
  const r = await execa(cmd[0]!, [...cmd.slice(1), ...argv, '--log-level', 'debug'], { reject: false, timeout: Number(args.timeout) * 1000, maxBuffer: 1 << 30 });
  const wall = (performance.now() - t0) / 1000;
  if (r.timedOut) return { wallSeconds: undefined, processSeconds: undefined, maxRssMiB: undefined, exitCode: undefined, note: `did not finish in ${args.timeout} s` };
  const done = String(r.stderr)
    .split('\n')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as { msg: string; seconds?: number; maxRssMiB?: number }];
      } catch {
        return [];
      }
    })
    .find((l) => l.msg === 'command done');
  const failed = r.exitCode !== 0 && r.exitCode !== 3 && r.exitCode !== 4;
  return {
    wallSeconds: wall,
    processSeconds: done?.seconds,
    maxRssMiB: done?.maxRssMiB,
    exitCode: r.exitCode,
    ...(failed ? { note: String(r.stderr).split('\n').filter(Boolean).at(-1)?.slice(0, 300) ?? `exit ${r.exitCode}` } : {}),
  };
}

const rows: Row[] = [];
const scratch = mkdtempSync(join(tmpdir(), 'kproxy-bench-inspect-'));
await execa('ip', ['netns', 'add', NS]);
try {
  for (const n of args.sizes.split(',').map(Number)) {
    const file = join(scratch, `cluster-${n}.json`);
    const items = [benchNode()];
    for (let i = 0; i < n; i++) items.push(benchService(i), benchSlice(i, 10));
    writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    const flags = ['--from', file, '--hostname-override', BENCH_NODE, '--cluster-cidr', '10.64.0.0/10'];
    for (const mode of args.modes.split(',')) {
      const modeFlags = [...flags, '--proxy-mode', mode];
      for (const [command, argv] of [
        ['list', ['list', ...modeFlags]],
        ['explain (a ClusterIP)', ['explain', '10.96.0.1:80', ...modeFlags]],
      ] as const) {
        await measure(argv, false); // fills the compile cache
        const runs = [];
        for (let i = 0; i < Number(args.runs); i++) runs.push(await measure(argv, false));
        const row = {
          services: n,
          mode,
          command,
          wallSeconds: median(runs.map((r) => r.wallSeconds!)),
          processSeconds: median(runs.map((r) => r.processSeconds!)),
          maxRssMiB: median(runs.map((r) => r.maxRssMiB!)),
          exitCode: runs[0]!.exitCode,
        };
        rows.push(row);
        console.log(JSON.stringify(row));
      }
      const sync = await measure(['sync', ...modeFlags], true);
      if (sync.exitCode !== 0) {
        rows.push({ services: n, mode, command: 'verify', ...sync, note: `sync failed: ${sync.note ?? ''}` });
        continue;
      }
      const verify = await measure(['verify', ...modeFlags], true);
      const row = { services: n, mode, command: 'verify (after sync)', ...verify };
      rows.push(row);
      console.log(JSON.stringify(row));
      // A fresh namespace for the next mode (faster than a cleanup of 10^5 chains, which is not what is measured).
      await execa('ip', ['netns', 'del', NS]);
      await execa('ip', ['netns', 'add', NS]);
    }
  }
} finally {
  await execa('ip', ['netns', 'del', NS], { reject: false });
  rmSync(scratch, { recursive: true, force: true });
}
const { stdout: kernel } = await execa('uname', ['-r']);
// --keep: rows of an earlier run that this one did not measure stay (each row keeps its own date).
const date = new Date().toISOString();
let all: (Row & { date?: string })[] = rows.map((r) => ({ ...r, date }));
if (args.keep) {
  const earlier = JSON.parse(readFileSync(args.out, 'utf8')) as { date: string; rows: (Row & { date?: string })[] };
  const same = (a: Row, b: Row) => a.services === b.services && a.mode === b.mode && a.command === b.command;
  all = [...earlier.rows.filter((r) => !rows.some((n) => same(n, r))).map((r) => ({ ...r, date: r.date ?? earlier.date })), ...all];
  all.sort((a, b) => a.services - b.services || (a.mode < b.mode ? -1 : a.mode > b.mode ? 1 : 0));
}
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify({ date, runs: Number(args.runs), kernel, rows: all }, null, 2)}\n`);
