/**
 * Renders a {@link PolicyPlan} into kproxy's NetworkPolicy table, `inet kproxy-policy`: one table
 * for both families, the same whatever `--proxy-mode` is, written by the Service tables' nft writer
 * (it is an {@link NftRuleset}, so diff, staged writes, verify and drift are theirs).
 *
 * ```
 * table inet kproxy-policy {
 *   map ingress-ip  { type ipv4_addr : verdict }   # local pod address → jump ingress-<hash>-<ns/pod>
 *   map egress-ip   { type ipv4_addr : verdict }   # local pod address → jump egress-<hash>-<ns/pod>
 *   map ingress-ip6, egress-ip6                     # the same for IPv6
 *   set node-ip, node-ip6                           # this node's addresses: always allowed
 *   set peers-<id>-ip, peers-<id>-ip6               # one pods peer's addresses, shared by every rule naming it
 *   set named-<id>-ip, named-<id>-ip6               # one egress rule's named-port targets: address . protocol . port
 *   chain forward { type filter hook forward priority 0; policy accept;
 *     ct state established,related accept          # replies of allowed connections; established traffic stops here
 *     ip saddr vmap @egress-ip ; ip6 saddr vmap @egress-ip6    # the source's egress, when it is an isolated local pod
 *     ip daddr vmap @ingress-ip ; ip6 daddr vmap @ingress-ip6  # then the destination's ingress
 *   }
 *   chain egress-…  { <allowed> return ; … ; drop }   # return: on to the destination's ingress
 *   chain ingress-… { <allowed> accept ; … ; drop }
 * }
 * ```
 *
 * Only isolated directions get a chain and map elements; an unisolated pod costs nothing. The
 * forward hook sees pod traffic after Service DNAT (nat prerouting comes first) and before
 * masquerade (nat postrouting comes after), so policy sees the chosen endpoint and the real client.
 * Traffic from the node itself leaves by the output hook and never meets these rules (always
 * allowed, as the API says); `node-ip` covers the node's addresses as sources or destinations that
 * do cross the forward hook. A bridge CNI needs `br_netfilter` (bridge-nf-call-iptables), as
 * kube-proxy does, for same-node pod traffic to reach the hook.
 * @module
 */
import { IdentityCache } from '../../planner/cache.ts';
import type { DirectionPlan, NamedTargetSet, PeerSet, PodPolicyPlan, PolicyPlan, PortRange } from '../../planner/policy.ts';
import type { RenderSkip } from '../backend.ts';
import { DROP, RETURN, eq, jump, meta, ne, payload, prefix, type NftElement, type NftFamily, type NftSetSpec, type NftStatement, type NftVerdict } from '../nftables/json.ts';
import { checkedComment, hashAndTruncate } from '../nftables/names.ts';
import { keepFirstKeys, type NftChain, type NftRuleset, type NftServiceRules } from '../nftables/render.ts';

/** The table kproxy owns for NetworkPolicy, family `inet`. */
export const POLICY_TABLE = 'kproxy-policy';

/** Fixed names of the policy table. */
export const POLICY = {
  forward: 'forward',
  /** Verdict maps from a local pod's address to its direction chain, per family. */
  map: (direction: 'ingress' | 'egress', family: NftFamily) => `${direction}-${family}`,
  /** This node's addresses, per family. */
  node: (family: NftFamily) => `node-${family}`,
  /** One peer set's addresses, per family. */
  peers: (id: string, family: NftFamily) => `${id}-${family}`,
  /** One egress rule's named-port targets (address . protocol . port), per family. */
  named: (id: string, family: NftFamily) => `${id}-${family}`,
} as const;

/** A local pod's chain for one direction: `ingress-<hash>-<ns>/<pod>` (cut to nft's length, as upstream cuts its names). */
export function podChainName(direction: 'ingress' | 'egress', pod: string): string {
  return `${direction}-${hashAndTruncate(pod)}`;
}

/** The part key of a local pod, and of a peer set, in {@link NftRuleset.services}. */
export const partKey = {
  pod: (pod: string) => `pod ${pod}`,
  peers: (id: string) => `peers ${id}`,
  named: (id: string) => `named ${id}`,
} as const;

const FAMILIES: readonly NftFamily[] = ['ip', 'ip6'];
const addrType = (f: NftFamily) => (f === 'ip6' ? 'ipv6_addr' : 'ipv4_addr');
const familyOf = (address: string): NftFamily => (address.includes(':') ? 'ip6' : 'ip');
const ACCEPT: NftVerdict = { accept: null };
const established: NftStatement = { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } };

/**
 * Memory of earlier renders: a pod or peer set whose plan is the same object as last time is not
 * rendered again (the planner reuses unchanged ones), so a sync's diff costs what changed.
 */
export class PolicyRenderCache {
  readonly pods = new IdentityCache<PodPolicyPlan, NftServiceRules>();
  readonly peers = new IdentityCache<PeerSet, NftServiceRules>();
  readonly named = new IdentityCache<NamedTargetSet, NftServiceRules>();
}

/**
 * Renders the plan (see the module comment for the table's layout).
 * @param cache earlier renders to reuse; the result is the same with or without it
 * @throws Error if a name or comment would hold characters nft cannot take (a bug: the state
 *   stage admits only DNS names)
 */
export function renderPolicies(plan: PolicyPlan, cache?: PolicyRenderCache): NftRuleset {
  cache?.pods.begin('');
  cache?.peers.begin('');
  cache?.named.begin('');
  const services = new Map<string, NftServiceRules>();
  const skipped: RenderSkip[] = [];
  for (const set of [...plan.peerSets.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    services.set(partKey.peers(set.id), cache ? cache.peers.get(set, () => peerSetPart(set)) : peerSetPart(set));
  }
  for (const set of plan.namedSets.values()) services.set(partKey.named(set.id), cache ? cache.named.get(set, () => namedSetPart(set)) : namedSetPart(set));
  for (const pod of plan.pods) {
    if (!pod.ingress.isolated && !pod.egress.isolated) continue;
    try {
      services.set(partKey.pod(pod.pod), cache ? cache.pods.get(pod, () => podPart(pod)) : podPart(pod));
    } catch (err) {
      // Unreachable with validated input; a pod left out is unisolated, so say so loudly.
      skipped.push({ servicePort: pod.pod, reason: err instanceof Error ? err.message : String(err) });
    }
  }

  const fixedSets: NftSetSpec[] = [];
  for (const f of FAMILIES) {
    for (const d of ['egress', 'ingress'] as const) fixedSets.push({ name: POLICY.map(d, f), type: addrType(f), map: 'verdict' });
    fixedSets.push({ name: POLICY.node(f), type: addrType(f) });
  }
  const fixedChains: NftChain[] = [
    {
      name: POLICY.forward,
      hook: { type: 'filter', hook: 'forward', prio: 0 },
      rules: [
        { expr: [established, ACCEPT] },
        ...FAMILIES.map((f) => ({ expr: [{ vmap: { key: payload(f, 'saddr'), data: `@${POLICY.map('egress', f)}` } }] })),
        ...FAMILIES.map((f) => ({ expr: [{ vmap: { key: payload(f, 'daddr'), data: `@${POLICY.map('ingress', f)}` } }] })),
      ],
    },
  ];
  const elements = new Map<string, NftElement[]>();
  for (const s of fixedSets) elements.set(s.name, []);
  for (const a of plan.nodeAddresses) elements.get(POLICY.node(familyOf(a)))!.push({ key: a });
  const partSets: NftSetSpec[] = [];
  for (const part of services.values()) {
    if (part.sets.length > 0) {
      // A set part (peers, named targets) owns its sets: their lists are made once per part, not per render.
      for (const [name, list] of ownLists(part)) elements.set(name, list);
      partSets.push(...part.sets);
    } else for (const [set, e] of part.elements) elements.get(set)!.push(e);
  }
  // Two pods of this node with one address (an address reused while the API still shows the old pod):
  // a map holds one verdict per key, and a second would fail the whole transaction. The first pod
  // by name keeps it; the conflict is listed (and the diff then compares the maps in full).
  const conflicts = keepFirstKeys(
    elements,
    FAMILIES.flatMap((f) => [POLICY.map('egress', f), POLICY.map('ingress', f)]),
  );
  const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const chains = [...fixedChains];
  for (const part of services.values()) chains.push(...part.chains);
  return {
    family: 'inet',
    table: POLICY_TABLE,
    sets: [...fixedSets, ...partSets].sort(byName),
    chains: chains.sort(byName),
    fixedSets,
    fixedChains,
    elements,
    services,
    conflicts,
    skipped,
  };
}

const lists = new WeakMap<NftServiceRules, Map<string, NftElement[]>>();
/** The element lists of a part's own sets, by set name, made on first use and kept as long as the part. */
function ownLists(part: NftServiceRules): Map<string, NftElement[]> {
  let m = lists.get(part);
  if (m) return m;
  m = new Map(part.sets.map((s) => [s.name, []]));
  for (const [set, e] of part.elements) m.get(set)!.push(e);
  lists.set(part, m);
  return m;
}

/** A peer set's two sets (one a family) and their elements. */
function peerSetPart(set: PeerSet): NftServiceRules {
  const sets = FAMILIES.map((f): NftSetSpec => ({ name: POLICY.peers(set.id, f), type: addrType(f) }));
  const elements = set.addresses.map((a): readonly [string, NftElement] => [POLICY.peers(set.id, familyOf(a)), { key: a }]);
  return { chains: [], elements, sets, ruleCount: 0 };
}

/** An egress rule's named-port targets as two sets of `address . protocol . port` (one a family). */
function namedSetPart(set: NamedTargetSet): NftServiceRules {
  const sets = FAMILIES.map((f): NftSetSpec => ({ name: POLICY.named(set.id, f), type: [addrType(f), 'inet_proto', 'inet_service'] }));
  const elements = set.targets.map((t): readonly [string, NftElement] => [POLICY.named(set.id, familyOf(t.address)), { key: { concat: [t.address, t.protocol.toLowerCase(), t.port] } }]);
  return { chains: [], elements, sets, ruleCount: 0 };
}

/** A local pod's chains for its isolated directions, and its addresses in the maps that jump to them. */
function podPart(pod: PodPolicyPlan): NftServiceRules {
  const chains: NftChain[] = [];
  const elements: (readonly [string, NftElement])[] = [];
  let ruleCount = 0;
  for (const direction of ['ingress', 'egress'] as const) {
    const d = pod[direction];
    if (!d.isolated) continue;
    const name = podChainName(direction, pod.pod);
    const rules = directionRules(direction, d);
    chains.push({ name, rules });
    ruleCount += rules.length;
    for (const a of pod.addresses) elements.push([POLICY.map(direction, familyOf(a)), { key: a, value: jump(name) }]);
  }
  return { chains, elements, sets: [], ruleCount };
}

/**
 * One isolated direction's rules: the node first, then each planned rule as the alternatives of
 * its peers × its ports (each alternative one nft rule), the egress named-port targets (one rule a
 * family, against the rule's set), and a drop.
 * An allowed egress packet returns (to meet the destination's ingress); an allowed ingress one is accepted.
 */
function directionRules(direction: 'ingress' | 'egress', d: DirectionPlan): NftChain['rules'] {
  const field = direction === 'ingress' ? 'saddr' : 'daddr';
  const allow = direction === 'ingress' ? ACCEPT : RETURN;
  const out: { expr: NftStatement[]; comment?: string }[] = [];
  for (const f of FAMILIES) out.push({ expr: [eq(payload(f, field), `@${POLICY.node(f)}`), allow], comment: 'its node' });
  for (const rule of d.rules) {
    const comment = checkedComment(`${rule.policy} ${direction} rule ${rule.index}`);
    const peers: NftStatement[][] =
      rule.peers === 'any'
        ? [[]]
        : [
            ...rule.peers.sets.flatMap((id) => FAMILIES.map((f) => [eq(payload(f, field), `@${POLICY.peers(id, f)}`)])),
            ...rule.peers.blocks.map((b) => {
              const f = familyOf(b.cidr);
              return [eq(payload(f, field), prefix(b.cidr)), ...b.except.map((e) => ne(payload(f, field), prefix(e)))];
            }),
          ];
    const ports: NftStatement[][] = rule.ports === 'any' ? [[]] : rule.ports.map(portMatch);
    for (const p of peers) for (const q of ports) out.push({ expr: [...p, ...q, allow], comment });
    if (rule.namedSet !== undefined)
      for (const f of FAMILIES) out.push({ expr: [eq({ concat: [payload(f, 'daddr'), meta('l4proto'), payload('th', 'dport')] }, `@${POLICY.named(rule.namedSet, f)}`), allow], comment });
  }
  out.push({ expr: [DROP], comment: checkedComment(`isolated by ${d.policies.join(', ')}`) });
  return out;
}

/** `tcp dport 80` or `tcp dport 80-90` (nft adds the l4proto dependency, and lists it so). */
function portMatch(r: PortRange): NftStatement[] {
  const proto = r.protocol === 'TCP' ? 'tcp' : r.protocol === 'UDP' ? 'udp' : 'sctp';
  return [eq(payload(proto, 'dport'), r.from === r.to ? r.from : { range: [r.from, r.to] })];
}
