/**
 * The NetworkPolicy backend: renders a {@link PolicyPlan} into the `inet kproxy-policy` table
 * ({@link renderPolicies}) and writes it with the Service tables' nft writer, so the policy table
 * gets the same one-transaction writes, deltas, background verify, repair, drift report and
 * cleanup ({@link nftTableOps}). The same in both proxy modes: iptables mode's Service rules and
 * this table meet in the kernel's forward hook, each in its own table.
 * @module
 */
import type { PolicyPlan } from '../../planner/policy.ts';
import { nftTableOps, type NftTableOps } from '../nftables/backend.ts';
import type { NftRuleset } from '../nftables/render.ts';
import type { NftOutput } from '../nftables/text.ts';
import type { NftTools } from '../nftables/writer.ts';
import { POLICY_TABLE, PolicyRenderCache, renderPolicies } from './render.ts';

/** The policy table's backend: render, and the nft table's diff, apply, compare and cleanup. */
export interface PolicyBackend extends NftTableOps {
  /** Pure; reuses the renders of pods and peer sets whose plans are the same objects as last time. */
  render(plan: PolicyPlan): NftRuleset;
}

/**
 * @param output the form `diff` prints in (dry-run): nft text, or the JSON batch
 * @param tools nft; default the real binary
 */
export function policyBackend(output: NftOutput = 'text', tools?: NftTools): PolicyBackend {
  const cache = new PolicyRenderCache();
  return { render: (plan) => renderPolicies(plan, cache), ...nftTableOps({ family: 'inet', name: POLICY_TABLE }, output, tools) };
}
