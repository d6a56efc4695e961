/**
 * Prometheus metrics under upstream kube-proxy's names (pkg/proxy/metrics/metrics.go, subsystem
 * `kubeproxy`), so existing dashboards and alerts keep working, plus kproxy's own (`kproxy_*`:
 * skipped input, informer restarts) and the process metrics of prom-client. Served by
 * {@link startMetricsServer} on `--metrics-bind-address` at `/metrics`.
 * @module
 */
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets, linearBuckets } from 'prom-client';
import type { InformerStats } from '../sources/kube.ts';
import { IP_FAMILY } from './labels.ts';

/** Upstream's network-programming buckets: 0.25 s … 5 min. */
function networkProgrammingBuckets(): number[] {
  return [...linearBuckets(0.25, 0.25, 2), ...linearBuckets(1, 1, 59), ...linearBuckets(60, 5, 12), ...linearBuckets(120, 30, 7)];
}

/** The proxy's metrics, on a registry of their own. */
export class ProxyMetrics {
  readonly registry = new Registry();
  // Upstream v1.36's shapes: the sync, timing and rule metrics carry `ip_family` (IPv4, IPv6), as its
  // per-family proxiers each report their own; the change counters are the node's, unlabelled.
  /** `kubeproxy_sync_proxy_rules_duration_seconds{ip_family}`: 1 ms × 2^0..14. */
  readonly syncDuration = this.#histogram('kubeproxy_sync_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds', exponentialBuckets(0.001, 2, 15));
  readonly syncFullDuration = this.#histogram('kubeproxy_sync_full_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for full resyncs', exponentialBuckets(0.001, 2, 15));
  readonly syncPartialDuration = this.#histogram('kubeproxy_sync_partial_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for partial resyncs', exponentialBuckets(0.001, 2, 15));
  readonly networkProgramming = this.#histogram('kubeproxy_network_programming_duration_seconds', 'In Cluster Network Programming Latency in seconds', networkProgrammingBuckets());
  readonly lastSync = this.#gauge('kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'The last time proxy rules were successfully synced', [IP_FAMILY]);
  readonly lastQueued = this.#gauge('kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', 'The last time a sync of proxy rules was queued', [IP_FAMILY]);
  readonly endpointChangesPending = this.#gauge('kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'Pending proxy rules Endpoint changes');
  readonly endpointChangesTotal = this.#counter('kubeproxy_sync_proxy_rules_endpoint_changes_total', 'Cumulative proxy rules Endpoint changes');
  readonly serviceChangesPending = this.#gauge('kubeproxy_sync_proxy_rules_service_changes_pending', 'Pending proxy rules Service changes');
  readonly serviceChangesTotal = this.#counter('kubeproxy_sync_proxy_rules_service_changes_total', 'Cumulative proxy rules Service changes');
  readonly noLocalEndpoints = this.#gauge('kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'Number of services with a Local traffic policy and no endpoints', [IP_FAMILY, 'traffic_policy']);
  readonly restoreFailures = this.#counter('kubeproxy_sync_proxy_rules_iptables_restore_failures_total', 'Cumulative proxy iptables restore failures', [IP_FAMILY]);
  readonly partialRestoreFailures = this.#counter('kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total', 'Cumulative proxy iptables partial restore failures', [IP_FAMILY]);
  readonly rulesTotal = this.#gauge('kubeproxy_sync_proxy_rules_iptables_total', 'Total number of iptables rules owned by kube-proxy', [IP_FAMILY, 'table']);
  readonly rulesLast = this.#gauge('kubeproxy_sync_proxy_rules_iptables_last', 'Number of iptables rules written by kube-proxy in last sync', [IP_FAMILY, 'table']);
  /** Upstream's nftables-mode failure counter. */
  readonly nftablesSyncFailures = this.#counter('kubeproxy_sync_proxy_rules_nftables_sync_failures_total', 'Cumulative proxy nftables sync failures', [IP_FAMILY]);
  /**
   * Upstream's count of failed deletions of stale nftables chains, which it makes in a transaction
   * after the sync's. kproxy deletes them in the sync's own transaction, whose failure is a sync
   * failure: this stays 0, exported so that upstream's dashboards and alerts find it.
   */
  readonly nftablesCleanupFailures = this.#counter('kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total', 'Cumulative proxy nftables cleanup failures', [IP_FAMILY]);
  /** nftables mode: rules and map/set elements written by the last sync (upstream has no equivalent). */
  readonly nftablesLast = this.#gauge('kproxy_sync_proxy_rules_nftables_last', 'Number of nftables rules and set elements written by kproxy in last sync', [IP_FAMILY, 'object']);
  /** nftables mode: rules and map/set elements in kproxy's table. */
  readonly nftablesTotal = this.#gauge('kproxy_sync_proxy_rules_nftables_total', 'Total number of nftables rules and set elements owned by kproxy', [IP_FAMILY, 'object']);
  /** Writes that repaired what a verify found changed behind kproxy's back. */
  readonly repairs = this.#counter('kproxy_sync_proxy_rules_repairs_total', 'Writes that repaired rules a periodic verify found changed by someone else');
  readonly healthzTotal = this.#counter('kubeproxy_proxy_healthz_total', 'Cumulative proxy healthz HTTP status', ['code']);
  readonly livezTotal = this.#counter('kubeproxy_proxy_livez_total', 'Cumulative proxy livez HTTP status', ['code']);
  /** Destinations two Services claim; the newer one loses each (planner/frontends.ts). */
  readonly frontendConflicts = this.#gauge('kproxy_service_destination_conflicts', 'Destinations (IP:port/protocol or NodePort) claimed by more than one Service; only the oldest gets them');
  /** Verifies that could not read the kernel's rules. */
  readonly verifyFailures = this.#counter('kproxy_sync_proxy_rules_verify_failures_total', "Periodic verifies that could not read the kernel's rules");
  // NetworkPolicy (--network-policy): its own table and sync, so its own series.
  /** Seconds of each NetworkPolicy sync (plan, render, write). */
  readonly policySyncDuration = new Histogram({
    name: 'kproxy_network_policy_sync_duration_seconds',
    help: 'NetworkPolicy sync latency in seconds',
    buckets: exponentialBuckets(0.001, 2, 15),
    registers: [this.registry],
  });
  readonly policySyncFailures = this.#counter('kproxy_network_policy_sync_failures_total', 'Cumulative NetworkPolicy table sync failures');
  readonly policyLastSync = this.#gauge('kproxy_network_policy_sync_last_timestamp_seconds', 'The last time the NetworkPolicy table was successfully synced');
  /** Local pods by isolation: none, ingress, egress, both. */
  readonly policyPods = this.#gauge('kproxy_network_policy_local_pods', 'Pods on this node by the directions their NetworkPolicies isolate', ['isolated']);
  /** Rules and set elements in the NetworkPolicy table. */
  readonly policyTotal = this.#gauge('kproxy_network_policy_rules_total', 'Total number of nftables rules and set elements in the NetworkPolicy table', ['object']);
  /** Objects skipped because a field failed validation. */
  readonly invalidObjects = this.#counter('kproxy_invalid_objects_total', 'Objects (or single endpoints) skipped because a field was invalid', ['kind', 'skipped']);

  /**
   * @param informers read at scrape time: list, restart and error counts of the watch sources
   */
  constructor(informers: () => readonly InformerStats[] = () => []) {
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    new Gauge({
      name: 'kproxy_informer_restarts',
      help: 'Restarts of each watch after an error or a stall',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const s of informers()) this.set({ resource: s.kind }, s.restarts);
      },
    });
    new Gauge({
      name: 'kproxy_informer_lists',
      help: 'Complete lists of each resource (first sync and re-lists)',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const s of informers()) this.set({ resource: s.kind }, s.lists);
      },
    });
    new Gauge({
      name: 'kproxy_informer_errors',
      help: 'Watch and list errors of each resource, by reason',
      labelNames: ['resource', 'reason'],
      registers,
      collect() {
        for (const s of informers()) for (const [reason, n] of Object.entries(s.errors)) this.set({ resource: s.kind, reason }, n);
      },
    });
    new Gauge({
      name: 'kproxy_informer_last_event_age_seconds',
      help: 'Seconds since each watch last showed activity (event, bookmark, list or connect)',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const s of informers()) if (s.lastActivityMs > 0) this.set({ resource: s.kind }, (Date.now() - s.lastActivityMs) / 1000);
      },
    });
  }

  #histogram(name: string, help: string, buckets: number[]): Histogram {
    return new Histogram({ name, help, buckets, labelNames: [IP_FAMILY], registers: [this.registry] });
  }

  #gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  #counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
}

/** A bind address `host:port` split for `server.listen`; `[v6]:port` accepted. */
export function parseBindAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]*)):(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`${JSON.stringify(text)} is not a bind address (host:port)`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** Starts an HTTP server on `host:port`; resolves once it listens. @throws on bind failure */
export async function listen(server: http.Server, host: string, port: number): Promise<http.Server> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** Serves `GET /metrics` (Prometheus text format) from `metrics`. */
export function startMetricsServer(metrics: ProxyMetrics, bind: { host: string; port: number }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
    );
  });
  return listen(server, bind.host, bind.port);
}
