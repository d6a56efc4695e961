/**
 * What the reconciler needs of a proxy backend: one interface, one implementation per proxy mode
 * (iptables, nftables) and IP family, so the sync loop, `sync`, dry-run and tests are shared.
 * @module
 */
import type { IdentityCache } from '../planner/cache.ts';
import type { DriftItem } from './drift.ts';
import type { ProxyPlan, ServicePortPlan } from '../planner/plan.ts';
import type { ProxyMetrics } from '../server/metrics.ts';
import type { IPFamily } from '../state/ip.ts';

/** Proxy modes kproxy implements (`--proxy-mode`). */
export type ProxyMode = 'iptables' | 'nftables';

/** Every proxy mode, for `--proxy-mode` choices. */
export const PROXY_MODES: readonly ProxyMode[] = ['iptables', 'nftables'];

/** What one write did, for logs and metrics. */
export interface WriteReport {
  /**
   * What was written: iptables rules per table (upstream's `sync_proxy_rules_iptables_last{table}`),
   * or nftables `rules` and `elements`.
   */
  readonly rulesWritten: Readonly<Record<string, number>>;
  /** What the backend now holds, keyed as `rulesWritten` (`sync_proxy_rules_iptables_total{table}`). */
  readonly rulesTotal: Readonly<Record<string, number>>;
  /** Stale chains removed. */
  readonly chainsDeleted: number;
  /** Set when a verify had found the kernel changed behind kproxy's back and this write repaired it: what differed. */
  readonly repaired?: string;
  /** The same, per service port (drift.ts): what `kproxy verify` would have reported. */
  readonly drift?: readonly DriftItem[];
  /** Set when a verify could not read the kernel; the writes go on regardless. */
  readonly verifyError?: Error;
  /**
   * Set when this write started a verify (in the background; see verify.ts): resolves, never
   * rejects, when it is over, to true when it found something the next write repairs or reports.
   */
  readonly verifying?: Promise<boolean>;
}

/** A service port whose rules could not be rendered: left out, with the reason; every other one is written. */
export interface RenderSkip {
  /** `namespace/name:portName PROTOCOL`. */
  readonly servicePort: string;
  readonly reason: string;
}

/** What every backend's rendered form carries besides its rules. */
export interface Rendered {
  /** Service ports left out because their rules could not be rendered. */
  readonly skipped: readonly RenderSkip[];
}

/** The key of a service port's part in a ruleset: `namespace/name:port PROTOCOL`. */
export function servicePortKey(sp: Pick<ServicePortPlan, 'name' | 'protocol'>): string {
  return `${sp.name} ${sp.protocol}`;
}

/**
 * Renders every service port's part, in plan order, reusing the cached part of each service port
 * whose plan is the same object as last time. A part whose rendering throws becomes a
 * {@link RenderSkip} (remembered like a part) instead of failing the whole ruleset, so no single
 * object can stop the rules of all others. (The state stage validates every field, so a skip means
 * a limit the validators do not know, such as a tool's.)
 * @param cache begun by the caller with its context
 * @returns the parts by {@link servicePortKey}, and the service ports left out
 */
export function renderParts<P extends object>(
  plan: ProxyPlan,
  render: (sp: ServicePortPlan) => P,
  cache?: IdentityCache<ServicePortPlan, P | RenderSkip>,
): { parts: Map<string, P>; skipped: RenderSkip[] } {
  const parts = new Map<string, P>();
  const skipped: RenderSkip[] = [];
  for (const sp of plan.servicePorts) {
    const key = servicePortKey(sp);
    const make = (): P | RenderSkip => {
      try {
        return render(sp);
      } catch (err) {
        return { servicePort: key, reason: err instanceof Error ? err.message : String(err) };
      }
    };
    const part = cache ? cache.get(sp, make) : make();
    if ('reason' in part && 'servicePort' in part) skipped.push(part);
    else parts.set(key, part);
  }
  return { parts, skipped };
}

/** What a write from a committed state to a desired ruleset sends, and the state after it (pure). */
export interface BackendChange<S> {
  /** The backend's own input format (an `iptables-restore` script, an nft batch), or undefined when nothing changes. */
  readonly text: string | undefined;
  /** The committed state once `text` is applied: the next diff's starting point. */
  readonly committed: S;
}

/**
 * A proxy backend for one proxy mode and one IP family. `R` is its rendered form of a plan, `S`
 * what a diff starts from (the last ruleset, and for nftables the chains whose deletion waits).
 * The reconciler (runner/reconciler.ts) owns everything between the plan and the kernel: which
 * sync is full, retries, error handling and logging. A backend supplies:
 *
 * - `render`: pure and fast, plan in, rules out (reusing its render cache);
 * - `diff`: pure, what a write from `committed` to `next` sends, as the tool's input (dry-run
 *   prints it; undefined `committed` gives everything);
 * - `apply`: makes the kernel hold `next`, atomically (all or nothing), writing only what changed
 *   since its last successful apply (everything after a failure). `full` asks it to verify the
 *   kernel against what it wrote, in the background (once a sync period); what a verify finds is
 *   repaired by the following apply;
 * - its own metrics: upstream counts failures and rules under per-mode names.
 */
export interface ProxyBackend<R extends Rendered = Rendered, S = unknown> {
  readonly mode: ProxyMode;
  readonly family: IPFamily;
  render(plan: ProxyPlan): R;
  diff(committed: S | undefined, next: R): BackendChange<S>;
  /** @throws an Error naming what failed; the kernel keeps its previous rules */
  apply(next: R, options: { readonly full: boolean }): Promise<WriteReport>;
  /**
   * Reads what the kernel holds of this backend's rules in its family, and compares it with `next`
   * (`kproxy verify`; the periodic check of `apply` uses the same comparison). Never writes.
   * @returns the differences, per service port; empty when they agree
   * @throws an Error when the kernel cannot be read
   */
  compare(next: R): Promise<readonly DriftItem[]>;
  /** Removes everything the backend owns in its family. @returns the number of chains (or tables) removed */
  cleanup(): Promise<number>;
  /**
   * Counts a failed apply of this backend's family: `kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family}`
   * (and the partial one when not full, KEP-3453) or `…_nftables_sync_failures_total{ip_family}`.
   */
  countFailure(metrics: ProxyMetrics, full: boolean): void;
  /**
   * Sets the rule gauges of this mode and family (`…_iptables_last/total{ip_family,table}`,
   * `kproxy_…_nftables_last/total{ip_family,object}`) to `written` (this sync) and `total` (the family's table).
   */
  setRuleGauges(metrics: ProxyMetrics, written: Readonly<Record<string, number>>, total: Readonly<Record<string, number>>): void;
}

/**
 * Walks the service ports whose rendered part differs between two rulesets: `visit(old, part)` for
 * each part that is new or not the same object as before (`old` undefined when new), and
 * `visit(old, undefined)` for each part that is gone. Parts that are the same object are skipped,
 * which is what makes both backends' diffs cost what changed (see the planner's IdentityCache).
 * @param previous parts of the committed ruleset, by service port key
 * @param next parts of the desired ruleset, by service port key
 */
export function forChangedParts<P>(previous: ReadonlyMap<string, P>, next: ReadonlyMap<string, P>, visit: (old: P | undefined, part: P | undefined) => void): void {
  for (const [key, part] of next) {
    const old = previous.get(key);
    if (old !== part) visit(old, part);
  }
  for (const [key, old] of previous) if (!next.has(key)) visit(old, undefined);
}
