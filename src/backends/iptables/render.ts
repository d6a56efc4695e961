/**
 * Plan → iptables rules, in upstream kube-proxy's shapes (pkg/proxy/iptables/proxier.go
 * `syncProxyRules`, `writeServiceToEndpointRules`): the same chains,
 * matches, comments and argument order, so `iptables-save` of a kproxy node reads like one run by
 * kube-proxy. Deliberate differences: no nfacct counters, no localhost NodePorts (as with
 * upstream's `--iptables-localhost-nodeports=false`, which avoids `route_localnet`, CVE-2020-8558).
 *
 * Output is deterministic: chains in name order (which also makes iptables-nft's `--noflush`
 * restore several times faster: 45 s against 255–600 s at 5k Services, iptables 1.8.9), rules in plan order.
 * @module
 */
import { IdentityCache } from '../../planner/cache.ts';
import { detectorKey, type LocalDetector, type NoEndpointVerdict, type PlannedEndpoint, type ProxyPlan, type ServicePortPlan } from '../../planner/plan.ts';
import { renderParts, type RenderSkip } from '../backend.ts';
import { flat } from '../../state/strings.ts';
import { EndpointChain, SelectionChain, type EndpointShape } from './chains.ts';
import { endpointChainName, fitComment, serviceChainNames } from './names.ts';

/** The tables kproxy writes. */
export type TableName = 'filter' | 'nat';

/**
 * One chain kproxy owns, with its rules as restore arguments after `-A <chain> `. A service port's
 * KUBE-SEP- chains and endpoint selection make `rules` on each read (the same text every time), so
 * read it once per use.
 */
export interface IptablesChain {
  readonly name: string;
  readonly rules: readonly string[];
}

/** A rule in a built-in chain that sends packets into kproxy's chains. */
export interface JumpRule {
  readonly table: TableName;
  /** INPUT, FORWARD, OUTPUT, PREROUTING or POSTROUTING. */
  readonly from: string;
  /** Arguments after `-I <from> `, ending in `-j <target>`. */
  readonly spec: string;
  readonly target: string;
}

/** A rule one service port puts in a chain it shares with others (KUBE-SERVICES, KUBE-NODEPORTS, …). */
export interface SharedRule {
  readonly table: TableName;
  readonly chain: string;
  /** Restore arguments after `-A <chain> `. */
  readonly rule: string;
}

/** What one service port contributes to the ruleset. Rendered once per plan of it and then reused. */
export interface IptablesServiceRules {
  /** Its own nat chains (KUBE-SVC-, -SVL-, -EXT-, -FW-, -SEP-), in the order they were first written. */
  readonly chains: readonly IptablesChain[];
  /** Its rules in the fixed chains, in order. */
  readonly shared: readonly SharedRule[];
  /** How many rules `chains` hold (counting them by reading would make the lazy ones). */
  readonly ruleCount: number;
}

/** The complete desired iptables state: every owned chain of each table, and the jumps into them. */
export interface IptablesRuleset {
  /** Every owned chain, sorted by name (built on first read: incremental writes do not need it). */
  readonly filter: readonly IptablesChain[];
  /** Every owned chain, sorted by name (built on first read). */
  readonly nat: readonly IptablesChain[];
  /** The fixed chains ({@link FIXED_CHAINS}) with every rule, per-service ones included, by table and name. */
  readonly fixed: Readonly<Record<TableName, ReadonlyMap<string, readonly string[]>>>;
  /** In the order upstream inserts them (each `-I` goes to the top of its chain). */
  readonly jumps: readonly JumpRule[];
  /**
   * Each service port's part, keyed by `servicePortKey` (backend.ts), in plan order. A part that is the
   * same object in two rulesets is unchanged between them, which is how the writer finds what
   * changed without comparing every chain.
   */
  readonly services: ReadonlyMap<string, IptablesServiceRules>;
  /** Service ports left out because their rules could not be rendered. */
  readonly skipped: readonly RenderSkip[];
}

/** Rendering options that are iptables-specific. */
export interface IptablesOptions {
  /**
   * `net.netfilter.nf_conntrack_tcp_be_liberal` is 1: leave out the conntrack INVALID drop rule
   * in KUBE-FORWARD, as upstream does (PR #120412).
   */
  readonly conntrackTCPBeLiberal: boolean;
}

/** Upstream's large-cluster threshold: above this many endpoints, endpoint rules carry no comment. */
export const LARGE_CLUSTER_ENDPOINTS = 1000;

/** Fixed chain names (upstream's constants). */
export const CHAIN = {
  services: 'KUBE-SERVICES',
  externalServices: 'KUBE-EXTERNAL-SERVICES',
  nodePorts: 'KUBE-NODEPORTS',
  forward: 'KUBE-FORWARD',
  proxyFirewall: 'KUBE-PROXY-FIREWALL',
  postrouting: 'KUBE-POSTROUTING',
  markMasq: 'KUBE-MARK-MASQ',
} as const;

/** Chains in each table kproxy owns even with no Services. */
export const FIXED_CHAINS: Record<TableName, readonly string[]> = {
  filter: [CHAIN.services, CHAIN.externalServices, CHAIN.forward, CHAIN.nodePorts, CHAIN.proxyFirewall],
  nat: [CHAIN.services, CHAIN.nodePorts, CHAIN.postrouting, CHAIN.markMasq],
};

/** Prefixes of per-service-port and per-endpoint chains (nat table). */
export const SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'] as const;

/** True when a chain of `table` belongs to kproxy (and so may be flushed or deleted by it). */
export function isOwnedChain(table: TableName, chain: string): boolean {
  if (FIXED_CHAINS[table].includes(chain)) return true;
  return table === 'nat' && SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

/** xt_comment's limit (XT_MAX_COMMENT_LEN, 256 bytes with the terminating NUL). */
const MAX_COMMENT = 255;

const NODEPORTS_COMMENT = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';

/**
 * Memory of earlier renders: a service port whose plan is the same object as last time (see the
 * planner's PlanCache) is not rendered again ({@link IdentityCache}). Everything a service port's
 * rules depend on besides its plan is in the context; a new context renders everything anew.
 */
export class IptablesRenderCache extends IdentityCache<ServicePortPlan, IptablesServiceRules | RenderSkip> {
  /** Service ports rendered (cache misses) by the last render. */
  get rendered(): number {
    return this.misses;
  }
}

/**
 * Renders the plan.
 * @param cache earlier renders to reuse; the result is the same with or without it
 * A service port whose rules cannot be rendered (a comment with a character iptables-restore cannot
 * take, which the state stage's validators should already have refused) is left out and listed in
 * `skipped`; every other one is rendered.
 */
export function renderIptables(plan: ProxyPlan, options: IptablesOptions, cache?: IptablesRenderCache): IptablesRuleset {
  const mark = plan.masqueradeMark;
  const large = plan.totalEndpoints > LARGE_CLUSTER_ENDPOINTS;
  const fixed = { filter: new Map<string, string[]>(), nat: new Map<string, string[]>() };
  for (const table of ['filter', 'nat'] as const) for (const name of FIXED_CHAINS[table]) fixed[table].set(name, []);
  const filter = (chain: string, ...rule: string[]) => fixed.filter.get(chain)!.push(rule.join(' '));
  const nat = (chain: string, ...rule: string[]) => fixed.nat.get(chain)!.push(rule.join(' '));

  cache?.begin(`${plan.family} ${mark} ${plan.masqueradeAll} ${detectorKey(plan.localDetector)} ${large}`);
  const { parts: services, skipped } = renderParts(plan, (sp) => renderServicePort(sp, plan, large), cache);
  for (const part of services.values()) for (const r of part.shared) fixed[r.table].get(r.chain)!.push(r.rule);

  if (plan.nodePortDestinations.kind === 'all') {
    const loopback = plan.family === 6 ? '::1/128' : '127.0.0.0/8';
    nat(CHAIN.services, comment(NODEPORTS_COMMENT), '-m addrtype --dst-type LOCAL', `! -d ${loopback}`, `-j ${CHAIN.nodePorts}`);
  } else {
    for (const ip of plan.nodePortDestinations.addresses) nat(CHAIN.services, comment(NODEPORTS_COMMENT), `-d ${ip}`, `-j ${CHAIN.nodePorts}`);
  }

  if (!options.conntrackTCPBeLiberal) filter(CHAIN.forward, '-m conntrack --ctstate INVALID -j DROP');
  filter(CHAIN.forward, comment('kubernetes forwarding rules'), `-m mark --mark ${mark}/${mark}`, '-j ACCEPT');
  filter(CHAIN.forward, comment('kubernetes forwarding conntrack rule'), '-m conntrack --ctstate RELATED,ESTABLISHED', '-j ACCEPT');
  nat(CHAIN.markMasq, `-j MARK --or-mark ${mark}`);
  nat(CHAIN.postrouting, `-m mark ! --mark ${mark}/${mark}`, '-j RETURN');
  nat(CHAIN.postrouting, `-j MARK --xor-mark ${mark}`);
  nat(CHAIN.postrouting, comment('kubernetes service traffic requiring SNAT'), '-j MASQUERADE --random-fully');

  const chainsOf = (m: Map<string, string[]>): IptablesChain[] => Array.from(m, ([name, rules]) => ({ name, rules }));
  const byName = (a: IptablesChain, b: IptablesChain) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  let filterChains: IptablesChain[] | undefined;
  let natChains: IptablesChain[] | undefined;
  return {
    get filter() {
      return (filterChains ??= chainsOf(fixed.filter).sort(byName));
    },
    get nat() {
      if (natChains) return natChains;
      const all = chainsOf(fixed.nat);
      for (const part of services.values()) for (const c of part.chains) all.push(c);
      return (natChains = all.sort(byName));
    },
    fixed,
    jumps: JUMPS,
    services,
    skipped,
  };
}

type Emit = (chain: string, ...rule: string[]) => void;

function renderServicePort(sp: ServicePortPlan, plan: ProxyPlan, large: boolean): IptablesServiceRules {
  const shared: SharedRule[] = [];
  // Chains in the order first written; the endpoint selection and per-endpoint ones are lazy (below).
  const own = new Map<string, string[] | IptablesChain>();
  const filter: Emit = (chain, ...rule) => shared.push({ table: 'filter', chain, rule: rule.join(' ') });
  // nat(chain) alone declares an own chain; with arguments it also appends a rule.
  const nat: Emit = (chain, ...rule) => {
    if (chain === CHAIN.services || chain === CHAIN.nodePorts) {
      shared.push({ table: 'nat', chain, rule: rule.join(' ') });
      return;
    }
    let rules = own.get(chain);
    if (!rules) own.set(chain, (rules = []));
    if (!Array.isArray(rules)) throw new Error(`BUG: rule added to ${chain} after its endpoint selection`);
    if (rule.length > 0) rules.push(rule.join(' '));
  };
  const names = serviceChainNames(sp.name, sp.protocol);
  const proto = sp.protocol.toLowerCase();
  const match = `-m ${proto} -p ${proto}`;
  const to = (ip: string, port: number) => `-d ${ip} --dport ${port}`;
  const internalChain = sp.internalPolicyLocal ? names.svl : names.svc;
  const externalPolicyChain = sp.externalPolicyLocal ? names.svl : names.svc;
  const lbChain = sp.usesFirewallChain ? names.fw : names.ext;
  const noEndpointsComment = (verdict: string | undefined) => comment(verdict === 'REJECT' ? `${sp.name} has no endpoints` : `${sp.name} has no local endpoints`);
  // ip6tables' REJECT answers ICMPv6 port unreachable by default; written out, as ip6tables-save shows it.
  const target = (verdict: NoEndpointVerdict) => (verdict === 'REJECT' && plan.family === 6 ? '-j REJECT --reject-with icmp6-port-unreachable' : `-j ${verdict}`);

  // ClusterIP.
  if (sp.internalNoEndpoints === undefined) {
    nat(CHAIN.services, comment(`${sp.name} cluster IP`), match, to(sp.clusterIP, sp.port), `-j ${internalChain}`);
  } else {
    filter(CHAIN.services, noEndpointsComment(sp.internalNoEndpoints), match, to(sp.clusterIP, sp.port), target(sp.internalNoEndpoints));
  }
  const hasEndpoints = sp.internalNoEndpoints !== 'REJECT';
  // externalIPs.
  for (const ip of sp.externalIPs) {
    if (hasEndpoints) nat(CHAIN.services, comment(`${sp.name} external IP`), match, to(ip, sp.port), `-j ${names.ext}`);
    if (sp.externalNoEndpoints) filter(CHAIN.externalServices, noEndpointsComment(sp.externalNoEndpoints), match, to(ip, sp.port), target(sp.externalNoEndpoints));
  }
  // Load-balancer IPs.
  for (const ip of sp.loadBalancerIPs) {
    if (hasEndpoints) nat(CHAIN.services, comment(`${sp.name} loadbalancer IP`), match, to(ip, sp.port), `-j ${lbChain}`);
    if (sp.usesFirewallChain) {
      filter(CHAIN.proxyFirewall, comment(`${sp.name} traffic not accepted by ${names.fw}`), match, to(ip, sp.port), '-j DROP');
    }
  }
  if (sp.externalNoEndpoints) {
    for (const ip of sp.loadBalancerIPs) {
      filter(CHAIN.externalServices, noEndpointsComment(sp.externalNoEndpoints), match, to(ip, sp.port), target(sp.externalNoEndpoints));
    }
  }
  // NodePort (never subject to loadBalancerSourceRanges).
  if (sp.nodePort !== 0) {
    if (hasEndpoints) nat(CHAIN.nodePorts, comment(sp.name), match, `--dport ${sp.nodePort}`, `-j ${names.ext}`);
    if (sp.externalNoEndpoints) {
      filter(CHAIN.externalServices, noEndpointsComment(sp.externalNoEndpoints), '-m addrtype --dst-type LOCAL', match, `--dport ${sp.nodePort}`, target(sp.externalNoEndpoints));
    }
  }
  if (sp.healthCheckNodePort !== 0) {
    filter(CHAIN.nodePorts, comment(`${sp.name} health check node port`), '-m tcp -p tcp', `--dport ${sp.healthCheckNodePort}`, '-j ACCEPT');
  }

  // Masquerade ClusterIP traffic from outside the pod network.
  if (sp.internalNoEndpoints === undefined) {
    const args = [comment(`${sp.name} cluster IP`), match, to(sp.clusterIP, sp.port)];
    if (plan.masqueradeAll) nat(internalChain, ...args, `-j ${CHAIN.markMasq}`);
    else if (plan.localDetector) nat(internalChain, ...args, localMatch(plan.localDetector, false), `-j ${CHAIN.markMasq}`);
  }

  // External destinations.
  if (sp.usesExternalChain) {
    nat(names.ext); // declared even when it ends up with no rule
    if (!sp.externalPolicyLocal) {
      nat(names.ext, comment(`masquerade traffic for ${sp.name} external destinations`), `-j ${CHAIN.markMasq}`);
    } else {
      if (plan.localDetector) nat(names.ext, comment(`pod traffic for ${sp.name} external destinations`), localMatch(plan.localDetector, true), `-j ${names.svc}`);
      nat(names.ext, comment(`masquerade LOCAL traffic for ${sp.name} external destinations`), '-m addrtype --src-type LOCAL', `-j ${CHAIN.markMasq}`);
      nat(names.ext, comment(`route LOCAL traffic for ${sp.name} external destinations`), '-m addrtype --src-type LOCAL', `-j ${names.svc}`);
    }
    if (sp.externalNoEndpoints === undefined) nat(names.ext, `-j ${externalPolicyChain}`);
  }

  // loadBalancerSourceRanges.
  if (sp.usesFirewallChain) {
    const lbComment = comment(`${sp.name} loadbalancer IP`);
    for (const cidr of sp.loadBalancerSourceRanges) nat(names.fw, lbComment, `-s ${cidr}`, `-j ${names.ext}`);
    if (sp.allowLoadBalancerIPsAsSource) for (const ip of sp.loadBalancerIPs) nat(names.fw, lbComment, `-s ${ip}`, `-j ${names.ext}`);
    nat(names.fw, comment(`other traffic to ${sp.name} will be dropped by ${CHAIN.proxyFirewall}`));
  }

  // Endpoint selection; each KUBE-SEP- name is hashed once per service port.
  const sepNames = new Map(sp.reachableEndpoints.map((ep) => [ep.hostPort, endpointChainName(sp.name, sp.protocol, ep.hostPort)]));
  const select = (chain: string, endpoints: readonly PlannedEndpoint[]) => {
    const head = own.get(chain);
    own.set(
      chain,
      new SelectionChain(
        chain,
        Array.isArray(head) ? head.slice() : [],
        endpoints.map((ep) => sepNames.get(ep.hostPort)!),
        // Made, and so checked, at render; none in a large cluster, as upstream.
        large ? undefined : endpoints.map((ep) => comment(`${sp.name} -> ${ep.hostPort}`)),
        sp.affinityTimeoutSeconds,
      ),
    );
  };
  if (sp.clusterEndpoints.length > 0) select(names.svc, sp.clusterEndpoints);
  if (sp.localEndpoints.length > 0) select(names.svl, sp.localEndpoints);

  // Per-endpoint chains: hairpin masquerade, affinity, DNAT.
  const shape: EndpointShape = {
    comment: large ? '' : flat(comment(sp.name), ' '),
    match: flat(match, ' '),
    affinity: sp.affinityTimeoutSeconds !== undefined,
    markMasq: CHAIN.markMasq,
  };
  for (const ep of sp.reachableEndpoints) {
    const sep = sepNames.get(ep.hostPort)!;
    own.set(sep, new EndpointChain(sep, ep, shape));
  }
  let ruleCount = 0;
  // Copies sized to their content: an array grown by push keeps spare room (17 slots for 2 rules).
  const chains = Array.from(own, ([name, rules]): IptablesChain => {
    if (!Array.isArray(rules)) {
      ruleCount += rules instanceof EndpointChain ? 2 : (rules as SelectionChain).ruleCount;
      return rules;
    }
    ruleCount += rules.length;
    return { name, rules: rules.slice() };
  });
  return { chains, shared: shared.slice(), ruleCount };
}

/**
 * The match of upstream's iptables local-traffic detector (pkg/proxy/util/localdetector.go):
 * `-s CIDR`, `-i br0` or `-i veth+` for traffic from this node's pods, `! …` for the rest.
 */
export function localMatch(d: LocalDetector, local: boolean): string {
  const not = local ? '' : '! ';
  switch (d.kind) {
    case 'cidr':
      return `${not}-s ${d.cidr}`;
    case 'interface':
      return `${not}-i ${d.name}`;
    case 'interfacePrefix':
      return `${not}-i ${d.prefix}+`;
  }
}

/**
 * `-m comment --comment <text>`, double-quoted when the text has a space, as upstream writes it.
 * @throws Error for text iptables-restore would split or misread (quotes, backslashes, control
 *   characters) or that is longer than xt_comment's 255 bytes
 */
export function comment(full: string): string {
  const text = fitComment(full, MAX_COMMENT);
  if (!/^[\x20-\x7e]{1,255}$/.test(text) || /["'\\]/.test(text)) {
    throw new Error(`refusing to write comment ${JSON.stringify(text)} into an iptables rule`);
  }
  return `-m comment --comment ${text.includes(' ') ? `"${text}"` : text}`;
}

/** A jump from a built-in chain: extra matches first, then the comment, as upstream builds it (`iptablesJumpChains`). */
function jump(table: TableName, from: string, target: string, text: string, extra = ''): JumpRule {
  return { table, from, target, spec: [extra, comment(text), `-j ${target}`].filter(Boolean).join(' ') };
}

const NEW = '-m conntrack --ctstate NEW';

/** The jumps from built-in chains, in upstream's `iptablesJumpChains` order. */
const JUMPS: readonly JumpRule[] = [
  jump('filter', 'INPUT', CHAIN.externalServices, 'kubernetes externally-visible service portals', NEW),
  jump('filter', 'FORWARD', CHAIN.externalServices, 'kubernetes externally-visible service portals', NEW),
  jump('filter', 'INPUT', CHAIN.nodePorts, 'kubernetes health check service ports'),
  jump('filter', 'FORWARD', CHAIN.services, 'kubernetes service portals', NEW),
  jump('filter', 'OUTPUT', CHAIN.services, 'kubernetes service portals', NEW),
  jump('filter', 'FORWARD', CHAIN.forward, 'kubernetes forwarding rules'),
  jump('filter', 'INPUT', CHAIN.proxyFirewall, 'kubernetes load balancer firewall', NEW),
  jump('filter', 'OUTPUT', CHAIN.proxyFirewall, 'kubernetes load balancer firewall', NEW),
  jump('filter', 'FORWARD', CHAIN.proxyFirewall, 'kubernetes load balancer firewall', NEW),
  jump('nat', 'OUTPUT', CHAIN.services, 'kubernetes service portals'),
  jump('nat', 'PREROUTING', CHAIN.services, 'kubernetes service portals'),
  jump('nat', 'POSTROUTING', CHAIN.postrouting, 'kubernetes postrouting rules'),
];
