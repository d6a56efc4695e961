/**
 * NetworkPolicy enforcement (`--network-policy`) with real packets, on upstream's e2e matrix
 * (test/e2e/network/netpol; harness/netpol.ts): for each case, `kproxy sync` writes the policy
 * table into node-1, every pod opens a fresh connection to every pod on TCP and UDP 80 and 81,
 * in both families, and the matrix from the packets must equal the model's (printed, with the
 * differences marked, on failure). SCTP is not probed: the kernel here has no sctp module (the
 * renderer's SCTP rules are unit-tested).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, networkPolicy, service } from '../support/objects.ts';
import { TestCluster } from './harness/cluster.ts';
import { deniesSome, ipOf, matrixObjects, matrixPods, modelMatrix, packetMatrix, showMatrix } from './harness/netpol.ts';

type Spec = Record<string, unknown>;
const sel = (labels: Record<string, string>) => ({ matchLabels: labels });
const expr = (key: string, operator: string, values?: string[]) => ({ matchExpressions: [{ key, operator, ...(values ? { values } : {}) }] });
const onA = sel({ pod: 'a' });
const P = (name: string, spec: Spec, ns = 'x') => networkPolicy(`${ns}/${name}`, spec);
const ingressTo = (podSelector: Spec, ...ingress: Spec[]) => ({ podSelector, policyTypes: ['Ingress'], ingress });
const egressFrom = (podSelector: Spec, ...egress: Spec[]) => ({ podSelector, policyTypes: ['Egress'], egress });

/** [name, policies, whether the model denies anything]: the upstream cases, in its words where it has them. */
const CASES: [string, Record<string, unknown>[], boolean][] = [
  ['no policy: everything reaches everything', [], false],
  ['default deny ingress in x', [P('deny', { podSelector: {}, policyTypes: ['Ingress'] })], true],
  ['default deny egress in x', [P('deny', { podSelector: {}, policyTypes: ['Egress'] })], true],
  ['default deny ingress and egress in x', [P('deny', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })], true],
  ['allow all ingress in x (ingress: [{}])', [P('allow', { podSelector: {}, ingress: [{}] })], false],
  ['allow all egress in x (egress: [{}])', [P('allow', egressFrom({}, {}))], false],
  ['deny ingress to x/a only', [P('deny-a', { podSelector: onA, policyTypes: ['Ingress'] })], true],
  ['allow ingress to x/a from its own namespace', [P('p', ingressTo(onA, { from: [{ podSelector: {} }] }))], true],
  ['allow ingress to x/a from x/b only', [P('p', ingressTo(onA, { from: [{ podSelector: sel({ pod: 'b' }) }] }))], true],
  ['allow ingress to x/a from namespace y', [P('p', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }) }] }))], true],
  ['allow from namespaces NotIn [y]', [P('p', ingressTo(onA, { from: [{ namespaceSelector: expr('ns', 'NotIn', ['y']) }] }))], true],
  ['allow from namespaces In [y, z]', [P('p', ingressTo(onA, { from: [{ namespaceSelector: expr('ns', 'In', ['y', 'z']) }] }))], true],
  ['podSelector AND namespaceSelector in one peer: pod b of namespace y', [P('p', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'b' }) }] }))], true],
  ['the same selectors as two peers: OR (namespace y, or pod b of x)', [P('p', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }) }, { podSelector: sel({ pod: 'b' }) }] }))], true],
  ['podSelector matchExpressions: pods In [b, c]', [P('p', ingressTo(onA, { from: [{ podSelector: expr('pod', 'In', ['b', 'c']) }] }))], true],
  ['namespaceSelector DoesNotExist ns: no namespace, nothing allowed', [P('p', ingressTo(onA, { from: [{ namespaceSelector: expr('ns', 'DoesNotExist') }] }))], true],
  ['namespaceSelector Exists ns with pods c', [P('p', ingressTo(onA, { from: [{ namespaceSelector: expr('ns', 'Exists'), podSelector: sel({ pod: 'c' }) }] }))], true],
  ['allow ingress on port 80 from anyone', [P('p', ingressTo(onA, { ports: [{ port: 80 }] }))], true],
  ['allow ingress on port 81 from namespace y', [P('p', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }) }], ports: [{ port: 81 }] }))], true],
  ['named port serve-80-tcp', [P('p', ingressTo(onA, { ports: [{ port: 'serve-80-tcp' }] }))], true],
  ['named port serve-81-udp (UDP)', [P('p', ingressTo(onA, { ports: [{ protocol: 'UDP', port: 'serve-81-udp' }] }))], true],
  ['endPort: 80-81 TCP', [P('p', ingressTo(onA, { ports: [{ port: 80, endPort: 81 }] }))], true],
  ['endPort: 81-90 TCP', [P('p', ingressTo(onA, { ports: [{ port: 81, endPort: 90 }] }))], true],
  ['every UDP port (protocol only)', [P('p', ingressTo(onA, { ports: [{ protocol: 'UDP' }] }))], true],
  [
    'two rules: namespace y on 80, namespace z on 81',
    [P('p', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }) }], ports: [{ port: 80 }] }, { from: [{ namespaceSelector: sel({ ns: 'z' }) }], ports: [{ port: 81 }] }))],
    true,
  ],
  [
    'two policies on x/a: their union (y, and z)',
    [P('p1', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }) }] })), P('p2', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'z' }) }] }))],
    true,
  ],
  [
    'policies on different pods: a from y, b from z',
    [P('p1', ingressTo(onA, { from: [{ namespaceSelector: sel({ ns: 'y' }) }] })), P('p2', ingressTo(sel({ pod: 'b' }), { from: [{ namespaceSelector: sel({ ns: 'z' }) }] }))],
    true,
  ],
  ['ipBlock: the remote node pods (10.244.2.0/24)', [P('p', ingressTo(onA, { from: [{ ipBlock: { cidr: '10.244.2.0/24' } }] }))], true],
  ['ipBlock with except: 10.244.0.0/16 but not 10.244.2.0/24', [P('p', ingressTo(onA, { from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.2.0/24'] } }] }))], true],
  ['ipBlock of IPv6: fd00:10:244:2::/64', [P('p', ingressTo(onA, { from: [{ ipBlock: { cidr: 'fd00:10:244:2::/64' } }] }))], true],
  ['ipBlock of one remote pod: y/c /32 and /128', [P('p', ingressTo(onA, { from: [{ ipBlock: { cidr: `${ipOf('y/c')}/32` } }, { ipBlock: { cidr: `${ipOf('y/c', 6)}/128` } }] }))], true],
  ['egress: x/a to namespace y only', [P('p', egressFrom(onA, { to: [{ namespaceSelector: sel({ ns: 'y' }) }] }))], true],
  ['egress: x/a on port 80 only', [P('p', egressFrom(onA, { ports: [{ port: 80 }] }))], true],
  ['egress to a named port: serve-81-tcp of each destination', [P('p', egressFrom(onA, { ports: [{ port: 'serve-81-tcp' }] }))], true],
  ['egress to an ipBlock: node-1 pods only (10.244.1.0/24)', [P('p', egressFrom(onA, { to: [{ ipBlock: { cidr: '10.244.1.0/24' } }, { ipBlock: { cidr: 'fd00:10:244:1::/64' } }] }))], true],
  ['egress: x pods to remote pods c, any namespace', [P('p', egressFrom({}, { to: [{ namespaceSelector: {}, podSelector: sel({ pod: 'c' }) }] }))], true],
  ['egress: x pods to namespace z, UDP only', [P('p', egressFrom({}, { to: [{ namespaceSelector: sel({ ns: 'z' }) }], ports: [{ protocol: 'UDP' }] }))], true],
  [
    'both directions: x/a may reach x/b only, x/b admits x/a only',
    [P('p1', egressFrom(onA, { to: [{ podSelector: sel({ pod: 'b' }) }] })), P('p2', ingressTo(sel({ pod: 'b' }), { from: [{ podSelector: onA }] }))],
    true,
  ],
  ['policyTypes [Egress] ignores the ingress rules it lists', [P('p', { podSelector: onA, policyTypes: ['Egress'], ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }], egress: [{}] })], false],
  ['a policy of namespace y isolates y/a only', [P('p', ingressTo(onA, { from: [{ podSelector: sel({ pod: 'b' }) }] }), 'y')], true],
  ['every namespace (namespaceSelector {}) with pods b', [P('p', ingressTo(onA, { from: [{ namespaceSelector: {}, podSelector: sel({ pod: 'b' }) }] }))], true],
  ['from: [] with port 80 (every peer)', [P('p', ingressTo(onA, { from: [], ports: [{ port: 80 }] }))], true],
  [
    'policyTypes defaulted: ingress only, then Egress added by an egress section',
    [P('p1', { podSelector: onA, ingress: [{}] }), P('p2', { podSelector: sel({ pod: 'b' }), egress: [{ ports: [{ port: 81 }] }] })],
    true,
  ],
  ['default deny in every namespace', ['x', 'y', 'z'].map((ns) => P('deny', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }, ns)), true],
];

const FLAGS = ['--network-policy', '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/48'];

describe('NetworkPolicy: upstream e2e matrix with real packets (nftables mode)', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(matrixPods(), [], 'nftables');
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
  });

  it.each(CASES)(
    '%s',
    async (_name, policies, denies) => {
      const objects = [...matrixObjects(), ...policies];
      await c.sync(objects, FLAGS);
      for (const family of [4, 6] as const) {
        const want = modelMatrix(objects, family);
        expect(deniesSome(want), 'the case denies what it says').toBe(denies);
        const got = await packetMatrix(c, family);
        expect(showMatrix(got, want), `IPv${family}: packets (rows: from, columns: to; ! got through, ? did not)`).toBe(showMatrix(want));
      }
    },
    60_000,
  );

  it('egress deny-all with DNS allowed: UDP 53 to anyone, nothing else', async () => {
    const dns = P('dns', egressFrom({}, { ports: [{ protocol: 'UDP', port: 53 }] }));
    await c.sync([...matrixObjects(), dns], FLAGS);
    expect(await c.probe('x-a', 'udp', ipOf('z/c'), 53, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'z-c' }] });
    expect(await c.probe('x-a', 'udp', ipOf('y/b', 6), 53, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'y-b' }] });
    expect(await c.probe('x-a', 'tcp', ipOf('z/c'), 80, { timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 1 });
    expect(await c.probe('x-b', 'udp', ipOf('y/a'), 80, { timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 1 });
  }, 60_000);

  it('a ClusterIP is reachable exactly when its chosen endpoint is (policy after DNAT)', async () => {
    const objects = [
      ...matrixObjects(),
      service('x/to-b', { clusterIP: '10.96.50.1', ports: [{ name: 'http', port: 80, targetPort: 80 }] }),
      endpointSlice('x/to-b', [{ name: 'http', port: 80 }], [endpoint(ipOf('x/b'), { node: 'node-1' })]),
      service('y/to-c', { clusterIP: '10.96.50.2', ports: [{ name: 'http', port: 80, targetPort: 80 }] }),
      endpointSlice('y/to-c', [{ name: 'http', port: 80 }], [endpoint(ipOf('y/c'), { node: 'node-2' })]),
      // x/a may reach pods b of x; x/b admits only x/a.
      P('p1', egressFrom(onA, { to: [{ podSelector: sel({ pod: 'b' }) }] })),
      P('p2', ingressTo(sel({ pod: 'b' }), { from: [{ podSelector: onA }] })),
    ];
    await c.sync(objects, FLAGS);
    expect(await c.probe('x-a', 'tcp', '10.96.50.1', 80, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'x-b' }] });
    expect(await c.probe('x-a', 'tcp', '10.96.50.2', 80, { timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 1 });
    expect(await c.probe('y-a', 'tcp', '10.96.50.1', 80, { timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 1 });
    expect(await c.probe('y-a', 'tcp', '10.96.50.2', 80, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'y-c' }] });
  }, 60_000);

  it('a policy added, changed and removed while a flow runs: the flow keeps going (conntrack), new ones follow the policy', async () => {
    const write = (objects: Record<string, unknown>[]) => c.kproxy(['sync', '--from', c.writeObjects(objects), '--proxy-mode', 'nftables', '--hostname-override', 'node-1', ...FLAGS]);
    await c.sync(matrixObjects(), FLAGS);
    // One UDP flow (fixed source port) from y/a to x/a, answered before any policy.
    const flow = () => c.probe('y-a', 'udp', ipOf('x/a'), 80, { sport: 40080, timeoutMs: 800 });
    const fresh = () => c.probe('y-a', 'udp', ipOf('x/a'), 80, { timeoutMs: 800 });
    expect(await flow()).toMatchObject({ answers: [{ name: 'x-a' }] });
    await write([...matrixObjects(), P('deny', { podSelector: {}, policyTypes: ['Ingress'] })]);
    expect(await flow(), 'the established flow').toMatchObject({ answers: [{ name: 'x-a' }] });
    expect(await fresh(), 'a new flow').toMatchObject({ answers: [], timeout: 1 });
    await write([...matrixObjects(), P('deny', ingressTo({}, { from: [{ namespaceSelector: sel({ ns: 'y' }) }] }))]);
    expect(await fresh(), 'allowed from y now').toMatchObject({ answers: [{ name: 'x-a' }] });
    expect(await c.probe('z-a', 'udp', ipOf('x/a'), 80, { timeoutMs: 800 }), 'but not from z').toMatchObject({ answers: [], timeout: 1 });
    await write(matrixObjects());
    expect(await c.probe('z-a', 'udp', ipOf('x/a'), 80, { timeoutMs: 800 }), 'policy removed').toMatchObject({ answers: [{ name: 'x-a' }] });
  }, 60_000);

  it('a policy that cannot be enforced as written fails closed and holds nothing else back', async () => {
    const broken = P('broken', ingressTo(onA, { from: [{ ipBlock: { cidr: '10.244.0.0/33' } }] }));
    const fine = P('fine', ingressTo(onA, { from: [{ podSelector: sel({ pod: 'b' }) }] }), 'y');
    const r = await c.kproxyResult(['sync', '--from', c.writeObjects([...matrixObjects(), broken, fine]), '--proxy-mode', 'nftables', '--hostname-override', 'node-1', ...FLAGS]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain('spec.ingress[0].from[0].ipBlock.cidr');
    await c.flushConntrack();
    // x/a: isolated, nothing of the broken rule allowed; y/a: its own policy applies.
    for (const from of ['x-b', 'y-a', 'z-c']) expect(await c.probe(from, 'tcp', ipOf('x/a'), 80, { timeoutMs: 500 }), from).toMatchObject({ answers: [], timeout: 1 });
    expect(await c.probe('y-b', 'tcp', ipOf('y/a'), 80, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'y-a' }] });
    expect(await c.probe('x-b', 'tcp', ipOf('y/a'), 80, { timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 1 });
  }, 60_000);

  it('verify finds the policy table as written, then names what someone changed; explain and list --policies read it', async () => {
    const objects = [
      ...matrixObjects(),
      P('p1', egressFrom(onA, { to: [{ namespaceSelector: {} }], ports: [{ port: 'serve-81-tcp' }, { protocol: 'UDP', port: 53 }] })),
      P('p2', ingressTo(onA, { from: [{ podSelector: sel({ pod: 'b' }) }, { ipBlock: { cidr: '10.244.2.0/24', except: [`${ipOf('z/c')}/32`] } }], ports: [{ port: 80, endPort: 81 }] })),
    ];
    await c.sync(objects, FLAGS);
    const file = c.writeObjects(objects);
    const common = ['--from', file, '--proxy-mode', 'nftables', '--hostname-override', 'node-1', ...FLAGS];
    const clean = await c.kproxyResult(['verify', ...common]);
    expect(clean.exitCode, clean.stdout + clean.stderr).toBe(0);
    expect(clean.stdout).toContain('NetworkPolicy table (inet kproxy-policy): no drift');
    // Someone flushes x/a's ingress chain: verify names the pod and the missing rules.
    const chain = (await c.onNode('nft', ['list', 'chains', 'inet'])).match(/chain (ingress-[A-Z2-7]{8}-x\/a)/)![1]!;
    await c.onNode('nft', ['flush', 'chain', 'inet', 'kproxy-policy', chain]);
    const drift = await c.kproxyResult(['verify', ...common]);
    expect(drift.exitCode).toBe(1);
    expect(drift.stdout).toContain('pod x/a');
    expect(drift.stdout).toMatch(/missing rule +inet kproxy-policy +ingress-\S+-x\/a +drop comment "isolated by x\/p2"/);
    // explain: y/c (remote, 10.244.2.x, not z/c) to x/a on 81 is allowed by p2; from z/c it is not.
    const ok = await c.kproxyResult(['explain', `${ipOf('x/a')}:81`, '--source', ipOf('y/c'), ...common]);
    expect(ok.exitCode, ok.stdout).toBe(0);
    expect(ok.stdout).toContain('allowed by x/p2 ingress rule 0');
    const no = await c.kproxyResult(['explain', `${ipOf('x/a')}:81`, '--source', ipOf('z/c'), ...common]);
    expect(no.exitCode, no.stdout).toBe(5);
    expect(no.stdout).toContain('isolated by x/p2');
    const list = await c.kproxyResult(['list', '--policies', '--output', 'json', ...common]);
    const rows = JSON.parse(list.stdout) as { pod: string; egress: { rules: { ports: string }[] } }[];
    expect(rows.map((r) => r.pod)).toEqual(['x/a', 'x/b', 'y/a', 'y/b', 'z/a', 'z/b']);
    expect(rows[0]!.egress.rules[0]!.ports).toMatch(/^UDP 53, named ports serve-81-tcp\/TCP \(18 destinations\)$/);
  }, 60_000);

  it('without --network-policy, sync removes the policy table an earlier run left', async () => {
    await c.sync([...matrixObjects(), P('deny', { podSelector: {}, policyTypes: ['Ingress'] })], FLAGS);
    expect(await c.onNode('nft', ['list', 'tables'])).toContain('inet kproxy-policy');
    await c.sync(matrixObjects());
    expect(await c.onNode('nft', ['list', 'tables'])).not.toContain('inet kproxy-policy');
    expect(await c.probe('y-a', 'tcp', ipOf('x/a'), 80, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'x-a' }] });
  }, 60_000);

  it('kproxy cleanup removes the policy table, and traffic flows as without it', async () => {
    await c.sync([...matrixObjects(), P('deny', { podSelector: {}, policyTypes: ['Ingress'] })], FLAGS);
    expect(await c.probe('y-a', 'tcp', ipOf('x/a'), 80, { timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 1 });
    await c.kproxy(['cleanup']);
    expect(await c.onNode('nft', ['list', 'tables'])).not.toContain('inet kproxy-policy');
    expect(await c.probe('y-a', 'tcp', ipOf('x/a'), 80, { timeoutMs: 1000 })).toMatchObject({ answers: [{ name: 'x-a' }] });
  }, 60_000);
});

describe('NetworkPolicy in iptables mode: the same table beside iptables Service rules', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(matrixPods(), [], 'iptables');
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
  });

  it.each(CASES.filter(([name]) => /AND|OR|ipBlock with except|named port serve-80|both directions/.test(name)))(
    '%s',
    async (_name, policies) => {
      const objects = [...matrixObjects(), ...policies];
      await c.sync(objects, FLAGS);
      for (const family of [4, 6] as const) {
        const want = modelMatrix(objects, family);
        const got = await packetMatrix(c, family);
        expect(showMatrix(got, want), `IPv${family}`).toBe(showMatrix(want));
      }
    },
    60_000,
  );
});
