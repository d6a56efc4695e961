/**
 * Reading the kernel's iptables rules in pieces whose cost does not grow with kproxy's own rules.
 *
 * `iptables-save` of a whole table cannot be relied on at scale: with the nf_tables backend
 * (iptables 1.8.9) it reads a 1k-Service nat table in 2–4 s, a 5k one in 35–89 s, and at 10k
 * Services (320k rules) it runs for minutes and dies with SIGSEGV, printing nothing. Even
 * `iptables-save -t filter` of a small filter table takes 2 s beside such a nat table. What stays
 * cheap is listing one chain (`iptables -t nat -S KUBE-SERVICES`: 0.1–0.16 s with 11k rules,
 * a few ms for a small chain) and listing chain names (`nft -j list chains ip`: 0.7 s for 225k
 * chains). So kproxy reads:
 * - the chain names of a table, to find foreign chains and stale ones of its own;
 * - the built-in chains and the foreign chains one by one (what a whole-table restore must copy,
 *   and where the jumps into kproxy's chains live);
 * - its own chains only one at a time, for the periodic verify;
 * and never its own chains all at once. Pure helpers here; the tools run in writer.ts.
 * @module
 */
import { isOwnedChain, type TableName } from './render.ts';
import { parseSave, type SavedTable } from './restore.ts';

/** Built-in chains of each table that kproxy jumps from or must keep. */
export const BUILTIN_CHAINS: Readonly<Record<TableName, readonly string[]>> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
};

/** What `iptables -S CHAIN -v` printed, in `iptables-save -c` form. */
export interface ChainListing {
  /** `:CHAIN POLICY [pkts:bytes]` for a built-in chain, `:CHAIN - [0:0]` otherwise. */
  readonly header: string;
  /** `[pkts:bytes] -A CHAIN …` (or `-A CHAIN …` when the listing had no counters). */
  readonly lines: readonly string[];
}

/**
 * Converts `iptables -t T -S CHAIN [-v]` output to `iptables-save [-c]` lines. `-S -v` prints a
 * rule's counters as `-c PKTS BYTES` among its arguments (`-P CHAIN POLICY -c P B` for a built-in
 * chain); they move to the front, as `iptables-save -c` prints them. A `-c` inside a quoted
 * comment is left alone.
 * @param chain the chain that was listed
 */
export function parseChainListing(chain: string, text: string): ChainListing {
  let header = `:${chain} - [0:0]`;
  const lines: string[] = [];
  for (const raw of text.split('\n')) {
    if (raw === '') continue;
    const { line, counters } = takeCounters(raw);
    if (line.startsWith('-P ')) {
      const policy = line.split(' ')[2] ?? 'ACCEPT';
      header = `:${chain} ${policy} [${counters ?? '0:0'}]`;
    } else if (line.startsWith('-A ')) lines.push(counters === undefined ? line : `[${counters}] ${line}`);
  }
  return { header, lines };
}

/** Splits `-c P B` (outside double quotes) out of a listed rule. */
function takeCounters(line: string): { line: string; counters: string | undefined } {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === '\\') i++;
    else if (ch === '"') quoted = !quoted;
    else if (!quoted && ch === ' ' && line.startsWith(' -c ', i)) {
      const m = /^ -c (\d+) (\d+)(?= |$)/.exec(line.slice(i));
      if (m) return { line: line.slice(0, i) + line.slice(i + m[0].length), counters: `${m[1]}:${m[2]}` };
    }
  }
  return { line, counters: undefined };
}

/**
 * A {@link SavedTable} from the chain names of a table and the listings of the chains that were
 * read (built-in and foreign ones); kproxy's own chains are known by name only. The built-in chains
 * are always in it: with the nf_tables backend one that nothing used yet does not exist, and
 * behaves as an empty chain with policy ACCEPT, which is what a whole-table restore declares.
 */
export function savedTable(table: TableName, names: readonly string[], listings: ReadonlyMap<string, ChainListing>): SavedTable {
  const out = [`*${table}`];
  for (const name of BUILTIN_CHAINS[table]) if (!names.includes(name)) out.push(`:${name} ACCEPT [0:0]`);
  for (const name of names) out.push(listings.get(name)?.header ?? (BUILTIN_CHAINS[table].includes(name) ? `:${name} ACCEPT [0:0]` : `:${name} - [0:0]`));
  for (const listing of listings.values()) for (const line of listing.lines) out.push(line);
  out.push('COMMIT');
  return parseSave(out.join('\n'), table);
}

/** The chains of `table` that must be read to keep what others wrote: built-in ones and every chain kproxy does not own. */
export function chainsToRead(table: TableName, names: readonly string[]): string[] {
  const builtin = new Set(BUILTIN_CHAINS[table]);
  return names.filter((n) => builtin.has(n) || !isOwnedChain(table, n));
}

/**
 * Chain names from `nft -j list chains <family>`, for one iptables table (with the nf_tables
 * backend, iptables' tables are nft tables of the same name).
 */
export function chainNamesFromNft(json: string, table: TableName): string[] {
  const doc = JSON.parse(json) as { nftables?: { chain?: { table?: unknown; name?: unknown } }[] };
  const names: string[] = [];
  for (const item of doc.nftables ?? []) {
    const c = item.chain;
    if (c && c.table === table && typeof c.name === 'string') names.push(c.name);
  }
  return names;
}

/** Chain names from `iptables-save -t <table>` output (the legacy backend, where the save is cheap). */
export function chainNamesFromSave(text: string, table: TableName): string[] {
  return [...parseSave(text, table).chains];
}

/**
 * Runs `fn` over `items` with at most `limit` calls in flight; results in input order.
 * @throws the first error `fn` throws
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
