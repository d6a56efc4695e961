/**
 * Writes kproxy's nftables table with the real `nft`: one `nft -j -f` transaction per sync
 * (atomic: all of it or nothing). The committed ruleset is kept in memory, so a sync sends only the
 * delta and never lists the table (upstream lists it on every sync, which takes tens of seconds at
 * 40k Services, kubernetes#139513); the kernel is read back only by the periodic verify, in the
 * background and within a CPU budget (../verify.ts), and the table is rewritten when it differs.
 *
 * nft's JSON errors carry no location (`internal:0:0-0`); when a batch fails, the writer finds the
 * first failing command by bisecting the batch with `nft --check` on prefixes, and names it in
 * the error in nft's text syntax.
 * @module
 */
import { execa, ExecaError } from 'execa';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deltaBatch, stagedFullBatch, type NftBatchPlan } from './batch.ts';
import { toBatch, type NftCommand, type NftTableFamily } from './json.ts';
import { servicePortOfName, TABLE } from './names.ts';
import { ToolError, type ToolErrorCode } from '../errors.ts';
import { BackgroundCheck } from '../verify.ts';
import { summarizeDrift, type DriftItem } from '../drift.ts';
import { compareNft } from './drift.ts';
import type { NftRuleset } from './render.ts';
import { commandText } from './text.ts';

/** Why nft failed, for callers to match on (never the message). */
export type NftErrorCode = Extract<ToolErrorCode, `NFT_${string}`>;

/** Thrown when nft fails; carries nft's stderr and, when it could be found, the failing command. */
export class NftError extends ToolError {
  override readonly name = 'NftError';
  declare readonly code: NftErrorCode;
  /** The first command that fails on its own, in nft's text syntax. */
  readonly failedCommand: string | undefined;
  constructor(message: string, facts: { readonly code: NftErrorCode; readonly stderr: string; readonly failedCommand: string | undefined }, options?: ErrorOptions) {
    super(message, { ...facts, tool: 'nft' }, options);
    this.failedCommand = facts.failedCommand;
  }
}

/** Runs nft. The default runs the real binary; tests may pass another. */
export interface NftTools {
  /** `nft -j -f` of a JSON document; with `check`, `nft -c` (validated, not committed). */
  apply(json: string, check?: boolean): Promise<void>;
  /** `nft -j list table <family> <table>`, or undefined when the table does not exist. */
  list(family: NftTableFamily, table: string): Promise<string | undefined>;
  /**
   * The chain names of one table (`nft -j list chains <family>`: names only, 0.03 s at 10k
   * Services where a listing of the table takes 6 s, and 1 s beside a 10k-Service iptables-nft
   * ruleset, where nft 1.0.6 takes 51 s and 950 MB to answer `list tables`).
   * @returns the names, or undefined when the table does not exist
   */
  chains(family: NftTableFamily, table: string): Promise<readonly string[] | undefined>;
}

/**
 * Time limit for one nft run. Generous: replacing a very large table is slow (50k Services with
 * ClientIP affinity take minutes, bench/README.md), and a timeout there would only start it again.
 */
export const NFT_TIMEOUT_MS = 600_000;

/**
 * The real `nft`.
 * @param wrapper a command to run nft under, e.g. `['ip', 'netns', 'exec', ns]` (tests, benchmarks)
 */
export function systemNft(wrapper: readonly string[] = []): NftTools {
  const run = (args: string[]) => runNft(wrapper, args);
  return {
    async apply(json, check = false) {
      // Not `-f -`: nft opens /dev/stdin, which fails when stdin is the socketpair Node gives a child.
      const dir = await mkdtemp(join(tmpdir(), 'kproxy-nft-'));
      try {
        const file = join(dir, 'batch.json');
        await writeFile(file, json, { mode: 0o600 });
        await run(check ? ['-c', '-j', '-f', file] : ['-j', '-f', file]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    async list(family, table) {
      try {
        return await run(['-j', 'list', 'table', family, table]);
      } catch (err) {
        if (err instanceof NftError && err.code === 'NFT_FAILED' && /No such file or directory/.test(err.stderr)) return undefined;
        throw err;
      }
    },
    async chains(family, table) {
      const out = JSON.parse(await run(['-j', 'list', 'chains', family])) as { nftables: { chain?: { table?: unknown; name?: unknown } }[] };
      const names = out.nftables.flatMap((o) => (o.chain?.table === table && typeof o.chain.name === 'string' ? [o.chain.name] : []));
      return names.length === 0 ? undefined : names;
    },
  };
}

async function runNft(wrapper: readonly string[], args: string[]): Promise<string> {
  const [bin, ...rest] = [...wrapper, 'nft', ...args];
  try {
    const result = await execa(bin!, rest, { timeout: NFT_TIMEOUT_MS, maxBuffer: 1024 ** 3 });
    return result.stdout;
  } catch (err) {
    if (!(err instanceof ExecaError)) throw err;
    // execa's types leave stderr's shape to the options; here it is always the text.
    const raw: unknown = err.stderr;
    const stderr = typeof raw === 'string' ? raw.trim() : '';
    // execa reports a missing program as ENOENT; a wrapper such as `ip netns exec` as its own message.
    const missing = err.code === 'ENOENT' || stderr.startsWith('exec of "nft" failed: No such file');
    const code: NftErrorCode = missing ? 'NFT_NOT_FOUND' : err.timedOut ? 'NFT_TIMEOUT' : 'NFT_FAILED';
    const why = missing ? 'nft not found (install nftables)' : err.timedOut ? `timed out after ${NFT_TIMEOUT_MS} ms` : stderr || err.shortMessage;
    throw new NftError(`nft ${args.join(' ')} failed: ${why.replaceAll('internal:0:0-0: ', '')}`, { code, stderr, failedCommand: undefined }, { cause: err });
  }
}

/** What one write did. */
export interface NftWriteReport extends Omit<NftBatchPlan, 'commands' | 'stale'> {
  /** Full: the table was replaced; otherwise only the delta was sent (or nothing, when none). */
  readonly full: boolean;
  /** nft runs the write took: one, or more for a large table written where there was none ({@link stagedFullBatch}). */
  readonly transactions: number;
  /** Why the periodic check rewrote the table, when the kernel differed from what kproxy wrote. */
  readonly repaired: string | undefined;
  /** What differed, per service port, when `repaired` is set. */
  readonly drift?: readonly DriftItem[];
  /** Set when a verify could not read the kernel: why. The writes go on. */
  readonly verifyError?: Error;
  /**
   * Set when this write started a verify: resolves (never rejects) when it is over, to true when
   * it found something (drift or a read error), which the next write repairs or reports.
   */
  readonly verifying?: Promise<boolean>;
}

/**
 * Commands per nft run when a large table is written where there is none ({@link stagedFullBatch}):
 * 229 MiB of nft at its peak for a 10k-Service table, which takes 1188 MiB in one run (bench/README.md,
 * "nftables floors").
 */
export const STAGE_COMMANDS = 25_000;

/** Bounds of the search for the failing command. */
const BISECT_STEPS = 24;
const BISECT_BUDGET_MS = 60_000;

/**
 * Owns kproxy's table in one family. Not re-entrant: one write at a time (the runner's loop).
 */
export class NftWriter {
  readonly #tools: NftTools;
  readonly #check: BackgroundCheck<readonly DriftItem[]>;
  #committed: NftRuleset | undefined;
  #deferred: readonly string[] = [];
  readonly #stageCommands: number;

  /**
   * @param options.verifyBudget share of a core the deep verify may use (default: verify.ts's DEEP_READ_BUDGET, 1 %)
   * @param options.stageCommands commands per nft run when the table is written where there is none (default {@link STAGE_COMMANDS})
   */
  constructor(tools: NftTools, options: { readonly verifyBudget?: number; readonly stageCommands?: number } = {}) {
    this.#tools = tools;
    this.#check = new BackgroundCheck(options.verifyBudget);
    this.#stageCommands = Math.max(1, options.stageCommands ?? STAGE_COMMANDS);
  }

  /** The ruleset the kernel holds after the last successful write; undefined before it or after a failure. */
  get committed(): NftRuleset | undefined {
    return this.#committed;
  }

  /**
   * Makes the table match `next`. The first write, the first after a failure, and the first after
   * a verify found the kernel differing, replace the table (in one transaction; in several when it
   * is large and the kernel has none, see {@link stagedFullBatch}); otherwise only the delta is sent.
   * @param verify start a verify in the background after writing (unless one is running): every
   *   time it compares the chain names, and, within its CPU budget ({@link BackgroundCheck}), the
   *   whole table by rule and element counts
   * @throws NftError naming the failing command; the kernel keeps its previous table (or, when a
   *   staged write failed, a partial one that no base chain's rule reaches yet), and the next write
   *   replaces it
   */
  async write(next: NftRuleset, options: { readonly verify: boolean }): Promise<NftWriteReport> {
    const found = this.#check.take();
    const drift = this.#committed === undefined ? undefined : found?.drift;
    const repaired = drift === undefined ? undefined : summarizeDrift(drift);
    if (repaired !== undefined) this.#committed = undefined;
    const full = this.#committed === undefined;
    const { plan: batch, stages } = this.#committed === undefined ? await this.#replacement(next) : { plan: deltaBatch(this.#committed, next, this.#deferred), stages: undefined };
    if (full) this.#check.reset();
    else for (const c of batch.commands) this.#check.touch(touchedName(c));
    const transactions = batch.commands.length === 0 ? [] : (stages ?? [batch.commands]);
    const started = performance.now();
    for (const [i, commands] of transactions.entries()) {
      try {
        await this.#tools.apply(JSON.stringify(toBatch(commands)));
      } catch (err) {
        this.#committed = undefined;
        this.#deferred = [];
        this.#check.reset();
        throw await this.#explain(err as Error, commands, transactions.length > 1 ? `transaction ${i + 1} of ${transactions.length}` : undefined);
      }
    }
    this.#committed = next;
    this.#deferred = batch.stale;
    if (full) this.#check.replaced((performance.now() - started) / 1000);
    const snapshot = { committed: next, deferred: batch.stale };
    const verifying = options.verify && !full ? this.#check.start((deep, touched) => this.#verify(snapshot.committed, snapshot.deferred, deep, touched)) : undefined;
    return {
      full,
      transactions: transactions.length,
      repaired,
      ...(drift === undefined ? {} : { drift }),
      rules: batch.rules,
      elements: batch.elements,
      chainsWritten: batch.chainsWritten,
      chainsDeleted: batch.chainsDeleted,
      ...(found?.error === undefined ? {} : { verifyError: found.error }),
      ...(verifying ? { verifying } : {}),
    };
  }

  /**
   * Compares the kernel with `committed`: the chain names every time (a deleted table or chain),
   * and when `deep`, the whole listing, rule by rule and element by element ({@link compareNft}, which
   * `kproxy verify` shares). Names in `touched` were written meanwhile.
   * @returns what differs, or undefined
   */
  async #verify(committed: NftRuleset, deferred: readonly string[], deep: boolean, touched: ReadonlySet<string>): Promise<readonly DriftItem[] | undefined> {
    const table = `${committed.family} ${committed.table}`;
    const names = await this.#tools.chains(committed.family, committed.table);
    if (names === undefined) return [{ servicePort: undefined, change: 'missing', object: 'table', table, name: committed.table }];
    const items: DriftItem[] = [];
    const present = new Set(names);
    for (const c of committed.chains)
      if (!present.has(c.name) && !touched.has(`chain ${c.name}`)) items.push({ servicePort: servicePortOfName(c.name), change: 'missing', object: 'chain', table, name: c.name });
    const wanted = new Set([...committed.chains.map((c) => c.name), ...deferred]);
    for (const name of names) if (!wanted.has(name) && !touched.has(`chain ${name}`)) items.push({ servicePort: servicePortOfName(name), change: 'extra', object: 'chain', table, name });
    if (deep && items.length === 0) items.push(...compareNft(committed, await this.#tools.list(committed.family, committed.table), deferred, touched));
    return items.length > 0 ? items : undefined;
  }

  /**
   * The batch that replaces the table, in one transaction, or in stages when it is larger than
   * one stage and the kernel has no such table (a failed read counts as a table: one transaction).
   */
  async #replacement(next: NftRuleset): Promise<{ readonly plan: NftBatchPlan; readonly stages: readonly (readonly NftCommand[])[] }> {
    const staged = stagedFullBatch(next, this.#stageCommands);
    if (staged.stages.length === 1) return staged;
    const absent = await this.#tools.chains(next.family, next.table).then(
      (names) => names === undefined,
      () => false,
    );
    return absent ? staged : { plan: staged.plan, stages: [staged.plan.commands] };
  }

  /**
   * Finds the first command whose prefix of the transaction fails `nft --check`, within bounds.
   * @param where which of several transactions failed, for the message
   */
  async #explain(err: Error, commands: readonly NftCommand[], where?: string): Promise<Error> {
    if (!(err instanceof NftError)) return err;
    const deadline = Date.now() + BISECT_BUDGET_MS;
    const fails = async (n: number) =>
      this.#tools.apply(JSON.stringify(toBatch(commands.slice(0, n))), true).then(
        () => false,
        () => true,
      );
    let ok = 0;
    let bad = commands.length;
    try {
      if (!(await fails(bad))) return err; // passes the check now: transient, or only the commit failed
      for (let step = 0; bad - ok > 1 && step < BISECT_STEPS && Date.now() < deadline; step++) {
        const mid = Math.floor((ok + bad) / 2);
        if (await fails(mid)) bad = mid;
        else ok = mid;
      }
    } catch {
      return err;
    }
    if (bad - ok > 1) return err;
    const text = commandText(commands[bad - 1]!);
    return new NftError(
      `${err.message} (${where === undefined ? '' : `${where}, `}command ${bad} of ${commands.length}: ${text.length > 500 ? `${text.slice(0, 500)}…` : text})`,
      { code: err.code, stderr: err.stderr, failedCommand: text },
      { cause: err },
    );
  }
}

/** The chain or set a command changes, as a running verify's `touched` names it. */
function touchedName(command: NftCommand): string {
  const o = 'add' in command ? command.add : 'flush' in command ? command.flush : command.delete;
  if ('chain' in o) return `chain ${o.chain.name}`;
  if ('rule' in o) return `chain ${o.rule.chain}`;
  if ('set' in o) return `set ${o.set.name}`;
  if ('map' in o) return `set ${o.map.name}`;
  if ('element' in o) return `set ${o.element.name}`;
  return `table ${o.table.name}`;
}

/**
 * Deletes kproxy's (or kube-proxy's) tables, `ip kube-proxy` and `ip6 kube-proxy`, and nothing else.
 * @param families which of the two (default both)
 * @param table another table of kproxy's instead (the NetworkPolicy table, `inet kproxy-policy`)
 * @returns the number of tables deleted
 * @throws NftError when nft fails
 */
export async function cleanupNftables(tools: NftTools, families: readonly NftTableFamily[] = ['ip', 'ip6'], table = TABLE): Promise<number> {
  // Not `nft list tables`: beside a large iptables-nft ruleset nft 1.0.6 loads all of it to answer.
  const owned: NftTableFamily[] = [];
  for (const family of families) if ((await tools.chains(family, table)) !== undefined) owned.push(family);
  if (owned.length === 0) return 0;
  await tools.apply(JSON.stringify(toBatch(owned.map((family) => ({ delete: { table: { family, name: table } } })))));
  return owned.length;
}
