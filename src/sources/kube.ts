/**
 * The Kubernetes API source: Services, EndpointSlices, this node's Node and the ServiceCIDRs, watched through
 * `@kubernetes/client-node`'s `ListWatch`, each under a supervisor that makes it fit for a
 * DaemonSet (client-node informers stop on errors and stall on half-open connections unless supervised):
 *
 * - lists are our own (api.ts `listCollection`), raw and paginated (`limit`/`continue`, as
 *   client-go's reflector pages at 500), so list and watch objects have one shape, the wire JSON;
 *   an expired `continue` token (410) restarts the list once from the beginning;
 * - as client-go's reflector (`relistResourceVersion`), an informer's first list asks for
 *   `resourceVersion=0`: the API server answers from its watch cache, in one response and without
 *   reading etcd (at 10k Services × 10 endpoints about a second less of `kproxy run`'s cold start,
 *   bench/README.md), and may be a little behind, which the watch from the list's
 *   resourceVersion then catches up on. ListWatch lists again only after a 410 (its
 *   resourceVersion is gone), and that list is a consistent, paged read from etcd, as client-go's
 *   after a 410;
 * - the label selector of upstream kube-proxy (cmd/kube-proxy/app/server.go) applies to list and
 *   watch alike;
 * - watches ask for bookmarks and a server-side `timeoutSeconds` drawn from [5, 10) minutes, as
 *   client-go's reflector does, and the client aborts a watch that stays silent for `stallMs`;
 * - any error restarts the informer after a capped exponential backoff with jitter; a 410 clears
 *   the resourceVersion so the restart re-lists; the `AbortError`s the library raises when it is
 *   stopped or restarted are ours and ignored;
 * - a watchdog restarts an informer that showed no sign of life for twice `stallMs`;
 * - ServiceCIDRs (networking.k8s.io/v1, served from v1.33) are watched only where discovery says
 *   the API server serves them, as they are optional: a v1.26 server has none to list;
 * - with --network-policy, NetworkPolicies, Namespaces and (unfinished) Pods cluster-wide too. A
 *   Pod is cut to the part policy reads as it arrives, on every list page and watch event
 *   (api.ts `podPolicyFacts`), and its first list is paged from etcd rather than one answer from
 *   the watch cache, so a large cluster's pods are never all in memory whole at once;
 * - handlers never throw: they push plain {@link SourceEvent}s into an {@link EventQueue}, and a
 *   `synced` event after every complete list tells the runner its cache is whole.
 * @module
 */
import { KubeConfig, ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from './client-node.ts';
import type { Logger } from 'pino';
import { listCollection, policyResources, proxyResources, servesResource, type WatchedResource } from './api.ts';
import type { ObjectKind, RawObject } from './objects.ts';
import type { EventQueue } from './queue.ts';

/** Tuning of the supervisor; the defaults suit production. */
export interface SupervisorOptions {
  /** Range of the server-side watch timeout, seconds: [min, 2·min). Default 300. */
  readonly watchTimeoutSeconds?: number;
  /** A watch that receives no bytes for this long is aborted and resumed. Default 90 s. */
  readonly stallMs?: number;
  /** First restart delay after an error; doubles per consecutive failure. Default 500 ms. */
  readonly minBackoffMs?: number;
  /** Cap of the restart delay. Default 30 s. */
  readonly maxBackoffMs?: number;
}

/** Counters of one supervised informer, for metrics and tests. */
export interface InformerStats {
  readonly kind: ObjectKind;
  /** Complete lists delivered (the first sync and every re-list). */
  lists: number;
  /** Restarts after an error or a stall. */
  restarts: number;
  /** Errors seen, by a short reason (`http_500`, `ECONNRESET`, `stalled`, …). */
  readonly errors: Record<string, number>;
  /** Time of the last event, bookmark or list (ms since the epoch); 0 before the first. */
  lastActivityMs: number;
}

/** A short, bounded reason for an error, used as a metric label. */
function errorReason(err: unknown): string {
  const e = err as { statusCode?: unknown; code?: unknown; name?: unknown; cause?: { code?: unknown } } | null | undefined;
  if (typeof e?.statusCode === 'number') return `http_${e.statusCode}`;
  if (typeof e?.cause?.code === 'string' && /^[A-Z_]{2,40}$/.test(e.cause.code)) return e.cause.code;
  if (typeof e?.code === 'string' && /^[A-Z_]{2,40}$/.test(e.code)) return e.code;
  if (typeof e?.name === 'string' && /^[A-Za-z]{2,40}$/.test(e.name)) return e.name;
  return 'other';
}

/**
 * One `ListWatch` under supervision (see the module comment). Create, then `start()`; `stop()`
 * is final.
 */
export class SupervisedInformer {
  readonly resource: WatchedResource;
  readonly stats: InformerStats;
  readonly #informer: ListWatch<KubernetesObject>;
  readonly #watch: Watch;
  readonly #queue: EventQueue;
  readonly #log: Logger;
  readonly #opts: Required<SupervisorOptions>;
  #stopped = true;
  #failures = 0;
  #selfAbortUntil = 0;
  #retry: NodeJS.Timeout | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #lastRv = '';

  constructor(kc: KubeConfig, resource: WatchedResource, queue: EventQueue, log: Logger, opts: SupervisorOptions = {}) {
    this.resource = resource;
    this.#queue = queue;
    this.#log = log.child({ resource: resource.kind });
    this.#opts = { watchTimeoutSeconds: 300, stallMs: 90_000, minBackoffMs: 500, maxBackoffMs: 30_000, ...opts };
    this.stats = { kind: resource.kind, lists: 0, restarts: 0, errors: {}, lastActivityMs: 0 };
    const timeout = Math.floor(this.#opts.watchTimeoutSeconds * (1 + Math.random()));
    const watchPath = `${resource.path}?allowWatchBookmarks=true&timeoutSeconds=${timeout}`;
    this.#watch = new Watch(kc);
    // client-node 2.0.1 aborts a watch that received no bytes for `requestTimeoutMs` (30 s) and
    // resumes it from its resourceVersion. The field is private in its typings; if a later version
    // drops it, the library's own 30 s applies, which is only noisier.
    (this.#watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = this.#opts.stallMs;
    this.#informer = new ListWatch(watchPath, this.#watch, () => this.#list(kc), false, resource.labelSelector, resource.fieldSelector);
    const emit = (type: 'upsert' | 'delete') => (object: KubernetesObject) => {
      try {
        this.#activity(true);
        this.#queue.push({ type, kind: resource.kind, object: resource.project ? resource.project(object as RawObject) : { ...(object as RawObject) } });
        keepIdentityOnly(object);
      } catch (err) {
        this.#log.error({ err }, 'event handler failed');
      }
    };
    this.#informer.on('add', emit('upsert'));
    this.#informer.on('update', emit('upsert'));
    this.#informer.on('delete', emit('delete'));
    this.#informer.on('connect', () => this.#activity(false));
    this.#informer.on('error', (err) => this.#onError(err));
  }

  /** Starts listing and watching. Resolves once the first attempt was made (not when synced). */
  async start(): Promise<void> {
    this.#stopped = false;
    const tick = Math.min(this.#opts.stallMs, 5_000);
    this.#watchdog = setInterval(() => this.#checkStall(), tick);
    this.#watchdog.unref();
    await this.#startInformer();
  }

  /** Stops for good: no more requests, timers or events. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    clearInterval(this.#watchdog);
    this.#selfAbortUntil = Date.now() + 2_000;
    await this.#informer.stop();
  }

  async #list(kc: KubeConfig): Promise<KubernetesListObject<KubernetesObject>> {
    // ListWatch calls this for its first list and after a 410 only (see the module comment).
    const list = await listCollection(kc, this.resource, this.stats.lists === 0 && !this.resource.pagedFirstList ? { resourceVersion: '0' } : {});
    // ListWatch applies the items (add/update/delete callbacks) synchronously after this promise
    // settles; the 'synced' marker is queued after them.
    setImmediate(() => {
      if (this.#stopped) return;
      this.stats.lists++;
      this.#activity(true);
      this.#log.debug({ items: list.items.length, resourceVersion: list.metadata?.resourceVersion }, 'listed');
      this.#queue.push({ type: 'synced', kind: this.resource.kind });
    });
    return list;
  }

  async #startInformer(): Promise<void> {
    try {
      this.#selfAbortUntil = Date.now() + 2_000;
      await this.#informer.start();
    } catch (err) {
      this.#onError(err);
    }
  }

  #activity(healthy: boolean): void {
    this.stats.lastActivityMs = Date.now();
    if (healthy) this.#failures = 0;
  }

  #onError(err: unknown): void {
    if (this.#stopped) return;
    if ((err as { name?: unknown } | null | undefined)?.name === 'AbortError' && Date.now() < this.#selfAbortUntil) return;
    const reason = errorReason(err);
    this.stats.errors[reason] = (this.stats.errors[reason] ?? 0) + 1;
    this.#failures++;
    const base = Math.min(this.#opts.maxBackoffMs, this.#opts.minBackoffMs * 2 ** Math.min(this.#failures - 1, 20));
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.#log.warn({ reason, err: err instanceof Error ? err.message : String(err), retryInMs: delay }, 'watch failed, restarting');
    this.#scheduleRestart(delay);
  }

  #scheduleRestart(delayMs: number): void {
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      if (this.#stopped) return;
      this.stats.restarts++;
      void this.#startInformer();
    }, delayMs);
    this.#retry.unref();
  }

  #checkStall(): void {
    const rv = this.#informer.latestResourceVersion();
    if (rv !== this.#lastRv) {
      this.#lastRv = rv;
      this.#activity(true);
      return;
    }
    if (this.stats.lastActivityMs === 0 || Date.now() - this.stats.lastActivityMs < 2 * this.#opts.stallMs) return;
    this.stats.errors.stalled = (this.stats.errors.stalled ?? 0) + 1;
    this.#log.warn({ silentMs: Date.now() - this.stats.lastActivityMs }, 'watch stalled, restarting');
    this.stats.lastActivityMs = Date.now();
    this.#scheduleRestart(0);
  }
}

/**
 * Cuts an object the informer has cached down to what its cache compares: name, namespace,
 * uid and resourceVersion (client-node's ListWatch matches objects by name and namespace and
 * detects changes by resourceVersion; kproxy never reads the cache). The store keeps its own
 * normalised copy of what the proxy uses, so the whole object — managedFields, annotations,
 * every endpoint — would otherwise live twice: about 45 MB at 10k Services × 10 endpoints.
 * The queued event holds a shallow copy made before the cut, so the store still sees it all.
 */
export function keepIdentityOnly(object: KubernetesObject): void {
  const o = object as Record<string, unknown>;
  const meta = (o.metadata ?? {}) as Record<string, unknown>;
  // Overwritten, not deleted: `delete` turns an object into a dictionary (~400 bytes each, 7.9 MiB
  // at 10k Services in a heap snapshot of `kproxy run`); undefined keeps its fast shape.
  for (const key of Object.keys(o)) if (key !== 'apiVersion' && key !== 'kind') o[key] = undefined;
  o.metadata = { name: meta.name, namespace: meta.namespace, uid: meta.uid, resourceVersion: meta.resourceVersion };
}

/**
 * The proxy's supervised informers, feeding one queue. An optional resource's informer starts once
 * discovery says the server serves it; a discovery that fails (the server is not up yet, a 5xx)
 * is retried with the supervisor's backoff; a server that does not serve it is logged once and
 * not asked again until the next start (as upstream decides its informers at start).
 */
export class KubeSource {
  readonly informers: readonly SupervisedInformer[];
  readonly #kc: KubeConfig;
  readonly #log: Logger;
  readonly #opts: Required<Pick<SupervisorOptions, 'minBackoffMs' | 'maxBackoffMs'>>;
  readonly #started = new Set<SupervisedInformer>();
  #probe: NodeJS.Timeout | undefined;
  #stopped = false;

  /** @param opts.networkPolicy also watch NetworkPolicies, Namespaces and Pods (api.ts policyResources) */
  constructor(kc: KubeConfig, nodeName: string, queue: EventQueue, log: Logger, opts: SupervisorOptions & { readonly networkPolicy?: boolean } = {}) {
    this.#kc = kc;
    this.#log = log;
    this.#opts = { minBackoffMs: opts.minBackoffMs ?? 500, maxBackoffMs: opts.maxBackoffMs ?? 30_000 };
    const resources = [...proxyResources(nodeName), ...(opts.networkPolicy ? policyResources() : [])];
    this.informers = resources.map((r) => new SupervisedInformer(kc, r, queue, log, opts));
  }

  /**
   * Starts every required informer (their first list runs in the background) and makes the first
   * discovery of each optional one (a failed one is retried in the background).
   */
  async start(): Promise<void> {
    this.#stopped = false;
    await Promise.all(this.informers.map((i) => (i.resource.optional ? this.#discover(i, 0) : this.#start(i))));
  }

  /** Stops every informer and any pending discovery. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#probe);
    await Promise.all([...this.#started].map((i) => i.stop()));
  }

  /** Counters of each informer that was started. */
  stats(): readonly InformerStats[] {
    return this.informers.filter((i) => this.#started.has(i)).map((i) => i.stats);
  }

  async #start(informer: SupervisedInformer): Promise<void> {
    this.#started.add(informer);
    await informer.start();
  }

  async #discover(informer: SupervisedInformer, failures: number): Promise<void> {
    const { kind, optional } = informer.resource;
    try {
      if (await servesResource(this.#kc, informer.resource)) {
        if (!this.#stopped) await this.#start(informer);
        return;
      }
      this.#log.info({ resource: kind }, `the API server does not serve ${optional!.groupVersion.slice(6)}/${optional!.resource} (before Kubernetes v1.33): not watched`);
    } catch (err) {
      if (this.#stopped) return;
      const base = Math.min(this.#opts.maxBackoffMs, this.#opts.minBackoffMs * 2 ** Math.min(failures, 20));
      this.#log.warn({ resource: kind, err: err instanceof Error ? err.message : String(err), retryInMs: base }, 'discovery failed, retrying');
      this.#probe = setTimeout(() => void this.#discover(informer, failures + 1), base);
      this.#probe.unref();
    }
  }
}
