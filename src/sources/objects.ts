/**
 * The Kubernetes objects kproxy reads, as the API server serialises them (core/v1 Service and Node,
 * discovery.k8s.io/v1 EndpointSlice, networking.k8s.io/v1 ServiceCIDR). Every field is optional and untrusted: these types describe
 * what may be there, and src/state validates each field before anything is built from it.
 * @module
 */

/** Object metadata fields kproxy reads. */
export interface RawMetadata {
  name?: unknown;
  namespace?: unknown;
  uid?: unknown;
  resourceVersion?: unknown;
  labels?: unknown;
  deletionTimestamp?: unknown;
  creationTimestamp?: unknown;
}

/** Any object with a kind: what a source hands to the state stage. */
export interface RawObject {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: RawMetadata;
  [field: string]: unknown;
}

/** The kinds kproxy consumes: the Service pipeline's, and (with --network-policy) the NetworkPolicy pipeline's. */
export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node' | 'ServiceCIDR' | PolicyObjectKind;

/** The kinds of the NetworkPolicy pipeline (networking.k8s.io/v1 NetworkPolicy, v1 Pod and Namespace). */
export type PolicyObjectKind = 'NetworkPolicy' | 'Pod' | 'Namespace';

/** Objects sorted by kind, in input order. */
export interface ObjectBatch {
  services: RawObject[];
  endpointSlices: RawObject[];
  nodes: RawObject[];
  /** networking.k8s.io/v1 ServiceCIDRs (none from an API server before v1.33, or a file without them). */
  serviceCIDRs: RawObject[];
  /** NetworkPolicies, Pods and Namespaces: read from files always, from the API with --network-policy only. */
  networkPolicies?: RawObject[];
  pods?: RawObject[];
  namespaces?: RawObject[];
  /**
   * Where each object came from, for messages (`cluster.yaml, document 2.items[3]`); set by the
   * file source, absent for the API.
   */
  origins?: ReadonlyMap<RawObject, string>;
}

/**
 * Deepest nesting of objects and lists an input object may have, the object itself being level 1
 * (a Service's `metadata.annotations` is level 3; the deepest field of a real Service, EndpointSlice
 * or Node, in `metadata.managedFields[].fieldsV1`, is about level 10). Deeper objects are invalid:
 * JavaScript's recursive code (the YAML composer, `JSON.stringify`, `String` of an array) overflows
 * its stack at a few hundred to a few thousand levels, and nothing kproxy reads is that deep.
 * Upstream's decoders bound nesting for the same reason (Go's encoding/json at 10,000 levels); ours is
 * lower because a JavaScript stack holds fewer frames.
 */
export const MAX_NESTING_DEPTH = 100;

/** A path step: an object key or a list index. */
type Step = string | number;
interface Frame {
  readonly value: object;
  readonly level: number;
  readonly step: Step | undefined;
  readonly parent: Frame | undefined;
}

/**
 * Finds the first object or list nested deeper than `limit` levels (the value itself being level 1),
 * without recursion: a million levels cost a walk and no stack. A cycle counts as too deep.
 * @param value any parsed JSON or YAML value
 * @returns the path of the first too-deep value, as a field path (`metadata.annotations.x[0][0]`), or
 *   undefined when `value` is within the limit. The path names every step; callers shorten it.
 */
export function findTooDeep(value: unknown, limit: number = MAX_NESTING_DEPTH): Step[] | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const stack: Frame[] = [{ value, level: 1, step: undefined, parent: undefined }];
  for (let frame = stack.pop(); frame !== undefined; frame = stack.pop()) {
    if (frame.level > limit) {
      const steps: Step[] = [];
      for (let f: Frame | undefined = frame; f?.step !== undefined; f = f.parent) steps.push(f.step);
      return steps.reverse();
    }
    const level = frame.level + 1;
    if (Array.isArray(frame.value)) {
      const list: readonly unknown[] = frame.value;
      for (let i = list.length - 1; i >= 0; i--) {
        const child = list[i];
        if (typeof child === 'object' && child !== null) stack.push({ value: child, level, step: i, parent: frame });
      }
    } else {
      const keys = Object.keys(frame.value);
      for (let i = keys.length - 1; i >= 0; i--) {
        const child = (frame.value as Record<string, unknown>)[keys[i]!];
        if (typeof child === 'object' && child !== null) stack.push({ value: child, level, step: keys[i]!, parent: frame });
      }
    }
  }
  return undefined;
}

/**
 * Prints a path from {@link findTooDeep} as a field path, its first `maxSteps` steps only
 * (`metadata.annotations.x[0][0][0]…`): keys that are not plain names are JSON-quoted and cut.
 */
export function formatPath(steps: readonly Step[], maxSteps = 8): string {
  let out = '';
  for (const step of steps.slice(0, maxSteps)) {
    if (typeof step === 'number') out += `[${step}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]{0,62}$/.test(step)) out += out === '' ? step : `.${step}`;
    else out += `[${JSON.stringify(step.slice(0, 60))}]`;
  }
  return steps.length > maxSteps ? `${out}…` : out;
}

/**
 * Reads `metadata.namespace`/`metadata.name` for messages, without trusting them: the result is
 * JSON-quoted when it holds anything but name characters, and cut to 100 characters.
 */
export function describeObject(obj: RawObject | undefined): string {
  const meta = obj?.metadata;
  const ns = typeof meta?.namespace === 'string' ? meta.namespace : '';
  const name = typeof meta?.name === 'string' ? meta.name : '<no name>';
  const text = ns ? `${ns}/${name}` : name;
  const safe = /^[A-Za-z0-9._/<> -]{1,100}$/.test(text) ? text : JSON.stringify(text.slice(0, 100));
  return safe;
}
