/**
 * Writes iptables rules to the kernel with the real tools, atomically per table, and removes
 * kproxy's rules on cleanup. Processes run through execa with bounded time; the xtables lock is
 * waited for with upstream's bound (`-w 5 -W 100000`, pkg/util/iptables).
 *
 * {@link IptablesWriter} keeps the ruleset it last committed and writes three ways:
 * - **incremental** (most syncs): only the chains that changed, by `iptables-restore --noflush`,
 *   without reading the kernel;
 * - **whole tables** (the first sync, the first after a failure, and a repair of wide damage): the
 *   chain names and the built-in and foreign chains are read one by one (kernel.ts: never kproxy's
 *   own chains, which at 10k Services cannot be read back), then one `iptables-restore --counters`
 *   of each whole table with every foreign chain, rule and counter copied in, which is linear where
 *   `--noflush` of everything is not; if that restore is refused, the same rules by `--noflush`;
 * - **verify** (asked for once a sync period): a {@link BackgroundCheck} beside the writes reads the
 *   jumps and kproxy's fixed chains every time, and, within its CPU budget, the chain names and a
 *   rotating sample of per-service chains; the next write rewrites what differs (KEP-3453's
 *   periodic full sync, without rewriting what is intact, and without holding changes back).
 * @module
 */
import { execa, ExecaError } from 'execa';
import { hash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { IPFamily } from '../../state/ip.ts';
import { ToolError, type ToolErrorCode } from '../errors.ts';
import { BackgroundCheck } from '../verify.ts';
import { summarizeDrift, type DriftItem } from '../drift.ts';
import { compareIptables, listedRules, type IptablesKernelView } from './drift.ts';
import { BUILTIN_CHAINS, chainNamesFromNft, chainNamesFromSave, chainsToRead, mapLimit, parseChainListing, savedTable, type ChainListing } from './kernel.ts';
import { isOwnedChain, type IptablesRuleset, type TableName } from './render.ts';
import {
  buildCleanupScript,
  buildRestoreScript,
  changeScript,
  parseSave,
  diffRulesets,
  isRuleLine,
  staleChains,
  tableScriptChunks,
  withRepairs,
  type Drift,
  type IptablesChange,
  type SavedTable,
} from './restore.ts';

/** Why an iptables tool failed, for callers to match on (never the message). */
export type IptablesErrorCode = Extract<ToolErrorCode, `IPTABLES_${string}`>;

/** Thrown when an iptables tool fails; carries the tool, its stderr and the failing input line. */
export class IptablesError extends ToolError {
  override readonly name = 'IptablesError';
  declare readonly code: IptablesErrorCode;
  /** The restore input line iptables-restore reported, when it named one. */
  readonly failedLine: string | undefined;
  constructor(message: string, facts: { readonly code: IptablesErrorCode; readonly tool: string; readonly stderr: string; readonly failedLine: string | undefined }, options?: ErrorOptions) {
    super(message, facts, options);
    this.failedLine = facts.failedLine;
  }
}

/** Runs the iptables tools. The default runs the real binaries; tests may pass another. */
export interface IptablesTools {
  /** The names of every chain of both tables (names only: cheap at any size). */
  chains(): Promise<Readonly<Record<TableName, readonly string[]>>>;
  /**
   * `iptables -t <table> -S <chain>`, with `-v` (counters) when `counters`.
   * @returns the listing, or undefined when the chain does not exist
   */
  listChain(table: TableName, chain: string, options?: { readonly counters?: boolean }): Promise<string | undefined>;
  /** `iptables-restore -w 5 -W 100000`, with `--noflush` unless `wholeTables`, then with `--counters`. */
  restore(script: RestoreInput, options?: { readonly wholeTables?: boolean }): Promise<void>;
}

/**
 * What `iptables-restore` reads: the script, or a function that makes it in chunks, which are
 * streamed into the tool as they are made (and made again, only to name the failing line when
 * the tool refuses one).
 */
export type RestoreInput = string | (() => Iterable<string>);

/** Time limit for one iptables-save or iptables-restore run. */
export const IPTABLES_TIMEOUT_MS = 600_000;

/** How `iptables -S` says a chain does not exist (1.8.9 with nf_tables says "incompatible"). */
const NO_CHAIN = /No chain\/target\/match by that name|does not exist|is incompatible/;

/**
 * The real tools for one IP family (`iptables-*` or `ip6tables-*`). Chain names come from
 * `nft -j list chains` with the nf_tables backend (cheap at any size), from `iptables-save` with
 * the legacy one (which reads the kernel's table blob in one go).
 * @param wrapper a command to run them under, e.g. `['ip', 'netns', 'exec', 'ns1']` (tests, benchmarks)
 */
export function systemIptables(family: IPFamily, wrapper: readonly string[] = []): IptablesTools {
  const prefix = family === 6 ? 'ip6tables' : 'iptables';
  let variant: Promise<'nf_tables' | 'legacy'> | undefined;
  const backendVariant = () => (variant ??= run(wrapper, prefix, ['-V']).then((v) => (v.includes('nf_tables') ? 'nf_tables' : 'legacy')));
  return {
    async chains() {
      if ((await backendVariant()) === 'nf_tables') {
        try {
          // One listing for both tables: at 10k Services it takes a second.
          const json = await run(wrapper, 'nft', ['-j', 'list', 'chains', family === 6 ? 'ip6' : 'ip']);
          return { filter: chainNamesFromNft(json, 'filter'), nat: chainNamesFromNft(json, 'nat') };
        } catch (err) {
          // Without the nft command, fall back to the save (slow on very large tables).
          if (!(err instanceof IptablesError && err.code === 'IPTABLES_NOT_FOUND')) throw err;
        }
      }
      const [filter, nat] = await Promise.all((['filter', 'nat'] as const).map(async (t) => chainNamesFromSave(await run(wrapper, `${prefix}-save`, ['-t', t]), t)));
      return { filter: filter!, nat: nat! };
    },
    async listChain(table, chain, options) {
      try {
        return await run(wrapper, prefix, ['-w', '5', '-W', '100000', '-t', table, '-S', chain, ...(options?.counters ? ['-v'] : [])]);
      } catch (err) {
        if (err instanceof IptablesError && err.code === 'IPTABLES_FAILED' && NO_CHAIN.test(err.stderr)) return undefined;
        throw err;
      }
    },
    async restore(script, options) {
      await run(wrapper, `${prefix}-restore`, ['-w', '5', '-W', '100000', options?.wholeTables ? '--counters' : '--noflush'], script);
    },
  };
}

async function run(wrapper: readonly string[], bin: string, args: string[], input?: RestoreInput): Promise<string> {
  try {
    const [cmd, ...argv] = [...wrapper, bin, ...args] as [string, ...string[]];
    const stdin = typeof input === 'function' ? Readable.from(input(), { objectMode: false }) : (input ?? '');
    const result = await execa(cmd, argv, { input: stdin, timeout: IPTABLES_TIMEOUT_MS, stripFinalNewline: false, maxBuffer: 1 << 30 });
    return result.stdout;
  } catch (err) {
    if (!(err instanceof ExecaError)) throw err;
    // execa's types leave stderr's shape to the options; here it is always the text.
    const raw: unknown = err.stderr;
    const stderr = typeof raw === 'string' ? raw.trim() : '';
    const lineNo = /line (\d+) failed/.exec(stderr)?.[1];
    const text = typeof input === 'function' ? [...input()].join('') : input;
    const failedLine = lineNo && text ? text.split('\n')[Number(lineNo) - 1] : undefined;
    // execa reports a missing program as ENOENT; a wrapper such as `ip netns exec` as its own message.
    const missing = err.code === 'ENOENT' || stderr.startsWith(`exec of "${bin}" failed: No such file`);
    const code: IptablesErrorCode = missing ? 'IPTABLES_NOT_FOUND' : err.timedOut ? 'IPTABLES_TIMEOUT' : 'IPTABLES_FAILED';
    const why = missing ? `${bin} not found (install ${bin === 'nft' ? 'nftables' : 'iptables'})` : err.timedOut ? `timed out after ${IPTABLES_TIMEOUT_MS} ms` : stderr || err.shortMessage;
    throw new IptablesError(`${bin} failed: ${why}${failedLine ? ` (input line ${lineNo}: ${failedLine})` : ''}`, { code, tool: bin, stderr, failedLine }, { cause: err });
  }
}

/** Above this many chains of kproxy's, `verify` lists them chain by chain instead of by `iptables-save` (see {@link readIptablesKernel}). */
export const SAVE_MAX_CHAINS = 30_000;
/** Chains listed per shell in a chain-by-chain read. */
const LIST_BATCH = 2_000;

/**
 * Reads kproxy's part of the kernel for `kproxy verify`: every chain name (cheap, kernel.ts), and
 * every rule of kproxy's chains and of the built-in ones. Up to {@link SAVE_MAX_CHAINS} owned
 * chains, by one `iptables-save` (`ip6tables-save`) per table; above that, or when the save fails,
 * chain by chain (`iptables -S CHAIN`, in batches run by one shell so no process is started per
 * chain from here). `iptables-save` of a 10k-Service nat table dies with SIGSEGV (iptables 1.8.9,
 * nf_tables; kernel.ts), and so does `iptables -t nat -S`; bench/README.md has what each read costs.
 * @throws IptablesError when the tools fail
 */
export async function readIptablesKernel(family: IPFamily, wrapper: readonly string[] = []): Promise<IptablesKernelView & { readonly how: 'save' | 'chains' }> {
  const prefix = family === 6 ? 'ip6tables' : 'iptables';
  const all = await systemIptables(family, wrapper).chains();
  const names = { filter: new Set(all.filter), nat: new Set(all.nat) };
  const wanted = (table: TableName) => all[table].filter((c) => isOwnedChain(table, c) || BUILTIN_CHAINS[table].includes(c));
  const owned = wanted('filter').length + wanted('nat').length;
  if (owned <= SAVE_MAX_CHAINS) {
    try {
      const rules = {} as Record<TableName, Map<string, readonly string[] | undefined>>;
      for (const table of TABLES) {
        const saved = parseSave(await run(wrapper, `${prefix}-save`, ['-t', table]), table);
        rules[table] = new Map([...saved.chains].map((c) => [c, saved.rules.get(c) ?? []]));
      }
      const saved = { filter: new Set(rules.filter.keys()), nat: new Set(rules.nat.keys()) };
      withBuiltins(rules);
      return { names: saved, rules, how: 'save' };
    } catch (err) {
      if (!(err instanceof IptablesError) || err.code !== 'IPTABLES_FAILED') throw err;
    }
  }
  const rules = { filter: new Map<string, readonly string[] | undefined>(), nat: new Map<string, readonly string[] | undefined>() };
  for (const table of TABLES) {
    const chains = wanted(table);
    const batches: string[][] = [];
    for (let i = 0; i < chains.length; i += LIST_BATCH) batches.push(chains.slice(i, i + LIST_BATCH));
    // Names go in as arguments ("$@"), never into the script; a chain that vanished prints nothing.
    const script = `for c in "$@"; do echo "#CHAIN $c"; ${prefix} -w 5 -W 100000 -t ${table} -S "$c" 2>/dev/null; done; true`;
    const outputs = await mapLimit(batches, READS, (batch) => run(wrapper, 'sh', ['-c', script, 'sh', ...batch]));
    for (const text of outputs) {
      for (const part of text.split('#CHAIN ').slice(1)) {
        const nl = part.indexOf('\n');
        const chain = nl < 0 ? part : part.slice(0, nl);
        const body = nl < 0 ? '' : part.slice(nl + 1);
        const exists = body.startsWith('-N ') || body.startsWith('-P ');
        rules[table].set(chain, exists ? listedRules(chain, body) : undefined);
      }
    }
  }
  withBuiltins(rules);
  return { names, rules, how: 'chains' };
}

/** With the nf_tables backend a built-in chain nothing used yet does not exist: it holds no rules. */
function withBuiltins(rules: Record<TableName, Map<string, readonly string[] | undefined>>): void {
  for (const table of TABLES) for (const name of BUILTIN_CHAINS[table]) if (!rules[table].has(name)) rules[table].set(name, []);
}

/** What one write did. */
export interface IptablesWriteReport {
  /** How it wrote: only changes, whole tables, or whole chains by `--noflush` (whole tables refused). */
  readonly how: 'none' | 'incremental' | 'tables' | 'noflush';
  /** Rules written (`-A` and `-I` lines), per table. */
  readonly rulesWritten: Readonly<Record<TableName, number>>;
  /** Chains kproxy no longer wants, removed. */
  readonly chainsDeleted: number;
  /** Set when a verify had found the kernel differing from what was committed: what differed (now repaired). */
  readonly repaired?: string;
  /** The same, per service port. */
  readonly drift?: readonly DriftItem[];
  /** Set when a verify could not read the kernel: why. The writes go on. */
  readonly verifyError?: Error;
  /**
   * Set when this write started a verify: resolves (never rejects) when it is over, to true when
   * it found something (drift or a read error), which the next write repairs or reports.
   */
  readonly verifying?: Promise<boolean>;
}

/** Per-service chains a deep verify lists, in rotation. */
export const VERIFY_SAMPLE = 32;
/** Missing chains beyond which a repair rewrites whole tables rather than chain by chain. */
const WIDE_DAMAGE = 64;
/** Reads in flight at once (one per core of the machines this runs on). */
const READS = 2;

/**
 * Keeps the kernel's filter and nat tables equal to the rulesets it is given, writing as little as
 * it can (see the module comment). Not for concurrent use: one write at a time.
 */
export class IptablesWriter {
  readonly #tools: IptablesTools;
  readonly #check: BackgroundCheck<Drift>;
  readonly #family: IPFamily;
  #committed: IptablesRuleset | undefined;
  /** Fingerprints of the fixed chains the last check found clean, by `table chain` (a few entries). */
  readonly #clean = new Map<string, string>();
  /** Where the next deep verify's sample of per-service chains starts. */
  #cursor = 0;

  /**
   * @param options.verifyBudget share of a core the deep verify may use (default: verify.ts's DEEP_READ_BUDGET, 1 %)
   * @param options.family the IP family of `tools` (default 4), which the verify's comparison needs
   */
  constructor(tools: IptablesTools, options: { readonly verifyBudget?: number; readonly family?: IPFamily } = {}) {
    this.#tools = tools;
    this.#family = options.family ?? 4;
    this.#check = new BackgroundCheck(options.verifyBudget);
  }

  /** The ruleset the kernel holds as far as this writer knows; undefined before the first write and after a failure. */
  get committed(): IptablesRuleset | undefined {
    return this.#committed;
  }

  /**
   * Makes the kernel hold `next`, repairing first what a finished verify found.
   * @param verify start a verify in the background after writing (unless one is running)
   * @throws IptablesError when a tool fails; nothing of that restore was applied, and the next
   *   write rewrites the whole tables
   */
  async write(next: IptablesRuleset, options: { readonly verify: boolean }): Promise<IptablesWriteReport> {
    const found = this.#check.take();
    const verifyError = found?.error === undefined ? {} : { verifyError: found.error };
    try {
      if (found?.drift?.wholeTables) this.#committed = undefined;
      if (this.#committed === undefined) {
        this.#check.reset();
        const started = performance.now();
        const report = await this.#writeTables(next);
        this.#check.replaced((performance.now() - started) / 1000);
        return { ...report, ...verifyError, ...(found?.drift ? { repaired: found.drift.summary, drift: found.drift.items } : {}) };
      }
      const diff = diffRulesets(this.#committed, next);
      const change = found?.drift ? withRepairs(diff, next, found.drift) : diff;
      this.#touch(change);
      const script = changeScript(change);
      if (script !== undefined) await this.#tools.restore(script);
      this.#committed = next;
      const verifying = options.verify ? this.#startCheck(next) : undefined;
      return {
        how: script === undefined ? 'none' : 'incremental',
        rulesWritten: countRules(script ?? ''),
        chainsDeleted: change.remove.nat.length,
        ...(found?.drift ? { repaired: found.drift.summary, drift: found.drift.items } : {}),
        ...verifyError,
        ...(verifying ? { verifying } : {}),
      };
    } catch (err) {
      this.#committed = undefined;
      this.#check.reset();
      throw err;
    }
  }

  async #writeTables(next: IptablesRuleset): Promise<IptablesWriteReport> {
    const current = await readTables(this.#tools, 'foreign');
    const stale = staleChains(next, 'filter', current.filter).length + staleChains(next, 'nat', current.nat).length;
    try {
      const rulesWritten = { filter: 0, nat: 0 };
      await this.#tools.restore(() => tableScriptChunks(next, current, rulesWritten), { wholeTables: true });
      this.#committed = next;
      return { how: 'tables', rulesWritten, chainsDeleted: stale };
    } catch (err) {
      // Something in the foreign rules could not be restored as read (say, a rule iptables prints
      // but cannot parse back); fall back to rewriting only kproxy's chains.
      if (!(err instanceof IptablesError) || err.code !== 'IPTABLES_FAILED') throw err;
      const script = buildRestoreScript(next, current);
      await this.#tools.restore(script);
      this.#committed = next;
      return { how: 'noflush', rulesWritten: countRules(script), chainsDeleted: stale };
    }
  }

  /** Tells a running verify which chains this change writes, so it does not take them for drift. */
  #touch(change: IptablesChange): void {
    if (!this.#check.running) return;
    for (const table of TABLES) {
      for (const c of change.write[table]) this.#check.touch(`${table} ${c.name}`);
      for (const e of change.edit[table]) this.#check.touch(`${table} ${e.chain}`);
      for (const name of change.remove[table]) this.#check.touch(`${table} ${name}`);
    }
  }

  #startCheck(snapshot: IptablesRuleset): Promise<boolean> | undefined {
    return this.#check.start((deep, touched) => this.#verify(snapshot, deep, touched));
  }

  /**
   * Compares the kernel with `snapshot`, rule by rule ({@link compareIptables}, which `kproxy
   * verify` shares). Every time: the jumps from the built-in chains and kproxy's fixed chains.
   * Deep: also every chain name (missing and stale chains) and the next {@link VERIFY_SAMPLE}
   * per-service chains. Chains in `touched` were written meanwhile and are left out.
   */
  async #verify(snapshot: IptablesRuleset, deep: boolean, touched: ReadonlySet<string>): Promise<Drift | undefined> {
    const tools = this.#tools;
    const rules = { filter: new Map<string, readonly string[] | undefined>(), nat: new Map<string, readonly string[] | undefined>() };
    const allNames = deep ? await tools.chains() : undefined;
    const names = allNames ? { filter: new Set(allNames.filter), nat: new Set(allNames.nat) } : undefined;
    const sampled = new Set<string>();
    const fingerprints = new Map<string, string>();
    for (const table of TABLES) {
      const builtins = await readChains(tools, table, BUILTIN_CHAINS[table], false);
      for (const name of BUILTIN_CHAINS[table]) rules[table].set(name, builtins.get(name)?.lines.map((l) => l.slice(`-A ${name} `.length)) ?? []);
      const read = [...snapshot.fixed[table].keys()];
      if (table === 'nat' && names) {
        for (const c of this.#sample(snapshot)) {
          if (!names.nat.has(c.name)) continue;
          read.push(c.name);
          sampled.add(c.name);
        }
      }
      const listings = await mapLimit(read, READS, (name) => tools.listChain(table, name));
      read.forEach((name, i) => {
        const listing = listings[i];
        const wanted = snapshot.fixed[table].get(name);
        if (listing !== undefined && wanted !== undefined) {
          // A fixed chain that reads as it did at the last check that found it clean, and is wanted
          // as then, is clean still: two digests cost a small part of comparing KUBE-SERVICES (10^4
          // rules at 10k Services) rule by rule every period.
          const print = fingerprint(listing, wanted);
          if (this.#clean.get(`${table} ${name}`) === print) return;
          fingerprints.set(`${table} ${name}`, print);
        }
        rules[table].set(name, listing === undefined ? undefined : listedRules(name, listing));
      });
    }
    const items = compareIptables(snapshot, { ...(names ? { names } : {}), rules, touched }, this.#family);
    // Remember what was compared and found clean (a chain written meanwhile was not compared).
    for (const [key, print] of fingerprints) {
      if (!touched.has(key) && !items.some((i) => `${i.table} ${i.name}` === key)) this.#clean.set(key, print);
      else this.#clean.delete(key);
    }
    if (items.length === 0) return undefined;
    const chains = { filter: new Set<string>(), nat: new Set<string>() };
    const extra = { filter: [] as string[], nat: [] as string[] };
    let missing = 0;
    for (const item of items) {
      const table = item.table as TableName;
      if (item.object === 'jump') continue;
      if (item.object === 'chain' && item.change === 'extra') extra[table].push(item.name);
      else chains[table].add(item.name);
      if (item.object === 'chain' && item.change === 'missing') missing++;
    }
    const jumps = snapshot.jumps.filter((j) => items.some((i) => i.object === 'jump' && i.table === j.table && i.name === j.from && i.detail === j.spec));
    // A damaged chain found by sampling stands for others not sampled: rewrite everything.
    const wholeTables = items.some((i) => sampled.has(i.name)) || missing > WIDE_DAMAGE;
    return { chains, extra, jumps, wholeTables, items, summary: summarizeDrift(items) + (wholeTables ? '; rewrote whole tables' : '') };
  }

  /** The next {@link VERIFY_SAMPLE} per-service chains of `snapshot`, in rotation. */
  #sample(snapshot: IptablesRuleset): { name: string; rules: readonly string[] }[] {
    const all: { name: string; rules: readonly string[] }[] = [];
    for (const part of snapshot.services.values()) for (const c of part.chains) all.push(c);
    if (all.length === 0) return [];
    const start = this.#cursor % all.length;
    this.#cursor = start + VERIFY_SAMPLE;
    const out = all.slice(start, start + VERIFY_SAMPLE);
    return out.length < VERIFY_SAMPLE ? [...out, ...all.slice(0, Math.min(start, VERIFY_SAMPLE - out.length))] : out;
  }
}

const TABLES = ['filter', 'nat'] as const;

/** A digest of a chain as listed and as wanted: equal digests, equal chains (when one was once found clean). */
function fingerprint(listing: string, wanted: readonly string[]): string {
  return `${hash('sha256', listing)} ${hash('sha256', wanted.join('\n'))}`;
}

/**
 * Removes every chain kproxy owns and the jumps to them. Returns the number of chains removed.
 * Reads only chain names and the built-in chains.
 * @throws IptablesError when reading or restoring fails
 */
export async function cleanupIptables(tools: IptablesTools): Promise<number> {
  const script = buildCleanupScript(await readTables(tools, 'builtin'));
  if (script === undefined) return 0;
  await tools.restore(script);
  return script.split('\n').filter((l) => l.startsWith('-X ')).length;
}

/**
 * Both tables as far as a write needs them: every chain name, and the rules of the built-in
 * chains (`builtin`) or of every chain kproxy does not own (`foreign`, with counters, for a
 * whole-table restore). Never kproxy's own chains' rules.
 */
async function readTables(tools: IptablesTools, which: 'builtin' | 'foreign'): Promise<Record<TableName, SavedTable>> {
  const out = {} as Record<TableName, SavedTable>;
  const all = await tools.chains();
  for (const table of TABLES) {
    const names = all[table];
    const read = which === 'foreign' ? chainsToRead(table, names) : BUILTIN_CHAINS[table].filter((c) => names.includes(c));
    const listings = await readChains(tools, table, read, which === 'foreign');
    // A foreign chain deleted between the listing of names and its read is left out.
    const present = names.filter((n) => listings.has(n) || !read.includes(n));
    out[table] = savedTable(table, present, listings);
  }
  return out;
}

/** Lists `chains` of `table`; chains that do not exist are left out of the result. */
async function readChains(tools: IptablesTools, table: TableName, chains: readonly string[], counters: boolean): Promise<Map<string, ChainListing>> {
  const texts = await mapLimit(chains, READS, (c) => tools.listChain(table, c, { counters }));
  const out = new Map<string, ChainListing>();
  chains.forEach((c, i) => {
    const text = texts[i];
    if (text !== undefined) out.set(c, parseChainListing(c, text));
  });
  return out;
}

function countRules(script: string): { filter: number; nat: number } {
  const counts = { filter: 0, nat: 0 };
  let table: 'filter' | 'nat' | undefined;
  for (const line of script.split('\n')) {
    if (line === '*filter' || line === '*nat') table = line.slice(1) as 'filter' | 'nat';
    else if (table && isRuleLine(line)) counts[table]++;
  }
  return counts;
}
