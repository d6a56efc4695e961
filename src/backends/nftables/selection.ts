/**
 * The endpoint selection of a service port's service and local chains, made when read rather than
 * kept (render.ts builds it): most of a large table's rules, needed only when a chain is written
 * whole or compared; every read returns the same rules.
 * @module
 */
import type { PlannedEndpoint } from '../../planner/plan.ts';
import { eq, meta, type NftRule, type NftSelector, type NftStatement } from './json.ts';
import type { NftChain } from './render.ts';

/**
 * A service or local chain: its first rules (the ClusterIP masquerade) as written, then the endpoint
 * selection, made when read (the same rules each time) from the plan's endpoints: a 10k-Service node
 * holds ~10^5 of these rules, needed only when written whole or compared.
 *
 * ClientIP affinity first (a client seen within the timeout goes back to its endpoint), then the
 * random cascade: endpoint i is taken with probability 1/(n-i) of what is left, so each with 1/n.
 * Every rule that picks an endpoint refreshes its affinity entry and DNATs to it.
 */
export class SelectionChain implements NftChain {
  readonly name: string;
  readonly #head: readonly NftRule[];
  readonly #endpoints: readonly PlannedEndpoint[];
  readonly #proto: 'tcp' | 'udp' | 'sctp';
  /** Each endpoint's affinity set, when the Service has ClientIP affinity. */
  readonly #sets: readonly (string | undefined)[] | undefined;
  readonly #saddr: NftSelector;
  constructor(name: string, head: readonly NftRule[], endpoints: readonly PlannedEndpoint[], proto: 'tcp' | 'udp' | 'sctp', sets: readonly (string | undefined)[] | undefined, saddr: NftSelector) {
    this.name = name;
    this.#head = head;
    this.#endpoints = endpoints;
    this.#proto = proto;
    this.#sets = sets;
    this.#saddr = saddr;
  }
  get ruleCount(): number {
    return this.#head.length + this.#endpoints.length + (this.#sets?.filter((s) => s !== undefined).length ?? 0);
  }
  get rules(): readonly NftRule[] {
    const out = [...this.#head];
    const endpoints = this.#endpoints;
    const sets = this.#sets;
    const saddr = this.#saddr;
    // [first,] l4proto, [affinity update,] dnat: built as literals, sized to their content.
    const to = (i: number, first?: NftStatement): NftStatement[] => {
      const ep = endpoints[i]!;
      const set = sets?.[i];
      const l4 = L4PROTO[this.#proto];
      const dnat: NftStatement = { dnat: { addr: ep.ip, port: ep.port } };
      if (set === undefined) return first ? [first, l4, dnat] : [l4, dnat];
      const update: NftStatement = { set: { op: 'update', elem: saddr, set: `@${set}` } };
      return first ? [first, l4, update, dnat] : [l4, update, dnat];
    };
    if (sets) sets.forEach((set, i) => set !== undefined && out.push({ expr: to(i, eq(saddr, `@${set}`)) }));
    const n = endpoints.length;
    for (let i = 0; i < n; i++) out.push({ expr: i < n - 1 ? to(i, pick(n - i)) : to(i) });
    return out;
  }
  toJSON(): NftChain {
    return { name: this.name, rules: this.rules };
  }
}

/** `meta l4proto <proto>`, one shared statement per protocol (see json.ts on sharing). */
const L4PROTO = { tcp: eq(meta('l4proto'), 'tcp'), udp: eq(meta('l4proto'), 'udp'), sctp: eq(meta('l4proto'), 'sctp') } as const;

const picks: NftStatement[] = [];
/** `numgen random mod k == 0`, shared per k below 1024 (see json.ts on sharing). */
function pick(k: number): NftStatement {
  const make = () => eq({ numgen: { mode: 'random', mod: k } }, 0);
  return k < 1024 ? (picks[k] ??= make()) : make();
}
