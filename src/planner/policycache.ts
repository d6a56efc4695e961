/**
 * The NetworkPolicy planner's memory of its last plan ({@link PolicyPlanCache}): what each peer
 * set, named-target set and local pod's plan was computed from, so planPolicies (policy.ts) can
 * tell what a change touches. Data only; the staleness rules are the planner's.
 * @module
 */
import type { PodFacts, PolicyPeer } from '../state/networkpolicy.ts';
import type { NamedTargetSet, PeerSet, PodPolicyPlan } from './policy.ts';

/** A peer set as planned: what it was computed from, to compute it again when that changes. */
export interface CachedSet {
  readonly set: PeerSet;
  readonly peer: Extract<PolicyPeer, { kind: 'pods' }>;
  /** The policy's namespace (the peer's scope when it has no namespaceSelector). */
  readonly namespace: string;
}

/** A named-target set as planned, with the policy namespace its peers are read in. */
export interface CachedNamed {
  readonly set: NamedTargetSet;
  readonly namespace: string;
}

/** A local pod's plan as planned: the facts and policies it came from. */
export interface CachedPod {
  readonly facts: PodFacts;
  readonly plan: PodPolicyPlan;
}

/**
 * Memory of the last plan, so the next one re-plans only what changed (as the Service planner's
 * PlanCache does): a peer set is computed again only when a pod of a namespace in its scope
 * changed, or (for a namespaceSelector) a Namespace did; a local pod is planned again only when
 * it, or its namespace's NetworkPolicies, changed; an egress rule's named-port targets, one set per
 * rule, when a pod in its peers' scope changed. What is
 * not planned again is the same object as before, which the renderer's cache and the nft diff
 * skip by identity. Not for concurrent use.
 */
export class PolicyPlanCache {
  #sets = new Map<string, CachedSet>();
  #named = new Map<string, CachedNamed>();
  #pods = new Map<string, CachedPod>();
  /** Peer sets, named-target sets and pods planned (not reused) by the last plan; for tests and benchmarks. */
  planned = { sets: 0, named: 0, pods: 0 };

  /** @internal the planner's */
  get sets(): Map<string, CachedSet> {
    return this.#sets;
  }

  /** @internal the planner's */
  get named(): Map<string, CachedNamed> {
    return this.#named;
  }

  /** @internal the planner's */
  get pods(): Map<string, CachedPod> {
    return this.#pods;
  }

  /** @internal the planner's: keep only what this plan used */
  keep(sets: Map<string, CachedSet>, named: Map<string, CachedNamed>, pods: Map<string, CachedPod>): void {
    this.#sets = sets;
    this.#named = named;
    this.#pods = pods;
  }
}
