/**
 * Drift: how the rules in the kernel differ from what kproxy wants, as data, per Service. Both
 * backends compare the kernel with a ruleset into a list of {@link DriftItem}s (iptables/drift.ts,
 * nftables/drift.ts); `kproxy verify` prints them, and `run`'s periodic check logs them when it
 * repairs something. Only what kproxy owns is compared: foreign chains, rules and tables are never
 * drift.
 * @module
 */

/** One difference between the kernel and the wanted ruleset. */
export interface DriftItem {
  /** The service port it belongs to (`namespace/name:port PROTOCOL`); undefined for kproxy's shared structure (fixed chains, jumps, tables). */
  readonly servicePort: string | undefined;
  /** missing: wanted, not in the kernel; extra: in the kernel, not wanted; changed: both, different. */
  readonly change: 'missing' | 'extra' | 'changed';
  readonly object: 'table' | 'chain' | 'rule' | 'jump' | 'set' | 'element';
  /** iptables: `filter` or `nat`; nftables: `ip kube-proxy` or `ip6 kube-proxy`. */
  readonly table: string;
  /** The chain, set or map (for a jump: the built-in chain it is in). */
  readonly name: string;
  /** The rule or element (iptables: restore arguments; nftables: canonical JSON), or what changed. */
  readonly detail?: string;
}

/** Items grouped by service port (kproxy's own first, then by name), each group in input order. */
export function groupDrift(items: readonly DriftItem[]): [string | undefined, DriftItem[]][] {
  const groups = new Map<string | undefined, DriftItem[]>();
  for (const item of items) {
    const list = groups.get(item.servicePort);
    if (list) list.push(item);
    else groups.set(item.servicePort, [item]);
  }
  return [...groups].sort(([a], [b]) => (a === b ? 0 : a === undefined ? -1 : b === undefined ? 1 : a < b ? -1 : 1));
}

/** One line per item, for a log line or a summary: `missing rule nat KUBE-SVC-X: -m comment …`. */
export function driftLine(item: DriftItem): string {
  return `${item.change} ${item.object} ${item.table} ${item.name}${item.detail === undefined ? '' : `: ${item.detail}`}`;
}

/**
 * A short summary: how many differences, over how many service ports, and the first few.
 * @param max how many items to spell out
 */
export function summarizeDrift(items: readonly DriftItem[], max = 3): string {
  const services = new Set(items.map((i) => i.servicePort).filter((s) => s !== undefined));
  const head = items.slice(0, max).map((i) => `${i.servicePort ?? 'kproxy'}: ${driftLine(i)}`);
  const more = items.length > max ? `; … ${items.length - max} more` : '';
  return `${items.length} difference(s)${services.size > 0 ? ` in ${services.size} service port(s)` : ''}: ${head.join('; ')}${more}`;
}

/** The first `max` items as plain objects for a structured log line, grouped by service port. */
export function driftForLog(items: readonly DriftItem[], max = 20): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const item of items.slice(0, max)) (out[item.servicePort ?? 'kproxy'] ??= []).push(driftLine(item));
  return out;
}

/**
 * Multiset difference of two rule lists, in order of appearance: what `want` has that `have` lacks,
 * and the reverse. Equal multisets in another order come back as `reordered`.
 */
export function diffLists(want: readonly string[], have: readonly string[]): { missing: string[]; extra: string[]; reordered: boolean } {
  const missing = minus(want, have);
  const extra = minus(have, want);
  const reordered = missing.length === 0 && extra.length === 0 && want.some((r, i) => have[i] !== r);
  return { missing, extra, reordered };
}

/** The items of `a` that `b` does not match one for one, in `a`'s order. */
function minus(a: readonly string[], b: readonly string[]): string[] {
  const count = new Map<string, number>();
  for (const x of b) count.set(x, (count.get(x) ?? 0) + 1);
  const out: string[] = [];
  for (const x of a) {
    const n = count.get(x) ?? 0;
    if (n > 0) count.set(x, n - 1);
    else out.push(x);
  }
  return out;
}
