/**
 * One IP family's path from state to kernel: plan → render → apply (or print), with the policy
 * around it. Between the runner and a backend, as Cilium's loadbalancer reconciler sits between
 * its desired state and the BPF maps: the backend only renders, diffs and writes; the reconciler
 * decides when a sync is full, retries a failed write with backoff as a full one, keeps what was
 * committed, counts and logs. A dual-stack node runs two reconcilers, one per family, as
 * upstream's metaproxier runs one proxier per family (pkg/proxy/metaproxier): they share the
 * state but nothing else, so a family whose writes fail is retried on its own while the other
 * keeps syncing.
 *
 * `kproxy run`, `run --dry-run`, `sync` and `dry-run` all go through this class; they differ in
 * the {@link Applier} only.
 * @module
 */
import type { Logger } from 'pino';
import type { ProxyBackend, Rendered, RenderSkip, WriteReport } from '../backends/backend.ts';
import { driftForLog } from '../backends/drift.ts';
import { errorFacts } from '../backends/errors.ts';
import { staleUDPFlows, type ConntrackFilter } from '../planner/conntrack.ts';
import { PlanCache, planProxy, type ProxyConfig, type ProxyPlan } from '../planner/plan.ts';
import type { ProxyMetrics } from '../server/metrics.ts';
import type { CIDR, IPFamily } from '../state/ip.ts';
import type { NodeInfo, ServicePortState } from '../state/model.ts';
import { PhaseClock, SyncSchedule, type RunnerTiming, type SyncPhases } from './schedule.ts';

export type { RunnerTiming } from './schedule.ts';

/**
 * What a reconciler does with the rules: write them to the kernel (`run`, `sync`), or print the
 * change from what it printed before (`dry-run`, `run --dry-run`: the first print is everything).
 */
export type Applier = { readonly kind: 'write' } | { readonly kind: 'print'; readonly print: (change: string, family: IPFamily) => void };

/** What one reconciler needs; every part is plain data or a stage's own object. */
export interface ReconcilerDeps<R extends Rendered, S> {
  readonly backend: ProxyBackend<R, S>;
  /** Read at every sync: this family's node configuration, including the current local addresses. */
  readonly config: () => ProxyConfig;
  readonly applier: Applier;
  readonly timing: RunnerTiming;
  /** Lines carry `ipFamily`. */
  readonly log: Logger;
  /** Absent in the one-shot commands. */
  readonly metrics?: ProxyMetrics;
  /** Deletes stale UDP conntrack entries of this family after a successful write; returns error messages. */
  readonly conntrack?: (filters: readonly ConntrackFilter[], family: IPFamily) => Promise<string[]>;
  /** False in the one-shot commands: a failure is logged without the promise of a retry (default true). */
  readonly retries?: boolean;
}

/** Outcome of one family's sync, for the runner, tests and logs. */
export interface FamilyOutcome {
  readonly family: IPFamily;
  readonly ok: boolean;
  readonly full: boolean;
  readonly plan: ProxyPlan | undefined;
  readonly report: WriteReport | undefined;
  readonly error: string | undefined;
  /** Where this sync's time went, in milliseconds (a phase not reached is 0): for the sync log line. */
  readonly phasesMs: SyncPhases;
}

/** One family's reconciler. Not re-entrant: one `reconcile` at a time (the runner's loop). */
export class Reconciler<R extends Rendered = Rendered, S = unknown> {
  readonly #d: ReconcilerDeps<R, S>;
  readonly #log: Logger;
  readonly #plans = new PlanCache();
  /** What the print applier printed last (the write applier's writer keeps the kernel's). */
  #printed: S | undefined;
  #previousPlan: ProxyPlan | undefined;
  readonly #schedule: SyncSchedule;
  /** Destinations in conflict at the last sync: each is logged once, when it first appears. */
  #conflicts = new Set<string>();
  /** Service ports left out of the last render, and why: each is logged and counted once, when it is first left out. */
  #skipped = new Map<string, string>();
  /** `rulesTotal` of the last successful write: what this family holds. */
  #totals: Readonly<Record<string, number>> = {};

  constructor(deps: ReconcilerDeps<R, S>) {
    this.#d = deps;
    this.#log = deps.log.child({ ipFamily: `IPv${deps.backend.family}` });
    this.#schedule = new SyncSchedule(deps.timing);
  }

  get family(): IPFamily {
    return this.#d.backend.family;
  }

  get backend(): ProxyBackend<R, S> {
    return this.#d.backend;
  }

  /** The last sync failed and its retry is pending. */
  get failing(): boolean {
    return this.#schedule.failures > 0;
  }

  /** What the family's rules hold after the last successful write, keyed as the backend reports (`nat`, `rules`, …). */
  get totals(): Readonly<Record<string, number>> {
    return this.#totals;
  }

  /** A background verify, while one runs; resolves (never rejects) when it is over. */
  get verifying(): Promise<boolean> | undefined {
    return this.#schedule.verifying;
  }

  /** The state changed: this family has something to sync. */
  markPending(): void {
    this.#schedule.markPending();
  }

  /**
   * When this family's next sync should start, in ms since the epoch: after the min sync period
   * when something is pending, not before a failed write's backoff, and at the latest one sync
   * period after the last full sync (kube-proxy's `BoundedFrequencyRunner` use).
   */
  dueAt(): number {
    return this.#schedule.dueAt();
  }

  /**
   * Plans, renders and applies this family's rules once. Full when it is the first, the first
   * after a failure, or a sync period after the last full one, even while changes keep arriving:
   * a busy cluster must not starve the verify that repairs rules someone else changed. Never throws:
   * a failure is logged, counted in the backend's metric, and retried after a backoff as a full sync.
   * @param serviceCIDRs the cluster's ServiceCIDR ranges (ProxyStateStore.serviceCIDRs), of any family
   */
  async reconcile(states: readonly ServicePortState[], node: NodeInfo, serviceCIDRs: readonly CIDR[] = []): Promise<FamilyOutcome> {
    const { backend, applier, metrics } = this.#d;
    const log = this.#log;
    const startedAt = Date.now();
    const full = this.#schedule.begin(startedAt);
    let plan: ProxyPlan | undefined;
    let report: WriteReport | undefined;
    const clock = new PhaseClock();
    try {
      plan = planProxy(states, node, this.#d.config(), this.#plans, serviceCIDRs);
      clock.mark();
      this.#conflicts = reportConflicts(log, plan, this.#conflicts);
      const rules = backend.render(plan);
      clock.mark();
      this.#skipped = reportSkipped(log, metrics, rules.skipped, this.#skipped);
      if (applier.kind === 'print') {
        const change = backend.diff(this.#printed, rules);
        if (change.text !== undefined) applier.print(change.text, backend.family);
        this.#printed = change.committed;
      } else {
        report = await backend.apply(rules, { full });
      }
      const stale = staleUDPFlows(this.#previousPlan, plan);
      this.#previousPlan = plan;
      if (stale.length > 0 && this.#d.conntrack && applier.kind === 'write') {
        const errors = await this.#d.conntrack(stale, backend.family);
        for (const e of errors) log.warn({ err: e }, 'deleting stale UDP conntrack entries failed');
      }
      clock.mark();
    } catch (err) {
      clock.mark();
      const backoff = this.#schedule.failed();
      if (metrics) backend.countFailure(metrics, full);
      if (this.#d.retries === false) log.error({ err: errorFacts(err) }, `syncing proxy rules failed: ${(err as Error).message}`);
      else log.error({ err: errorFacts(err), retryInMs: backoff, failures: this.#schedule.failures }, 'syncing proxy rules failed; will retry with a full sync');
      return { family: backend.family, ok: false, full, plan, report, error: (err as Error).message, phasesMs: clock.phases() };
    }
    this.#schedule.succeeded(startedAt, full);
    if (report) {
      this.#totals = report.rulesTotal;
      if (report.verifying) this.#schedule.watchVerify(report.verifying);
      if (report.repaired !== undefined) {
        metrics?.repairs.inc();
        log.warn({ difference: report.repaired, ...(report.drift ? { drift: driftForLog(report.drift) } : {}) }, "the kernel's rules differed from what kproxy wrote; rewrote them");
      }
      if (report.verifyError !== undefined) {
        metrics?.verifyFailures.inc();
        log.warn({ err: errorFacts(report.verifyError) }, "verifying the kernel's rules failed; will try again next sync period");
      }
    }
    return { family: backend.family, ok: true, full, plan, report, error: undefined, phasesMs: clock.phases() };
  }
}

/**
 * Logs a warning for each destination two Services claim, when it first appears: which Service
 * keeps it and which loses it.
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
