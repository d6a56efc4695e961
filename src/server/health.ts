/**
 * `/healthz` and `/livez` with upstream kube-proxy's semantics (pkg/proxy/healthcheck/
 * proxy_health.go, cmd/kube-proxy/app/server.go), and the per-Service health-check node port
 * servers that cloud load balancers probe for `externalTrafficPolicy: Local`
 * (pkg/proxy/healthcheck/service_health.go).
 *
 * The proxy is healthy unless a change has been waiting for a sync longer than `healthTimeout`
 * (2 × sync period): a wedged sync loop shows up as 503. `/healthz` also answers 503 while the
 * node is being deleted, so load balancers drain it; `/livez` ignores that.
 * @module
 */
import http from 'node:http';
import type { Logger } from 'pino';
import type { HealthCheckTarget } from '../planner/healthcheck.ts';
import { listen, type ProxyMetrics } from './metrics.ts';

/** The sync loop's health, fed by the runner. Times are ms since the epoch. */
export class ProxyHealth {
  readonly healthTimeoutMs: number;
  #lastUpdated = 0;
  #oldestQueued = 0;
  #nodeEligible = true;

  /** @param healthTimeoutMs how long a change may wait for a sync (upstream: 2 × syncPeriod) */
  constructor(healthTimeoutMs: number) {
    this.healthTimeoutMs = healthTimeoutMs;
  }

  /** A change is waiting for a sync (upstream `QueuedUpdate`); the oldest one counts. */
  queued(nowMs: number): void {
    if (this.#oldestQueued === 0) this.#oldestQueued = nowMs;
  }

  /** A sync succeeded (upstream `Updated`): nothing is waiting any more. */
  updated(nowMs: number): void {
    this.#lastUpdated = nowMs;
    this.#oldestQueued = 0;
  }

  /** The node is (not) being deleted. */
  setNodeEligible(eligible: boolean): void {
    this.#nodeEligible = eligible;
  }

  get lastUpdatedMs(): number {
    return this.#lastUpdated;
  }

  /** No change has waited longer than the timeout. */
  healthy(nowMs: number): boolean {
    return this.#oldestQueued === 0 || nowMs - this.#oldestQueued < this.healthTimeoutMs;
  }

  /** Status and body of `/healthz` (`withNode`) or `/livez`. */
  answer(nowMs: number, withNode: boolean): { code: number; body: string } {
    const ok = this.healthy(nowMs) && (!withNode || this.#nodeEligible);
    const body: Record<string, unknown> = {
      lastUpdated: new Date(this.#lastUpdated).toISOString(),
      currentTime: new Date(nowMs).toISOString(),
    };
    if (withNode) body.nodeEligible = this.#nodeEligible;
    return { code: ok ? 200 : 503, body: JSON.stringify(body) };
  }
}

const JSON_HEADERS = { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' };

/** Serves `/healthz` and `/livez` from `health`, counting answers in upstream's metrics. */
export function startHealthServer(health: ProxyHealth, metrics: ProxyMetrics, bind: { host: string; port: number }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
      return;
    }
    const { code, body } = health.answer(Date.now(), path === '/healthz');
    (path === '/healthz' ? metrics.healthzTotal : metrics.livezTotal).inc({ code: String(code) });
    res.writeHead(code, JSON_HEADERS).end(body);
  });
  return listen(server, bind.host, bind.port);
}

/**
 * The health-check node port servers: one HTTP listener per target port, opened and closed as
 * targets come and go. Each answers any path with upstream's JSON body and 200 when the Service
 * has a ready endpoint on this node and the proxy is healthy, else 503.
 */
export class ServiceHealthServers {
  readonly #servers = new Map<number, { server: http.Server; target: HealthCheckTarget }>();
  readonly #host: string;
  readonly #proxyHealthy: () => boolean;
  readonly #log: Logger;

  /**
   * @param host address to listen on (upstream: the node port addresses; default all)
   * @param proxyHealthy read per request: the proxy's own health (`serviceProxyHealthy`)
   */
  constructor(host: string, proxyHealthy: () => boolean, log: Logger) {
    this.#host = host;
    this.#proxyHealthy = proxyHealthy;
    this.#log = log;
  }

  /** Ports currently served. */
  get ports(): number[] {
    return [...this.#servers.keys()].sort((a, b) => a - b);
  }

  /**
   * Makes the listeners match `targets`. A port that cannot be bound is logged and retried on the
   * next update (upstream emits `FailedToStartServiceHealthcheck`). Never throws.
   */
  async update(targets: readonly HealthCheckTarget[]): Promise<void> {
    const wanted = new Map(targets.map((t) => [t.port, t]));
    for (const [port, entry] of this.#servers) {
      if (wanted.has(port)) continue;
      this.#servers.delete(port);
      entry.server.close();
      entry.server.closeAllConnections();
    }
    for (const target of targets) {
      const existing = this.#servers.get(target.port);
      if (existing) {
        existing.target = target;
        continue;
      }
      const entry = { server: http.createServer((_req, res) => this.#answer(entry.target, res)), target };
      try {
        await listen(entry.server, this.#host, target.port);
        this.#servers.set(target.port, entry);
      } catch (err) {
        this.#log.warn(
          { port: target.port, service: `${target.namespace}/${target.name}`, err: (err as Error).message },
          'FailedToStartServiceHealthcheck: cannot listen on the health check node port',
        );
      }
    }
  }

  /** Closes every listener. */
  async close(): Promise<void> {
    await this.update([]);
  }

  #answer(target: HealthCheckTarget, res: http.ServerResponse): void {
    const healthy = this.#proxyHealthy();
    const body = { service: { namespace: target.namespace, name: target.name }, localEndpoints: target.localEndpoints, serviceProxyHealthy: healthy };
    res.writeHead(target.localEndpoints > 0 && healthy ? 200 : 503, JSON_HEADERS).end(JSON.stringify(body));
  }
}
