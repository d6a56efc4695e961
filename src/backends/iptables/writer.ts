/**
 * Writes iptables rules to the kernel with the real tools, atomically per table, and removes
 * kproxy's rules on cleanup. Processes run through execa with bounded time; the xtables lock is
 * waited for with upstream's bound (`-w 5 -W 100000`, pkg/util/iptables).
 *
 * {@link IptablesWriter} keeps the ruleset it last committed and writes three ways:
 * - **incremental** (most syncs): only the chains that changed, by `iptables-restore --noflush`,
 *   without reading the kernel;
 * - **whole tables** (the first sync, and the first after a failure): `iptables-save -c`, then
 *   one `iptables-restore --counters` of each whole table with every foreign chain and rule copied
 *   in, which is linear where `--noflush` of everything is not (reference/iptables-restore-scaling.md);
 *   if that restore is refused, the same rules by `--noflush`;
 * - **verify** (the periodic sync): `iptables-save`, compare kproxy's chains, their rule counts and
 *   the jumps with what was committed, and rewrite what differs (KEP-3453's periodic full sync,
 *   without rewriting what is intact).
 * @module
 */
import { execa, ExecaError } from 'execa';
import type { IPFamily } from '../../state/ip.ts';
import type { IptablesRuleset, JumpRule, TableName } from './render.ts';
import { buildCleanupScript, buildRestoreScript, buildTableScript, changeScript, diffRulesets, missingJumps, parseSave, staleChains, type IptablesChange, type SavedTable, type SavedTables } from './restore.ts';

/** Thrown when iptables-save or iptables-restore fails; carries the tool's stderr and the failing line. */
export class IptablesError extends Error {
  override readonly name = 'IptablesError';
  /** The restore input line iptables-restore reported, when it named one. */
  readonly failedLine: string | undefined;
  constructor(message: string, failedLine: string | undefined, options?: ErrorOptions) {
    super(message, options);
    this.failedLine = failedLine;
  }
}

/** Runs the iptables tools. The default runs the real binaries; tests may pass another. */
export interface IptablesTools {
  /** `iptables-save -t <table>`, with `-c` when `counters`. */
  save(table: TableName, options?: { readonly counters?: boolean }): Promise<string>;
  /** `iptables-restore -w 5 -W 100000`, with `--noflush` unless `wholeTables`, then with `--counters`. */
  restore(script: string, options?: { readonly wholeTables?: boolean }): Promise<void>;
}

/** Time limit for one iptables-save or iptables-restore run. */
export const IPTABLES_TIMEOUT_MS = 600_000;

/**
 * The real tools for one IP family (`iptables-*` or `ip6tables-*`).
 * @param wrapper a command to run them under, e.g. `['ip', 'netns', 'exec', 'ns1']` (tests, benchmarks)
 */
export function systemIptables(family: IPFamily, wrapper: readonly string[] = []): IptablesTools {
  const prefix = family === 6 ? 'ip6tables' : 'iptables';
  return {
    save: (table, options) => run(wrapper, `${prefix}-save`, ['-t', table, ...(options?.counters ? ['-c'] : [])]),
    async restore(script, options) {
      await run(wrapper, `${prefix}-restore`, ['-w', '5', '-W', '100000', options?.wholeTables ? '--counters' : '--noflush'], script);
    },
  };
}

async function run(wrapper: readonly string[], bin: string, args: string[], input?: string): Promise<string> {
  try {
    const [cmd, ...argv] = [...wrapper, bin, ...args] as [string, ...string[]];
    const result = await execa(cmd, argv, { input: input ?? '', timeout: IPTABLES_TIMEOUT_MS, stripFinalNewline: false });
    return result.stdout;
  } catch (err) {
    if (!(err instanceof ExecaError)) throw err;
    const stderr = String(err.stderr ?? '').trim();
    const lineNo = /line (\d+) failed/.exec(stderr)?.[1];
    const failedLine = lineNo && input ? input.split('\n')[Number(lineNo) - 1] : undefined;
    const why = err.code === 'ENOENT' ? `${bin} not found (install iptables)` : err.timedOut ? `timed out after ${IPTABLES_TIMEOUT_MS} ms` : stderr || err.shortMessage;
    throw new IptablesError(`${bin} failed: ${why}${failedLine ? ` (input line ${lineNo}: ${failedLine})` : ''}`, failedLine, { cause: err });
  }
}

/** What one write did. */
export interface IptablesWriteReport {
  /** How it wrote: only changes, whole tables, or whole chains by `--noflush` (whole tables refused, or a repair). */
  readonly how: 'none' | 'incremental' | 'tables' | 'noflush';
  /** Rules written (`-A` and `-I` lines), per table. */
  readonly rulesWritten: Readonly<Record<TableName, number>>;
  /** Chains kproxy no longer wants, removed. */
  readonly chainsDeleted: number;
  /** Set when a verify found the kernel differing from what was committed: what differed. */
  readonly repaired?: string;
}

/**
 * Keeps the kernel's filter and nat tables equal to the rulesets it is given, writing as little as
 * it can (see the module comment). Not for concurrent use: one write at a time.
 */
export class IptablesWriter {
  readonly #tools: IptablesTools;
  #committed: IptablesRuleset | undefined;

  constructor(tools: IptablesTools) {
    this.#tools = tools;
  }

  /** The ruleset the kernel holds as far as this writer knows; undefined before the first write and after a failure. */
  get committed(): IptablesRuleset | undefined {
    return this.#committed;
  }

  /**
   * Makes the kernel hold `next`.
   * @param verify check the kernel against the committed ruleset first and repair what differs
   * @throws IptablesError when a tool fails; nothing of that restore was applied, and the next
   *   write rewrites the whole tables
   */
  async write(next: IptablesRuleset, options: { readonly verify: boolean }): Promise<IptablesWriteReport> {
    try {
      if (this.#committed === undefined) return await this.#writeTables(next);
      let repaired: string | undefined;
      let change: IptablesChange;
      if (options.verify) {
        const current = await readTables(this.#tools, false);
        const d = drift(this.#committed, current);
        if (d !== undefined) {
          repaired = d.summary;
          // What drifted is rewritten as `next` wants it, together with what changed.
          change = withRepairs(diffRulesets(this.#committed, next), next, d);
        } else change = diffRulesets(this.#committed, next);
      } else change = diffRulesets(this.#committed, next);
      const script = changeScript(change);
      if (script !== undefined) await this.#tools.restore(script);
      this.#committed = next;
      return { how: script === undefined ? 'none' : 'incremental', rulesWritten: countRules(script ?? ''), chainsDeleted: change.remove.nat.length, ...(repaired === undefined ? {} : { repaired }) };
    } catch (err) {
      this.#committed = undefined;
      throw err;
    }
  }

  async #writeTables(next: IptablesRuleset): Promise<IptablesWriteReport> {
    const current = await readTables(this.#tools, true);
    const stale = staleChains(next, 'filter', current.filter).length + staleChains(next, 'nat', current.nat).length;
    try {
      const script = buildTableScript(next, current);
      await this.#tools.restore(script, { wholeTables: true });
      this.#committed = next;
      return { how: 'tables', rulesWritten: countRules(script), chainsDeleted: stale };
    } catch (err) {
      // Something in the foreign rules could not be restored as saved (say, a rule iptables-save
      // prints but cannot parse back); fall back to rewriting only kproxy's chains.
      if (!(err instanceof IptablesError)) throw err;
      const script = buildRestoreScript(next, current);
      await this.#tools.restore(script);
      this.#committed = next;
      return { how: 'noflush', rulesWritten: countRules(script), chainsDeleted: stale };
    }
  }
}

/** What a verify found: kproxy's chains that are missing, extra or hold another number of rules, and missing jumps. */
interface Drift {
  readonly chains: Readonly<Record<TableName, ReadonlySet<string>>>;
  readonly extra: Readonly<Record<TableName, readonly string[]>>;
  /** Committed jumps the kernel no longer has. */
  readonly jumps: readonly JumpRule[];
  readonly summary: string;
}

/**
 * Compares the kernel with the committed ruleset by chain names and rule counts (iptables-save
 * prints rules in its own canonical form, so text is not compared; a rule edited in place is not
 * seen, one added, deleted or flushed is).
 */
function drift(committed: IptablesRuleset, current: SavedTables): Drift | undefined {
  const chains = { filter: new Set<string>(), nat: new Set<string>() };
  const extra = { filter: staleChains(committed, 'filter', current.filter), nat: staleChains(committed, 'nat', current.nat) };
  const jumps: JumpRule[] = [];
  for (const table of ['filter', 'nat'] as const) {
    const saved = current[table];
    for (const c of committed[table]) {
      if (!saved?.chains.has(c.name) || (saved.rules.get(c.name)?.length ?? 0) !== c.rules.length) chains[table].add(c.name);
    }
    jumps.push(...missingJumps(committed.jumps, table, saved));
  }
  const n = chains.filter.size + chains.nat.size;
  const x = extra.filter.length + extra.nat.length;
  if (n === 0 && x === 0 && jumps.length === 0) return undefined;
  const parts = [
    n > 0 ? `${n} chain(s) missing or changed (${[...chains.filter, ...chains.nat].slice(0, 5).join(', ')}${n > 5 ? ', …' : ''})` : '',
    x > 0 ? `${x} stale chain(s)` : '',
    jumps.length > 0 ? `${jumps.length} jump(s) from built-in chains missing` : '',
  ];
  return { chains, extra, jumps, summary: parts.filter(Boolean).join('; ') };
}

/** Adds to `change` the rewrite of every drifted chain (as `next` has it), the removal of extra ones and the missing jumps. */
function withRepairs(change: IptablesChange, next: IptablesRuleset, d: Drift): IptablesChange {
  const write = { filter: [...change.write.filter], nat: [...change.write.nat] };
  const edit = { filter: [...change.edit.filter], nat: [...change.edit.nat] };
  const remove = { filter: [...change.remove.filter], nat: [...change.remove.nat] };
  for (const table of ['filter', 'nat'] as const) {
    const written = new Set(write[table].map((c) => c.name));
    for (const c of next[table]) {
      if (!d.chains[table].has(c.name) || written.has(c.name)) continue;
      write[table].push(c);
      // A rewritten chain needs no edits.
      const i = edit[table].findIndex((e) => e.chain === c.name);
      if (i >= 0) edit[table].splice(i, 1);
    }
    for (const name of d.extra[table]) if (!remove[table].includes(name)) remove[table].push(name);
  }
  const jumps = [...change.jumps];
  for (const j of d.jumps) if (!jumps.some((k) => k.table === j.table && k.from === j.from && k.spec === j.spec)) jumps.push(j);
  return { write, edit, remove, jumps };
}

/**
 * Removes every chain kproxy owns and the jumps to them. Returns the number of chains removed.
 * @throws IptablesError when reading or restoring fails
 */
export async function cleanupIptables(tools: IptablesTools): Promise<number> {
  const script = buildCleanupScript(await readTables(tools, false));
  if (script === undefined) return 0;
  await tools.restore(script);
  return script.split('\n').filter((l) => l.startsWith('-X ')).length;
}

async function readTables(tools: IptablesTools, counters: boolean): Promise<Record<TableName, SavedTable>> {
  const [filter, nat] = await Promise.all([tools.save('filter', { counters }), tools.save('nat', { counters })]);
  return { filter: parseSave(filter, 'filter'), nat: parseSave(nat, 'nat') };
}

function countRules(script: string): { filter: number; nat: number } {
  const counts = { filter: 0, nat: 0 };
  let table: 'filter' | 'nat' | undefined;
  for (const line of script.split('\n')) {
    if (line === '*filter' || line === '*nat') table = line.slice(1) as 'filter' | 'nat';
    else if (table && (line.startsWith('-A ') || line.startsWith('-I '))) counts[table]++;
  }
  return counts;
}
