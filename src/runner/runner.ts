/**
 * The sync loop of `kproxy run`: drains source events into the state, and keeps the kernel's rules
 * equal to the plan of that state through one {@link Reconciler} per IP family, which owns the
 * error handling (as Cilium's reconciler does): a failed write is logged, counted and retried
 * with backoff, and the retry rewrites everything, for that family alone.
 *
 * Timing follows kube-proxy's `BoundedFrequencyRunner` use (pkg/proxy/iptables/proxier.go):
 * changes are coalesced and synced no more often than `minSyncPeriodMs` after the previous sync
 * started; a periodic sync every `syncPeriodMs` rewrites and verifies the rules even when nothing
 * changed, which repairs rules someone else flushed. Nothing is written before Services,
 * EndpointSlices and the Node have each been listed once (upstream waits for its informers'
 * `HasSynced`), so a restart never writes a half-empty ruleset. Rules stay in the kernel when
 * the loop stops.
 *
 * With --network-policy the same loop drives the second pipeline: NetworkPolicy, Pod and Namespace
 * events go to the policy state, and the policy table's reconciler (policy.ts) syncs on its own
 * schedule, beside the Service families and sharing nothing with them, once NetworkPolicies,
 * Pods, Namespaces and the Node have each been listed.
 * @module
 */
import type { Logger } from 'pino';
import { healthCheckTargets, type HealthCheckTarget } from '../planner/healthcheck.ts';
import { HeapCompactor } from './memory.ts';
import type { ObjectKind, RawObject } from '../sources/objects.ts';
import type { EventQueue, SourceEvent } from '../sources/queue.ts';
import type { ServicePortState } from '../state/model.ts';
import type { ApplyResult, ProxyStateStore } from '../state/store.ts';
import type { ProxyHealth } from '../server/health.ts';
import type { ProxyMetrics } from '../server/metrics.ts';
import { ipFamilyLabel } from '../server/labels.ts';
import type { FamilyOutcome, Reconciler, RunnerTiming } from './reconciler.ts';
import type { PolicyStateStore } from '../state/policystore.ts';
import type { PolicyOutcome, PolicyReconciler } from './policy.ts';

export type { RunnerTiming } from './reconciler.ts';

/** EndpointSlice annotation the EndpointSlice controller sets to the time of the triggering change. */
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

/** What the runner needs; every part is plain data or a stage's own object. */
export interface RunnerDeps {
  readonly store: ProxyStateStore;
  readonly queue: EventQueue;
  /** One per IP family this node proxies (IPv4 first), all of one proxy mode. */
  readonly reconcilers: readonly Reconciler[];
  readonly timing: RunnerTiming;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics;
  readonly log: Logger;
  /** Given the health-check targets after every successful sync. */
  readonly healthChecks?: (targets: readonly HealthCheckTarget[]) => Promise<void>;
  /** The NetworkPolicy pipeline (--network-policy): its state and reconciler, fed by the same queue. */
  readonly policy?: { readonly store: PolicyStateStore; readonly reconciler: PolicyReconciler };
}

/** Outcome of one sync, for tests and logs: one entry per family that synced. */
export interface SyncOutcome {
  /** Every family that synced succeeded. */
  readonly ok: boolean;
  /** Some family's sync was full. */
  readonly full: boolean;
  readonly durationMs: number;
  readonly families: readonly FamilyOutcome[];
}

const REQUIRED: readonly ObjectKind[] = ['Service', 'EndpointSlice', 'Node'];
/** The policy table is written once these are listed: a table from half the pods or half the policies would isolate the wrong pods. */
const POLICY_REQUIRED: readonly ObjectKind[] = ['NetworkPolicy', 'Pod', 'Namespace', 'Node'];
const POLICY_KINDS: ReadonlySet<ObjectKind> = new Set(['NetworkPolicy', 'Pod', 'Namespace']);

/*
 * ServiceCIDRs are not required: an API server before v1.33 serves none, and a ClusterRole without
 * them must not keep the node's Services unprogrammed. Their first list is one more change, as
 * upstream's proxier does not wait for them either.
 */

/** The sync loop. Create, then `run(signal)`; it resolves when the signal aborts. */
export class ProxyRunner {
  readonly #d: RunnerDeps;
  readonly #synced = new Set<ObjectKind>();
  readonly #heap = new HeapCompactor();
  #triggerTimes: number[] = [];
  #syncs = 0;
  /** Verifies being watched, so each is followed by one heap check. */
  readonly #watched = new WeakSet<Promise<boolean>>();

  constructor(deps: RunnerDeps) {
    if (deps.reconcilers.length === 0) throw new RangeError('the runner needs at least one IP family');
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

  /** With --network-policy: every resource the policy table needs has been listed at least once. */
  get policyReady(): boolean {
    return this.#d.policy !== undefined && POLICY_REQUIRED.every((k) => this.#synced.has(k));
  }

  /**
   * Runs until `signal` aborts, then waits for the syncs in flight. Never throws; sync failures
   * are retried. The Service families and the policy table each have at most one sync in flight,
   * and neither waits for the other: events keep being drained while either writes, so a pod that
   * starts during a long Service write reaches the policy table on the policy's own schedule.
   */
  async run(signal: AbortSignal): Promise<void> {
    const { queue, timing, health, reconcilers } = this.#d;
    health.queued(Date.now());
    const policy = this.#d.policy?.reconciler;
    let services: Promise<void> | undefined;
    let policies: Promise<void> | undefined;
    while (!signal.aborted) {
      this.#drain();
      const now = Date.now();
      const servicesDue = this.ready && !services ? Math.min(...reconcilers.map((r) => r.dueAt())) : Infinity;
      const policyDue = policy && this.policyReady && !policies ? policy.dueAt() : Infinity;
      if (servicesDue <= now) {
        const run: Promise<void> = this.#sync(reconcilers.filter((r) => r.dueAt() <= now)).then(() => {
          this.#heap.afterSync();
          if (services === run) services = undefined;
        });
        services = run;
      }
      if (policyDue <= now) {
        const run: Promise<void> = this.#syncPolicy().then(() => {
          this.#heap.afterSync();
          if (policies === run) policies = undefined;
        });
        policies = run;
      }
      const due = Math.min(servicesDue <= now ? Infinity : servicesDue, policyDue <= now ? Infinity : policyDue);
      const wait = queue.wait(Math.min(due - now, timing.syncPeriodMs), signal);
      const verifies = [...reconcilers, ...(policy ? [policy] : [])].map((r) => r.verifying).filter((v) => v !== undefined);
      for (const v of verifies) this.#watchVerify(v);
      const inFlight = [services, policies].filter((p) => p !== undefined);
      await Promise.race([wait, ...verifies, ...inFlight]);
    }
    await Promise.all([services, policies]);
  }

  /** Applies queued events to the state. */
  #drain(): void {
    const events = this.#d.queue.drain();
    if (events.length === 0) return;
    let services = 0;
    let endpoints = 0;
    let policyChanges = 0;
    for (const event of events) {
      try {
        if (event.type === 'synced') {
          if (!this.#synced.has(event.kind)) this.#d.log.info({ resource: event.kind }, 'initial list received');
          this.#synced.add(event.kind);
          continue;
        }
        if (POLICY_KINDS.has(event.kind)) {
          policyChanges++;
          this.#applyPolicy(event);
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
    if (services + endpoints > 0 || events.some((e) => e.type !== 'synced' && (e.kind === 'Node' || e.kind === 'ServiceCIDR'))) {
      for (const r of this.#d.reconcilers) r.markPending();
      health.queued(Date.now());
      for (const r of this.#d.reconcilers) metrics.lastQueued.setToCurrentTime(ipFamilyLabel(r.family));
    }
    metrics.serviceChangesPending.inc(services);
    metrics.endpointChangesPending.inc(endpoints);
    // The Node gives the policy table the node's addresses.
    if (policyChanges > 0 || events.some((e) => e.type !== 'synced' && e.kind === 'Node')) this.#d.policy?.reconciler.markPending();
  }

  /** Applies a NetworkPolicy, Pod or Namespace event to the policy state (dropped without --network-policy). */
  #applyPolicy(event: Exclude<SourceEvent, { type: 'synced' }>): void {
    const store = this.#d.policy?.store;
    if (!store) return;
    if (event.type === 'delete') {
      const key = objectKey(event.object);
      if (event.kind === 'Namespace') {
        if (typeof event.object.metadata?.name === 'string') store.deleteNamespace(event.object.metadata.name);
      } else if (key !== undefined && event.kind === 'Pod') store.deletePod(key);
      else if (key !== undefined) store.deleteNetworkPolicy(key);
      return;
    }
    const result = event.kind === 'Pod' ? store.applyPod(event.object) : event.kind === 'Namespace' ? store.applyNamespace(event.object) : store.applyNetworkPolicy(event.object);
    this.#report(event.kind, result);
  }

  /** Plans and writes the policy table once; its reconciler owns errors and retries. */
  async #syncPolicy(): Promise<PolicyOutcome> {
    const { store, log } = this.#d;
    const { store: policies, reconciler } = this.#d.policy!;
    const o = await reconciler.reconcile({ state: policies, changes: policies.takeChanges(), nodeName: store.nodeName, nodeAddresses: store.node.addresses });
    if (o.ok && o.plan) {
      const isolated = o.plan.pods.filter((p) => p.ingress.isolated || p.egress.isolated).length;
      log.info(
        {
          full: o.full,
          localPods: o.plan.pods.length,
          isolatedPods: isolated,
          peerSets: o.plan.peerSets.size,
          phasesMs: o.phasesMs,
          ...(o.report ? { rulesWritten: o.report.rulesWritten } : {}),
        },
        'NetworkPolicy table synced',
      );
    }
    return o;
  }

  #apply(event: Exclude<SourceEvent, { type: 'synced' }>): void {
    const { store, health } = this.#d;
    if (event.type === 'delete') {
      const key = objectKey(event.object);
      if (event.kind === 'Node') health.setNodeEligible(false);
      else if (event.kind === 'ServiceCIDR') {
        if (typeof event.object.metadata?.name === 'string') store.deleteServiceCIDR(event.object.metadata.name);
      } else if (key !== undefined && event.kind === 'Service') store.deleteService(key);
      else if (key !== undefined) store.deleteEndpointSlice(key);
      return;
    }
    const result =
      event.kind === 'Service'
        ? store.applyService(event.object)
        : event.kind === 'EndpointSlice'
          ? store.applyEndpointSlice(event.object)
          : event.kind === 'ServiceCIDR'
            ? store.applyServiceCIDR(event.object)
            : store.applyNode(event.object);
    if (event.kind === 'Node' && !result.ignored && result.issues.length === 0) health.setNodeEligible(!store.node.deleting);
    this.#report(event.kind, result);
  }

  #report(kind: ObjectKind, result: ApplyResult): void {
    for (const issue of result.issues) this.#d.metrics.invalidObjects.inc({ kind: issue.kind, skipped: issue.skipped });
    logApplyResult(this.#d.log, kind, result);
  }

  /**
   * Plans, renders and writes (or prints) the rules of `families` at once, as upstream's
   * per-family proxiers run side by side (pkg/proxy/metaproxier): one family's write (at 10k
   * Services an `iptables-restore` of 11 s) overlaps the other's reads, planning and write (with
   * iptables-legacy, whose one lock both families take, the other waits for it with `-w 5`, as
   * upstream's proxiers do). Each reconciler owns its errors and retries, so a failing family
   * does not hold the other back. A print applier prints before its first await, so IPv4's
   * change still comes first.
   */
  async #sync(families: readonly Reconciler[]): Promise<SyncOutcome> {
    const { store, metrics, health, log, reconcilers } = this.#d;
    const started = performance.now();
    const dirty = store.takeDirty();
    const triggers = this.#triggerTimes;
    this.#triggerTimes = [];
    this.#syncs++;
    const states: ServicePortState[] = store.servicePortStates();
    const outcomes: FamilyOutcome[] = await Promise.all(families.map((r) => r.reconcile(states, store.node, store.serviceCIDRs)));
    const ok = outcomes.every((o) => o.ok);
    const full = outcomes.some((o) => o.full);
    const seconds = (performance.now() - started) / 1000;
    if (!ok) {
      // A failed family retries with every change (its plan cache finds them by identity); the
      // change count and the trigger times wait for that sync.
      for (const key of dirty) store.markDirty(key);
      for (const t of triggers) this.#triggerTimes.push(t);
    }
    const good = outcomes.filter((o) => o.ok);
    if (good.length === 0) return { ok, full, durationMs: seconds * 1000, families: outcomes };
    const plans = good.map((o) => o.plan!);
    // Updated only when every family is current, not only the ones that synced now: a family stuck failing turns /healthz unhealthy.
    if (reconcilers.every((r) => !r.failing)) health.updated(Date.now());
    // Per family, as upstream v1.36's per-family proxiers report: each family's own sync time.
    for (const o of good) {
      const family = ipFamilyLabel(o.family);
      const familySeconds = (o.phasesMs.plan + o.phasesMs.render + o.phasesMs.write) / 1000;
      metrics.syncDuration.observe(family, familySeconds);
      (o.full ? metrics.syncFullDuration : metrics.syncPartialDuration).observe(family, familySeconds);
      metrics.lastSync.setToCurrentTime(family);
      metrics.noLocalEndpoints.set({ ...family, traffic_policy: 'internal' }, o.plan!.noLocalEndpointsInternal);
      metrics.noLocalEndpoints.set({ ...family, traffic_policy: 'external' }, o.plan!.noLocalEndpointsExternal);
    }
    metrics.serviceChangesPending.set(0);
    metrics.endpointChangesPending.set(0);
    const sum = (f: (p: (typeof plans)[number]) => number) => plans.reduce((n, p) => n + f(p), 0);
    if (good.length === reconcilers.length) metrics.frontendConflicts.set(sum((p) => p.conflicts.length));
    this.#setRuleGauges(good);
    const now = Date.now();
    // Network programming latency (upstream's metric): from the EndpointSlice controller's trigger
    // time to now, when the change is in the kernel. The log line carries the longest of this sync.
    let programming: number | undefined;
    for (const t of ok ? triggers : []) {
      if (t > now) continue;
      // Each family programmed the change (a slice is of one family; upstream's proxier of the
      // other family sees no change of its own and observes nothing).
      for (const o of good) metrics.networkProgramming.observe(ipFamilyLabel(o.family), (now - t) / 1000);
      programming = Math.max(programming ?? 0, (now - t) / 1000);
    }
    const written = good.filter((o) => o.report !== undefined);
    log.info(
      {
        full,
        ...(programming === undefined ? {} : { programmingSeconds: Number(programming.toFixed(3)) }),
        seconds: Number(seconds.toFixed(4)),
        servicesChanged: dirty.size,
        ipFamilies: good.map((o) => `IPv${o.family}`),
        // Per family, so a slow sync says where its time went (the families run at once).
        phasesMs: Object.fromEntries(outcomes.map((o) => [`IPv${o.family}`, o.phasesMs])),
        servicePorts: sum((p) => p.servicePorts.length),
        endpoints: sum((p) => p.totalEndpoints),
        ...(written.length > 0 ? { rulesWritten: sumRecords(written.map((o) => o.report!.rulesWritten)), chainsDeleted: written.reduce((n, o) => n + o.report!.chainsDeleted, 0) } : {}),
      },
      'proxy rules synced',
    );
    if (this.#d.healthChecks) {
      try {
        await this.#d.healthChecks(mergeTargets(reconcilers.map((r) => healthCheckTargets(states, store.nodeName, r.family))));
      } catch (err) {
        log.error({ err: (err as Error).message }, 'updating health check servers failed');
      }
    }
    return { ok, full, durationMs: seconds * 1000, families: outcomes };
  }

  /** The mode's rule gauges, per family: this sync's writes, and the family's rules. */
  #setRuleGauges(outcomes: readonly FamilyOutcome[]): void {
    const { reconcilers, metrics } = this.#d;
    for (const o of outcomes) {
      const r = reconcilers.find((x) => x.family === o.family);
      if (o.report !== undefined && r) r.backend.setRuleGauges(metrics, o.report.rulesWritten, r.totals);
    }
  }

  /** After a background verify (at 10k, ~130k chain names read), its garbage is checked for too. */
  #watchVerify(verifying: Promise<boolean>): void {
    if (this.#watched.has(verifying)) return;
    this.#watched.add(verifying);
    void verifying.then(() => this.#heap.afterSync());
  }
}

/** Sums records of counts key by key. */
function sumRecords(records: readonly Readonly<Record<string, number>>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of records) for (const [k, n] of Object.entries(r)) out[k] = (out[k] ?? 0) + n;
  return out;
}

/**
 * One health-check target per node port over the families: a dual-stack Service's pods count
 * once, so the family that sees more local endpoints gives the count.
 */
function mergeTargets(perFamily: readonly (readonly HealthCheckTarget[])[]): HealthCheckTarget[] {
  const byPort = new Map<number, HealthCheckTarget>();
  for (const targets of perFamily)
    for (const t of targets) {
      const seen = byPort.get(t.port);
      if (!seen || t.localEndpoints > seen.localEndpoints) byPort.set(t.port, t);
    }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}

/**
 * Logs what applying one object did: a warning per skipped object or endpoint, naming it and the
 * field; a debug line when it is deliberately not proxied. Shared by `run` and the file commands.
 * @param origin where the object came from, when it came from a file (`cluster.yaml, document 2.items[3]`)
 * @returns the number of issues logged
 */
export function logApplyResult(log: Logger, kind: ObjectKind, result: ApplyResult, origin?: string): number {
  for (const issue of result.issues) {
    log.warn(
      { kind: issue.kind, object: issue.object, field: issue.field, skipped: issue.skipped, ...(origin === undefined ? {} : { origin }) },
      `skipping ${issue.skipped === 'object' ? issue.kind : issue.skipped === 'rules' ? `the rules of ${issue.kind}` : `endpoint of ${issue.kind}`} ${issue.object}${origin === undefined ? '' : ` (${origin})`}: ${issue.message}${issue.skipped === 'rules' ? ' (it still isolates the pods it selects: nothing of it is allowed)' : ''}`,
    );
  }
  if (result.ignored) log.debug({ kind }, `ignored: ${result.ignored}`);
  return result.issues.length;
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
