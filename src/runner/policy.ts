/**
 * The NetworkPolicy pipeline's reconciler: policy state → {@link planPolicies} → the policy
 * backend (render, then write or print), with the Service reconcilers' timing and error policy
 * ({@link SyncSchedule}): a failed write is logged, counted and retried after a backoff as a full
 * write; a full write every sync period verifies the table in the background and repairs it.
 * Beside the Service reconcilers, sharing nothing with them but the schedule's rules: a failing
 * policy table never holds Service rules back, nor the reverse.
 * @module
 */
import type { Logger } from 'pino';
import type { WriteReport } from '../backends/backend.ts';
import { driftForLog } from '../backends/drift.ts';
import { errorFacts } from '../backends/errors.ts';
import type { NftCommitted } from '../backends/nftables/backend.ts';
import type { PolicyBackend } from '../backends/policy/backend.ts';
import { planPolicies, type PolicyInput, type PolicyPlan } from '../planner/policy.ts';
import { PolicyPlanCache } from '../planner/policycache.ts';
import type { ProxyMetrics } from '../server/metrics.ts';
import { PhaseClock, SyncSchedule, type RunnerTiming, type SyncPhases } from './schedule.ts';

/** What the policy reconciler does with the table: write it, or print the change from what it printed before. */
export type PolicyApplier = { readonly kind: 'write' } | { readonly kind: 'print'; readonly print: (change: string) => void };

/** What the policy reconciler needs. */
export interface PolicyReconcilerDeps {
  readonly backend: PolicyBackend;
  readonly applier: PolicyApplier;
  readonly timing: RunnerTiming;
  readonly log: Logger;
  readonly metrics?: ProxyMetrics;
  /** False in the one-shot commands: a failure is logged without the promise of a retry (default true). */
  readonly retries?: boolean;
}

/** Outcome of one policy sync. */
export interface PolicyOutcome {
  readonly ok: boolean;
  readonly full: boolean;
  readonly plan: PolicyPlan | undefined;
  readonly report: WriteReport | undefined;
  readonly error: string | undefined;
  /** Milliseconds per phase. */
  readonly phasesMs: SyncPhases;
}

/** The policy table's reconciler. Not re-entrant: one `reconcile` at a time (the runner's loop). */
export class PolicyReconciler {
  readonly #d: PolicyReconcilerDeps;
  readonly #log: Logger;
  readonly #schedule: SyncSchedule;
  #plans = new PolicyPlanCache();
  #printed: NftCommitted | undefined;
  #skipped = new Set<string>();
  #conflicts = new Set<string>();

  constructor(deps: PolicyReconcilerDeps) {
    this.#d = deps;
    this.#log = deps.log.child({ table: 'inet kproxy-policy' });
    this.#schedule = new SyncSchedule(deps.timing);
  }

  get backend(): PolicyBackend {
    return this.#d.backend;
  }

  /** The last sync failed and its retry is pending. */
  get failing(): boolean {
    return this.#schedule.failures > 0;
  }

  /** A background verify, while one runs; resolves (never rejects) when it is over. */
  get verifying(): Promise<boolean> | undefined {
    return this.#schedule.verifying;
  }

  /** The policy state changed. */
  markPending(): void {
    this.#schedule.markPending();
  }

  /** When the next sync should start, in ms since the epoch ({@link SyncSchedule.dueAt}). */
  dueAt(): number {
    return this.#schedule.dueAt();
  }

  /** Plans, renders and writes (or prints) the policy table once. Never throws. */
  async reconcile(input: PolicyInput): Promise<PolicyOutcome> {
    const { backend, applier, metrics } = this.#d;
    const startedAt = Date.now();
    const full = this.#schedule.begin(startedAt);
    const clock = new PhaseClock();
    let plan: PolicyPlan | undefined;
    let report: WriteReport | undefined;
    try {
      plan = planPolicies(input, this.#plans);
      clock.mark();
      const rules = backend.render(plan);
      clock.mark();
      this.#reportSkipped(rules.skipped.map((s) => `${s.servicePort}: ${s.reason}`));
      this.#reportConflicts(rules.conflicts);
      if (applier.kind === 'print') {
        const change = backend.diff(this.#printed, rules);
        if (change.text !== undefined) applier.print(change.text);
        this.#printed = change.committed;
      } else {
        report = await backend.apply(rules, { full });
      }
      clock.mark();
    } catch (err) {
      clock.mark();
      // A plan that threw may have left its memory half updated: the next one plans everything.
      this.#plans = new PolicyPlanCache();
      const backoff = this.#schedule.failed();
      metrics?.policySyncFailures.inc();
      if (this.#d.retries === false) this.#log.error({ err: errorFacts(err) }, `syncing the NetworkPolicy table failed: ${(err as Error).message}`);
      else this.#log.error({ err: errorFacts(err), retryInMs: backoff, failures: this.#schedule.failures }, 'syncing the NetworkPolicy table failed; will retry with a full write');
      return { ok: false, full, plan, report, error: (err as Error).message, phasesMs: clock.phases() };
    }
    this.#schedule.succeeded(startedAt, full);
    if (metrics) {
      const p = clock.phases();
      metrics.policySyncDuration.observe((p.plan + p.render + p.write) / 1000);
      metrics.policyLastSync.setToCurrentTime();
      const counts = { none: 0, ingress: 0, egress: 0, both: 0 };
      for (const pod of plan.pods) counts[pod.ingress.isolated ? (pod.egress.isolated ? 'both' : 'ingress') : pod.egress.isolated ? 'egress' : 'none']++;
      for (const [isolated, n] of Object.entries(counts)) metrics.policyPods.set({ isolated }, n);
      if (report) for (const [object, n] of Object.entries(report.rulesTotal)) metrics.policyTotal.set({ object }, n);
    }
    if (report) {
      if (report.verifying) this.#schedule.watchVerify(report.verifying);
      if (report.repaired !== undefined) {
        metrics?.repairs.inc();
        this.#log.warn({ difference: report.repaired, ...(report.drift ? { drift: driftForLog(report.drift) } : {}) }, 'the NetworkPolicy table differed from what kproxy wrote; rewrote it');
      }
      if (report.verifyError !== undefined) {
        metrics?.verifyFailures.inc();
        this.#log.warn({ err: errorFacts(report.verifyError) }, 'verifying the NetworkPolicy table failed; will try again next sync period');
      }
    }
    return { ok: true, full, plan, report, error: undefined, phasesMs: clock.phases() };
  }

  /** Logs each address two pods of this node claim, once, when it first appears. */
  #reportConflicts(conflicts: readonly string[]): void {
    const now = new Set(conflicts);
    for (const c of now) if (!this.#conflicts.has(c)) this.#log.warn({ conflict: c }, `two pods of this node have one address (${c}); the first by name keeps its policy chain`);
    this.#conflicts = now;
  }

  /** Logs each pod the renderer left out (unisolated: a bug, said loudly), once. */
  #reportSkipped(skipped: readonly string[]): void {
    const now = new Set(skipped);
    for (const s of now) if (!this.#skipped.has(s)) this.#log.error({ pod: s }, `a pod's NetworkPolicy rules cannot be written; it is not isolated: ${s}`);
    this.#skipped = now;
  }
}
