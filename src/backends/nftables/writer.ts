/**
 * Writes kproxy's nftables table with the real `nft`: one `nft -j -f` transaction per sync
 * (atomic: all of it or nothing). The committed ruleset is kept in memory, so a sync sends only the
 * delta and never lists the table (upstream lists it on every sync, which takes tens of seconds at
 * 40k Services, kubernetes#139513); the kernel is read back only on the periodic full sync, to
 * verify that nobody flushed or deleted what kproxy wrote, and is rewritten when it differs.
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
import { deltaBatch, fullBatch, type NftBatchPlan } from './batch.ts';
import { toBatch, type NftCommand, type NftFamily } from './json.ts';
import { TABLE } from './names.ts';
import type { NftRuleset } from './render.ts';
import { commandText } from './text.ts';

/** Thrown when nft fails; names the failing command when it could be found. */
export class NftError extends Error {
  override readonly name = 'NftError';
  /** The first command that fails on its own, in nft's text syntax. */
  readonly failedCommand: string | undefined;
  constructor(message: string, failedCommand: string | undefined, options?: ErrorOptions) {
    super(message, options);
    this.failedCommand = failedCommand;
  }
}

/** Runs nft. The default runs the real binary; tests may pass another. */
export interface NftTools {
  /** `nft -j -f` of a JSON document; with `check`, `nft -c` (validated, not committed). */
  apply(json: string, check?: boolean): Promise<void>;
  /** `nft -j list table <family> <table>`, or undefined when the table does not exist. */
  list(family: NftFamily, table: string): Promise<string | undefined>;
  /** The tables that exist (`nft -j list tables`: cheap, no content). */
  tables(): Promise<readonly { readonly family: string; readonly name: string }[]>;
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
        if (err instanceof NftError && /No such file or directory/.test(err.message)) return undefined;
        throw err;
      }
    },
    async tables() {
      const out = JSON.parse(await run(['-j', 'list', 'tables'])) as { nftables: { table?: { family: string; name: string } }[] };
      return out.nftables.flatMap((o) => (o.table ? [o.table] : []));
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
    const why = err.code === 'ENOENT' ? 'nft not found (install nftables)' : err.timedOut ? `timed out after ${NFT_TIMEOUT_MS} ms` : String(err.stderr ?? '').trim() || err.shortMessage;
    throw new NftError(`nft ${args.join(' ')} failed: ${why.replaceAll('internal:0:0-0: ', '')}`, undefined, { cause: err });
  }
}

/** What one write did. */
export interface NftWriteReport extends Omit<NftBatchPlan, 'commands' | 'stale'> {
  /** Full: the table was replaced; otherwise only the delta was sent (or nothing, when none). */
  readonly full: boolean;
  /** Why the periodic check rewrote the table, when the kernel differed from what kproxy wrote. */
  readonly repaired: string | undefined;
}

/** Bounds of the search for the failing command. */
const BISECT_STEPS = 24;
const BISECT_BUDGET_MS = 60_000;

/**
 * Owns kproxy's table in one family. Not re-entrant: one write at a time (the runner's loop).
 */
export class NftWriter {
  readonly #tools: NftTools;
  #committed: NftRuleset | undefined;
  #deferred: readonly string[] = [];

  constructor(tools: NftTools) {
    this.#tools = tools;
  }

  /** The ruleset the kernel holds after the last successful write; undefined before it or after a failure. */
  get committed(): NftRuleset | undefined {
    return this.#committed;
  }

  /**
   * The batch the next write would send, without sending it (dry-run), and remembers it as sent.
   * @returns the commands, empty when nothing changed
   */
  plan(next: NftRuleset): NftBatchPlan {
    const batch = this.#batchTo(next);
    this.#committed = next;
    this.#deferred = batch.stale;
    return batch;
  }

  /**
   * Makes the table match `next`. The first write, and the first after a failure, replaces the
   * table; `verify` (the periodic full sync) compares the kernel with the committed state first and
   * replaces the table when they differ; otherwise only the delta is sent.
   * @throws NftError naming the failing command; the kernel keeps its previous table, and the next
   *   write replaces it
   */
  async write(next: NftRuleset, options: { readonly verify: boolean }): Promise<NftWriteReport> {
    let repaired: string | undefined;
    if (this.#committed !== undefined && options.verify) {
      repaired = drift(this.#committed, this.#deferred, await this.#tools.list(next.family, next.table));
      if (repaired !== undefined) this.#committed = undefined;
    }
    const full = this.#committed === undefined;
    const batch = this.#batchTo(next);
    if (batch.commands.length > 0) {
      try {
        await this.#tools.apply(JSON.stringify(toBatch(batch.commands)));
      } catch (err) {
        this.#committed = undefined;
        this.#deferred = [];
        throw await this.#explain(err as Error, batch.commands);
      }
    }
    this.#committed = next;
    this.#deferred = batch.stale;
    return { full, repaired, rules: batch.rules, elements: batch.elements, chainsWritten: batch.chainsWritten, chainsDeleted: batch.chainsDeleted };
  }

  /** The full batch when nothing is committed, else the delta from the committed ruleset. */
  #batchTo(next: NftRuleset): NftBatchPlan {
    return this.#committed === undefined ? fullBatch(next) : deltaBatch(this.#committed, next, this.#deferred);
  }

  /** Finds the first command whose prefix of the batch fails `nft --check`, within bounds. */
  async #explain(err: Error, commands: readonly NftCommand[]): Promise<Error> {
    if (!(err instanceof NftError)) return err;
    const deadline = Date.now() + BISECT_BUDGET_MS;
    const fails = async (n: number) => this.#tools.apply(JSON.stringify(toBatch(commands.slice(0, n))), true).then(() => false, () => true);
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
    return new NftError(`${err.message} (command ${bad} of ${commands.length}: ${text.length > 500 ? `${text.slice(0, 500)}…` : text})`, text, { cause: err });
  }
}

/**
 * Compares what `nft -j list table` shows with what kproxy committed: the same chains with the same
 * number of rules, the same sets with the same number of elements (sets with timeouts fill from
 * traffic and are only checked to exist).
 * @returns a description of the first difference, or undefined when they match
 */
export function drift(committed: NftRuleset, deferred: readonly string[], listing: string | undefined): string | undefined {
  if (listing === undefined) return `table ${committed.family} ${committed.table} is missing`;
  const chains = new Map<string, number>();
  const sets = new Map<string, number>();
  for (const item of (JSON.parse(listing) as { nftables: Record<string, { name?: string; chain?: string; elem?: unknown[] }>[] }).nftables) {
    if (item.chain?.name !== undefined) chains.set(item.chain.name, chains.get(item.chain.name) ?? 0);
    else if (item.rule?.chain !== undefined) chains.set(item.rule.chain, (chains.get(item.rule.chain) ?? 0) + 1);
    const s = item.set ?? item.map;
    if (s?.name !== undefined) sets.set(s.name, s.elem?.length ?? 0);
  }
  for (const c of committed.chains) {
    const n = chains.get(c.name);
    if (n === undefined) return `chain ${c.name} is missing`;
    if (n !== c.rules.length) return `chain ${c.name} has ${n} rules, expected ${c.rules.length}`;
    chains.delete(c.name);
  }
  for (const name of deferred) chains.delete(name);
  if (chains.size > 0) return `unexpected chain ${[...chains.keys()][0]}`;
  for (const s of committed.sets) {
    const n = sets.get(s.name);
    if (n === undefined) return `set ${s.name} is missing`;
    const want = committed.elements.get(s.name)?.length ?? 0;
    if (s.timeout === undefined && n !== want) return `set ${s.name} has ${n} elements, expected ${want}`;
    sets.delete(s.name);
  }
  if (sets.size > 0) return `unexpected set ${[...sets.keys()][0]}`;
  return undefined;
}

/**
 * Deletes kproxy's (or kube-proxy's) tables, `ip kube-proxy` and `ip6 kube-proxy`, and nothing else.
 * @returns the number of tables deleted
 * @throws NftError when nft fails
 */
export async function cleanupNftables(tools: NftTools): Promise<number> {
  const owned = (await tools.tables()).filter((t) => t.name === TABLE && (t.family === 'ip' || t.family === 'ip6'));
  if (owned.length === 0) return 0;
  await tools.apply(JSON.stringify(toBatch(owned.map((t) => ({ delete: { table: { family: t.family as NftFamily, name: TABLE } } })))));
  return owned.length;
}
