/**
 * `iptables-restore` input, pure functions over text:
 * - {@link buildRestoreScript}: a complete ruleset for an empty namespace (dry-run), the same made
 *   safe for `--noflush` on a live node;
 * - {@link buildTableScript}: whole tables without `--noflush`, every foreign chain and rule copied
 *   from what the kernel holds (the fast way to write everything: linear, where `--noflush` is not);
 * - {@link diffRulesets} and {@link changeScript}: only what changed between two rulesets, for
 *   `--noflush` (incremental syncs and `run --dry-run`);
 * - {@link buildCleanupScript}: removes everything kproxy owns;
 * - {@link withRepairs}: a change that also rewrites what a verify found differing ({@link Drift}).
 *
 * With `--noflush`, declaring `:CHAIN - [0:0]` creates the chain or flushes it, and leaves every
 * other chain alone; that is how kproxy rewrites only its own chains (upstream does the same,
 * pkg/util/iptables `RestoreAll` with `NoFlushTables`). Jumps from built-in chains are inserted
 * only when missing, so a second sync changes nothing.
 * @module
 */
import { forChangedParts } from '../backend.ts';
import type { DriftItem } from '../drift.ts';
import { CHAIN, FIXED_CHAINS, isOwnedChain, type IptablesChain, type IptablesRuleset, type JumpRule, type TableName } from './render.ts';

/** What the kernel holds of one table, as `iptables-save` would show it (or as kernel.ts reads it chain by chain). */
export interface SavedTable {
  /** Every chain in the table, built-in ones included. */
  readonly chains: ReadonlySet<string>;
  /** Rules per chain, each as `-A <chain> ...` without the `-A <chain> ` prefix (and counters). */
  readonly rules: ReadonlyMap<string, readonly string[]>;
  /** The declaration line of each chain kproxy does not own, as saved (policy and counters). */
  readonly headers: ReadonlyMap<string, string>;
  /** The rule lines of each chain kproxy does not own, as saved (`[pkts:bytes] -A …` with `-c`). */
  readonly lines: ReadonlyMap<string, readonly string[]>;
}

/** Current kernel state of the tables kproxy writes; undefined tables count as empty. */
export type SavedTables = Partial<Record<TableName, SavedTable>>;

const BUILTIN = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING']);

/**
 * Parses `iptables-save -t <table>` output.
 * @returns the named table, or an empty one when the output does not hold it
 */
export function parseSave(text: string, table: TableName): SavedTable {
  const chains = new Set<string>();
  const rules = new Map<string, string[]>();
  const headers = new Map<string, string>();
  const lines = new Map<string, string[]>();
  const push = <T>(m: Map<string, T[]>, k: string, v: T) => {
    const list = m.get(k);
    if (list) list.push(v);
    else m.set(k, [v]);
  };
  let inTable = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) inTable = line.slice(1).trim() === table;
    else if (!inTable) continue;
    else if (line.startsWith(':')) {
      const chain = line.slice(1).split(' ')[0]!;
      chains.add(chain);
      if (!isOwnedChain(table, chain)) headers.set(chain, line);
    } else {
      // `iptables-save -c` puts the counters first: `[pkts:bytes] -A CHAIN …`.
      const start = line.startsWith('[') ? line.indexOf('] ') + 2 : 0;
      if (!line.startsWith('-A ', start)) continue;
      const rest = line.slice(start + 3);
      const space = rest.indexOf(' ');
      const chain = space < 0 ? rest : rest.slice(0, space);
      push(rules, chain, space < 0 ? '' : rest.slice(space + 1));
      if (!isOwnedChain(table, chain)) push(lines, chain, line);
    }
  }
  return { chains, rules, headers, lines };
}

/**
 * Whole tables for `iptables-restore --counters` without `--noflush`: every chain and rule kproxy
 * does not own exactly as `current` holds them (with their counters), kproxy's chains as `ruleset`
 * wants them, and the jumps into them first in their built-in chains when missing. Restoring a
 * whole table is linear in its size; `--noflush` is not (6 s against 65 s at 5k Services,
 * iptables 1.8.9). Whatever another program writes into these tables between the read of
 * `current` and this restore is lost, so the writer uses this only when it must write most of the
 * table anyway (cold start, after a failure, wide damage).
 * @param current both tables with the counters of their foreign rules (kernel.ts)
 */
export function buildTableScript(ruleset: IptablesRuleset, current: Readonly<Record<TableName, SavedTable>>): string {
  return [...tableScriptChunks(ruleset, current)].join('');
}

/** A restore line that adds a rule (`-A`, `-I`): what the writers count as rules written. */
export const isRuleLine = (line: string): boolean => line.startsWith('-A ') || line.startsWith('-I ');

/** Characters per chunk of a streamed restore script: a pipe's worth, so the tool parses while the rest is made. */
const CHUNK_CHARS = 64 * 1024;

/**
 * {@link buildTableScript}'s text in chunks of about {@link CHUNK_CHARS} characters, made as they
 * are taken: streamed into `iptables-restore`, the script is made while the tool parses what came
 * before (at 10k Services, 35 MB that take 0.3 s to make), and is never held whole.
 * @param counts when given, receives the rules (`-A` lines) of each table as they are made
 */
export function* tableScriptChunks(ruleset: IptablesRuleset, current: Readonly<Record<TableName, SavedTable>>, counts?: Record<TableName, number>): Generator<string> {
  let lines: string[] = [];
  let chars = 0;
  let rules = 0;
  const add = (line: string) => {
    lines.push(line);
    chars += line.length + 1;
    if (isRuleLine(line)) rules++;
  };
  const take = () => {
    const chunk = `${lines.join('\n')}\n`;
    lines = [];
    chars = 0;
    return chunk;
  };
  for (const table of ['filter', 'nat'] as const) {
    rules = 0;
    const saved = current[table];
    const desired = ruleset[table];
    add(`*${table}`);
    for (const header of saved.headers.values()) add(header);
    for (const chain of desired) {
      add(`:${chain.name} - [0:0]`);
      if (chars >= CHUNK_CHARS) yield take();
    }
    // Missing jumps go first, in reverse: inserting each at the top leaves them in this order.
    const missing = missingJumps(ruleset.jumps, table, saved);
    for (const chain of saved.headers.keys()) {
      for (let i = missing.length - 1; i >= 0; i--) if (missing[i]!.from === chain) add(`-A ${chain} ${missing[i]!.spec}`);
      for (const line of saved.lines.get(chain) ?? []) add(line);
      if (chars >= CHUNK_CHARS) yield take();
    }
    for (const chain of desired) {
      for (const rule of chain.rules) add(`-A ${chain.name} ${rule}`);
      if (chars >= CHUNK_CHARS) yield take();
    }
    add('COMMIT');
    if (counts) counts[table] = rules;
  }
  yield take();
}

/** The jumps of `table` that `saved` lacks (a jump is present when its built-in chain has a rule with its target). */
export function missingJumps(jumps: readonly JumpRule[], table: TableName, saved: SavedTable | undefined): JumpRule[] {
  return jumps.filter((j) => j.table === table && !(saved?.rules.get(j.from)?.some((r) => jumpTarget(r) === j.target) ?? false));
}

/** Chains of `table` kproxy owns that `saved` holds and `ruleset` does not want, sorted. */
export function staleChains(ruleset: IptablesRuleset, table: TableName, saved: Pick<SavedTable, 'chains'> | undefined): string[] {
  if (!saved) return [];
  const wanted = new Set(ruleset[table].map((c) => c.name));
  return [...saved.chains].filter((c) => isOwnedChain(table, c) && !wanted.has(c)).sort();
}

/**
 * The restore input that makes the kernel match `ruleset`.
 * @param current what the kernel holds now; omit for an empty namespace (every jump is inserted
 *   and no stale chain is removed)
 * @returns text for `iptables-restore --noflush`; also valid without `--noflush` on an empty namespace
 */
export function buildRestoreScript(ruleset: IptablesRuleset, current: SavedTables = {}): string {
  const out: string[] = [];
  for (const table of ['filter', 'nat'] as const) {
    const desired = ruleset[table];
    const saved = current[table];
    const stale = staleChains(ruleset, table, saved);
    out.push(`*${table}`);
    for (const chain of desired) out.push(`:${chain.name} - [0:0]`);
    for (const chain of stale) out.push(`:${chain} - [0:0]`);
    for (const chain of desired) for (const rule of chain.rules) out.push(`-A ${chain.name} ${rule}`);
    for (const chain of stale) out.push(`-X ${chain}`);
    for (const j of missingJumps(ruleset.jumps, table, saved)) out.push(`-I ${j.from} ${j.spec}`);
    out.push('COMMIT');
  }
  return `${out.join('\n')}\n`;
}

/**
 * The restore input that removes every chain kproxy owns and every built-in-chain rule that jumps
 * to one, leaving all other chains and rules as they are.
 * @returns the script, or undefined when there is nothing to remove
 */
export function buildCleanupScript(current: SavedTables): string | undefined {
  const out: string[] = [];
  for (const table of ['filter', 'nat'] as const) {
    const saved = current[table];
    if (!saved) continue;
    const owned = [...saved.chains].filter((c) => isOwnedChain(table, c)).sort();
    const jumps: string[] = [];
    for (const [chain, rules] of saved.rules) {
      if (!BUILTIN.has(chain)) continue;
      for (const rule of rules) {
        const target = jumpTarget(rule);
        if (target !== undefined && isOwnedChain(table, target)) jumps.push(`-D ${chain} ${rule}`);
      }
    }
    if (owned.length === 0 && jumps.length === 0) continue;
    // Loops, not spreads: 130k chains at 10k Services are more arguments than a call can take.
    out.push(`*${table}`);
    for (const c of owned) out.push(`:${c} - [0:0]`);
    for (const j of jumps) out.push(j);
    for (const c of owned) out.push(`-X ${c}`);
    out.push('COMMIT');
  }
  return out.length === 0 ? undefined : `${out.join('\n')}\n`;
}

/** The `-j` target of a saved rule, if it has one. */
function jumpTarget(rule: string): string | undefined {
  const m = / ?-j (\S+)/.exec(rule);
  return m?.[1];
}

/** Fixed chains whose other rules are one per service port and in no particular order. */
const EDITABLE: Record<TableName, ReadonlySet<string>> = {
  filter: new Set([CHAIN.services, CHAIN.externalServices, CHAIN.nodePorts, CHAIN.proxyFirewall]),
  nat: new Set([CHAIN.services, CHAIN.nodePorts]),
};

/** In-place edits of one fixed chain: rules to delete (`-D`) and to insert at the top (`-I … 1`). */
export interface ChainEdit {
  readonly chain: string;
  readonly remove: readonly string[];
  readonly insert: readonly string[];
}

/** What differs between two rulesets, per table. */
export interface IptablesChange {
  /** Chains to declare (create or flush) and write in full. */
  readonly write: Readonly<Record<TableName, readonly IptablesChain[]>>;
  /** Fixed chains changed only in some per-service rules: edited in place. */
  readonly edit: Readonly<Record<TableName, readonly ChainEdit[]>>;
  /** Chains no longer wanted: flushed, then deleted once nothing jumps to them. */
  readonly remove: Readonly<Record<TableName, readonly string[]>>;
  /** Jumps from built-in chains that `previous` did not have. */
  readonly jumps: readonly JumpRule[];
}

/**
 * The change from `previous` to `next`, chain by chain, found from the service ports' parts: a
 * part that is the same object in both is skipped, so the cost is proportional to what changed.
 *
 * The per-service rules of KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES and
 * KUBE-PROXY-FIREWALL are edited in place: a removed rule is deleted by its spec, a new one is
 * inserted at the top. Their order does not matter (each matches its own destination), and the
 * NodePort jump, which must stay last in nat KUBE-SERVICES, is never moved. Upstream rewrites these
 * chains in full on every sync (pkg/proxy/iptables/proxier.go `syncProxyRules`), which is its main cost at scale. A chain
 * whose other rules changed, or where the edits would be more than half of it, is rewritten in full.
 * @param previous the ruleset the kernel holds; undefined: empty (everything is written)
 */
export function diffRulesets(previous: IptablesRuleset | undefined, next: IptablesRuleset): IptablesChange {
  const write = { filter: [] as IptablesChain[], nat: [] as IptablesChain[] };
  const edit = { filter: [] as ChainEdit[], nat: [] as ChainEdit[] };
  const remove = { filter: [] as string[], nat: [] as string[] };
  if (previous === undefined) {
    return { write: { filter: [...next.filter], nat: [...next.nat] }, edit, remove, jumps: next.jumps };
  }
  // Per-service rules in fixed chains that went and came, by table and chain; equal ones cancel.
  const gone = new Map<string, Map<string, number>>();
  const came = new Map<string, string[]>();
  const count = (table: TableName, chain: string, rule: string, by: number) => {
    const k = `${table} ${chain}`;
    let m = gone.get(k);
    if (!m) gone.set(k, (m = new Map<string, number>()));
    m.set(rule, (m.get(rule) ?? 0) + by);
  };
  const ownBefore = new Map<string, IptablesChain>();
  const ownAfter = new Map<string, IptablesChain>();
  forChangedParts(previous.services, next.services, (old, part) => {
    for (const c of part?.chains ?? []) ownAfter.set(c.name, c);
    for (const r of part?.shared ?? []) count(r.table, r.chain, r.rule, -1);
    for (const c of old?.chains ?? []) ownBefore.set(c.name, c);
    for (const r of old?.shared ?? []) count(r.table, r.chain, r.rule, 1);
  });
  for (const [k, m] of gone) {
    const insert: string[] = [];
    for (const [rule, n] of m) {
      if (n === 0) m.delete(rule);
      else if (n < 0) {
        for (let i = 0; i < -n; i++) insert.push(rule);
        m.delete(rule);
      }
    }
    came.set(k, insert);
  }

  for (const table of ['filter', 'nat'] as const) {
    for (const name of FIXED_CHAINS[table]) {
      const before = previous.fixed[table].get(name) ?? [];
      const after = next.fixed[table].get(name) ?? [];
      const removed = [...(gone.get(`${table} ${name}`) ?? new Map<string, number>())].flatMap(([rule, n]) => Array<string>(n).fill(rule));
      const inserted = came.get(`${table} ${name}`) ?? [];
      if (removed.length === 0 && inserted.length === 0 && sameRules(before, after)) continue;
      const editable = EDITABLE[table].has(name) && before.length - removed.length + inserted.length === after.length && 2 * (removed.length + inserted.length) <= after.length;
      if (editable && otherRulesSame(before, after, removed, inserted)) edit[table].push({ chain: name, remove: removed, insert: inserted });
      else write[table].push({ name, rules: after });
    }
    if (table === 'nat') {
      for (const c of ownAfter.values()) {
        const old = ownBefore.get(c.name);
        if (old === undefined || !sameRules(old.rules, c.rules)) write.nat.push(c);
      }
      for (const name of ownBefore.keys()) if (!ownAfter.has(name)) remove.nat.push(name);
    }
  }
  const jumps = next.jumps.filter((j) => !previous.jumps.some((p) => p.table === j.table && p.from === j.from && p.spec === j.spec));
  return { write, edit, remove, jumps };
}

/**
 * The change as `iptables-restore --noflush` input. Per table: declarations of written and removed
 * chains, in-place deletes, inserts, the written chains' rules, then `-X` of removed chains (after
 * every rule that jumped to them is gone), then new jumps.
 * @returns the script, or undefined when nothing changed
 */
export function changeScript(change: IptablesChange): string | undefined {
  const out: string[] = [];
  const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  for (const table of ['filter', 'nat'] as const) {
    const write = [...change.write[table]].sort(byName);
    const edit = change.edit[table];
    const remove = [...change.remove[table]].sort();
    const jumps = change.jumps.filter((j) => j.table === table);
    if (write.length === 0 && edit.length === 0 && remove.length === 0 && jumps.length === 0) continue;
    out.push(`*${table}`);
    for (const chain of write) out.push(`:${chain.name} - [0:0]`);
    for (const chain of remove) out.push(`:${chain} - [0:0]`);
    for (const e of edit) for (const rule of e.remove) out.push(`-D ${e.chain} ${rule}`);
    for (const e of edit) for (const rule of e.insert) out.push(`-I ${e.chain} 1 ${rule}`);
    for (const chain of write) for (const rule of chain.rules) out.push(`-A ${chain.name} ${rule}`);
    for (const chain of remove) out.push(`-X ${chain}`);
    for (const j of jumps) out.push(`-I ${j.from} ${j.spec}`);
    out.push('COMMIT');
  }
  return out.length === 0 ? undefined : `${out.join('\n')}\n`;
}

/**
 * The change from `previous` to `next` as `iptables-restore --noflush` input ({@link diffRulesets},
 * {@link changeScript}). What `kproxy run --dry-run` prints per sync and what an incremental sync writes.
 * @param previous the ruleset of the last sync; undefined for the first sync (everything is new)
 * @returns the script, or undefined when nothing changed
 */
export function buildChangeScript(previous: IptablesRuleset | undefined, next: IptablesRuleset): string | undefined {
  return changeScript(diffRulesets(previous, next));
}

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * True when `after` is `before` less `removed` plus `inserted`, as multisets: then no rule other
 * than the per-service ones changed. Linear in the chain; run only for chains that changed.
 */
function otherRulesSame(before: readonly string[], after: readonly string[], removed: readonly string[], inserted: readonly string[]): boolean {
  const n = new Map<string, number>();
  for (const r of before) n.set(r, (n.get(r) ?? 0) + 1);
  for (const r of removed) n.set(r, (n.get(r) ?? 0) - 1);
  for (const r of inserted) n.set(r, (n.get(r) ?? 0) + 1);
  for (const r of after) n.set(r, (n.get(r) ?? 0) - 1);
  for (const v of n.values()) if (v !== 0) return false;
  return true;
}

/** What a verify found: kproxy's chains that are missing, extra or hold another number of rules, and missing jumps. */
export interface Drift {
  readonly chains: Readonly<Record<TableName, ReadonlySet<string>>>;
  readonly extra: Readonly<Record<TableName, readonly string[]>>;
  /** Committed jumps the kernel no longer has. */
  readonly jumps: readonly JumpRule[];
  /** The damage is wide (or sampling found it): rewrite whole tables rather than chains. */
  readonly wholeTables: boolean;
  /** What differs, per service port (drift.ts). */
  readonly items: readonly DriftItem[];
  readonly summary: string;
}

/** Adds to `change` the rewrite of every drifted chain (as `next` has it), the removal of extra ones and the missing jumps. */
export function withRepairs(change: IptablesChange, next: IptablesRuleset, d: Drift): IptablesChange {
  const write = { filter: [...change.write.filter], nat: [...change.write.nat] };
  const edit = { filter: [...change.edit.filter], nat: [...change.edit.nat] };
  const remove = { filter: [...change.remove.filter], nat: [...change.remove.nat] };
  for (const table of ['filter', 'nat'] as const) {
    const written = new Set(write[table].map((c) => c.name));
    const wanted = new Set<string>();
    for (const c of next[table]) {
      wanted.add(c.name);
      if (!d.chains[table].has(c.name) || written.has(c.name)) continue;
      write[table].push(c);
      // A rewritten chain needs no edits.
      const i = edit[table].findIndex((e) => e.chain === c.name);
      if (i >= 0) edit[table].splice(i, 1);
    }
    // A chain found extra may be wanted again by now.
    for (const name of d.extra[table]) if (!wanted.has(name) && !remove[table].includes(name)) remove[table].push(name);
  }
  const jumps = [...change.jumps];
  for (const j of d.jumps) if (!jumps.some((k) => k.table === j.table && k.from === j.from && k.spec === j.spec)) jumps.push(j);
  return { write, edit, remove, jumps };
}
