/**
 * The iptables proxy backend: renders with {@link renderIptables}, writes with one
 * `iptables-restore --noflush` per sync ({@link syncIptables}).
 * @module
 */
import type { ProxyBackend, WriteReport } from '../backend.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import type { IPFamily } from '../../state/ip.ts';
import { renderIptables, type IptablesOptions, type IptablesRuleset } from './render.ts';
import { buildChangeScript } from './restore.ts';
import { cleanupIptables, syncIptables, systemIptables, type IptablesTools } from './writer.ts';

/**
 * @param options rendering options, read once per render (the conntrack sysctl may change)
 * @param tools the iptables binaries; default the real ones of `family`
 */
export function iptablesBackend(family: IPFamily, options: () => IptablesOptions, tools: IptablesTools = systemIptables(family)): ProxyBackend<IptablesRuleset> {
  return {
    mode: 'iptables',
    render: (plan: ProxyPlan) => renderIptables(plan, options()),
    async write(rules): Promise<WriteReport> {
      const report = await syncIptables(rules, tools);
      const total = (table: 'filter' | 'nat') => rules[table].reduce((n, c) => n + c.rules.length, 0);
      return { rulesWritten: report.rulesWritten, rulesTotal: { filter: total('filter'), nat: total('nat') }, chainsDeleted: report.chainsDeleted };
    },
    describeChange: buildChangeScript,
    cleanup: () => cleanupIptables(tools),
  };
}
