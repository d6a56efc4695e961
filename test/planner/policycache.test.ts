/**
 * Incremental NetworkPolicy planning (PolicyPlanCache) and the policy store it reads: a plan made
 * from the memory of the last one equals a plan made from scratch, after any sequence of pod,
 * namespace and policy changes (fast-check), and re-plans only what a change touches.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planPolicies, type PolicyPlan } from '../../src/planner/policy.ts';
import { PolicyPlanCache } from '../../src/planner/policycache.ts';
import { PolicyStateStore } from '../../src/state/policystore.ts';
import { namespace, networkPolicy, pod } from '../support/objects.ts';

const NS = ['x', 'y', 'z'];
const plain = (p: PolicyPlan) => JSON.parse(JSON.stringify({ pods: p.pods, peerSets: [...p.peerSets.values()], namedSets: [...p.namedSets.values()], node: p.nodeAddresses })) as unknown;

/** 3 namespaces × 4 pods, half on node-1, with labels app=<a|b> and named port http. */
function cluster(): PolicyStateStore {
  const s = new PolicyStateStore();
  for (const n of NS) s.applyNamespace(namespace(n, { team: n === 'z' ? 'other' : 'main' }));
  NS.forEach((n, i) => {
    for (let j = 0; j < 4; j++)
      s.applyPod(
        pod(`${n}/p${j}`, { ips: [`10.244.${j % 2 ? 2 : 1}.${10 * i + j}`], node: j % 2 ? 'node-2' : 'node-1', labels: { app: j < 2 ? 'a' : 'b' }, ports: [{ name: 'http', port: 8000 + j }] }),
      );
  });
  s.applyNetworkPolicy(
    networkPolicy('x/a-from-team', {
      podSelector: { matchLabels: { app: 'a' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'main' } }, podSelector: { matchLabels: { app: 'b' } } }] }],
    }),
  );
  s.applyNetworkPolicy(networkPolicy('y/egress-named', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] }));
  s.applyNetworkPolicy(networkPolicy('z/own', { podSelector: { matchLabels: { app: 'b' } }, ingress: [{ from: [{ podSelector: {} }] }] }));
  return s;
}

const plan = (s: PolicyStateStore, cache?: PolicyPlanCache) => planPolicies({ state: s, changes: s.takeChanges(), nodeName: 'node-1', nodeAddresses: [] }, cache);

describe('PolicyPlanCache', () => {
  it('a pod update that changes no fact keeps the stored pod and changes nothing', () => {
    const s = cluster();
    const before = s.pods.get('x/p0');
    const g = s.generation;
    s.takeChanges();
    s.applyPod({
      ...pod('x/p0', { ips: ['10.244.1.0'], node: 'node-1', labels: { app: 'a' }, ports: [{ name: 'http', port: 8000 }] }),
      metadata: { namespace: 'x', name: 'p0', labels: { app: 'a' }, resourceVersion: '2' },
    });
    expect(s.pods.get('x/p0')).toBe(before);
    expect(s.generation).toBe(g);
    expect(s.takeChanges().podNamespaces.size).toBe(0);
    expect([...s.podsOn('node-1').keys()].sort()).toEqual(['x/p0', 'x/p2', 'y/p0', 'y/p2', 'z/p0', 'z/p2']);
  });

  it('an invalid pod update keeps the pod as it was (it stays isolated), and says why', () => {
    const s = cluster();
    const before = s.pods.get('x/p0');
    const r = s.applyPod({ ...pod('x/p0', { ips: ['10.244.1.0'], node: 'node-1' }), status: { phase: 'Running', podIPs: [{ ip: 'not-an-ip' }] } });
    expect(r.issues[0]).toMatchObject({ kind: 'Pod', field: 'status.podIPs[0].ip' });
    expect(s.pods.get('x/p0')).toBe(before);
  });

  it('re-plans only what a change touches, and reuses the objects of the rest', () => {
    const s = cluster();
    const cache = new PolicyPlanCache();
    const first = plan(s, cache);
    expect(cache.planned.pods).toBe(6);
    // Nothing changed: nothing planned, the same objects.
    const same = plan(s, cache);
    expect(cache.planned).toEqual({ sets: 0, named: 0, pods: 0 });
    expect(same.pods.every((p, i) => p === first.pods[i])).toBe(true);
    // A remote pod of z relabelled: z's pods in sets (and y's egress named-port pods) again, x's pods untouched.
    s.applyPod(pod('z/p1', { ips: ['10.244.2.21'], node: 'node-2', labels: { app: 'b' }, ports: [{ name: 'http', port: 8001 }] }));
    const next = plan(s, cache);
    // No local pod again: y's egress named-port rule gets its one set of targets computed anew.
    expect(cache.planned).toMatchObject({ pods: 0, named: 1 });
    expect(next.pods.find((p) => p.pod === 'x/p0')).toBe(first.pods.find((p) => p.pod === 'x/p0'));
    expect(plain(next)).toEqual(plain(plan(s)));
    // Namespace relabelled: only sets with a namespaceSelector are computed again.
    s.applyNamespace(namespace('z', { team: 'main' }));
    const relabelled = plan(s, cache);
    expect(cache.planned.pods).toBe(0);
    expect(cache.planned.sets).toBeGreaterThan(0);
    expect(plain(relabelled)).toEqual(plain(plan(s)));
  });

  it('equals a plan from scratch after any sequence of changes', () => {
    type Op =
      | { kind: 'label'; ns: number; pod: number; app: 'a' | 'b' | 'c' }
      | { kind: 'move'; ns: number; pod: number }
      | { kind: 'delete'; ns: number; pod: number }
      | { kind: 'nslabel'; ns: number; team: string }
      | { kind: 'policy'; ns: number; app: 'a' | 'b'; from: 'a' | 'b' }
      | { kind: 'unpolicy'; ns: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('label' as const), ns: fc.nat(2), pod: fc.nat(5), app: fc.constantFrom('a' as const, 'b' as const, 'c' as const) }),
      fc.record({ kind: fc.constant('move' as const), ns: fc.nat(2), pod: fc.nat(5) }),
      fc.record({ kind: fc.constant('delete' as const), ns: fc.nat(2), pod: fc.nat(5) }),
      fc.record({ kind: fc.constant('nslabel' as const), ns: fc.nat(2), team: fc.constantFrom('main', 'other') }),
      fc.record({ kind: fc.constant('policy' as const), ns: fc.nat(2), app: fc.constantFrom('a' as const, 'b' as const), from: fc.constantFrom('a' as const, 'b' as const) }),
      fc.record({ kind: fc.constant('unpolicy' as const), ns: fc.nat(2) }),
    );
    fc.assert(
      fc.property(fc.array(fc.array(op, { maxLength: 4 }), { minLength: 1, maxLength: 8 }), (rounds) => {
        const s = cluster();
        const cache = new PolicyPlanCache();
        plan(s, cache);
        for (const round of rounds) {
          for (const o of round) {
            const n = NS[o.ns]!;
            if (o.kind === 'label' || o.kind === 'move') {
              const node = o.kind === 'move' ? (o.pod % 2 ? 'node-1' : 'node-2') : o.pod % 2 ? 'node-2' : 'node-1';
              s.applyPod(pod(`${n}/p${o.pod}`, { ips: [`10.244.9.${10 * o.ns + o.pod}`], node, labels: { app: o.kind === 'label' ? o.app : 'a' }, ports: [{ name: 'http', port: 9000 + o.pod }] }));
            } else if (o.kind === 'delete') s.deletePod(`${n}/p${o.pod}`);
            else if (o.kind === 'nslabel') s.applyNamespace(namespace(n, { team: o.team }));
            else if (o.kind === 'policy')
              s.applyNetworkPolicy(
                networkPolicy(`${n}/gen`, {
                  podSelector: { matchLabels: { app: o.app } },
                  ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'main' } }, podSelector: { matchLabels: { app: o.from } } }] }],
                }),
              );
            else s.deleteNetworkPolicy(`${n}/gen`);
          }
          const incremental = plan(s, cache);
          expect(plain(incremental)).toEqual(plain(planPolicies({ state: s, nodeName: 'node-1', nodeAddresses: [] })));
        }
      }),
      { numRuns: 200 },
    );
  });
});
