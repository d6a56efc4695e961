/**
 * The sync loop with an in-memory backend per family (the knftables "fake" model): what it
 * writes, when, what it does after failures, and how two families stay independent. Timing uses short real periods; assertions are on order and
 * counts, never on durations.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProxyBackend, RenderSkip } from '../../src/backends/backend.ts';
import type { ProxyPlan } from '../../src/planner/plan.ts';
import type { HealthCheckTarget } from '../../src/planner/healthcheck.ts';
import { Reconciler } from '../../src/runner/reconciler.ts';
import { ProxyRunner, type RunnerDeps } from '../../src/runner/runner.ts';
import { ProxyHealth } from '../../src/server/health.ts';
import { ProxyMetrics } from '../../src/server/metrics.ts';
import { ipFamilyLabel } from '../../src/server/labels.ts';
import type { IPFamily } from '../../src/state/ip.ts';
import { EventQueue } from '../../src/sources/queue.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { ProxyStateStore } from '../../src/state/store.ts';
import { PolicyStateStore } from '../../src/state/policystore.ts';
import { PolicyReconciler } from '../../src/runner/policy.ts';
import type { PolicyBackend } from '../../src/backends/policy/backend.ts';
import { renderPolicies } from '../../src/backends/policy/render.ts';
import type { NftRuleset } from '../../src/backends/nftables/render.ts';
import { endpoint, endpointSlice, namespace, networkPolicy, node, pod, service } from '../support/objects.ts';
import { TEST_CONFIG } from '../support/pipeline.ts';

/** Rules are the list of service port names; writes are recorded; the next `failures` writes fail. */
type FakeRules = { readonly list: string[]; readonly skipped: RenderSkip[] };

class FakeBackend implements ProxyBackend<FakeRules, FakeRules> {
  readonly mode = 'iptables' as const;
  readonly family: IPFamily;
  writes: { rules: string[]; full: boolean }[] = [];
  failures = 0;
  attempts = 0;
  /** When set, a write waits for it: a slow kernel. */
  gate: Promise<void> | undefined;
  constructor(family: IPFamily = 4) {
    this.family = family;
  }
  render(plan: ProxyPlan): FakeRules {
    return { list: plan.servicePorts.map((sp) => `${sp.name} ${sp.clusterEndpoints.map((e) => e.hostPort).join(',')}`), skipped: [] };
  }
  diff(previous: FakeRules | undefined, next: FakeRules) {
    const added = next.list.filter((r) => !previous?.list.includes(r));
    return { text: added.length ? added.join('\n') : undefined, committed: next };
  }
  async apply({ list }: FakeRules, o: { full: boolean }) {
    this.attempts++;
    await this.gate;
    if (this.failures > 0) {
      this.failures--;
      throw new Error('iptables-restore: line 3 failed');
    }
    this.writes.push({ rules: list, full: o.full });
    return { rulesWritten: { nat: list.length }, rulesTotal: { nat: list.length + 1 }, chainsDeleted: 0 };
  }
  async cleanup() {
    return 0;
  }
  async compare() {
    return [];
  }
  countFailure(metrics: ProxyMetrics, full: boolean) {
    metrics.restoreFailures.inc(ipFamilyLabel(this.family));
    if (!full) metrics.partialRestoreFailures.inc(ipFamilyLabel(this.family));
  }
  setRuleGauges(metrics: ProxyMetrics, written: Record<string, number>, total: Record<string, number>) {
    for (const [table, n] of Object.entries(written)) metrics.rulesLast.set({ ...ipFamilyLabel(this.family), table }, n);
    for (const [table, n] of Object.entries(total)) metrics.rulesTotal.set({ ...ipFamilyLabel(this.family), table }, n);
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

interface StartOptions {
  readonly print?: (change: string, family: IPFamily) => void;
  readonly healthChecks?: RunnerDeps['healthChecks'];
  /** One fake backend per family, in this order (default IPv4 alone). */
  readonly families?: readonly IPFamily[];
  /** With the NetworkPolicy pipeline, over a policy backend that records its writes. */
  readonly policy?: boolean;
}

/** A policy backend that renders for real and records what it would write. */
function fakePolicyBackend(): PolicyBackend & { writes: NftRuleset[] } {
  const writes: NftRuleset[] = [];
  return {
    writes,
    render: (plan) => renderPolicies(plan),
    diff: (_c, next) => ({ text: 'x', committed: { rules: next, deferred: [] } }),
    async apply(rules) {
      writes.push(rules);
      return { rulesWritten: {}, rulesTotal: {}, chainsDeleted: 0 };
    },
    compare: async () => [],
    cleanup: async () => 0,
  };
}

function start(extra: StartOptions = {}, timing = { minSyncPeriodMs: 100, syncPeriodMs: 60_000 }) {
  const queue = new EventQueue();
  const backends = (extra.families ?? [4]).map((f) => new FakeBackend(f));
  const backend = backends[0]!;
  const metrics = new ProxyMetrics();
  const health = new ProxyHealth(2 * timing.syncPeriodMs);
  const log = pino({ level: 'silent' });
  const reconcilers = backends.map(
    (b) =>
      new Reconciler({
        backend: b,
        config: () => ({ ...TEST_CONFIG, family: b.family, clusterCIDR: b.family === 4 ? TEST_CONFIG.clusterCIDR : undefined }),
        applier: extra.print ? { kind: 'print', print: extra.print } : { kind: 'write' },
        timing,
        log,
        metrics,
      }) as Reconciler,
  );
  const policyBackend = fakePolicyBackend();
  const policy = extra.policy ? { store: new PolicyStateStore(), reconciler: new PolicyReconciler({ backend: policyBackend, applier: { kind: 'write' }, timing, log, metrics }) } : undefined;
  const runner = new ProxyRunner({
    ...(policy ? { policy } : {}),
    store: new ProxyStateStore('node-1'),
    queue,
    reconcilers,
    timing,
    health,
    metrics,
    log,
    ...(extra.healthChecks ? { healthChecks: extra.healthChecks } : {}),
  });
  const stop = new AbortController();
  const done = runner.run(stop.signal);
  stops.push(async () => {
    stop.abort();
    await done;
  });
  const synced = () => {
    for (const kind of ['Service', 'EndpointSlice', 'Node'] as const) queue.push({ type: 'synced', kind });
  };
  return { queue, backend, backends, metrics, health, runner, synced, policyBackend };
}

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  expect(check(), 'condition not reached').toBe(true);
}

describe('ProxyRunner', () => {
  it('with --network-policy: the policy table waits for its own lists, then syncs while a Service write is still in the kernel', async () => {
    const { queue, backend, synced, policyBackend } = start({ policy: true });
    let release = () => {};
    backend.gate = new Promise<void>((r) => (release = r));
    queue.push({ type: 'upsert', kind: 'Node', object: node('node-1') as RawObject });
    queue.push({ type: 'upsert', kind: 'Service', object: svc('web', '10.96.0.10') });
    synced();
    await until(() => backend.attempts === 1); // the Service write hangs in the kernel
    queue.push({ type: 'upsert', kind: 'Namespace', object: namespace('x') as RawObject });
    queue.push({ type: 'upsert', kind: 'Pod', object: pod('x/a', { ips: ['10.244.1.10'], node: 'node-1' }) as RawObject });
    queue.push({ type: 'upsert', kind: 'NetworkPolicy', object: networkPolicy('x/deny', { podSelector: {}, policyTypes: ['Ingress'] }) as RawObject });
    await new Promise((r) => setTimeout(r, 300));
    expect(policyBackend.writes, 'not before NetworkPolicies, Pods and Namespaces were listed').toHaveLength(0);
    for (const kind of ['NetworkPolicy', 'Pod', 'Namespace'] as const) queue.push({ type: 'synced', kind });
    await until(() => policyBackend.writes.length === 1);
    expect(backend.writes, 'the Service write is still pending').toHaveLength(0);
    expect(policyBackend.writes[0]!.elements.get('ingress-ip')!.map((e) => e.key)).toEqual(['10.244.1.10']);
    release();
    await until(() => backend.writes.length === 1);
  });

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

  it('skips an object nested 100,000 levels deep, as the informers deliver it, with a metric; a good version before it is removed', async () => {
    const { queue, backend, synced, metrics } = start();
    // V8's JSON.parse does not recurse: client-node's watch hands such an object over whole.
    const deep = JSON.parse('['.repeat(100_000) + ']'.repeat(100_000)) as unknown;
    const withDeep = (o: RawObject) => ({ ...o, metadata: { ...o.metadata, annotations: { x: deep } } });
    queue.push({ type: 'upsert', kind: 'Service', object: svc('good', '10.96.0.1') });
    queue.push({ type: 'upsert', kind: 'Service', object: svc('later-deep', '10.96.0.2') });
    synced();
    await until(() => backend.writes.length === 1);
    expect(backend.writes[0]!.rules).toEqual(['demo/good:http ', 'demo/later-deep:http ']);
    queue.push({ type: 'upsert', kind: 'Service', object: withDeep(svc('later-deep', '10.96.0.2')) });
    queue.push({ type: 'upsert', kind: 'EndpointSlice', object: withDeep(slice('good', '10.244.1.9')) });
    queue.push({ type: 'upsert', kind: 'EndpointSlice', object: slice('good', '10.244.1.1') });
    await until(() => backend.writes.length === 2);
    expect(backend.writes[1]!.rules).toEqual(['demo/good:http 10.244.1.1:80']);
    expect((await metrics.invalidObjects.get()).values).toEqual([
      { labels: { kind: 'Service', skipped: 'object' }, value: 1 },
      { labels: { kind: 'EndpointSlice', skipped: 'object' }, value: 1 },
    ]);
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
    const { queue, backend, synced } = start({ print: (c) => printed.push(c) });
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

describe('ProxyRunner, dual-stack', () => {
  const dual = () => [
    service('demo/a', { clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00:10:96::1'], ports: PORTS }) as RawObject,
    endpointSlice('demo/a', PORTS, [endpoint('10.244.1.1', { node: 'node-1' })], 'v4') as RawObject,
    endpointSlice('demo/a', PORTS, [endpoint('fd00:10:244:1::1', { node: 'node-1' })], 'v6') as RawObject,
  ];

  it('plans each family from the one state: each backend sees its own ClusterIP and endpoints', async () => {
    const { queue, backends, synced, metrics } = start({ families: [4, 6] });
    for (const object of dual()) queue.push({ type: 'upsert', kind: object.kind as 'Service', object });
    synced();
    await until(() => backends.every((b) => b.writes.length === 1));
    expect(backends[0]!.writes[0]!.rules).toEqual(['demo/a:http 10.244.1.1:80']);
    expect(backends[1]!.writes[0]!.rules).toEqual(['demo/a:http [fd00:10:244:1::1]:80']);
    // The mode's gauges hold each family's rules, as upstream v1.36's per-family proxiers (the fake reports list length + 1).
    expect((await metrics.rulesTotal.get()).values).toEqual([
      { labels: { ip_family: 'IPv4', table: 'nat' }, value: 2 },
      { labels: { ip_family: 'IPv6', table: 'nat' }, value: 2 },
    ]);
    const synced4 = (await metrics.lastSync.get()).values.map((v) => v.labels.ip_family);
    expect(synced4.sort()).toEqual(['IPv4', 'IPv6']);
    expect((await metrics.syncDuration.get()).values.filter((v) => v.metricName === 'kubeproxy_sync_proxy_rules_duration_seconds_count').map((v) => [v.labels.ip_family, v.value])).toEqual([
      ['IPv4', 1],
      ['IPv6', 1],
    ]);
  });

  it('a family whose writes fail retries alone, with backoff, while the other keeps syncing', async () => {
    const { queue, backends, synced, metrics, health } = start({ families: [4, 6] }, { minSyncPeriodMs: 20, syncPeriodMs: 60_000 });
    const [v4, v6] = backends as [FakeBackend, FakeBackend];
    v6.failures = 1_000;
    for (const object of dual()) queue.push({ type: 'upsert', kind: object.kind as 'Service', object });
    synced();
    await until(() => v4.writes.length === 1);
    // IPv4 changes go through while IPv6 keeps failing.
    queue.push({ type: 'upsert', kind: 'EndpointSlice', object: endpointSlice('demo/a', PORTS, [endpoint('10.244.1.2', { node: 'node-1' })], 'v4') as RawObject });
    await until(() => v4.writes.length === 2);
    expect(v4.writes[1]).toEqual({ rules: ['demo/a:http 10.244.1.2:80'], full: false });
    expect(v6.writes).toEqual([]);
    // Backoff (20 ms × 2^n): IPv6 is retried, but not in a tight loop; half a second holds at most 5 tries (20+40+80+160+320 ms).
    const before = v6.attempts;
    await new Promise((r) => setTimeout(r, 500));
    expect(v6.attempts - before).toBeGreaterThanOrEqual(1);
    expect(v6.attempts - before).toBeLessThanOrEqual(5);
    expect((await metrics.restoreFailures.get()).values).toEqual([{ labels: { ip_family: 'IPv6' }, value: v6.attempts }]);
    // Not current in every family: the node is not updated, and /healthz fails once the change waited the health timeout.
    expect(health.lastUpdatedMs).toBe(0);
    expect(health.healthy(Date.now() + health.healthTimeoutMs)).toBe(false);
    v6.failures = 0;
    await until(() => v6.writes.length === 1);
    expect(v6.writes[0]).toEqual({ rules: ['demo/a:http [fd00:10:244:1::1]:80'], full: true });
  });

  it("writes the families at once: IPv6's write does not wait for IPv4's", async () => {
    const { queue, backends, synced, health } = start({ families: [4, 6] });
    const [v4, v6] = backends as [FakeBackend, FakeBackend];
    let release!: () => void;
    v4.gate = new Promise((r) => (release = r));
    for (const object of dual()) queue.push({ type: 'upsert', kind: object.kind as 'Service', object });
    synced();
    await until(() => v6.writes.length === 1);
    expect(v4.attempts).toBe(1);
    expect(v4.writes).toEqual([]);
    // The node counts as updated only once every family is current.
    expect(health.lastUpdatedMs).toBe(0);
    release();
    await until(() => v4.writes.length === 1);
    await until(() => health.lastUpdatedMs > 0);
  });

  it('dry-run prints each family’s change, tagged with the family', async () => {
    const printed: string[] = [];
    const { queue, synced, backends } = start({ families: [4, 6], print: (c, f) => printed.push(`IPv${f}: ${c}`) });
    for (const object of dual()) queue.push({ type: 'upsert', kind: object.kind as 'Service', object });
    synced();
    await until(() => printed.length === 2);
    expect(printed).toEqual(['IPv4: demo/a:http 10.244.1.1:80', 'IPv6: demo/a:http [fd00:10:244:1::1]:80']);
    expect(backends.every((b) => b.writes.length === 0)).toBe(true);
  });
});
