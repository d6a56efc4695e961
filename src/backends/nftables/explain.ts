/**
 * The nftables rules, maps and sets behind each decision `kproxy explain` reports
 * (planner/explain.ts), named as `nft list table ip kube-proxy` shows them.
 * @module
 */
import type { RuleNames } from '../../planner/explain.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import { NFT, serviceNames } from './names.ts';
import { localMatch } from './render.ts';
import { statementText } from './text.ts';

/** Rule names of nftables mode, for rules rendered from `plan`. */
export function nftablesRuleNames(plan: Pick<ProxyPlan, 'localDetector' | 'family'>): RuleNames {
  const ip = plan.family === 6 ? 'ip6' : 'ip';
  const fromPod = plan.localDetector ? statementText(localMatch(plan.localDetector, ip, true)) : `${ip} saddr \${cidr}`;
  const notFromPod = plan.localDetector ? statementText(localMatch(plan.localDetector, ip, false)) : `${ip} saddr != \${cidr}`;
  return {
    entry: (source) => `${source === 'node' ? 'nat-output' : 'nat-prerouting'} -> ${NFT.services}`,
    dispatch(sp, kind) {
      const n = serviceNames(sp.name, sp.protocol);
      switch (kind) {
        case 'clusterIP':
          return `map ${NFT.serviceIPs} -> goto ${sp.internalPolicyLocal ? n.local : n.service}`;
        case 'nodePort':
          return `map ${NFT.serviceNodePorts} -> goto ${n.external}`;
        case 'externalIP':
        case 'loadBalancerIP':
          return `map ${NFT.serviceIPs} -> goto ${n.external}`;
      }
    },
    noEndpoints(sp, kind, verdict) {
      const map = kind === 'nodePort' ? NFT.noEndpointNodePorts : NFT.noEndpointServices;
      const check = kind === 'nodePort' ? NFT.nodePortEndpointsCheck : NFT.serviceEndpointsCheck;
      return `${check} -> map ${map} -> ${verdict === 'REJECT' ? `goto ${NFT.reject}` : 'drop'} ("${sp.name}")`;
    },
    firewall(sp, allowedBy) {
      const n = serviceNames(sp.name, sp.protocol);
      return `${NFT.firewallCheck} -> map ${NFT.firewallIPs} -> ${n.firewall}: ${allowedBy ? `${ip} saddr ${allowedBy} return` : 'drop'}`;
    },
    noMatch: () => `${NFT.services}: no element of map ${NFT.serviceIPs} or ${NFT.serviceNodePorts} matches`,
    sourceRangesWithoutEndpoints: true,
    unknownClusterIPPort: () => `${NFT.clusterIPsCheck}: ${ip} daddr @${NFT.clusterIPs} reject`,
    unallocatedClusterIP: (cidr) => `${NFT.clusterIPsCheck}: ${ip} daddr ${cidr} drop ("Drop traffic to unallocated ClusterIPs")`,
    external(sp, source) {
      const n = serviceNames(sp.name, sp.protocol);
      if (source === 'pod') return `${n.external}: ${fromPod} goto ${n.service}`;
      if (source === 'node') return `${n.external}: fib saddr type local goto ${n.service}`;
      return `${n.external}: goto ${sp.externalPolicyLocal ? n.local : n.service}`;
    },
    selection(sp, set) {
      const n = serviceNames(sp.name, sp.protocol);
      return set === 'Local' ? n.local : n.service;
    },
    endpoint(sp, ep, set) {
      const n = serviceNames(sp.name, sp.protocol);
      return `${set === 'Local' ? n.local : n.service}: dnat to ${ep.hostPort}`;
    },
    masquerade(sp, reason) {
      const n = serviceNames(sp.name, sp.protocol);
      const then = `, then ${NFT.masquerading}: masquerade`;
      const internal = sp.internalPolicyLocal ? n.local : n.service;
      switch (reason) {
        case 'masquerade-all':
          return `${internal}: jump ${NFT.markMasq}${then}`;
        case 'outside-cluster-cidr':
          return `${internal}: ${notFromPod} jump ${NFT.markMasq}${then}`;
        case 'external-cluster-policy':
          return `${n.external}: jump ${NFT.markMasq}${then}`;
        case 'node-external-local':
          return `${n.external}: fib saddr type local jump ${NFT.markMasq}${then}`;
        case 'hairpin':
          return `${NFT.masquerading}: ${ip} saddr . ${ip} daddr @${NFT.hairpin} jump ${NFT.markMasq}${then}`;
        case 'none':
          return NFT.masquerading;
      }
    },
  };
}
