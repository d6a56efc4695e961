/**
 * The normalised Service and endpoint model: what the planner reads. Every value here has been
 * validated (names are DNS labels, IPs and CIDRs parsed, ports in range), so renderers may write
 * them into rules as they are.
 *
 * The unit of proxying is the service port, as in upstream kube-proxy's `ServicePortName`
 * (pkg/proxy/types.go): `namespace/name:portName` plus protocol.
 * @module
 */
import type { CIDR, IPAddress, IPFamily } from './ip.ts';

/** Transport protocols a Service port may use. */
export type Protocol = 'TCP' | 'UDP' | 'SCTP';

/** externalTrafficPolicy / internalTrafficPolicy values. */
export type TrafficPolicy = 'Cluster' | 'Local';

/** One port of one Service, with everything needed to route traffic to it. */
export interface ServicePort {
  /** `namespace/name`. */
  readonly serviceKey: string;
  /** `namespace/name:portName`, or `namespace/name` for an unnamed port (ServicePortName.String()). */
  readonly name: string;
  readonly portName: string;
  readonly protocol: Protocol;
  /** The Service port (spec.ports[].port), 1–65535. */
  readonly port: number;
  /** 0 when the Service has no NodePort. */
  readonly nodePort: number;
  /** At most one ClusterIP per family (spec.clusterIPs). */
  readonly clusterIPs: readonly IPAddress[];
  readonly externalIPs: readonly IPAddress[];
  /** status.loadBalancer.ingress[].ip whose ipMode is VIP or unset (type LoadBalancer only). */
  readonly loadBalancerIPs: readonly IPAddress[];
  readonly loadBalancerSourceRanges: readonly CIDR[];
  /** sessionAffinity ClientIP timeout in seconds; undefined when sessionAffinity is None. */
  readonly affinityTimeoutSeconds: number | undefined;
  readonly externalTrafficPolicy: TrafficPolicy;
  readonly internalTrafficPolicy: TrafficPolicy;
  /** 0 unless the Service is a LoadBalancer with externalTrafficPolicy Local. */
  readonly healthCheckNodePort: number;
  /**
   * The Service's `metadata.creationTimestamp` in ms since the epoch; undefined when absent or not
   * a time. When Services claim the same destination, the oldest wins (see planner/frontends.ts).
   */
  readonly createdAt: number | undefined;
}

/** A Service with its ports (Services with no ports, headless and ExternalName ones never get here). */
export interface Service {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly ports: readonly ServicePort[];
}

/** One endpoint port of an EndpointSlice. `name` is '' for an unnamed port. */
export interface SlicePort {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

/**
 * One endpoint (the first address of an EndpointSlice endpoint), with its conditions. In a slice with exactly one port, each is stored in its merged
 * form, also an {@link Endpoint} with that port and `hostPort`, so the service-port states share
 * it instead of holding a copy (100k endpoints: 7.6 MiB less heap).
 */
export interface SliceEndpoint {
  readonly ip: IPAddress;
  /** conditions.ready; a missing value means true. */
  readonly ready: boolean;
  /** conditions.serving; a missing value means true. */
  readonly serving: boolean;
  /** conditions.terminating; a missing value means false. */
  readonly terminating: boolean;
  readonly nodeName: string | undefined;
  readonly zone: string | undefined;
  readonly zoneHints: readonly string[];
  readonly nodeHints: readonly string[];
}

/** A validated EndpointSlice. */
export interface EndpointSlice {
  /** `namespace/sliceName`. */
  readonly key: string;
  /** `namespace/serviceName`, from the `kubernetes.io/service-name` label. */
  readonly serviceKey: string;
  readonly family: IPFamily;
  readonly ports: readonly SlicePort[];
  readonly endpoints: readonly SliceEndpoint[];
}

/** An endpoint of one service port, after merging the slices: what the planner load-balances over. */
export interface Endpoint {
  readonly ip: IPAddress;
  readonly port: number;
  /** `ip:port` (`[ip]:port` for IPv6); endpoints are ordered by this string, as upstream does. */
  readonly hostPort: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName: string | undefined;
  /** The endpoint's `zone` (shown by `kproxy explain`; the planner reads the hints, not this). */
  readonly zone: string | undefined;
  readonly zoneHints: readonly string[];
  readonly nodeHints: readonly string[];
}

/** This node, as far as the proxy cares. */
export interface NodeInfo {
  readonly name: string;
  /** `topology.kubernetes.io/zone` label, if set. */
  readonly zone: string | undefined;
  /** InternalIP and ExternalIP addresses from status.addresses. */
  readonly addresses: readonly IPAddress[];
  /** `spec.podCIDRs` (or the older `spec.podCIDR`): the NodeCIDR local-traffic detector's CIDRs. */
  readonly podCIDRs: readonly CIDR[];
  /**
   * The node is going away: it has a deletionTimestamp or the cluster autoscaler's
   * `ToBeDeletedByClusterAutoscaler` taint. `/healthz` then answers 503 so load balancers drain
   * it (KEP-3836; upstream pkg/proxy/healthcheck/proxy_health.go).
   */
  readonly deleting: boolean;
}

/** A service port with its merged endpoints: the planner's input, one per service port. */
export interface ServicePortState {
  readonly servicePort: ServicePort;
  /** Sorted by `hostPort`, duplicates merged (a local copy wins). */
  readonly endpoints: readonly Endpoint[];
}

/** A problem with one input object, as data. The object was skipped (or, for an endpoint, that endpoint). */
export interface InputIssue {
  readonly kind: 'Service' | 'EndpointSlice' | 'Node' | 'ServiceCIDR' | 'NetworkPolicy' | 'Pod' | 'Namespace';
  /** `namespace/name` as far as it could be read (quoted when not a valid name). */
  readonly object: string;
  /** JSON-path-like field, e.g. `spec.ports[1].protocol`. */
  readonly field: string;
  readonly message: string;
  /** What was dropped: the whole object, or one element of it. */
  readonly skipped: 'object' | 'endpoint' | 'rules';
}

/**
 * The outcome of normalising one object: usable, deliberately not proxied (headless, ExternalName,
 * claimed by another proxy, …), or invalid. `key` is `namespace/name` when it could be read, so an
 * earlier version can be removed. `issues` on `ok` lists parts that were dropped (bad endpoints).
 */
export type NormaliseResult<T> =
  | { readonly status: 'ok'; readonly value: T; readonly issues: readonly InputIssue[] }
  | { readonly status: 'ignored'; readonly key: string | undefined; readonly reason: string }
  | { readonly status: 'invalid'; readonly key: string | undefined; readonly issue: InputIssue };
