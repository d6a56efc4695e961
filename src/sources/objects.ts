/**
 * The Kubernetes objects kproxy reads, as the API server serialises them (core/v1 Service and Node,
 * discovery.k8s.io/v1 EndpointSlice). Every field is optional and untrusted: these types describe
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

/** The kinds kproxy consumes. */
export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node';

/** Objects sorted by kind, in input order; `origin` says where each came from (for messages). */
export interface ObjectBatch {
  services: RawObject[];
  endpointSlices: RawObject[];
  nodes: RawObject[];
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
