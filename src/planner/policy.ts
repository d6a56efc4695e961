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
import { cidrContains, type CIDR, type IPAddress } from '../state/ip.ts';
import { selects, selectorText, type Labels } from '../state/labels.ts';
import type { Protocol } from '../state/model.ts';
import { hashSuffix } from '../state/strings.ts';
import type { NamespaceFacts, NetworkPolicy, PodFacts, PolicyPeer, PolicyRule } from '../state/networkpolicy.ts';
import { ALL_CHANGED, type PolicyChanges } from '../state/policystore.ts';
import type { CachedNamed, CachedPod, CachedSet, PolicyPlanCache } from './policycache.ts';

/** The policy state the planner reads: the PolicyStateStore, or anything shaped like it. */
export interface PolicySource {
  readonly policies: ReadonlyMap<string, NetworkPolicy>;
  readonly namespaces: ReadonlyMap<string, NamespaceFacts>;
  /** One namespace's pods by key. */
  podsIn(namespace: string): ReadonlyMap<string, PodFacts>;
  /** The namespaces that have pods. */
  podNamespaces(): Iterable<string>;
  /** One node's pods by key. */
  podsOn(node: string): ReadonlyMap<string, PodFacts>;
}

/** What the planner reads: the state, what changed in it since the last plan, and this node. */
export interface PolicyInput {
  readonly state: PolicySource;
  /** From PolicyStateStore.takeChanges; default everything (no reuse). */
  readonly changes?: PolicyChanges;
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

/**
 * The destinations one egress rule with named ports reaches through them: each candidate pod's
 * address with its own port of that name. Shared by every rule (of any policy) with the same named ports and peers.
 */
export interface NamedTargetSet {
  /** `named-` and 16 base32 characters of the hash of {@link NamedTargetSet.description}. */
  readonly id: string;
  /** `named ports http/TCP of pods app=db in namespace x`: equal rules of many policies share one set. */
  readonly description: string;
  /** Sorted by address, protocol, port. */
  readonly targets: readonly NamedTarget[];
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
  /** Egress named ports, resolved per destination pod: the id of their {@link NamedTargetSet}, allowed whatever `ports` says. */
  readonly namedSet: string | undefined;
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
  /** By id. */
  readonly namedSets: ReadonlyMap<string, NamedTargetSet>;
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
 * @param cache the previous plan's memory; without it (or with `changes` absent) everything is planned
 */
export function planPolicies(input: PolicyInput, cache?: PolicyPlanCache): PolicyPlan {
  const { state } = input;
  const changes = input.changes ?? ALL_CHANGED;
  const reuse = cache !== undefined && !changes.all;
  const planned = { sets: 0, named: 0, pods: 0 };
  const nsLabels = (name: string): Labels | undefined => state.namespaces.get(name)?.labels;
  const policiesByNamespace = new Map<string, NetworkPolicy[]>();
  const policiesIn = (namespace: string): NetworkPolicy[] => {
    let list = policiesByNamespace.get(namespace);
    if (list) return list;
    list = [];
    for (const p of state.policies.values()) if (p.namespace === namespace) list.push(p);
    list.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    policiesByNamespace.set(namespace, list);
    return list;
  };
  /** The namespaces a pods peer of a policy in `namespace` reaches. */
  const scope = (peer: Extract<PolicyPeer, { kind: 'pods' }>, namespace: string): string[] =>
    peer.namespaceSelector === undefined
      ? [namespace]
      : [...state.podNamespaces()].filter((n) => {
          const l = nsLabels(n);
          return l !== undefined && selects(peer.namespaceSelector!, l);
        });
  /** The pods a pods peer of a policy in `namespace` selects. */
  const peerPods = (peer: Extract<PolicyPeer, { kind: 'pods' }>, namespace: string): PodFacts[] => {
    const out: PodFacts[] = [];
    for (const n of scope(peer, namespace)) for (const pod of state.podsIn(n).values()) if (selectablePod(pod) && selects(peer.podSelector, pod.labels)) out.push(pod);
    return out;
  };
  /** Whether what a pods peer of a policy in `namespace` selects may have changed. */
  const scopeChanged = (peer: Extract<PolicyPeer, { kind: 'pods' }>, namespace: string): boolean => {
    if (peer.namespaceSelector === undefined) return changes.podNamespaces.has(namespace);
    if (changes.namespaces) return true;
    for (const n of changes.podNamespaces) {
      const l = nsLabels(n);
      if (l !== undefined && selects(peer.namespaceSelector, l)) return true;
    }
    return false;
  };
  const stale = (c: CachedSet): boolean => scopeChanged(c.peer, c.namespace);
  const sets = new Map<string, CachedSet>();
  const setOf = (peer: Extract<PolicyPeer, { kind: 'pods' }>, namespace: string): PeerSet => {
    const where = peer.namespaceSelector === undefined ? `in namespace ${namespace}` : `in namespaces ${selectorText(peer.namespaceSelector)}`;
    const description = `pods ${selectorText(peer.podSelector)} ${where}`;
    const id = `peers-${hashSuffix(description)}`;
    return useSet(id, { peer, namespace, description }).set;
  };
  const useSet = (id: string, from: { peer: CachedSet['peer']; namespace: string; description: string }): CachedSet => {
    let c = sets.get(id);
    if (c) return c;
    const old = cache?.sets.get(id);
    if (old && reuse && !stale(old)) c = old;
    else {
      planned.sets++;
      const addresses = [...new Set(peerPods(from.peer, from.namespace).flatMap((p) => p.ips.map((ip) => ip.text)))].sort();
      const same = old && old.set.addresses.length === addresses.length && old.set.addresses.every((a, i) => a === addresses[i]);
      c = { set: same ? old.set : { id, description: from.description, addresses }, peer: from.peer, namespace: from.namespace };
    }
    sets.set(id, c);
    return c;
  };
  /** Every selectable pod, for rules whose peers are everyone (walked at most once a plan). */
  let everyone: PodFacts[] | undefined;
  const allPods = () => (everyone ??= [...state.podNamespaces()].flatMap((n) => [...state.podsIn(n).values()].filter(selectablePod)));
  /** Egress named-port targets of a rule: every candidate destination pod's port of that name. */
  const namedTargets = (rule: PolicyRule, namespace: string): NamedTarget[] => {
    const named = rule.ports.filter((p) => p.kind === 'named');
    const out: NamedTarget[] = [];
    // Candidate destinations and, per pod, which of its addresses the rule's peers admit.
    const admitted = new Map<PodFacts, Set<string>>();
    const admit = (pod: PodFacts, ips: readonly IPAddress[]) => {
      let s = admitted.get(pod);
      if (!s) admitted.set(pod, (s = new Set()));
      for (const ip of ips) s.add(ip.text);
    };
    if (rule.peers.length === 0) for (const pod of allPods()) admit(pod, pod.ips);
    for (const peer of rule.peers) {
      if (peer.kind === 'pods') for (const pod of peerPods(peer, namespace)) admit(pod, pod.ips);
      else
        for (const pod of allPods())
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
    // Two pods with one address and port (a reused address): one element.
    return out.filter((t, i) => i === 0 || t.address !== out[i - 1]!.address || t.protocol !== out[i - 1]!.protocol || t.port !== out[i - 1]!.port);
  };
  /** Whether a cached named-target set may be out of date: a pod its peers may reach changed. */
  const namedStale = (c: CachedNamed, rule: PolicyRule): boolean =>
    rule.peers.length === 0 || rule.peers.some((peer) => (peer.kind === 'ipBlock' ? changes.all || changes.podNamespaces.size > 0 : scopeChanged(peer, c.namespace)));
  /** A peer in words: what makes two rules' named-port targets the same. */
  const peerText = (peer: PolicyPeer, namespace: string): string =>
    peer.kind === 'ipBlock'
      ? `${peer.cidr.text}${peer.except.length > 0 ? ` except ${peer.except.map((e) => e.text).join(', ')}` : ''}`
      : `pods ${selectorText(peer.podSelector)} ${peer.namespaceSelector === undefined ? `in namespace ${namespace}` : `in namespaces ${selectorText(peer.namespaceSelector)}`}`;
  const named = new Map<string, CachedNamed>();
  /**
   * The id of the named-target set of rule `index` of `policy`'s egress (undefined when it names no
   * port): named by what it holds (its named ports and peers), so equal rules of many policies share one.
   */
  const useNamed = (policy: NetworkPolicy, index: number): string | undefined => {
    const rule = policy.egressRules[index];
    if (!rule?.ports.some((p) => p.kind === 'named')) return undefined;
    const names = rule.ports.flatMap((p) => (p.kind === 'named' ? [`${p.name}/${p.protocol}`] : [])).join(', ');
    const description = `named ports ${names} of ${rule.peers.length === 0 ? 'every pod' : rule.peers.map((x) => peerText(x, policy.namespace)).join(' or ')}`;
    const id = `named-${hashSuffix(description)}`;
    if (named.has(id)) return id;
    const old = cache?.named.get(id);
    let c: CachedNamed;
    if (old && reuse && !namedStale(old, rule)) c = old;
    else {
      planned.named++;
      const targets = namedTargets(rule, policy.namespace);
      const same =
        old && old.set.targets.length === targets.length && old.set.targets.every((t, i) => t.address === targets[i]!.address && t.protocol === targets[i]!.protocol && t.port === targets[i]!.port);
      c = { set: same ? old.set : { id, description, targets }, namespace: policy.namespace };
    }
    named.set(id, c);
    return id;
  };

  const planDirection = (pod: PodFacts, direction: 'ingress' | 'egress'): DirectionPlan => {
    const selecting = policiesIn(pod.namespace).filter((p) => p[direction] && selects(p.podSelector, pod.labels));
    const rules: PlannedRule[] = [];
    for (const p of selecting) {
      (direction === 'ingress' ? p.ingressRules : p.egressRules).forEach((rule, index) => {
        const ports: 'any' | PortRange[] =
          rule.ports.length === 0
            ? 'any'
            : rule.ports.flatMap((port): PortRange[] => {
                if (port.kind === 'all') return [{ protocol: port.protocol, ...ALL_PORTS }];
                if (port.kind === 'range') return [{ protocol: port.protocol, from: port.from, to: port.to }];
                if (direction === 'egress') return []; // resolved per destination: namedSet
                const own = pod.namedPorts.find((np) => np.name === port.name && np.protocol === port.protocol);
                return own ? [{ protocol: port.protocol, from: own.port, to: own.port }] : [];
              });
        // No port left (only named ones, resolved per destination or absent here): the peer sets would match nothing.
        const peers =
          rule.peers.length === 0
            ? ('any' as const)
            : {
                sets: ports !== 'any' && ports.length === 0 ? [] : [...new Set(rule.peers.filter((x) => x.kind === 'pods').map((x) => setOf(x, p.namespace).id))].sort(),
                blocks: rule.peers.filter((x) => x.kind === 'ipBlock').map((x) => ({ cidr: x.cidr.text, except: x.except.map((e) => e.text) })),
              };
        rules.push({ policy: p.key, index, peers, ports, namedSet: direction === 'egress' ? useNamed(p, index) : undefined });
      });
    }
    return { isolated: selecting.length > 0, policies: selecting.map((p) => p.key), rules };
  };

  const cachedPods = new Map<string, CachedPod>();
  const pods: PodPolicyPlan[] = [];
  for (const pod of state.podsOn(input.nodeName).values()) {
    if (!selectablePod(pod)) continue;
    const old = cache?.pods.get(pod.key);
    let c: CachedPod;
    if (old && reuse && old.facts === pod && !changes.policyNamespaces.has(pod.namespace)) {
      c = old;
      // Its sets: still wanted, and current (its policies did not change, so each rule is the one it was planned from).
      for (const d of [c.plan.ingress, c.plan.egress])
        for (const r of d.rules) {
          if (r.peers !== 'any')
            for (const id of r.peers.sets) {
              const cs = cache.sets.get(id);
              if (cs) useSet(id, { peer: cs.peer, namespace: cs.namespace, description: cs.set.description });
            }
          const policy = r.namedSet === undefined ? undefined : state.policies.get(r.policy);
          if (policy) useNamed(policy, r.index);
        }
    } else {
      planned.pods++;
      let plan: PodPolicyPlan = { pod: pod.key, addresses: pod.ips.map((ip) => ip.text), ingress: planDirection(pod, 'ingress'), egress: planDirection(pod, 'egress') };
      // Planned again but the same (a label no policy selects on): the old object, which the renderer skips.
      if (old && JSON.stringify(old.plan) === JSON.stringify(plan)) plan = old.plan;
      c = { facts: pod, plan };
    }
    cachedPods.set(pod.key, c);
    pods.push(c.plan);
  }
  pods.sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0));
  const peerSets = new Map<string, PeerSet>();
  for (const [id, c] of [...sets].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) peerSets.set(id, c.set);
  const namedSets = new Map<string, NamedTargetSet>();
  for (const [id, c] of [...named].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) namedSets.set(id, c.set);
  if (cache) {
    cache.keep(sets, named, cachedPods);
    cache.planned = planned;
  }
  return { pods, peerSets, namedSets, nodeAddresses: [...new Set(input.nodeAddresses.map((a) => a.text))].sort() };
}

/** Whether `ip` is in `cidr` and in none of `except` (an ipBlock peer). */
export function inBlock(cidr: CIDR, except: readonly CIDR[], ip: IPAddress): boolean {
  return cidr.family === ip.family && cidrContains(cidr, ip) && !except.some((e) => cidrContains(e, ip));
}
