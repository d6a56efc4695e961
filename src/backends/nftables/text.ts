/**
 * nft's text syntax for the commands kproxy sends as JSON: what `dry-run` prints by default, and how
 * a failed command is named in an error. `nft -f` of the text and `nft -j -f` of the JSON give the
 * same table (test/e2e checks this on a real kernel).
 * @module
 */
import { keyText, toBatch, type JsonElement, type NftCommand, type NftKey, type NftObject, type NftSelector, type NftStatement, type NftValue, type NftVerdict } from './json.ts';

/** Prints a batch of commands, one line each. */
export function batchText(commands: readonly NftCommand[]): string {
  return commands.map(commandText).join('\n') + (commands.length > 0 ? '\n' : '');
}

/** Prints one command. */
export function commandText(command: NftCommand): string {
  const [verb, object] = Object.entries(command)[0] as [string, NftObject];
  return `${verb} ${objectText(object, verb === 'add')}`;
}

function objectText(o: NftObject, add: boolean): string {
  if ('table' in o) return `table ${o.table.family} ${o.table.name}`;
  if ('chain' in o) {
    const c = o.chain;
    const hook = add && c.hook ? ` { type ${c.type} hook ${c.hook} priority ${c.prio} ; policy ${c.policy ?? 'accept'} ; }` : '';
    return `chain ${c.family} ${c.table} ${c.name}${hook}`;
  }
  if ('rule' in o) {
    const r = o.rule;
    const comment = r.comment === undefined ? '' : ` comment "${r.comment}"`;
    return `rule ${r.family} ${r.table} ${r.chain} ${r.expr.map(statementText).join(' ')}${comment}`;
  }
  if ('set' in o || 'map' in o) {
    const s = 'set' in o ? o.set : o.map;
    const kind = 'set' in o ? 'set' : 'map';
    if (!add || s.type === undefined) return `${kind} ${s.family} ${s.table} ${s.name}`;
    const type = typeof s.type === 'string' ? s.type : s.type.join(' . ');
    const parts = [`type ${type}${'map' in o ? ` : ${o.map.map}` : ''}`];
    if (s.flags?.length) parts.push(`flags ${s.flags.join(',')}`);
    if (s.timeout !== undefined) parts.push(`timeout ${s.timeout}s`);
    return `${kind} ${s.family} ${s.table} ${s.name} { ${parts.join(' ; ')} ; }`;
  }
  const e = o.element;
  return `element ${e.family} ${e.table} ${e.name} { ${e.elem.map(elementText).join(', ')} }`;
}

function elementText(e: JsonElement): string {
  if (Array.isArray(e)) return `${elementText(e[0] as JsonElement)} : ${verdictText(e[1] as NftVerdict)}`;
  if (typeof e === 'object' && 'elem' in e) return `${keyText(e.elem.val)} comment "${e.elem.comment}"`;
  return keyText(e as NftKey);
}

function verdictText(v: NftVerdict): string {
  if ('jump' in v) return `jump ${v.jump.target}`;
  if ('goto' in v) return `goto ${v.goto.target}`;
  return Object.keys(v)[0]!;
}

function selectorText(s: NftSelector): string {
  if ('payload' in s) return `${s.payload.protocol} ${s.payload.field}`;
  if ('meta' in s) return `meta ${s.meta.key}`;
  if ('ct' in s) return `ct ${s.ct.key}`;
  if ('fib' in s) return `fib ${s.fib.flags.join(' . ')} ${s.fib.result}`;
  if ('numgen' in s) return `numgen ${s.numgen.mode} mod ${s.numgen.mod}`;
  if ('&' in s) return `${selectorText(s['&'][0])} & ${hex(s['&'][1])}`;
  return s.concat.map(selectorText).join(' . ');
}

function valueText(v: NftValue): string {
  if (typeof v !== 'object') return String(v);
  if ('range' in v) return `${v.range[0]}-${v.range[1]}`;
  if ('prefix' in v) return `${v.prefix.addr}/${v.prefix.len}`;
  return v.join(',');
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/** Prints one statement. */
export function statementText(s: NftStatement): string {
  if ('match' in s) {
    const { op, left, right } = s.match;
    // A bitwise selector needs the explicit operator, as nft prints it; otherwise `==` is implicit.
    // An interface name is a string to nft (`"veth*"` a wildcard); the validators keep quotes out of it.
    const value = '&' in left && typeof right === 'number' ? hex(right) : 'meta' in left && left.meta.key === 'iifname' ? JSON.stringify(right) : valueText(right);
    return op === '!=' ? `${selectorText(left)} != ${value}` : '&' in left ? `${selectorText(left)} == ${value}` : `${selectorText(left)} ${value}`;
  }
  if ('mangle' in s) {
    const v = s.mangle.value;
    const [op, [, n]] = '|' in v ? ['|', v['|']] : ['^', v['^']];
    return `meta mark set meta mark ${op} ${hex(n)}`;
  }
  if ('vmap' in s) return `${selectorText(s.vmap.key)} vmap ${s.vmap.data}`;
  if ('set' in s) return `update ${s.set.set} { ${selectorText(s.set.elem)} }`;
  if ('dnat' in s) return `dnat to ${s.dnat.addr.includes(':') ? `[${s.dnat.addr}]` : s.dnat.addr}:${s.dnat.port}`;
  if ('masquerade' in s) return `masquerade ${s.masquerade.flags}`;
  if ('reject' in s) return 'reject';
  return verdictText(s);
}

/** How dry-run prints a batch: nft's text syntax (`nft -f`), or the JSON document `nft -j -f` reads. */
export type NftOutput = 'text' | 'json';

/** Prints a batch's commands in the chosen form; JSON exactly as the writer sends it. */
export function formatBatch(commands: readonly NftCommand[], output: NftOutput): string {
  return output === 'json' ? `${JSON.stringify(toBatch(commands))}\n` : batchText(commands);
}
