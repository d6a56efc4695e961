/**
 * Plan → nftables ruleset: one table (`ip kube-proxy`), upstream kube-proxy's layout where it
 * scales (pkg/proxy/nftables/proxier.go) and a linear one where
 * upstream's does not:
 *
 * - dispatch by verdict maps: `service-ips` (`daddr . l4proto . dport` → goto the service,
 *   local or external chain), `service-nodeports` (`l4proto . dport`), `no-endpoint-services` and
 *   `no-endpoint-nodeports` (→ drop, or goto `reject-chain`), `firewall-ips` (→ goto a
 *   loadBalancerSourceRanges chain, run before DNAT), and the `cluster-ips` set (a ClusterIP on an
 *   undefined port is rejected; one in a ServiceCIDR that no Service holds is dropped);
 * - masquerading by the mark bit: `mark-for-masquerade` sets it, `masquerading` (postrouting)
 *   clears it and masquerades `fully-random`;
 * - **endpoint selection is a cascade of plain rules that DNAT themselves**: `numgen random mod
 *   (n-i) == 0 … dnat to endpoint-i` for i = 0..n-2, then `… dnat to endpoint-(n-1)`: each endpoint
 *   with probability 1/n, as iptables' `statistic` chain. Upstream writes one anonymous `numgen …
 *   vmap { … }` per chain plus one chain per endpoint; every rule that creates an anonymous set
 *   costs the kernel work in proportion to the table, so its cold start is quadratic (≈10.7 s at
 *   10k Services on this project's machines, nft 1.0.6), and per-endpoint chains multiply the
 *   objects to commit by the endpoint count. Here a Service costs one chain and n rules
 *   (bench/README.md has the measurements);
 * - hairpin traffic (a pod reaching itself through its Service) is found after DNAT, in
 *   `masquerading`, by one lookup of `saddr . daddr` in the `hairpin-endpoints` set, whose elements
 *   are `ip . ip` of the endpoints that may be on this node; upstream does it in each endpoint chain;
 * - loadBalancerSourceRanges are plain `ip saddr <cidr> return` rules, then `drop`, for the same reason.
 *
 * The only per-service named sets are ClientIP-affinity sets (`affinity-…`, one per endpoint, timeout
 * = the Service's), as upstream: nft has no `recent` match. What iptables mode does in filter with a
 * rule, nftables mode does with a map element, so the two modes behave alike; no filter ACCEPT for
 * health-check node ports and no conntrack-INVALID drop, as upstream's nftables mode.
 *
 * Output is deterministic: sets and chains sorted by name, elements in plan order.
 * @module
 */
import { IdentityCache } from '../../planner/cache.ts';
import { detectorKey, type LocalDetector, type PlannedEndpoint, type ProxyPlan, type ServicePortPlan } from '../../planner/plan.ts';
import {
  DROP,
  RETURN,
  eq,
  fibType,
  goto,
  jump,
  keyText,
  meta,
  ne,
  payload,
  prefix,
  type NftElement,
  type NftFamily,
  type NftTableFamily,
  type NftHook,
  type NftRule,
  type NftSelector,
  type NftSetSpec,
  type NftStatement,
} from './json.ts';
import { renderParts, type RenderSkip } from '../backend.ts';
import { checkedComment, endpointNames, NFT, serviceNames, TABLE } from './names.ts';
import { SelectionChain } from './selection.ts';

/**
 * The match of upstream's nftables local-traffic detector (pkg/proxy/nftables/proxier.go, with
 * pkg/proxy/util/localdetector.go): `ip saddr CIDR`, `iifname "br0"` or `iifname "veth*"`, or
 * their negation for traffic from outside this node's pods.
 */
export function localMatch(d: LocalDetector, ip: NftFamily, local: boolean): NftStatement {
  const test = local ? eq : ne;
  switch (d.kind) {
    case 'cidr':
      return test(payload(ip, 'saddr'), prefix(d.cidr));
    case 'interface':
      return test(meta('iifname'), d.name);
    case 'interfacePrefix':
      return test(meta('iifname'), `${d.prefix}*`);
  }
}

/**
 * One chain of the table; base chains carry their hook. A service port's endpoint selection makes
 * `rules` on each read (the same rules every time), so read it once per use.
 */
export interface NftChain {
  readonly name: string;
  readonly hook?: NftHook;
  readonly rules: readonly NftRule[];
}

/** The complete desired content of kproxy's table. */
export interface NftRuleset {
  /** `ip` or `ip6` for a Service table; `inet` for the NetworkPolicy table (backends/policy), written by the same writer. */
  readonly family: NftTableFamily;
  readonly table: string;
  /** Every set and map, sorted by name (built on first read: deltas do not need it). */
  readonly sets: readonly NftSetSpec[];
  /** Every chain, sorted by name (built on first read). */
  readonly chains: readonly NftChain[];
  /** The sets and maps that are not a service port's own (affinity sets are). */
  readonly fixedSets: readonly NftSetSpec[];
  /** The chains that are not a service port's own: base chains and the fixed ones. */
  readonly fixedChains: readonly NftChain[];
  /** Elements of each set or map, by its name (every set in `sets` has an entry). */
  readonly elements: ReadonlyMap<string, readonly NftElement[]>;
  /**
   * Each service port's part, keyed by `namespace/name:port protocol`, in plan order. A part that
   * is the same object in two rulesets is unchanged between them. (In the NetworkPolicy table:
   * each local pod's part, and each peer set's, keyed `pod ns/name` and `peers <id>`.)
   */
  readonly services: ReadonlyMap<string, NftServiceRules>;
  /** Map keys claimed by more than one service port (`map key`); only the first one's element is kept. */
  readonly conflicts: readonly string[];
  /** Service ports left out because their rules could not be rendered. */
  readonly skipped: readonly RenderSkip[];
}

/** What one service port contributes to the table. Rendered once per plan of it and then reused. */
export interface NftServiceRules {
  /** Its own chains (service-, local-, external-, firewall-), in the order first written. */
  readonly chains: readonly NftChain[];
  /** Its elements of the shared sets and maps, as [set name, element], in order. */
  readonly elements: readonly (readonly [string, NftElement])[];
  /** Its ClientIP-affinity sets. */
  readonly sets: readonly NftSetSpec[];
  /** How many rules `chains` hold (counting them by reading would make the lazy ones). */
  readonly ruleCount: number;
}

/**
 * Memory of earlier renders: a service port whose plan is the same object as last time (see the
 * planner's PlanCache) is not rendered again ({@link IdentityCache}). Everything a service port's
 * rules depend on besides its plan is in the context; a new context renders everything anew.
 */
export class NftRenderCache extends IdentityCache<ServicePortPlan, NftServiceRules | RenderSkip> {
  /** Service ports rendered (cache misses) by the last render. */
  get rendered(): number {
    return this.misses;
  }
}

const ctNew: NftStatement = { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } };

/** Base chains: upstream's names, hooks and priorities (dstnat = -100, srcnat = 100). */
const BASE_CHAINS: readonly NftChain[] = [
  { name: 'filter-prerouting-pre-dnat', hook: { type: 'filter', hook: 'prerouting', prio: -110 }, rules: [{ expr: [ctNew, jump(NFT.firewallCheck)] }] },
  { name: 'filter-output-pre-dnat', hook: { type: 'filter', hook: 'output', prio: -110 }, rules: [{ expr: [ctNew, jump(NFT.firewallCheck)] }] },
  { name: 'filter-input', hook: { type: 'filter', hook: 'input', prio: 0 }, rules: [{ expr: [ctNew, jump(NFT.nodePortEndpointsCheck)] }, { expr: [ctNew, jump(NFT.serviceEndpointsCheck)] }] },
  { name: 'filter-forward', hook: { type: 'filter', hook: 'forward', prio: 0 }, rules: [{ expr: [ctNew, jump(NFT.serviceEndpointsCheck)] }, { expr: [ctNew, jump(NFT.clusterIPsCheck)] }] },
  { name: 'filter-output', hook: { type: 'filter', hook: 'output', prio: 0 }, rules: [{ expr: [ctNew, jump(NFT.serviceEndpointsCheck)] }, { expr: [ctNew, jump(NFT.clusterIPsCheck)] }] },
  { name: 'nat-prerouting', hook: { type: 'nat', hook: 'prerouting', prio: -100 }, rules: [{ expr: [jump(NFT.services)] }] },
  { name: 'nat-output', hook: { type: 'nat', hook: 'output', prio: -100 }, rules: [{ expr: [jump(NFT.services)] }] },
  { name: 'nat-postrouting', hook: { type: 'nat', hook: 'postrouting', prio: 100 }, rules: [{ expr: [jump(NFT.masquerading)] }] },
];

/**
 * Keeps the first element of each key in each of the maps `names` (a map holds one value per key,
 * and nft refuses a second in one transaction).
 * @returns the keys dropped, as `map key`
 */
export function keepFirstKeys(elements: Map<string, NftElement[]>, names: readonly string[]): string[] {
  const conflicts: string[] = [];
  for (const name of names) {
    const list = elements.get(name) ?? [];
    const seen = new Set<string>();
    const kept = list.filter((e) => {
      const k = keyText(e.key);
      if (!seen.has(k)) return seen.add(k);
      conflicts.push(`${name} ${k}`);
      return false;
    });
    if (kept.length !== list.length) elements.set(name, kept);
  }
  return conflicts;
}

/** The table's family for an IP family. */
export function nftFamily(family: 4 | 6): NftFamily {
  return family === 6 ? 'ip6' : 'ip';
}

/**
 * Renders the plan.
 * @param cache earlier renders to reuse; the result is the same with or without it
 * @throws Error if a name or comment would hold characters nft cannot take (a bug: the state
 *   stage admits only names that cannot)
 */
export function renderNftables(plan: ProxyPlan, cache?: NftRenderCache): NftRuleset {
  const family = nftFamily(plan.family);
  const addrType = family === 'ip6' ? 'ipv6_addr' : 'ipv4_addr';
  const r = new Renderer(plan, family);
  cache?.begin(`${family} ${plan.masqueradeAll} ${detectorKey(plan.localDetector)}`);
  const { parts: services, skipped } = renderParts(plan, (sp) => renderServicePort(sp, plan, family), cache);
  for (const part of services.values()) {
    // Checked when the part was rendered; only collected here.
    for (const [set, e] of part.elements) r.collect(set, e);
    for (const set of part.sets) r.affinitySets.push(set);
  }

  const daddr = payload(family, 'daddr');
  const dispatch = (map: string): NftStatement => ({ vmap: { key: { concat: [daddr, meta('l4proto'), payload('th', 'dport')] }, data: `@${map}` } });
  const protoPort: NftSelector = { concat: [meta('l4proto'), payload('th', 'dport')] };
  // Where NodePorts are accepted: every local address but loopback, or the --nodeport-addresses ones.
  const nodePortDestination: NftStatement[] =
    plan.nodePortDestinations.kind === 'all' ? [eq(fibType('daddr'), 'local'), ne(daddr, prefix(family === 'ip6' ? '::1/128' : '127.0.0.0/8'))] : [eq(daddr, `@${NFT.nodePortIPs}`)];
  const mark = Number(plan.masqueradeMark);
  const markOf = { meta: { key: 'mark' } } as const;

  r.chain(NFT.services, { expr: [dispatch(NFT.serviceIPs)] }, { expr: [...nodePortDestination, { vmap: { key: protoPort, data: `@${NFT.serviceNodePorts}` } }] });
  r.chain(NFT.firewallCheck, { expr: [dispatch(NFT.firewallIPs)] });
  r.chain(NFT.serviceEndpointsCheck, { expr: [dispatch(NFT.noEndpointServices)] });
  r.chain(NFT.nodePortEndpointsCheck, { expr: [...nodePortDestination, { vmap: { key: protoPort, data: `@${NFT.noEndpointNodePorts}` } }] });
  r.chain(NFT.clusterIPsCheck, { expr: [eq(daddr, `@${NFT.clusterIPs}`), { reject: null }] });
  // An address of a ServiceCIDR that no Service holds: the connection is dropped, not sent on.
  // Upstream writes one rule with an anonymous set of the ranges; one rule a range (there are one
  // or two) does the same without a set.
  for (const cidr of plan.serviceCIDRs) r.chain(NFT.clusterIPsCheck, { expr: [eq(daddr, prefix(cidr)), DROP], comment: 'Drop traffic to unallocated ClusterIPs' });
  r.chain(NFT.markMasq, { expr: [{ mangle: { key: markOf, value: { '|': [markOf, mark] } } }] });
  r.chain(
    NFT.masquerading,
    // Hairpin: a pod DNATed to itself must see the node's address, or it would answer itself directly.
    { expr: [eq({ concat: [payload(family, 'saddr'), daddr] }, `@${NFT.hairpin}`), jump(NFT.markMasq)] },
    { expr: [{ match: { op: '==', left: { '&': [markOf, mark] }, right: 0 } }, RETURN] },
    { expr: [{ mangle: { key: markOf, value: { '^': [markOf, mark] } } }] },
    { expr: [{ masquerade: { flags: 'fully-random' } }], comment: 'kubernetes service traffic requiring SNAT' },
  );
  r.chain(NFT.reject, { expr: [{ reject: null }] });

  const key3 = [addrType, 'inet_proto', 'inet_service'];
  const fixedSets: NftSetSpec[] = [
    { name: NFT.serviceIPs, type: key3, map: 'verdict' },
    { name: NFT.serviceNodePorts, type: ['inet_proto', 'inet_service'], map: 'verdict' },
    { name: NFT.noEndpointServices, type: key3, map: 'verdict' },
    { name: NFT.noEndpointNodePorts, type: ['inet_proto', 'inet_service'], map: 'verdict' },
    { name: NFT.firewallIPs, type: key3, map: 'verdict' },
    { name: NFT.clusterIPs, type: addrType },
    { name: NFT.hairpin, type: [addrType, addrType] },
  ];
  if (plan.nodePortDestinations.kind === 'addresses') {
    fixedSets.push({ name: NFT.nodePortIPs, type: addrType });
    r.element(NFT.nodePortIPs, ...plan.nodePortDestinations.addresses.map((key) => ({ key })));
  }
  const sets = [...fixedSets, ...r.affinitySets];
  const elements = new Map<string, NftElement[]>();
  for (const s of sets) elements.set(s.name, r.elements.get(s.name) ?? []);
  // A ClusterIP is listed once per port, an endpoint once per Service using it; a set holds each once.
  for (const name of [NFT.clusterIPs, NFT.hairpin]) {
    const seen = new Set<string>();
    elements.set(
      name,
      elements.get(name)!.filter((e) => !seen.has(keyText(e.key)) && seen.add(keyText(e.key))),
    );
  }
  // Two Services may claim the same destination (externalIPs and load-balancer IPs are not
  // checked for uniqueness by the API server). A map holds one value per key: the first service
  // port in plan order wins, as the first matching rule does in iptables mode.
  const conflicts = keepFirstKeys(elements, [NFT.serviceIPs, NFT.serviceNodePorts, NFT.noEndpointServices, NFT.noEndpointNodePorts, NFT.firewallIPs]);

  const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  // r.chains holds the fixed chains only: the service ports' are in their parts.
  const fixedChains: NftChain[] = [...BASE_CHAINS];
  for (const [name, rules] of r.chains) fixedChains.push({ name, rules: rules as NftRule[] });
  let allChains: NftChain[] | undefined;
  return {
    family,
    table: TABLE,
    sets: sets.sort(byName),
    get chains() {
      if (allChains) return allChains;
      const all = [...fixedChains];
      for (const part of services.values()) for (const c of part.chains) all.push(c);
      return (allChains = all.sort(byName));
    },
    fixedSets,
    fixedChains,
    elements,
    services,
    conflicts,
    skipped,
  };
}

function renderServicePort(sp: ServicePortPlan, plan: ProxyPlan, family: NftFamily): NftServiceRules {
  const r = new Renderer(plan, family);
  r.servicePort(sp);
  let count = 0;
  for (const list of r.elements.values()) count += list.length;
  const elements = new Array<readonly [string, NftElement]>(count);
  let i = 0;
  for (const [set, list] of r.elements) for (const e of list) elements[i++] = [set, e];
  // Copies sized to their content: an array grown by push keeps spare room.
  let ruleCount = 0;
  const chains = Array.from(r.chains, ([name, rules]): NftChain => {
    if (!Array.isArray(rules)) {
      ruleCount += rules.ruleCount;
      return rules;
    }
    ruleCount += rules.length;
    return { name, rules: rules.slice() };
  });
  return { chains, elements, sets: r.affinitySets.slice(), ruleCount };
}

/** Accumulates chains, elements and affinity sets while walking the service ports. */
class Renderer {
  /** Chains in the order first written; a service port's endpoint selection is lazy ({@link SelectionChain}). */
  readonly chains = new Map<string, NftRule[] | SelectionChain>();
  readonly elements = new Map<string, NftElement[]>();
  readonly affinitySets: NftSetSpec[] = [];
  readonly #plan: ProxyPlan;
  readonly #family: NftFamily;

  constructor(plan: ProxyPlan, family: NftFamily) {
    this.#plan = plan;
    this.#family = family;
  }

  /** Declares a chain (when new) and appends rules to it. */
  chain(name: string, ...rules: NftRule[]): void {
    let list = this.chains.get(name);
    if (!list) this.chains.set(name, (list = []));
    if (!Array.isArray(list)) throw new Error(`BUG: rule added to ${name} after its endpoint selection`);
    for (const rule of rules) list.push(rule.comment === undefined ? rule : { ...rule, comment: checkedComment(rule.comment) });
  }

  element(set: string, ...elements: NftElement[]): void {
    for (const e of elements) this.collect(set, e.comment === undefined ? e : { ...e, comment: checkedComment(e.comment) });
  }

  /** Appends an element whose comment was already checked. */
  collect(set: string, e: NftElement): void {
    const list = this.elements.get(set);
    if (list) list.push(e);
    else this.elements.set(set, [e]);
  }

  servicePort(sp: ServicePortPlan): void {
    const plan = this.#plan;
    const ip = this.#family;
    const saddr = payload(ip, 'saddr');
    const proto = sp.protocol.toLowerCase() as 'tcp' | 'udp' | 'sctp';
    const names = serviceNames(sp.name, sp.protocol);
    const internalChain = sp.internalPolicyLocal ? names.local : names.service;
    const externalPolicyChain = sp.externalPolicyLocal ? names.local : names.service;
    const key = (addr: string) => ({ concat: [addr, proto, sp.port] });
    const noEndpoints = (verdict: 'REJECT' | 'DROP') => (verdict === 'REJECT' ? goto(NFT.reject) : DROP);
    const hasEndpoints = sp.internalNoEndpoints !== 'REJECT';

    this.element(NFT.clusterIPs, { key: sp.clusterIP });
    // ClusterIP.
    if (sp.internalNoEndpoints === undefined) this.element(NFT.serviceIPs, { key: key(sp.clusterIP), value: goto(internalChain) });
    else this.element(NFT.noEndpointServices, { key: key(sp.clusterIP), value: noEndpoints(sp.internalNoEndpoints), comment: sp.name });
    // externalIPs and load-balancer IPs (source ranges are checked before DNAT, in firewall-check).
    for (const addr of [...sp.externalIPs, ...sp.loadBalancerIPs]) {
      if (hasEndpoints) this.element(NFT.serviceIPs, { key: key(addr), value: goto(names.external) });
      if (sp.externalNoEndpoints) this.element(NFT.noEndpointServices, { key: key(addr), value: noEndpoints(sp.externalNoEndpoints), comment: sp.name });
    }
    // Before the no-endpoints verdict, as upstream's nftables mode: with no endpoints, a source outside the ranges is dropped, not rejected.
    if (sp.filtersSourceRanges) {
      for (const addr of sp.loadBalancerIPs) this.element(NFT.firewallIPs, { key: key(addr), value: goto(names.firewall) });
      const allowed = [...sp.loadBalancerSourceRanges, ...(sp.allowLoadBalancerIPsAsSource ? sp.loadBalancerIPs : [])];
      this.chain(names.firewall, ...allowed.map((cidr) => ({ expr: [eq(saddr, prefix(cidr)), RETURN] })), { expr: [DROP] });
    }
    // NodePort (never subject to loadBalancerSourceRanges).
    if (sp.nodePort !== 0) {
      const npKey = { concat: [proto, sp.nodePort] };
      if (hasEndpoints) this.element(NFT.serviceNodePorts, { key: npKey, value: goto(names.external) });
      if (sp.externalNoEndpoints) this.element(NFT.noEndpointNodePorts, { key: npKey, value: noEndpoints(sp.externalNoEndpoints), comment: sp.name });
    }

    // Masquerade ClusterIP traffic from outside the pod network.
    if (sp.internalNoEndpoints === undefined && (plan.masqueradeAll || plan.localDetector)) {
      const from = plan.masqueradeAll ? [] : [localMatch(plan.localDetector!, ip, false)];
      this.chain(internalChain, { expr: [eq(payload(ip, 'daddr'), sp.clusterIP), eq(payload(proto, 'dport'), sp.port), ...from, jump(NFT.markMasq)], comment: `${sp.name} cluster IP` });
    }

    // External destinations.
    if (sp.usesExternalChain) {
      this.chain(names.external);
      if (!sp.externalPolicyLocal) {
        this.chain(names.external, { expr: [jump(NFT.markMasq)], comment: `masquerade traffic for ${sp.name} external destinations` });
      } else if (sp.clusterEndpoints.length > 0) {
        // Pods and the node itself short-circuit to the Cluster endpoints.
        if (plan.localDetector) this.chain(names.external, { expr: [localMatch(plan.localDetector, ip, true), goto(names.service)], comment: `pod traffic for ${sp.name} external destinations` });
        this.chain(names.external, { expr: [eq(fibType('saddr'), 'local'), jump(NFT.markMasq)], comment: `masquerade LOCAL traffic for ${sp.name} external destinations` });
        this.chain(names.external, { expr: [eq(fibType('saddr'), 'local'), goto(names.service)], comment: `route LOCAL traffic for ${sp.name} external destinations` });
      }
      if (sp.externalNoEndpoints === undefined) this.chain(names.external, { expr: [goto(externalPolicyChain)] });
    }

    // Endpoint selection: DNAT in the cascade itself, no per-endpoint chains.
    const affinity = sp.affinityTimeoutSeconds;
    const affinitySet = new Map<string, string>();
    for (const ep of sp.reachableEndpoints) {
      if (ep.mayBeLocal) this.element(NFT.hairpin, { key: { concat: [ep.ip, ep.ip] } });
      if (affinity === undefined) continue;
      const set = endpointNames(names.base, ep.ip, ep.port).affinity;
      affinitySet.set(ep.hostPort, set);
      this.affinitySets.push({ name: set, type: ip === 'ip6' ? 'ipv6_addr' : 'ipv4_addr', flags: ['timeout'], timeout: affinity });
    }
    if (sp.clusterEndpoints.length > 0) this.#selection(names.service, proto, sp.clusterEndpoints, affinitySet);
    if (sp.localEndpoints.length > 0) this.#selection(names.local, proto, sp.localEndpoints, affinitySet);
  }

  /** Ends `chain` with the endpoint selection over `endpoints` ({@link SelectionChain}), after the rules it already has. */
  #selection(chain: string, proto: 'tcp' | 'udp' | 'sctp', endpoints: readonly PlannedEndpoint[], affinitySets: ReadonlyMap<string, string>): void {
    const head = this.chains.get(chain);
    const sets = affinitySets.size === 0 ? undefined : endpoints.map((ep) => affinitySets.get(ep.hostPort));
    this.chains.set(chain, new SelectionChain(chain, Array.isArray(head) ? head.slice() : [], endpoints, proto, sets, payload(this.#family, 'saddr')));
  }
}
