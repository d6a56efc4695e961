/**
 * The NetworkPolicy planner on upstream's e2e matrix (test/e2e/network/netpol): namespaces x, y, z
 * with pods a, b, c each, ports 80 and 81 (TCP, plus 53/UDP for DNS), every pod on this node. Each
 * case states the reachability the API's semantics give, as upstream's cases do, and the whole
 * matrix from the plan must equal it (printed on failure). Packets: not yet (the backend is the
 * next step of issue 23).
 */
import { describe, expect, it } from 'vitest';
import { planPolicies } from '../../src/planner/policy.ts';
import { connectionVerdict } from '../../src/planner/policyexplain.ts';
import { parseIP } from '../../src/state/ip.ts';
import type { Protocol } from '../../src/state/model.ts';
import { PolicyStateStore } from '../../src/state/policystore.ts';

const NS = ['x', 'y', 'z'] as const;
const PODS = ['a', 'b', 'c'] as const;
type Pod = `${(typeof NS)[number]}/${(typeof PODS)[number]}`;
const ALL: Pod[] = NS.flatMap((n) => PODS.map((p) => `${n}/${p}` as Pod));
const ip = (pod: Pod) => `10.244.1.${10 * (NS.indexOf(pod[0] as never) + 1) + PODS.indexOf(pod[2] as never)}`;
const NODE_IP = '192.0.2.21';

function store(policies: object[]): PolicyStateStore {
  const s = new PolicyStateStore();
  for (const n of NS) s.applyNamespace({ kind: 'Namespace', metadata: { name: n, labels: { ns: n } } });
  for (const pod of ALL) {
    const [n, p] = pod.split('/');
    s.applyPod({
      kind: 'Pod',
      metadata: { namespace: n, name: p, labels: { pod: p! } },
      spec: {
        nodeName: 'node-1',
        containers: [
          {
            ports: [
              { name: 'serve-80-tcp', containerPort: 80 },
              { name: 'serve-81-tcp', containerPort: 81 },
              { name: 'serve-53-udp', containerPort: 53, protocol: 'UDP' },
            ],
          },
        ],
      },
      status: { phase: 'Running', podIP: ip(pod), podIPs: [{ ip: ip(pod) }] },
    });
  }
  policies.forEach((p, i) => {
    const r = s.applyNetworkPolicy({ kind: 'NetworkPolicy', metadata: { namespace: 'x', name: `p${i}` }, ...p });
    expect(r.issues, JSON.stringify(p)).toEqual([]);
  });
  return s;
}

/** The matrix `from → to` of one port as lines of X (allowed) and . (denied). */
function matrix(verdict: (from: Pod, to: Pod) => boolean): string {
  return ['    ' + ALL.map((p) => p.replace('/', '')).join(' '), ...ALL.map((f) => `${f.replace('/', '')}  ` + ALL.map((t) => (verdict(f, t) ? ' X ' : ' . ')).join(''))].join('\n');
}

function check(
  policies: object[],
  expected: (from: Pod, to: Pod, port: number, protocol: Protocol) => boolean,
  ports: [number, Protocol][] = [
    [80, 'TCP'],
    [81, 'TCP'],
  ],
) {
  const s = store(policies);
  const plan = planPolicies({ state: s, nodeName: 'node-1', nodeAddresses: [parseIP(NODE_IP)!] });
  for (const [port, protocol] of ports) {
    const got = matrix((f, t) => connectionVerdict(plan, ip(f), ip(t), protocol, port).allowed);
    const want = matrix((f, t) => expected(f, t, port, protocol));
    expect(got, `port ${port}/${protocol}`).toBe(want);
  }
  return plan;
}

const ns = (p: Pod) => p[0];
const name = (p: Pod) => p[2];
const sel = (labels: Record<string, string>) => ({ matchLabels: labels });

describe('NetworkPolicy planner: upstream e2e cases on the x/y/z × a/b/c matrix', () => {
  it('no policy: everything reaches everything', () => check([], () => true));

  it('default deny ingress in x', () => check([{ spec: { podSelector: {}, policyTypes: ['Ingress'] } }], (_f, t) => ns(t) !== 'x'));

  it('allow all ingress (empty rule) beside a deny-all: the union allows', () =>
    check([{ spec: { podSelector: {}, policyTypes: ['Ingress'] } }, { spec: { podSelector: {}, ingress: [{}] } }], () => true));

  it('deny ingress to x/a only (podSelector)', () => check([{ spec: { podSelector: sel({ pod: 'a' }) } }], (_f, t) => t !== 'x/a'));

  it('allow ingress to x/a from its own namespace only', () =>
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ podSelector: {} }] }] } }], (f, t) => t !== 'x/a' || ns(f) === 'x'));

  it('allow from namespace y (namespaceSelector)', () =>
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }] }] } }], (f, t) => t !== 'x/a' || ns(f) === 'y'));

  it('podSelector AND namespaceSelector in one peer: pod b of namespace y only', () =>
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'b' }) }] }] } }], (f, t) => t !== 'x/a' || f === 'y/b'));

  it('the same selectors as two peers: OR (namespace y, or pods b of x)', () =>
    check(
      [{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }, { podSelector: sel({ pod: 'b' }) }] }] } }],
      (f, t) => t !== 'x/a' || ns(f) === 'y' || f === 'x/b',
    ));

  it('matchExpressions: NotIn selects namespaces without the label too; DoesNotExist', () => {
    check(
      [{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['y'] }] } }] }] } }],
      (f, t) => t !== 'x/a' || ns(f) !== 'y',
    );
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'DoesNotExist' }] } }] }] } }], (_f, t) => t !== 'x/a');
    check(
      [{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] } }] }] } }],
      (f, t) => t !== 'x/a' || name(f) !== 'a',
    );
  });

  it('ports: only 81 to x/a, by number and by name', () => {
    for (const port of [81, 'serve-81-tcp']) check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port }] }] } }], (_f, t, p) => t !== 'x/a' || p === 81);
  });

  it('endPort: 80–81 open, 80 alone not 81', () => {
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 80, endPort: 81 }] }] } }], () => true);
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 80 }] }] } }], (_f, t, p) => t !== 'x/a' || p === 80);
  });

  it('ipBlock with except: x/a reachable from the range of z/a and z/b, minus z/b', () =>
    check([{ spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ ipBlock: { cidr: '10.244.1.30/31', except: [`${ip('z/b')}/32`] } }] }] } }], (f, t) => t !== 'x/a' || f === 'z/a'));

  it('default deny egress from x, DNS (53/UDP) allowed', () =>
    check([{ spec: { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'UDP', port: 53 }] }] } }], (f, _t, _p, proto) => ns(f) !== 'x' || proto === 'UDP', [
      [80, 'TCP'],
      [53, 'UDP'],
    ]));

  it('egress to a named port resolves on each destination pod', () =>
    check(
      [{ spec: { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'serve-80-tcp' }] }] } }],
      (f, _t, p) => f !== 'x/a' || p === 80,
    ));

  it('ingress and egress both isolate: a pod of x reaches a pod of x only when both allow', () =>
    check(
      [
        { spec: { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{ to: [{ podSelector: sel({ pod: 'b' }) }] }] } },
        { spec: { podSelector: sel({ pod: 'b' }), ingress: [{ from: [{ podSelector: sel({ pod: 'c' }) }] }] } },
      ],
      (f, t) => (f !== 'x/a' || t === 'x/b') && (t !== 'x/b' || f === 'x/c'),
    ));

  it('a pod’s own node always reaches it; pods of other namespaces are not touched', () => {
    const plan = check([{ spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] } }], (f, t) => ns(f) !== 'x' && ns(t) !== 'x');
    expect(connectionVerdict(plan, NODE_IP, ip('x/a'), 'TCP', 80).allowed).toBe(true);
    expect(connectionVerdict(plan, ip('x/a'), NODE_IP, 'TCP', 80).allowed).toBe(true);
    expect(connectionVerdict(plan, '198.51.100.1', ip('x/a'), 'TCP', 80).allowed).toBe(false);
  });

  it('one peer set for a selector many rules name', () => {
    const plan = check(
      [
        { spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }] } },
        { spec: { podSelector: sel({ pod: 'c' }), ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }] } },
      ],
      (f, t) => (t !== 'x/a' && t !== 'x/c') || f === 'x/b',
    );
    expect([...plan.peerSets.values()].map((s) => s.description)).toEqual(['pods pod=b in namespace x']);
    expect([...plan.peerSets.values()][0]!.id).toMatch(/^peers-[A-Z2-7]{16}$/);
  });
});

describe('NetworkPolicy input that cannot be enforced as written fails closed', () => {
  it('a bad CIDR drops the policy’s rules, not its isolation; a bad selector isolates the whole namespace', () => {
    const s = store([]);
    const bad = s.applyNetworkPolicy({
      kind: 'NetworkPolicy',
      metadata: { namespace: 'x', name: 'bad' },
      spec: { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ ipBlock: { cidr: '10.244.1.0/33' } }] }] },
    });
    expect(bad.issues).toMatchObject([{ kind: 'NetworkPolicy', object: 'x/bad', field: 'spec.ingress[0].from[0].ipBlock.cidr', skipped: 'rules' }]);
    const worse = s.applyNetworkPolicy({
      kind: 'NetworkPolicy',
      metadata: { namespace: 'y', name: 'worse' },
      spec: { podSelector: { matchExpressions: [{ key: 'pod', operator: 'Near' }] }, ingress: [{}] },
    });
    expect(worse.issues[0]!.field).toBe('spec.podSelector.matchExpressions[0].operator');
    const plan = planPolicies({ state: s, nodeName: 'node-1', nodeAddresses: [] });
    const got = matrix((f, t) => connectionVerdict(plan, ip(f), ip(t), 'TCP', 80).allowed);
    expect(got).toBe(matrix((_f, t) => t !== 'x/a' && ns(t) !== 'y'));
  });

  it('a policy name with a newline is refused outright', () => {
    const s = new PolicyStateStore();
    expect(s.applyNetworkPolicy({ metadata: { namespace: 'x', name: 'a\nb' }, spec: {} }).issues[0]!.field).toBe('metadata.name');
    expect(s.policies.size).toBe(0);
  });
});
