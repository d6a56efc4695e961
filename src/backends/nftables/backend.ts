/**
 * The nftables proxy backend of one IP family: renders with {@link renderNftables} into the
 * `ip kube-proxy` or `ip6 kube-proxy` table, diffs with {@link fullBatch} / {@link deltaBatch},
 * writes one `nft -j -f` transaction per sync (several for a large table written where there
 * is none: batch.ts `stagedFullBatch`) through an {@link NftWriter} that keeps the committed table
 * in memory. Each family is its own transaction: atomic per family, and a
 * failure in one family's table cannot hold the other's back (upstream does the same, one
 * knftables transaction per family).
 * @module
 */
import type { ProxyBackend, WriteReport } from '../backend.ts';
import type { ProxyPlan } from '../../planner/plan.ts';
import type { IPFamily } from '../../state/ip.ts';
import { deltaBatch, fullBatch } from './batch.ts';
import { NftRenderCache, nftFamily, renderNftables, type NftRuleset } from './render.ts';
import { formatBatch, type NftOutput } from './text.ts';
import type { NftTools, NftWriter } from './writer.ts';
import type { NftTableFamily } from './json.ts';
import { TABLE } from './names.ts';
import { ipFamilyLabel } from '../../server/labels.ts';

/** What an nftables diff starts from: the last ruleset, and the chains whose deletion waits a sync (batch.ts). */
export interface NftCommitted {
  readonly rules: NftRuleset;
  readonly deferred: readonly string[];
}

/** What writes one nft table: diff (dry-run), apply, compare (verify) and cleanup, over an {@link NftWriter}. */
export type NftTableOps = Pick<ProxyBackend<NftRuleset, NftCommitted>, 'diff' | 'apply' | 'compare' | 'cleanup'>;

/**
 * The write side of an nft table, whatever renders it: the Service tables here, the NetworkPolicy
 * table in backends/policy. The writer module (and execa with it) is loaded on the first write:
 * `dry-run` never loads it.
 * @param table the table `cleanup` deletes
 * @param output the form `diff` prints in (dry-run): nft text, or the JSON batch
 * @param tools nft; default the real binary
 */
export function nftTableOps(table: { readonly family: NftTableFamily; readonly name: string }, output: NftOutput = 'text', tools?: NftTools): NftTableOps {
  const writerModule = () => import('./writer.ts');
  let writer: NftWriter | undefined;
  return {
    diff(committed, next) {
      const batch = committed === undefined ? fullBatch(next) : deltaBatch(committed.rules, next, committed.deferred);
      return { text: batch.commands.length === 0 ? undefined : formatBatch(batch.commands, output), committed: { rules: next, deferred: batch.stale } };
    },
    async apply(rules, { full }): Promise<WriteReport> {
      if (!writer) {
        const m = await writerModule();
        writer = new m.NftWriter(tools ?? m.systemNft());
      }
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
        ...(r.drift === undefined ? {} : { drift: r.drift }),
        ...(r.verifyError === undefined ? {} : { verifyError: r.verifyError }),
        ...(r.verifying === undefined ? {} : { verifying: r.verifying }),
      };
    },
    async compare(rules) {
      const m = await writerModule();
      const { compareNft } = await import('./drift.ts');
      return compareNft(rules, await (tools ?? m.systemNft()).list(rules.family, rules.table));
    },
    async cleanup() {
      const m = await writerModule();
      return m.cleanupNftables(tools ?? m.systemNft(), [table.family], table.name);
    },
  };
}

/**
 * The nftables proxy backend of one family.
 * @param output the form `diff` prints in (dry-run): nft text, or the JSON batch
 * @param tools nft; default the real binary
 */
export function nftablesBackend(family: IPFamily, output: NftOutput = 'text', tools?: NftTools): ProxyBackend<NftRuleset, NftCommitted> {
  const cache = new NftRenderCache();
  return {
    mode: 'nftables',
    family,
    render: (plan: ProxyPlan) => renderNftables(plan, cache),
    ...nftTableOps({ family: nftFamily(family), name: TABLE }, output, tools),
    countFailure: (metrics) => metrics.nftablesSyncFailures.inc(ipFamilyLabel(family)),
    setRuleGauges(metrics, written, total) {
      for (const [object, n] of Object.entries(written)) metrics.nftablesLast.set({ ...ipFamilyLabel(family), object }, n);
      for (const [object, n] of Object.entries(total)) metrics.nftablesTotal.set({ ...ipFamilyLabel(family), object }, n);
    },
  };
}
