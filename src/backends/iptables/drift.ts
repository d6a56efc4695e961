/**
 * Compares what the kernel's iptables hold with an {@link IptablesRuleset}, rule by rule, as
 * {@link DriftItem}s per service port: shared by `kproxy verify` (which reads whole tables) and the
 * writer's periodic check (which reads the fixed chains, the jumps and a rotating sample).
 *
 * iptables prints a rule in its own canonical form, not as it was restored (`-d 10.96.0.1` comes
 * back as `-d 10.96.0.1/32`, `--or-mark 0x4000` as `--set-xmark 0x4000/0x4000`, a probability to
 * 11 places, matches in another order), so both sides are reduced to {@link canonicalRule} first.
 * @module
 */
import type { IPFamily } from '../../state/ip.ts';
import { diffLists, type DriftItem } from '../drift.ts';
import { isOwnedChain, type IptablesRuleset, type TableName } from './render.ts';

/** What was read of the kernel; chains not in `rules` were not read and are not compared. */
export interface IptablesKernelView {
  /** Every chain name of each table, when they were read; undefined: unknown (no missing or extra chain is reported). */
  readonly names?: Readonly<Record<TableName, ReadonlySet<string>>>;
  /** The rules of each chain that was read (restore arguments after `-A CHAIN `); undefined: the chain does not exist. */
  readonly rules: Readonly<Record<TableName, ReadonlyMap<string, readonly string[] | undefined>>>;
  /** `table chain` of chains written while the kernel was read: left out. */
  readonly touched?: ReadonlySet<string>;
}

const TABLES = ['filter', 'nat'] as const;

/** Splits restore arguments into words; double quotes group (and are dropped), `\"` is a quote. */
function words(rule: string): string[] {
  const out: string[] = [];
  let word = '';
  let quoted = false;
  let started = false;
  for (let i = 0; i < rule.length; i++) {
    const ch = rule[i]!;
    if (ch === '\\' && i + 1 < rule.length) {
      word += rule[++i];
      started = true;
    } else if (ch === '"') {
      quoted = !quoted;
      started = true;
    } else if (ch === ' ' && !quoted) {
      if (started) out.push(word);
      word = '';
      started = false;
    } else {
      word += ch;
      started = true;
    }
  }
  if (started) out.push(word);
  return out;
}

const isOption = (w: string) => w === '!' || (w.startsWith('-') && !/^-\d/.test(w));
const ALL_ONES = new Set(['255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);

/**
 * A rule's arguments in a form that is the same for what kproxy restores and what `iptables -S` /
 * `iptables-save` print of it: options grouped with their values (and a `!` before them), sorted,
 * with iptables' defaults and spellings made explicit.
 */
export function canonicalRule(rule: string, family: IPFamily): string {
  const w = words(rule);
  const units: string[] = [];
  let reject = false;
  let rejectWith = false;
  for (let i = 0; i < w.length;) {
    const neg = w[i] === '!';
    if (neg) i++;
    const opt = w[i++] ?? '';
    const args: string[] = [];
    while (i < w.length && !isOption(w[i]!)) args.push(w[i++]!);
    let unit: string | undefined = [opt, ...args].join(' ');
    switch (opt) {
      case '-s':
      case '-d':
        if (args.length === 1 && !args[0]!.includes('/')) unit = `${opt} ${args[0]}/${family === 6 ? 128 : 32}`;
        break;
      case '--or-mark':
        unit = `--set-xmark ${args[0]}/${args[0]}`;
        break;
      case '--xor-mark':
        unit = `--set-xmark ${args[0]}/0x0`;
        break;
      case '--mask':
        if (ALL_ONES.has(args[0] ?? '')) unit = undefined;
        break;
      case '--rsource':
        unit = undefined;
        break;
      case '--probability':
        // statistic keeps probability · 2^31 as an integer (libxt_statistic), printed to 11 places.
        unit = `--probability ${Math.round(Number(args[0]) * 0x80000000)}`;
        break;
      case '-j':
        reject = args[0] === 'REJECT';
        break;
      case '--reject-with':
        rejectWith = true;
        break;
    }
    if (unit !== undefined) units.push(neg ? `! ${unit}` : unit);
  }
  if (reject && !rejectWith) units.push(`--reject-with ${family === 6 ? 'icmp6-port-unreachable' : 'icmp-port-unreachable'}`);
  return units.sort().join(' ');
}

/** The rules of `iptables -S CHAIN` output (`-A CHAIN …` lines), as restore arguments. */
export function listedRules(chain: string, listing: string): string[] {
  const prefix = `-A ${chain} `;
  const out: string[] = [];
  for (const line of listing.split('\n')) if (line.startsWith(prefix)) out.push(line.slice(prefix.length));
  return out;
}

/** The service port a rule's comment names (`ns/name:port …`), if it names one of `byName`'s. */
function byComment(rules: readonly string[] | undefined, byName: ReadonlyMap<string, string>): string | undefined {
  for (const rule of rules ?? []) {
    const m = /--comment (?:"([^"]*)"|(\S+))/.exec(rule);
    const first = (m?.[1] ?? m?.[2])?.split(' ')[0];
    const key = first === undefined ? undefined : byName.get(first);
    if (key) return key;
  }
  return undefined;
}

/**
 * The differences between `want` and what `kernel` shows of kproxy's chains and jumps. Costs what
 * was read: the chains in `kernel.rules` are compared rule by rule, and only when every chain name
 * is known are all of `want`'s chains walked (for missing and extra ones); who owns a difference
 * is worked out only when there is one.
 * @returns items in table, then chain order; empty when they agree (as far as `kernel` was read)
 */
export function compareIptables(want: IptablesRuleset, kernel: IptablesKernelView, family: IPFamily): DriftItem[] {
  const items: DriftItem[] = [];
  const touched = kernel.touched ?? new Set<string>();
  // Per-service chains by name, with their owner (built when first needed: 10^5 chains at 10k Services).
  let index: Map<string, { readonly rules: () => readonly string[]; readonly owner: string }> | undefined;
  const serviceChains = () => {
    if (index) return index;
    index = new Map();
    for (const [key, part] of want.services) for (const c of part.chains) index.set(c.name, { rules: () => c.rules, owner: key });
    return index;
  };
  // Service ports by the name their comments start with, and owners of shared rules (built on the first difference).
  let byName: Map<string, string> | undefined;
  const servicePortsByName = () => (byName ??= new Map([...want.services.keys()].map((key) => [key.slice(0, key.lastIndexOf(' ')), key])));
  let shared: Map<string, string> | undefined;
  const ownerOf = (table: TableName, chain: string, canonical: string, shown: string): string | undefined => {
    const fromChain = table === 'nat' && !want.fixed.nat.has(chain) ? serviceChains().get(chain)?.owner : undefined;
    if (fromChain) return fromChain;
    if (!shared) {
      shared = new Map();
      for (const [key, part] of want.services) for (const r of part.shared) shared.set(`${r.table} ${r.chain} ${canonicalRule(r.rule, family)}`, key);
    }
    return shared.get(`${table} ${chain} ${canonical}`) ?? byComment([shown], servicePortsByName());
  };
  const wantedRules = (table: TableName, name: string): readonly string[] | undefined =>
    want.fixed[table].get(name) ?? (table === 'nat' && isOwnedChain(table, name) ? serviceChains().get(name)?.rules() : undefined);

  for (const table of TABLES) {
    const read = kernel.rules[table];
    const names = kernel.names?.[table];
    const reported = new Set<string>();
    for (const [name, listed] of read) {
      if (!isOwnedChain(table, name) || touched.has(`${table} ${name}`)) continue;
      const rules = wantedRules(table, name);
      reported.add(name);
      if (rules === undefined) {
        if (listed !== undefined) items.push({ servicePort: ownerOfExtraChain(listed), change: 'extra', object: 'chain', table, name });
        continue;
      }
      if (listed === undefined) {
        items.push({ servicePort: want.fixed[table].has(name) ? undefined : serviceChains().get(name)?.owner, change: 'missing', object: 'chain', table, name });
        continue;
      }
      // Compared canonical; reported as written (wanted rules) or as iptables prints them (extra ones).
      const shown = new Map<string, string>();
      const canon = (list: readonly string[]) =>
        list.map((r) => {
          const c = canonicalRule(r, family);
          if (!shown.has(c)) shown.set(c, r);
          return c;
        });
      const d = diffLists(canon(rules), canon(listed));
      for (const r of d.missing) items.push({ servicePort: ownerOf(table, name, r, shown.get(r)!), change: 'missing', object: 'rule', table, name, detail: shown.get(r)! });
      for (const r of d.extra) items.push({ servicePort: ownerOf(table, name, r, shown.get(r)!), change: 'extra', object: 'rule', table, name, detail: shown.get(r)! });
      if (d.reordered)
        items.push({ servicePort: want.fixed[table].has(name) ? undefined : serviceChains().get(name)?.owner, change: 'changed', object: 'chain', table, name, detail: 'rules in another order' });
    }
    if (names) {
      const missing = (name: string, owner: string | undefined) => {
        if (!names.has(name) && !reported.has(name) && !touched.has(`${table} ${name}`)) items.push({ servicePort: owner, change: 'missing', object: 'chain', table, name });
      };
      for (const name of want.fixed[table].keys()) missing(name, undefined);
      if (table === 'nat') for (const [name, c] of serviceChains()) missing(name, c.owner);
      for (const name of names) {
        if (reported.has(name) || !isOwnedChain(table, name) || touched.has(`${table} ${name}`) || wantedRules(table, name) !== undefined) continue;
        items.push({ servicePort: ownerOfExtraChain(read.get(name)), change: 'extra', object: 'chain', table, name });
      }
    }
    for (const j of want.jumps) {
      if (j.table !== table || !read.has(j.from) || touched.has(`${table} ${j.from}`)) continue;
      const spec = canonicalRule(j.spec, family);
      if (!(read.get(j.from) ?? []).some((r) => canonicalRule(r, family) === spec)) items.push({ servicePort: undefined, change: 'missing', object: 'jump', table, name: j.from, detail: j.spec });
    }
  }
  return items;

  /** A stale chain's Service, from the comments of its rules when they were read. */
  function ownerOfExtraChain(rules: readonly string[] | undefined): string | undefined {
    return rules && rules.length > 0 ? byComment(rules, servicePortsByName()) : undefined;
  }
}
