import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ProxyHealth, ServiceHealthServers, startHealthServer } from '../../src/server/health.ts';
import { ProxyMetrics, parseBindAddress, startMetricsServer } from '../../src/server/metrics.ts';
import type { AddressInfo } from 'node:net';
import type http from 'node:http';

const log = pino({ level: 'silent' });
let closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of closers) await f();
  closers = [];
});
const port = (s: http.Server) => (s.address() as AddressInfo).port;

describe('ProxyHealth (upstream proxy_health.go semantics)', () => {
  it('is healthy until a queued change waits longer than the timeout', () => {
    const h = new ProxyHealth(60_000);
    expect(h.healthy(0)).toBe(true);
    h.queued(1_000);
    h.queued(30_000); // the oldest pending change counts
    expect(h.healthy(60_999)).toBe(true);
    expect(h.healthy(61_000)).toBe(false);
    h.updated(62_000);
    expect(h.healthy(500_000)).toBe(true);
  });

  it('/healthz includes node eligibility, /livez ignores it', () => {
    const h = new ProxyHealth(60_000);
    h.updated(Date.parse('2026-11-21T10:00:00Z'));
    h.setNodeEligible(false);
    const now = Date.parse('2026-11-21T10:00:05Z');
    expect(h.answer(now, true)).toEqual({ code: 503, body: JSON.stringify({ lastUpdated: '2026-11-21T10:00:00.000Z', currentTime: '2026-11-21T10:00:05.000Z', nodeEligible: false }) });
    expect(h.answer(now, false).code).toBe(200);
  });
});

describe('HTTP servers', () => {
  it('serve /healthz, /livez and count the answers in /metrics', async () => {
    const metrics = new ProxyMetrics();
    const health = new ProxyHealth(60_000);
    const hs = await startHealthServer(health, metrics, { host: '127.0.0.1', port: 0 });
    const ms = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
    closers.push(
      () => hs.close(),
      () => ms.close(),
    );
    const r = await fetch(`http://127.0.0.1:${port(hs)}/healthz`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect((await fetch(`http://127.0.0.1:${port(hs)}/other`)).status).toBe(404);
    const text = await (await fetch(`http://127.0.0.1:${port(ms)}/metrics`)).text();
    expect(text).toContain('kubeproxy_proxy_healthz_total{code="200"} 1');
    expect(text).toContain('# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram');
    expect(text).toContain('process_cpu_seconds_total');
  });

  it('open, update and close health-check node ports', async () => {
    let healthy = true;
    const servers = new ServiceHealthServers('127.0.0.1', () => healthy, log);
    closers.push(() => servers.close());
    const probe = await import('node:net').then(
      (net) =>
        new Promise<number>((resolve) => {
          const s = net.createServer().listen(0, '127.0.0.1', () => {
            const p = (s.address() as AddressInfo).port;
            s.close(() => resolve(p));
          });
        }),
    );
    await servers.update([{ port: probe, namespace: 'shop', name: 'frontend', localEndpoints: 2 }]);
    let r = await fetch(`http://127.0.0.1:${probe}/`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ service: { namespace: 'shop', name: 'frontend' }, localEndpoints: 2, serviceProxyHealthy: true });
    healthy = false;
    r = await fetch(`http://127.0.0.1:${probe}/anything`);
    expect(r.status).toBe(503);
    healthy = true;
    await servers.update([{ port: probe, namespace: 'shop', name: 'frontend', localEndpoints: 0 }]);
    expect((await fetch(`http://127.0.0.1:${probe}/`)).status).toBe(503);
    await servers.update([]);
    expect(servers.ports).toEqual([]);
    await expect(fetch(`http://127.0.0.1:${probe}/`)).rejects.toThrow();
  });

  it('a port that cannot be bound is logged, not fatal', async () => {
    const blocker = await startMetricsServer(new ProxyMetrics(), { host: '127.0.0.1', port: 0 });
    closers.push(() => blocker.close());
    const servers = new ServiceHealthServers('127.0.0.1', () => true, log);
    await servers.update([{ port: port(blocker), namespace: 'a', name: 'b', localEndpoints: 1 }]);
    expect(servers.ports).toEqual([]);
  });

  it.each([
    ['0.0.0.0:10256', { host: '0.0.0.0', port: 10256 }],
    [':10249', { host: '0.0.0.0', port: 10249 }],
    ['[::1]:10249', { host: '::1', port: 10249 }],
  ])('parses bind address %s', (text, want) => expect(parseBindAddress(text)).toEqual(want));
  it.each(['10256', 'host:1', '0.0.0.0:70000'])('rejects bind address %s', (text) => expect(() => parseBindAddress(text)).toThrow());
});
