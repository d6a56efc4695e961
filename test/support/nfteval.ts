/**
 * A small evaluator of kube-proxy nftables tables (`nft -j list table`), for the nftables-mode
 * oracle: upstream v1.36 and kproxy lay their tables out differently (one `dnat … numgen map`
 * rule against a cascade of `numgen` rules, a `hairpin-connections` set against
 * `hairpin-endpoints`, masquerade marks in `services` against per-service rules, `ip saddr != {…}
 * drop` against `return` rules), so the oracle compares what the two tables do to packets, not
 * their text. A packet is walked through the base chains in hook order (filter at dstnat−10, nat
 * dstnat, filter, nat srcnat), every `numgen` branch followed with its probability; the result
 * is the packet's fates: dropped, rejected, untouched or DNATed to an endpoint, each with whether
 * it is masqueraded and whether the endpoint is sticky (ClientIP affinity: a second packet of the
 * same client, with the affinity sets the first one filled, goes to the same endpoint).
 *
 * It knows the statements both tables use, and fails loudly on any other: the evaluator must
 * never guess.
 */
import { cidrContains, parseCIDR, parseIP } from '../../src/state/ip.ts';

/* eslint-disable @typescript-eslint/no-unsafe-return -- nft's JSON is untyped (Json); the shapes used are checked where they are read. */
type Json = any;

/** One packet, as the rules see it. */
export interface Packet {
  readonly saddr: string;
  readonly daddr: string;
  readonly proto: 'tcp' | 'udp' | 'sctp';
  readonly dport: number;
  /** Input interface; '' for a packet the node sends (output path). */
  readonly iifname: string;
  /** The source is one of the node's addresses: the output path, and `fib saddr type local`. */
  readonly fromNode: boolean;
  /** Addresses of the node, for `fib daddr type local` and for input against forward. */
  readonly nodeAddresses: readonly string[];
}

/** One way a packet can go, with its probability. */
export interface Fate {
  readonly verdict: 'drop' | 'reject' | 'untouched' | 'dnat';
  /** `ip:port` for a DNAT. */
  readonly to?: string;
  readonly masquerade: boolean;
  /** ClientIP affinity: the endpoint keeps the client (seconds of the affinity set's timeout). */
  readonly sticky?: number;
  readonly p: number;
}

interface State {
  mark: number;
  dnat?: { addr: string; port: number };
  ctDnat: boolean;
  masquerade: boolean;
  /** Dynamic set contents (affinity), by name. */
  dynamic: Map<string, Set<string>>;
  updated: string[];
}

type Verdict = 'continue' | 'return' | 'accept' | 'drop' | 'reject';
interface Path {
  st: State;
  p: number;
  v: Verdict;
}

/** A listed table: rules per chain, set and map contents by name. */
export class NftTable {
  readonly rules = new Map<string, Json[][]>();
  readonly sets = new Map<string, { elem: Json[]; timeout?: number }>();
  readonly maps = new Map<string, Json[]>();

  constructor(listing: string) {
    const objects = (JSON.parse(listing) as { nftables: Json[] }).nftables;
    for (const o of objects) {
      if (o.chain) this.rules.set(o.chain.name, this.rules.get(o.chain.name) ?? []);
      if (o.rule) this.rules.set(o.rule.chain, [...(this.rules.get(o.rule.chain) ?? []), o.rule.expr]);
      // A set the data path fills (ClientIP affinity: timeout flags) starts empty: what real traffic left in it is no rule.
      const dynamic = o.set && ((o.set.flags ?? []) as string[]).some((f) => f === 'dynamic' || f === 'timeout');
      if (o.set) this.sets.set(o.set.name, { elem: dynamic ? [] : (o.set.elem ?? []), ...(o.set.timeout === undefined ? {} : { timeout: o.set.timeout }) });
      if (o.map) this.maps.set(o.map.name, o.map.elem ?? []);
    }
  }

  /** Elements of a set or keys of a map, as JS values (strings, numbers, arrays for concatenations). */
  keys(name: string): Json[] {
    return [...(this.sets.get(name)?.elem ?? []).map(unwrap), ...(this.maps.get(name) ?? []).map((e: Json[]) => unwrap(e[0]))];
  }
}

const unwrap = (v: Json): Json => (v && typeof v === 'object' && 'elem' in v ? unwrap(v.elem.val) : v && typeof v === 'object' && 'concat' in v ? v.concat : v);

const fresh = (): State => ({ mark: 0, ctDnat: false, masquerade: false, dynamic: new Map(), updated: [] });
const clone = (s: State): State => ({ ...s, dynamic: new Map([...s.dynamic].map(([k, v]) => [k, new Set(v)])), updated: [...s.updated] });

/**
 * The fates of `pkt` through `table`: prerouting (or output, for the node's own packets), then
 * filter input or forward, then postrouting; branches of equal outcome merged.
 * @throws Error on a statement or selector the evaluator does not know
 */
export function fates(table: NftTable, pkt: Packet, dynamic?: Map<string, Set<string>>): Fate[] {
  const again = dynamic !== undefined;
  const start = fresh();
  if (dynamic) start.dynamic = new Map([...dynamic].map(([k, v]) => [k, new Set(v)]));
  const pre = pkt.fromNode ? ['filter-output-pre-dnat', 'nat-output'] : ['filter-prerouting-pre-dnat', 'nat-prerouting'];
  const out: Fate[] = [];
  for (const a of run(table, pre[0]!, pkt, start, 1)) {
    if (a.v === 'drop' || a.v === 'reject') {
      out.push({ verdict: a.v, masquerade: false, p: a.p });
      continue;
    }
    for (const b of run(table, pre[1]!, pkt, a.st, a.p)) {
      if (b.v === 'drop' || b.v === 'reject') {
        out.push({ verdict: b.v, masquerade: false, p: b.p });
        continue;
      }
      const after: Packet = b.st.dnat ? { ...pkt, daddr: b.st.dnat.addr, dport: b.st.dnat.port } : pkt;
      const filter = pkt.fromNode ? 'filter-output' : pkt.nodeAddresses.includes(after.daddr) ? 'filter-input' : 'filter-forward';
      // The filter chains see the original destination for the no-endpoint and cluster-IP checks
      // only when nothing DNATed it; after DNAT they see the endpoint.
      for (const c of run(table, filter, after, { ...b.st, ctDnat: b.st.dnat !== undefined }, b.p)) {
        if (c.v === 'drop' || c.v === 'reject') {
          out.push({ verdict: c.v, masquerade: false, p: c.p });
          continue;
        }
        for (const d of run(table, 'nat-postrouting', after, c.st, c.p)) {
          const to = d.st.dnat ? `${d.st.dnat.addr.includes(':') ? `[${d.st.dnat.addr}]` : d.st.dnat.addr}:${d.st.dnat.port}` : undefined;
          out.push({ verdict: to ? 'dnat' : 'untouched', ...(to ? { to } : {}), masquerade: d.st.masquerade, p: d.p, ...(again ? {} : stickiness(table, pkt, d.st)) });
        }
      }
    }
  }
  return merge(out);
}

/** With ClientIP affinity: the endpoint a second packet of the same client reaches, with the sets the first filled. */
function stickiness(table: NftTable, pkt: Packet, st: State): { sticky?: number } {
  if (st.updated.length === 0 || !st.dnat) return {};
  const again = fates(table, pkt, st.dynamic);
  const same = again.length === 1 && again[0]!.to === `${st.dnat.addr}:${st.dnat.port}`;
  return { sticky: same ? (table.sets.get(st.updated[0]!)?.timeout ?? -1) : -1 };
}

function merge(fs: Fate[]): Fate[] {
  const by = new Map<string, Fate>();
  for (const f of fs) {
    const key = `${f.verdict} ${f.to ?? ''} ${f.masquerade} ${f.sticky ?? ''}`;
    const seen = by.get(key);
    by.set(key, seen ? { ...seen, p: seen.p + f.p } : f);
  }
  return [...by.values()].map((f) => ({ ...f, p: Math.round(f.p * 1e6) / 1e6 })).sort((a, b) => `${a.verdict}${a.to}${a.masquerade}`.localeCompare(`${b.verdict}${b.to}${b.masquerade}`));
}

function run(table: NftTable, chain: string, pkt: Packet, st: State, p: number, depth = 0): Path[] {
  if (depth > 20) throw new Error(`chains nested deeper than 20 at ${chain}`);
  const rules = table.rules.get(chain);
  if (rules === undefined) return [{ st, p, v: 'continue' }];
  const done: Path[] = [];
  let live: Path[] = [{ st, p, v: 'continue' }];
  for (const rule of rules) {
    const next: Path[] = [];
    for (const l of live)
      for (const r of rule.reduce<Path[]>(
        (paths, stmt) => paths.flatMap((x) => (x.v === 'continue' && !('skip' in x) ? statement(table, stmt, pkt, x, depth) : [x])),
        [{ st: clone(l.st), p: l.p, v: 'continue' }],
      )) {
        if ('skip' in r) next.push({ st: l.st, p: r.p, v: 'continue' });
        else if (r.v === 'continue') next.push(r);
        else done.push(r);
      }
    live = next;
  }
  // A chain's end, or `return`, hands back to the caller.
  return [...done.map((d) => (d.v === 'return' ? { ...d, v: 'continue' as const } : d)), ...live];
}

type Step = Path & { skip?: true };

/** One statement on one path: paths that go on, stop with a verdict, or `skip` the rest of the rule (a failed match). */
function statement(table: NftTable, s: Json, pkt: Packet, path: Path, depth: number): Step[] {
  const { st, p } = path;
  const go = (v: Verdict): Step[] => [{ st, p, v }];
  if ('match' in s) {
    const { op, left, right } = s.match;
    if (left.numgen) {
      const mod = left.numgen.mod as number;
      if (op !== '==' || typeof right !== 'number') throw new Error(`numgen match ${JSON.stringify(s)}`);
      return [
        { st: clone(st), p: p / mod, v: 'continue' },
        { st, p: (p * (mod - 1)) / mod, v: 'continue', skip: true },
      ];
    }
    const ok = matches(table, op, value(left, pkt, st), right, st);
    return ok ? go('continue') : [{ st, p, v: 'continue', skip: true }];
  }
  if ('vmap' in s) {
    const entries: Json[] = typeof s.vmap.data === 'string' ? (table.maps.get(s.vmap.data.slice(1)) ?? []) : s.vmap.data.set;
    if (s.vmap.key.numgen) return entries.flatMap(([, v]: Json[]) => verdictOf(table, v, pkt, { st: clone(st), p: p / s.vmap.key.numgen.mod, v: 'continue' }, depth));
    const key = value(s.vmap.key, pkt, st);
    const hit = entries.find(([k]: Json[]) => equal(unwrap(k), key));
    return hit ? verdictOf(table, hit[1], pkt, path, depth) : go('continue');
  }
  if ('mangle' in s) {
    const v = s.mangle.value;
    if ('|' in v) st.mark |= v['|'][1];
    else if ('^' in v) st.mark ^= v['^'][1];
    else throw new Error(`mangle ${JSON.stringify(s)}`);
    return go('continue');
  }
  if ('dnat' in s) {
    const addr = s.dnat.addr;
    if (typeof addr === 'string') {
      st.dnat = { addr, port: s.dnat.port };
      return go('accept');
    }
    // dnat ip to numgen random mod N map { i : ip . port }
    const set: Json[] = addr.map.data.set;
    const mod = addr.map.key.numgen.mod as number;
    return set.map(([, target]: Json[]) => {
      const c = clone(st);
      c.dnat = { addr: target.concat[0], port: target.concat[1] };
      return { st: c, p: p / mod, v: 'accept' as const };
    });
  }
  if ('set' in s) {
    if (s.set.op !== 'update' && s.set.op !== 'add') throw new Error(`set ${JSON.stringify(s)}`);
    const name = s.set.set.slice(1);
    const contents = st.dynamic.get(name) ?? new Set<string>();
    contents.add(String(value(s.set.elem, pkt, st)));
    st.dynamic.set(name, contents);
    st.updated.push(name);
    return go('continue');
  }
  if ('masquerade' in s) {
    st.masquerade = true;
    return go('accept');
  }
  if ('reject' in s) return go('reject');
  if ('counter' in s || 'comment' in s) return go('continue');
  return verdictOf(table, s, pkt, path, depth);
}

function verdictOf(table: NftTable, v: Json, pkt: Packet, path: Path, depth: number): Step[] {
  if ('accept' in v) return [{ ...path, v: 'accept' }];
  if ('drop' in v) return [{ ...path, v: 'drop' }];
  if ('return' in v) return [{ ...path, v: 'return' }];
  if ('jump' in v) return run(table, v.jump.target, pkt, path.st, path.p, depth + 1);
  if ('goto' in v) return run(table, v.goto.target, pkt, path.st, path.p, depth + 1).map((r) => (r.v === 'continue' ? { ...r, v: 'return' as const } : r));
  throw new Error(`statement or verdict not known to the evaluator: ${JSON.stringify(v)}`);
}

function value(sel: Json, pkt: Packet, st: State): Json {
  if (sel.concat) return sel.concat.map((x: Json) => value(x, pkt, st));
  if (sel.payload) {
    const { protocol, field } = sel.payload;
    if (field === 'saddr') return pkt.saddr;
    if (field === 'daddr') return pkt.daddr;
    if (field === 'dport') return protocol === 'th' || protocol === pkt.proto ? pkt.dport : undefined;
  }
  if (sel.meta) {
    if (sel.meta.key === 'l4proto') return pkt.proto;
    if (sel.meta.key === 'mark') return st.mark;
    if (sel.meta.key === 'iifname') return pkt.iifname;
  }
  if (sel['&']) return (value(sel['&'][0], pkt, st) as number) & (sel['&'][1] as number);
  if (sel.fib && sel.fib.result === 'type') return (sel.fib.flags[0] === 'saddr' ? pkt.fromNode : pkt.nodeAddresses.includes(pkt.daddr)) ? 'local' : 'unicast';
  if (sel.ct?.key === 'state') return 'new';
  if (sel.ct?.key === 'status') return st.ctDnat ? 'dnat' : '';
  throw new Error(`selector not known to the evaluator: ${JSON.stringify(sel)}`);
}

function matches(table: NftTable, op: string, left: Json, right: Json, st: State): boolean {
  let hit: boolean;
  if (typeof right === 'string' && right.startsWith('@')) {
    const name = right.slice(1);
    const dyn = st.dynamic.get(name);
    hit = dyn !== undefined ? dyn.has(String(left)) : table.keys(name).some((k) => equal(k, left));
  } else if (right && typeof right === 'object' && 'set' in right) hit = (right.set as Json[]).some((k) => equal(unwrap(k), left));
  else hit = equal(right, left);
  if (op === '==' || op === 'in') return hit;
  if (op === '!=') return !hit;
  throw new Error(`match operator not known to the evaluator: ${op}`);
}

/** Whether a set element or literal `k` matches the packet's value `v` (prefixes and wildcards included). */
function equal(k: Json, v: Json): boolean {
  if (Array.isArray(k) || Array.isArray(v)) return Array.isArray(k) && Array.isArray(v) && k.length === v.length && k.every((x, i) => equal(unwrap(x), v[i]));
  if (k && typeof k === 'object' && 'prefix' in k) {
    const ip = typeof v === 'string' ? parseIP(v) : undefined;
    const cidr = parseCIDR(`${k.prefix.addr}/${k.prefix.len}`);
    return ip !== undefined && cidr !== undefined && cidr.family === ip.family && cidrContains(cidr, ip);
  }
  if (typeof k === 'string' && typeof v === 'string' && k.endsWith('*')) return v.startsWith(k.slice(0, -1));
  if (typeof k === 'string' && typeof v === 'string' && parseIP(k) && parseIP(v)) return parseIP(k)!.text === parseIP(v)!.text;
  return k === v;
}

/** The node the probes are sent to and from, in one family: its addresses, its Node IP, and the other sources' addresses. */
export interface ProbeNode {
  readonly addresses: readonly string[];
  readonly ip: string;
  /** An external client's address, outside every source range. */
  readonly client: string;
  /** A pod on the node that is no endpoint. Default 10.244.1.99. */
  readonly pod?: string;
  /** A client inside the example's source ranges. Default 203.0.113.200. */
  readonly allowed?: string;
  /** Addresses of the service CIDRs that no Service holds, probed on tcp/80. */
  readonly unallocated?: readonly string[];
}

type Key = [string, string, number];

/**
 * The probes of the nftables oracle: every destination either table dispatches (the keys of
 * `service-ips`, `no-endpoint-services` and `firewall-ips`; NodePorts on each `nodeport-ips`
 * address, or the node's addresses; port 1 of each ClusterIP), from a pod on the node, the node
 * itself, a client outside every source range, one inside the example's (203.0.113.0/24), and each
 * pod a hairpin set of `hairpinFrom` (default: every table) names.
 */
export function probes(tables: readonly NftTable[], node: ProbeNode, hairpinFrom: readonly NftTable[] = tables): Packet[] {
  const dests = new Map<string, Key>();
  const add = (k: Key) => dests.set(k.join(' '), k);
  for (const t of tables) {
    for (const m of ['service-ips', 'no-endpoint-services', 'firewall-ips']) for (const k of t.keys(m) as Key[]) add([k[0], k[1], k[2]]);
    const nodePortIPs = t.keys('nodeport-ips').length > 0 ? (t.keys('nodeport-ips') as string[]) : node.addresses;
    for (const m of ['service-nodeports', 'no-endpoint-nodeports']) for (const [proto, port] of t.keys(m) as [string, number][]) for (const ip of nodePortIPs) add([ip, proto, port]);
    for (const ip of t.keys('cluster-ips') as string[]) add([ip, 'tcp', 1]);
  }
  for (const ip of node.unallocated ?? []) add([ip, 'tcp', 80]);
  const hairpin = new Set<string>();
  for (const t of hairpinFrom) for (const name of ['hairpin-connections', 'hairpin-endpoints']) for (const e of t.keys(name) as string[][]) hairpin.add(e[0]!);
  const sources: Pick<Packet, 'saddr' | 'iifname' | 'fromNode'>[] = [
    { saddr: node.pod ?? '10.244.1.99', iifname: 'p9', fromNode: false },
    { saddr: node.ip, iifname: '', fromNode: true },
    { saddr: node.client, iifname: 'ext0', fromNode: false },
    { saddr: node.allowed ?? '203.0.113.200', iifname: 'ext0', fromNode: false },
    ...[...hairpin].sort().map((saddr) => ({ saddr, iifname: 'p8', fromNode: false })),
  ];
  return [...dests.values()].flatMap(([daddr, proto, dport]) => sources.map((s) => ({ ...s, daddr, proto: proto as Packet['proto'], dport, nodeAddresses: node.addresses })));
}

/** What a table does to each probe: `from → to:port/proto` → its fates. */
export function behaviour(table: NftTable, packets: readonly Packet[]): Record<string, Fate[]> {
  return Object.fromEntries(packets.map((p) => [`${p.saddr} → ${p.daddr}:${p.dport}/${p.proto}`, fates(table, p)]));
}
