/**
 * `kproxy run` as a node agent, in node-1's namespace, watching the test API server (reachable
 * only on node-1's loopback) through the real client-node informers. Every claim is checked with
 * real traffic or real HTTP, within bounded time: changes are followed, watch faults are
 * recovered from, a crash leaves the rules working, a restart converges, a flushed chain is
 * repaired by the periodic sync, and /healthz, /livez, the health-check node port and /metrics
 * answer as upstream's do.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubeconfigFor, TestApiServer } from '../support/apiserver.ts';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { eventually, MODES, NODE1_EXT_IP, NODE1_IP, NODE2_IP, onlyFrom, tally, TestCluster, webSlice, type ProbeResult } from './harness/cluster.ts';

const SYNC_PERIOD = '3s';
const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const EP_PORTS = [{ name: 'http', port: 8080 }];
const CIP = '10.96.5.1';

const web = webSlice;

const refused = (r: ProbeResult) => r.refused > 0 && r.answers.length === 0;

describe.each(MODES)('%s mode: kproxy run on a node', (mode) => {
  let c: TestCluster;
  let api: TestApiServer;
  let args: string[];
  let logs: { stdout: string; stderr: string };
  const toWeb = () => c.probe('src', 'tcp', CIP, 80, { count: 6, timeoutMs: 500 });

  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'web-1', ip: '10.244.1.10', node: 'node-1', tcp: [8080], udp: [5353] },
        { name: 'web-2', ip: '10.244.2.10', node: 'node-2', tcp: [8080] },
        { name: 'web-3', ip: '10.244.1.11', node: 'node-1', tcp: [8080], udp: [5353] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [],
      mode,
    );
    api = new TestApiServer();
    api.seed('nodes', [node('node-1', 'zone-a', [NODE1_IP]) as never, node('node-2', 'zone-b', [NODE2_IP]) as never]);
    api.seed('services', [service('demo/web', { clusterIP: CIP, ports: PORTS }) as never]);
    api.seed('endpointslices', [web(['10.244.1.10']) as never]);
    const port = await c.serveInNamespace('node-1', (h) => api.listenOn(h));
    const kubeconfig = join(c.dir, 'kubeconfig');
    writeFileSync(kubeconfig, kubeconfigFor(`http://127.0.0.1:${port}`));
    args = [
      '--kubeconfig',
      kubeconfig,
      '--hostname-override',
      'node-1',
      '--cluster-cidr',
      '10.244.0.0/16',
      '--iptables-min-sync-period',
      '100ms',
      '--iptables-sync-period',
      SYNC_PERIOD,
      '--watch-stall-timeout',
      '2s',
    ];
    logs = c.startAgent(args);
  });
  afterAll(async () => {
    await c?.stopAgent('SIGKILL');
    await api?.close();
    await c?.destroy();
  });

  it('programs the listed Services, then follows endpoint and Service changes', async () => {
    await eventually(toWeb, onlyFrom('web-1'));
    // Each sync's log line says where its time went, per family. The line is written after the
    // rules are, so traffic can flow before it reaches the file: wait for it.
    const synced = await eventually(
      async () =>
        readFileSync(logs.stderr, 'utf8')
          .split('\n')
          .find((l) => l.includes('"proxy rules synced"')),
      (l) => l !== undefined,
      5_000,
    );
    const phases = (JSON.parse(synced!) as { phasesMs: Record<string, { plan: number; render: number; write: number }> }).phasesMs;
    expect(phases.IPv4).toEqual({ plan: expect.any(Number), render: expect.any(Number), write: expect.any(Number) });
    expect(phases.IPv4!.write).toBeGreaterThan(0);
    api.apply('endpointslices', web(['10.244.2.10', '10.244.1.11']) as never);
    await eventually(toWeb, onlyFrom('web-2', 'web-3'));
    api.apply('services', service('demo/web', { clusterIP: CIP, ports: [{ name: 'http', port: 81, targetPort: 8080 }] }) as never);
    await eventually(() => c.probe('src', 'tcp', CIP, 81, { count: 6, timeoutMs: 500 }), onlyFrom('web-2', 'web-3'));
    await eventually(toWeb, (r) => r.answers.length === 0);
    api.apply('services', service('demo/web', { clusterIP: CIP, ports: PORTS }) as never);
    await eventually(toWeb, onlyFrom('web-2', 'web-3'));
  });

  it('REJECTs once the endpoints are gone, and drops the rules with the Service', async () => {
    api.remove('endpointslices', 'demo', 'web-abcde');
    await eventually(toWeb, refused);
    api.remove('services', 'demo', 'web');
    await eventually(
      () => c.rules(),
      (saved) => !saved.includes('demo/web'),
    );
    api.apply('services', service('demo/web', { clusterIP: CIP, ports: PORTS }) as never);
    api.apply('endpointslices', web(['10.244.1.10']) as never);
    await eventually(toWeb, onlyFrom('web-1'));
  });

  it('recovers from a reset, a stalled, a failing and an expired watch', async () => {
    api.resetWatches();
    api.apply('endpointslices', web(['10.244.2.10']) as never);
    await eventually(toWeb, onlyFrom('web-2'));

    api.stallWatches();
    api.apply('endpointslices', web(['10.244.1.11']) as never);
    await eventually(toWeb, onlyFrom('web-3'), 20_000);

    api.failNextWatch(500);
    api.failNextWatch(500);
    api.endWatches();
    api.apply('endpointslices', web(['10.244.1.10']) as never);
    await eventually(toWeb, onlyFrom('web-1'));

    const lists = api.requests.filter((r) => r.startsWith('GET /apis/discovery.k8s.io/v1/endpointslices?') && !r.includes('watch=')).length;
    api.stallWatches();
    api.apply('endpointslices', web(['10.244.2.10']) as never);
    api.expireWatches(); // in-stream 410: the informer must re-list
    await eventually(toWeb, onlyFrom('web-2'));
    expect(api.requests.filter((r) => r.startsWith('GET /apis/discovery.k8s.io/v1/endpointslices?') && !r.includes('watch=')).length).toBeGreaterThan(lists);
  });

  it('keeps traffic flowing after kill -9, and converges when restarted', async () => {
    await c.stopAgent('SIGKILL');
    expect(tally(await toWeb())).toEqual({ 'web-2': 6 });
    api.apply('endpointslices', web(['10.244.1.10', '10.244.1.11']) as never);
    // Nothing watches now: the old rules keep serving.
    expect(tally(await toWeb())).toEqual({ 'web-2': 6 });
    logs = c.startAgent(args);
    await eventually(toWeb, onlyFrom('web-1', 'web-3'));
  });

  it('repairs a chain flushed by hand within the sync period', async () => {
    await eventually(toWeb, onlyFrom('web-1', 'web-3'));
    await c.flushServiceDispatch();
    await c.flushConntrack();
    expect((await toWeb()).answers).toEqual([]);
    await eventually(toWeb, onlyFrom('web-1', 'web-3'), 10_000);
    // The repair is logged with what differed, per Service, as `kproxy verify` reports it.
    const line = readFileSync(logs.stderr, 'utf8')
      .split('\n')
      .find((l) => l.includes('differed from what kproxy wrote'));
    const drift = (JSON.parse(line!) as { drift: Record<string, string[]> }).drift;
    if (mode === 'iptables') expect(drift['demo/web:http TCP']).toEqual([expect.stringMatching(/^missing rule nat KUBE-SERVICES: .*"demo\/web:http cluster IP"/)]);
    else
      expect(drift.kproxy).toEqual([
        expect.stringMatching(/^missing rule ip kube-proxy services: ip daddr \. meta l4proto \. th dport vmap @service-ips$/),
        expect.stringMatching(/service-nodeports$/),
      ]);
  });

  it('answers /healthz and /livez as upstream does, with node eligibility', async () => {
    const healthz = await eventually(
      () => c.httpGet('client', `http://${NODE1_EXT_IP}:10256/healthz`),
      (r) => r.status === 200,
    );
    expect(JSON.parse(healthz.body!)).toMatchObject({ nodeEligible: true, lastUpdated: expect.any(String), currentTime: expect.any(String) });
    expect((await c.httpGet('client', `http://${NODE1_EXT_IP}:10256/livez`)).status).toBe(200);
    const tainted = { ...node('node-1', 'zone-a', [NODE1_IP]), spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } };
    api.apply('nodes', tainted as never);
    const draining = await eventually(
      () => c.httpGet('client', `http://${NODE1_EXT_IP}:10256/healthz`),
      (r) => r.status === 503,
    );
    expect(JSON.parse(draining.body!)).toMatchObject({ nodeEligible: false });
    expect((await c.httpGet('client', `http://${NODE1_EXT_IP}:10256/livez`)).status).toBe(200);
    api.apply('nodes', node('node-1', 'zone-a', [NODE1_IP]) as never);
    await eventually(
      () => c.httpGet('client', `http://${NODE1_EXT_IP}:10256/healthz`),
      (r) => r.status === 200,
    );
  });

  it('serves the health-check node port of an eTP Local LoadBalancer', async () => {
    const lb = service('demo/lb', {
      type: 'LoadBalancer',
      clusterIP: '10.96.5.2',
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32100,
      loadBalancerIPs: ['203.0.113.50'],
    });
    api.apply('services', lb as never);
    api.apply('endpointslices', endpointSlice('demo/lb', EP_PORTS, [endpoint('10.244.1.10', { node: 'node-1' }), endpoint('10.244.2.10', { node: 'node-2' })]) as never);
    const url = `http://${NODE1_EXT_IP}:32100/`;
    const up = await eventually(
      () => c.httpGet('client', url),
      (r) => r.status === 200,
    );
    expect(JSON.parse(up.body!)).toEqual({ service: { namespace: 'demo', name: 'lb' }, localEndpoints: 1, serviceProxyHealthy: true });
    api.apply('endpointslices', endpointSlice('demo/lb', EP_PORTS, [endpoint('10.244.2.10', { node: 'node-2' })]) as never);
    const down = await eventually(
      () => c.httpGet('client', url),
      (r) => r.status === 503,
    );
    expect(JSON.parse(down.body!)).toMatchObject({ localEndpoints: 0, serviceProxyHealthy: true });
    api.remove('services', 'demo', 'lb');
    await eventually(
      () => c.httpGet('client', url),
      (r) => r.error !== undefined,
    );
  });

  it('exposes upstream metrics on 127.0.0.1:10249 only', async () => {
    const metrics = await eventually(
      () => c.httpGet('node-1', 'http://127.0.0.1:10249/metrics'),
      (r) => r.status === 200,
    );
    for (const name of [
      'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.001",ip_family="IPv4"}',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      // Observed only for slices with the controller's trigger-time annotation (none here): registered, no series yet, as upstream's.
      '# TYPE kubeproxy_network_programming_duration_seconds histogram',
      mode === 'iptables' ? 'kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"}' : 'kproxy_sync_proxy_rules_nftables_total{ip_family="IPv4",object="rules"}',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"}',
      'kubeproxy_proxy_healthz_total{code="200"}',
      'kproxy_informer_restarts{resource="EndpointSlice"}',
      'process_resident_memory_bytes',
    ]) {
      expect(metrics.body).toContain(name);
    }
    expect((await c.httpGet('client', `http://${NODE1_EXT_IP}:10249/metrics`)).error).toBeDefined();
  });

  it('deletes stale UDP conntrack entries when an endpoint goes away', async () => {
    const DNS = '10.96.5.53';
    const dnsSlice = (ip: string) => endpointSlice('demo/dns', [{ name: 'dns', port: 5353, protocol: 'UDP' }], [endpoint(ip, { node: 'node-1' })]);
    api.apply('services', service('demo/dns', { clusterIP: DNS, ports: [{ name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }] }) as never);
    api.apply('endpointslices', dnsSlice('10.244.1.10') as never);
    // One fixed source port: every probe is the same UDP flow, kept alive in conntrack.
    const ask = () => c.probe('src', 'udp', DNS, 53, { count: 1, sport: 40053, timeoutMs: 500 });
    await eventually(ask, onlyFrom('web-1'));
    api.apply('endpointslices', dnsSlice('10.244.1.11') as never);
    await eventually(ask, onlyFrom('web-3'));
  });

  it('stops on SIGTERM and leaves the rules in place', async () => {
    await c.stopAgent('SIGTERM');
    // 12 connections: onlyFrom(a, b) needs both to answer, and with 6 one endpoint took all of them 1 time in 32.
    const r = await c.probe('src', 'tcp', CIP, 80, { count: 12, timeoutMs: 500 });
    // The probe's answers and failures in the message: this failed once in CI (2026-11-30) and passed on every rerun.
    expect(onlyFrom('web-1', 'web-3')(r), JSON.stringify(r)).toBe(true);
    expect(readFileSync(logs.stderr, 'utf8')).toContain('stopping; the rules stay in place');
  });

  it("run --dry-run prints each sync's changes and writes nothing", async () => {
    await c.kproxy(['cleanup']);
    const dry = c.startAgent([...args, '--dry-run']);
    const printed = () => (existsSync(dry.stdout) ? readFileSync(dry.stdout, 'utf8') : '');
    await eventually(
      async () => printed(),
      (t) => t.includes(mode === 'iptables' ? '-A KUBE-SERVICES' : 'add rule ip kube-proxy services'),
    );
    // The first sync prints both families; the change then touches IPv4 only.
    await eventually(
      async () => printed(),
      (t) => t.split('# sync at').length === 3,
    );
    expect(
      printed()
        .split('# sync at')
        .map((chunk) => / (IPv\d)\n/.exec(chunk)?.[1]),
    ).toEqual([undefined, 'IPv4', 'IPv6']);
    api.apply('endpointslices', web(['10.244.2.10']) as never);
    await eventually(
      async () => printed(),
      (t) => t.split('# sync at').length === 4,
    );
    const second = printed().split('# sync at')[3]!;
    expect(second).toMatch(/^ \S+, IPv4\n/);
    expect(second).toContain('10.244.2.10');
    expect(second).not.toContain(mode === 'iptables' ? '*filter' : 'add table');
    expect(await c.onNode('iptables-save', [])).not.toContain('KUBE-');
    expect(await c.rules()).not.toContain('kube-proxy');
    await c.stopAgent('SIGTERM');
  });
});
