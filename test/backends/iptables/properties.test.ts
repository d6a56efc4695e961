/**
 * Properties of the whole pipeline (state → plan → iptables-restore input) over generated
 * clusters, including hostile strings in every field that reaches a rule.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildRestoreScript } from '../../../src/backends/iptables/restore.ts';
import { cluster } from '../../support/arbitraries.ts';
import { rules, script } from '../../support/pipeline.ts';

const BUILTIN_TARGETS = new Set(['ACCEPT', 'DROP', 'REJECT', 'RETURN', 'DNAT', 'MARK', 'MASQUERADE']);
const LINE = /^(\*(filter|nat)|COMMIT|:KUBE-[A-Z0-9-]+ - \[0:0\]|-[AIX] [A-Z][A-Z0-9-]*( .*)?)$/;

describe('pipeline properties', () => {
  it('is deterministic: the same objects in any order give byte-identical rules', () => {
    fc.assert(
      fc.property(cluster, (objs) => {
        expect(script(objs)).toBe(script([...objs].reverse()));
      }),
      { numRuns: 200 },
    );
  });

  it('never writes a jump to a chain it does not define', () => {
    fc.assert(
      fc.property(cluster, (objs) => {
        const r = rules(objs);
        for (const table of ['filter', 'nat'] as const) {
          const defined = new Set(r[table].map((c) => c.name));
          for (const c of r[table])
            for (const rule of c.rules) {
              const target = / -j (\S+)/.exec(` ${rule}`)?.[1];
              if (target !== undefined) expect(BUILTIN_TARGETS.has(target) || defined.has(target), `${c.name}: ${rule}`).toBe(true);
            }
          for (const j of r.jumps) if (j.table === table) expect(defined.has(j.target)).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('lets no input string inject anything: every line is a well-formed restore line of printable ASCII', () => {
    fc.assert(
      fc.property(cluster, (objs) => {
        const text = buildRestoreScript(rules(objs));
        for (const line of text.trimEnd().split('\n')) {
          expect(line).toMatch(LINE);
          expect(line).toMatch(/^[\x20-\x7e]*$/);
          expect((line.match(/"/g) ?? []).length % 2).toBe(0);
          expect(line).not.toMatch(/-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING)/);
        }
      }),
      { numRuns: 300 },
    );
  });
});
