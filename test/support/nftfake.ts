/**
 * An in-memory nftables table that applies kproxy's JSON commands with the kernel's rules, and
 * stricter ones where a stricter check catches a writer bug (as knftables' Fake does for
 * upstream): a batch is atomic; flush/delete of something absent fails; a chain with rules, or
 * still the target of a rule or map element, cannot be deleted; a set still used by a rule cannot
 * be deleted; rules and elements may only jump to existing chains and use existing sets; an element
 * key may not be added twice or deleted when absent.
 */
import type { JsonElement, NftCommand, NftVerdict } from '../../src/backends/nftables/json.ts';
import { keyText } from '../../src/backends/nftables/json.ts';

interface FakeSet {
  spec: string;
  elements: Map<string, string>;
}

interface FakeTable {
  chains: Map<string, string[]>;
  sets: Map<string, FakeSet>;
}

/** The table's content, comparable with `toEqual`. */
export interface FakeDump {
  readonly chains: Record<string, readonly string[]>;
  readonly sets: Record<string, { readonly spec: string; readonly elements: Record<string, string> }>;
}

export class FakeNft {
  #table: FakeTable | undefined;

  /** Applies a batch atomically. @throws Error naming the first command the kernel would refuse */
  apply(commands: readonly NftCommand[]): void {
    let t = this.#table && clone(this.#table);
    commands.forEach((cmd, i) => {
      const fail = (why: string): never => {
        throw new Error(`command ${i + 1} (${JSON.stringify(cmd).slice(0, 200)}): ${why}`);
      };
      const [verb, obj] = Object.entries(cmd)[0] as ['add' | 'flush' | 'delete', Record<string, Record<string, unknown>>];
      const [kind, body] = Object.entries(obj)[0]!;
      if (kind === 'table') {
        if (verb === 'add') t ??= { chains: new Map(), sets: new Map() };
        else if (verb === 'delete') t = t ? undefined : fail('no such table');
        return;
      }
      if (!t) return fail('no such table');
      const table = t;
      const name = String(body.name ?? body.chain);
      if (kind === 'chain') {
        if (verb === 'add') table.chains.set(name, table.chains.get(name) ?? []);
        else if (!table.chains.has(name)) fail(`no such chain ${name}`);
        else if (verb === 'flush') table.chains.set(name, []);
        else {
          if (table.chains.get(name)!.length > 0) fail(`chain ${name} is not empty`);
          if (references(table).has(name)) fail(`chain ${name} is still referenced`);
          table.chains.delete(name);
        }
        return;
      }
      if (kind === 'rule') {
        const rules = table.chains.get(name) ?? fail(`no such chain ${name}`);
        const text = JSON.stringify(body.expr) + (body.comment === undefined ? '' : `#${JSON.stringify(body.comment)}`);
        for (const target of targets(text)) if (!table.chains.has(target)) fail(`rule jumps to missing chain ${target}`);
        for (const set of text.matchAll(/"@([^"]+)"/g)) if (!table.sets.has(set[1]!)) fail(`rule uses missing set ${set[1]}`);
        rules.push(text);
        return;
      }
      if (kind === 'set' || kind === 'map') {
        const { family: _f, table: _t, ...spec } = body;
        if (verb === 'add') {
          const existing = table.sets.get(name);
          if (existing && existing.spec !== JSON.stringify(spec)) fail(`set ${name} exists with another definition`);
          table.sets.set(name, existing ?? { spec: JSON.stringify(spec), elements: new Map() });
        } else if (!table.sets.has(name)) fail(`no such set ${name}`);
        else if (verb === 'flush') table.sets.get(name)!.elements.clear();
        else {
          for (const rules of table.chains.values()) if (rules.some((r) => r.includes(`"@${name}"`))) fail(`set ${name} is in use`);
          table.sets.delete(name);
        }
        return;
      }
      // element
      const set = table.sets.get(name) ?? fail(`no such set ${name}`);
      for (const e of body.elem as JsonElement[]) {
        const [keyPart, value] = Array.isArray(e) ? (e as [JsonElement, NftVerdict]) : [e, undefined];
        const key = typeof keyPart === 'object' && keyPart !== null && 'elem' in keyPart ? keyPart.elem.val : (keyPart as Parameters<typeof keyText>[0]);
        const k = keyText(key);
        if (verb === 'add') {
          if (set.elements.has(k)) fail(`element ${k} exists in ${name}`);
          const v = JSON.stringify([keyPart, value ?? null]);
          for (const target of targets(v)) if (!table.chains.has(target)) fail(`element points at missing chain ${target}`);
          set.elements.set(k, v);
        } else if (!set.elements.delete(k)) fail(`no element ${k} in ${name}`);
      }
    });
    this.#table = t;
  }

  /** The table, or undefined when it does not exist. */
  dump(): FakeDump | undefined {
    const t = this.#table;
    if (!t) return undefined;
    const sorted = <V>(m: Map<string, V>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return {
      chains: Object.fromEntries(sorted(t.chains)),
      sets: Object.fromEntries(sorted(t.sets).map(([n, s]) => [n, { spec: s.spec, elements: Object.fromEntries(sorted(s.elements)) }])),
    };
  }
}

function clone(t: FakeTable): FakeTable {
  return {
    chains: new Map([...t.chains].map(([k, v]) => [k, [...v]])),
    sets: new Map([...t.sets].map(([k, s]) => [k, { spec: s.spec, elements: new Map(s.elements) }])),
  };
}

function targets(json: string): string[] {
  return [...json.matchAll(/"(?:jump|goto)":\{"target":"([^"]+)"\}/g)].map((m) => m[1]!);
}

function references(t: FakeTable): Set<string> {
  const out = new Set<string>();
  for (const rules of t.chains.values()) for (const r of rules) for (const x of targets(r)) out.add(x);
  for (const s of t.sets.values()) for (const v of s.elements.values()) for (const x of targets(v)) out.add(x);
  return out;
}
