/**
 * The NetworkPolicy table's renderer and what the operator commands make of a plan (explain,
 * list --policies). Strings only: the packets are test/e2e/networkpolicy.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { deltaBatch, fullBatch } from '../../../src/backends/nftables/batch.ts';
import { batchText } from '../../../src/backends/nftables/text.ts';
import { PolicyRenderCache, podChainName, renderPolicies } from '../../../src/backends/policy/render.ts';
import { listPolicies } from '../../../src/planner/list.ts';
import { planPolicies } from '../../../src/planner/policy.ts';
import { PolicyPlanCache } from '../../../src/planner/policycache.ts';
import { explainPolicy } from '../../../src/planner/policyexplain.ts';
import { parseIP } from '../../../src/state/ip.ts';
import { PolicyStateStore } from '../../../src/state/policystore.ts';
import { namespace, networkPolicy, pod } from '../../support/objects.ts';
import { FakeNft } from '../../support/nftfake.ts';

function store(): PolicyStateStore {
  const s = new PolicyStateStore();
  s.applyNamespace(namespace('x', { ns: 'x' }));
  s.applyNamespace(namespace('y', { ns: 'y' }));
  s.applyPod(pod('x/a', { ips: ['10.244.1.10', 'fd00:10:244:1::10'], node: 'node-1', labels: { pod: 'a' }, ports: [{ name: 'http', port: 8080 }] }));
  s.applyPod(pod('x/b', { ips: ['10.244.2.10'], node: 'node-2', labels: { pod: 'b' }, ports: [{ name: 'http', port: 9090 }] }));
  s.applyPod(pod('y/a', { ips: ['10.244.1.20'], node: 'node-1', labels: { pod: 'a' } }));
  s.applyNetworkPolicy(
    networkPolicy('x/web', {
      podSelector: { matchLabels: { pod: 'a' } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        {
          from: [{ podSelector: { matchLabels: { pod: 'b' } } }, { ipBlock: { cidr: '192.168.0.0/16', except: ['192.168.1.0/24'] } }],
          ports: [{ port: 'http' }, { protocol: 'SCTP', port: 7000, endPort: 7010 }],
        },
      ],
      egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }],
    }),
  );
  return s;
}
const input = (s: PolicyStateStore) => ({ state: s, changes: s.takeChanges(), nodeName: 'node-1', nodeAddresses: [parseIP('192.0.2.21')!] });

describe('renderPolicies', () => {
  it('writes an isolated pod as map elements and chains, and an unisolated one not at all', () => {
    const text = batchText(fullBatch(renderPolicies(planPolicies(input(store())))).commands);
    const ingress = podChainName('ingress', 'x/a');
    expect(ingress).toMatch(/^ingress-[A-Z2-7]{8}-x\/a$/);
    expect(text).toContain('add chain inet kproxy-policy forward { type filter hook forward priority 0 ; policy accept ; }');
    expect(text).toContain('add rule inet kproxy-policy forward ct state established,related accept');
    expect(text).toContain(`add element inet kproxy-policy ingress-ip { 10.244.1.10 : jump ${ingress} }`);
    expect(text).toContain(`add element inet kproxy-policy ingress-ip6 { fd00:10:244:1::10 : jump ${ingress} }`);
    expect(text).toContain('add element inet kproxy-policy node-ip { 192.0.2.21 }');
    // The named port resolves to x/a's own 8080 for ingress; SCTP ranges; the ipBlock with its except.
    expect(text).toMatch(/ingress-\S+ ip saddr @peers-[A-Z2-7]{16}-ip tcp dport 8080 accept comment "x\/web ingress rule 0"/);
    expect(text).toMatch(/ip saddr 192\.168\.0\.0\/16 ip saddr != 192\.168\.1\.0\/24 sctp dport 7000-7010 accept/);
    // Egress: each destination's own port of that name (x/b's 9090, x/a's 8080), y/a has none, in the rule's set.
    expect(text).toMatch(/egress-\S+ ip daddr \. meta l4proto \. th dport @named-[A-Z2-7]{16}-ip return comment "x\/web egress rule 0"/);
    expect(text).toMatch(/add element inet kproxy-policy named-[A-Z2-7]{16}-ip \{ 10\.244\.1\.10 \. tcp \. 8080, 10\.244\.2\.10 \. tcp \. 9090 \}/);
    expect(text).toMatch(/add element inet kproxy-policy named-[A-Z2-7]{16}-ip6 \{ fd00:10:244:1::10 \. tcp \. 8080 \}/);
    expect(text).not.toContain('10.244.1.20');
    expect(text).toMatch(/egress-\S+ drop comment "isolated by x\/web"/);
  });

  it('a pod label change elsewhere rewrites one set element, not the table', () => {
    const s = store();
    const plans = new PolicyPlanCache();
    const renders = new PolicyRenderCache();
    const before = renderPolicies(planPolicies(input(s), plans), renders);
    s.applyPod(pod('x/c', { ips: ['10.244.2.11'], node: 'node-2', labels: { pod: 'b' } }));
    const after = renderPolicies(planPolicies(input(s), plans), renders);
    const delta = deltaBatch(before, after, []);
    expect(batchText(delta.commands)).toMatch(/^add element inet kproxy-policy peers-[A-Z2-7]{16}-ip \{ 10\.244\.2\.11 \}\n$/);
    expect(renders.pods.misses).toBe(0);
  });
});

describe('two pods of this node with one address', () => {
  it('the first by name keeps the map element; the table still loads, and the conflict is listed', () => {
    const s = store();
    s.applyPod(pod('x/z-stale', { ips: ['10.244.1.10'], node: 'node-1', labels: { pod: 'a' } }));
    const table = renderPolicies(planPolicies(input(s)));
    expect(table.conflicts).toEqual(['egress-ip 10.244.1.10', 'ingress-ip 10.244.1.10']);
    const fake = new FakeNft();
    fake.apply(fullBatch(table).commands);
    expect(Object.keys(fake.dump()!.sets['ingress-ip']!.elements)).toEqual(['10.244.1.10']);
    expect(fake.dump()!.sets['ingress-ip']!.elements['10.244.1.10']).toContain(podChainName('ingress', 'x/a'));
  });
});

describe('explain and list of a policy plan', () => {
  const plan = planPolicies(input(store()));
  it('names the rule that allows, and the policies that deny', () => {
    const ok = explainPolicy(plan, '10.244.2.10', '10.244.1.10', 'TCP', 8080, podChainName);
    expect(ok.allowed).toBe(true);
    expect(ok.directions).toMatchObject([{ direction: 'ingress', pod: 'x/a', rule: { policy: 'x/web', index: 0 }, chain: podChainName('ingress', 'x/a') }]);
    expect(ok.notes[0]).toContain('is no pod of this node');
    const no = explainPolicy(plan, '10.244.1.10', '10.244.1.20', 'TCP', 80, podChainName);
    expect(no.allowed).toBe(false);
    expect(no.directions.map((d) => [d.direction, d.pod, d.allowed])).toEqual([
      ['egress', 'x/a', false],
      ['ingress', 'y/a', true],
    ]);
    expect(no.directions[0]!.reason).toContain('isolated by x/web');
    expect(no.directions[1]!.reason).toContain('not isolated');
  });

  it('lists each local pod with its isolation and rules', () => {
    const rows = listPolicies(plan);
    expect(rows.map((r) => r.pod)).toEqual(['x/a', 'y/a']);
    expect(rows[0]!.ingress.rules[0]).toMatchObject({ policy: 'x/web', index: 0, ports: 'TCP 8080, SCTP 7000-7010' });
    expect(rows[0]!.ingress.rules[0]!.peers).toBe('pods pod=b in namespace x (1 address), 192.168.0.0/16 except 192.168.1.0/24');
    expect(rows[1]!.ingress.isolated).toBe(false);
  });
});
