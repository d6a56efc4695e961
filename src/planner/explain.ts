/**
 * `kproxy explain`: where one packet goes on this node and why, read from the plan the backends
 * render, decision by decision in the order the kernel makes them. Pure: the plan, the state it was
 * made from and the node's configuration in; an {@link Explanation} out, as data.
 *
 * The decisions mirror what the renderers write (both modes make the same decisions; only the
 * rules that make them differ, and a {@link RuleNames} of each backend names them):
 *
 * 1. the packet enters by nat PREROUTING (a pod or an external client) or nat OUTPUT (the node);
 * 2. a Service port matches its destination as a ClusterIP, externalIP, load-balancer IP or NodePort
 *    (NodePorts on this node's addresses or the `--nodeport-addresses` ones, never loopback), or
 *    nothing matches and the packet is left alone (nftables mode rejects an undefined port of a
 *    ClusterIP and drops an address of a ServiceCIDR that no Service holds, as upstream's does);
 * 3. `loadBalancerSourceRanges` drop sources outside them (load-balancer IPs only);
 * 4. no usable endpoint anywhere: REJECT; a Local policy without a local endpoint: DROP;
 * 5. externalTrafficPolicy Local: pods (inside `--cluster-cidr`) and the node itself are
 *    short-circuited to the Cluster endpoints; other sources use the Local ones;
 * 6. the endpoint set (topology hints, terminating fallback; pkg/proxy/topology.go) and DNAT to
 *    one of its endpoints, each with probability 1/n; ClientIP affinity sends a returning client
 *    to the same endpoint;
 * 7. masquerade: ClusterIP traffic from outside `--cluster-cidr` (or all with `--masquerade-all`),
 *    external traffic with Cluster policy, node-originated external traffic, and a pod reaching itself (hairpin).
 *
 * Sources: upstream pkg/proxy/iptables/proxier.go `syncProxyRules` and pkg/proxy/nftables/proxier.go.
 * @module
 */
import { cidrContains, isLoopback, parseCIDR, type IPAddress, type IPFamily } from '../state/ip.ts';
import type { Endpoint, NodeInfo, Protocol, ServicePortState } from '../state/model.ts';
import type { FrontendKind } from './frontends.ts';
import { describeDetector, localDetector, type PlannedEndpoint, type ProxyConfig, type ProxyPlan, type ServicePortPlan } from './plan.ts';
import { topologyMode } from './topology.ts';

/** Where a packet comes from, as the rules tell sources apart. */
export type SourceKind = 'external' | 'pod' | 'node';

/** The packet's source: its kind, and its address when known (`--source IP`). */
export interface PacketSource {
  readonly kind: SourceKind;
  readonly ip: IPAddress | undefined;
}

/** The packet to explain. */
export interface ExplainQuery {
  readonly destination: IPAddress;
  /** Destination port, 1–65535. */
  readonly port: number;
  readonly protocol: Protocol;
  readonly source: PacketSource;
}

/**
 * Names of the rules, chains, maps and sets that make each decision, in one proxy mode: so the
 * explanation points at what `iptables-save` or `nft list table` shows.
 */
export interface RuleNames {
  /** The hook and dispatch a packet from `source` enters by (`nat PREROUTING -> KUBE-SERVICES`). */
  entry(source: SourceKind): string;
  /** The rule or map element that matches `sp`'s destination of `kind`. */
  dispatch(sp: ServicePortPlan, kind: FrontendKind): string;
  /** The rule or map element that rejects or drops `kind` traffic of `sp` for want of endpoints. */
  noEndpoints(sp: ServicePortPlan, kind: FrontendKind, verdict: 'REJECT' | 'DROP'): string;
  /** The loadBalancerSourceRanges check of `sp`: the rule that lets a source in `allowedBy` (a range or an address) go on, or, undefined, the one that drops it. */
  firewall(sp: ServicePortPlan, allowedBy: string | undefined): string;
  /** Where a packet no Service port matches passes without a verdict. */
  noMatch(): string;
  /** Whether the source ranges are checked with no endpoints too (nftables mode; {@link ServicePortPlan.filtersSourceRanges}). */
  readonly sourceRangesWithoutEndpoints: boolean;
  /** What rejects a ClusterIP's undefined port; undefined when nothing does (iptables mode). */
  unknownClusterIPPort(): string | undefined;
  /** What drops a new connection to `cidr`'s addresses that no Service holds; undefined when nothing does (iptables mode). */
  unallocatedClusterIP(cidr: string): string | undefined;
  /** The chain of `sp` for its external destinations, and the short-circuit rule for `source`. */
  external(sp: ServicePortPlan, source?: 'pod' | 'node'): string;
  /** The chain that picks among the Cluster or the Local endpoints of `sp`. */
  selection(sp: ServicePortPlan, set: 'Cluster' | 'Local'): string;
  /** The rule or chain that DNATs to `ep`, one of the `set` endpoints. */
  endpoint(sp: ServicePortPlan, ep: PlannedEndpoint, set: 'Cluster' | 'Local'): string;
  /** The rule that marks `sp`'s traffic for masquerading, for `reason`. */
  masquerade(sp: ServicePortPlan, reason: MasqueradeReason): string;
}

/** Why a packet is masqueraded (or, for `none`, why not). */
export type MasqueradeReason = 'masquerade-all' | 'outside-cluster-cidr' | 'external-cluster-policy' | 'node-external-local' | 'hairpin' | 'none';

/** One decision, with the rule that makes it. */
export interface ExplainStep {
  readonly decision: string;
  readonly rule: string;
}

/** An endpoint as `explain` shows it. */
export interface ExplainedEndpoint {
  readonly address: string;
  readonly port: number;
  readonly node: string | undefined;
  readonly zone: string | undefined;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  /** Chance a new connection lands here, 0–1 (1/n for each of the n endpoints in use). */
  readonly probability: number;
  /** The source reaching this endpoint is the endpoint itself: masqueraded (hairpin). */
  readonly hairpin: boolean;
}

/** An endpoint the slices list that this packet cannot reach, and why. */
export interface UnusedEndpoint {
  readonly address: string;
  readonly port: number;
  readonly node: string | undefined;
  readonly reason: string;
}

/** What `kproxy explain` prints: stable JSON (`--output json`), documented in the README. */
export interface Explanation {
  /** `IP:port/PROTOCOL` (`[IP]` for IPv6). */
  readonly destination: string;
  readonly family: IPFamily;
  readonly source: { readonly kind: SourceKind; readonly address: string | undefined; readonly description: string };
  /** DNAT: sent to an endpoint; REJECT / DROP: refused; NO_MATCH: no Service port matches, left alone. */
  readonly verdict: 'DNAT' | 'REJECT' | 'DROP' | 'NO_MATCH';
  /** Why, in one line. */
  readonly reason: string;
  /** The matching service port (`namespace/name:port`) and how its destination matched. */
  readonly service: { readonly name: string; readonly protocol: Protocol; readonly matchedAs: FrontendKind } | undefined;
  /** The loadBalancerSourceRanges check, when the destination has one. */
  readonly firewall: { readonly ranges: readonly string[]; readonly allowed: boolean; readonly by: string | undefined } | undefined;
  /** Which endpoint set the packet uses, and why. */
  readonly endpointSet: { readonly set: 'Cluster' | 'Local'; readonly why: readonly string[] } | undefined;
  readonly endpoints: readonly ExplainedEndpoint[];
  readonly unusedEndpoints: readonly UnusedEndpoint[];
  /** ClientIP affinity timeout, seconds; undefined without affinity. */
  readonly affinityTimeoutSeconds: number | undefined;
  /** Whether the packet is masqueraded (its source replaced by the node's address), and why. */
  readonly masquerade: { readonly masquerade: boolean; readonly reason: MasqueradeReason; readonly why: string } | undefined;
  /** Every decision in the kernel's order, each with the rule that makes it. */
  readonly steps: readonly ExplainStep[];
  /** Other things worth knowing (a destination another Service lost to this one, …). */
  readonly notes: readonly string[];
}

/** The flag a CIDR detector comes from: `--cluster-cidr`, or the Node's pod CIDR with NodeCIDR. */
function cidrFlag(config: ProxyConfig): string {
  return config.detectLocal?.mode === 'NodeCIDR' ? "the node's pod CIDR" : '--cluster-cidr';
}

/** Why a family has no detector. */
function detectorAbsence(config: ProxyConfig): string {
  return config.detectLocal?.mode === 'NodeCIDR' ? `the Node has no IPv${config.family} spec.podCIDRs` : `no --cluster-cidr for IPv${config.family}`;
}

/** Exit status of `kproxy explain` for each verdict (0 DNAT, 3 refused, 4 no match). */
export const EXPLAIN_EXIT: Readonly<Record<Explanation['verdict'], number>> = { DNAT: 0, REJECT: 3, DROP: 3, NO_MATCH: 4 };

/**
 * How the rules see a source address: the node's own (its Node object's addresses or a local
 * interface's), a pod (inside `--cluster-cidr`), or external.
 */
export function classifySource(ip: IPAddress, node: NodeInfo, config: ProxyConfig): SourceKind {
  if ([...node.addresses, ...config.localAddresses].some((a) => a.text === ip.text)) return 'node';
  // An address tells a pod only to a CIDR detector; an interface detector sees where it came in.
  const detector = localDetector(config, node);
  if (detector?.kind === 'cidr' && cidrContains(parseCIDR(detector.cidr)!, ip)) return 'pod';
  return 'external';
}

/** How each destination role reads in a sentence. */
export const KIND_TEXT: Readonly<Record<FrontendKind, string>> = { clusterIP: 'ClusterIP', externalIP: 'externalIP', loadBalancerIP: 'load-balancer IP', nodePort: 'NodePort' };

/**
 * Explains what this node's rules do with one packet.
 * @param states the service port states the plan was made from (for endpoint conditions, nodes and zones)
 * @param plan the plan of the destination's family, made from `states`, `node` and `config`
 * @throws RangeError when the destination's family is not the plan's
 */
export function explainPacket(states: readonly ServicePortState[], node: NodeInfo, config: ProxyConfig, plan: ProxyPlan, query: ExplainQuery, names: RuleNames): Explanation {
  const family = plan.family;
  if (query.destination.family !== family) throw new RangeError(`destination ${query.destination.text} is not IPv${family}`);
  const dest = query.destination.text;
  const destination = `${family === 6 ? `[${dest}]` : dest}:${query.port}/${query.protocol}`;
  const source = describeSource(query.source, node, config, family);
  const steps: ExplainStep[] = [{ decision: `enters from ${source.description}`, rule: names.entry(query.source.kind) }];
  const notes: string[] = [];
  const base = {
    destination,
    family,
    source,
    service: undefined,
    firewall: undefined,
    endpointSet: undefined,
    endpoints: [],
    unusedEndpoints: [],
    affinityTimeoutSeconds: undefined,
    masquerade: undefined,
    steps,
    notes,
  };

  for (const c of plan.conflicts) if (c.destination === destination) notes.push(`${c.loser} also claims ${destination}; ${c.winner} keeps it (the oldest Service wins)`);
  const match = findMatch(plan, node, config, query);
  if (!match) {
    const clusterIPOwner = plan.servicePorts.find((sp) => sp.clusterIP === dest);
    const reject = clusterIPOwner ? names.unknownClusterIPPort() : undefined;
    if (reject) {
      steps.push({ decision: `${dest} is a ClusterIP, but no Service port of it is ${query.port}/${query.protocol}: rejected`, rule: reject });
      return { ...base, verdict: 'REJECT', reason: `no Service port ${query.port}/${query.protocol} on ClusterIP ${dest}` };
    }
    const range = plan.serviceCIDRs.find((c) => inCIDR(c, query.destination));
    const drop = range === undefined ? undefined : names.unallocatedClusterIP(range);
    if (drop) {
      steps.push({ decision: `${dest} is in the ServiceCIDR ${range}, but no Service holds it: dropped`, rule: drop });
      return { ...base, verdict: 'DROP', reason: `${dest} is an unallocated address of the ServiceCIDR ${range}` };
    }
    for (const hint of noMatchHints(plan, query)) notes.push(hint);
    steps.push({ decision: 'no Service port matches: the packet is left alone', rule: names.noMatch() });
    return { ...base, verdict: 'NO_MATCH', reason: `no Service port matches ${destination}` };
  }

  const { sp, kind } = match;
  const service = { name: sp.name, protocol: sp.protocol, matchedAs: kind };
  const internal = kind === 'clusterIP';
  const noEndpoints = internal ? sp.internalNoEndpoints : sp.externalNoEndpoints;
  if (noEndpoints !== 'REJECT') steps.push({ decision: `matches ${sp.name} (${sp.protocol}) by its ${KIND_TEXT[kind]}`, rule: names.dispatch(sp, kind) });
  const withService = { ...base, service, affinityTimeoutSeconds: sp.affinityTimeoutSeconds };

  // loadBalancerSourceRanges, checked before DNAT.
  let firewall: Explanation['firewall'];
  if (kind === 'loadBalancerIP' && (names.sourceRangesWithoutEndpoints ? sp.filtersSourceRanges : sp.usesFirewallChain)) {
    const ip = query.source.ip;
    const range = ip ? sp.loadBalancerSourceRanges.find((r) => inCIDR(r, ip)) : undefined;
    const byLBIP = ip && sp.allowLoadBalancerIPsAsSource && sp.loadBalancerIPs.includes(ip.text) ? ip.text : undefined;
    const allowed = range !== undefined || byLBIP !== undefined;
    firewall = { ranges: sp.loadBalancerSourceRanges, allowed, by: range ?? byLBIP };
    const ranges = sp.loadBalancerSourceRanges.length > 0 ? sp.loadBalancerSourceRanges.join(', ') : `none of IPv${family} (the Service lists only the other family's)`;
    if (!allowed) {
      const who = ip ? ip.text : `${source.description} (give --source to check an address)`;
      steps.push({ decision: `loadBalancerSourceRanges ${ranges}: ${who} is outside them, dropped`, rule: names.firewall(sp, undefined) });
      return { ...withService, firewall, verdict: 'DROP', reason: `source not in loadBalancerSourceRanges of ${sp.name}` };
    }
    steps.push({ decision: `loadBalancerSourceRanges: ${ip!.text} is inside ${range ?? `(the node's own load-balancer IP ${byLBIP})`}, allowed`, rule: names.firewall(sp, firewall.by) });
  }

  const state = states.find((s) => s.servicePort.name === sp.name && s.servicePort.protocol === sp.protocol);
  const listed = state ? state.endpoints.filter((e) => e.ip.family === family) : [];
  if (noEndpoints === 'REJECT') {
    const why = listed.length === 0 ? 'its EndpointSlices list no endpoints' : `none of its ${listed.length} endpoint(s) is ready, or serving and terminating`;
    steps.push({ decision: `matches ${sp.name} (${sp.protocol}) by its ${KIND_TEXT[kind]}, which has no usable endpoint (${why}): rejected`, rule: names.noEndpoints(sp, kind, 'REJECT') });
    return { ...withService, firewall, unusedEndpoints: unused(listed, new Set(), node, 'Cluster'), verdict: 'REJECT', reason: `${sp.name} has no endpoints (${why})` };
  }

  // Which endpoint set; external traffic runs through the external chain first.
  let set: 'Cluster' | 'Local';
  const why: string[] = [];
  let masquerade: Explanation['masquerade'];
  const detector = localDetector(config, node);
  const podSource = query.source.kind === 'pod' && detector !== undefined;
  const localText = detector === undefined ? '' : detector.kind === 'cidr' ? `inside ${detector.cidr}` : `from ${describeDetector(detector)}`;
  if (internal) {
    set = sp.internalPolicyLocal ? 'Local' : 'Cluster';
    why.push(sp.internalPolicyLocal ? `internalTrafficPolicy Local: endpoints on ${node.name} only` : 'internalTrafficPolicy Cluster: endpoints on every node');
  } else if (!sp.externalPolicyLocal) {
    set = 'Cluster';
    why.push('externalTrafficPolicy Cluster: endpoints on every node');
    steps.push({ decision: 'external destination, Cluster policy: marked for masquerade', rule: names.masquerade(sp, 'external-cluster-policy') });
    masquerade = {
      masquerade: true,
      reason: 'external-cluster-policy',
      why: 'external destination with externalTrafficPolicy Cluster: the endpoint may be on another node, whose reply must come back here',
    };
  } else if (podSource || query.source.kind === 'node') {
    set = 'Cluster';
    const from = podSource ? 'pod' : 'node';
    why.push(`externalTrafficPolicy Local, but a ${from === 'pod' ? 'pod' : 'packet from the node itself'} is short-circuited to the Cluster endpoints`);
    steps.push({
      decision: `externalTrafficPolicy Local: ${from === 'pod' ? `a pod (${localText})` : 'the node itself'} goes to the Cluster endpoints`,
      rule: names.external(sp, from),
    });
    if (from === 'node') {
      masquerade = { masquerade: true, reason: 'node-external-local', why: 'the node reaching an external destination: masqueraded so the reply comes back through the rules' };
      steps.push({ decision: 'from the node itself: marked for masquerade', rule: names.masquerade(sp, 'node-external-local') });
    } else masquerade = { masquerade: false, reason: 'none', why: `a pod reaching an external destination with Local policy keeps its address (${localText})` };
  } else {
    set = 'Local';
    why.push(`externalTrafficPolicy Local: endpoints on ${node.name} only, the client's address is kept`);
    steps.push({ decision: 'externalTrafficPolicy Local: the Local endpoints', rule: names.external(sp) });
    masquerade = { masquerade: false, reason: 'none', why: "externalTrafficPolicy Local keeps the client's address" };
  }

  const chosen = set === 'Local' ? sp.localEndpoints : sp.clusterEndpoints;
  if (chosen.length === 0) {
    const verdict = internal ? sp.internalNoEndpoints : sp.externalNoEndpoints;
    const usable = listed.length > 0 ? `; ${listed.length} endpoint(s) elsewhere` : '';
    steps.push({ decision: `no ready or serving-terminating endpoint on ${node.name}${usable}: dropped`, rule: names.noEndpoints(sp, kind, 'DROP') });
    return {
      ...withService,
      firewall,
      endpointSet: { set, why },
      unusedEndpoints: unused(listed, new Set(), node, set),
      verdict: verdict === 'REJECT' ? 'REJECT' : 'DROP',
      reason: `${internal ? 'internalTrafficPolicy' : 'externalTrafficPolicy'} Local and no local endpoint of ${sp.name} on ${node.name}`,
    };
  }
  why.push(...setReasons(set, listed, chosen, node));

  // Masquerade of ClusterIP traffic.
  if (internal) {
    if (config.masqueradeAll) masquerade = { masquerade: true, reason: 'masquerade-all', why: '--masquerade-all' };
    else if (!detector) masquerade = { masquerade: false, reason: 'none', why: `${detectorAbsence(config)}: ClusterIP traffic is not masqueraded` };
    else if (detector.kind !== 'cidr')
      masquerade = podSource
        ? { masquerade: false, reason: 'none', why: `source ${describeDetector(detector)} (--detect-local-mode)` }
        : { masquerade: true, reason: 'outside-cluster-cidr', why: `source not ${describeDetector(detector)} (--detect-local-mode)` };
    else if (podSource) masquerade = { masquerade: false, reason: 'none', why: `source inside ${cidrFlag(config)} ${detector.cidr}` };
    else masquerade = { masquerade: true, reason: 'outside-cluster-cidr', why: `source outside ${cidrFlag(config)} ${detector.cidr}` };
    if (masquerade.masquerade) steps.push({ decision: `marked for masquerade: ${masquerade.why}`, rule: names.masquerade(sp, masquerade.reason) });
  }

  const byHostPort = new Map(listed.map((e) => [e.hostPort, e]));
  const hairpinIP = query.source.ip?.text;
  const endpoints = chosen.map((ep): ExplainedEndpoint => {
    const e = byHostPort.get(ep.hostPort);
    return {
      address: ep.ip,
      port: ep.port,
      node: e?.nodeName,
      zone: e?.zone,
      ready: e?.ready ?? true,
      serving: e?.serving ?? true,
      terminating: e?.terminating ?? false,
      probability: 1 / chosen.length,
      hairpin: ep.mayBeLocal && hairpinIP === ep.ip,
    };
  });
  const n = chosen.length;
  steps.push({ decision: n === 1 ? `one endpoint in the ${set} set` : `picks one of ${n} ${set} endpoints at random, each with probability 1/${n}`, rule: names.selection(sp, set) });
  if (sp.affinityTimeoutSeconds !== undefined) {
    steps.push({ decision: `sessionAffinity ClientIP: a client seen within ${sp.affinityTimeoutSeconds} s returns to its endpoint`, rule: names.selection(sp, set) });
  }
  const hairpins = endpoints.filter((e) => e.hairpin);
  if (hairpins.length > 0) {
    notes.push(`the source is endpoint ${hairpins[0]!.address}: reaching itself it is masqueraded (hairpin)`);
  } else if (query.source.kind === 'pod' && !query.source.ip && chosen.some((ep) => ep.mayBeLocal)) {
    notes.push('a pod that lands on itself is masqueraded (hairpin)');
  }
  for (const ep of chosen) steps.push({ decision: `DNAT to ${ep.hostPort}`, rule: names.endpoint(sp, ep, set) });
  const unusedList = unused(listed, new Set(chosen.map((e) => e.hostPort)), node, set);
  return {
    ...withService,
    firewall,
    endpointSet: { set, why },
    endpoints,
    unusedEndpoints: unusedList,
    masquerade,
    verdict: 'DNAT',
    reason: `${sp.name}: DNAT to ${n === 1 ? chosen[0]!.hostPort : `one of ${n} endpoints`}`,
  };
}

function inCIDR(text: string, ip: IPAddress): boolean {
  const c = parseCIDR(text);
  return c !== undefined && c.family === ip.family && cidrContains(c, ip);
}

function describeSource(source: PacketSource, node: NodeInfo, config: ProxyConfig, family: IPFamily): Explanation['source'] {
  const ip = source.ip?.text;
  switch (source.kind) {
    case 'node': {
      const own = ip ?? node.addresses.find((a) => a.family === family)?.text;
      return { kind: 'node', address: own, description: `the node itself${own ? ` (${own})` : ''}` };
    }
    case 'pod':
      if (ip) return { kind: 'pod', address: ip, description: `pod ${ip}` };
      {
        const detector = localDetector(config, node);
        const where = detector === undefined ? '' : detector.kind === 'cidr' ? ` (inside ${detector.cidr})` : ` (${describeDetector(detector)})`;
        return { kind: 'pod', address: undefined, description: `a pod on ${node.name}${where}` };
      }
    case 'external':
      return { kind: 'external', address: ip, description: ip ? `external client ${ip}` : 'a client outside the cluster' };
  }
}

/** The service port and role that takes `query`'s destination, as the dispatch rules order them. */
function findMatch(plan: ProxyPlan, node: NodeInfo, config: ProxyConfig, query: ExplainQuery): { sp: ServicePortPlan; kind: FrontendKind } | undefined {
  const dest = query.destination.text;
  const same = plan.servicePorts.filter((sp) => sp.protocol === query.protocol);
  for (const sp of same) if (sp.clusterIP === dest && sp.port === query.port) return { sp, kind: 'clusterIP' };
  for (const sp of same) if (sp.port === query.port && sp.externalIPs.includes(dest)) return { sp, kind: 'externalIP' };
  for (const sp of same) if (sp.port === query.port && sp.loadBalancerIPs.includes(dest)) return { sp, kind: 'loadBalancerIP' };
  if (!acceptsNodePorts(plan, node, config, query.destination)) return undefined;
  for (const sp of same) if (sp.nodePort === query.port) return { sp, kind: 'nodePort' };
  return undefined;
}

/** NodePorts answer on this node's addresses (or the `--nodeport-addresses` ones), never on loopback. */
function acceptsNodePorts(plan: ProxyPlan, node: NodeInfo, config: ProxyConfig, ip: IPAddress): boolean {
  if (plan.nodePortDestinations.kind === 'addresses') return plan.nodePortDestinations.addresses.includes(ip.text);
  if (isLoopback(ip)) return false;
  return [...node.addresses, ...config.localAddresses].some((a) => a.text === ip.text);
}

/** Why a packet that matches nothing might have been expected to. */
function noMatchHints(plan: ProxyPlan, query: ExplainQuery): string[] {
  const hints: string[] = [];
  const np = plan.servicePorts.find((sp) => sp.nodePort === query.port && sp.protocol === query.protocol);
  if (np) {
    if (isLoopback(query.destination)) hints.push(`${query.port} is ${np.name}'s NodePort, but NodePorts are not served on loopback addresses`);
    else if (plan.nodePortDestinations.kind === 'addresses')
      hints.push(`${query.port} is ${np.name}'s NodePort, but --nodeport-addresses limits NodePorts to ${plan.nodePortDestinations.addresses.join(', ') || 'no address'}`);
    else hints.push(`${query.port} is ${np.name}'s NodePort, but ${query.destination.text} is not an address of this node`);
  }
  const other = plan.servicePorts.find((sp) => sp.protocol !== query.protocol && sp.port === query.port && [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs].includes(query.destination.text));
  if (other) hints.push(`${other.name} serves ${query.port}/${other.protocol}, not ${query.protocol}`);
  return hints;
}

/** Why the chosen set holds what it holds: topology hints and the terminating fallback. */
function setReasons(set: 'Cluster' | 'Local', listed: readonly Endpoint[], chosen: readonly PlannedEndpoint[], node: NodeInfo): string[] {
  const out: string[] = [];
  const chosenSet = new Set(chosen.map((e) => e.hostPort));
  const picked = listed.filter((e) => chosenSet.has(e.hostPort));
  if (picked.length > 0 && picked.every((e) => !e.ready)) {
    out.push(set === 'Local' ? `no ready endpoint on ${node.name}: its serving, terminating ones` : 'no ready endpoint anywhere: the serving, terminating ones (KEP-1669)');
  }
  if (set === 'Local') {
    out.push('topology hints do not apply to the Local set');
    return out;
  }
  const mode = topologyMode(listed, node.name, node.zone);
  const ready = listed.filter((e) => e.ready);
  if (mode === 'node') out.push(`topology hints: only endpoints hinted for node ${node.name}`);
  else if (mode === 'zone') out.push(`topology hints: only endpoints hinted for zone ${node.zone}`);
  else if (ready.some((e) => e.zoneHints.length > 0 || e.nodeHints.length > 0)) {
    if (ready.some((e) => e.zoneHints.length === 0)) out.push('topology hints ignored: not every ready endpoint has one');
    else out.push(`topology hints ignored: none for ${node.zone === undefined ? `${node.name}, whose Node has no zone label` : `zone ${node.zone}`}`);
  }
  return out;
}

/** The endpoints the packet cannot reach, each with the reason. */
function unused(listed: readonly Endpoint[], used: ReadonlySet<string>, node: NodeInfo, set: 'Cluster' | 'Local'): UnusedEndpoint[] {
  const anyReady = listed.some((e) => (set === 'Local' ? e.nodeName === node.name : true) && e.ready);
  return listed
    .filter((e) => !used.has(e.hostPort))
    .map((e) => {
      let reason: string;
      if (set === 'Local' && e.nodeName !== node.name) reason = `on ${e.nodeName ?? 'no node'}, not ${node.name}`;
      else if (!e.ready && !(e.serving && e.terminating)) reason = e.terminating ? 'terminating and not serving' : 'not ready';
      else if (!e.ready && anyReady) reason = 'terminating: used only when no endpoint is ready';
      else reason = 'not hinted for this node or zone';
      return { address: e.ip.text, port: e.port, node: e.nodeName, reason };
    });
}
