/**
 * NetworkPolicy (`networking.k8s.io/v1`), Pod and Namespace → the compact facts policy enforcement
 * needs: the second pipeline's state, beside the Service one and sharing none of it. A Pod is kept
 * as its namespace, labels, addresses, node, host-network flag and named container ports, never as
 * the object (150,000 pods must fit on every node).
 *
 * Semantics are the API's (the NetworkPolicy API reference; upstream's e2e suite
 * test/e2e/network/netpol): `policyTypes` defaults to `Ingress`, plus `Egress` when the policy has
 * `egress` rules; an empty `from`/`to` or `ports` means all; a peer with both `podSelector` and
 * `namespaceSelector` needs both (AND); `ipBlock` stands alone, its `except` inside its `cidr`;
 * a named port must be an IANA service name; `endPort` needs a numeric `port` and is not below it.
 *
 * Bad input **fails closed**: a policy whose rules cannot be read as written keeps its selector and
 * policy types and loses its rules, so the pods it selects stay isolated in its directions with
 * nothing of it allowed (a broken allow rule never opens a pod); one whose selector cannot be read
 * isolates every pod of its namespace in those directions.
 * @module
 */
import { describeObject, type RawObject } from '../sources/objects.ts';
import { cidrContains, type CIDR, type IPAddress } from './ip.ts';
import { EVERYTHING, labels, labelSelector, type Labels, type LabelSelector } from './labels.ts';
import type { InputIssue, Protocol } from './model.ts';
import * as v from './validate.ts';

/** A peer of a rule: pods by selectors, or addresses by CIDR. */
export type PolicyPeer =
  | {
      readonly kind: 'pods';
      /** Pods of the selected namespaces (`{}`, every pod, when the peer has only a namespaceSelector). */
      readonly podSelector: LabelSelector;
      /** Namespaces; undefined: the policy's own namespace only. */
      readonly namespaceSelector: LabelSelector | undefined;
    }
  | { readonly kind: 'ipBlock'; readonly cidr: CIDR; readonly except: readonly CIDR[] };

/** A port of a rule: a number or range, a named port, or every port of the protocol. */
export type PolicyPort =
  | { readonly protocol: Protocol; readonly kind: 'all' }
  | { readonly protocol: Protocol; readonly kind: 'range'; readonly from: number; readonly to: number }
  | { readonly protocol: Protocol; readonly kind: 'named'; readonly name: string };

/** One ingress or egress rule: traffic from/to any of `peers` on any of `ports`. */
export interface PolicyRule {
  /** Empty: every peer (`from`/`to` absent or empty). */
  readonly peers: readonly PolicyPeer[];
  /** Empty: every port. */
  readonly ports: readonly PolicyPort[];
}

/** A validated NetworkPolicy. */
export interface NetworkPolicy {
  /** `namespace/name`. */
  readonly key: string;
  readonly namespace: string;
  /** The pods of `namespace` it selects (every pod, `{}`, when its selector could not be read: fail closed). */
  readonly podSelector: LabelSelector;
  readonly ingress: boolean;
  readonly egress: boolean;
  readonly ingressRules: readonly PolicyRule[];
  readonly egressRules: readonly PolicyRule[];
  /** Set when its rules were dropped for bad input: why. It then only isolates. */
  readonly brokenRules?: string;
}

/** A named container port (`spec.containers[].ports[]` with a name). */
export interface NamedPort {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

/** What policy needs of a Pod. */
export interface PodFacts {
  /** `namespace/name`. */
  readonly key: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** `status.podIPs` (or `podIP`); empty until the pod has one. */
  readonly ips: readonly IPAddress[];
  readonly nodeName: string | undefined;
  readonly hostNetwork: boolean;
  /** Succeeded or Failed: its addresses may be reused, it is no peer and no target. */
  readonly finished: boolean;
  readonly namedPorts: readonly NamedPort[];
}

/** What policy needs of a Namespace. */
export interface NamespaceFacts {
  readonly name: string;
  readonly labels: Labels;
}

/** The outcome of normalising a NetworkPolicy: a policy (maybe only isolating, with its issue), or nothing usable. */
export type PolicyResult = { readonly policy: NetworkPolicy; readonly issue?: InputIssue } | { readonly issue: InputIssue; readonly key?: string };

const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

/**
 * Normalises a NetworkPolicy (see the module comment for what fails closed). Never throws.
 */
export function normaliseNetworkPolicy(raw: RawObject): PolicyResult {
  const object = describeObject(raw);
  let namespace: string;
  let name: string;
  try {
    const meta = v.record(raw.metadata, 'metadata');
    namespace = v.dnsLabel(meta.namespace ?? 'default', 'metadata.namespace');
    name = v.dnsSubdomain(meta.name, 'metadata.name');
  } catch (err) {
    return { issue: v.issueFrom(err, 'NetworkPolicy', object, 'object') };
  }
  const key = `${namespace}/${name}`;
  // What isolates: the selector and the policy types. Read first, so bad rules still isolate.
  let spec: Record<string, unknown>;
  let ingress = true;
  let egress = true;
  let podSelector: LabelSelector;
  try {
    v.nesting(raw);
    spec = v.record(raw.spec, 'spec');
    const types = v.list(spec.policyTypes, 'spec.policyTypes').map((t, i) => v.oneOf(t, `spec.policyTypes[${i}]`, ['Ingress', 'Egress'] as const, 'Ingress'));
    if (types.length > 0) {
      ingress = types.includes('Ingress');
      egress = types.includes('Egress');
    } else {
      ingress = true;
      egress = spec.egress !== undefined && spec.egress !== null;
    }
    podSelector = labelSelector(spec.podSelector, 'spec.podSelector');
  } catch (err) {
    // Fail closed: every pod of the namespace, in both directions unless the types were read.
    const issue = v.issueFrom(err, 'NetworkPolicy', key, 'rules');
    return { policy: { key, namespace, podSelector: EVERYTHING, ingress, egress, ingressRules: [], egressRules: [], brokenRules: issue.message }, issue };
  }
  try {
    const ingressRules = v.list(spec.ingress, 'spec.ingress').map((r, i) => rule(r, `spec.ingress[${i}]`, 'from'));
    const egressRules = v.list(spec.egress, 'spec.egress').map((r, i) => rule(r, `spec.egress[${i}]`, 'to'));
    return { policy: { key, namespace, podSelector, ingress, egress, ingressRules: ingress ? ingressRules : [], egressRules: egress ? egressRules : [] } };
  } catch (err) {
    const issue = v.issueFrom(err, 'NetworkPolicy', key, 'rules');
    return { policy: { key, namespace, podSelector, ingress, egress, ingressRules: [], egressRules: [], brokenRules: issue.message }, issue };
  }
}

function rule(value: unknown, at: string, peersField: 'from' | 'to'): PolicyRule {
  const r = v.record(value, at);
  const peers = v.list(r[peersField], `${at}.${peersField}`).map((p, i) => peer(p, `${at}.${peersField}[${i}]`));
  const ports = v.list(r.ports, `${at}.ports`).map((p, i) => policyPort(p, `${at}.ports[${i}]`));
  return { peers, ports };
}

function peer(value: unknown, at: string): PolicyPeer {
  const p = v.record(value, at);
  const has = (k: string) => p[k] !== undefined && p[k] !== null;
  if (has('ipBlock')) {
    if (has('podSelector') || has('namespaceSelector')) throw new v.FieldError(at, 'ipBlock may not be combined with podSelector or namespaceSelector');
    const b = v.record(p.ipBlock, `${at}.ipBlock`);
    const cidr = v.cidr(b.cidr, `${at}.ipBlock.cidr`);
    const except = v.list(b.except, `${at}.ipBlock.except`).map((e, i) => {
      const c = v.cidr(e, `${at}.ipBlock.except[${i}]`);
      if (c.family !== cidr.family || c.prefix <= cidr.prefix || !cidrContains(cidr, { family: c.family, text: c.text, bytes: c.bytes })) {
        throw new v.FieldError(`${at}.ipBlock.except[${i}]`, `must be a strict subset of ${cidr.text}, got ${c.text}`);
      }
      return c;
    });
    return { kind: 'ipBlock', cidr, except };
  }
  if (!has('podSelector') && !has('namespaceSelector')) throw new v.FieldError(at, 'must have podSelector, namespaceSelector or ipBlock');
  return {
    kind: 'pods',
    podSelector: labelSelector(p.podSelector, `${at}.podSelector`),
    namespaceSelector: has('namespaceSelector') ? labelSelector(p.namespaceSelector, `${at}.namespaceSelector`) : undefined,
  };
}

function policyPort(value: unknown, at: string): PolicyPort {
  const p = v.record(value, at);
  const protocol = v.protocol(p.protocol, `${at}.protocol`);
  if (p.port === undefined || p.port === null) {
    if (p.endPort !== undefined && p.endPort !== null) throw new v.FieldError(`${at}.endPort`, 'needs a numeric port');
    return { protocol, kind: 'all' };
  }
  if (typeof p.port === 'string') {
    if (!IANA_SVC_NAME.test(p.port) || !/[a-z]/.test(p.port) || p.port.includes('--')) throw new v.FieldError(`${at}.port`, `must be a port number or an IANA service name, got ${v.show(p.port)}`);
    if (p.endPort !== undefined && p.endPort !== null) throw new v.FieldError(`${at}.endPort`, 'may not be given with a named port');
    return { protocol, kind: 'named', name: p.port };
  }
  const from = v.port(p.port, `${at}.port`);
  const to = p.endPort === undefined || p.endPort === null ? from : v.port(p.endPort, `${at}.endPort`);
  if (to < from) throw new v.FieldError(`${at}.endPort`, `must not be below port ${from}, got ${to}`);
  return { protocol, kind: 'range', from, to };
}

/** Normalises a Pod to its {@link PodFacts}. Never throws. */
export function normalisePod(raw: RawObject): { pod: PodFacts } | { issue: InputIssue; key?: string } {
  try {
    const meta = v.record(raw.metadata, 'metadata');
    const namespace = v.dnsLabel(meta.namespace ?? 'default', 'metadata.namespace');
    const name = v.dnsSubdomain(meta.name, 'metadata.name');
    const key = `${namespace}/${name}`;
    try {
      v.nesting(raw);
      const spec = v.record(raw.spec, 'spec');
      const status = v.record(raw.status, 'status');
      const listed = v.list(status.podIPs, 'status.podIPs');
      const ipTexts = listed.length > 0 ? listed.map((x, i) => v.record(x, `status.podIPs[${i}]`).ip) : status.podIP ? [status.podIP] : [];
      const ips = ipTexts.map((x, i) => v.ip(x, listed.length > 0 ? `status.podIPs[${i}].ip` : 'status.podIP'));
      const nodeName = spec.nodeName === undefined || spec.nodeName === null || spec.nodeName === '' ? undefined : v.dnsSubdomain(spec.nodeName, 'spec.nodeName');
      const namedPorts: NamedPort[] = [];
      v.list(spec.containers, 'spec.containers').forEach((c, i) => {
        v.list(v.record(c, `spec.containers[${i}]`).ports, `spec.containers[${i}].ports`).forEach((p, j) => {
          const at = `spec.containers[${i}].ports[${j}]`;
          const port = v.record(p, at);
          if (port.name === undefined || port.name === null || port.name === '') return;
          const pname = v.dnsLabel(port.name, `${at}.name`);
          namedPorts.push({ name: pname, protocol: v.protocol(port.protocol, `${at}.protocol`), port: v.port(port.containerPort, `${at}.containerPort`) });
        });
      });
      const phase = status.phase;
      return {
        pod: {
          key,
          namespace,
          labels: labels(meta.labels, 'metadata.labels'),
          ips,
          nodeName,
          hostNetwork: v.condition(spec.hostNetwork, 'spec.hostNetwork', false),
          finished: phase === 'Succeeded' || phase === 'Failed',
          namedPorts,
        },
      };
    } catch (err) {
      return { issue: v.issueFrom(err, 'Pod', key, 'object'), key };
    }
  } catch (err) {
    return { issue: v.issueFrom(err, 'Pod', describeObject(raw), 'object') };
  }
}

/** Normalises a Namespace to its name and labels. Never throws. */
export function normaliseNamespace(raw: RawObject): { namespace: NamespaceFacts } | { issue: InputIssue; key?: string } {
  try {
    const meta = v.record(raw.metadata, 'metadata');
    const name = v.dnsLabel(meta.name, 'metadata.name');
    try {
      v.nesting(raw);
      return { namespace: { name, labels: labels(meta.labels, 'metadata.labels') } };
    } catch (err) {
      return { issue: v.issueFrom(err, 'Namespace', name, 'object'), key: name };
    }
  } catch (err) {
    return { issue: v.issueFrom(err, 'Namespace', describeObject(raw), 'object') };
  }
}
