/**
 * The part of the libnftables JSON schema (libnftables-json(5), `nft -j`) that kproxy writes, as
 * TypeScript types, with small constructors. Batches are built as these objects and serialised
 * with `JSON.stringify`, never by string concatenation; the same objects print as nft's text syntax
 * ({@link ./text.ts}) for dry-run.
 *
 * Every form here was checked against nft 1.0.6 (Debian 12): JSON set types are plain names (no
 * `typeof`, which needs nft ≥ 1.1.2), set flags are `timeout`/`interval` only (nft adds `dynamic`
 * itself for a set updated from the packet path), and `destroy` does not exist yet.
 * @module
 */

/** nft address families of the Service tables and of packet matches: `ip` (IPv4) and `ip6`. */
export type NftFamily = 'ip' | 'ip6';

/** Families of the tables kproxy writes: the Service tables' ({@link NftFamily}), and `inet` (both: the NetworkPolicy table). */
export type NftTableFamily = NftFamily | 'inet';

/** A packet or metadata value read by a match. */
export type NftSelector =
  | { readonly payload: { readonly protocol: 'ip' | 'ip6' | 'tcp' | 'udp' | 'sctp' | 'th'; readonly field: 'saddr' | 'daddr' | 'sport' | 'dport' } }
  | { readonly meta: { readonly key: 'l4proto' | 'mark' | 'iifname' } }
  | { readonly ct: { readonly key: 'state' } }
  | { readonly fib: { readonly result: 'type'; readonly flags: readonly ['saddr' | 'daddr'] } }
  | { readonly numgen: { readonly mode: 'random'; readonly mod: number } }
  | { readonly '&': readonly [NftSelector, number] }
  | { readonly concat: readonly NftSelector[] };

/**
 * A constant: address, protocol or keyword (string), number, prefix, inclusive port range, a list of
 * flags (`ct state established,related`), or `@set` reference (string).
 */
export type NftValue = string | number | { readonly prefix: { readonly addr: string; readonly len: number } } | { readonly range: readonly [number, number] } | readonly string[];

/** A verdict, as a statement or as the value of a verdict-map element. */
export type NftVerdict =
  { readonly accept: null } | { readonly drop: null } | { readonly return: null } | { readonly jump: { readonly target: string } } | { readonly goto: { readonly target: string } };

/** One statement of a rule. */
export type NftStatement =
  | NftVerdict
  | { readonly match: { readonly op: '==' | '!=' | 'in'; readonly left: NftSelector; readonly right: NftValue } }
  | {
      readonly mangle: {
        readonly key: { readonly meta: { readonly key: 'mark' } };
        readonly value: { readonly '|': readonly [{ readonly meta: { readonly key: 'mark' } }, number] } | { readonly '^': readonly [{ readonly meta: { readonly key: 'mark' } }, number] };
      };
    }
  | { readonly vmap: { readonly key: NftSelector; readonly data: string } }
  | { readonly set: { readonly op: 'update'; readonly elem: NftSelector; readonly set: string } }
  | { readonly dnat: { readonly addr: string; readonly port: number } }
  | { readonly masquerade: { readonly flags: 'fully-random' } }
  | { readonly reject: null };

/** A rule as kproxy renders it (without table and chain, which the batch adds). */
export interface NftRule {
  readonly expr: readonly NftStatement[];
  readonly comment?: string;
}

/** Hook of a base chain. */
export interface NftHook {
  readonly type: 'filter' | 'nat';
  readonly hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  readonly prio: number;
}

/** Element key: one value, or a concatenation. */
export type NftKey = string | number | { readonly concat: readonly (string | number)[] };

/** A set or map element: `key` alone for sets, `key : value` for verdict maps. */
export interface NftElement {
  readonly key: NftKey;
  readonly value?: NftVerdict;
  readonly comment?: string;
}

/** A named set or verdict map. */
export interface NftSetSpec {
  readonly name: string;
  /** A data type name, or the list of a concatenation's types. */
  readonly type: string | readonly string[];
  /** Verdict maps only. */
  readonly map?: 'verdict';
  readonly flags?: readonly ('timeout' | 'interval')[];
  /** Default element timeout, in seconds. */
  readonly timeout?: number;
}

/** A set or map by name; `add` also carries its {@link NftSetSpec}. */
export interface NftSetRef {
  readonly family: NftTableFamily;
  readonly table: string;
  readonly name: string;
}

/** An object of a command, in its JSON form. */
export type NftObject =
  | { readonly table: { readonly family: NftTableFamily; readonly name: string } }
  | { readonly chain: { readonly family: NftTableFamily; readonly table: string; readonly name: string } & Partial<NftHook & { readonly policy: 'accept' }> }
  | { readonly rule: { readonly family: NftTableFamily; readonly table: string; readonly chain: string; readonly expr: readonly NftStatement[]; readonly comment?: string } }
  | { readonly set: NftSetRef & Partial<Omit<NftSetSpec, 'map' | 'name'>> }
  | { readonly map: NftSetRef & Partial<NftSetSpec> }
  | { readonly element: { readonly family: NftTableFamily; readonly table: string; readonly name: string; readonly elem: readonly JsonElement[] } };

/** An element as JSON: key, `[key, verdict]`, or with an `elem` wrapper carrying a comment. */
export type JsonElement =
  NftKey | { readonly elem: { readonly val: NftKey; readonly comment: string } } | readonly [NftKey | { readonly elem: { readonly val: NftKey; readonly comment: string } }, NftVerdict];

/** One command of a batch. */
export type NftCommand = { readonly add: NftObject } | { readonly flush: NftObject } | { readonly delete: NftObject };

/** The document `nft -j -f` reads: a metainfo object, then commands applied in order, atomically. */
export interface NftBatch {
  readonly nftables: readonly ({ readonly metainfo: { readonly json_schema_version: 1 } } | NftCommand)[];
}

/** Wraps commands into the document `nft -j -f` reads. */
export function toBatch(commands: readonly NftCommand[]): NftBatch {
  return { nftables: [{ metainfo: { json_schema_version: 1 } }, ...commands] };
}

// Constructors for the statements kproxy uses; they keep render.ts readable. Selectors are shared
// (one object per distinct selector, never mutated): a 10k-Service table holds ~10^5 rules, and a
// rule built of shared parts costs a few objects instead of a dozen.

const selectors = new Map<string, NftSelector>();
const shared = (key: string, make: () => NftSelector): NftSelector => {
  let s = selectors.get(key);
  if (s === undefined) selectors.set(key, (s = make()));
  return s;
};
export const payload = (protocol: 'ip' | 'ip6' | 'tcp' | 'udp' | 'sctp' | 'th', field: 'saddr' | 'daddr' | 'sport' | 'dport'): NftSelector =>
  shared(`payload ${protocol} ${field}`, () => ({ payload: { protocol, field } }));
export const meta = (key: 'l4proto' | 'mark' | 'iifname'): NftSelector => shared(`meta ${key}`, () => ({ meta: { key } }));
export const fibType = (of: 'saddr' | 'daddr'): NftSelector => shared(`fib ${of}`, () => ({ fib: { result: 'type', flags: [of] } }));
export const eq = (left: NftSelector, right: NftValue): NftStatement => ({ match: { op: '==', left, right } });
export const ne = (left: NftSelector, right: NftValue): NftStatement => ({ match: { op: '!=', left, right } });
export const jump = (target: string): NftVerdict => ({ jump: { target } });
export const goto = (target: string): NftVerdict => ({ goto: { target } });
export const DROP: NftVerdict = { drop: null };
export const RETURN: NftVerdict = { return: null };

/** `a.b.c.d/len` (or IPv6) as a prefix value; a bare address stays a string. */
export function prefix(cidr: string): NftValue {
  const slash = cidr.indexOf('/');
  if (slash < 0) return cidr;
  return { prefix: { addr: cidr.slice(0, slash), len: Number(cidr.slice(slash + 1)) } };
}

/** Canonical text of an element key, for diffing (`10.96.0.1 . tcp . 80`). */
export function keyText(key: NftKey): string {
  return typeof key === 'object' ? key.concat.join(' . ') : String(key);
}
