/**
 * The periodic verify both writers run: did someone flush, delete or add to what kproxy wrote?
 *
 * It must cost little and never hold a change back, at any scale. At 10k Services reading kproxy's
 * rules back takes seconds (`nft -j list table`: 5.9 s; `iptables-save` does not finish at all), so:
 * - a check runs **in the background**, beside the writes: the sync loop keeps writing changes
 *   while it reads, and a change never waits for it;
 * - it compares the kernel with the ruleset committed **when it started**, and ignores every
 *   chain or set a write touched while it read (the writer calls {@link BackgroundCheck.touch});
 * - each check has a cheap part (every sync period) and a **deep** part that runs only when the CPU
 *   budget allows: after a deep read that took d seconds, the next waits d / budget (1 % of one
 *   core by default: a 1 s read at most every 100 s; at 10k Services the nft table's 9 s read,
 *   listing and parsing, every 15 minutes). Small tables are read deeply every period;
 * - a write that replaced everything counts as a deep read just made, costing what the write
 *   cost ({@link BackgroundCheck.replaced}): the kernel held exactly the committed rules when it
 *   returned, so the first deep read after a cold start waits too (at 5k Services × 50 endpoints
 *   in nftables mode that read took half a core over the minute after the cold sync, bench/README.md).
 *
 * What a check found is handed to the next write ({@link BackgroundCheck.take}), which repairs it.
 * Upstream kube-proxy v1.26 checks canary chains every period and rewrites everything at most
 * hourly (pkg/proxy/iptables/proxier.go, pkg/util/iptables/monitor.go); kproxy checks what it
 * wrote, within a bounded cost, and rewrites only what differs.
 * @module
 */

/** Share of one core the deep reads may use on average. */
export const DEEP_READ_BUDGET = 0.01;

/** What one finished check found. */
export interface CheckResult<D> {
  /** What differs, when anything does. */
  readonly drift: D | undefined;
  /** Why the check could not read the kernel; the writes go on regardless (as upstream's do). */
  readonly error: Error | undefined;
  /** Whether the check included its deep part. */
  readonly deep: boolean;
}

/**
 * Runs one check at a time in the background and keeps its result for the next write. Not for
 * concurrent writers: one writer owns one of these.
 * @typeParam D what a check reports when the kernel differs
 */
export class BackgroundCheck<D> {
  readonly #budget: number;
  #generation = 0;
  #running: Promise<boolean> | undefined;
  #touched: Set<string> | undefined;
  #result: CheckResult<D> | undefined;
  #deepAfter = 0;

  /** @param budget share of one core the deep part may use on average (0 < budget ≤ 1) */
  constructor(budget = DEEP_READ_BUDGET) {
    if (!(budget > 0 && budget <= 1)) throw new RangeError(`budget must be in (0, 1], got ${budget}`);
    this.#budget = budget;
  }

  /** A check is reading the kernel now. */
  get running(): boolean {
    return this.#running !== undefined;
  }

  /**
   * Starts a check unless one is running.
   * @param check reads the kernel and compares it with what was committed when it was called;
   *   `touched` fills with the names writes touch meanwhile, which it must not count as drift
   * @param now the clock, in ms (tests)
   * @returns a promise that resolves (never rejects) when the check is over, to true when it left a
   *   result for {@link take} (drift, or an error); undefined when a check was already running
   */
  start(check: (deep: boolean, touched: ReadonlySet<string>) => Promise<D | undefined>, now = Date.now()): Promise<boolean> | undefined {
    if (this.#running) return undefined;
    const generation = this.#generation;
    const deep = now >= this.#deepAfter;
    const touched = new Set<string>();
    this.#touched = touched;
    const started = performance.now();
    const running = (async () => {
      let drift: D | undefined;
      let error: Error | undefined;
      try {
        drift = await check(deep, touched);
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      }
      if (deep) this.#deepAfter = now + (performance.now() - started) / this.#budget;
      this.#touched = undefined;
      this.#running = undefined;
      // A write failed meanwhile: the writer rewrites everything anyway, and this result is stale.
      if (generation !== this.#generation || (drift === undefined && error === undefined)) return false;
      this.#result = { drift, error, deep };
      return true;
    })();
    this.#running = running;
    return running;
  }

  /** Records that a write changed `name` (a chain or set), so a running check leaves it out. */
  touch(name: string): void {
    this.#touched?.add(name);
  }

  /** The result of the last finished check, once; undefined when none finished since the last call. */
  take(): CheckResult<D> | undefined {
    const r = this.#result;
    this.#result = undefined;
    return r;
  }

  /**
   * A write replaced everything kproxy owns and took `seconds`: the next deep read waits as if a
   * deep read of that cost had just been made (never sooner than one already due later).
   * @param now the clock, in ms (tests)
   */
  replaced(seconds: number, now = Date.now()): void {
    this.#deepAfter = Math.max(this.#deepAfter, now + (seconds * 1000) / this.#budget);
  }

  /** Forgets what a running or finished check found (the writer's committed state was dropped). */
  reset(): void {
    this.#generation++;
    this.#result = undefined;
  }
}
