/**
 * Assertions over probe results, for the e2e suites (kept apart from cluster.ts, which the
 * benchmarks load outside vitest).
 */
import { expect } from 'vitest';
import type { Explanation } from '../../../src/planner/explain.ts';
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

/**
 * Checks that what real packets showed is what `kproxy explain` said (its JSON form): for DNAT,
 * every probe answered, by exactly the endpoints explain lists (one of them with ClientIP
 * affinity), seen from `source` unless explain says the packet is masqueraded; for REJECT,
 * refused; for DROP or no match, no answer and no refusal.
 * @param podByIP pod name by endpoint address
 */
export function expectExplained(e: Explanation, r: ProbeResult, source: string, podByIP: ReadonlyMap<string, string>, label: string): void {
  if (e.verdict === 'DNAT') {
    expect(r.answers.length, `${label}: every probe answered (${JSON.stringify(r)})`).toBeGreaterThan(0);
    expect(r.refused + r.timeout, label).toBe(0);
    const expected = e.endpoints.map((ep) => podByIP.get(ep.address));
    const answered = [...new Set(r.answers.map((a) => a.name))].sort();
    // The JSON form has null where a field does not apply.
    if (typeof e.affinityTimeoutSeconds === 'number') {
      expect(answered, `${label}: affinity keeps one endpoint`).toHaveLength(1);
      expect(expected, label).toContain(answered[0]);
    } else expect(answered, `${label}: the endpoints that answer`).toEqual([...expected].sort());
    const peers = new Set(r.answers.map((a) => a.peer));
    if (e.masquerade!.masquerade) expect(peers.has(source), `${label}: masqueraded, so not seen from ${source}`).toBe(false);
    else expect([...peers], `${label}: not masqueraded, the source is kept`).toEqual([source]);
  } else if (e.verdict === 'REJECT') {
    expect(r.answers, label).toEqual([]);
    expect(r.refused, `${label}: refused`).toBeGreaterThan(0);
  } else {
    // DROP, or no rule (the packet goes on unchanged to where nothing answers).
    expect(r, label).toMatchObject({ answers: [], refused: 0 });
  }
}
