/**
 * Assembles the proxy for a command: one reconciler per IP family over the backend of
 * `--proxy-mode`. Loads no tool runner: the backends load their writers on their first write.
 * @module
 */
import type { Logger } from 'pino';
import type { ProxyBackend, ProxyMode, Rendered } from '../backends/backend.ts';
import { iptablesBackend } from '../backends/iptables/backend.ts';
import { nftablesBackend } from '../backends/nftables/backend.ts';
import type { NftOutput } from '../backends/nftables/text.ts';
import type { ConntrackFilter } from '../planner/conntrack.ts';
import { Reconciler, type Applier, type RunnerTiming } from '../runner/reconciler.ts';
import type { ProxyMetrics } from '../server/metrics.ts';
import type { IPFamily } from '../state/ip.ts';
import { proxyConfig, type NodeSettings } from './node.ts';

/** What the reconcilers of a command need besides the mode and families. */
export interface ProxyOptions {
  readonly settings: NodeSettings;
  /** Current value of `net.netfilter.nf_conntrack_tcp_be_liberal` (iptables mode). */
  readonly tcpBeLiberal: () => boolean;
  /** How nftables mode prints batches (dry-run). */
  readonly output: NftOutput;
  readonly applier: Applier;
  readonly timing: RunnerTiming;
  readonly log: Logger;
  readonly metrics?: ProxyMetrics;
  readonly conntrack?: (filters: readonly ConntrackFilter[], family: IPFamily) => Promise<string[]>;
  /** False for the one-shot commands. */
  readonly retries?: boolean;
}

/** Timing of the one-shot commands (`sync`, `dry-run`): one full sync, no periods. */
export const ONE_SHOT: RunnerTiming = { minSyncPeriodMs: 0, syncPeriodMs: 30_000 };

/** One reconciler per family, in `families` order, each over its own backend of `mode` writing with the real tools. */
export function createReconcilers(mode: ProxyMode, families: readonly IPFamily[], o: ProxyOptions): Reconciler[] {
  return families.map((family) => {
    const backend: ProxyBackend<Rendered, unknown> = mode === 'nftables' ? nftablesBackend(family, o.output) : iptablesBackend(family, () => ({ conntrackTCPBeLiberal: o.tcpBeLiberal() }));
    return new Reconciler({
      backend,
      config: proxyConfig(o.settings, family),
      applier: o.applier,
      timing: o.timing,
      log: o.log,
      ...(o.metrics ? { metrics: o.metrics } : {}),
      ...(o.conntrack ? { conntrack: o.conntrack } : {}),
      ...(o.retries === undefined ? {} : { retries: o.retries }),
    });
  });
}
