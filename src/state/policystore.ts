/**
 * The NetworkPolicy pipeline's state: validated NetworkPolicies, every Pod of the cluster as its
 * compact {@link PodFacts} (peers can be anywhere), and Namespaces with their labels. Separate
 * from the Service state ({@link ProxyStateStore}): the two pipelines share sources and stages,
 * never data. Each change bumps a generation the runner can sync on.
 * @module
 */
import type { RawObject } from '../sources/objects.ts';
import type { ApplyResult } from './store.ts';
import type { Labels } from './labels.ts';
import { normaliseNamespace, normaliseNetworkPolicy, normalisePod, type NamespaceFacts, type NetworkPolicy, type PodFacts } from './networkpolicy.ts';

/**
 * What changed since the last {@link PolicyStateStore.takeChanges}: what the planner must look at
 * again (planner/policy.ts PolicyPlanCache). `all` when it cannot tell (the first plan).
 */
export interface PolicyChanges {
  readonly all: boolean;
  /** Namespaces where a pod was added, changed or removed. */
  readonly podNamespaces: ReadonlySet<string>;
  /** Namespaces whose NetworkPolicies changed. */
  readonly policyNamespaces: ReadonlySet<string>;
  /** Some Namespace was added, relabelled or removed. */
  readonly namespaces: boolean;
}

/** Everything changed: the first plan, or a planner without a store. */
export const ALL_CHANGED: PolicyChanges = { all: true, podNamespaces: new Set(), policyNamespaces: new Set(), namespaces: true };

/**
 * In-memory policy state. Synchronous, single-owner. Pods are indexed by namespace and by node
 * (the planner reads one namespace's pods, and this node's, without walking 150,000 of them), and
 * an update that leaves a pod's facts as they were (a status condition, an annotation: most pod
 * updates) keeps the stored object and changes nothing.
 */
export class PolicyStateStore {
  readonly #policies = new Map<string, NetworkPolicy>();
  readonly #pods = new Map<string, PodFacts>();
  readonly #byNamespace = new Map<string, Map<string, PodFacts>>();
  readonly #byNode = new Map<string, Map<string, PodFacts>>();
  readonly #namespaces = new Map<string, NamespaceFacts>();
  #generation = 0;
  #podNamespaces = new Set<string>();
  #policyNamespaces = new Set<string>();
  #namespacesChanged = false;

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

  /** The pods of one namespace, by key (empty when none). */
  podsIn(namespace: string): ReadonlyMap<string, PodFacts> {
    return this.#byNamespace.get(namespace) ?? EMPTY;
  }

  /** Namespaces that have pods. */
  podNamespaces(): IterableIterator<string> {
    return this.#byNamespace.keys();
  }

  /** The pods whose `spec.nodeName` is `node`, by key. */
  podsOn(node: string): ReadonlyMap<string, PodFacts> {
    return this.#byNode.get(node) ?? EMPTY;
  }

  /** What changed since the last call (the first call: everything). */
  takeChanges(): PolicyChanges {
    const out: PolicyChanges = this.#taken ? { all: false, podNamespaces: this.#podNamespaces, policyNamespaces: this.#policyNamespaces, namespaces: this.#namespacesChanged } : ALL_CHANGED;
    this.#taken = true;
    this.#podNamespaces = new Set();
    this.#policyNamespaces = new Set();
    this.#namespacesChanged = false;
    return out;
  }
  #taken = false;

  /**
   * Adds or replaces a NetworkPolicy. One whose rules cannot be read is kept without them (it still
   * isolates: fail closed) and reported; one without a readable name is skipped.
   */
  applyNetworkPolicy(raw: RawObject): ApplyResult {
    const r = normaliseNetworkPolicy(raw);
    if ('policy' in r) {
      this.#policies.set(r.policy.key, r.policy);
      this.#policyNamespaces.add(r.policy.namespace);
      this.#generation++;
    }
    return { issues: r.issue ? [r.issue] : [] };
  }

  /** Removes a NetworkPolicy by `namespace/name`. */
  deleteNetworkPolicy(key: string): void {
    const p = this.#policies.get(key);
    if (!p) return;
    this.#policies.delete(key);
    this.#policyNamespaces.add(p.namespace);
    this.#generation++;
  }

  /**
   * Adds or replaces a Pod. An invalid update keeps the earlier version, reported: dropping it would
   * leave a pod of this node unisolated (fail open), where its last valid facts keep it isolated.
   */
  applyPod(raw: RawObject): ApplyResult {
    const r = normalisePod(raw);
    if (!('pod' in r)) return { issues: [r.issue] };
    const old = this.#pods.get(r.pod.key);
    if (old && samePod(old, r.pod)) return { issues: [] };
    if (old) this.#unindex(old);
    this.#pods.set(r.pod.key, r.pod);
    index(this.#byNamespace, r.pod.namespace, r.pod);
    if (r.pod.nodeName !== undefined) index(this.#byNode, r.pod.nodeName, r.pod);
    this.#podNamespaces.add(r.pod.namespace);
    this.#generation++;
    return { issues: [] };
  }

  /** Removes a Pod by `namespace/name`. */
  deletePod(key: string): void {
    const old = this.#pods.get(key);
    if (!old) return;
    this.#pods.delete(key);
    this.#unindex(old);
    this.#podNamespaces.add(old.namespace);
    this.#generation++;
  }

  /** Adds or replaces a Namespace; an invalid one removes its earlier version (it then has no labels to select). */
  applyNamespace(raw: RawObject): ApplyResult {
    const r = normaliseNamespace(raw);
    if (!('namespace' in r)) {
      if (r.key !== undefined) this.deleteNamespace(r.key);
      return { issues: [r.issue] };
    }
    const old = this.#namespaces.get(r.namespace.name);
    if (old && sameLabels(old.labels, r.namespace.labels)) return { issues: [] };
    this.#namespaces.set(r.namespace.name, r.namespace);
    this.#namespacesChanged = true;
    this.#generation++;
    return { issues: [] };
  }

  /** Removes a Namespace by name. */
  deleteNamespace(name: string): void {
    if (!this.#namespaces.delete(name)) return;
    this.#namespacesChanged = true;
    this.#generation++;
  }

  #unindex(pod: PodFacts): void {
    unindex(this.#byNamespace, pod.namespace, pod.key);
    if (pod.nodeName !== undefined) unindex(this.#byNode, pod.nodeName, pod.key);
  }
}

const EMPTY: ReadonlyMap<string, PodFacts> = new Map();

function index(by: Map<string, Map<string, PodFacts>>, at: string, pod: PodFacts): void {
  let m = by.get(at);
  if (!m) by.set(at, (m = new Map<string, PodFacts>()));
  m.set(pod.key, pod);
}

function unindex(by: Map<string, Map<string, PodFacts>>, at: string, key: string): void {
  const m = by.get(at);
  if (!m) return;
  m.delete(key);
  if (m.size === 0) by.delete(at);
}

/** Equal facts: what policy reads of a pod is the same. */
export function samePod(a: PodFacts, b: PodFacts): boolean {
  return (
    a.nodeName === b.nodeName &&
    a.hostNetwork === b.hostNetwork &&
    a.finished === b.finished &&
    a.ips.length === b.ips.length &&
    a.ips.every((ip, i) => ip.text === b.ips[i]!.text) &&
    a.namedPorts.length === b.namedPorts.length &&
    a.namedPorts.every((p, i) => p.name === b.namedPorts[i]!.name && p.protocol === b.namedPorts[i]!.protocol && p.port === b.namedPorts[i]!.port) &&
    sameLabels(a.labels, b.labels)
  );
}

function sameLabels(a: Labels, b: Labels): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => a[k] === b[k]);
}
