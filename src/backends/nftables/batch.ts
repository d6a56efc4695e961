/**
 * The nft transactions of a sync, as typed commands: a full one (replace the whole table) and an
 * incremental one (only what changed between the committed ruleset and the desired one). Pure.
 *
 * An incremental batch, in this order (each step may rely on the ones before it):
 * 1. delete the chains that became stale in the previous sync: they were flushed and unreferenced
 *    then, and kernels before 6.2 refuse to delete a chain in the transaction that removes the last
 *    map element pointing at it (upstream defers the same way, reference/kube-proxy.md §4);
 * 2. add new chains (declarations first: rules and elements may jump to any of them);
 * 3. flush changed chains and chains that are no longer wanted;
 * 4. delete map and set elements that are gone or whose value changed;
 * 5. delete sets that are gone or whose definition changed (their rules were flushed in 3);
 * 6. add new and changed sets; 7. add the rules of new and changed chains; 8. add new elements.
 * @module
 */
import { keyText, type JsonElement, type NftCommand, type NftElement, type NftSetSpec } from './json.ts';
import type { NftChain, NftRuleset } from './render.ts';

/** A batch and what it holds. */
export interface NftBatchPlan {
  readonly commands: readonly NftCommand[];
  /** `add rule` commands. */
  readonly rules: number;
  /** Elements added plus elements deleted. */
  readonly elements: number;
  /** Chains whose rules were (re)written. */
  readonly chainsWritten: number;
  /** Chains deleted by this batch. */
  readonly chainsDeleted: number;
  /** Chains this batch flushed because they are no longer wanted: delete them in the next one. */
  readonly stale: readonly string[];
}

/** The batch that replaces the whole table: add it (so the delete cannot fail), delete it, write it anew. */
export function fullBatch(next: NftRuleset): NftBatchPlan {
  const table = { family: next.family, name: next.table };
  const commands: NftCommand[] = [{ add: { table } }, { delete: { table } }, { add: { table } }];
  for (const s of next.sets) commands.push(addSet(next, s));
  for (const c of next.chains) commands.push(addChain(next, c));
  let rules = 0;
  for (const c of next.chains) for (const rule of c.rules) commands.push(addRule(next, c.name, rule)), rules++;
  let elements = 0;
  for (const s of next.sets) {
    const list = next.elements.get(s.name) ?? [];
    if (list.length > 0) commands.push(addElements(next, s.name, list)), (elements += list.length);
  }
  return { commands, rules, elements, chainsWritten: next.chains.length, chainsDeleted: 0, stale: [] };
}

/**
 * The batch that turns `previous` (what the kernel holds) into `next`.
 * @param deferred chains flushed as stale by the previous batch, to delete now unless wanted again
 */
export function deltaBatch(previous: NftRuleset, next: NftRuleset, deferred: readonly string[]): NftBatchPlan {
  const commands: NftCommand[] = [];
  const before = new Map(previous.chains.map((c) => [c.name, c]));
  const after = new Map(next.chains.map((c) => [c.name, c]));
  const setsBefore = new Map(previous.sets.map((s) => [s.name, s]));
  const setsAfter = new Map(next.sets.map((s) => [s.name, s]));

  // Sets whose definition changed are re-created; every chain using one is rewritten.
  const changedSets = next.sets.filter((s) => setsBefore.has(s.name) && !sameJSON(setsBefore.get(s.name), s)).map((s) => s.name);
  const mustRewrite = new Set<string>();
  if (changedSets.length > 0) {
    for (const c of next.chains) if (changedSets.some((name) => JSON.stringify(c.rules).includes(`"@${name}"`))) mustRewrite.add(c.name);
  }

  // 1.
  const toDelete = deferred.filter((name) => !after.has(name));
  for (const name of toDelete) commands.push({ delete: { chain: { family: next.family, table: next.table, name } } });
  // 2., 3.
  const added = next.chains.filter((c) => !before.has(c.name));
  const changed = next.chains.filter((c) => before.has(c.name) && (mustRewrite.has(c.name) || !sameRules(before.get(c.name)!, c)));
  const removed = previous.chains.filter((c) => !after.has(c.name)).map((c) => c.name);
  for (const c of added) commands.push(addChain(next, c));
  for (const c of changed) commands.push({ flush: { chain: { family: next.family, table: next.table, name: c.name } } });
  for (const name of removed) commands.push({ flush: { chain: { family: next.family, table: next.table, name } } });

  // 4.
  const recreated = new Set([...changedSets, ...previous.sets.filter((s) => !setsAfter.has(s.name)).map((s) => s.name)]);
  const adds: [string, NftElement[]][] = [];
  let elements = 0;
  for (const s of next.sets) {
    const want = next.elements.get(s.name) ?? [];
    if (!setsBefore.has(s.name) || recreated.has(s.name)) {
      if (want.length > 0) adds.push([s.name, [...want]]);
      continue;
    }
    const have = new Map((previous.elements.get(s.name) ?? []).map((e) => [keyText(e.key), e]));
    const add: NftElement[] = [];
    for (const e of want) {
      const key = keyText(e.key);
      const old = have.get(key);
      if (old !== undefined && sameElement(old, e)) have.delete(key);
      else add.push(e);
    }
    // What is left in `have` is gone, or changes value (deleted here, added again in 8).
    if (have.size > 0) {
      commands.push({ delete: { element: { family: next.family, table: next.table, name: s.name, elem: [...have.values()].map((e) => e.key) } } });
      elements += have.size;
    }
    if (add.length > 0) adds.push([s.name, add]);
  }
  // 5., 6.
  for (const name of recreated) {
    const id = { family: next.family, table: next.table, name };
    commands.push({ delete: setsBefore.get(name)!.map ? { map: id } : { set: id } });
  }
  for (const s of next.sets) if (!setsBefore.has(s.name) || recreated.has(s.name)) commands.push(addSet(next, s));
  // 7.
  let rules = 0;
  for (const c of [...added, ...changed]) for (const rule of c.rules) commands.push(addRule(next, c.name, rule)), rules++;
  // 8.
  for (const [name, list] of adds) commands.push(addElements(next, name, list)), (elements += list.length);

  return { commands, rules, elements, chainsWritten: added.length + changed.length, chainsDeleted: toDelete.length, stale: removed };
}

function addChain(rs: NftRuleset, c: NftChain): NftCommand {
  const chain = { family: rs.family, table: rs.table, name: c.name };
  return { add: { chain: c.hook ? { ...chain, ...c.hook, policy: 'accept' } : chain } };
}

function addRule(rs: NftRuleset, chain: string, rule: NftChain['rules'][number]): NftCommand {
  return { add: { rule: { family: rs.family, table: rs.table, chain, expr: rule.expr, ...(rule.comment === undefined ? {} : { comment: rule.comment }) } } };
}

function addSet(rs: NftRuleset, s: NftSetSpec): NftCommand {
  const base = { family: rs.family, table: rs.table };
  return { add: s.map ? { map: { ...base, ...s } } : { set: { ...base, ...s } } };
}

function addElements(rs: NftRuleset, name: string, list: readonly NftElement[]): NftCommand {
  const elem: JsonElement[] = list.map((e) => {
    const key = e.comment === undefined ? e.key : { elem: { val: e.key, comment: e.comment } };
    return e.value === undefined ? key : [key, e.value];
  });
  return { add: { element: { family: rs.family, table: rs.table, name, elem } } };
}

function sameRules(a: NftChain, b: NftChain): boolean {
  if (a.rules === b.rules) return true;
  if (a.rules.length !== b.rules.length) return false;
  return JSON.stringify(a.rules) === JSON.stringify(b.rules);
}

function sameElement(a: NftElement, b: NftElement): boolean {
  return a.comment === b.comment && sameJSON(a.value, b.value);
}

function sameJSON(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}
