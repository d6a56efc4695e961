/**
 * The NetworkPolicy pipeline's state: validated NetworkPolicies, every Pod of the cluster as its
 * compact {@link PodFacts} (peers can be anywhere), and Namespaces with their labels. Separate
 * from the Service state ({@link ProxyStateStore}): the two pipelines share sources and stages,
 * never data. Each change bumps a generation the runner can sync on.
 * @module
 */
import type { RawObject } from '../sources/objects.ts';
import type { InputIssue } from './model.ts';
import type { ApplyResult } from './store.ts';
import { normaliseNamespace, normaliseNetworkPolicy, normalisePod, type NamespaceFacts, type NetworkPolicy, type PodFacts } from './networkpolicy.ts';

/** In-memory policy state. Synchronous, single-owner. */
export class PolicyStateStore {
  readonly #policies = new Map<string, NetworkPolicy>();
  readonly #pods = new Map<string, PodFacts>();
  readonly #namespaces = new Map<string, NamespaceFacts>();
  #generation = 0;

  /** Bumped by every change that may change a plan. */
  get generation(): number {
    return this.#generation;
  }

  /** Policies by `namespace/name`. */
  get policies(): ReadonlyMap<string, NetworkPolicy> {
    return this.#policies;
  }

  /** Pods by `namespace/name`. */
  get pods(): ReadonlyMap<string, PodFacts> {
    return this.#pods;
  }

  /** Namespaces by name. */
  get namespaces(): ReadonlyMap<string, NamespaceFacts> {
    return this.#namespaces;
  }

  /**
   * Adds or replaces a NetworkPolicy. One whose rules cannot be read is kept without them (it still
   * isolates: fail closed) and reported; one without a readable name is skipped.
   */
  applyNetworkPolicy(raw: RawObject): ApplyResult {
    const r = normaliseNetworkPolicy(raw);
    if ('policy' in r) {
      this.#policies.set(r.policy.key, r.policy);
      this.#generation++;
    }
    return { issues: r.issue ? [r.issue] : [] };
  }

  /** Removes a NetworkPolicy by `namespace/name`. */
  deleteNetworkPolicy(key: string): void {
    if (this.#policies.delete(key)) this.#generation++;
  }

  /** Adds or replaces a Pod; an invalid one removes its earlier version (it is then no peer and no target). */
  applyPod(raw: RawObject): ApplyResult {
    const r = normalisePod(raw);
    return this.#apply(this.#pods, 'pod' in r ? { key: r.pod.key, value: r.pod } : r);
  }

  /** Removes a Pod by `namespace/name`. */
  deletePod(key: string): void {
    if (this.#pods.delete(key)) this.#generation++;
  }

  /** Adds or replaces a Namespace; an invalid one removes its earlier version (it then has no labels to select). */
  applyNamespace(raw: RawObject): ApplyResult {
    const r = normaliseNamespace(raw);
    return this.#apply(this.#namespaces, 'namespace' in r ? { key: r.namespace.name, value: r.namespace } : r);
  }

  /** Removes a Namespace by name. */
  deleteNamespace(name: string): void {
    if (this.#namespaces.delete(name)) this.#generation++;
  }

  /** Stores a valid object by key; an invalid one removes its earlier version (when its key was read) and is reported. */
  #apply<T>(map: Map<string, T>, r: { key: string; value: T } | { issue: InputIssue; key?: string }): ApplyResult {
    if ('value' in r) map.set(r.key, r.value);
    else if (r.key === undefined || !map.delete(r.key)) return { issues: [r.issue] };
    this.#generation++;
    return { issues: 'issue' in r ? [r.issue] : [] };
  }
}
