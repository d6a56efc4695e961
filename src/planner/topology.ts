/**
 * Which endpoints a service port's traffic may go to on this node: the Cluster set, the Local
 * set, and their union. A port of upstream's `CategorizeEndpoints` and `topologyModeFromHints`
 * (pkg/proxy/topology.go; KEP-1669 terminating endpoints, KEP-2433 topology-aware routing,
 * KEP-3015 PreferSameNode):
 *
 * - The Cluster set uses ready endpoints; if none is ready anywhere, serving-and-terminating ones.
 *   Topology hints narrow it when every ready endpoint has hints and at least one is for this node
 *   (node hints) or this node's zone (zone hints).
 * - The Local set uses this node's ready endpoints; if none, its serving-and-terminating ones.
 *   It ignores hints.
 * - The two are computed independently, so a node may fall back to terminating local endpoints
 *   while the Cluster set still has ready ones elsewhere.
 * @module
 */
import type { Endpoint, ServicePort } from '../state/model.ts';

/** The endpoint sets of one service port, each sorted by `ip:port`. */
export interface EndpointSets {
  readonly cluster: readonly Endpoint[];
  readonly local: readonly Endpoint[];
  /** Union of the sets in use: every endpoint that gets a KUBE-SEP chain. */
  readonly reachable: readonly Endpoint[];
  /** True when any usable (ready, or serving-terminating) endpoint exists anywhere. */
  readonly hasAny: boolean;
}

/** True when the port accepts traffic from outside: a NodePort, external IPs or load-balancer IPs. */
export function externallyAccessible(sp: ServicePort): boolean {
  return sp.nodePort !== 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0;
}

/** externalTrafficPolicy Local, on a port that has external destinations at all. */
export function externalPolicyLocal(sp: ServicePort): boolean {
  return externallyAccessible(sp) && sp.externalTrafficPolicy === 'Local';
}

/** internalTrafficPolicy Local. */
export function internalPolicyLocal(sp: ServicePort): boolean {
  return sp.internalTrafficPolicy === 'Local';
}

/** Cluster endpoints are needed for iTP Cluster, and for any external access (even eTP Local short-circuits pods to them). */
export function usesClusterEndpoints(sp: ServicePort): boolean {
  return !internalPolicyLocal(sp) || externallyAccessible(sp);
}

/** Local endpoints are needed for iTP Local or eTP Local. */
export function usesLocalEndpoints(sp: ServicePort): boolean {
  return internalPolicyLocal(sp) || externalPolicyLocal(sp);
}

export type TopologyMode = 'none' | 'zone' | 'node';

/**
 * Categorises a service port's endpoints for this node.
 * @param endpoints sorted by `ip:port` (the store's order); the order is kept
 * @param nodeName this node's name; an endpoint is local when its nodeName equals it
 * @param zone this node's `topology.kubernetes.io/zone`, or undefined
 */
export function categorizeEndpoints(sp: ServicePort, endpoints: readonly Endpoint[], nodeName: string, zone: string | undefined): EndpointSets {
  let cluster: Endpoint[] = [];
  let hasAny = false;
  if (usesClusterEndpoints(sp)) {
    const mode = topologyMode(endpoints, nodeName, zone);
    const fits = (e: Endpoint) => mode === 'none' || (mode === 'zone' ? zone !== undefined && e.zoneHints.includes(zone) : e.nodeHints.includes(nodeName));
    cluster = endpoints.filter((e) => e.ready && fits(e));
    if (cluster.length === 0) cluster = endpoints.filter((e) => e.serving && e.terminating && fits(e));
    hasAny = cluster.length > 0;
  }
  if (!usesLocalEndpoints(sp)) return { cluster, local: [], reachable: cluster, hasAny };

  let localReady = false;
  let localServingTerminating = false;
  for (const e of endpoints) {
    const local = e.nodeName === nodeName;
    if (e.ready) {
      hasAny = true;
      localReady ||= local;
    } else if (e.serving && e.terminating) {
      hasAny = true;
      localServingTerminating ||= local;
    }
  }
  let local: Endpoint[] = [];
  if (localReady) local = endpoints.filter((e) => e.nodeName === nodeName && e.ready);
  else if (localServingTerminating) local = endpoints.filter((e) => e.nodeName === nodeName && e.serving && e.terminating);

  if (!usesClusterEndpoints(sp) || cluster.length === 0) return { cluster, local, reachable: local, hasAny };
  const inCluster = new Set(cluster);
  const extra = local.filter((e) => !inCluster.has(e));
  const reachable = extra.length === 0 ? cluster : [...cluster, ...extra].sort((a, b) => (a.hostPort < b.hostPort ? -1 : 1));
  return { cluster, local, reachable, hasAny };
}

/**
 * Whether topology hints narrow the Cluster set on this node: `node` when every ready endpoint has
 * node hints and one is for this node (KEP-3015), else `zone` likewise for its zone, else `none`.
 */
export function topologyMode(endpoints: readonly Endpoint[], nodeName: string, zone: string | undefined): TopologyMode {
  let allNodeHints = true;
  let forNode = false;
  let allZoneHints = true;
  let forZone = false;
  for (const e of endpoints) {
    if (!e.ready) continue;
    if (e.nodeHints.length === 0) allNodeHints = false;
    else if (e.nodeHints.includes(nodeName)) forNode = true;
    if (e.zoneHints.length === 0) allZoneHints = false;
    else if (zone !== undefined && e.zoneHints.includes(zone)) forZone = true;
  }
  if (allNodeHints && forNode) return 'node';
  if (allZoneHints && forZone) return 'zone';
  return 'none';
}
