/**
 * The sync loop with an in-memory backend (the knftables "fake" model): what it writes, when,
 * and what it does after failures. Timing uses short real periods; assertions are on order and
 * counts, never on durations.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProxyBackend, RenderSkip } from '../../src/backends/backend.ts';
import type { ProxyPlan } from '../../src/planner/plan.ts';
import type { HealthCheckTarget } from '../../src/planner/healthcheck.ts';
import { ProxyRunner, type RunnerDeps } from '../../src/runner/runner.ts';
import { ProxyHealth } from '../../src/server/health.ts';
import { ProxyMetrics } from '../../src/server/metrics.ts';
import { EventQueue } from '../../src/sources/queue.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { ProxyStateStore } from '../../src/state/store.ts';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { TEST_CONFIG } from '../support/pipeline.ts';

/** Rules are the list of service port names; writes are recorded; the next `failures` writes fail. */
type FakeRules = { readonly list: string[]; readonly skipped: RenderSkip[] };

class FakeBackend implements ProxyBackend<FakeRules> {
  readonly mode = 'iptables' as const;
  writes: { rules: string[]; full: boolean }[] = [];
  failures = 0;
  render(plan: ProxyPlan): FakeRules {
    return { list: plan.servicePorts.map((sp) => `${sp.name} ${sp.clusterEndpoints.map((e) => e.hostPort).join(',')}`), skipped: [] };
  }
  async write({ list }: FakeRules, o: { full: boolean }) {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('iptables-restore: line 3 failed');
    }
    this.writes.push({ rules: list, full: o.full });
    return { rulesWritten: { nat: list.length }, rulesTotal: { nat: list.length }, chainsDeleted: 0 };
  }
  describeChange(previous: FakeRules | undefined, { list: next }: FakeRules) {
    const added = next.filter((r) => !previous?.list.includes(r));
    return added.length ? added.join('\n') : undefined;
  }
  async cleanup() {
    return 0;
  }
}

const PORTS = [{ name: 'http', port: 80 }];
const svc = (n: string, ip: string) => service(`demo/${n}`, { clusterIP: ip, ports: PORTS }) as RawObject;
const slice = (n: string, ...ips: string[]) =>
  endpointSlice(
    `demo/${n}`,
    PORTS,
    ips.map((i) => endpoint(i, { node: 'node-1' })),
  ) as RawObject;

let stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops) await s();
  stops = [];
});

function start(extra: Partial<RunnerDeps<FakeRules>> = {}, timing = { minSyncPeriodMs: 100, syncPeriodMs: 60_000 }) {
  const queue = new EventQueue();
  const backend = new FakeBackend();
  const metrics = new ProxyMetrics();
  const health = new ProxyHealth(2 * timing.syncPeriodMs);
  const runner = new ProxyRunner({ store: new ProxyStateStore('node-1'), queue, backend, config: () => TEST_CONFIG, timing, health, metrics, log: pino({ level: 'silent' }), ...extra });
  const stop = new AbortController();
  const done = runner.run(stop.signal);
  stops.push(async () => {
    stop.abort();
    await done;
  });
  const synced = () => {
    for (const kind of ['Service', 'EndpointSlice', 'Node'] as const) queue.push({ type: 'synced', kind });
  };
  return { queue, backend, metrics, health, runner, synced };
}

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  expect(check(), 'condition not reached').toBe(true);
}

describe('ProxyRunner', () => {
  it('writes nothing until Services, EndpointSlices and the Node were all listed', async () => {
    const { queue, backend } = start();
    queue.push({ type: 'upsert', kind: 'Service', object: svc('a', '10.96.0.1') });
    queue.push({ type: 'synced', kind: 'Service' });
    queue.push({ type: 'synced', kind: 'EndpointSlice' });
    await new Promise((r) => setTimeout(r, 300));
    expect(backend.writes).toEqual([]);
    queue.push({ type: 'synced', kind: 'Node' });
    await until(() => backend.writes.length === 1);
    expect(backend.writes[0]).toEqual({ rules: ['demo/a:http '], full: true });
  });

  it('coalesces a burst of changes into one partial write after the min sync period', async () => {
    const { queue, backend, synced, metrics } = start({}, { minSyncPeriodMs: 300, syncPeriodMs: 60_000 });
    synced();
    await until(() => backend.writes.length === 1);
    for (let i = 1; i <= 20; i++) queue.push({ type: 'upsert', kind: 'Service', object: svc(`s${i}`, `10.96.1.${i}`) });
    queue.push({ type: 'upsert', kind: 'EndpointSlice', object: slice('s1', '10.244.1.1') });
    await until(() => backend.writes.length === 2);
    await new Promise((r) => setTimeout(r, 400));
    expect(backend.writes).toHaveLength(2);
    expect(backend.writes[1]!.full).toBe(false);
    expect(backend.writes[1]!.rules).toHaveLength(20);
    expect(backend.writes[1]!.rules).toContain('demo/s1:http 10.244.1.1:80');
    expect((await metrics.serviceChangesTotal.get()).values[0]!.value).toBe(20);
    expect((await metrics.endpointChangesTotal.get()).values[0]!.value).toBe(1);
  });

  it('retries a failed write with backoff as a full sync, and counts the failure', async () => {
    const { queue, backend, synced, metrics } = start({}, { minSyncPeriodMs: 20, syncPeriodMs: 60_000 });
    backend.failures = 2;
    queue.push({ type: 'upsert', kind: 'Service', object: svc('a', '10.96.0.1') });
    synced();
    await until(() => backend.writes.length === 1);
    expect(backend.writes[0]!.full).toBe(true);
    expect((await metrics.restoreFailures.get()).values[0]!.value).toBe(2);
    // A change after a failure-recovery is partial again.
    queue.push({ type: 'upsert', kind: 'EndpointSlice', object: slice('a', '10.244.1.1') });
    await until(() => backend.writes.length === 2);
    expect(backend.writes[1]!.full).toBe(false);
  });

  it('runs a full sync every sync period without changes', async () => {
    const { backend, synced } = start({}, { minSyncPeriodMs: 10, syncPeriodMs: 150 });
    synced();
    await until(() => backend.writes.length >= 3);
    expect(backend.writes.every((w) => w.full)).toBe(true);
  });

  it('still verifies every sync period while changes keep arriving', async () => {
    const { queue, backend, synced } = start({}, { minSyncPeriodMs: 20, syncPeriodMs: 300 });
    synced();
    await until(() => backend.writes.length === 1);
    // One endpoint change every 50 ms for 1.5 s (bounded): five sync periods of constant churn.
    for (let i = 0; i < 30; i++) {
      queue.push({ type: 'upsert', kind: 'EndpointSlice', object: slice('a', `10.244.1.${i + 1}`) });
      await new Promise((r) => setTimeout(r, 50));
    }
    const fulls = backend.writes.slice(1).filter((w) => w.full).length;
    const partials = backend.writes.slice(1).filter((w) => !w.full).length;
    expect(partials).toBeGreaterThan(5);
    // At least one full sync per period elapsed (five), the first sync's excluded; allow one for timer slack.
    expect(fulls).toBeGreaterThanOrEqual(4);
  });

  it('skips an invalid object with a metric while the rest is written', async () => {
    const { queue, backend, synced, metrics } = start();
    queue.push({ type: 'upsert', kind: 'Service', object: svc('good', '10.96.0.1') });
    queue.push({ type: 'upsert', kind: 'Service', object: svc('bad', '10.96.0.300') });
    queue.push({ type: 'upsert', kind: 'Service', object: { kind: 'Service', metadata: { name: 'x\n-A KUBE-SERVICES -j ACCEPT', namespace: 'demo' } } });
    synced();
    await until(() => backend.writes.length === 1);
    expect(backend.writes[0]!.rules).toEqual(['demo/good:http ']);
    expect((await metrics.invalidObjects.get()).values).toEqual([{ labels: { kind: 'Service', skipped: 'object' }, value: 2 }]);
  });

  it('applies deletions and marks the node ineligible when its Node is being deleted', async () => {
    const { queue, backend, synced, health } = start();
    queue.push({ type: 'upsert', kind: 'Service', object: svc('a', '10.96.0.1') });
    queue.push({ type: 'upsert', kind: 'Node', object: node('node-1', 'zone-a') });
    synced();
    await until(() => backend.writes.length === 1);
    queue.push({ type: 'delete', kind: 'Service', object: svc('a', '10.96.0.1') });
    queue.push({ type: 'upsert', kind: 'Node', object: { ...(node('node-1') as RawObject), metadata: { name: 'node-1', deletionTimestamp: '2026-11-21T10:00:00Z' } } });
    await until(() => backend.writes.length === 2);
    expect(backend.writes[1]!.rules).toEqual([]);
    expect(health.answer(Date.now(), true).code).toBe(503);
    expect(health.answer(Date.now(), false).code).toBe(200);
  });

  it('dry-run hands each change to the printer and writes nothing', async () => {
    const printed: string[] = [];
    const { queue, backend, synced } = start({ dryRun: (c) => printed.push(c) });
    queue.push({ type: 'upsert', kind: 'Service', object: svc('a', '10.96.0.1') });
    synced();
    await until(() => printed.length === 1);
    queue.push({ type: 'upsert', kind: 'Service', object: svc('b', '10.96.0.2') });
    await until(() => printed.length === 2);
    expect(printed).toEqual(['demo/a:http ', 'demo/b:http ']);
    expect(backend.writes).toEqual([]);
  });

  it('hands health-check targets over after each sync', async () => {
    const seen: (readonly HealthCheckTarget[])[] = [];
    const { queue, synced } = start({ healthChecks: async (t) => void seen.push(t) });
    const lb = service('demo/lb', {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.9',
      ports: [{ name: 'http', port: 80, nodePort: 30080 }],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
    }) as RawObject;
    queue.push({ type: 'upsert', kind: 'Service', object: lb });
    queue.push({
      type: 'upsert',
      kind: 'EndpointSlice',
      object: endpointSlice('demo/lb', PORTS, [
        endpoint('10.244.1.1', { node: 'node-1' }),
        endpoint('10.244.1.2', { node: 'node-1', ready: false, serving: true, terminating: true }),
        endpoint('10.244.2.1', { node: 'node-2' }),
      ]),
    });
    synced();
    await until(() => seen.length === 1);
    expect(seen[0]).toEqual([{ port: 32000, namespace: 'demo', name: 'lb', localEndpoints: 1 }]);
  });
});
