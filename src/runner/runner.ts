/**
 * The sync loop of `kproxy run`: drains source events into the state, and keeps the kernel's rules
 * equal to the plan of that state. It owns the error handling (as Cilium's reconciler does): a
 * failed write is logged, counted and retried with backoff, and the retry rewrites everything.
 *
 * Timing follows kube-proxy's `BoundedFrequencyRunner` use (pkg/proxy/iptables/proxier.go):
 * changes are coalesced and synced no more often than `minSyncPeriodMs` after the previous sync
 * started; a periodic sync every `syncPeriodMs` rewrites and verifies the rules even when nothing
 * changed, which repairs rules someone else flushed. Nothing is written before Services,
 * EndpointSlices and the Node have each been listed once (upstream waits for its informers'
 * `HasSynced`), so a restart never writes a half-empty ruleset. Rules stay in the kernel when
 * the loop stops.
 * @module
 */
import type { Logger } from 'pino';
import type { ProxyBackend, Rendered, RenderSkip, WriteReport } from '../backends/backend.ts';
import { errorFacts } from '../backends/errors.ts';
import { healthCheckTargets, type HealthCheckTarget } from '../planner/healthcheck.ts';
import { staleUDPFlows, type ConntrackFilter } from '../planner/conntrack.ts';
import { HeapCompactor } from './memory.ts';
import { PlanCache, planProxy, type ProxyConfig, type ProxyPlan } from '../planner/plan.ts';
import type { ObjectKind, RawObject } from '../sources/objects.ts';
import type { EventQueue, SourceEvent } from '../sources/queue.ts';
import type { ServicePortState } from '../state/model.ts';
import type { ApplyResult, ProxyStateStore } from '../state/store.ts';
import type { ProxyHealth } from '../server/health.ts';
import type { ProxyMetrics } from '../server/metrics.ts';

/** EndpointSlice annotation the EndpointSlice controller sets to the time of the triggering change. */
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

/** Timing of the sync loop, in milliseconds. */
export interface RunnerTiming {
  /** Least time between the starts of two syncs (`--iptables-min-sync-period`, default 1 s). */
  readonly minSyncPeriodMs: number;
  /** Longest time between two syncs (`--iptables-sync-period`, default 30 s). */
  readonly syncPeriodMs: number;
}

/** What the runner needs; every part is plain data or a stage's own object. */
export interface RunnerDeps<R extends Rendered> {
  readonly store: ProxyStateStore;
  readonly queue: EventQueue;
  readonly backend: ProxyBackend<R>;
  /** Read at every sync: node configuration, including the current local addresses. */
  readonly config: () => ProxyConfig;
  readonly timing: RunnerTiming;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics;
  readonly log: Logger;
  /** Given the health-check targets after every successful sync. */
  readonly healthChecks?: (targets: readonly HealthCheckTarget[]) => Promise<void>;
  /** Dry-run: hand each sync's change to this instead of writing it. */
  readonly dryRun?: (change: string) => void;
  /** Deletes stale UDP conntrack entries after a successful write; returns error messages. */
  readonly conntrack?: (filters: readonly ConntrackFilter[]) => Promise<string[]>;
}

/** Outcome of one sync, for tests and logs. */
export interface SyncOutcome {
  readonly ok: boolean;
  readonly full: boolean;
  readonly durationMs: number;
  readonly plan: ProxyPlan | undefined;
  readonly report: WriteReport | undefined;
  readonly error: string | undefined;
}

const REQUIRED: readonly ObjectKind[] = ['Service', 'EndpointSlice', 'Node'];

/** The sync loop. Create, then `run(signal)`; it resolves when the signal aborts. */
export class ProxyRunner<R extends Rendered> {
  readonly #d: RunnerDeps<R>;
  readonly #synced = new Set<ObjectKind>();
  readonly #plans = new PlanCache();
  readonly #heap = new HeapCompactor();
  #previous: R | undefined;
  #previousPlan: ProxyPlan | undefined;
  #pending = false;
  #needFull = true;
  #failures = 0;
  #lastStart = 0;
  /** When the last successful full (verifying) sync started; the next is due one sync period later, whatever the churn. */
  #lastFull = 0;
  #retryAt = 0;
  #triggerTimes: number[] = [];
  #syncs = 0;
  /** Destinations in conflict at the last sync: each is logged once, when it first appears. */
  #conflicts = new Set<string>();
  /** Service ports left out of the last render, and why: each is logged and counted once, when it is first left out. */
  #skipped = new Map<string, string>();
  /** A verify the backend runs in the background; resolves when it is over. */
  #verifying: Promise<void> | undefined;

  constructor(deps: RunnerDeps<R>) {
    this.#d = deps;
  }

  /** Successful and failed syncs so far. */
  get syncs(): number {
    return this.#syncs;
  }

  /** Every required resource has been listed at least once. */
  get ready(): boolean {
    return REQUIRED.every((k) => this.#synced.has(k));
  }

  /** Runs until `signal` aborts. Never throws; sync failures are retried. */
  async run(signal: AbortSignal): Promise<void> {
    const { queue, timing, health } = this.#d;
    health.queued(Date.now());
    while (!signal.aborted) {
      this.#drain();
      const now = Date.now();
      const due = this.#nextSyncAt();
      if (due <= now) {
        await this.syncOnce();
        this.#heap.afterSync();
        continue;
      }
      const wait = queue.wait(Math.min(due - now, timing.syncPeriodMs), signal);
      await (this.#verifying ? Promise.race([wait, this.#verifying]) : wait);
    }
  }

  /** When the next sync should start (ms since the epoch); Infinity while not ready. */
  #nextSyncAt(): number {
    if (!this.ready) return Infinity;
    const { minSyncPeriodMs, syncPeriodMs } = this.#d.timing;
    const periodic = this.#lastFull + syncPeriodMs;
    if (!this.#pending && !this.#needFull) return periodic;
    return Math.min(periodic, Math.max(this.#lastStart + minSyncPeriodMs, this.#retryAt));
  }

  /** Applies queued events to the state. */
  #drain(): void {
    const events = this.#d.queue.drain();
    if (events.length === 0) return;
    let services = 0;
    let endpoints = 0;
    for (const event of events) {
      try {
        if (event.type === 'synced') {
          if (!this.#synced.has(event.kind)) this.#d.log.info({ resource: event.kind }, 'initial list received');
          this.#synced.add(event.kind);
          continue;
        }
        if (event.kind === 'Service') services++;
        if (event.kind === 'EndpointSlice') {
          endpoints++;
          const trigger = triggerTime(event.object);
          if (trigger !== undefined) this.#triggerTimes.push(trigger);
        }
        this.#apply(event);
      } catch (err) {
        // The state stage validates everything; this is a bug, not bad input. Keep going.
        this.#d.log.error({ err, kind: event.type === 'synced' ? undefined : event.kind }, 'applying an event failed');
      }
    }
    const { metrics, health } = this.#d;
    metrics.serviceChangesTotal.inc(services);
    metrics.endpointChangesTotal.inc(endpoints);
    if (services + endpoints > 0 || events.some((e) => e.kind === 'Node')) {
      this.#pending = true;
      health.queued(Date.now());
      metrics.lastQueued.setToCurrentTime();
    }
    metrics.serviceChangesPending.inc(services);
    metrics.endpointChangesPending.inc(endpoints);
  }

  #apply(event: Exclude<SourceEvent, { type: 'synced' }>): void {
    const { store, health } = this.#d;
    if (event.type === 'delete') {
      const key = objectKey(event.object);
      if (event.kind === 'Node') health.setNodeEligible(false);
      else if (key !== undefined && event.kind === 'Service') store.deleteService(key);
      else if (key !== undefined) store.deleteEndpointSlice(key);
      return;
    }
    const result = event.kind === 'Service' ? store.applyService(event.object) : event.kind === 'EndpointSlice' ? store.applyEndpointSlice(event.object) : store.applyNode(event.object);
    if (event.kind === 'Node' && !result.ignored && result.issues.length === 0) health.setNodeEligible(!store.node.deleting);
    this.#report(event.kind, result);
  }

  #report(kind: ObjectKind, result: ApplyResult): void {
    for (const issue of result.issues) this.#d.metrics.invalidObjects.inc({ kind: issue.kind, skipped: issue.skipped });
    logApplyResult(this.#d.log, kind, result);
  }

  /**
   * Plans, renders and writes (or prints) the rules once. A periodic or first sync, or the first
   * after a failure, is full. Never throws.
   */
  async syncOnce(): Promise<SyncOutcome> {
    const { store, backend, metrics, health, log } = this.#d;
    const started = performance.now();
    const startedAt = Date.now();
    this.#lastStart = startedAt;
    // Full when asked for, and at least once a sync period even while changes keep arriving: a
    // busy cluster must not starve the verify that repairs rules someone else changed.
    const full = this.#needFull || startedAt >= this.#lastFull + this.#d.timing.syncPeriodMs;
    const dirty = store.takeDirty();
    const triggers = this.#triggerTimes;
    this.#triggerTimes = [];
    this.#pending = false;
    this.#syncs++;
    let states: ServicePortState[];
    let plan: ProxyPlan | undefined;
    let report: WriteReport | undefined;
    try {
      states = store.servicePortStates();
      plan = planProxy(states, store.node, this.#d.config(), this.#plans);
      this.#conflicts = reportConflicts(log, plan, this.#conflicts);
      metrics.frontendConflicts.set(plan.conflicts.length);
      const rules = backend.render(plan);
      this.#skipped = reportSkipped(log, metrics, rules.skipped, this.#skipped);
      if (this.#d.dryRun) {
        const change = backend.describeChange(this.#previous, rules);
        if (change !== undefined) this.#d.dryRun(change);
      } else {
        report = await backend.write(rules, { full, previous: this.#previous });
      }
      this.#previous = rules;
      const stale = staleUDPFlows(this.#previousPlan, plan);
      this.#previousPlan = plan;
      if (stale.length > 0 && this.#d.conntrack && !this.#d.dryRun) {
        const errors = await this.#d.conntrack(stale);
        for (const e of errors) log.warn({ err: e }, 'deleting stale UDP conntrack entries failed');
      }
    } catch (err) {
      const message = (err as Error).message;
      this.#failures++;
      this.#needFull = true;
      this.#pending = true;
      for (const key of dirty) store.markDirty(key);
      for (const t of triggers) this.#triggerTimes.push(t);
      const backoff = Math.min(this.#d.timing.syncPeriodMs, this.#d.timing.minSyncPeriodMs * 2 ** Math.min(this.#failures, 10));
      this.#retryAt = Date.now() + backoff;
      (backend.mode === 'nftables' ? metrics.nftablesSyncFailures : metrics.restoreFailures).inc();
      // Upstream counts a failed incremental iptables restore also as a partial restore failure (KEP-3453).
      if (backend.mode === 'iptables' && !full) metrics.partialRestoreFailures.inc();
      log.error({ err: errorFacts(err), retryInMs: backoff, failures: this.#failures }, 'syncing proxy rules failed; will retry with a full sync');
      return { ok: false, full, durationMs: performance.now() - started, plan, report, error: message };
    }
    const seconds = (performance.now() - started) / 1000;
    this.#failures = 0;
    this.#needFull = false;
    this.#retryAt = 0;
    if (full) this.#lastFull = startedAt;
    health.updated(Date.now());
    metrics.syncDuration.observe(seconds);
    (full ? metrics.syncFullDuration : metrics.syncPartialDuration).observe(seconds);
    metrics.lastSync.setToCurrentTime();
    metrics.serviceChangesPending.set(0);
    metrics.endpointChangesPending.set(0);
    metrics.noLocalEndpoints.set({ traffic_policy: 'internal' }, plan.noLocalEndpointsInternal);
    metrics.noLocalEndpoints.set({ traffic_policy: 'external' }, plan.noLocalEndpointsExternal);
    if (report?.verifying) this.#watchVerify(report.verifying);
    if (report) {
      const nft = backend.mode === 'nftables';
      const [last, total, label] = nft ? [metrics.nftablesLast, metrics.nftablesTotal, 'object'] : [metrics.rulesLast, metrics.rulesTotal, 'table'];
      for (const [key, n] of Object.entries(report.rulesWritten)) last.set({ [label]: key }, n);
      for (const [key, n] of Object.entries(report.rulesTotal)) total.set({ [label]: key }, n);
      if (report.repaired !== undefined) {
        metrics.repairs.inc();
        log.warn({ difference: report.repaired }, "the kernel's rules differed from what kproxy wrote; rewrote them");
      }
      if (report.verifyError !== undefined) metrics.verifyFailures.inc();
      if (report.verifyError !== undefined) log.warn({ err: errorFacts(report.verifyError) }, "verifying the kernel's rules failed; will try again next sync period");
    }
    const now = Date.now();
    // Network programming latency (upstream's metric): from the EndpointSlice controller's trigger
    // time to now, when the change is in the kernel. The log line carries the longest of this sync.
    let programming: number | undefined;
    for (const t of triggers) {
      if (t > now) continue;
      metrics.networkProgramming.observe((now - t) / 1000);
      programming = Math.max(programming ?? 0, (now - t) / 1000);
    }
    log.info(
      {
        full,
        ...(programming === undefined ? {} : { programmingSeconds: Number(programming.toFixed(3)) }),
        seconds: Number(seconds.toFixed(4)),
        servicesChanged: dirty.size,
        servicePorts: plan.servicePorts.length,
        endpoints: plan.totalEndpoints,
        rulesWritten: report?.rulesWritten,
        chainsDeleted: report?.chainsDeleted,
      },
      'proxy rules synced',
    );
    if (this.#d.healthChecks) {
      try {
        await this.#d.healthChecks(healthCheckTargets(states, store.nodeName, plan.family));
      } catch (err) {
        log.error({ err: (err as Error).message }, 'updating health check servers failed');
      }
    }
    return { ok: true, full, durationMs: seconds * 1000, plan, report, error: undefined };
  }

  /** When a background verify finds something, sync soon: the next write repairs it (or reports the read error). */
  #watchVerify(verifying: Promise<boolean>): void {
    const done = verifying.then((found) => {
      if (this.#verifying === done) this.#verifying = undefined;
      if (found) this.#pending = true;
      // A verify reads the kernel's rules (at 10k, ~130k chain names): its garbage counts too.
      this.#heap.afterSync();
    });
    this.#verifying = done;
  }
}

/**
 * Logs what applying one object did: a warning per skipped object or endpoint, naming it and the
 * field; a debug line when it is deliberately not proxied. Shared by `run` and the file commands.
 * @returns the number of issues logged
 */
export function logApplyResult(log: Logger, kind: ObjectKind, result: ApplyResult): number {
  for (const issue of result.issues) {
    log.warn(
      { kind: issue.kind, object: issue.object, field: issue.field, skipped: issue.skipped },
      `skipping ${issue.skipped === 'object' ? issue.kind : `endpoint of ${issue.kind}`} ${issue.object}: ${issue.message}`,
    );
  }
  if (result.ignored) log.debug({ kind }, `ignored: ${result.ignored}`);
  return result.issues.length;
}

/**
 * Logs a warning for each destination two Services claim, when it first appears: which Service
 * keeps it and which loses it. Shared by `run` and the file commands.
 * @param before what the previous call returned (empty for one-shot commands)
 * @returns the conflicts now, for the next call
 */
export function reportConflicts(log: Logger, plan: ProxyPlan, before: ReadonlySet<string> = new Set()): Set<string> {
  const now = new Set<string>();
  for (const c of plan.conflicts) {
    const id = `${c.destination} ${c.winner} ${c.loser}`;
    now.add(id);
    if (!before.has(id))
      log.warn({ destination: c.destination, role: c.kind, kept: c.winner, lost: c.loser }, `${c.loser} also claims ${c.destination}; ${c.winner} keeps it (the oldest Service wins)`);
  }
  return now;
}

/**
 * Logs (a warning naming the service port and why) and counts in `kproxy_invalid_objects_total`
 * each service port the backend could not render, when it was not already left out before.
 * Shared by `run` and the file commands.
 * @param before what the previous call returned (empty for one-shot commands)
 * @returns the service ports left out now, for the next call
 */
export function reportSkipped(log: Logger, metrics: ProxyMetrics | undefined, skipped: readonly RenderSkip[], before: ReadonlyMap<string, string> = new Map()): Map<string, string> {
  const now = new Map<string, string>();
  for (const s of skipped) {
    now.set(s.servicePort, s.reason);
    if (before.get(s.servicePort) === s.reason) continue;
    log.warn({ kind: 'Service', servicePort: s.servicePort, skipped: 'object' }, `skipping service port ${s.servicePort}: its rules cannot be written: ${s.reason}`);
    metrics?.invalidObjects.inc({ kind: 'Service', skipped: 'object' });
  }
  return now;
}

/** `namespace/name` of a raw object when both are plain names; undefined otherwise. */
function objectKey(o: RawObject): string | undefined {
  const ns = o.metadata?.namespace ?? 'default';
  const name = o.metadata?.name;
  return typeof ns === 'string' && typeof name === 'string' ? `${ns}/${name}` : undefined;
}

/** The slice's trigger-time annotation in ms since the epoch, if present and valid. */
function triggerTime(o: RawObject): number | undefined {
  const annotations = (o.metadata as { annotations?: unknown } | undefined)?.annotations;
  const value = typeof annotations === 'object' && annotations !== null ? (annotations as Record<string, unknown>)[TRIGGER_TIME_ANNOTATION] : undefined;
  if (typeof value !== 'string' || value.length > 64) return undefined;
  const t = Date.parse(value);
  return Number.isFinite(t) ? t : undefined;
}
