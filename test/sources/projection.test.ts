/** The Pod projection the NetworkPolicy informer keeps (api.ts podPolicyFacts): the policy state reads the same from it as from the whole object. */
import { describe, expect, it } from 'vitest';
import { podPolicyFacts } from '../../src/sources/api.ts';
import { normalisePod } from '../../src/state/networkpolicy.ts';
import { pod } from '../support/objects.ts';

/** A pod as a real API server serialises one, with what policy does not read. */
const whole = () => {
  const p = pod('shop/web-7d4b9c', {
    ips: ['10.244.1.7', 'fd00:10:244:1::7'],
    node: 'node-1',
    labels: { app: 'web', 'pod-template-hash': '7d4b9c' },
    ports: [
      { name: 'http', port: 8080 },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ],
  });
  const meta = p.metadata as Record<string, unknown>;
  Object.assign(meta, { uid: 'u-1', resourceVersion: '42', annotations: { a: 'b'.repeat(2000) }, managedFields: [{ manager: 'kubelet', fieldsV1: { 'f:status': {} } }] });
  (p.status as Record<string, unknown>).conditions = [{ type: 'Ready', status: 'True' }];
  (p.spec as Record<string, unknown>).volumes = [{ name: 'v', emptyDir: {} }];
  return p;
};

describe('podPolicyFacts', () => {
  it('keeps what normalisePod reads, and the informer identity, and drops the rest', () => {
    const full = whole();
    const kept = podPolicyFacts(full);
    expect(normalisePod(kept)).toEqual(normalisePod(full));
    expect(kept.metadata).toMatchObject({ name: 'web-7d4b9c', namespace: 'shop', uid: 'u-1', resourceVersion: '42' });
    expect(JSON.stringify(kept).length).toBeLessThan(JSON.stringify(full).length / 4);
  });

  it('never throws on odd shapes, and the state still reports them', () => {
    for (const odd of [{}, { spec: 'x', status: null }, { metadata: { name: 'a' }, spec: { containers: 'nope' } }]) {
      const kept = podPolicyFacts(odd);
      expect('issue' in normalisePod(kept)).toBe(true);
    }
  });
});
