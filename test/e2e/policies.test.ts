/**
 * Endpoint choice with real packets: sessionAffinity ClientIP, internalTrafficPolicy Local,
 * terminating-endpoint fallback (computed separately for the Cluster and the Local set) and
 * topology hints (zone, node). Expected behaviour: upstream kube-proxy's (pkg/proxy/iptables/proxier_test.go,
 * pkg/proxy/topology_test.go).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { NODE1_EXT_IP, tally, MODES, TestCluster } from './harness/cluster.ts';

const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const EP_PORTS = [{ name: 'http', port: 8080 }];
const L1 = '10.244.1.10';
const L2 = '10.244.1.11';
const R1 = '10.244.2.10';
const R2 = '10.244.2.11';

describe.each(MODES)('%s mode: endpoint selection policies', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'l1', ip: L1, node: 'node-1', tcp: [8080] },
        { name: 'l2', ip: L2, node: 'node-1', tcp: [8080] },
        { name: 'r1', ip: R1, node: 'node-2', tcp: [8080] },
        { name: 'r2', ip: R2, node: 'node-2', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
        { name: 'src2', ip: '10.244.1.98', node: 'node-1' },
      ],
      [],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  const all = () => [endpoint(L1, { node: 'node-1' }), endpoint(L2, { node: 'node-1' }), endpoint(R1, { node: 'node-2' }), endpoint(R2, { node: 'node-2' })];

  it('sessionAffinity ClientIP: every new connection from a client reaches the same endpoint', async () => {
    await c.sync([service('demo/sticky', { clusterIP: '10.96.2.1', ports: PORTS, affinityTimeout: 600 }), endpointSlice('demo/sticky', EP_PORTS, all())]);
    for (const origin of ['src', 'src2']) {
      const r = await c.probe(origin, 'tcp', '10.96.2.1', 80, { count: 30 });
      expect(r.answers).toHaveLength(30);
      expect(Object.keys(tally(r)), origin).toHaveLength(1);
    }
  });

  it('internalTrafficPolicy Local: ClusterIP traffic stays on this node; NodePorts are not affected', async () => {
    await c.sync([
      service('demo/itp', { type: 'NodePort', clusterIP: '10.96.2.2', ports: [{ ...PORTS[0]!, nodePort: 30200 }], internalTrafficPolicy: 'Local' }),
      endpointSlice('demo/itp', EP_PORTS, all()),
    ]);
    const r = await c.probe('src', 'tcp', '10.96.2.2', 80, { count: 40 });
    expect(Object.keys(tally(r)).sort()).toEqual(['l1', 'l2']);
    const np = await c.probe('client', 'tcp', NODE1_EXT_IP, 30200, { count: 60 });
    expect(Object.keys(tally(np)).sort()).toEqual(['l1', 'l2', 'r1', 'r2']);
  });

  it('internalTrafficPolicy Local without a local endpoint DROPs ClusterIP traffic', async () => {
    await c.sync([service('demo/itp', { clusterIP: '10.96.2.2', ports: PORTS, internalTrafficPolicy: 'Local' }), endpointSlice('demo/itp', EP_PORTS, [endpoint(R1, { node: 'node-2' })])]);
    const r = await c.probe('src', 'tcp', '10.96.2.2', 80, { count: 2, timeoutMs: 500 });
    expect(r).toMatchObject({ answers: [], timeout: 2, refused: 0 });
  });

  it('falls back to serving terminating endpoints only when none is ready', async () => {
    const svc = service('demo/term', { clusterIP: '10.96.2.3', ports: PORTS });
    await c.sync([svc, endpointSlice('demo/term', EP_PORTS, [endpoint(L1, { node: 'node-1', ready: true }), endpoint(R1, { node: 'node-2', ready: false, serving: true, terminating: true })])]);
    expect(tally(await c.probe('src', 'tcp', '10.96.2.3', 80, { count: 20 }))).toEqual({ l1: 20 });

    await c.sync([
      svc,
      endpointSlice('demo/term', EP_PORTS, [
        endpoint(L1, { node: 'node-1', ready: false, serving: true, terminating: true }),
        endpoint(R1, { node: 'node-2', ready: false, serving: true, terminating: true }),
        endpoint(R2, { node: 'node-2', ready: false, serving: false, terminating: true }),
      ]),
    ]);
    expect(Object.keys(tally(await c.probe('src', 'tcp', '10.96.2.3', 80, { count: 40 }))).sort()).toEqual(['l1', 'r1']);

    await c.sync([svc, endpointSlice('demo/term', EP_PORTS, [endpoint(R2, { node: 'node-2', ready: false, serving: false, terminating: true })])]);
    expect(await c.probe('src', 'tcp', '10.96.2.3', 80, { count: 2 })).toMatchObject({ answers: [], refused: 2 });
  });

  it('the Local set falls back on its own: eTP Local uses a terminating local endpoint while ClusterIP uses ready remote ones', async () => {
    await c.sync([
      service('demo/drain', { type: 'NodePort', clusterIP: '10.96.2.4', ports: [{ ...PORTS[0]!, nodePort: 30204 }], externalTrafficPolicy: 'Local' }),
      endpointSlice('demo/drain', EP_PORTS, [
        endpoint(L1, { node: 'node-1', ready: false, serving: true, terminating: true }),
        endpoint(L2, { node: 'node-1', ready: false, serving: false, terminating: true }),
        endpoint(R1, { node: 'node-2', ready: true }),
      ]),
    ]);
    expect(tally(await c.probe('client', 'tcp', NODE1_EXT_IP, 30204, { count: 20 }))).toEqual({ l1: 20 });
    expect(tally(await c.probe('src', 'tcp', '10.96.2.4', 80, { count: 20 }))).toEqual({ r1: 20 });
  });

  it("zone hints narrow the Cluster set to this node's zone, and are ignored when an endpoint lacks one", async () => {
    const svc = service('demo/zoned', { clusterIP: '10.96.2.5', ports: PORTS });
    const hinted = [
      endpoint(L1, { node: 'node-1', zone: 'zone-a', forZones: ['zone-a'] }),
      endpoint(R1, { node: 'node-2', zone: 'zone-b', forZones: ['zone-b'] }),
      endpoint(R2, { node: 'node-2', zone: 'zone-a', forZones: ['zone-a'] }),
    ];
    await c.sync([node('node-1', 'zone-a'), svc, endpointSlice('demo/zoned', EP_PORTS, hinted)]);
    expect(Object.keys(tally(await c.probe('src', 'tcp', '10.96.2.5', 80, { count: 40 }))).sort()).toEqual(['l1', 'r2']);

    await c.sync([node('node-1', 'zone-a'), svc, endpointSlice('demo/zoned', EP_PORTS, [...hinted, endpoint(L2, { node: 'node-1' })])]);
    expect(Object.keys(tally(await c.probe('src', 'tcp', '10.96.2.5', 80, { count: 80 }))).sort()).toEqual(['l1', 'l2', 'r1', 'r2']);

    // Without the node's zone label the hints cannot apply.
    await c.sync([node('node-1'), svc, endpointSlice('demo/zoned', EP_PORTS, hinted)]);
    expect(Object.keys(tally(await c.probe('src', 'tcp', '10.96.2.5', 80, { count: 60 }))).sort()).toEqual(['l1', 'r1', 'r2']);
  });

  it('node hints (PreferSameNode) keep traffic on the hinted node', async () => {
    await c.sync([
      service('demo/same-node', { clusterIP: '10.96.2.6', ports: PORTS }),
      endpointSlice('demo/same-node', EP_PORTS, [endpoint(L1, { node: 'node-1', forNodes: ['node-1'] }), endpoint(R1, { node: 'node-2', forNodes: ['node-2'] })]),
    ]);
    expect(tally(await c.probe('src', 'tcp', '10.96.2.6', 80, { count: 20 }))).toEqual({ l1: 20 });
  });
});
