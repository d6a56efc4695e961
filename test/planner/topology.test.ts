import { describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { plan } from '../support/pipeline.ts';

const ports = [{ name: 'p80', port: 80 }];
const ips = (eps: readonly { ip: string }[]) => eps.map((e) => e.ip);

describe('endpoint categorisation (pkg/proxy/topology.go)', () => {
  // TestTerminatingEndpointsTrafficPolicyLocal, pkg/proxy/iptables/proxier_test.go
  const lbLocal = () =>
    service('ns1/svc1', { type: 'LoadBalancer', clusterIP: '172.30.1.1', ports: [{ ...ports[0]!, nodePort: 30001 }], loadBalancerIPs: ['1.2.3.4'], externalTrafficPolicy: 'Local' });
  it('(13a) ready endpoints: Cluster {.1,.2,.5}, Local {.1,.2}', () => {
    const p = plan([
      lbLocal(),
      endpointSlice('ns1/svc1', ports, [
        endpoint('10.0.1.1', { node: 'test-node' }),
        endpoint('10.0.1.2', { node: 'test-node' }),
        endpoint('10.0.1.3', { node: 'test-node', ready: false, serving: true, terminating: true }),
        endpoint('10.0.1.4', { node: 'test-node', ready: false, serving: false, terminating: true }),
        endpoint('10.0.1.5', { node: 'node-1' }),
      ]),
    ]).servicePorts[0]!;
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.1.1', '10.0.1.2', '10.0.1.5']);
    expect(ips(p.localEndpoints)).toEqual(['10.0.1.1', '10.0.1.2']);
  });
  it('(13b) local falls back to serving-terminating while Cluster keeps the ready remote one', () => {
    const p = plan([
      lbLocal(),
      endpointSlice('ns1/svc1', ports, [
        endpoint('10.0.1.2', { node: 'test-node', ready: false, serving: true, terminating: true }),
        endpoint('10.0.1.3', { node: 'test-node', ready: false, serving: true, terminating: true }),
        endpoint('10.0.1.4', { node: 'test-node', ready: false, serving: false, terminating: true }),
        endpoint('10.0.1.5', { node: 'node-1' }),
      ]),
    ]).servicePorts[0]!;
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.1.5']);
    expect(ips(p.localEndpoints)).toEqual(['10.0.1.2', '10.0.1.3']);
    expect(ips(p.reachableEndpoints)).toEqual(['10.0.1.2', '10.0.1.3', '10.0.1.5']);
  });
  it('(13c) only a remote serving-terminating endpoint: external traffic is dropped', () => {
    const p = plan([lbLocal(), endpointSlice('ns1/svc1', ports, [endpoint('10.0.1.5', { node: 'node-1', ready: false, serving: true, terminating: true })])]).servicePorts[0]!;
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.1.5']);
    expect(p.externalNoEndpoints).toBe('DROP');
    expect(p.internalNoEndpoints).toBeUndefined();
  });
  it('(13d) only not-serving endpoints: everything is rejected', () => {
    const p = plan([lbLocal(), endpointSlice('ns1/svc1', ports, [endpoint('10.0.1.4', { node: 'test-node', ready: false, serving: false, terminating: true })])]).servicePorts[0]!;
    expect(p).toMatchObject({ internalNoEndpoints: 'REJECT', externalNoEndpoints: 'REJECT', reachableEndpoints: [] });
  });

  // KEP-2433, pkg/proxy/topology_test.go
  const zoned = (hints: (string | undefined)[]) => [
    node('test-node', 'zone-a'),
    service('ns1/svc1', { clusterIP: '172.30.1.1', ports }),
    endpointSlice(
      'ns1/svc1',
      ports,
      hints.map((z, i) => endpoint(`10.0.1.${i + 1}`, z ? { forZones: [z] } : {})),
    ),
  ];
  it('(18) zone hints apply only when every ready endpoint has one and one is for this zone', () => {
    expect(ips(plan(zoned(['zone-a', 'zone-b', 'zone-a'])).servicePorts[0]!.clusterEndpoints)).toEqual(['10.0.1.1', '10.0.1.3']);
    expect(ips(plan(zoned(['zone-a', undefined, 'zone-a'])).servicePorts[0]!.clusterEndpoints)).toHaveLength(3);
    expect(ips(plan(zoned(['zone-b', 'zone-c'])).servicePorts[0]!.clusterEndpoints)).toHaveLength(2);
    expect(ips(plan(zoned(['zone-a', 'zone-b']).slice(1)).servicePorts[0]!.clusterEndpoints)).toHaveLength(2); // no Node: no zone
  });

  // TestInternalTrafficPolicy, scenario 11
  it('(11) iTP Local: local endpoints only; none local → DROP; none at all → REJECT', () => {
    const svc = service('ns1/svc1', { clusterIP: '172.30.1.1', ports, internalTrafficPolicy: 'Local' });
    const eps = [endpoint('10.0.1.1', { node: 'test-node' }), endpoint('10.0.1.2', { node: 'node1' })];
    expect(ips(plan([svc, endpointSlice('ns1/svc1', ports, eps)]).servicePorts[0]!.localEndpoints)).toEqual(['10.0.1.1']);
    const none = plan([svc, endpointSlice('ns1/svc1', ports, eps.slice(1))]);
    expect(none.servicePorts[0]!.internalNoEndpoints).toBe('DROP');
    expect(none.noLocalEndpointsInternal).toBe(1);
    expect(plan([svc]).servicePorts[0]!.internalNoEndpoints).toBe('REJECT');
  });
});
