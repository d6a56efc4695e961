/**
 * What the `kproxy run` benchmarks (run.ts, policy-run.ts) share: running API writes in parallel,
 * a bench object made fit for the API, kproxy's JSON log lines, and a process's CPU and RSS from /proc.
 * @module
 */
import { execa } from 'execa';
import { existsSync, readFileSync } from 'node:fs';
import type { SyncPhases } from '../src/runner/schedule.ts';
import type { TestCluster } from '../test/e2e/harness/cluster.ts';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` over 0..n-1 with `limit` calls in flight. */
export async function parallel(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** Strips what the API server sets itself from a bench object. */
export function forApi<T extends object>(o: T): T {
  const c = structuredClone(o) as { metadata: Record<string, unknown> };
  delete c.metadata.uid;
  delete c.metadata.resourceVersion;
  return c as T;
}

export interface LogLine {
  readonly time: string;
  readonly msg: string;
  readonly full?: boolean;
  readonly servicePorts?: number;
  readonly programmingSeconds?: number;
  readonly seconds?: number;
  readonly phasesMs?: Record<string, SyncPhases>;
}
/** The JSON lines of a log; none while the file does not exist yet (execa creates it as the process starts). */
export const logLines = (file: string): LogLine[] =>
  (existsSync(file) ? readFileSync(file, 'utf8') : '')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);

/** CPU seconds (own and of waited-for children; of the children alone) and RSS of a process, from /proc. */
export function usage(pid: number): { cpu: number; childCpu: number; rssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [utime, stime, cutime, cstime] = [11, 12, 13, 14].map((i) => Number(fields[i]));
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { cpu: (utime! + stime! + cutime! + cstime!) / 100, childCpu: (cutime! + cstime!) / 100, rssMiB: Number(rss) / 1024 };
}

function cmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** The pid of the process in node-1's namespace whose command line holds `marker`. */
export async function pidIn(c: TestCluster, marker: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    for (const pid of (await execa('ip', ['netns', 'pids', c.ns('node-1')], { reject: false })).stdout.split('\n').filter(Boolean)) {
      if (cmdline(pid).includes(marker)) return Number(pid);
    }
    await sleep(50);
  }
  throw new Error(`${marker} process not found`);
}

/** V8's heap (used, and reserved by the collector) and memory outside it that V8 tracks (Buffers, strings handed to C++), MiB. */
export interface HeapFigures {
  usedMiB: number;
  totalMiB: number;
  externalMiB: number;
}

/** kproxy's heap figures from its /metrics, at its default address inside the node namespace. */
export async function kproxyHeap(c: TestCluster): Promise<HeapFigures | undefined> {
  const body = (await c.httpGet('node-1', 'http://127.0.0.1:10249/metrics').catch(() => ({ body: '' }))).body ?? '';
  const mib = (metric: string) => Math.round(Number(new RegExp(`^${metric} (\\S+)$`, 'm').exec(body)?.[1] ?? NaN) / 2 ** 20);
  const figures = { usedMiB: mib('nodejs_heap_size_used_bytes'), totalMiB: mib('nodejs_heap_size_total_bytes'), externalMiB: mib('nodejs_external_memory_bytes') };
  return Number.isNaN(figures.usedMiB) ? undefined : figures;
}
