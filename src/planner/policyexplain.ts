/**
 * `kproxy explain --network-policy`: whether this node's NetworkPolicy table lets a new connection
 * from one address to another (after Service DNAT) through, and why: the egress of the source when
 * it is a pod of this node, then the ingress of the destination when it is, each naming the
 * policies that isolate the pod and the rule that allows the packet, or saying why nothing does.
 * Pure: a {@link PolicyPlan} in, a {@link PolicyExplanation} out, as data. The decisions are
 * {@link directionVerdict}'s, the model the e2e matrix checks against real packets
 * ({@link connectionVerdict} for a whole connection).
 * @module
 */
import type { Protocol } from '../state/model.ts';
import { parseCIDR, parseIP, type IPAddress } from '../state/ip.ts';
import { inBlock, type DirectionPlan, type PlannedRule, type PolicyPlan } from './policy.ts';

/** One direction's decision. */
export interface DirectionExplanation {
  readonly direction: 'egress' | 'ingress';
  /** The local pod whose direction it is (`namespace/name`). */
  readonly pod: string;
  readonly allowed: boolean;
  /** Why, in one line. */
  readonly reason: string;
  /** The NetworkPolicies that isolate the pod in this direction (empty: not isolated). */
  readonly policies: readonly string[];
  /** The rule that allows it: `namespace/name` and the index in its `ingress` or `egress`. */
  readonly rule: { readonly policy: string; readonly index: number } | undefined;
  /** The pod's chain in the policy table for this direction, when isolated. */
  readonly chain: string | undefined;
}

/** The policy decisions for one connection. */
export interface PolicyExplanation {
  readonly source: string;
  readonly destination: string;
  readonly protocol: Protocol;
  readonly port: number;
  readonly allowed: boolean;
  /** Egress of the source, then ingress of the destination: those of this node's pods. */
  readonly directions: readonly DirectionExplanation[];
  /** What this node does not decide (an end that is no pod of it). */
  readonly notes: readonly string[];
}

/**
 * Explains one new connection.
 * @param chain the policy table's chain of a pod's direction (backends/policy `podChainName`)
 * @throws RangeError when an address does not parse
 */
export function explainPolicy(
  plan: PolicyPlan,
  source: string,
  destination: string,
  protocol: Protocol,
  port: number,
  chain: (direction: 'ingress' | 'egress', pod: string) => string,
): PolicyExplanation {
  const src = parseIP(source);
  const dst = parseIP(destination);
  if (!src || !dst) throw new RangeError(`not an IP address: ${src ? destination : source}`);
  const local = (ip: string) => plan.pods.find((p) => p.addresses.includes(ip));
  const from = local(src.text);
  const to = local(dst.text);
  const directions: DirectionExplanation[] = [];
  const notes: string[] = [];
  const what = `${protocol} ${port}`;
  for (const [direction, pod, peer] of [
    ['egress', from, dst],
    ['ingress', to, src],
  ] as const) {
    if (!pod) {
      const end = direction === 'egress' ? `the source ${src.text}` : `the destination ${dst.text}`;
      notes.push(`${end} is no pod of this node: its ${direction} is not this node's to enforce`);
      continue;
    }
    const d = pod[direction];
    const v = directionVerdict(plan, d, peer, protocol, port);
    const towards = direction === 'egress' ? `to ${peer.text}` : `from ${peer.text}`;
    const reason =
      v.why === 'not isolated'
        ? `not isolated: no NetworkPolicy of its namespace selects it for ${direction}, so everything passes`
        : v.why === 'its node'
          ? `${towards}: traffic between a pod and its own node is always allowed`
          : v.why === 'rule'
            ? `${towards} on ${what}: allowed by ${v.rule.policy} ${direction} rule ${v.rule.index}`
            : `${towards} on ${what}: denied: isolated by ${d.policies.join(', ')}, and no rule of theirs allows it`;
    directions.push({
      direction,
      pod: pod.pod,
      allowed: v.allowed,
      reason,
      policies: d.policies,
      rule: v.why === 'rule' ? { policy: v.rule.policy, index: v.rule.index } : undefined,
      chain: d.isolated ? chain(direction, pod.pod) : undefined,
    });
  }
  return { source: src.text, destination: dst.text, protocol, port, allowed: directions.every((d) => d.allowed), directions, notes };
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
    const named = rule.namedSet === undefined ? undefined : plan.namedSets.get(rule.namedSet);
    if (named?.targets.some((t) => t.address === peer.text && t.protocol === protocol && t.port === port)) return { allowed: true, why: 'rule', rule };
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
