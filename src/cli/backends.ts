/**
 * Assembles the proxy for a command: one reconciler per IP family over the backend of
 * `--proxy-mode`. Loads no tool runner: the backends load their writers on their first write.
 * @module
 */
import type { ProxyBackend, ProxyMode, Rendered } from '../backends/backend.ts';
import { iptablesBackend } from '../backends/iptables/backend.ts';
import { nftablesBackend } from '../backends/nftables/backend.ts';
import type { NftOutput } from '../backends/nftables/text.ts';
import { Reconciler, type ReconcilerDeps, type RunnerTiming } from '../runner/reconciler.ts';
import type { IPFamily } from '../state/ip.ts';
import { policyBackend } from '../backends/policy/backend.ts';
import { PolicyReconciler, type PolicyApplier } from '../runner/policy.ts';
import { proxyConfig, type NodeSettings } from './node.ts';

/** What the reconcilers of a command need besides the mode and families: the node settings, and each reconciler's own deps but its backend and config. */
export interface ProxyOptions extends Omit<ReconcilerDeps<Rendered, unknown>, 'backend' | 'config'> {
  readonly settings: NodeSettings;
  /** Current value of `net.netfilter.nf_conntrack_tcp_be_liberal` (iptables mode). */
  readonly tcpBeLiberal: () => boolean;
  /** How nftables mode prints batches (dry-run). */
  readonly output: NftOutput;
}

/** Timing of the one-shot commands (`sync`, `dry-run`): one full sync, no periods. */
export const ONE_SHOT: RunnerTiming = { minSyncPeriodMs: 0, syncPeriodMs: 30_000 };

/** The backend of `mode` in `family`, over the real tools. */
export function createBackend(mode: ProxyMode, family: IPFamily, o: Pick<ProxyOptions, 'tcpBeLiberal' | 'output'>): ProxyBackend<Rendered, unknown> {
  return mode === 'nftables' ? nftablesBackend(family, o.output) : iptablesBackend(family, () => ({ conntrackTCPBeLiberal: o.tcpBeLiberal() }));
}

/** One reconciler per family, in `families` order, each over its own backend of `mode` writing with the real tools. */
export function createReconcilers(mode: ProxyMode, families: readonly IPFamily[], o: ProxyOptions): Reconciler[] {
  return families.map((family) => {
    const backend = createBackend(mode, family, o);
    const { settings, tcpBeLiberal: _, output: __, ...deps } = o;
    return new Reconciler({ ...deps, backend, config: proxyConfig(settings, family) });
  });
}

/** The NetworkPolicy table's reconciler, writing with the real nft (or printing, as `applier` says). */
export function createPolicyReconciler(o: Pick<ProxyOptions, 'output' | 'timing' | 'log' | 'metrics' | 'retries'> & { readonly applier: PolicyApplier }): PolicyReconciler {
  return new PolicyReconciler({
    backend: policyBackend(o.output),
    applier: o.applier,
    timing: o.timing,
    log: o.log,
    ...(o.metrics ? { metrics: o.metrics } : {}),
    ...(o.retries === undefined ? {} : { retries: o.retries }),
  });
}
