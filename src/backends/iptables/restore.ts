/**
 * `iptables-restore` input: a complete ruleset for an empty namespace (dry-run), the same made
 * safe for `--noflush` on a live node (sync), and the script that removes everything kproxy owns
 * (cleanup). Pure functions over text.
 *
 * With `--noflush`, declaring `:CHAIN - [0:0]` creates the chain or flushes it, and leaves every
 * other chain alone; that is how kproxy rewrites only its own chains (upstream does the same,
 * pkg/util/iptables `RestoreAll` with `NoFlushTables`). Jumps from built-in chains are inserted
 * only when missing, so a second sync changes nothing.
 * @module
 */
import { isOwnedChain, type IptablesRuleset, type TableName } from './render.ts';

/** What `iptables-save` shows of one table. */
export interface SavedTable {
  /** Every chain in the table, built-in ones included. */
  readonly chains: ReadonlySet<string>;
  /** Rules per chain, each as `-A <chain> ...` without the `-A <chain> ` prefix. */
  readonly rules: ReadonlyMap<string, readonly string[]>;
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
  let inTable = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) inTable = line.slice(1).trim() === table;
    else if (!inTable) continue;
    else if (line.startsWith(':')) chains.add(line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-A ')) {
      const rest = line.slice(3);
      const space = rest.indexOf(' ');
      const chain = space < 0 ? rest : rest.slice(0, space);
      const rule = space < 0 ? '' : rest.slice(space + 1);
      let list = rules.get(chain);
      if (!list) rules.set(chain, (list = []));
      list.push(rule);
    }
  }
  return { chains, rules };
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
    const wanted = new Set(desired.map((c) => c.name));
    const stale = saved ? [...saved.chains].filter((c) => isOwnedChain(table, c) && !wanted.has(c)).sort() : [];
    out.push(`*${table}`);
    for (const chain of desired) out.push(`:${chain.name} - [0:0]`);
    for (const chain of stale) out.push(`:${chain} - [0:0]`);
    for (const chain of desired) for (const rule of chain.rules) out.push(`-A ${chain.name} ${rule}`);
    for (const chain of stale) out.push(`-X ${chain}`);
    for (const j of ruleset.jumps) {
      if (j.table !== table) continue;
      const present = saved?.rules.get(j.from)?.some((r) => jumpTarget(r) === j.target) ?? false;
      if (!present) out.push(`-I ${j.from} ${j.spec}`);
    }
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
    out.push(`*${table}`, ...owned.map((c) => `:${c} - [0:0]`), ...jumps, ...owned.map((c) => `-X ${c}`), 'COMMIT');
  }
  return out.length === 0 ? undefined : `${out.join('\n')}\n`;
}

/** The `-j` target of a saved rule, if it has one. */
function jumpTarget(rule: string): string | undefined {
  const m = / ?-j (\S+)/.exec(rule);
  return m?.[1];
}

/**
 * The change from `previous` to `next` as `iptables-restore --noflush` input: every chain that is
 * new or whose rules differ is declared and written in full, every chain that is gone is flushed
 * and deleted (`-X`). Jumps from built-in chains are listed only when they are new. What
 * `kproxy run --dry-run` prints per sync.
 * @param previous the ruleset of the last sync; undefined for the first sync (everything is new)
 * @returns the script, or undefined when nothing changed
 */
export function buildChangeScript(previous: IptablesRuleset | undefined, next: IptablesRuleset): string | undefined {
  const out: string[] = [];
  for (const table of ['filter', 'nat'] as const) {
    const before = new Map((previous?.[table] ?? []).map((c) => [c.name, c.rules]));
    const changed = next[table].filter((c) => {
      const old = before.get(c.name);
      return old === undefined || old.length !== c.rules.length || old.some((r, i) => r !== c.rules[i]);
    });
    const wanted = new Set(next[table].map((c) => c.name));
    const gone = [...before.keys()].filter((name) => !wanted.has(name)).sort();
    const jumps = next.jumps.filter((j) => j.table === table && !previous?.jumps.some((p) => p.table === table && p.from === j.from && p.spec === j.spec));
    if (changed.length === 0 && gone.length === 0 && jumps.length === 0) continue;
    out.push(`*${table}`);
    for (const chain of changed) out.push(`:${chain.name} - [0:0]`);
    for (const chain of gone) out.push(`:${chain} - [0:0]`);
    for (const chain of changed) for (const rule of chain.rules) out.push(`-A ${chain.name} ${rule}`);
    for (const chain of gone) out.push(`-X ${chain}`);
    for (const j of jumps) out.push(`-I ${j.from} ${j.spec}`);
    out.push('COMMIT');
  }
  return out.length === 0 ? undefined : `${out.join('\n')}\n`;
}
