/**
 * The planner: state + node configuration in, the desired proxy behaviour out. Pure: no I/O,
 * no clock, no randomness; the same input gives the same plan.
 *
 * The plan is backend-neutral: it says, per service port and IP family, which endpoint sets the
 * internal (ClusterIP) and external (NodePort, externalIPs, load-balancer IPs) traffic uses, what
 * is rejected or dropped, and what is masqueraded. The decisions are upstream kube-proxy's
 * (pkg/proxy/iptables/proxier.go `syncProxyRules`, shared by the nftables proxier):
 *
 * - no usable endpoint anywhere → REJECT every destination of the port;
 * - internalTrafficPolicy Local with no local endpoint → DROP ClusterIP traffic;
 * - externalTrafficPolicy Local with no local endpoint → DROP external traffic that is not
 *   short-circuited (pod or node sources still reach the Cluster set);
 * - loadBalancerSourceRanges filter only load-balancer IPs, never NodePorts;
 * - a destination two Services claim goes to the oldest (frontends.ts): upstream leaves it to
 *   rule order, which its iptables mode randomises.
 * @module
 */
import { cidrContains, isLoopback, type CIDR, type IPAddress, type IPFamily } from '../state/ip.ts';
import type { Endpoint, NodeInfo, Protocol, ServicePort, ServicePortState } from '../state/model.ts';
import { IdentityCache } from './cache.ts';
import { FrontendMemo, resolveFrontends, type FrontendConflict } from './frontends.ts';
import { categorizeEndpoints, externalPolicyLocal, externallyAccessible, internalPolicyLocal } from './topology.ts';

/** Node-level proxy configuration (kube-proxy's flags). */
export interface ProxyConfig {
  /** The family this plan is for; objects and addresses of the other family are left out. */
  readonly family: IPFamily;
  /**
   * Pod CIDR of this family for the ClusterCIDR local-traffic detector (`--cluster-cidr`);
   * undefined: no detector (upstream `detect-local-mode` ClusterCIDR with an empty cluster CIDR).
   */
  readonly clusterCIDR: CIDR | undefined;
  /** `--masquerade-all`: masquerade all ClusterIP traffic, not only that from outside the pod CIDRs. */
  readonly masqueradeAll: boolean;
  /** `--iptables-masquerade-bit` (0–31); upstream default 14, i.e. mark 0x4000. */
  readonly masqueradeBit: number;
  /** `--nodeport-addresses`: NodePorts answer only on local addresses in these CIDRs; empty: all. */
  readonly nodePortAddresses: readonly CIDR[];
  /**
   * `--nodeport-addresses primary` (KEP-3866): NodePorts answer only on this node's primary IP of
   * the family, its Node's first address of it; a Node without one gives every address, as
   * upstream's (pkg/proxy/util/nodeport_addresses.go).
   */
  readonly nodePortPrimary?: boolean;
  /** Addresses of this node's interfaces, used to resolve `nodePortAddresses`. */
  readonly localAddresses: readonly IPAddress[];
  /** `--detect-local-mode` and its interface flags; absent: ClusterCIDR, with {@link clusterCIDR}. */
  readonly detectLocal?: LocalDetection;
}

/**
 * `--detect-local-mode`: how traffic from this node's pods is told apart from other traffic
 * (upstream pkg/proxy/util/localdetector.go; cmd/kube-proxy/app/server.go getLocalDetectors).
 * ClusterCIDR: the source is in `--cluster-cidr`; NodeCIDR: in this node's `spec.podCIDRs`;
 * BridgeInterface: the packet came in on `--pod-bridge-interface`; InterfaceNamePrefix: on an
 * interface whose name starts with `--pod-interface-name-prefix`.
 */
export type LocalDetection =
  { readonly mode: 'ClusterCIDR' } | { readonly mode: 'NodeCIDR' } | { readonly mode: 'BridgeInterface'; readonly bridge: string } | { readonly mode: 'InterfaceNamePrefix'; readonly prefix: string };

/** The local-traffic detector of one family's rules: what "from a pod on this node" matches. */
export type LocalDetector = { readonly kind: 'cidr'; readonly cidr: string } | { readonly kind: 'interface'; readonly name: string } | { readonly kind: 'interfacePrefix'; readonly prefix: string };

/**
 * The detector `config` gives for its family on `node`; undefined when there is none (ClusterCIDR
 * without a cluster CIDR of the family, or NodeCIDR on a node without a pod CIDR of it), as
 * upstream's no-op detector: then nothing is masqueraded for coming from outside the pod network.
 */
export function localDetector(config: Pick<ProxyConfig, 'family' | 'clusterCIDR' | 'detectLocal'>, node: Pick<NodeInfo, 'podCIDRs'>): LocalDetector | undefined {
  const d = config.detectLocal ?? { mode: 'ClusterCIDR' };
  switch (d.mode) {
    case 'ClusterCIDR':
      return config.clusterCIDR ? { kind: 'cidr', cidr: config.clusterCIDR.text } : undefined;
    case 'NodeCIDR': {
      const own = node.podCIDRs.find((c) => c.family === config.family);
      return own ? { kind: 'cidr', cidr: own.text } : undefined;
    }
    case 'BridgeInterface':
      return { kind: 'interface', name: d.bridge };
    case 'InterfaceNamePrefix':
      return { kind: 'interfacePrefix', prefix: d.prefix };
  }
}

/** The detector as part of a render cache key ('' for none). */
export function detectorKey(d: LocalDetector | undefined): string {
  return d === undefined ? '' : `${d.kind}:${d.kind === 'cidr' ? d.cidr : d.kind === 'interface' ? d.name : d.prefix}`;
}

/** A detector in words, for messages: `10.244.0.0/16`, `interface cbr0`, `an interface named veth*`. */
export function describeDetector(d: LocalDetector): string {
  switch (d.kind) {
    case 'cidr':
      return d.cidr;
    case 'interface':
      return `interface ${d.name}`;
    case 'interfacePrefix':
      return `an interface named ${d.prefix}*`;
  }
}

/** Where NodePorts are accepted: on every local address, or on the listed ones. */
export type NodePortDestinations = { readonly kind: 'all' } | { readonly kind: 'addresses'; readonly addresses: readonly string[] };

/** An endpoint as rendered: its address and `ip:port`. */
export interface PlannedEndpoint {
  readonly ip: string;
  readonly port: number;
  /** `ip:port`, or `[ip]:port` for IPv6. */
  readonly hostPort: string;
  /** On this node, or on no node the slice names: a pod here may reach itself through it (hairpin). */
  readonly mayBeLocal: boolean;
}

/** What happens to packets for a destination that has no usable endpoint. */
export type NoEndpointVerdict = 'REJECT' | 'DROP';

/** The desired behaviour of one service port, in one family. */
export interface ServicePortPlan {
  /** `namespace/name:portName` (ServicePortName.String()): chain hash input and comments. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly clusterIP: string;
  readonly port: number;
  /** 0 when none. */
  readonly nodePort: number;
  /** 0 when none. */
  readonly healthCheckNodePort: number;
  readonly externalIPs: readonly string[];
  readonly loadBalancerIPs: readonly string[];
  readonly loadBalancerSourceRanges: readonly string[];
  /** The node's own IP is inside a source range: also accept packets whose source is the LB IP itself. */
  readonly allowLoadBalancerIPsAsSource: boolean;
  /** ClientIP affinity timeout in seconds, or undefined. */
  readonly affinityTimeoutSeconds: number | undefined;
  readonly externalPolicyLocal: boolean;
  readonly internalPolicyLocal: boolean;
  /** Endpoints of the Cluster-policy chain (KUBE-SVC-), or empty when that chain is not used. */
  readonly clusterEndpoints: readonly PlannedEndpoint[];
  /** Endpoints of the Local-policy chain (KUBE-SVL-), or empty when that chain is not used. */
  readonly localEndpoints: readonly PlannedEndpoint[];
  /** Every endpoint that gets a per-endpoint chain (KUBE-SEP-): the union of the two above. */
  readonly reachableEndpoints: readonly PlannedEndpoint[];
  /** Endpoints of this family the slices list for the port, usable or not (the plan's `totalEndpoints` adds these up). */
  readonly endpointCount: number;
  /** Verdict for ClusterIP traffic when it has no endpoints; undefined when it has. */
  readonly internalNoEndpoints: NoEndpointVerdict | undefined;
  /** Verdict for external traffic when it has no endpoints; undefined when it has. */
  readonly externalNoEndpoints: NoEndpointVerdict | undefined;
  /** External destinations exist and there are endpoints: the KUBE-EXT- chain is used. */
  readonly usesExternalChain: boolean;
  /** Load-balancer IPs with source ranges and endpoints: the KUBE-FW- chain is used. */
  readonly usesFirewallChain: boolean;
  /**
   * loadBalancerSourceRanges apply to the LB IPs whether or not there are endpoints: upstream's
   * nftables mode checks them before the no-endpoints verdict (v1.36: a source outside them is
   * dropped, not rejected), its iptables mode only with endpoints ({@link usesFirewallChain}).
   */
  readonly filtersSourceRanges: boolean;
}

/** The whole desired state for one family. */
export interface ProxyPlan {
  readonly family: IPFamily;
  /** Masquerade mark as hex, e.g. `0x4000`. */
  readonly masqueradeMark: string;
  readonly masqueradeAll: boolean;
  /** The local-traffic detector ({@link localDetector}); undefined when there is none. */
  readonly localDetector: LocalDetector | undefined;
  readonly nodePortDestinations: NodePortDestinations;
  /** Sorted by name, then protocol. */
  readonly servicePorts: readonly ServicePortPlan[];
  /** Endpoints of this family over all service ports (upstream's large-cluster threshold counts these). */
  readonly totalEndpoints: number;
  /** Service ports whose ClusterIP traffic is dropped for want of local endpoints (iTP Local). */
  readonly noLocalEndpointsInternal: number;
  /** Service ports whose external traffic is dropped for want of local endpoints (eTP Local). */
  readonly noLocalEndpointsExternal: number;
  /** Destinations claimed by more than one Service, and who kept them (the oldest; see frontends.ts). */
  readonly conflicts: readonly FrontendConflict[];
  /**
   * The ServiceCIDRs' ranges of this family (`a.b.c.d/n`), sorted: nftables mode drops new
   * connections to an address in them that no ClusterIP rule took (upstream's "Drop traffic to
   * unallocated ClusterIPs"); iptables mode leaves them alone, as upstream's.
   */
  readonly serviceCIDRs: readonly string[];
}

/**
 * Memory of earlier plans, so that a sync re-plans only the service ports whose state changed
 * (keyed by the store's {@link ServicePortState} objects; see {@link IdentityCache}). A service
 * port's plan also depends on the node's name, zone and address and on the family: when any of
 * those differ from the previous call, everything is planned anew.
 */
export class PlanCache extends IdentityCache<ServicePortState, ServicePortPlan | undefined> {
  /** Keeps the states of service ports that lost a shared destination the same objects across syncs. */
  readonly frontends = new FrontendMemo();

  /** Service ports planned (cache misses) by the last call. */
  get planned(): number {
    return this.misses;
  }
}

/**
 * Plans the proxy for one family.
 * @param states every service port with its merged endpoints (ProxyStateStore.servicePortStates())
 * @param node this node (name, zone, addresses)
 * @param cache plans of earlier calls to reuse (see {@link PlanCache}); the result is the same with or without it
 * @param serviceCIDRs the cluster's ServiceCIDR ranges, of any family (ProxyStateStore.serviceCIDRs); the plan keeps its family's
 * @throws RangeError when `config.masqueradeBit` is outside 0–31 or a CIDR is of the wrong family
 */
export function planProxy(states: readonly ServicePortState[], node: NodeInfo, config: ProxyConfig, cache?: PlanCache, serviceCIDRs: readonly CIDR[] = []): ProxyPlan {
  if (!Number.isInteger(config.masqueradeBit) || config.masqueradeBit < 0 || config.masqueradeBit > 31) {
    throw new RangeError(`masquerade bit must be 0-31, got ${config.masqueradeBit}`);
  }
  const { family } = config;
  for (const c of config.clusterCIDR ? [config.clusterCIDR, ...config.nodePortAddresses] : config.nodePortAddresses) {
    if (c.family !== family) throw new RangeError(`CIDR ${c.text} is not IPv${family}`);
  }
  const nodeIP = node.addresses.find((a) => a.family === family);
  const servicePorts: ServicePortPlan[] = [];
  let totalEndpoints = 0;
  let noLocalInternal = 0;
  let noLocalExternal = 0;
  const context = `${family} ${node.name} ${node.zone ?? ''} ${nodeIP?.text ?? ''}`;
  cache?.begin(context);
  // Shared destinations are settled before planning, so both backends and every write path agree.
  const resolved = resolveFrontends(states, family, cache?.frontends);
  for (const state of resolved.states) {
    const p = cache ? cache.get(state, () => planServicePort(state, node, nodeIP, family)) : planServicePort(state, node, nodeIP, family);
    if (!p) continue;
    servicePorts.push(p);
    totalEndpoints += p.endpointCount;
    if (p.internalNoEndpoints === 'DROP') noLocalInternal++;
    if (p.externalNoEndpoints === 'DROP') noLocalExternal++;
  }
  servicePorts.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0));

  let nodePortDestinations: NodePortDestinations = { kind: 'all' };
  if (config.nodePortPrimary) {
    // The Node's address itself, as upstream's proxier takes its node IP (not checked against the interfaces).
    if (nodeIP) nodePortDestinations = { kind: 'addresses', addresses: [nodeIP.text] };
  } else if (config.nodePortAddresses.length > 0) {
    const addresses = config.localAddresses.filter((a) => a.family === family && !isLoopback(a) && config.nodePortAddresses.some((c) => cidrContains(c, a))).map((a) => a.text);
    nodePortDestinations = { kind: 'addresses', addresses: [...new Set(addresses)].sort() };
  }
  return {
    family,
    masqueradeMark: `0x${(2 ** config.masqueradeBit).toString(16)}`,
    masqueradeAll: config.masqueradeAll,
    localDetector: localDetector(config, node),
    nodePortDestinations,
    servicePorts,
    totalEndpoints,
    noLocalEndpointsInternal: noLocalInternal,
    noLocalEndpointsExternal: noLocalExternal,
    conflicts: resolved.conflicts,
    serviceCIDRs: serviceCIDRs.filter((c) => c.family === family).map((c) => c.text),
  };
}

function planServicePort(state: ServicePortState, node: NodeInfo, nodeIP: IPAddress | undefined, family: IPFamily): ServicePortPlan | undefined {
  const clusterIP = state.servicePort.clusterIPs.find((ip) => ip.family === family);
  if (!clusterIP) return undefined;
  // Every decision below sees only this family's addresses, as upstream's per-family proxier does:
  // an IPv6 external IP must not make the IPv4 plan "externally accessible".
  const ofFamily = <T extends { family: IPFamily }>(list: readonly T[]) => list.filter((x) => x.family === family);
  const sp: ServicePort = {
    ...state.servicePort,
    externalIPs: ofFamily(state.servicePort.externalIPs),
    loadBalancerIPs: ofFamily(state.servicePort.loadBalancerIPs),
  };
  const texts = (ips: readonly IPAddress[]) => ips.map((ip) => ip.text);
  const endpoints = ofFamilyRun(state.endpoints, family);
  const sets = categorizeEndpoints(sp, endpoints, node.name, node.zone);
  // One PlannedEndpoint per endpoint, shared by the sets that hold it (reachable holds them all,
  // and is often the cluster set itself): an index only when a set is another array.
  const reachable = sets.reachable.map((e) => planned(e, node.name));
  let index: Map<Endpoint, PlannedEndpoint> | undefined;
  const toPlanned = (list: readonly Endpoint[]): PlannedEndpoint[] => {
    if (list === sets.reachable) return reachable;
    if (list.length === 0) return [];
    index ??= new Map(sets.reachable.map((e, i) => [e, reachable[i]!]));
    return list.map((e) => index!.get(e) ?? planned(e, node.name));
  };

  const iLocal = internalPolicyLocal(sp);
  const eLocal = externalPolicyLocal(sp);
  const hasEndpoints = sets.hasAny;
  const hasInternal = hasEndpoints && (!iLocal || sets.local.length > 0);
  const hasExternal = hasEndpoints && (!eLocal || sets.local.length > 0);
  const loadBalancerIPs = texts(sp.loadBalancerIPs);
  const ranges = sp.loadBalancerSourceRanges.filter((c) => c.family === family);
  return {
    name: sp.name,
    protocol: sp.protocol,
    clusterIP: clusterIP.text,
    port: sp.port,
    nodePort: sp.nodePort,
    healthCheckNodePort: sp.healthCheckNodePort,
    externalIPs: texts(sp.externalIPs),
    loadBalancerIPs,
    loadBalancerSourceRanges: ranges.map((c) => c.text),
    allowLoadBalancerIPsAsSource: nodeIP !== undefined && ranges.some((c) => cidrContains(c, nodeIP)),
    affinityTimeoutSeconds: sp.affinityTimeoutSeconds,
    externalPolicyLocal: eLocal,
    internalPolicyLocal: iLocal,
    // categorizeEndpoints leaves a set empty when the port does not use it.
    clusterEndpoints: toPlanned(sets.cluster),
    localEndpoints: toPlanned(sets.local),
    reachableEndpoints: reachable,
    // This family's endpoints only, as upstream's per-family proxier counts them.
    endpointCount: endpoints.length,
    internalNoEndpoints: !hasEndpoints ? 'REJECT' : hasInternal ? undefined : 'DROP',
    externalNoEndpoints: !hasEndpoints ? 'REJECT' : hasExternal ? undefined : 'DROP',
    usesExternalChain: hasEndpoints && externallyAccessible(sp),
    // Ranges given only in the other family still close the LB in this one (fail closed).
    usesFirewallChain: hasEndpoints && loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0,
    filtersSourceRanges: loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0,
  };
}

/**
 * The endpoints of one family. Merged endpoints are sorted by `hostPort`, and every IPv4
 * `a.b.c.d:port` sorts before every IPv6 `[…]:port` ('[' comes after the digits), so each family
 * is one run: no copy for a single-stack port, one slice for a dual-stack one.
 */
function ofFamilyRun(list: readonly Endpoint[], family: IPFamily): readonly Endpoint[] {
  let split = list.findIndex((e) => e.ip.family === 6);
  if (split < 0) split = list.length;
  if (family === 4) return split === list.length ? list : list.slice(0, split);
  return split === 0 ? list : list.slice(split);
}

function planned(e: Endpoint, nodeName: string): PlannedEndpoint {
  return { ip: e.ip.text, port: e.port, hostPort: e.hostPort, mayBeLocal: e.nodeName === undefined || e.nodeName === nodeName };
}
