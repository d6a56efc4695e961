/**
 * Compares `nft -j list table <family> kube-proxy` with an {@link NftRuleset}: chains (and base
 * chains' hooks), rules, sets and maps, and their elements, as {@link DriftItem}s per service
 * port. Shared by `kproxy verify` and the writer's periodic check.
 *
 * nft lists a rule as JSON close to what kproxy sends; both sides are reduced to {@link canonicalJson}
 * (sorted keys, without the listing's handles and nft's defaults such as `numgen … offset 0`).
 * Elements of sets with timeouts (ClientIP affinity) are filled by traffic and not compared.
 * @module
 */
import { diffLists, type DriftItem } from '../drift.ts';
import { keyText, type NftElement, type NftKey, type NftStatement } from './json.ts';
import { statementText } from './text.ts';
import { servicePortOfName } from './names.ts';
import type { NftRuleset } from './render.ts';

/**
 * JSON text with object keys sorted and nft's defaults made implicit, as kproxy writes them: no
 * `numgen … offset 0`, `reject` without the family's default ICMP port-unreachable, a full-length
 * prefix as a plain address.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const o = v as Record<string, unknown>;
    if (key === 'reject' && o.expr === 'port-unreachable' && (o.type === 'icmp' || o.type === 'icmpv6')) return null;
    const p = o.prefix as { addr?: unknown; len?: unknown } | undefined;
    if (p && typeof p.addr === 'string' && Object.keys(o).length === 1 && p.len === (p.addr.includes(':') ? 128 : 32)) return p.addr;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o).sort()) {
      if (k === 'offset' && o[k] === 0 && 'mode' in o && 'mod' in o) continue;
      out[k] = o[k];
    }
    return out;
  });
}

/** A rule as compared: its statements and comment. */
function ruleText(expr: unknown, comment: unknown): string {
  return canonicalJson(comment === undefined ? { expr } : { expr, comment });
}

/** An element as compared: its key, and its verdict for a map (comments are not compared). */
function elementText(key: unknown, value: unknown): string {
  return value === undefined ? canonicalJson(key) : `${canonicalJson(key)} : ${canonicalJson(value)}`;
}

/** What `nft -j list table` shows of one set or map element (`key`, `[key, value]`, keys possibly wrapped in `elem` with a comment). */
function listedElement(e: unknown): string {
  const unwrap = (k: unknown): unknown => (k !== null && typeof k === 'object' && 'elem' in k ? (k as { elem: { val: unknown } }).elem.val : k);
  return Array.isArray(e) && e.length === 2 ? elementText(unwrap(e[0]), e[1]) : elementText(unwrap(e), undefined);
}

const wantedElement = (e: NftElement) => elementText(e.key, e.value);

/** A compared rule or element in nft's text syntax, for a person (the JSON when it cannot be printed). */
function shown(canonical: string): string {
  try {
    const colon = canonical.indexOf(' : ');
    if (colon >= 0 || !canonical.includes('"expr":')) {
      const key = keyText(JSON.parse(colon < 0 ? canonical : canonical.slice(0, colon)) as NftKey);
      return colon < 0 ? key : `${key} : ${statementText(JSON.parse(canonical.slice(colon + 3)) as NftStatement)}`;
    }
    const r = JSON.parse(canonical) as { expr: NftStatement[]; comment?: string };
    return `${r.expr.map(statementText).join(' ')}${r.comment === undefined ? '' : ` comment "${r.comment}"`}`;
  } catch {
    return canonical;
  }
}

/** The listing by chain and set, its rules and elements as parsed (made canonical one chain or set at a time, so that 10^5 canonical texts never live at once). */
interface Listed {
  readonly chains: Map<string, { hook: string | undefined; rules: { expr: unknown; comment: unknown }[] }>;
  readonly sets: Map<string, { timeout: boolean; elements: unknown[] }>;
}

function parseListing(listing: string): Listed {
  const chains: Listed['chains'] = new Map();
  const sets: Listed['sets'] = new Map();
  type Item = Record<string, Record<string, unknown> | undefined>;
  for (const item of (JSON.parse(listing) as { nftables: Item[] }).nftables) {
    const chain = item.chain;
    if (chain && typeof chain.name === 'string') {
      chains.set(chain.name, { hook: chain.hook === undefined ? undefined : canonicalJson({ type: chain.type, hook: chain.hook, prio: chain.prio }), rules: chains.get(chain.name)?.rules ?? [] });
    }
    const rule = item.rule;
    if (rule && typeof rule.chain === 'string') {
      let c = chains.get(rule.chain);
      if (!c) chains.set(rule.chain, (c = { hook: undefined, rules: [] }));
      c.rules.push({ expr: rule.expr, comment: rule.comment });
    }
    const set = item.set ?? item.map;
    if (set && typeof set.name === 'string') {
      sets.set(set.name, { timeout: set.timeout !== undefined, elements: Array.isArray(set.elem) ? (set.elem as unknown[]) : [] });
    }
  }
  return { chains, sets };
}

/**
 * The differences between `want` and the listing of kproxy's table in its family.
 * @param listing `nft -j list table …` output, or undefined when the table does not exist
 * @param deferred chains kproxy no longer wants but has not deleted yet (they wait for the next write)
 * @param touched `chain NAME` / `set NAME` written while the listing was read: left out
 */
export function compareNft(want: NftRuleset, listing: string | undefined, deferred: readonly string[] = [], touched: ReadonlySet<string> = new Set()): DriftItem[] {
  const table = `${want.family} ${want.table}`;
  if (listing === undefined) return [{ servicePort: undefined, change: 'missing', object: 'table', table, name: want.table }];
  const kernel = parseListing(listing);
  const items: DriftItem[] = [];
  const chainOwner = new Map<string, string>();
  const setOwner = new Map<string, string>();
  const elementOwner = new Map<string, string>();
  for (const [key, part] of want.services) {
    for (const c of part.chains) chainOwner.set(c.name, key);
    for (const s of part.sets) setOwner.set(s.name, key);
    for (const [set, e] of part.elements) elementOwner.set(`${set} ${wantedElement(e)}`, key);
  }
  const wantedChains = new Set<string>();
  for (const c of want.chains) {
    wantedChains.add(c.name);
    if (touched.has(`chain ${c.name}`)) continue;
    const owner = chainOwner.get(c.name);
    const have = kernel.chains.get(c.name);
    if (!have) {
      items.push({ servicePort: owner, change: 'missing', object: 'chain', table, name: c.name });
      continue;
    }
    if (c.hook && have.hook !== canonicalJson({ type: c.hook.type, hook: c.hook.hook, prio: c.hook.prio })) {
      items.push({ servicePort: owner, change: 'changed', object: 'chain', table, name: c.name, detail: `hook ${have.hook ?? 'none'}, wanted ${c.hook.type} ${c.hook.hook} priority ${c.hook.prio}` });
    }
    const d = diffLists(
      c.rules.map((r) => ruleText(r.expr, r.comment)),
      have.rules.map((r) => ruleText(r.expr, r.comment)),
    );
    for (const r of d.missing) items.push({ servicePort: owner, change: 'missing', object: 'rule', table, name: c.name, detail: shown(r) });
    for (const r of d.extra) items.push({ servicePort: owner, change: 'extra', object: 'rule', table, name: c.name, detail: shown(r) });
    if (d.reordered) items.push({ servicePort: owner, change: 'changed', object: 'chain', table, name: c.name, detail: 'rules in another order' });
  }
  for (const name of deferred) wantedChains.add(name);
  for (const [name] of kernel.chains) {
    if (!wantedChains.has(name) && !touched.has(`chain ${name}`)) items.push({ servicePort: servicePortOfName(name), change: 'extra', object: 'chain', table, name });
  }
  const wantedSets = new Set<string>();
  for (const s of want.sets) {
    wantedSets.add(s.name);
    if (touched.has(`set ${s.name}`)) continue;
    const have = kernel.sets.get(s.name);
    if (!have) {
      items.push({ servicePort: setOwner.get(s.name), change: 'missing', object: 'set', table, name: s.name });
      continue;
    }
    if (s.timeout !== undefined) continue;
    const d = diffLists((want.elements.get(s.name) ?? []).map(wantedElement), have.elements.map(listedElement));
    const owner = (e: string) => elementOwner.get(`${s.name} ${e}`) ?? servicePortOfName(/"(?:goto|jump)": ?\{"target": ?"([^"]+)"/.exec(e)?.[1] ?? '');
    for (const e of d.missing) items.push({ servicePort: owner(e), change: 'missing', object: 'element', table, name: s.name, detail: shown(e) });
    for (const e of d.extra) items.push({ servicePort: owner(e), change: 'extra', object: 'element', table, name: s.name, detail: shown(e) });
  }
  for (const [name] of kernel.sets) {
    if (!wantedSets.has(name) && !touched.has(`set ${name}`)) items.push({ servicePort: servicePortOfName(name), change: 'extra', object: 'set', table, name });
  }
  return items;
}
