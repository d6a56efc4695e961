/**
 * External destinations with real packets: NodePort (all local addresses, --nodeport-addresses),
 * externalIPs, load-balancer IPs with loadBalancerSourceRanges, externalTrafficPolicy Cluster and
 * Local (local endpoints only, source kept, pod short-circuit, DROP without local endpoints) and
 * REJECT without endpoints. Expected behaviour: upstream kube-proxy's (pkg/proxy/iptables/proxier_test.go, pkg/proxy/topology_test.go).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, service, type ServiceOptions } from '../support/objects.ts';
import { CLIENT_IP, NODE1_EXT_IP, NODE1_IP, peers, tally, MODES, TestCluster } from './harness/cluster.ts';

const ALLOWED = '203.0.113.2';
const BLOCKED = '198.51.100.200';
const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const EP_PORTS = [{ name: 'http', port: 8080 }];
const LOCAL_EP = endpoint('10.244.1.10', { node: 'node-1' });
const REMOTE_EP = endpoint('10.244.2.10', { node: 'node-2' });

function lb(key: string, n: number, extra: Partial<ServiceOptions> = {}) {
  return service(key, {
    type: 'LoadBalancer',
    clusterIP: `10.96.1.${n}`,
    ports: [{ ...PORTS[0]!, nodePort: 30080 + n }],
    externalIPs: [`198.51.100.${20 + n}`],
    loadBalancerIPs: [`203.0.113.${10 + n}`],
    ...extra,
  });
}

describe.each(MODES)('%s mode: external destinations', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'l1', ip: '10.244.1.10', node: 'node-1', tcp: [8080] },
        { name: 'r1', ip: '10.244.2.10', node: 'node-2', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [ALLOWED, BLOCKED],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  describe('externalTrafficPolicy Cluster', () => {
    const objects = () => [lb('demo/cl', 1, { loadBalancerSourceRanges: ['203.0.113.0/25'] }), endpointSlice('demo/cl', EP_PORTS, [LOCAL_EP, REMOTE_EP])];

    it('NodePort on every local address, externalIP and allowed LB source: all endpoints, masqueraded', async () => {
      await c.sync(objects());
      for (const [host, port] of [
        [NODE1_EXT_IP, 30081],
        [NODE1_IP, 30081],
        ['198.51.100.21', 80],
        ['203.0.113.11', 80],
      ] as const) {
        const r = await c.probe('client', 'tcp', host, port, { count: 40, bind: ALLOWED });
        expect(r.answers, `${host}:${port}`).toHaveLength(40);
        expect(Object.keys(tally(r)).sort(), `${host}:${port}`).toEqual(['l1', 'r1']);
        expect(peers(r), `${host}:${port}`).not.toContain(ALLOWED);
      }
    });

    it('loadBalancerSourceRanges drop other sources at the LB IP, but not at the NodePort', async () => {
      await c.sync(objects());
      const blocked = await c.probe('client', 'tcp', '203.0.113.11', 80, { count: 3, bind: BLOCKED, timeoutMs: 500 });
      expect(blocked).toMatchObject({ answers: [], timeout: 3 });
      const pod = await c.probe('src', 'tcp', '203.0.113.11', 80, { count: 2, timeoutMs: 500 });
      expect(pod).toMatchObject({ answers: [], timeout: 2 });
      const viaNodePort = await c.probe('client', 'tcp', NODE1_EXT_IP, 30081, { count: 10, bind: BLOCKED });
      expect(viaNodePort.answers).toHaveLength(10);
    });

    it('the node itself reaches its own NodePort, masqueraded', async () => {
      await c.sync(objects());
      const r = await c.probe('node-1', 'tcp', NODE1_IP, 30081, { count: 20 });
      expect(r.answers).toHaveLength(20);
      expect(peers(r).every((p) => p === '169.254.1.1' || p === NODE1_IP)).toBe(true);
    });
  });

  describe('externalTrafficPolicy Local', () => {
    it('external clients reach only local endpoints and keep their source address', async () => {
      await c.sync([lb('demo/loc', 2, { externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 }), endpointSlice('demo/loc', EP_PORTS, [LOCAL_EP, REMOTE_EP])]);
      for (const [host, port] of [
        [NODE1_EXT_IP, 30082],
        ['198.51.100.22', 80],
        ['203.0.113.12', 80],
      ] as const) {
        const r = await c.probe('client', 'tcp', host, port, { count: 20 });
        expect(tally(r), `${host}:${port}`).toEqual({ l1: 20 });
        expect(peers(r), `${host}:${port}`).toEqual([CLIENT_IP]);
      }
    });

    it('pods are short-circuited to every endpoint, unmasqueraded; the node is masqueraded', async () => {
      await c.sync([lb('demo/loc', 2, { externalTrafficPolicy: 'Local' }), endpointSlice('demo/loc', EP_PORTS, [LOCAL_EP, REMOTE_EP])]);
      const pod = await c.probe('src', 'tcp', '203.0.113.12', 80, { count: 40 });
      expect(Object.keys(tally(pod)).sort()).toEqual(['l1', 'r1']);
      expect(peers(pod)).toEqual(['10.244.1.99']);
      const node = await c.probe('node-1', 'tcp', '203.0.113.12', 80, { count: 40 });
      expect(Object.keys(tally(node)).sort()).toEqual(['l1', 'r1']);
      expect(peers(node)).not.toContain('10.244.1.99');
    });

    it('without a local endpoint, external traffic is dropped while pods still reach the remote one', async () => {
      await c.sync([lb('demo/far', 3, { externalTrafficPolicy: 'Local' }), endpointSlice('demo/far', EP_PORTS, [REMOTE_EP])]);
      for (const [host, port] of [
        [NODE1_EXT_IP, 30083],
        ['198.51.100.23', 80],
        ['203.0.113.13', 80],
      ] as const) {
        const r = await c.probe('client', 'tcp', host, port, { count: 2, timeoutMs: 500 });
        expect(r, `${host}:${port}`).toMatchObject({ answers: [], timeout: 2 });
      }
      const pod = await c.probe('src', 'tcp', '203.0.113.13', 80, { count: 5 });
      expect(tally(pod)).toEqual({ r1: 5 });
      expect(peers(pod)).toEqual(['10.244.1.99']);
    });
  });

  it('--nodeport-addresses limits NodePorts to the matching local addresses', async () => {
    await c.sync([lb('demo/cl', 1), endpointSlice('demo/cl', EP_PORTS, [LOCAL_EP, REMOTE_EP])], ['--cluster-cidr', '10.244.0.0/16', '--nodeport-addresses', '198.18.0.0/24']);
    const allowed = await c.probe('client', 'tcp', NODE1_EXT_IP, 30081, { count: 10 });
    expect(allowed.answers).toHaveLength(10);
    // 192.0.2.21 is local but outside the CIDR: no DNAT, and nothing listens on the port itself.
    const other = await c.probe('client', 'tcp', NODE1_IP, 30081, { count: 3 });
    expect(other).toMatchObject({ answers: [], refused: 3 });
  });

  it('REJECTs at the externalIP, LB IP and NodePort of a Service without endpoints', async () => {
    await c.sync([lb('demo/none', 4), endpointSlice('demo/none', EP_PORTS, [])]);
    for (const [host, port] of [
      [NODE1_EXT_IP, 30084],
      ['198.51.100.24', 80],
      ['203.0.113.14', 80],
    ] as const) {
      const r = await c.probe('client', 'tcp', host, port, { count: 2 });
      expect(r, `${host}:${port}`).toMatchObject({ answers: [], refused: 2, timeout: 0 });
    }
  });

  it('an externalIP and LB IP two Services claim goes to the older one, whatever their names, in every write', async () => {
    /** Service `key` created at `hour`, claiming 198.51.100.60 and 203.0.113.60 on port 80, endpoint `ep`. */
    const claimant = (key: string, n: number, hour: number, ep: ReturnType<typeof endpoint>) => {
      const s = service(key, {
        type: 'LoadBalancer',
        clusterIP: `10.96.1.${n}`,
        ports: [{ ...PORTS[0]!, nodePort: 30080 + n }],
        externalIPs: ['198.51.100.60'],
        loadBalancerIPs: ['203.0.113.60'],
      }) as { metadata: Record<string, unknown> };
      s.metadata.creationTimestamp = `2026-11-21T${String(hour).padStart(2, '0')}:00:00Z`;
      return [s, endpointSlice(key, EP_PORTS, [ep])];
    };
    // "a-newer" sorts first by name but was created later: "z-older" keeps both destinations.
    await c.sync([...claimant('demo/a-newer', 5, 11, LOCAL_EP), ...claimant('demo/z-older', 6, 9, REMOTE_EP)]);
    for (const host of ['198.51.100.60', '203.0.113.60']) expect(tally(await c.probe('client', 'tcp', host, 80, { count: 6 })), host).toEqual({ r1: 6 });
    // The newer one keeps what it does not share: its ClusterIP and NodePort.
    expect(tally(await c.probe('client', 'tcp', NODE1_EXT_IP, 30085, { count: 3 }))).toEqual({ l1: 3 });
    const { stderr } = await c.kproxy([
      'dry-run',
      '--from',
      c.writeObjects([...claimant('demo/a-newer', 5, 11, LOCAL_EP), ...claimant('demo/z-older', 6, 9, REMOTE_EP)]),
      '--proxy-mode',
      mode,
      '--hostname-override',
      'node-1',
    ]);
    expect(stderr).toContain('demo/a-newer:http also claims 198.51.100.60:80/TCP; demo/z-older:http keeps it');
  });
});
