/**
 * The nftables proxy backend: renders with {@link renderNftables}, writes one `nft -j -f`
 * transaction per sync through an {@link NftWriter} that keeps the committed table in memory.
 * @module
 */
import type { ProxyBackend, WriteReport } from '../backend.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import { NftRenderCache, renderNftables, type NftRuleset } from './render.ts';
import { formatBatch, type NftOutput } from './text.ts';
import { cleanupNftables, NftWriter, systemNft, type NftTools } from './writer.ts';

/**
 * @param output the form `describeChange` prints (dry-run)
 * @param tools nft; default the real binary
 */
export function nftablesBackend(output: NftOutput = 'text', tools: NftTools = systemNft()): ProxyBackend<NftRuleset> {
  const writer = new NftWriter(tools);
  // Dry-run tracks what it printed in a writer of its own, so its deltas are the ones `run` would send.
  const printer = new NftWriter(tools);
  const cache = new NftRenderCache();
  return {
    mode: 'nftables',
    render: (plan: ProxyPlan) => renderNftables(plan, cache),
    async write(rules, { full }): Promise<WriteReport> {
      const r = await writer.write(rules, { verify: full });
      let totalRules = 0;
      for (const c of rules.fixedChains) totalRules += c.rules.length;
      for (const part of rules.services.values()) totalRules += part.ruleCount;
      let totalElements = 0;
      for (const list of rules.elements.values()) totalElements += list.length;
      return {
        rulesWritten: { rules: r.rules, elements: r.elements },
        rulesTotal: { rules: totalRules, elements: totalElements },
        chainsDeleted: r.chainsDeleted,
        ...(r.repaired === undefined ? {} : { repaired: r.repaired }),
        ...(r.verifyError === undefined ? {} : { verifyError: r.verifyError }),
        ...(r.verifying === undefined ? {} : { verifying: r.verifying }),
      };
    },
    describeChange(_previous, next) {
      const batch = printer.plan(next);
      return batch.commands.length === 0 ? undefined : formatBatch(batch.commands, output);
    },
    cleanup: () => cleanupNftables(tools),
  };
}
