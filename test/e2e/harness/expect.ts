/**
 * Assertions over probe results, for the e2e suites (kept apart from cluster.ts, which the
 * benchmarks load outside vitest).
 */
import { expect } from 'vitest';
import { tally, type ProbeResult } from './cluster.ts';

/**
 * Checks that `r` answered every probe and spread them uniformly over `names`: each got a count
 * within 4.8 standard deviations of its share (300 probes over 3: 60–140, sd ≈ 8.2).
 */
export function expectUniform(r: ProbeResult, count: number, names: readonly string[]): void {
  expect(r.answers).toHaveLength(count);
  const counts = tally(r);
  expect(Object.keys(counts).sort()).toEqual([...names].sort());
  const share = count / names.length;
  const sd = Math.sqrt(count * (1 / names.length) * (1 - 1 / names.length));
  for (const n of Object.values(counts)) {
    expect(n).toBeGreaterThan(share - 4.8 * sd);
    expect(n).toBeLessThan(share + 4.8 * sd);
  }
}
