/**
 * The iptables proxy backend of one IP family: renders with {@link renderIptables} (reusing each
 * unchanged service port's rules), diffs with {@link buildChangeScript}, writes through an
 * {@link IptablesWriter} of `iptables-restore` or `ip6tables-restore` (only what changed; whole
 * tables on the first sync and after a failure; verify and repair on the periodic sync).
 * @module
 */
import type { ProxyBackend, WriteReport } from '../backend.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import type { IPFamily } from '../../state/ip.ts';
import { IptablesRenderCache, renderIptables, type IptablesOptions, type IptablesRuleset } from './render.ts';
import { buildChangeScript } from './restore.ts';
import type { IptablesTools, IptablesWriter } from './writer.ts';
import { ipFamilyLabel } from '../../server/labels.ts';

/**
 * The writer module (and execa with it) is loaded on the first write: `dry-run` never loads it.
 * @param options rendering options, read once per render (the conntrack sysctl may change)
 * @param tools the iptables binaries; default the real ones of `family`
 */
export function iptablesBackend(family: IPFamily, options: () => IptablesOptions, tools?: IptablesTools): ProxyBackend<IptablesRuleset, IptablesRuleset> {
  const cache = new IptablesRenderCache();
  const writerModule = () => import('./writer.ts');
  let writer: IptablesWriter | undefined;
  return {
    mode: 'iptables',
    family,
    render: (plan: ProxyPlan) => renderIptables(plan, options(), cache),
    diff: (committed, next) => ({ text: buildChangeScript(committed, next), committed: next }),
    async apply(rules, { full }): Promise<WriteReport> {
      if (!writer) {
        const m = await writerModule();
        writer = new m.IptablesWriter(tools ?? m.systemIptables(family), { family });
      }
      const report = await writer.write(rules, { verify: full });
      return {
        rulesWritten: report.rulesWritten,
        rulesTotal: { filter: ruleCount(rules, 'filter'), nat: ruleCount(rules, 'nat') },
        chainsDeleted: report.chainsDeleted,
        ...(report.repaired === undefined ? {} : { repaired: report.repaired }),
        ...(report.drift === undefined ? {} : { drift: report.drift }),
        ...(report.verifyError === undefined ? {} : { verifyError: report.verifyError }),
        ...(report.verifying === undefined ? {} : { verifying: report.verifying }),
      };
    },
    async compare(rules) {
      const m = await writerModule();
      const { compareIptables } = await import('./drift.ts');
      return compareIptables(rules, await m.readIptablesKernel(family), family);
    },
    async cleanup() {
      const m = await writerModule();
      return m.cleanupIptables(tools ?? m.systemIptables(family));
    },
    countFailure(metrics, full) {
      metrics.restoreFailures.inc(ipFamilyLabel(family));
      // Upstream counts a failed incremental restore also as a partial restore failure (KEP-3453).
      if (!full) metrics.partialRestoreFailures.inc(ipFamilyLabel(family));
    },
    setRuleGauges(metrics, written, total) {
      for (const [table, n] of Object.entries(written)) metrics.rulesLast.set({ ...ipFamilyLabel(family), table }, n);
      for (const [table, n] of Object.entries(total)) metrics.rulesTotal.set({ ...ipFamilyLabel(family), table }, n);
    },
  };
}

/** Rules of a table: the fixed chains' plus every service port's own (no sorted chain list is built). */
function ruleCount(rules: IptablesRuleset, table: 'filter' | 'nat'): number {
  let n = 0;
  for (const list of rules.fixed[table].values()) n += list.length;
  if (table === 'nat') for (const part of rules.services.values()) n += part.ruleCount;
  return n;
}
