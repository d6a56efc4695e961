/**
 * `kproxy list`: one row per service port and IP family, like `cilium-dbg service list`: its
 * frontends, policies, the endpoints its traffic uses with their weights, and flags. Pure: plans
 * in, rows out, sorted by name, protocol and family (the plan's order), so the output is stable.
 * @module
 */
import type { IPFamily } from '../state/ip.ts';
import type { Protocol } from '../state/model.ts';
import type { PlannedEndpoint, ProxyPlan, ServicePortPlan } from './plan.ts';
import type { PodPolicyPlan, PolicyPlan } from './policy.ts';

/** An endpoint in use and its share of new connections, 0–1. */
export interface WeightedEndpoint {
  /** `ip:port` (`[ip]:port` for IPv6). */
  readonly endpoint: string;
  readonly weight: number;
}

/** One service port in one family. */
export interface ListRow {
  /** `namespace/name:port`. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly family: IPFamily;
  /** Every destination, as `IP:port` (`[IP]:port`), with NodePorts as `*:nodePort` (`:nodePort` in nftables' terms). */
  readonly frontends: { readonly clusterIP: string; readonly nodePort: number | undefined; readonly externalIPs: readonly string[]; readonly loadBalancerIPs: readonly string[] };
  readonly internalTrafficPolicy: 'Cluster' | 'Local';
  /** Undefined when the port has no external destination. */
  readonly externalTrafficPolicy: 'Cluster' | 'Local' | undefined;
  /** Where ClusterIP traffic goes (empty: rejected or dropped, see flags). */
  readonly internalEndpoints: readonly WeightedEndpoint[];
  /** Where traffic to external destinations from outside goes; undefined when the port has none. */
  readonly externalEndpoints: readonly WeightedEndpoint[] | undefined;
  /**
   * `affinity=<s>s`, `local-only` (internal or external traffic uses only this node's endpoints),
   * `no-endpoints` (REJECT), `no-local-endpoints` (DROP of the Local-policy traffic),
   * `source-ranges` (loadBalancerSourceRanges), `health-check=<port>`.
   */
  readonly flags: readonly string[];
}

/** The rows of the plans, in the order given (each plan sorted by name, then protocol). */
export function listServicePorts(plans: readonly ProxyPlan[]): ListRow[] {
  const rows: ListRow[] = [];
  for (const plan of plans) for (const sp of plan.servicePorts) rows.push(row(sp, plan.family));
  return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : a.family - b.family));
}

function row(sp: ServicePortPlan, family: IPFamily): ListRow {
  const hostPort = (ip: string) => `${family === 6 ? `[${ip}]` : ip}:${sp.port}`;
  const external = sp.nodePort !== 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0;
  const weighted = (list: readonly PlannedEndpoint[]) => list.map((e) => ({ endpoint: e.hostPort, weight: 1 / list.length }));
  const flags: string[] = [];
  if (sp.affinityTimeoutSeconds !== undefined) flags.push(`affinity=${sp.affinityTimeoutSeconds}s`);
  if (sp.internalPolicyLocal || sp.externalPolicyLocal) flags.push('local-only');
  if (sp.internalNoEndpoints === 'REJECT') flags.push('no-endpoints');
  else if (sp.internalNoEndpoints === 'DROP' || sp.externalNoEndpoints === 'DROP') flags.push('no-local-endpoints');
  if (sp.usesFirewallChain) flags.push('source-ranges');
  if (sp.healthCheckNodePort !== 0) flags.push(`health-check=${sp.healthCheckNodePort}`);
  return {
    name: sp.name,
    protocol: sp.protocol,
    family,
    frontends: {
      clusterIP: hostPort(sp.clusterIP),
      nodePort: sp.nodePort === 0 ? undefined : sp.nodePort,
      externalIPs: sp.externalIPs.map(hostPort),
      loadBalancerIPs: sp.loadBalancerIPs.map(hostPort),
    },
    internalTrafficPolicy: sp.internalPolicyLocal ? 'Local' : 'Cluster',
    externalTrafficPolicy: external ? (sp.externalPolicyLocal ? 'Local' : 'Cluster') : undefined,
    internalEndpoints: sp.internalNoEndpoints ? [] : weighted(sp.internalPolicyLocal ? sp.localEndpoints : sp.clusterEndpoints),
    externalEndpoints: external ? (sp.externalNoEndpoints ? [] : weighted(sp.externalPolicyLocal ? sp.localEndpoints : sp.clusterEndpoints)) : undefined,
    flags,
  };
}

/** One direction of a local pod in `list --policies`. */
export interface PolicyListDirection {
  readonly direction: 'ingress' | 'egress';
  readonly isolated: boolean;
  readonly policies: readonly string[];
  /** Each planned rule: whom it allows (peers in words, with address counts) and on which ports. */
  readonly rules: readonly { readonly policy: string; readonly index: number; readonly peers: string; readonly ports: string }[];
}

/** One pod of this node in `list --policies`. */
export interface PolicyListRow {
  readonly pod: string;
  readonly addresses: readonly string[];
  readonly ingress: PolicyListDirection;
  readonly egress: PolicyListDirection;
}

/** The rows of `list --policies`: every local pod with an address, in the plan's order (by name). */
export function listPolicies(plan: PolicyPlan): PolicyListRow[] {
  const direction = (pod: PodPolicyPlan, which: 'ingress' | 'egress'): PolicyListDirection => {
    const d = pod[which];
    return {
      direction: which,
      isolated: d.isolated,
      policies: d.policies,
      rules: d.rules.map((r) => {
        const peers =
          r.peers === 'any'
            ? 'anyone'
            : [
                ...r.peers.sets.map((id) => {
                  const set = plan.peerSets.get(id);
                  return set ? `${set.description} (${set.addresses.length} address${set.addresses.length === 1 ? '' : 'es'})` : id;
                }),
                ...r.peers.blocks.map((b) => (b.except.length > 0 ? `${b.cidr} except ${b.except.join(', ')}` : b.cidr)),
              ].join(', ') || 'the pods of its named ports';
        const set = r.namedSet === undefined ? undefined : plan.namedSets.get(r.namedSet);
        const named = set ? [`${set.description.slice(0, set.description.indexOf(' of '))} (${set.targets.length} destination${set.targets.length === 1 ? '' : 's'})`] : [];
        const ports =
          r.ports === 'any' ? 'every port' : [...r.ports.map((p) => `${p.protocol} ${p.from === p.to ? p.from : `${p.from}-${p.to}`}`), ...named].join(', ') || 'no port (a named port no pod has)';
        return { policy: r.policy, index: r.index, peers, ports };
      }),
    };
  };
  return plan.pods.map((p) => ({ pod: p.pod, addresses: p.addresses, ingress: direction(p, 'ingress'), egress: direction(p, 'egress') }));
}
