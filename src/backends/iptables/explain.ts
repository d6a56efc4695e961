/**
 * The iptables rules behind each decision `kproxy explain` reports (planner/explain.ts), named as
 * `iptables-save` shows them: table, chain, and the target or comment that finds the rule.
 * @module
 */
import type { RuleNames } from '../../planner/explain.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import { CHAIN, localMatch } from './render.ts';
import { endpointChainName, serviceChainNames } from './names.ts';

/** Rule names of iptables mode, for rules rendered from `plan`. */
export function iptablesRuleNames(plan: Pick<ProxyPlan, 'localDetector'>): RuleNames {
  const fromPod = plan.localDetector ? localMatch(plan.localDetector, true) : '-s ${cidr}';
  const notFromPod = plan.localDetector ? localMatch(plan.localDetector, false) : '! -s ${cidr}';
  return {
    entry: (source) => `nat ${source === 'node' ? 'OUTPUT' : 'PREROUTING'} -j ${CHAIN.services}`,
    dispatch(sp, kind) {
      const n = serviceChainNames(sp.name, sp.protocol);
      switch (kind) {
        case 'clusterIP':
          return `nat ${CHAIN.services} -j ${sp.internalPolicyLocal ? n.svl : n.svc} ("${sp.name} cluster IP")`;
        case 'externalIP':
          return `nat ${CHAIN.services} -j ${n.ext} ("${sp.name} external IP")`;
        case 'loadBalancerIP':
          return `nat ${CHAIN.services} -j ${sp.usesFirewallChain ? n.fw : n.ext} ("${sp.name} loadbalancer IP")`;
        case 'nodePort':
          return `nat ${CHAIN.services} -j ${CHAIN.nodePorts}, then ${CHAIN.nodePorts} --dport ${sp.nodePort} -j ${n.ext}`;
      }
    },
    noEndpoints(sp, kind, verdict) {
      const chain = kind === 'clusterIP' ? CHAIN.services : CHAIN.externalServices;
      return `filter ${chain} -j ${verdict} ("${sp.name} has no ${verdict === 'REJECT' ? '' : 'local '}endpoints")`;
    },
    firewall(sp, allowedBy) {
      const n = serviceChainNames(sp.name, sp.protocol);
      return allowedBy ? `nat ${n.fw} -s ${allowedBy} -j ${n.ext}` : `filter ${CHAIN.proxyFirewall} -j DROP ("${sp.name} traffic not accepted by ${n.fw}")`;
    },
    noMatch: () => `nat ${CHAIN.services} and ${CHAIN.nodePorts}: no rule matches`,
    sourceRangesWithoutEndpoints: false,
    unknownClusterIPPort: () => undefined,
    unallocatedClusterIP: () => undefined,
    external(sp, source) {
      const n = serviceChainNames(sp.name, sp.protocol);
      if (source === 'pod') return `nat ${n.ext} ${fromPod} -j ${n.svc} ("pod traffic for ${sp.name} external destinations")`;
      if (source === 'node') return `nat ${n.ext} -m addrtype --src-type LOCAL -j ${n.svc} ("route LOCAL traffic for ${sp.name} external destinations")`;
      return `nat ${n.ext} -j ${sp.externalPolicyLocal ? n.svl : n.svc}`;
    },
    selection(sp, set) {
      const n = serviceChainNames(sp.name, sp.protocol);
      return `nat ${set === 'Local' ? n.svl : n.svc}`;
    },
    endpoint: (sp, ep) => `nat ${endpointChainName(sp.name, sp.protocol, ep.hostPort)} -j DNAT --to-destination ${ep.hostPort}`,
    masquerade(sp, reason) {
      const n = serviceChainNames(sp.name, sp.protocol);
      const then = `, then nat ${CHAIN.postrouting} -j MASQUERADE`;
      const internal = sp.internalPolicyLocal ? n.svl : n.svc;
      switch (reason) {
        case 'masquerade-all':
          return `nat ${internal} -j ${CHAIN.markMasq} ("${sp.name} cluster IP")${then}`;
        case 'outside-cluster-cidr':
          return `nat ${internal} ${notFromPod} -j ${CHAIN.markMasq} ("${sp.name} cluster IP")${then}`;
        case 'external-cluster-policy':
          return `nat ${n.ext} -j ${CHAIN.markMasq} ("masquerade traffic for ${sp.name} external destinations")${then}`;
        case 'node-external-local':
          return `nat ${n.ext} -m addrtype --src-type LOCAL -j ${CHAIN.markMasq}${then}`;
        case 'hairpin':
          return `nat KUBE-SEP-… -s <endpoint> -j ${CHAIN.markMasq}${then}`;
        case 'none':
          return `nat ${CHAIN.postrouting}`;
      }
    },
  };
}
