/** State → plan → iptables rules for tests, with upstream's test proxier defaults (proxier_test.go NewFakeProxier). */
import { renderIptables, type IptablesRuleset } from '../../src/backends/iptables/render.ts';
import { buildRestoreScript } from '../../src/backends/iptables/restore.ts';
import { planProxy, type ProxyConfig, type ProxyPlan } from '../../src/planner/plan.ts';
import { parseCIDR, parseIP } from '../../src/state/ip.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { ProxyStateStore } from '../../src/state/store.ts';

export const TEST_CONFIG: ProxyConfig = {
  family: 4,
  clusterCIDR: parseCIDR('10.0.0.0/8'),
  masqueradeAll: false,
  masqueradeBit: 14,
  nodePortAddresses: [],
  localAddresses: [parseIP('192.168.0.2')!, parseIP('192.168.1.2')!, parseIP('127.0.0.1')!],
};

export function storeOf(objects: readonly RawObject[], nodeName = 'test-node'): ProxyStateStore {
  const store = new ProxyStateStore(nodeName);
  for (const o of objects) {
    if (o.kind === 'Service') store.applyService(o);
    else if (o.kind === 'Node') store.applyNode(o);
    else if (o.kind === 'ServiceCIDR') store.applyServiceCIDR(o);
    else store.applyEndpointSlice(o);
  }
  return store;
}

export function plan(objects: readonly RawObject[], config: Partial<ProxyConfig> = {}, nodeName = 'test-node'): ProxyPlan {
  const store = storeOf(objects, nodeName);
  return planProxy(store.servicePortStates(), store.node, { ...TEST_CONFIG, ...config }, undefined, store.serviceCIDRs);
}

export function rules(objects: readonly RawObject[], config: Partial<ProxyConfig> = {}, nodeName = 'test-node'): IptablesRuleset {
  return renderIptables(plan(objects, config, nodeName), { conntrackTCPBeLiberal: false });
}

export function script(objects: readonly RawObject[], config: Partial<ProxyConfig> = {}, nodeName = 'test-node'): string {
  return buildRestoreScript(rules(objects, config, nodeName));
}

/** Rules of one chain of one table as `-A CHAIN ...` lines. */
export function chain(r: IptablesRuleset, table: 'filter' | 'nat', name: string): string[] | undefined {
  return r[table].find((c) => c.name === name)?.rules.map((rule) => `-A ${name} ${rule}`);
}
