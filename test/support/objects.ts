/**
 * Builders for Services, EndpointSlices and Nodes in the exact shape the API server serialises
 * (see test/fixtures/README.md), for scenarios the fixture cluster does not cover.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocuments } from '../../src/sources/file.ts';

export interface PortSpec {
  name?: string;
  port: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  nodePort?: number;
  targetPort?: number | string;
}

export interface ServiceOptions {
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  /** The primary ClusterIP; `clusterIPs` adds the other family's (dual-stack). */
  clusterIP: string;
  clusterIPs?: string[];
  ports: PortSpec[];
  externalIPs?: string[];
  loadBalancerIPs?: string[];
  loadBalancerSourceRanges?: string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  internalTrafficPolicy?: 'Cluster' | 'Local';
  healthCheckNodePort?: number;
  affinityTimeout?: number;
  labels?: Record<string, string>;
}

/** A core/v1 Service. `ns/name` is given as one string. */
export function service(key: string, o: ServiceOptions): Record<string, unknown> {
  const [namespace, name] = key.split('/');
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, ...(o.labels ? { labels: o.labels } : {}) },
    spec: {
      type: o.type ?? 'ClusterIP',
      clusterIP: o.clusterIP,
      clusterIPs: o.clusterIPs ?? [o.clusterIP],
      ipFamilies: (o.clusterIPs ?? [o.clusterIP]).map(familyOf),
      ipFamilyPolicy: (o.clusterIPs ?? []).length > 1 ? 'RequireDualStack' : 'SingleStack',
      ports: o.ports.map((p) => ({ protocol: 'TCP', targetPort: p.port, ...p })),
      ...(o.externalIPs ? { externalIPs: o.externalIPs } : {}),
      ...(o.loadBalancerSourceRanges ? { loadBalancerSourceRanges: o.loadBalancerSourceRanges } : {}),
      ...(o.externalTrafficPolicy ? { externalTrafficPolicy: o.externalTrafficPolicy } : {}),
      internalTrafficPolicy: o.internalTrafficPolicy ?? 'Cluster',
      ...(o.healthCheckNodePort ? { healthCheckNodePort: o.healthCheckNodePort } : {}),
      sessionAffinity: o.affinityTimeout ? 'ClientIP' : 'None',
      ...(o.affinityTimeout ? { sessionAffinityConfig: { clientIP: { timeoutSeconds: o.affinityTimeout } } } : {}),
    },
    status: { loadBalancer: o.loadBalancerIPs ? { ingress: o.loadBalancerIPs.map((ip) => ({ ip, ipMode: 'VIP' })) } : {} },
  };
}

export interface EndpointOptions {
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zone?: string;
  forZones?: string[];
  forNodes?: string[];
}

/** One endpoint of an EndpointSlice. */
export function endpoint(ip: string, o: EndpointOptions = {}): Record<string, unknown> {
  const conditions: Record<string, boolean> = {};
  if (o.ready !== undefined) conditions.ready = o.ready;
  if (o.serving !== undefined) conditions.serving = o.serving;
  if (o.terminating !== undefined) conditions.terminating = o.terminating;
  const hints: Record<string, unknown> = {};
  if (o.forZones) hints.forZones = o.forZones.map((name) => ({ name }));
  if (o.forNodes) hints.forNodes = o.forNodes.map((name) => ({ name }));
  return {
    addresses: [ip],
    conditions,
    ...(o.node ? { nodeName: o.node } : {}),
    ...(o.zone ? { zone: o.zone } : {}),
    ...(Object.keys(hints).length ? { hints } : {}),
  };
}

/** `IPv6` for an address with a colon, else `IPv4` (the API's IPFamily and AddressType values). */
export function familyOf(ip: string): 'IPv4' | 'IPv6' {
  return ip.includes(':') ? 'IPv6' : 'IPv4';
}

/**
 * A discovery.k8s.io/v1 EndpointSlice of Service `ns/name`; its addressType is that of the first
 * endpoint (IPv4 when there is none) unless given.
 */
export function endpointSlice(serviceKey: string, ports: PortSpec[], endpoints: Record<string, unknown>[], suffix = 'abcde', addressType?: 'IPv4' | 'IPv6'): Record<string, unknown> {
  const [namespace, name] = serviceKey.split('/');
  const first = (endpoints[0]?.addresses as string[] | undefined)?.[0];
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    addressType: addressType ?? (first ? familyOf(first) : 'IPv4'),
    metadata: { name: `${name}-${suffix}`, namespace, labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } },
    ports: ports.map((p) => ({ name: p.name ?? '', port: p.port, protocol: p.protocol ?? 'TCP' })),
    endpoints,
  };
}

/** A core/v1 Node. */
export function node(name: string, zone?: string, addresses: string[] = []): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, ...(zone ? { 'topology.kubernetes.io/zone': zone } : {}) } },
    status: { addresses: addresses.map((address) => ({ type: 'InternalIP', address })) },
  };
}

/** The fixture files shipped in examples/ (the fixture cluster of test/fixtures/README.md). */
export const EXAMPLES = join(import.meta.dirname, '../../examples');

/** The items of examples/cluster.yaml, parsed. */
export function fixtureItems(): Record<string, unknown>[] {
  const [list] = parseDocuments('cluster.yaml', readFileSync(join(EXAMPLES, 'cluster.yaml'), 'utf8')) as [{ items: Record<string, unknown>[] }];
  return list.items;
}

/**
 * One ClusterIP Service per name (`demo/<name>`, ClusterIP 10.96.3.<i+1>, port 80 → 8080), each
 * with one endpoint, 10.244.1.10 on node-1: the small cluster of the CLI lifecycle e2e tests.
 */
export function webServices(...names: string[]): Record<string, unknown>[] {
  return names.flatMap((n, i) => [
    service(`demo/${n}`, { clusterIP: `10.96.3.${i + 1}`, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
    endpointSlice(`demo/${n}`, [{ name: 'http', port: 8080 }], [endpoint('10.244.1.10', { node: 'node-1' })]),
  ]);
}

/** A Namespace with labels (and `kubernetes.io/metadata.name`, as the API server adds it). */
export function namespace(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } };
}

/** A running Pod `namespace/name` on `node` with addresses, labels and named container ports, as the API server serialises one. */
export function pod(
  key: string,
  o: {
    readonly ips: readonly string[];
    readonly node: string;
    readonly labels?: Record<string, string>;
    readonly ports?: readonly { name: string; port: number; protocol?: string }[];
    readonly hostNetwork?: boolean;
  },
): Record<string, unknown> {
  const [ns, name] = key.split('/');
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: ns, name, labels: o.labels ?? {} },
    spec: {
      nodeName: o.node,
      ...(o.hostNetwork ? { hostNetwork: true } : {}),
      containers: [{ name: 'c', image: 'agnhost', ports: (o.ports ?? []).map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol ?? 'TCP' })) }],
    },
    status: { phase: 'Running', podIP: o.ips[0], podIPs: o.ips.map((ip) => ({ ip })) },
  };
}

/** A NetworkPolicy `namespace/name` with the given spec. */
export function networkPolicy(key: string, spec: Record<string, unknown>): Record<string, unknown> {
  const [ns, name] = key.split('/');
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: ns, name }, spec };
}
