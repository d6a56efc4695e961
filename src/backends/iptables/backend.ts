/**
 * The iptables proxy backend: renders with {@link renderIptables} (reusing each unchanged service
 * port's rules), writes through an {@link IptablesWriter} (only what changed; whole tables on the
 * first sync and after a failure; verify and repair on the periodic sync).
 * @module
 */
import type { ProxyBackend, WriteReport } from '../backend.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import type { IPFamily } from '../../state/ip.ts';
import { IptablesRenderCache, renderIptables, type IptablesOptions, type IptablesRuleset } from './render.ts';
import { buildChangeScript } from './restore.ts';
import { cleanupIptables, IptablesWriter, systemIptables, type IptablesTools } from './writer.ts';

/**
 * @param options rendering options, read once per render (the conntrack sysctl may change)
 * @param tools the iptables binaries; default the real ones of `family`
 */
export function iptablesBackend(family: IPFamily, options: () => IptablesOptions, tools: IptablesTools = systemIptables(family)): ProxyBackend<IptablesRuleset> {
  const cache = new IptablesRenderCache();
  const writer = new IptablesWriter(tools);
  return {
    mode: 'iptables',
    render: (plan: ProxyPlan) => renderIptables(plan, options(), cache),
    async write(rules, { full }): Promise<WriteReport> {
      const report = await writer.write(rules, { verify: full });
      return {
        rulesWritten: report.rulesWritten,
        rulesTotal: { filter: ruleCount(rules, 'filter'), nat: ruleCount(rules, 'nat') },
        chainsDeleted: report.chainsDeleted,
        ...(report.repaired === undefined ? {} : { repaired: report.repaired }),
        ...(report.verifyError === undefined ? {} : { verifyError: report.verifyError }),
        ...(report.verifying === undefined ? {} : { verifying: report.verifying }),
      };
    },
    describeChange: buildChangeScript,
    cleanup: () => cleanupIptables(tools),
  };
}

/** Rules of a table: the fixed chains' plus every service port's own (no sorted chain list is built). */
function ruleCount(rules: IptablesRuleset, table: 'filter' | 'nat'): number {
  let n = 0;
  for (const list of rules.fixed[table].values()) n += list.length;
  if (table === 'nat') for (const part of rules.services.values()) n += part.ruleCount;
  return n;
}
