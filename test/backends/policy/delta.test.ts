/**
 * The policy table's deltas on the in-memory nft (test/support/nftfake.ts, as knftables' Fake):
 * after any sequence of pod, namespace and policy changes, the table the deltas built equals the
 * table a full write of the last plan builds, every delta is accepted by the fake's kernel rules
 * (no deletion of a chain still jumped to, no element added twice), and every cache is in use.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deltaBatch, fullBatch } from '../../../src/backends/nftables/batch.ts';
import type { NftRuleset } from '../../../src/backends/nftables/render.ts';
import { PolicyRenderCache, renderPolicies } from '../../../src/backends/policy/render.ts';
import { planPolicies } from '../../../src/planner/policy.ts';
import { PolicyPlanCache } from '../../../src/planner/policycache.ts';
import { PolicyStateStore } from '../../../src/state/policystore.ts';
import { namespace, networkPolicy, pod } from '../../support/objects.ts';
import { FakeNft } from '../../support/nftfake.ts';

const NS = ['x', 'y'];
const view = (rules: NftRuleset) => {
  const fake = new FakeNft();
  fake.apply(fullBatch(rules).commands);
  return fake.dump();
};

type Op =
  | { kind: 'pod'; ns: number; pod: number; app: 'a' | 'b'; node: 1 | 2; v6: boolean }
  | { kind: 'unpod'; ns: number; pod: number }
  | { kind: 'nslabel'; ns: number; team: 'red' | 'blue' }
  | { kind: 'policy'; ns: number; shape: number };
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('pod' as const), ns: fc.nat(1), pod: fc.nat(3), app: fc.constantFrom('a' as const, 'b' as const), node: fc.constantFrom(1 as const, 2 as const), v6: fc.boolean() }),
  fc.record({ kind: fc.constant('unpod' as const), ns: fc.nat(1), pod: fc.nat(3) }),
  fc.record({ kind: fc.constant('nslabel' as const), ns: fc.nat(1), team: fc.constantFrom('red' as const, 'blue' as const) }),
  fc.record({ kind: fc.constant('policy' as const), ns: fc.nat(1), shape: fc.nat(4) }),
);
/** Policy shapes: none, ingress from app b, ingress from team blue on the named port, egress to named port, deny all. */
const SHAPES: (Record<string, unknown> | undefined)[] = [
  undefined,
  { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] },
  { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }], ports: [{ port: 'http' }] }] },
  { podSelector: { matchLabels: { app: 'b' } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] },
  { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
];

describe('the policy table written by deltas', () => {
  it('equals a full write of the last plan, after any sequence of changes', () => {
    fc.assert(
      fc.property(fc.array(fc.array(op, { maxLength: 5 }), { minLength: 1, maxLength: 8 }), (rounds) => {
        const s = new PolicyStateStore();
        for (const n of NS) s.applyNamespace(namespace(n, { team: 'red' }));
        const plans = new PolicyPlanCache();
        const renders = new PolicyRenderCache();
        const fake = new FakeNft();
        let prev: NftRuleset | undefined;
        let deferred: readonly string[] = [];
        for (const round of rounds) {
          for (const o of round) {
            const n = NS[o.ns]!;
            if (o.kind === 'pod') {
              const ip = `10.244.${o.node}.${10 * o.ns + o.pod}`;
              s.applyPod(
                pod(`${n}/p${o.pod}`, { ips: o.v6 ? [ip, `fd00::${10 * o.ns + o.pod}`] : [ip], node: `node-${o.node}`, labels: { app: o.app }, ports: [{ name: 'http', port: 8000 + o.pod }] }),
              );
            } else if (o.kind === 'unpod') s.deletePod(`${n}/p${o.pod}`);
            else if (o.kind === 'nslabel') s.applyNamespace(namespace(n, { team: o.team }));
            else if (SHAPES[o.shape]) s.applyNetworkPolicy(networkPolicy(`${n}/gen`, SHAPES[o.shape]!));
            else s.deleteNetworkPolicy(`${n}/gen`);
          }
          const next = renderPolicies(planPolicies({ state: s, changes: s.takeChanges(), nodeName: 'node-1', nodeAddresses: [] }, plans), renders);
          const batch = prev ? deltaBatch(prev, next, deferred) : fullBatch(next);
          fake.apply(batch.commands);
          deferred = batch.stale;
          prev = next;
        }
        fake.apply(deltaBatch(prev!, prev!, deferred).commands);
        expect(fake.dump()).toEqual(view(prev!));
      }),
      { numRuns: Number(process.env.RUNS ?? 200) },
    );
  });
});
