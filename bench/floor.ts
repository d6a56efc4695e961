/**
 * The kernel floor of a cold start: kproxy's whole rules of one family, applied by the tool alone
 * (no kproxy) into an empty network namespace. `e2e.ts` measures it beside its own writer;
 * `run.ts` beside `kproxy run`, at the same moment and next to the same API server, so both
 * sides of its ratio share the machine's state (bench/README.md, "kproxy run beside upstream").
 * @module
 */
import { execa } from 'execa';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IptablesRenderCache, renderIptables, type IptablesRuleset } from '../src/backends/iptables/render.ts';
import { buildTableScript, parseSave } from '../src/backends/iptables/restore.ts';
import { fullBatch } from '../src/backends/nftables/batch.ts';
import { toBatch } from '../src/backends/nftables/json.ts';
import { NftRenderCache, renderNftables, type NftRuleset } from '../src/backends/nftables/render.ts';
import { PlanCache, planProxy } from '../src/planner/plan.ts';
import type { IPFamily } from '../src/state/ip.ts';
import { benchConfig, benchStore } from './cluster.ts';

/** The built-in chains of an empty namespace, as a whole-table restore names them. */
const BUILTINS = {
  filter: new Map(['INPUT', 'FORWARD', 'OUTPUT'].map((c) => [c, `:${c} ACCEPT [0:0]`])),
  nat: new Map(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'].map((c) => [c, `:${c} ACCEPT [0:0]`])),
};

/** What a tool alone applies: its input, and how big it is. */
export interface FloorInput {
  readonly mode: 'iptables' | 'nftables';
  readonly family: IPFamily;
  readonly text: string;
  /** Restore lines that declare a chain or add a rule, or nft commands. */
  readonly commands: number;
}

/** Lines of a restore script that declare a chain or change a rule: its size in commands. */
export function restoreCommands(text: string): number {
  return text.split('\n').filter((l) => l.startsWith('-') || l.startsWith(':')).length;
}

/** The whole-table `iptables-restore` script kproxy's writer sends into an empty namespace. */
export function iptablesFloorInput(rules: IptablesRuleset, family: IPFamily): FloorInput {
  const empty = parseSave('', 'filter');
  const text = buildTableScript(rules, { filter: { ...empty, headers: BUILTINS.filter }, nat: { ...empty, headers: BUILTINS.nat } });
  return { mode: 'iptables', family, text, commands: restoreCommands(text) };
}

/** The `nft -j -f` batch that replaces kproxy's table, as its writer sends it. */
export function nftFloorInput(rules: NftRuleset, family: IPFamily): FloorInput {
  const full = fullBatch(rules);
  return { mode: 'nftables', family, text: JSON.stringify(toBatch(full.commands)), commands: full.commands.length };
}

/** The synthetic cluster's rules (cluster.ts, `n` Services × `e` endpoints, IPv4), rendered for `mode` as kproxy renders them. */
export function benchFloorInput(mode: 'iptables' | 'nftables', n: number, e: number): FloorInput {
  const store = benchStore(n, e);
  const plan = planProxy(store.servicePortStates(), store.node, benchConfig(4), new PlanCache());
  return mode === 'iptables' ? iptablesFloorInput(renderIptables(plan, { conntrackTCPBeLiberal: false }, new IptablesRenderCache()), 4) : nftFloorInput(renderNftables(plan, new NftRenderCache()), 4);
}

/**
 * Applies `input` with the tool alone in network namespace `ns` (`iptables-restore` or
 * `ip6tables-restore` of whole tables, `nft -j -f`), from a file in `dir`.
 * @param flags extra tool flags (`--noflush` for a change script)
 * @returns milliseconds the tool took, process start to exit
 * @throws ExecaError when the tool fails
 */
export async function applyAlone(ns: string, input: FloorInput, dir: string, flags: readonly string[] = []): Promise<number> {
  const file = join(dir, input.mode === 'iptables' ? 'floor.txt' : 'floor.json');
  writeFileSync(file, input.text);
  const tool = input.mode === 'nftables' ? ['nft', '-j', ...flags, '-f', file] : [input.family === 6 ? 'ip6tables-restore' : 'iptables-restore', ...flags, file];
  const t = performance.now();
  await execa('ip', ['netns', 'exec', ns, ...tool], { timeout: 1_800_000 });
  return performance.now() - t;
}
