/**
 * Destinations claimed by more than one Service. The API server keeps ClusterIPs and NodePorts
 * unique, but not `spec.externalIPs` or load-balancer ingress IPs: two Services may claim the same
 * `IP:port/protocol`. A packet can go to only one of them, and which one must not depend on the
 * order rules happened to be written in (upstream's iptables mode writes its Service map in Go's
 * random order, so the winner changes from sync to sync; a verdict map holds one value per key).
 *
 * kproxy decides here, once, for both backends and every write path: **the oldest Service wins**
 * (`metadata.creationTimestamp`; a Service without one counts as newest), then the first by
 * `namespace/name`, the rule Kubernetes uses for conflicting Gateway API routes. The other Service
 * keeps every destination it does not share. Within one Service port, a destination listed twice
 * (say, as an externalIP and as its load-balancer IP) keeps its first role: ClusterIP, then
 * externalIP, then load-balancer IP, the order upstream writes their rules in. Pure.
 * @module
 */
import type { IPFamily } from '../state/ip.ts';
import type { ServicePort, ServicePortState } from '../state/model.ts';

/** Which role of a service port a destination has. */
export type FrontendKind = 'clusterIP' | 'externalIP' | 'loadBalancerIP' | 'nodePort';

/** One destination a service port lost to another, older Service. */
export interface FrontendConflict {
  /** `IP:port/PROTOCOL`, or `:nodePort/PROTOCOL`. */
  readonly destination: string;
  readonly kind: FrontendKind;
  /** The service port that keeps it, `namespace/name:port`. */
  readonly winner: string;
  /** The service port that loses it. */
  readonly loser: string;
}

/** States with the destinations they lost taken out, and what was taken out. */
export interface ResolvedFrontends {
  /** In input order; a state that lost nothing is the same object as before. */
  readonly states: readonly ServicePortState[];
  readonly conflicts: readonly FrontendConflict[];
}

/** A destination one service port claims, with its text made once. */
interface Destination {
  readonly kind: FrontendKind;
  readonly ip: string;
  readonly port: number;
  /** `IP:port/PROTOCOL` (`[IP]` for IPv6), or `:nodePort/PROTOCOL`: the key claims meet on. */
  readonly text: string;
}

/** A service port's destinations in one family: its ClusterIP's, and the others in role order. */
interface Destinations {
  readonly clusterIP: Destination | undefined;
  readonly others: readonly Destination[];
}

/**
 * Memory of the adjusted states, so that a service port that keeps losing the same destinations
 * is the same object every sync (and is not re-planned or re-rendered), and of each service
 * port's destinations per family, made once per version of its Service instead of on every sync
 * (at 10k Services that text was most of a plan that changed nothing).
 */
export class FrontendMemo {
  readonly #adjusted = new WeakMap<ServicePortState, { readonly lost: string; readonly state: ServicePortState }>();
  readonly #destinations = new WeakMap<ServicePort, Partial<Record<IPFamily, Destinations>>>();

  /** The destinations `sp` claims in `family`. */
  destinations(sp: ServicePort, family: IPFamily): Destinations {
    let byFamily = this.#destinations.get(sp);
    if (!byFamily) this.#destinations.set(sp, (byFamily = {}));
    return (byFamily[family] ??= destinationsOf(sp, family));
  }

  /** `state` less the destinations in `lost` (keys as {@link resolveFrontends} makes them). */
  adjust(state: ServicePortState, lost: ReadonlySet<string>, family: IPFamily): ServicePortState {
    const signature = `${family} ${[...lost].sort().join(' ')}`;
    const known = this.#adjusted.get(state);
    if (known?.lost === signature) return known.state;
    const sp = state.servicePort;
    const keep = (kind: FrontendKind) => (ip: { text: string; family: IPFamily }) => ip.family !== family || !lost.has(key(kind, ip.text, sp.port, sp.protocol));
    const adjusted: ServicePortState = {
      ...state,
      servicePort: {
        ...sp,
        externalIPs: sp.externalIPs.filter(keep('externalIP')),
        loadBalancerIPs: sp.loadBalancerIPs.filter(keep('loadBalancerIP')),
        nodePort: lost.has(key('nodePort', '', sp.nodePort, sp.protocol)) ? 0 : sp.nodePort,
      },
    };
    this.#adjusted.set(state, { lost: signature, state: adjusted });
    return adjusted;
  }
}

function key(kind: FrontendKind, ip: string, port: number, protocol: string): string {
  return `${kind} ${ip} ${port} ${protocol}`;
}

/** True when `a`'s Service takes precedence over `b`'s: older, then first by namespace/name. */
function precedes(a: ServicePortState, b: ServicePortState): boolean {
  const x = a.servicePort;
  const y = b.servicePort;
  const ta = x.createdAt ?? Infinity;
  const tb = y.createdAt ?? Infinity;
  if (ta !== tb) return ta < tb;
  return x.serviceKey < y.serviceKey;
}

interface Claim extends Destination {
  readonly state: ServicePortState;
}

function destinationsOf(sp: ServicePort, family: IPFamily): Destinations {
  const make = (kind: FrontendKind, ip: string, port: number): Destination => ({
    kind,
    ip,
    port,
    text: kind === 'nodePort' ? `:${port}/${sp.protocol}` : `${ip.includes(':') ? `[${ip}]` : ip}:${port}/${sp.protocol}`,
  });
  const clusterIP = sp.clusterIPs.find((a) => a.family === family);
  const others: Destination[] = [];
  if (clusterIP) {
    for (const ip of sp.externalIPs) if (ip.family === family) others.push(make('externalIP', ip.text, sp.port));
    for (const ip of sp.loadBalancerIPs) if (ip.family === family) others.push(make('loadBalancerIP', ip.text, sp.port));
    if (sp.nodePort > 0) others.push(make('nodePort', '', sp.nodePort));
  }
  return { clusterIP: clusterIP && make('clusterIP', clusterIP.text, sp.port), others };
}

/**
 * Resolves destinations claimed by more than one service port, in one family. Linear in the
 * number of destinations (no sort): a claim meets the current holder and the one that precedes keeps it.
 * A service port whose ClusterIP and port another one already holds (which the API server does not
 * allow; files may) is left out whole.
 * @param memo keeps adjusted states stable across calls; without it they are new objects each time
 */
export function resolveFrontends(states: readonly ServicePortState[], family: IPFamily, memo: FrontendMemo = new FrontendMemo()): ResolvedFrontends {
  // The holder of each destination; a Claim object is made only for what is lost (rare).
  const held = new Map<string, ServicePortState>();
  const lost: Claim[] = [];
  const claim = (state: ServicePortState, d: Destination) => {
    const holder = held.get(d.text);
    if (holder === undefined) held.set(d.text, state);
    else if (holder !== state && precedes(state, holder)) {
      held.set(d.text, state);
      // The holder's own role for that destination (rare: a conflict).
      const mine = memo.destinations(holder.servicePort, family);
      lost.push({ ...[mine.clusterIP, ...mine.others].find((x) => x?.text === d.text)!, state: holder });
    } else lost.push({ ...d, state });
  };
  // ClusterIPs first: a service port that loses its ClusterIP is left out and claims nothing else.
  for (const state of states) {
    const d = memo.destinations(state.servicePort, family).clusterIP;
    if (d) claim(state, d);
  }
  const dropped = new Set(lost.map((c) => c.state));
  for (const state of states) {
    if (dropped.has(state)) continue;
    for (const d of memo.destinations(state.servicePort, family).others) claim(state, d);
  }
  if (lost.length === 0) return { states, conflicts: [] };
  const conflicts: FrontendConflict[] = [];
  const lostBy = new Map<ServicePortState, Set<string>>();
  for (const c of lost) {
    const winner = held.get(c.text)!;
    if (winner !== c.state) conflicts.push({ destination: c.text, kind: c.kind, winner: winner.servicePort.name, loser: c.state.servicePort.name });
    if (dropped.has(c.state)) continue;
    let set = lostBy.get(c.state);
    if (!set) lostBy.set(c.state, (set = new Set()));
    set.add(key(c.kind, c.ip, c.port, c.state.servicePort.protocol));
  }
  conflicts.sort((a, b) => (a.destination < b.destination ? -1 : a.destination > b.destination ? 1 : a.loser < b.loser ? -1 : 1));
  const out: ServicePortState[] = [];
  for (const state of states) {
    if (dropped.has(state)) continue;
    const set = lostBy.get(state);
    out.push(set ? memo.adjust(state, set, family) : state);
  }
  return { states: out, conflicts };
}
