/**
 * `--detect-local-mode` with real packets, in both modes: which sources count as this node's pods
 * decides whether ClusterIP traffic is masqueraded (the endpoint on node-2 sees the pod's address,
 * or node-1's) and whether an externalTrafficPolicy Local Service short-circuits a pod to its
 * Cluster endpoints. The test pods hang off node-1 on veths named p0, p1, …; the external client
 * comes in on ext0. test/e2e/oracle.test.ts compares the same modes' rules with upstream's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { CLIENT_IP, MODES, NODE1_IP, NODE2_IP, peers, tally, TestCluster } from './harness/cluster.ts';

const CIP = '10.96.7.1';
const objects = (podCIDRs: string[] = []) => {
  const n1 = node('node-1', 'zone-a', [NODE1_IP]) as { spec?: Record<string, unknown> };
  n1.spec = { podCIDRs };
  return [
    n1,
    node('node-2', 'zone-b', [NODE2_IP]),
    service('demo/web', { clusterIP: CIP, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
    endpointSlice('demo/web', [{ name: 'http', port: 8080 }], [endpoint('10.244.2.10', { node: 'node-2' })]),
    // eTP Local with no endpoint on node-1: only this node's pods (and the node) get through, to the Cluster endpoints.
    service('demo/local', {
      type: 'NodePort',
      clusterIP: '10.96.7.2',
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30780 }],
      externalIPs: ['198.51.100.70'],
      externalTrafficPolicy: 'Local',
    }),
    endpointSlice('demo/local', [{ name: 'http', port: 8080 }], [endpoint('10.244.2.10', { node: 'node-2' })]),
  ];
};

describe.each(MODES)('%s mode: --detect-local-mode', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'a', ip: '10.244.1.10', node: 'node-1' },
        { name: 'b', ip: '10.244.1.11', node: 'node-1' },
        { name: 'srv', ip: '10.244.2.10', node: 'node-2', tcp: [8080] },
      ],
      [],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** The source srv sees for a connection from `origin` to the ClusterIP, and whether `origin` gets through the eTP Local externalIP. */
  const seen = async (origin: string) => {
    const cluster = await c.probe(origin, 'tcp', CIP, 80, { count: 2 });
    expect(tally(cluster), `${origin} → ${CIP}`).toEqual({ srv: 2 });
    const external = await c.probe(origin, 'tcp', '198.51.100.70', 80, { count: 1, timeoutMs: 500 });
    return { source: peers(cluster), externalLocal: external.answers.length === 1 };
  };

  it('InterfaceNamePrefix: traffic that came in on a p* interface is a pod’s, kept; the client’s (ext0) is masqueraded', async () => {
    await c.sync(objects(), ['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'p']);
    expect(await seen('a')).toEqual({ source: ['10.244.1.10'], externalLocal: true });
    expect(await seen('b')).toEqual({ source: ['10.244.1.11'], externalLocal: true });
    expect(await seen('client')).toEqual({ source: [NODE1_IP], externalLocal: false });
  });

  it('BridgeInterface: only traffic from the named interface (p0, pod a) is a pod’s', async () => {
    await c.sync(objects(), ['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', 'p0']);
    expect(await seen('a')).toEqual({ source: ['10.244.1.10'], externalLocal: true });
    expect(await seen('b')).toEqual({ source: [NODE1_IP], externalLocal: false });
  });

  it("NodeCIDR: the Node's spec.podCIDRs; a Node without one has no detector, and nothing is masqueraded for its source", async () => {
    await c.sync(objects(['10.244.1.10/32']), ['--detect-local-mode', 'NodeCIDR', '--cluster-cidr', '10.244.0.0/16']);
    expect(await seen('a')).toEqual({ source: ['10.244.1.10'], externalLocal: true });
    expect(await seen('b')).toEqual({ source: [NODE1_IP], externalLocal: false });
    await c.sync(objects([]), ['--detect-local-mode', 'NodeCIDR', '--cluster-cidr', '10.244.0.0/16']);
    expect((await seen('b')).source).toEqual(['10.244.1.11']);
    expect((await seen('client')).source).toEqual([CLIENT_IP]);
  });

  it('writes rules a second sync leaves alone, and verify finds them as written', async () => {
    const flags = ['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'p'];
    // Without iptables-save's dated comment lines and its chains' packet counters.
    const rules = async () => (await c.rules()).replace(/^#.*$/gm, '').replace(/\[\d+:\d+\]/g, '');
    await c.sync(objects(), flags);
    const before = await rules();
    await c.sync(objects(), flags);
    expect(await rules()).toBe(before);
    const file = c.writeObjects(objects());
    const v = await c.kproxyResult(['verify', '--from', file, '--proxy-mode', mode, '--hostname-override', 'node-1', ...flags]);
    expect(v.exitCode, v.stdout).toBe(0);
  });
});
