/**
 * EndpointSlice → {@link EndpointSlice}: validation and normalisation of one
 * discovery.k8s.io/v1 EndpointSlice.
 *
 * As upstream (pkg/proxy/endpointslicecache.go, cmd/kube-proxy label selector
 * `!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name`): slices without the
 * `kubernetes.io/service-name` label, FQDN slices and slices of headless Services are ignored; only
 * an endpoint's first address is used; missing `ready`/`serving` mean true and missing
 * `terminating` false (KEP-1672). Slice ports without a port number are skipped.
 *
 * A bad slice-level field (name, labels, addressType, ports) makes the slice invalid; a bad
 * endpoint drops only that endpoint, so one broken address does not take its neighbours with it.
 * @module
 */
import { describeObject, type RawObject } from '../sources/objects.ts';
import { joinHostPort, type IPFamily } from './ip.ts';
import type { Endpoint, EndpointSlice, InputIssue, NormaliseResult, SliceEndpoint, SlicePort } from './model.ts';
import { SERVICE_PROXY_NAME_LABEL } from './service.ts';
import * as v from './validate.ts';

/** Label naming the Service a slice belongs to. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Label the EndpointSlice controller puts on slices of headless Services. */
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';

/** Validates a raw EndpointSlice; `issues` of an `ok` result lists dropped endpoints. Never throws. */
export function normaliseEndpointSlice(raw: RawObject): NormaliseResult<EndpointSlice> {
  let key: string | undefined;
  try {
    const meta = v.record(raw.metadata, 'metadata');
    const namespace = meta.namespace === undefined ? 'default' : v.dnsLabel(meta.namespace, 'metadata.namespace');
    const name = v.dnsSubdomain(meta.name, 'metadata.name');
    key = `${namespace}/${name}`;
    v.nesting(raw);
    const labels = v.record(meta.labels, 'metadata.labels');
    const serviceName = labels[SERVICE_NAME_LABEL];
    if (serviceName === undefined) return { status: 'ignored', key, reason: `no ${SERVICE_NAME_LABEL} label` };
    if (HEADLESS_LABEL in labels) return { status: 'ignored', key, reason: 'slice of a headless Service' };
    if (SERVICE_PROXY_NAME_LABEL in labels) return { status: 'ignored', key, reason: `labelled ${SERVICE_PROXY_NAME_LABEL}` };
    const serviceKey = `${namespace}/${v.dnsLabel(serviceName, `metadata.labels["${SERVICE_NAME_LABEL}"]`)}`;
    const addressType = v.oneOf(raw.addressType, 'addressType', ['IPv4', 'IPv6', 'FQDN'], 'IPv4');
    if (addressType === 'FQDN') return { status: 'ignored', key, reason: 'addressType FQDN' };
    const family: IPFamily = addressType === 'IPv6' ? 6 : 4;

    const ports: SlicePort[] = [];
    v.list(raw.ports, 'ports').forEach((item, i) => {
      const p = v.record(item, `ports[${i}]`);
      if (p.port === undefined || p.port === null) return;
      ports.push({ name: v.portName(p.name, `ports[${i}].name`), protocol: v.protocol(p.protocol, `ports[${i}].protocol`), port: v.port(p.port, `ports[${i}].port`) });
    });

    const issues: InputIssue[] = [];
    const endpoints: SliceEndpoint[] = [];
    // A slice of one port (the usual case) stores each endpoint in its merged form, which the
    // store's service-port states then share instead of copying (see SliceEndpoint).
    const only = ports.length === 1 ? ports[0]! : undefined;
    v.list(raw.endpoints, 'endpoints').forEach((item, i) => {
      try {
        endpoints.push(readEndpoint(item, `endpoints[${i}]`, family, only?.port));
      } catch (err) {
        issues.push(v.issueFrom(err, 'EndpointSlice', key!, 'endpoint'));
      }
    });
    return { status: 'ok', value: { key, serviceKey, family, ports, endpoints }, issues };
  } catch (err) {
    return { status: 'invalid', key, issue: v.issueFrom(err, 'EndpointSlice', key ?? describeObject(raw), 'object') };
  }
}

const NO_HINTS: readonly string[] = Object.freeze([]);

/** @param port the slice's only port: the endpoint is then also its merged {@link Endpoint} */
function readEndpoint(item: unknown, field: string, family: IPFamily, port: number | undefined): SliceEndpoint {
  const ep = v.record(item, field);
  const addresses = v.list(ep.addresses, `${field}.addresses`);
  if (addresses.length === 0) throw new v.FieldError(`${field}.addresses`, 'must hold at least one address');
  const ip = v.ip(addresses[0], `${field}.addresses[0]`);
  if (ip.family !== family) throw new v.FieldError(`${field}.addresses[0]`, `is not an IPv${family} address: ${v.show(addresses[0])}`);
  const cond = v.record(ep.conditions, `${field}.conditions`);
  const hints = v.record(ep.hints, `${field}.hints`);
  const hintNames = (list: unknown, f: string, check: (x: unknown, f: string) => string) => {
    const items = v.list(list, f);
    // Most endpoints carry no hints: they share one empty list instead of 100k of their own.
    return items.length === 0 ? NO_HINTS : items.map((h, i) => check(v.record(h, `${f}[${i}]`).name, `${f}[${i}].name`));
  };
  const conditions = {
    ready: v.condition(cond.ready, `${field}.conditions.ready`, true),
    serving: v.condition(cond.serving, `${field}.conditions.serving`, true),
    terminating: v.condition(cond.terminating, `${field}.conditions.terminating`, false),
    nodeName: ep.nodeName === undefined || ep.nodeName === null ? undefined : v.dnsSubdomain(ep.nodeName, `${field}.nodeName`),
    zone: ep.zone === undefined || ep.zone === null ? undefined : v.labelValue(ep.zone, `${field}.zone`),
    zoneHints: hintNames(hints.forZones, `${field}.hints.forZones`, v.labelValue),
    nodeHints: hintNames(hints.forNodes, `${field}.hints.forNodes`, v.dnsSubdomain),
  };
  if (port === undefined) return { ip, ...conditions };
  // One shape for every such endpoint, so V8 gives them one hidden class.
  const merged: SliceEndpoint & Endpoint = {
    ip,
    port,
    hostPort: joinHostPort(ip, port),
    ready: conditions.ready,
    serving: conditions.serving,
    terminating: conditions.terminating,
    nodeName: conditions.nodeName,
    zone: conditions.zone,
    zoneHints: conditions.zoneHints,
    nodeHints: conditions.nodeHints,
  };
  return merged;
}
