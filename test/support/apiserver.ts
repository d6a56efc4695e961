/**
 * A test API server that speaks the kube-apiserver's list/watch protocol over real HTTP, so the
 * real client-node informer code is what the tests exercise. Shapes follow the bodies captured
 * from a real kube-apiserver v1.26 in test/fixtures/wire/ (see test/fixtures/README.md):
 *
 * - lists: `{kind: XList, apiVersion, metadata: {resourceVersion[, continue, remainingItemCount]},
 *   items}`, items without kind/apiVersion; `limit` + opaque `continue` tokens; an expired token
 *   gets the captured 410 `Status` (list-continue-expired.json); `resourceVersion=0` is answered
 *   as v1.26's watch cache answers it, whole, ignoring `limit`;
 * - watches: `?watch=true|1&resourceVersion=N`, chunked newline-delimited `{type, object}` events
 *   with every change after N, then live ones; BOOKMARK objects carrying only kind, apiVersion and
 *   metadata.resourceVersion (watch-endpointslices.ndjson) when `allowWatchBookmarks=true`;
 *   `timeoutSeconds` closes the stream; a compacted resourceVersion gets an in-stream 410 ERROR;
 * - `labelSelector` (`k`, `!k`, `k=v`, `k!=v`) and `fieldSelector` (`metadata.name=`,
 *   `metadata.namespace=`) on lists and watches.
 *
 * Faults: fail the next list or watch with an HTTP status, reset (RST) or stall (half-open) the
 * open watches, end them cleanly, compact history, expire continue tokens. `requests` logs every
 * request, so tests can tell a re-list from a resumed watch.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export const WIRE = join(import.meta.dirname, '../fixtures/wire');

type Obj = { apiVersion?: string; kind?: string; metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> } } & Record<string, unknown>;
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** Collections served: path → list kind, item kind, apiVersion. */
export const COLLECTIONS = {
  services: { path: '/api/v1/services', listKind: 'ServiceList', kind: 'Service', apiVersion: 'v1' },
  endpointslices: { path: '/apis/discovery.k8s.io/v1/endpointslices', listKind: 'EndpointSliceList', kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1' },
  nodes: { path: '/api/v1/nodes', listKind: 'NodeList', kind: 'Node', apiVersion: 'v1' },
  servicecidrs: { path: '/apis/networking.k8s.io/v1/servicecidrs', listKind: 'ServiceCIDRList', kind: 'ServiceCIDR', apiVersion: 'networking.k8s.io/v1' },
} as const;
/** The discovery document of networking.k8s.io/v1, as v1.33 and later serve it (abridged to the resource kproxy looks for). */
const NETWORKING_V1 = '/apis/networking.k8s.io/v1';
export type Collection = keyof typeof COLLECTIONS;
const BY_PATH = new Map(Object.entries(COLLECTIONS).map(([name, c]) => [c.path as string, name as Collection]));

interface Watcher {
  readonly collection: Collection;
  readonly select: (o: Obj) => boolean;
  readonly res: http.ServerResponse;
  readonly bookmarks: boolean;
  stalled: boolean;
}

/** Label selector subset kube-proxy uses: `k`, `!k`, `k=v`, `k==v`, `k!=v`, comma-joined. */
export function labelsMatch(selector: string | null, labels: Record<string, string> = {}): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    term = term.trim();
    if (term.startsWith('!')) return !(term.slice(1) in labels);
    const ne = term.split('!=');
    if (ne.length === 2) return labels[ne[0]!] !== ne[1];
    const [k, v] = term.split(/==?/);
    return v === undefined ? k! in labels : labels[k!] === v;
  });
}

function fieldsMatch(selector: string | null, o: Obj): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const [k, v] = term.split('=');
    if (k === 'metadata.name') return o.metadata.name === v;
    if (k === 'metadata.namespace') return (o.metadata.namespace ?? '') === v;
    return false;
  });
}

/** A wire fixture file, parsed. */
export function wire<T = unknown>(name: string): T {
  return JSON.parse(readFileSync(join(WIRE, name), 'utf8')) as T;
}

export class TestApiServer {
  /** Every request, `METHOD path?query`, in order. */
  readonly requests: string[] = [];
  /**
   * Serves networking.k8s.io/v1 ServiceCIDRs, with their discovery document, as an API server of
   * v1.33 or later; off (the default), both answer 404, as v1.26's do.
   */
  serviceCIDRs = false;
  /** Collections this server's RBAC does not let the client list or watch: 403 Forbidden. */
  readonly forbidden = new Set<Collection>();
  #rv = 1000;
  #oldestRv = 0;
  #tokenEpoch = 0;
  #expireAfterPage = false;
  readonly #store = new Map<Collection, Map<string, Obj>>(Object.keys(COLLECTIONS).map((c) => [c as Collection, new Map()]));
  readonly #history: { rv: number; collection: Collection; type: EventType; object: Obj }[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #failNext: { list: number[]; watch: number[] } = { list: [], watch: [] };
  readonly #server = http.createServer((req, res) => this.#handle(req, res));

  /** Current resourceVersion. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Open watch streams, per collection. */
  watchers(collection?: Collection): number {
    return [...this.#watchers].filter((w) => !collection || w.collection === collection).length;
  }

  /** Listens on 127.0.0.1:0; resolves to the base URL. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Listens on a socket handle made elsewhere (e.g. inside a network namespace). */
  async listenOn(handle: unknown): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(handle as ListenHandle, resolve));
  }

  async close(): Promise<void> {
    for (const w of this.#watchers) w.res.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Loads objects without events (as if they existed before anyone watched); sets the RV to `rv`. */
  seed(collection: Collection, items: readonly Obj[], rv?: number): void {
    for (const item of items) {
      const o = structuredClone(item);
      o.metadata.resourceVersion ??= String(++this.#rv);
      this.#store.get(collection)!.set(key(o), o);
    }
    if (rv !== undefined) this.#rv = Math.max(this.#rv, rv);
    this.#oldestRv = this.#rv;
  }

  /** Creates or replaces an object (ADDED or MODIFIED event). Returns the stored object. */
  apply(collection: Collection, object: Obj): Obj {
    const type = this.#store.get(collection)!.has(key(object)) ? 'MODIFIED' : 'ADDED';
    return this.#write(collection, type, object);
  }

  /** Deletes an object by namespace/name (DELETED event with its last state). */
  remove(collection: Collection, namespace: string | undefined, name: string): void {
    const existing = this.#store.get(collection)!.get(`${namespace ?? ''}/${name}`);
    if (existing) this.#write(collection, 'DELETED', existing);
  }

  /** The stored objects of a collection. */
  objects(collection: Collection): Obj[] {
    return [...this.#store.get(collection)!.values()];
  }

  /** The next list of any collection answers `status` (a Status body). Repeatable. */
  failNextList(status: number): void {
    this.#failNext.list.push(status);
  }

  /** The next watch request answers `status` (410 is what a compacted RV gets over HTTP). */
  failNextWatch(status: number): void {
    this.#failNext.watch.push(status);
  }

  /** Forgets history: watches resuming from an older RV get an in-stream 410 Expired. */
  compact(): void {
    this.#oldestRv = this.#rv;
    this.#history.length = 0;
  }

  /** Continue tokens handed out so far now get 410 Expired. */
  expireContinueTokens(): void {
    this.#tokenEpoch++;
  }

  /** Expires the continue tokens once, right after the next list page is served (a list racing compaction). */
  expireContinueTokensAfterNextPage(): void {
    this.#expireAfterPage = true;
  }

  /** Sends a BOOKMARK with the current RV to watchers that asked for bookmarks. */
  bookmark(): void {
    for (const w of this.#watchers) {
      const c = COLLECTIONS[w.collection];
      if (w.bookmarks) send(w, { type: 'BOOKMARK', object: { kind: c.kind, apiVersion: c.apiVersion, metadata: { resourceVersion: String(this.#rv) } } });
    }
  }

  /** Ends every watch stream cleanly (what `timeoutSeconds` expiry looks like). */
  endWatches(): void {
    for (const w of this.#watchers) w.res.end();
  }

  /** Drops every watch connection abruptly. */
  resetWatches(): void {
    for (const w of this.#watchers) w.res.socket?.resetAndDestroy();
  }

  /** Keeps watch connections open but sends nothing more on them (half-open). */
  stallWatches(): void {
    for (const w of this.#watchers) w.stalled = true;
  }

  /** An in-stream 410 ERROR on every open watch, then the stream ends (as the real server does). */
  expireWatches(): void {
    for (const w of this.#watchers) w.res.end(`${JSON.stringify(expired(this.#rv, this.#oldestRv))}\n`);
    this.compact();
  }

  #write(collection: Collection, type: EventType, input: Obj): Obj {
    const c = COLLECTIONS[collection];
    const object = structuredClone({ ...input, kind: c.kind, apiVersion: c.apiVersion }) as Obj;
    object.metadata.resourceVersion = String(++this.#rv);
    const store = this.#store.get(collection)!;
    if (type === 'DELETED') store.delete(key(object));
    else store.set(key(object), object);
    this.#history.push({ rv: this.#rv, collection, type, object });
    for (const w of this.#watchers) if (w.collection === collection && w.select(object)) send(w, { type, object });
    return object;
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://test');
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    const collection = BY_PATH.get(url.pathname);
    if (req.method === 'GET' && url.pathname === NETWORKING_V1 && this.serviceCIDRs) {
      return json(res, 200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'networking.k8s.io/v1',
        resources: [{ name: 'servicecidrs', singularName: 'servicecidr', namespaced: false, kind: 'ServiceCIDR', verbs: ['list', 'watch'] }],
      });
    }
    if (req.method !== 'GET' || !collection || (collection === 'servicecidrs' && !this.serviceCIDRs)) return json(res, 404, status(404, 'NotFound', `${url.pathname} not found`));
    if (this.forbidden.has(collection)) return json(res, 403, status(403, 'Forbidden', `${url.pathname} is forbidden`));
    const c = COLLECTIONS[collection];
    const labelSelector = url.searchParams.get('labelSelector');
    const fieldSelector = url.searchParams.get('fieldSelector');
    const select = (o: Obj) => labelsMatch(labelSelector, o.metadata.labels) && fieldsMatch(fieldSelector, o);
    const watch = url.searchParams.get('watch');

    if (watch !== 'true' && watch !== '1') {
      const fail = this.#failNext.list.shift();
      if (fail !== undefined) return json(res, fail, status(fail, 'InternalError', 'injected list failure'));
      const all = [...this.#store.get(collection)!.values()].filter(select).sort((a, b) => key(a).localeCompare(key(b)));
      const cont = url.searchParams.get('continue');
      const fromCache = url.searchParams.get('resourceVersion') === '0' && !cont;
      const limit = fromCache ? 0 : Number(url.searchParams.get('limit') ?? 0);
      let start = 0;
      let rv = this.#rv;
      if (cont) {
        const token = JSON.parse(Buffer.from(cont, 'base64url').toString()) as { rv: number; start: number; epoch: number };
        if (token.epoch !== this.#tokenEpoch) return json(res, 410, wire('list-continue-expired.json'));
        ({ start, rv } = token);
      }
      const page = limit > 0 ? all.slice(start, start + limit) : all.slice(start);
      const next = start + page.length;
      const metadata: Record<string, unknown> = { resourceVersion: String(rv) };
      if (limit > 0 && next < all.length) {
        metadata.continue = Buffer.from(JSON.stringify({ rv, start: next, epoch: this.#tokenEpoch })).toString('base64url');
        metadata.remainingItemCount = all.length - next;
      }
      // Real list items carry no kind/apiVersion (kubernetes/kubernetes#3030).
      const items = page.map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
      if (this.#expireAfterPage) {
        this.#expireAfterPage = false;
        this.#tokenEpoch++;
      }
      return json(res, 200, { kind: c.listKind, apiVersion: c.apiVersion, metadata, items });
    }

    const fail = this.#failNext.watch.shift();
    if (fail !== undefined) return json(res, fail, status(fail, fail === 410 ? 'Expired' : 'InternalError', 'injected watch failure'));
    const from = Number(url.searchParams.get('resourceVersion') || this.#rv);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    if (from < this.#oldestRv) {
      res.end(`${JSON.stringify(expired(from, this.#oldestRv))}\n`);
      return;
    }
    const w: Watcher = { collection, select, res, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', stalled: false };
    for (const h of this.#history) if (h.rv > from && h.collection === collection && select(h.object)) send(w, { type: h.type, object: h.object });
    this.#watchers.add(w);
    const timeout = Number(url.searchParams.get('timeoutSeconds') || 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      clearTimeout(timer);
      this.#watchers.delete(w);
    });
  }
}

type ListenHandle = Parameters<http.Server['listen']>[0];

function key(o: Obj): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

function send(w: Watcher, event: unknown): void {
  if (!w.stalled && !w.res.writableEnded) w.res.write(`${JSON.stringify(event)}\n`);
}

function json(res: http.ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function status(code: number, reason: string, message: string): object {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function expired(from: number, oldest: number): object {
  return { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${oldest})`) };
}

/** A kubeconfig (YAML is JSON) pointing at `server` over plain HTTP, as tests need. */
export function kubeconfigFor(server: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'test', user: { token: 'test' } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'test' } }],
    'current-context': 'test',
  });
}
