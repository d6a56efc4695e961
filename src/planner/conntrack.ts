/**
 * Which UDP conntrack entries a sync leaves stale (upstream pkg/proxy/conntrack/cleanup.go).
 * UDP has no connection end, so a flow DNATed to an endpoint that is gone keeps going there (and
 * a flow that met REJECT keeps bypassing the DNAT) until its entry times out. After a successful
 * write these entries are deleted:
 *
 * - flows to any service address of a UDP service port (ClusterIP, externalIPs, LB IPs) or its
 *   NodePort whose reply source is an endpoint that no longer serves the port;
 * - every flow to the service addresses and NodePort of a UDP service port that had no endpoint
 *   before and has one now.
 *
 * Pure: two plans in, filters out.
 * @module
 */
import type { ProxyPlan, ServicePortPlan } from './plan.ts';

/** One `conntrack -D -p udp` filter. Exactly one of `origDst` and `origPortDst` is set. */
export interface ConntrackFilter {
  /** `--orig-dst`: a service address. */
  readonly origDst?: string;
  /** `--orig-port-dst`: a NodePort. */
  readonly origPortDst?: number;
  /** `--reply-src`: the endpoint that went away; undefined: every flow to the destination. */
  readonly replySrc?: string;
}

const key = (sp: ServicePortPlan) => `${sp.name}/${sp.protocol}`;
const addressesOf = (sp: ServicePortPlan) => [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs];

/** Filters for the UDP entries that `next` makes stale, given the `previous` plan (none at start). */
export function staleUDPFlows(previous: ProxyPlan | undefined, next: ProxyPlan): ConntrackFilter[] {
  if (!previous) return [];
  const now = new Map(next.servicePorts.filter((sp) => sp.protocol === 'UDP').map((sp) => [key(sp), sp]));
  const out = new Map<string, ConntrackFilter>();
  const add = (f: ConntrackFilter) => out.set(JSON.stringify(f), f);
  for (const before of previous.servicePorts) {
    if (before.protocol !== 'UDP') continue;
    const after = now.get(key(before));
    const serving = new Set((after?.reachableEndpoints ?? []).map((e) => e.hostPort));
    for (const e of before.reachableEndpoints) {
      if (serving.has(e.hostPort)) continue;
      for (const dst of addressesOf(before)) add({ origDst: dst, replySrc: e.ip });
      if (before.nodePort !== 0) add({ origPortDst: before.nodePort, replySrc: e.ip });
    }
  }
  for (const after of now.values()) {
    const before = previous.servicePorts.find((sp) => key(sp) === key(after));
    if (after.reachableEndpoints.length === 0 || (before && before.reachableEndpoints.length > 0)) continue;
    for (const dst of addressesOf(after)) add({ origDst: dst });
    if (after.nodePort !== 0) add({ origPortDst: after.nodePort });
  }
  return [...out.values()];
}
