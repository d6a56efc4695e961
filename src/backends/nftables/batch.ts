/**
 * The nft transactions of a sync, as typed commands: a full one (replace the whole table) and an
 * incremental one (only what changed between the committed ruleset and the desired one). Pure.
 *
 * An incremental batch, in this order (each step may rely on the ones before it):
 * 1. delete the chains that became stale in the previous sync: they were flushed and unreferenced
 *    then, and kernels before 6.2 refuse to delete a chain in the transaction that removes the last
 *    map element pointing at it (upstream defers the same way: pkg/proxy/nftables/proxier.go `staleChains`);
 * 2. add new chains (declarations first: rules and elements may jump to any of them);
 * 3. flush changed chains and chains that are no longer wanted;
 * 4. delete map and set elements that are gone or whose value changed;
 * 5. delete sets that are gone or whose definition changed (their rules were flushed in 3);
 * 6. add new and changed sets; 7. add the rules of new and changed chains; 8. add new elements.
 * @module
 */
import { forChangedParts } from '../backend.ts';
import { keyText, type JsonElement, type NftCommand, type NftElement, type NftSetSpec } from './json.ts';
import { NFT } from './names.ts';
import type { NftChain, NftRuleset, NftServiceRules } from './render.ts';

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
  for (const c of next.chains) {
    for (const rule of c.rules) commands.push(addRule(next, c.name, rule));
    rules += c.rules.length;
  }
  let elements = 0;
  for (const s of next.sets) {
    const list = next.elements.get(s.name) ?? [];
    if (list.length === 0) continue;
    commands.push(addElements(next, s.name, list));
    elements += list.length;
  }
  return { commands, rules, elements, chainsWritten: next.chains.length, chainsDeleted: 0, stale: [] };
}

/**
 * The full batch of {@link fullBatch}, cut into transactions of at most `limit` commands each (an
 * `add element` weighs as many as its elements, and a longer list is cut too) and a last one of the
 * base chains' rules (a dozen), for a table that does not exist yet. nft holds a whole transaction
 * in memory, about 8.6 KiB per command at its peak (1188 MiB at 10k Services × 10 endpoints), and on
 * a VM whose host takes back free memory each page fresh to the process costs a host fault too
 * (there, 9.18 s where reused pages take 6.76 s); cut, the peak is one transaction's (229 MiB) and
 * each run reuses the pages the one before it freed (7.78 s). Figures: bench/README.md, "nftables floors".
 *
 * Traffic still sees the table appear at once: every transaction but the last declares objects or
 * fills chains and sets that nothing reachable jumps to yet, and the last one holds only the rules
 * of the base chains (declared first, with no rules, they accept everything and change nothing).
 * Only for a table that is absent: over a live table the first transaction, which deletes it,
 * would leave the node without Service rules until the last.
 * @param limit commands per transaction, at least 1
 * @returns the transactions in order; one (the full batch unchanged) when it is within `limit`
 */
export function stagedFullBatch(next: NftRuleset, limit: number): { readonly plan: NftBatchPlan; readonly stages: readonly (readonly NftCommand[])[] } {
  const plan = fullBatch(next);
  if (plan.commands.reduce((n, c) => n + commandWeight(c), 0) <= limit) return { plan, stages: [plan.commands] };
  const base = new Set(next.chains.filter((c) => c.hook).map((c) => c.name));
  const last: NftCommand[] = [];
  const stages: NftCommand[][] = [];
  let stage: NftCommand[] = [];
  let used = 0;
  const put = (c: NftCommand, w: number) => {
    if (used + w > limit && stage.length > 0) {
      stages.push(stage);
      stage = [];
      used = 0;
    }
    stage.push(c);
    used += w;
  };
  for (const c of plan.commands) {
    if ('add' in c && 'rule' in c.add && base.has(c.add.rule.chain)) last.push(c);
    else if ('add' in c && 'element' in c.add && c.add.element.elem.length > limit) {
      const { elem, ...set } = c.add.element;
      for (let i = 0; i < elem.length; i += limit) put({ add: { element: { ...set, elem: elem.slice(i, i + limit) } } }, Math.min(limit, elem.length - i));
    } else put(c, commandWeight(c));
  }
  for (const s of [stage, last]) if (s.length > 0) stages.push(s);
  return { plan, stages };
}

/** What a command weighs against {@link stagedFullBatch}'s limit: its elements for an `add element`, else 1. */
export function commandWeight(c: NftCommand): number {
  return 'add' in c && 'element' in c.add ? c.add.element.elem.length : 1;
}

/** Sets whose elements several service ports share (a ClusterIP, an endpoint): diffed in full, not per part. */
const SHARED_SETS: ReadonlySet<string> = new Set([NFT.clusterIPs, NFT.hairpin, NFT.nodePortIPs]);

/**
 * The batch that turns `previous` (what the kernel holds) into `next`. Only the service ports whose
 * part is not the same object in both rulesets are compared (see NftRuleset.services), plus the
 * fixed chains and sets, and the shared sets' elements; so the cost follows what changed. When
 * either ruleset has map keys claimed twice (NftRuleset.conflicts), a part's elements may be
 * shadowed by another's, and every map is compared in full instead.
 * @param deferred chains flushed as stale by the previous batch, to delete now unless wanted again
 */
export function deltaBatch(previous: NftRuleset, next: NftRuleset, deferred: readonly string[]): NftBatchPlan {
  const commands: NftCommand[] = [];
  // What is compared: fixed chains and sets, and the parts of changed service ports.
  const before = new Map(previous.fixedChains.map((c) => [c.name, c]));
  const after = new Map(next.fixedChains.map((c) => [c.name, c]));
  const setsBefore = new Map(previous.fixedSets.map((s) => [s.name, s]));
  const setsAfter = new Map(next.fixedSets.map((s) => [s.name, s]));
  const partElements = { before: new Map<string, NftElement[]>(), after: new Map<string, NftElement[]>() };
  const take = (part: NftServiceRules, side: 'before' | 'after') => {
    for (const c of part.chains) (side === 'before' ? before : after).set(c.name, c);
    for (const set of part.sets) (side === 'before' ? setsBefore : setsAfter).set(set.name, set);
    for (const [set, e] of part.elements) {
      if (SHARED_SETS.has(set)) continue;
      const m = partElements[side];
      const list = m.get(set);
      if (list) list.push(e);
      else m.set(set, [e]);
    }
  };
  forChangedParts(previous.services, next.services, (old, part) => {
    if (part) take(part, 'after');
    if (old) take(old, 'before');
  });

  // Sets whose definition changed are re-created; every chain using one is rewritten.
  const changedSets = [...setsAfter.values()].filter((s) => setsBefore.has(s.name) && !sameJSON(setsBefore.get(s.name), s)).map((s) => s.name);
  const mustRewrite = new Set<string>();
  if (changedSets.length > 0) {
    for (const c of next.chains) {
      if (!changedSets.some((name) => JSON.stringify(c.rules).includes(`"@${name}"`))) continue;
      mustRewrite.add(c.name);
      after.set(c.name, c);
      const old = previous.chains.find((p) => p.name === c.name);
      if (old) before.set(c.name, old);
    }
  }

  // 1.
  const wanted = deferred.length > 0 ? allChainNames(next) : new Set<string>();
  const toDelete = deferred.filter((name) => !wanted.has(name));
  for (const name of toDelete) commands.push({ delete: { chain: { family: next.family, table: next.table, name } } });
  // 2., 3.
  const added = [...after.values()].filter((c) => !before.has(c.name));
  const changed = [...after.values()].filter((c) => before.has(c.name) && (mustRewrite.has(c.name) || !sameRules(before.get(c.name)!, c)));
  const removed = [...before.keys()].filter((name) => !after.has(name));
  for (const c of added) commands.push(addChain(next, c));
  for (const c of changed) commands.push({ flush: { chain: { family: next.family, table: next.table, name: c.name } } });
  for (const name of removed) commands.push({ flush: { chain: { family: next.family, table: next.table, name } } });

  // 4.
  const recreated = new Set([...changedSets, ...[...setsBefore.keys()].filter((name) => !setsAfter.has(name))]);
  const adds: [string, NftElement[]][] = [];
  let elements = 0;
  const conflicts = previous.conflicts.length > 0 || next.conflicts.length > 0;
  for (const s of setsAfter.values()) {
    const shared = conflicts || SHARED_SETS.has(s.name);
    if (!setsBefore.has(s.name) || recreated.has(s.name)) {
      const want = next.elements.get(s.name) ?? [];
      if (want.length > 0) adds.push([s.name, [...want]]);
      continue;
    }
    const want = (shared ? next.elements.get(s.name) : partElements.after.get(s.name)) ?? [];
    const had = (shared ? previous.elements.get(s.name) : partElements.before.get(s.name)) ?? [];
    if (want.length === 0 && had.length === 0) continue;
    const have = new Map(had.map((e) => [keyText(e.key), e]));
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
  for (const s of setsAfter.values()) if (!setsBefore.has(s.name) || recreated.has(s.name)) commands.push(addSet(next, s));
  // 7.
  let rules = 0;
  for (const c of [...added, ...changed]) {
    for (const rule of c.rules) commands.push(addRule(next, c.name, rule));
    rules += c.rules.length;
  }
  // 8.
  for (const [name, list] of adds) {
    commands.push(addElements(next, name, list));
    elements += list.length;
  }

  return { commands, rules, elements, chainsWritten: added.length + changed.length, chainsDeleted: toDelete.length, stale: removed };
}

function allChainNames(rs: NftRuleset): Set<string> {
  const names = new Set(rs.fixedChains.map((c) => c.name));
  for (const part of rs.services.values()) for (const c of part.chains) names.add(c.name);
  return names;
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
