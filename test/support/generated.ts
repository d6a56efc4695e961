/**
 * Generated clusters for the oracles (test/e2e/oracle.test.ts, oracle-nft.test.ts): Services of
 * every type and policy, source ranges, affinity, terminating endpoints and zone hints, with unique
 * names, ClusterIPs and destinations, as API objects.
 */
import fc from 'fast-check';
import { endpoint, endpointSlice, service, type EndpointOptions } from './objects.ts';

/** The namespaces the clusters use. */
export const NAMESPACES = ['kube-system', 'shop', 'infra', 'ns-a', 'ns-b'];

/** One generated Service: type, ports, policies, source ranges, affinity, hints and endpoints. */
export interface GenService {
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  ports: { proto: 'TCP' | 'UDP' | 'SCTP'; port: number }[];
  externalIP: boolean;
  ranges: '' | 'others' | 'node';
  etp: 'Cluster' | 'Local';
  itp: 'Cluster' | 'Local';
  affinity: number;
  hints: boolean;
  endpoints: { node: '' | 'node-1' | 'node-2'; state: 'ready' | 'terminating' | 'gone'; zone: 'zone-a' | 'zone-b' }[];
}

/** fast-check generator of {@link GenService}. */
export const genService: fc.Arbitrary<GenService> = fc.record({
  type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer'),
  ports: fc.uniqueArray(fc.record({ proto: fc.constantFrom('TCP', 'UDP', 'SCTP'), port: fc.constantFrom(53, 80, 443, 8080) }), { minLength: 1, maxLength: 2, selector: (p) => `${p.proto}${p.port}` }),
  externalIP: fc.boolean(),
  ranges: fc.constantFrom('', 'others', 'node'),
  etp: fc.constantFrom('Cluster', 'Local'),
  itp: fc.constantFrom('Cluster', 'Local'),
  affinity: fc.constantFrom(0, 0, 600),
  hints: fc.boolean(),
  endpoints: fc.array(fc.record({ node: fc.constantFrom('', 'node-1', 'node-2'), state: fc.constantFrom('ready', 'ready', 'terminating', 'gone'), zone: fc.constantFrom('zone-a', 'zone-b') }), {
    maxLength: 4,
  }),
});

/** API objects for generated Services: unique names, ClusterIPs and destinations (no sharing). */
export function objectsOf(services: readonly GenService[]): object[] {
  return services.flatMap((g, i) => {
    const key = `${i % 2 === 0 ? 'ns-a' : 'ns-b'}/s${i}`;
    const ports = g.ports.map((p, j) => ({ name: `p${j}`, port: p.port, protocol: p.proto, targetPort: 8000 + p.port }));
    const external = g.type !== 'ClusterIP';
    const svc = service(key, {
      type: g.type,
      clusterIP: `10.96.1.${10 + i}`,
      ports,
      ...(g.externalIP ? { externalIPs: [`198.51.100.${10 + i}`] } : {}),
      ...(g.type === 'LoadBalancer' ? { loadBalancerIPs: [`203.0.113.${10 + i}`] } : {}),
      ...(g.type === 'LoadBalancer' && g.ranges ? { loadBalancerSourceRanges: [g.ranges === 'node' ? '192.0.2.0/24' : '198.18.0.0/24'] } : {}),
      ...(external ? { externalTrafficPolicy: g.etp } : {}),
      internalTrafficPolicy: g.itp,
      ...(g.affinity ? { affinityTimeout: g.affinity } : {}),
    }) as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
    // v1.26 has no such field; the API server would drop it anyway.
    delete (svc as { status?: unknown }).status;
    if (g.type === 'LoadBalancer') (svc as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: `203.0.113.${10 + i}` }] } };
    if (g.type !== 'LoadBalancer') for (const p of svc.spec.ports as { nodePort?: number }[]) delete p.nodePort;
    if (g.hints) svc.metadata.annotations = { 'service.kubernetes.io/topology-aware-hints': 'auto' };
    const eps = g.endpoints.map((e, j) => {
      const o: EndpointOptions = { ...(e.node ? { node: e.node } : {}), ready: e.state === 'ready', serving: e.state !== 'gone', terminating: e.state !== 'ready', zone: e.zone };
      return endpoint(`10.244.${e.node === 'node-2' ? 2 : 1}.${10 + i * 5 + j}`, g.hints ? { ...o, forZones: [e.zone] } : o);
    });
    return [
      svc,
      endpointSlice(
        key,
        ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
        eps,
      ),
    ];
  });
}
