/**
 * Synthetic clusters for the benchmarks: N Services × E endpoints as the API server serialises
 * them (Service and EndpointSlice objects), fed through the real state store and planner.
 *
 * The mix, per 20 Services: 13 ClusterIP, 1 ClusterIP with ClientIP affinity, 3 NodePort and 3
 * LoadBalancer (one with loadBalancerSourceRanges); every other NodePort/LoadBalancer Service has
 * externalTrafficPolicy Local, and one in 50 Services internalTrafficPolicy Local. Endpoints are
 * spread over 100 nodes; the benchmark's node is `node-0`. Deterministic: no randomness.
 *
 * Dual-stack (`families` [4, 6]): every Service is RequireDualStack with a ClusterIP, an LB IP and
 * a source range per family, and has one EndpointSlice per family with E endpoints each (the same
 * pods: the k-th IPv6 endpoint is on the node of the k-th IPv4 one).
 * @module
 */
import type { RawObject } from '../src/sources/objects.ts';
import { planProxy, type ProxyConfig, type ProxyPlan } from '../src/planner/plan.ts';
import { parseCIDR, parseIP, type IPFamily } from '../src/state/ip.ts';
import { ProxyStateStore } from '../src/state/store.ts';

export const BENCH_NODE = 'node-0';
const NODES = 100;

export const BENCH_CONFIG: ProxyConfig = {
  family: 4,
  clusterCIDR: parseCIDR('10.64.0.0/10'),
  masqueradeAll: false,
  masqueradeBit: 14,
  nodePortAddresses: [],
  localAddresses: [parseIP('192.0.2.1')!, parseIP('2001:db8::1')!],
};

/** The benchmark's node configuration of one family. */
export function benchConfig(family: IPFamily): ProxyConfig {
  return family === 4 ? BENCH_CONFIG : { ...BENCH_CONFIG, family: 6, clusterCIDR: parseCIDR('fd00:10:64::/48') };
}

const ip = (base: number, i: number) => `${base + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
/** The last two groups of an IPv6 address numbered i (up to 2^32). */
const ip6 = (i: number) => `${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
const clusterIP = (i: number, family: IPFamily = 4) => (family === 6 ? `fd00:10:96::${ip6(i)}` : `10.${ip(96, i)}`);
const endpointIP = (j: number, family: IPFamily = 4) => (family === 6 ? `fd00:10:64::${ip6(j)}` : `10.${ip(64, j)}`);

/** One Service of the mix, of the given families (IPv4 first). */
export function benchService(i: number, families: readonly IPFamily[] = [4]): RawObject {
  const kind = i % 20;
  const type = kind >= 17 ? 'LoadBalancer' : kind >= 14 ? 'NodePort' : 'ClusterIP';
  const external = type !== 'ClusterIP';
  const spec: Record<string, unknown> = {
    type,
    clusterIP: clusterIP(i, families[0]),
    clusterIPs: families.map((f) => clusterIP(i, f)),
    ipFamilies: families.map((f) => `IPv${f}`),
    ipFamilyPolicy: families.length > 1 ? 'RequireDualStack' : 'SingleStack',
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, ...(external ? { nodePort: 10000 + Math.floor(i / 20) * 6 + (kind - 14) } : {}) }],
    sessionAffinity: kind === 13 ? 'ClientIP' : 'None',
    ...(kind === 13 ? { sessionAffinityConfig: { clientIP: { timeoutSeconds: 10800 } } } : {}),
    ...(external ? { externalTrafficPolicy: i % 2 === 0 ? 'Local' : 'Cluster' } : {}),
    internalTrafficPolicy: i % 50 === 7 ? 'Local' : 'Cluster',
    ...(type === 'LoadBalancer' && i % 2 === 0 ? { healthCheckNodePort: 40000 + Math.floor(i / 20) } : {}),
    ...(kind === 19 ? { loadBalancerSourceRanges: ['203.0.113.0/24', '198.51.100.0/24', ...(families.includes(6) ? ['2001:db8:100::/56'] : [])] } : {}),
  };
  const ingress = families.map((f) => ({ ip: f === 6 ? `2001:db8:f::${ip6(i)}` : `172.${ip(16, i)}` }));
  const status = type === 'LoadBalancer' ? { loadBalancer: { ingress } } : {};
  return { apiVersion: 'v1', kind: 'Service', metadata: { namespace: `ns${i % 100}`, name: `svc${i}`, uid: `uid-${i}`, resourceVersion: '1' }, spec, status };
}

/**
 * The EndpointSlice of Service i with `e` endpoints of `family`, the k-th on node (i + k) % 100.
 * @param generation changes the endpoints' addresses: a new generation is an endpoint change
 *   (keep it below 64: the first endpoint's address grows by 7919 per generation)
 */
export function benchSlice(i: number, e: number, generation = 0, family: IPFamily = 4): RawObject {
  const endpoints = Array.from({ length: e }, (_, k) => {
    const node = (i + k) % NODES;
    return {
      addresses: [endpointIP(i * e + k + (k === 0 ? generation * 7919 : 0), family)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${node}`,
      zone: `zone-${node % 3}`,
    };
  });
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: `ns${i % 100}`, name: `svc${i}-${family === 6 ? 'v6xyz' : 'abcde'}`, labels: { 'kubernetes.io/service-name': `svc${i}` }, resourceVersion: String(1 + generation) },
    addressType: `IPv${family}`,
    endpoints,
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
  };
}

/** The benchmark's own Node object (zone-0, 192.0.2.1 and 2001:db8::1). */
export function benchNode(): RawObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: BENCH_NODE, labels: { 'topology.kubernetes.io/zone': 'zone-0' } },
    status: {
      addresses: [
        { type: 'InternalIP', address: '192.0.2.1' },
        { type: 'InternalIP', address: '2001:db8::1' },
      ],
    },
  };
}

/** A store holding N Services with E endpoints each per family, and this node. */
export function benchStore(n: number, e: number, families: readonly IPFamily[] = [4]): ProxyStateStore {
  const store = new ProxyStateStore(BENCH_NODE);
  store.applyNode(benchNode());
  for (let i = 0; i < n; i++) {
    store.applyService(benchService(i, families));
    for (const f of families) store.applyEndpointSlice(benchSlice(i, e, 0, f));
  }
  return store;
}

/** Plans the whole store (the hot path's first half). */
export function benchPlan(store: ProxyStateStore): ProxyPlan {
  return planProxy(store.servicePortStates(), store.node, BENCH_CONFIG);
}
