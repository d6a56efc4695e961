/**
 * ClusterIP behaviour with real packets: random load balancing, UDP, hairpin, masquerading
 * (--cluster-cidr, --masquerade-all, no detector) and REJECT without endpoints.
 * Expected behaviour: upstream kube-proxy's (pkg/proxy/iptables/proxier_test.go, pkg/proxy/topology_test.go).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, service } from '../support/objects.ts';
import { CLIENT_IP, peers, tally, MODES, TestCluster } from './harness/cluster.ts';
import { expectUniform } from './harness/expect.ts';

const WEB = [{ name: 'http', port: 80, targetPort: 8080 }];
const WEB_EP = [{ name: 'http', port: 8080 }];

describe.each(MODES)('%s mode: ClusterIP', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'a1', ip: '10.244.1.10', node: 'node-1', tcp: [8080], udp: [53] },
        { name: 'a2', ip: '10.244.1.11', node: 'node-1', tcp: [8080] },
        { name: 'b1', ip: '10.244.2.10', node: 'node-2', tcp: [8080], udp: [53] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  const web = () => [
    service('demo/web', { clusterIP: '10.96.0.50', ports: WEB }),
    endpointSlice('demo/web', WEB_EP, [endpoint('10.244.1.10', { node: 'node-1' }), endpoint('10.244.1.11', { node: 'node-1' }), endpoint('10.244.2.10', { node: 'node-2' })]),
  ];

  it('spreads new connections uniformly over the endpoints, targetPort mapped, pod source kept', async () => {
    await c.sync(web());
    const r = await c.probe('src', 'tcp', '10.96.0.50', 80, { count: 300 });
    expectUniform(r, 300, ['a1', 'a2', 'b1']);
    expect(peers(r)).toEqual(['10.244.1.99']);
  });

  it('masquerades traffic from outside the cluster CIDR, and from the node itself', async () => {
    await c.sync(web());
    const ext = await c.probe('client', 'tcp', '10.96.0.50', 80, { count: 30 });
    expect(ext.answers).toHaveLength(30);
    expect(peers(ext)).not.toContain(CLIENT_IP);
    const local = await c.probe('node-1', 'tcp', '10.96.0.50', 80, { count: 30 });
    expect(local.answers).toHaveLength(30);
    // Masqueraded to node-1's address on the way out: 169.254.1.1 to its pods, 192.0.2.21 to node-2's.
    expect(peers(local).every((p) => p === '169.254.1.1' || p === '192.0.2.21')).toBe(true);
  });

  it('--masquerade-all masquerades pod traffic too', async () => {
    await c.sync(web(), ['--cluster-cidr', '10.244.0.0/16', '--masquerade-all']);
    const r = await c.probe('src', 'tcp', '10.96.0.50', 80, { count: 20 });
    expect(r.answers).toHaveLength(20);
    expect(peers(r)).not.toContain('10.244.1.99');
  });

  it('without a cluster CIDR, traffic from outside is not masqueraded (no local detector)', async () => {
    await c.sync(web(), []);
    const r = await c.probe('client', 'tcp', '10.96.0.50', 80, { count: 20 });
    expect(r.answers).toHaveLength(20);
    expect(peers(r)).toEqual([CLIENT_IP]);
  });

  it('hairpin: a pod reaching itself through its Service is masqueraded', async () => {
    await c.sync([service('demo/self', { clusterIP: '10.96.0.51', ports: WEB }), endpointSlice('demo/self', WEB_EP, [endpoint('10.244.1.10', { node: 'node-1' })])]);
    const r = await c.probe('a1', 'tcp', '10.96.0.51', 80, { count: 5 });
    expect(tally(r)).toEqual({ a1: 5 });
    expect(peers(r)).toEqual(['169.254.1.1']);
  });

  it('UDP: datagrams are DNATed to both endpoints', async () => {
    const dns = [{ name: 'dns', port: 53, protocol: 'UDP' as const }];
    await c.sync([
      service('demo/dns', { clusterIP: '10.96.0.10', ports: dns }),
      endpointSlice('demo/dns', dns, [endpoint('10.244.1.10', { node: 'node-1' }), endpoint('10.244.2.10', { node: 'node-2' })]),
    ]);
    const r = await c.probe('src', 'udp', '10.96.0.10', 53, { count: 60 });
    expect(r.answers).toHaveLength(60);
    expect(Object.keys(tally(r)).sort()).toEqual(['a1', 'b1']);
    expect(peers(r)).toEqual(['10.244.1.99']);
  });

  it('REJECTs connections to a Service without endpoints, TCP and UDP', async () => {
    const ports = [
      { name: 'http', port: 80 },
      { name: 'dns', port: 53, protocol: 'UDP' as const },
    ];
    await c.sync([service('demo/empty', { clusterIP: '10.96.0.52', ports }), endpointSlice('demo/empty', ports, [])]);
    const tcp = await c.probe('src', 'tcp', '10.96.0.52', 80, { count: 5 });
    expect(tcp).toMatchObject({ answers: [], refused: 5, timeout: 0 });
    const udp = await c.probe('src', 'udp', '10.96.0.52', 53, { count: 3 });
    expect(udp).toMatchObject({ answers: [], refused: 3, timeout: 0 });
  });
});
