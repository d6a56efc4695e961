/**
 * NetworkPolicy planner (pure): policies, pods and namespaces in; for each pod on this node, its
 * ingress and egress allow-lists out, with the peer sets they name computed once each. No I/O.
 *
 * The API's semantics (NetworkPolicy API reference; upstream e2e test/e2e/network/netpol):
 * - a pod is **isolated** in a direction when some policy of its namespace selects it and has that
 *   policy type; then only what the union of those policies' rules allows passes, in that
 *   direction; an unisolated direction allows everything;
 * - a rule allows a peer matching any of its peers (none listed: every peer) on any of its ports
 *   (none listed: every port); a pods peer is `podSelector` in the policy's namespace, or in the
 *   namespaces `namespaceSelector` selects (both given: both must match, AND); an `ipBlock` matches
 *   its CIDR minus its `except` ranges, pod addresses included;
 * - a named port means, per pod, the port its containers give that name and protocol: for ingress
 *   the local pod's own, for egress each destination pod's (so one rule can be different numbers
 *   on different pods; a pod without that name is not reached through it);
 * - host-network pods and pods without an address are never selected and are no pod peers; pods
 *   that finished (Succeeded, Failed) neither;
 * - traffic between a pod and its own node is always allowed (the node's addresses);
 * - replies and related traffic of an allowed connection are allowed (the backend matches
 *   conntrack state before any of this); policy applies to pod addresses after Service DNAT.
 * @module
 */
import { cidrContains, parseCIDR, parseIP, type CIDR, type IPAddress } from '../state/ip.ts';
import { selects, selectorText, type Labels } from '../state/labels.ts';
import type { Protocol } from '../state/model.ts';
import { hashSuffix } from '../state/strings.ts';
import type { NamespaceFacts, NetworkPolicy, PodFacts, PolicyPeer, PolicyRule } from '../state/networkpolicy.ts';

/** What the planner reads (the PolicyStateStore's maps, this node). */
export interface PolicyInput {
  readonly policies: ReadonlyMap<string, NetworkPolicy>;
  readonly pods: ReadonlyMap<string, PodFacts>;
  readonly namespaces: ReadonlyMap<string, NamespaceFacts>;
  /** This node's name: its pods are the ones enforced here. */
  readonly nodeName: string;
  /** This node's addresses: traffic between its pods and them is always allowed. */
  readonly nodeAddresses: readonly IPAddress[];
}

/** The addresses of the pods one pods peer selects, named by what selects them. */
export interface PeerSet {
  /** `peers-` and 16 base32 characters of the hash of {@link PeerSet.description}: a name nft can take. */
  readonly id: string;
  /** `pods app=web in namespace x` or `pods {} in namespaces team=a`. */
  readonly description: string;
  /** Sorted, both families, each once. */
  readonly addresses: readonly string[];
}

/** An `ipBlock` peer as text. */
export interface PlannedBlock {
  readonly cidr: string;
  readonly except: readonly string[];
}

/** Ports of a protocol, `from`–`to` inclusive (1–65535 for every port). */
export interface PortRange {
  readonly protocol: Protocol;
  readonly from: number;
  readonly to: number;
}

/** A destination pod's resolved named port (egress): that address, protocol and port. */
export interface NamedTarget {
  readonly address: string;
  readonly protocol: Protocol;
  readonly port: number;
}

/** One rule of one policy, planned for one pod and direction. */
export interface PlannedRule {
  /** `namespace/name` of the policy. */
  readonly policy: string;
  /** Index of the rule in the policy's `ingress` or `egress`. */
  readonly index: number;
  /** Whom it allows: everyone, or the union of the sets and blocks. */
  readonly peers: 'any' | { readonly sets: readonly string[]; readonly blocks: readonly PlannedBlock[] };
  /** On which ports, with `peers`: every port, or the ranges (empty: none, e.g. a named port the pod lacks). */
  readonly ports: 'any' | readonly PortRange[];
  /** Egress named ports, resolved per destination pod: allowed whatever `ports` says. */
  readonly namedTargets: readonly NamedTarget[];
}

/** One direction of one pod. */
export interface DirectionPlan {
  /** Some policy selects the pod for this direction. */
  readonly isolated: boolean;
  /** Those policies, sorted. */
  readonly policies: readonly string[];
  readonly rules: readonly PlannedRule[];
}

/** A pod on this node and what may reach it and what it may reach. */
export interface PodPolicyPlan {
  readonly pod: string;
  readonly addresses: readonly string[];
  readonly ingress: DirectionPlan;
  readonly egress: DirectionPlan;
}

/** The plan: every local pod, sorted by key, and the peer sets their rules name. */
export interface PolicyPlan {
  readonly pods: readonly PodPolicyPlan[];
  /** By id. */
  readonly peerSets: ReadonlyMap<string, PeerSet>;
  readonly nodeAddresses: readonly string[];
}

const ALL_PORTS = { from: 1, to: 65535 };

/** Whether a pod can be selected or be a pod peer: an address, not host-network, not finished. */
export function selectablePod(pod: PodFacts): boolean {
  return pod.ips.length > 0 && !pod.hostNetwork && !pod.finished;
}

/**
 * Plans every local pod's allow-lists.
 * Source of the semantics: the module comment.
 */
export function planPolicies(input: PolicyInput): PolicyPlan {
  const peerSets = new Map<string, PeerSet>();
  const byDescription = new Map<string, PeerSet>();
  const podsByNamespace = new Map<string, PodFacts[]>();
  const selectable: PodFacts[] = [];
  for (const pod of input.pods.values()) {
    if (!selectablePod(pod)) continue;
    selectable.push(pod);
    let list = podsByNamespace.get(pod.namespace);
    if (!list) podsByNamespace.set(pod.namespace, (list = []));
    list.push(pod);
  }
  const policiesByNamespace = new Map<string, NetworkPolicy[]>();
  for (const p of [...input.policies.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    let list = policiesByNamespace.get(p.namespace);
    if (!list) policiesByNamespace.set(p.namespace, (list = []));
    list.push(p);
  }
  const nsLabels = (name: string): Labels | undefined => input.namespaces.get(name)?.labels;

  /** The pods a pods peer of a policy in `namespace` selects. */
  const peerPods = (peer: Extract<PolicyPeer, { kind: 'pods' }>, namespace: string): PodFacts[] => {
    const namespaces =
      peer.namespaceSelector === undefined
        ? [namespace]
        : [...podsByNamespace.keys()].filter((n) => {
            const l = nsLabels(n);
            return l !== undefined && selects(peer.namespaceSelector!, l);
          });
    const out: PodFacts[] = [];
    for (const n of namespaces) for (const pod of podsByNamespace.get(n) ?? []) if (selects(peer.podSelector, pod.labels)) out.push(pod);
    return out;
  };
  const setOf = (peer: Extract<PolicyPeer, { kind: 'pods' }>, namespace: string): PeerSet => {
    const where = peer.namespaceSelector === undefined ? `in namespace ${namespace}` : `in namespaces ${selectorText(peer.namespaceSelector)}`;
    const description = `pods ${selectorText(peer.podSelector)} ${where}`;
    let set = byDescription.get(description);
    if (set) return set;
    const addresses = [...new Set(peerPods(peer, namespace).flatMap((p) => p.ips.map((ip) => ip.text)))].sort();
    set = { id: `peers-${hashSuffix(description)}`, description, addresses };
    byDescription.set(description, set);
    peerSets.set(set.id, set);
    return set;
  };
  /** Egress named-port targets of a rule: every candidate destination pod's port of that name. */
  const targetsMemo = new Map<PolicyRule, NamedTarget[]>();
  const namedTargets = (rule: PolicyRule, namespace: string): NamedTarget[] => {
    const named = rule.ports.filter((p) => p.kind === 'named');
    if (named.length === 0) return [];
    let out = targetsMemo.get(rule);
    if (out) return out;
    out = [];
    // Candidate destinations and, per pod, which of its addresses the rule's peers admit.
    const admitted = new Map<PodFacts, Set<string>>();
    const admit = (pod: PodFacts, ips: readonly IPAddress[]) => {
      let s = admitted.get(pod);
      if (!s) admitted.set(pod, (s = new Set()));
      for (const ip of ips) s.add(ip.text);
    };
    if (rule.peers.length === 0) for (const pod of selectable) admit(pod, pod.ips);
    for (const peer of rule.peers) {
      if (peer.kind === 'pods') for (const pod of peerPods(peer, namespace)) admit(pod, pod.ips);
      else
        for (const pod of selectable)
          admit(
            pod,
            pod.ips.filter((ip) => inBlock(peer.cidr, peer.except, ip)),
          );
    }
    for (const [pod, ips] of admitted)
      for (const n of named) {
        const port = pod.namedPorts.find((np) => np.name === n.name && np.protocol === n.protocol);
        if (port) for (const address of ips) out.push({ address, protocol: n.protocol, port: port.port });
      }
    out.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : a.port - b.port));
    targetsMemo.set(rule, out);
    return out;
  };

  const planDirection = (pod: PodFacts, direction: 'ingress' | 'egress'): DirectionPlan => {
    const selecting = (policiesByNamespace.get(pod.namespace) ?? []).filter((p) => p[direction] && selects(p.podSelector, pod.labels));
    const rules: PlannedRule[] = [];
    for (const p of selecting) {
      (direction === 'ingress' ? p.ingressRules : p.egressRules).forEach((rule, index) => {
        const peers =
          rule.peers.length === 0
            ? ('any' as const)
            : {
                sets: [...new Set(rule.peers.filter((x) => x.kind === 'pods').map((x) => setOf(x, p.namespace).id))].sort(),
                blocks: rule.peers.filter((x) => x.kind === 'ipBlock').map((x) => ({ cidr: x.cidr.text, except: x.except.map((e) => e.text) })),
              };
        const ports: 'any' | PortRange[] =
          rule.ports.length === 0
            ? 'any'
            : rule.ports.flatMap((port): PortRange[] => {
                if (port.kind === 'all') return [{ protocol: port.protocol, ...ALL_PORTS }];
                if (port.kind === 'range') return [{ protocol: port.protocol, from: port.from, to: port.to }];
                if (direction === 'egress') return []; // resolved per destination: namedTargets
                const own = pod.namedPorts.find((np) => np.name === port.name && np.protocol === port.protocol);
                return own ? [{ protocol: port.protocol, from: own.port, to: own.port }] : [];
              });
        rules.push({ policy: p.key, index, peers, ports, namedTargets: direction === 'egress' ? namedTargets(rule, p.namespace) : [] });
      });
    }
    return { isolated: selecting.length > 0, policies: selecting.map((p) => p.key), rules };
  };

  const pods: PodPolicyPlan[] = [];
  for (const pod of selectable) {
    if (pod.nodeName !== input.nodeName) continue;
    pods.push({ pod: pod.key, addresses: pod.ips.map((ip) => ip.text), ingress: planDirection(pod, 'ingress'), egress: planDirection(pod, 'egress') });
  }
  pods.sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0));
  return { pods, peerSets, nodeAddresses: [...new Set(input.nodeAddresses.map((a) => a.text))].sort() };
}

/** Why a direction lets a packet through or not. */
export type DirectionVerdict =
  | { readonly allowed: true; readonly why: 'not isolated' | 'its node' }
  | { readonly allowed: true; readonly why: 'rule'; readonly rule: PlannedRule }
  | { readonly allowed: false; readonly why: 'no rule'; readonly policies: readonly string[] };

/**
 * Whether one direction of a pod's plan lets a new connection through.
 * @param peer the other end: the source for ingress, the destination (after DNAT) for egress
 */
export function directionVerdict(plan: PolicyPlan, direction: DirectionPlan, peer: IPAddress, protocol: Protocol, port: number): DirectionVerdict {
  if (!direction.isolated) return { allowed: true, why: 'not isolated' };
  if (plan.nodeAddresses.includes(peer.text)) return { allowed: true, why: 'its node' };
  for (const rule of direction.rules) {
    if (rule.namedTargets.some((t) => t.address === peer.text && t.protocol === protocol && t.port === port)) return { allowed: true, why: 'rule', rule };
    const peerOk =
      rule.peers === 'any' ||
      rule.peers.sets.some((id) => plan.peerSets.get(id)?.addresses.includes(peer.text)) ||
      rule.peers.blocks.some((b) =>
        inBlock(
          parseCIDR(b.cidr)!,
          b.except.map((e) => parseCIDR(e)!),
          peer,
        ),
      );
    const portOk = rule.ports === 'any' || rule.ports.some((r) => r.protocol === protocol && r.from <= port && port <= r.to);
    if (peerOk && portOk) return { allowed: true, why: 'rule', rule };
  }
  return { allowed: false, why: 'no rule', policies: direction.policies };
}

/**
 * Whether a new connection from `src` to `dst` (pod addresses, after Service DNAT) passes this
 * node's policy: the egress of `src` when it is a local pod, then the ingress of `dst` when it is.
 */
export function connectionVerdict(plan: PolicyPlan, src: string, dst: string, protocol: Protocol, port: number): { allowed: boolean; egress?: DirectionVerdict; ingress?: DirectionVerdict } {
  const s = parseIP(src);
  const d = parseIP(dst);
  if (!s || !d) throw new RangeError(`not an IP address: ${s ? dst : src}`);
  const local = (ip: string) => plan.pods.find((p) => p.addresses.includes(ip));
  const from = local(src);
  const to = local(dst);
  const egress = from ? directionVerdict(plan, from.egress, d, protocol, port) : undefined;
  const ingress = to ? directionVerdict(plan, to.ingress, s, protocol, port) : undefined;
  return { allowed: (egress?.allowed ?? true) && (ingress?.allowed ?? true), ...(egress ? { egress } : {}), ...(ingress ? { ingress } : {}) };
}

function inBlock(cidr: CIDR, except: readonly CIDR[], ip: IPAddress): boolean {
  return cidr.family === ip.family && cidrContains(cidr, ip) && !except.some((e) => cidrContains(e, ip));
}
