/**
 * When a reconciler syncs next: kube-proxy's `BoundedFrequencyRunner` use (pkg/proxy/iptables/proxier.go)
 * as plain state, and the background verify a write left running, shared by the Service
 * reconcilers (one per IP family) and the NetworkPolicy one.
 * @module
 */

/** Timing of the sync loop, in milliseconds. */
export interface RunnerTiming {
  /** Least time between the starts of two syncs (`--iptables-min-sync-period`, default 1 s). */
  readonly minSyncPeriodMs: number;
  /** Longest time between two syncs (`--iptables-sync-period`, default 30 s). */
  readonly syncPeriodMs: number;
}

/**
 * A sync is due after the min sync period when something is pending, not before a failed sync's
 * backoff, and at the latest one sync period after the last full sync. A sync is full when it is
 * the first, the first after a failure, or a sync period after the last full one, even while
 * changes keep arriving: a busy cluster must not starve the verify that repairs rules someone
 * else changed.
 */
export class SyncSchedule {
  readonly #timing: RunnerTiming;
  #pending = true;
  #needFull = true;
  #failures = 0;
  #lastStart = 0;
  /** When the last successful full sync started. */
  #lastFull = 0;
  #retryAt = 0;
  #verifying: Promise<boolean> | undefined;

  constructor(timing: RunnerTiming) {
    this.#timing = timing;
  }

  /** Failed syncs in a row (0 after a success). */
  get failures(): number {
    return this.#failures;
  }

  /** A background verify the last write started, while it runs; resolves (never rejects) when it is over. */
  get verifying(): Promise<boolean> | undefined {
    return this.#verifying;
  }

  /** Follows a write's background verify: when it finds something, a sync is due (the next write repairs it, or reports the read error). */
  watchVerify(verifying: Promise<boolean>): void {
    const done: Promise<boolean> = verifying.then((found) => {
      if (this.#verifying === done) this.#verifying = undefined;
      if (found) this.#pending = true;
      return found;
    });
    this.#verifying = done;
  }

  /** Something changed: sync after the min sync period. */
  markPending(): void {
    this.#pending = true;
  }

  /** When the next sync should start, in ms since the epoch. */
  dueAt(): number {
    const { minSyncPeriodMs, syncPeriodMs } = this.#timing;
    // Before the first full sync succeeded there is no period to keep, only the backoff.
    const periodic = this.#lastFull === 0 ? Infinity : this.#lastFull + syncPeriodMs;
    if (!this.#pending && !this.#needFull) return periodic;
    return Math.min(periodic, Math.max(this.#lastStart + minSyncPeriodMs, this.#retryAt));
  }

  /** A sync starts at `now` (ms since the epoch). @returns whether it must be full */
  begin(now: number): boolean {
    this.#lastStart = now;
    this.#pending = false;
    return this.#needFull || now >= this.#lastFull + this.#timing.syncPeriodMs;
  }

  /** The sync that began at `startedAt` succeeded. */
  succeeded(startedAt: number, full: boolean): void {
    this.#failures = 0;
    this.#needFull = false;
    this.#retryAt = 0;
    if (full) this.#lastFull = startedAt;
  }

  /** The sync failed: the next is full, after a backoff doubling from the min sync period up to the sync period. @returns the backoff in ms */
  failed(): number {
    this.#failures++;
    this.#needFull = true;
    this.#pending = true;
    const { minSyncPeriodMs, syncPeriodMs } = this.#timing;
    const backoff = Math.min(syncPeriodMs, minSyncPeriodMs * 2 ** Math.min(this.#failures, 10));
    this.#retryAt = Date.now() + backoff;
    return backoff;
  }
}

/** Milliseconds of one sync per phase: plan, render, and the write (or print) with what follows it. */
export interface SyncPhases {
  readonly plan: number;
  readonly render: number;
  /** The backend's apply (reading what it must, writing, verifying in the background excluded) and, for Services, the conntrack cleanup. */
  readonly write: number;
}

/** Times a sync's phases: created as it starts, `mark()` at the end of each phase; a phase not reached is 0. */
export class PhaseClock {
  readonly #marks = [performance.now()];

  /** The current phase ends now. */
  mark(): void {
    this.#marks.push(performance.now());
  }

  /** Milliseconds of each phase, to 0.1 ms. */
  phases(): SyncPhases {
    const m = this.#marks;
    const at = (i: number) => m[Math.min(i, m.length - 1)]!;
    const ms = (i: number) => Math.round((at(i + 1) - at(i)) * 10) / 10;
    return { plan: ms(0), render: ms(1), write: ms(2) };
  }
}
