/**
 * The proxy's state: validated Services, EndpointSlices, ServiceCIDRs and this node, with change tracking.
 *
 * Sources feed raw objects in (`applyService`, `deleteEndpointSlice`, …); the planner reads plain
 * data out (`servicePortStates()`, `node`). Endpoints of a service port are merged from every
 * slice of its Service whose port has the same name and protocol, as upstream's
 * EndpointSliceCache does (pkg/proxy/endpointslicecache.go): slices in name order, one entry per
 * `ip:port`, a local copy preferred over a remote one, the result sorted by `ip:port`.
 *
 * Merged endpoints are cached per Service and recomputed only for Services marked dirty, so the
 * cost of a change is proportional to the Services it touches.
 * @module
 */
import type { RawObject } from '../sources/objects.ts';
import { normaliseEndpointSlice } from './endpointslice.ts';
import { joinHostPort } from './ip.ts';
import type { Endpoint, EndpointSlice, InputIssue, NodeInfo, NormaliseResult, Service, ServicePortState, SliceEndpoint } from './model.ts';
import { normaliseNode } from './node.ts';
import type { CIDR } from './ip.ts';
import { normaliseServiceCIDR } from './servicecidr.ts';
import { normaliseService } from './service.ts';

/** What applying one object did, as data for logs and metrics. */
export interface ApplyResult {
  readonly issues: readonly InputIssue[];
  /** Set when the object was valid but is not proxied (headless, ExternalName, no label, …). */
  readonly ignored?: string;
}

/** In-memory state of one proxy. Not thread-shared; all methods are synchronous. */
export class ProxyStateStore {
  readonly nodeName: string;
  #node: NodeInfo;
  readonly #services = new Map<string, Service>();
  readonly #slices = new Map<string, EndpointSlice>();
  readonly #slicesByService = new Map<string, Set<string>>();
  readonly #merged = new Map<string, readonly ServicePortState[]>();
  readonly #dirty = new Set<string>();
  readonly #serviceCIDRs = new Map<string, readonly CIDR[]>();
  #serviceCIDRUnion: readonly CIDR[] | undefined;
  /** Service keys in order; dropped when a Service comes or goes, not when one changes. */
  #order: string[] | undefined;

  /** @param nodeName this node's name (`--hostname-override`); endpoints on it are local */
  constructor(nodeName: string) {
    this.nodeName = nodeName;
    this.#node = { name: nodeName, zone: undefined, addresses: [], podCIDRs: [], deleting: false };
  }

  /** This node: its name, and zone and addresses once its Node object was applied. */
  get node(): NodeInfo {
    return this.#node;
  }

  /** Number of Services held. */
  get serviceCount(): number {
    return this.#services.size;
  }

  /** Adds or replaces a Service. An invalid or ignored Service removes any earlier version. */
  applyService(raw: RawObject): ApplyResult {
    return this.#apply(
      normaliseService(raw),
      (key) => this.deleteService(key),
      (service) => {
        if (!this.#services.has(service.key)) this.#order = undefined;
        this.#services.set(service.key, service);
        this.#touch(service.key);
      },
    );
  }

  /** Removes a Service by `namespace/name`; its endpoints are kept for when it comes back. */
  deleteService(key: string): void {
    if (!this.#services.delete(key)) return;
    this.#order = undefined;
    this.#touch(key);
  }

  /** Adds or replaces an EndpointSlice. An invalid or ignored slice removes any earlier version. */
  applyEndpointSlice(raw: RawObject): ApplyResult {
    return this.#apply(
      normaliseEndpointSlice(raw),
      (key) => this.deleteEndpointSlice(key),
      (slice) => {
        const previous = this.#slices.get(slice.key);
        if (previous && previous.serviceKey !== slice.serviceKey) this.deleteEndpointSlice(slice.key);
        this.#slices.set(slice.key, slice);
        let keys = this.#slicesByService.get(slice.serviceKey);
        if (!keys) this.#slicesByService.set(slice.serviceKey, (keys = new Set()));
        keys.add(slice.key);
        this.#touch(slice.serviceKey);
      },
    );
  }

  /** Removes an EndpointSlice by `namespace/name`. */
  deleteEndpointSlice(key: string): void {
    const slice = this.#slices.get(key);
    if (!slice) return;
    this.#slices.delete(key);
    const keys = this.#slicesByService.get(slice.serviceKey);
    keys?.delete(key);
    if (keys?.size === 0) this.#slicesByService.delete(slice.serviceKey);
    this.#touch(slice.serviceKey);
  }

  /**
   * Applies a Node object; only this node's (by name) is kept. A change of zone affects every
   * Service with topology hints, so it marks all Services dirty (upstream forces a full sync).
   */
  applyNode(raw: RawObject): ApplyResult {
    const result = normaliseNode(raw);
    if ('issue' in result) return { issues: [result.issue] };
    if (result.node.name !== this.nodeName) return { issues: [], ignored: 'not this node' };
    const zoneChanged = result.node.zone !== this.#node.zone;
    this.#node = result.node;
    if (zoneChanged) for (const key of this.#services.keys()) this.#dirty.add(key);
    return { issues: [] };
  }

  /**
   * Adds or replaces a ServiceCIDR (by name). An invalid one removes its earlier version: its
   * unallocated addresses are then no longer dropped, which fails open only for traffic that no
   * Service would have taken anyway.
   */
  applyServiceCIDR(raw: RawObject): ApplyResult {
    const result = normaliseServiceCIDR(raw);
    if ('issue' in result) {
      const name = raw.metadata?.name;
      if (typeof name === 'string') this.deleteServiceCIDR(name);
      return { issues: [result.issue] };
    }
    this.#serviceCIDRs.set(result.serviceCIDR.name, result.serviceCIDR.cidrs);
    this.#serviceCIDRUnion = undefined;
    return { issues: [] };
  }

  /** Removes a ServiceCIDR by name. */
  deleteServiceCIDR(name: string): void {
    if (this.#serviceCIDRs.delete(name)) this.#serviceCIDRUnion = undefined;
  }

  /**
   * The ranges of every ServiceCIDR held, both families, each range once, sorted by family then
   * text. Unlike upstream's ServiceCIDRConfig (a set it deletes an old object's CIDRs from), a
   * range two ServiceCIDRs share stays while either holds it. The same array until a ServiceCIDR changes.
   */
  get serviceCIDRs(): readonly CIDR[] {
    if (this.#serviceCIDRUnion) return this.#serviceCIDRUnion;
    const byText = new Map<string, CIDR>();
    for (const cidrs of this.#serviceCIDRs.values()) for (const c of cidrs) byText.set(c.text, c);
    return (this.#serviceCIDRUnion = [...byText.values()].sort((a, b) => a.family - b.family || (a.text < b.text ? -1 : a.text > b.text ? 1 : 0)));
  }

  /** Returns and clears the keys (`namespace/name`) of Services changed since the last call. */
  takeDirty(): Set<string> {
    const out = new Set(this.#dirty);
    this.#dirty.clear();
    return out;
  }

  /** Marks a Service changed again (a sync that consumed its change failed). */
  markDirty(serviceKey: string): void {
    this.#dirty.add(serviceKey);
  }

  /**
   * Every service port with its merged endpoints, ordered by Service key, then port order in the
   * spec. The objects of a Service are the same from call to call until it or one of its slices
   * changes, so callers may cache by identity (the planner's PlanCache does).
   */
  servicePortStates(): ServicePortState[] {
    const out: ServicePortState[] = [];
    this.#order ??= [...this.#services.keys()].sort();
    for (const key of this.#order) for (const state of this.servicePortStatesOf(key)) out.push(state);
    return out;
  }

  /** The service ports of one Service (empty when it is unknown). */
  servicePortStatesOf(serviceKey: string): readonly ServicePortState[] {
    let states = this.#merged.get(serviceKey);
    if (states) return states;
    const service = this.#services.get(serviceKey);
    if (!service) return [];
    const slices = [...(this.#slicesByService.get(serviceKey) ?? [])].sort().map((k) => this.#slices.get(k)!);
    states = service.ports.map((servicePort) => ({
      servicePort,
      endpoints: mergeEndpoints(slices, servicePort.portName, servicePort.protocol, this.nodeName),
    }));
    this.#merged.set(serviceKey, states);
    return states;
  }

  /** Stores an `ok` result; otherwise removes the object's earlier version (by key) and reports why. */
  #apply<T>(result: NormaliseResult<T>, remove: (key: string) => void, store: (value: T) => void): ApplyResult {
    if (result.status === 'ok') {
      store(result.value);
      return { issues: result.issues };
    }
    if (result.key !== undefined) remove(result.key);
    return result.status === 'invalid' ? { issues: [result.issue] } : { issues: [], ignored: result.reason };
  }

  #touch(serviceKey: string): void {
    this.#merged.delete(serviceKey);
    this.#dirty.add(serviceKey);
  }
}

function isMerged(e: SliceEndpoint): e is SliceEndpoint & Endpoint {
  return 'hostPort' in e;
}

function mergeEndpoints(slices: readonly EndpointSlice[], portName: string, protocol: string, nodeName: string): Endpoint[] {
  const byHostPort = new Map<string, Endpoint>();
  for (const slice of slices) {
    for (const sp of slice.ports) {
      if (sp.name !== portName || sp.protocol !== protocol) continue;
      for (const e of slice.endpoints) {
        // A single-port slice's endpoint is already in merged form (endpointslice.ts): shared, not copied.
        const merged = isMerged(e) && e.port === sp.port ? e : undefined;
        const hostPort = merged ? merged.hostPort : joinHostPort(e.ip, sp.port);
        const existing = byHostPort.get(hostPort);
        if (existing && !(e.nodeName === nodeName && existing.nodeName !== nodeName)) continue;
        if (merged) {
          byHostPort.set(hostPort, merged);
          continue;
        }
        byHostPort.set(hostPort, {
          ip: e.ip,
          port: sp.port,
          hostPort,
          ready: e.ready,
          serving: e.serving,
          terminating: e.terminating,
          nodeName: e.nodeName,
          zone: e.zone,
          zoneHints: e.zoneHints,
          nodeHints: e.nodeHints,
        });
      }
    }
  }
  return [...byHostPort.values()].sort((a, b) => (a.hostPort < b.hostPort ? -1 : a.hostPort > b.hostPort ? 1 : 0));
}
