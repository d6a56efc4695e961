/**
 * IPv6 and dual-stack Services with real IPv6 packets, in both modes: ClusterIP spread, a
 * dual-stack Service on both families, NodePort (Cluster and Local policy), REJECT without
 * endpoints (per family), externalIP, LB IP with loadBalancerSourceRanges, session affinity,
 * hairpin, UDP, and an IPv6 Service whose slice is IPv4. Expected behaviour: upstream kube-proxy's
 * dual-stack proxier (pkg/proxy/metaproxier, one single-stack proxier per family), whose IPv6
 * rules are its IPv4 rules in ip6tables / the `ip6 kube-proxy` table.
 *
 * Addresses are the dual-stack fixtures' (test/fixtures/dualstack): service CIDR fd00:10:96::/112,
 * pod CIDR fd00:10:244::/56, node-1 2001:db8:1::21.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, service, type ServiceOptions } from '../support/objects.ts';
import { CLIENT_IP6, NODE1_EXT_IP6, NODE1_IP6, onlyFrom, peers, tally, MODES, TestCluster } from './harness/cluster.ts';
import { expectExplained, expectUniform } from './harness/expect.ts';
import type { Explanation } from '../../src/planner/explain.ts';

const ALLOWED = '2001:db8:100::5';
const BLOCKED = '2001:db8:200::5';
const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const EP_PORTS = [{ name: 'http', port: 8080 }];
const DNS_PORTS = [{ name: 'dns', port: 53, protocol: 'UDP' as const }];
const FLAGS = ['--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56'];

const ep6 = (ip: string) => endpoint(ip, { node: ip.startsWith('fd00:10:244:1::') ? 'node-1' : 'node-2' });
const ep4 = (ip: string) => endpoint(ip, { node: ip.startsWith('10.244.1.') ? 'node-1' : 'node-2' });

/** An IPv6 single-stack Service `demo/<name>` on fd00:10:96::<n in hex>, port 80 → 8080. */
function v6(name: string, n: number, extra: Partial<ServiceOptions> = {}) {
  return service(`demo/${name}`, { clusterIP: `fd00:10:96::${n.toString(16)}`, ports: PORTS, ...extra });
}

describe.each(MODES)('%s mode: IPv6 and dual-stack', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'a1', ip: '10.244.1.10', ip6: 'fd00:10:244:1::10', node: 'node-1', tcp: [8080], udp: [53] },
        { name: 'a2', ip: '10.244.1.11', ip6: 'fd00:10:244:1::11', node: 'node-1', tcp: [8080] },
        { name: 'b1', ip: '10.244.2.10', ip6: 'fd00:10:244:2::10', node: 'node-2', tcp: [8080], udp: [53] },
        { name: 'src', ip: '10.244.1.99', ip6: 'fd00:10:244:1::99', node: 'node-1' },
      ],
      [ALLOWED, BLOCKED],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  const three6 = () => [ep6('fd00:10:244:1::10'), ep6('fd00:10:244:1::11'), ep6('fd00:10:244:2::10')];

  it('IPv6 ClusterIP: spreads new connections over the endpoints, pod source kept; outside sources masqueraded', async () => {
    await c.sync([v6('web', 0x50), endpointSlice('demo/web', EP_PORTS, three6())], FLAGS);
    const r = await c.probe('src', 'tcp', 'fd00:10:96::50', 80, { count: 300 });
    expectUniform(r, 300, ['a1', 'a2', 'b1']);
    expect(peers(r)).toEqual(['fd00:10:244:1::99']);
    const ext = await c.probe('client', 'tcp', 'fd00:10:96::50', 80, { count: 20 });
    expect(ext.answers).toHaveLength(20);
    expect(peers(ext)).not.toContain(CLIENT_IP6);
  });

  it('a dual-stack Service answers on both ClusterIPs, each family from its own slice', async () => {
    await c.sync(
      [
        service('demo/dual', { clusterIP: '10.96.0.60', clusterIPs: ['10.96.0.60', 'fd00:10:96::60'], ports: PORTS }),
        endpointSlice('demo/dual', EP_PORTS, [ep4('10.244.1.10'), ep4('10.244.2.10')], 'v4'),
        endpointSlice('demo/dual', EP_PORTS, [ep6('fd00:10:244:1::11')], 'v6'),
      ],
      FLAGS,
    );
    const r4 = await c.probe('src', 'tcp', '10.96.0.60', 80, { count: 30 });
    expect(onlyFrom('a1', 'b1')(r4), JSON.stringify(r4)).toBe(true);
    expect(peers(r4)).toEqual(['10.244.1.99']);
    const r6 = await c.probe('src', 'tcp', 'fd00:10:96::60', 80, { count: 10 });
    expect(tally(r6)).toEqual({ a2: 10 });
    expect(peers(r6)).toEqual(['fd00:10:244:1::99']);
  });

  it('IPv6 NodePort, Cluster policy: every endpoint, masqueraded; Local policy: local endpoints only, client source kept', async () => {
    await c.sync(
      [
        v6('np', 0x61, { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30061 }] }),
        endpointSlice('demo/np', EP_PORTS, [ep6('fd00:10:244:1::10'), ep6('fd00:10:244:2::10')]),
        v6('npl', 0x62, { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30062 }], externalTrafficPolicy: 'Local' }),
        endpointSlice('demo/npl', EP_PORTS, [ep6('fd00:10:244:1::10'), ep6('fd00:10:244:2::10')]),
      ],
      FLAGS,
    );
    for (const host of [NODE1_EXT_IP6, NODE1_IP6]) {
      const r = await c.probe('client', 'tcp', host, 30061, { count: 40 });
      expect(Object.keys(tally(r)).sort(), host).toEqual(['a1', 'b1']);
      expect(peers(r), host).not.toContain(CLIENT_IP6);
    }
    const local = await c.probe('client', 'tcp', NODE1_EXT_IP6, 30062, { count: 20 });
    expect(tally(local)).toEqual({ a1: 20 });
    expect(peers(local)).toEqual([CLIENT_IP6]);
  });

  it('IPv6 externalTrafficPolicy Local without a local endpoint: external traffic dropped, pods still reach the remote one', async () => {
    await c.sync(
      [
        v6('far', 0x69, { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30069 }], externalTrafficPolicy: 'Local', externalIPs: ['2001:db8:e::69'] }),
        endpointSlice('demo/far', EP_PORTS, [ep6('fd00:10:244:2::10')]),
      ],
      FLAGS,
    );
    for (const [host, port] of [
      [NODE1_EXT_IP6, 30069],
      ['2001:db8:e::69', 80],
    ] as const) {
      const r = await c.probe('client', 'tcp', host, port, { count: 2, timeoutMs: 500 });
      expect(r, `${host}:${port}`).toMatchObject({ answers: [], timeout: 2 });
    }
    const pod = await c.probe('src', 'tcp', '2001:db8:e::69', 80, { count: 5 });
    expect(tally(pod)).toEqual({ b1: 5 });
    expect(peers(pod)).toEqual(['fd00:10:244:1::99']);
  });

  it('--nodeport-addresses with an IPv6 CIDR limits IPv6 NodePorts to the matching local addresses', async () => {
    await c.sync(
      [v6('npa', 0x6a, { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30070 }] }), endpointSlice('demo/npa', EP_PORTS, [ep6('fd00:10:244:1::10')])],
      [...FLAGS, '--nodeport-addresses', '2001:db8:ff::/64'],
    );
    expect(tally(await c.probe('client', 'tcp', NODE1_EXT_IP6, 30070, { count: 5 }))).toEqual({ a1: 5 });
    // 2001:db8:1::21 is local but outside the CIDR: no DNAT, and nothing listens on the port itself.
    expect(await c.probe('client', 'tcp', NODE1_IP6, 30070, { count: 2, timeoutMs: 3000 })).toMatchObject({ answers: [], refused: 2 });
  });

  it('REJECTs an IPv6 Service without endpoints, and a dual-stack one on the family that has none only', async () => {
    await c.sync(
      [
        v6('none', 0x63, { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30063 }], externalIPs: ['2001:db8:e::63'] }),
        endpointSlice('demo/none', EP_PORTS, [], 'abcde', 'IPv6'),
        service('demo/half', { clusterIP: '10.96.0.64', clusterIPs: ['10.96.0.64', 'fd00:10:96::64'], ports: PORTS }),
        endpointSlice('demo/half', EP_PORTS, [ep4('10.244.1.10')], 'v4'),
        endpointSlice('demo/half', EP_PORTS, [], 'v6', 'IPv6'),
      ],
      FLAGS,
    );
    for (const [host, port] of [
      ['fd00:10:96::63', 80],
      ['2001:db8:e::63', 80],
      [NODE1_EXT_IP6, 30063],
      ['fd00:10:96::64', 80],
    ] as const) {
      // The ICMPv6 error arrives while connect() holds the socket and is dropped (TcpExtLockDroppedIcmps);
      // the one for the SYN retransmitted after 1 s refuses it. A DROP would time out.
      const r = await c.probe('client', 'tcp', host, port, { count: 2, timeoutMs: 3000 });
      expect(r, `${host}:${port} ${JSON.stringify(r)}`).toMatchObject({ answers: [], refused: 2, timeout: 0 });
    }
    expect(tally(await c.probe('client', 'tcp', '10.96.0.64', 80, { count: 3 }))).toEqual({ a1: 3 });
  });

  it('IPv6 externalIP and LB IP: source ranges admit the allowed client and drop the other; an IPv4 range never reaches IPv6 rules', async () => {
    await c.sync(
      [
        v6('lb', 0x65, {
          type: 'LoadBalancer',
          ports: [{ ...PORTS[0]!, nodePort: 30065 }],
          externalIPs: ['2001:db8:e::65', '198.51.100.65'],
          loadBalancerIPs: ['2001:db8:f::65', '203.0.113.65'],
          loadBalancerSourceRanges: ['2001:db8:100::/56', '203.0.113.0/24'],
        }),
        endpointSlice('demo/lb', EP_PORTS, [ep6('fd00:10:244:1::10'), ep6('fd00:10:244:2::10')]),
      ],
      FLAGS,
    );
    const eip = await c.probe('client', 'tcp', '2001:db8:e::65', 80, { count: 20, bind: BLOCKED });
    expect(Object.keys(tally(eip)).sort()).toEqual(['a1', 'b1']);
    const allowed = await c.probe('client', 'tcp', '2001:db8:f::65', 80, { count: 20, bind: ALLOWED });
    expect(Object.keys(tally(allowed)).sort()).toEqual(['a1', 'b1']);
    const blocked = await c.probe('client', 'tcp', '2001:db8:f::65', 80, { count: 3, bind: BLOCKED, timeoutMs: 500 });
    expect(blocked).toMatchObject({ answers: [], timeout: 3 });
    // The Service is IPv6 only: its IPv4 externalIP, LB IP and source range appear in no rule.
    const v4rules = await c.rules(4);
    for (const text of ['198.51.100.65', '203.0.113.65', '203.0.113.0/24', 'demo/lb']) expect(v4rules).not.toContain(text);
    const v6rules = await c.rules(6);
    expect(v6rules).toContain('2001:db8:100::/56');
    expect(v6rules).not.toContain('203.0.113.0/24');
  });

  it('IPv6 session affinity keeps a client on one endpoint', async () => {
    await c.sync([v6('sticky', 0x66, { affinityTimeout: 600 }), endpointSlice('demo/sticky', EP_PORTS, three6())], FLAGS);
    const r = await c.probe('src', 'tcp', 'fd00:10:96::66', 80, { count: 30 });
    expect(r.answers).toHaveLength(30);
    expect(Object.keys(tally(r))).toHaveLength(1);
  });

  it('IPv6 hairpin: a pod reaching itself through its Service is masqueraded', async () => {
    await c.sync([v6('self', 0x67), endpointSlice('demo/self', EP_PORTS, [ep6('fd00:10:244:1::10')])], FLAGS);
    const r = await c.probe('a1', 'tcp', 'fd00:10:96::67', 80, { count: 5 });
    expect(tally(r)).toEqual({ a1: 5 });
    expect(peers(r)).not.toContain('fd00:10:244:1::10');
  });

  it('IPv6 UDP reaches the endpoints', async () => {
    await c.sync(
      [
        service('demo/dns', { clusterIP: 'fd00:10:96::a', ports: DNS_PORTS }),
        endpointSlice('demo/dns', [{ name: 'dns', port: 53, protocol: 'UDP' }], [ep6('fd00:10:244:1::10'), ep6('fd00:10:244:2::10')]),
      ],
      FLAGS,
    );
    const r = await c.probe('src', 'udp', 'fd00:10:96::a', 53, { count: 40 });
    expect(r.answers).toHaveLength(40);
    expect(Object.keys(tally(r)).sort()).toEqual(['a1', 'b1']);
  });

  it('kproxy explain agrees with IPv6 packets: ClusterIP, eTP Local NodePort, LB source ranges, no endpoints; from a pod, the node and a client', async () => {
    const objects = [
      v6('web', 0x50),
      endpointSlice('demo/web', EP_PORTS, three6()),
      v6('local', 0x51, { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30651 }], externalTrafficPolicy: 'Local' }),
      endpointSlice('demo/local', EP_PORTS, [ep6('fd00:10:244:1::10'), ep6('fd00:10:244:2::10')]),
      v6('lb', 0x52, { type: 'LoadBalancer', loadBalancerIPs: ['2001:db8:f::52'], loadBalancerSourceRanges: ['2001:db8:100::/56'] }),
      endpointSlice('demo/lb', EP_PORTS, [ep6('fd00:10:244:2::10')]),
      v6('empty', 0x53),
      endpointSlice('demo/empty', EP_PORTS, []),
    ];
    const file = c.writeObjects(objects);
    const flags = ['--from', file, '--proxy-mode', mode, '--hostname-override', 'node-1', ...FLAGS];
    await c.kproxy(['sync', ...flags]);
    await c.flushConntrack();
    const podByIP = new Map([...c.pods.values()].flatMap((p) => (p.ip6 ? [[p.ip6, p.name] as const] : [])));
    const sources = [
      { origin: 'src', address: 'fd00:10:244:1::99', bind: undefined },
      { origin: 'node-1', address: NODE1_EXT_IP6, bind: undefined },
      { origin: 'client', address: ALLOWED, bind: ALLOWED },
    ];
    const verdicts = new Set<string>();
    for (const dest of ['[fd00:10:96::50]:80', `[${NODE1_EXT_IP6}]:30651`, '[2001:db8:f::52]:80', '[fd00:10:96::53]:80']) {
      for (const source of sources) {
        const r = await c.kproxyResult(['explain', dest, '--source', source.address, '--output', 'json', ...flags]);
        const e = JSON.parse(r.stdout) as Explanation;
        const host = dest.slice(1, dest.indexOf(']'));
        const port = Number(dest.slice(dest.indexOf(']') + 2));
        // An ICMPv6 error for a SYN is dropped while connect() holds the socket: wait past the 1 s retransmit.
        const probe = await c.probe(source.origin, 'tcp', host, port, {
          count: e.verdict === 'DNAT' ? 12 * e.endpoints.length : 2,
          timeoutMs: e.verdict === 'DNAT' ? 1000 : 3000,
          ...(source.bind ? { bind: source.bind } : {}),
        });
        expectExplained(e, probe, source.address, podByIP, `${dest} from ${source.origin}`);
        verdicts.add(e.verdict);
      }
    }
    expect([...verdicts].sort()).toEqual(['DNAT', 'DROP', 'REJECT']);
  });

  it('an IPv6 Service whose slice is IPv4 gets no endpoint rules: its ClusterIP REJECTs, no IPv4 address is written', async () => {
    await c.sync([v6('wrong', 0x68), endpointSlice('demo/wrong', EP_PORTS, [ep4('10.244.1.10')])], FLAGS);
    const r = await c.probe('src', 'tcp', 'fd00:10:96::68', 80, { count: 2, timeoutMs: 3000 });
    expect(r).toMatchObject({ answers: [], refused: 2 });
    expect(await c.rules(6)).not.toContain('10.244.1.10');
    expect(await c.rules(4)).not.toContain('demo/wrong');
  });
});
