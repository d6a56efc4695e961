/**
 * `kproxy run` against a real kube-apiserver, each version of the envtest assets (KUBEBUILDER_ASSETS:
 * v1.26 and v1.36), in both modes, with real traffic: Services and EndpointSlices created, changed and deleted through the
 * real API; kproxy authenticated as its ServiceAccount with exactly the ClusterRole of
 * manifests/rbac.yaml; a watch resumed from a resourceVersion etcd compacted meanwhile (the watch
 * cache is off, so the resume gets 410 Gone and the informer must re-list); and a restart of the
 * API server while kproxy runs. The protocol-faithful test API server (run.test.ts) stays for faults a
 * real server cannot be made to produce (stalls, resets, expired continue tokens).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ASSET_SETS, ENVTEST_HINT, RealApiServer, SUITE_ASSET_SETS } from '../support/envtest.ts';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { eventually, MODES, NODE1_IP, NODE2_IP, onlyFrom, ROOT, TestCluster, webSlice } from './harness/cluster.ts';

const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const CIP = '10.96.5.1';
const web = webSlice;

if (ASSET_SETS.length === 0) console.log(ENVTEST_HINT);
const MATRIX = SUITE_ASSET_SETS.flatMap((assets) => MODES.map((mode) => ({ mode, assets, version: assets.version })));

describe.skipIf(ASSET_SETS.length === 0).each(MATRIX)('$mode mode: kproxy run against a real kube-apiserver $version', ({ mode, assets }) => {
  let c: TestCluster;
  let api: RealApiServer;
  let logs: { stdout: string; stderr: string };
  const toWeb = () => c.probe('src', 'tcp', CIP, 80, { count: 6, timeoutMs: 500 });
  /** A gauge of kproxy's /metrics, by its full series text, e.g. `kproxy_informer_lists{resource="Service"}`. */
  const gauge = async (series: string) => {
    const r = await c.httpGet('node-1', 'http://127.0.0.1:10249/metrics');
    const line = (r.body ?? '').split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? 0 : Number(line.split(' ')[1]);
  };

  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'web-1', ip: '10.244.1.10', node: 'node-1', tcp: [8080] },
        { name: 'web-2', ip: '10.244.2.10', node: 'node-2', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [],
      mode,
    );
    // No watch cache, and etcd compacted every second: a resumed watch can be too old (410).
    api = await RealApiServer.start(['--watch-cache=false', '--etcd-compaction-interval=1s'], assets);
    await api.applyManifest(join(ROOT, 'manifests/rbac.yaml'));
    await api.apply(node('node-1', 'zone-a', [NODE1_IP]));
    await api.apply(node('node-2', 'zone-b', [NODE2_IP]));
    await api.apply(service('demo/web', { clusterIP: CIP, ports: PORTS }));
    await api.apply(web(['10.244.1.10']));
    // The API server listens on the root namespace's loopback; kproxy reaches it on node-1's.
    const port = await c.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
    const kubeconfig = join(c.dir, 'kubeconfig');
    writeFileSync(kubeconfig, api.kubeconfig(api.kproxyToken, `https://127.0.0.1:${port}`));
    logs = c.startAgent([
      '--kubeconfig',
      kubeconfig,
      '--hostname-override',
      'node-1',
      '--cluster-cidr',
      '10.244.0.0/16',
      '--iptables-min-sync-period',
      '100ms',
      '--iptables-sync-period',
      '5s',
      '--watch-stall-timeout',
      '3s',
    ]);
  }, 120_000);
  afterAll(async () => {
    await c?.stopAgent('SIGKILL');
    await api?.stop();
    await c?.destroy();
  });

  it('programs what the real API lists, and follows changes made through it, as its least-privilege ServiceAccount', async () => {
    await eventually(toWeb, onlyFrom('web-1'));
    await api.apply(web(['10.244.2.10']));
    await eventually(toWeb, onlyFrom('web-2'));
    await api.apply(service('demo/web', { clusterIP: CIP, ports: [{ name: 'http', port: 81, targetPort: 8080 }] }));
    await api.apply(endpointSlice('demo/web', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.10', { node: 'node-1' })]));
    await eventually(() => c.probe('src', 'tcp', CIP, 81, { count: 4, timeoutMs: 500 }), onlyFrom('web-1'));
    await api.apply(service('demo/web', { clusterIP: CIP, ports: PORTS }));
    await eventually(toWeb, onlyFrom('web-1'));
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(logs.stderr, 'utf8')).not.toMatch(/forbidden|http_403/i);
  });

  it(assets.minor >= 33 ? 'watches the ServiceCIDRs: the default one and one created through the API' : 'does not watch ServiceCIDRs, which this server does not serve, and says so once', async () => {
    const { readFileSync } = await import('node:fs');
    if (assets.minor < 33) {
      await eventually(
        async () => readFileSync(logs.stderr, 'utf8'),
        (t) => t.includes('does not serve networking.k8s.io/v1/servicecidrs'),
      );
      return;
    }
    await api.apply({ apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'extra' }, spec: { cidrs: ['10.100.0.0/16'] } });
    if (mode === 'iptables') return; // iptables mode writes nothing for them (test/e2e/servicecidr.test.ts)
    const check = () => c.onNode('nft', ['list', 'chain', 'ip', 'kube-proxy', 'cluster-ips-check']);
    const listed = await eventually(check, (t) => t.includes('10.100.0.0/16 drop'));
    expect(listed).toMatch(/ip daddr 10\.96\.0\.0\/12 drop/);
    // An unallocated address of the new range is dropped: no answer and no refusal.
    const r = await c.probe('src', 'tcp', '10.100.0.9', 80, { timeoutMs: 500 });
    expect(r).toMatchObject({ answers: [], refused: 0, timeout: 1 });
  });

  it('REJECTs once the EndpointSlice is gone, and forgets the Service when it is deleted', async () => {
    await api.remove('EndpointSlice', 'demo', 'web-abcde');
    await eventually(toWeb, (r) => r.refused > 0 && r.answers.length === 0);
    await api.remove('Service', 'demo', 'web');
    // No rule for the ClusterIP any more: nothing answers and nothing rejects (the packet goes nowhere).
    await eventually(toWeb, (r) => r.refused === 0 && r.answers.length === 0);
    await api.apply(service('demo/web', { clusterIP: CIP, ports: PORTS }));
    await api.apply(web(['10.244.1.10']));
    await eventually(toWeb, onlyFrom('web-1'));
  });

  it('re-lists when its watch resumes from a resourceVersion etcd compacted meanwhile (410 Gone), without a restart', async () => {
    const series = (name: string) => gauge(`${name}{resource="Service"}`);
    const [lists, restarts] = [await series('kproxy_informer_lists'), await series('kproxy_informer_restarts')];
    expect(lists).toBeGreaterThanOrEqual(1);
    // Churn on another resource moves etcd's revision on; with the watch cache off, no bookmark
    // moves the silent Service watch's resourceVersion with it, and etcd compacts every second.
    // client-node resumes a watch silent for --watch-stall-timeout (3 s) from that resourceVersion.
    for (let i = 0; i < 5; i++) await api.apply(web(i % 2 === 0 ? ['10.244.2.10'] : ['10.244.1.10']));
    await eventually(
      () => series('kproxy_informer_lists'),
      (n) => n > lists,
      30_000,
    );
    expect(await series('kproxy_informer_restarts')).toBe(restarts);
    await api.apply(service('demo/web', { clusterIP: CIP, ports: PORTS }));
    await api.apply(web(['10.244.2.10']));
    await eventually(toWeb, onlyFrom('web-2'));
  }, 60_000);

  it('skips a Service the API server stores nested 1,000 levels deep (managedFields), alone; refuses deeper bodies and deep annotations itself', async () => {
    // Text, not objects: JSON.stringify overflows at about 10,000 levels.
    const body = (name: string, ip: string, metadata: string) =>
      `{"apiVersion":"v1","kind":"Service","metadata":{"name":"${name}","namespace":"demo"${metadata}},"spec":{"clusterIP":"${ip}","ports":[{"name":"http","port":80,"targetPort":8080}]}}`;
    const fieldsV1 = (depth: number) => `,"managedFields":[{"manager":"t","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":${'{"f:a":'.repeat(depth)}{}${'}'.repeat(depth)}}]`;
    const annotation = (depth: number) => `,"annotations":{"x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const create = (text: string) => api.request('POST', '/api/v1/namespaces/demo/services', text);
    // Annotations are strings: the API server refuses a nested one at any depth, and any body past
    // Go's decoder limit of 10,000 levels.
    expect(await create(body('deep-note', '10.96.5.8', annotation(100)))).toMatchObject({ status: 400, body: { message: expect.stringContaining('cannot unmarshal array') as unknown } });
    for (const deeper of [annotation(10_000), fieldsV1(10_000), fieldsV1(100_000)]) {
      expect(await create(body('deeper', '10.96.5.8', deeper))).toMatchObject({ status: 400, body: { message: expect.stringContaining('exceeded max depth') as unknown } });
    }
    // managedFields' fieldsV1 is free-form JSON, stored as sent: a Service 1,000 levels deep.
    const invalid = () => gauge('kproxy_invalid_objects_total{kind="Service",skipped="object"}');
    const before = await invalid();
    expect((await create(body('deep', '10.96.5.9', fieldsV1(1_000)))).status).toBe(201);
    await api.apply(endpointSlice('demo/deep', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.10', { node: 'node-1' })]));
    await eventually(invalid, (n) => n > before);
    const { readFileSync } = await import('node:fs');
    const warning = readFileSync(logs.stderr, 'utf8')
      .split('\n')
      .filter((l) => l.includes('skipping Service demo/deep'))
      .map((l) => JSON.parse(l) as { msg: string; field: string })[0];
    expect(warning?.field).toMatch(/^metadata\.managedFields\[0\]\.fieldsV1\["f:a"\]\["f:a"\]/);
    expect(warning?.msg).toContain('nested deeper than 100 levels');
    // It gets no rule (nothing answers, nothing rejects), and its neighbour still does.
    expect(await c.probe('src', 'tcp', '10.96.5.9', 80, { count: 2, timeoutMs: 500 })).toMatchObject({ answers: [], refused: 0 });
    await api.apply(web(['10.244.2.10']));
    await eventually(toWeb, onlyFrom('web-2'));
    // Cleared of its deep managedFields (`[{}]` resets them), the Service is programmed.
    const current = (await api.request('GET', '/api/v1/namespaces/demo/services/deep')).body as { metadata: { resourceVersion: string } };
    const rv = current.metadata.resourceVersion;
    expect((await api.request('PUT', '/api/v1/namespaces/demo/services/deep', body('deep', '10.96.5.9', `,"resourceVersion":"${rv}","managedFields":[{}]`))).status).toBe(200);
    await eventually(() => c.probe('src', 'tcp', '10.96.5.9', 80, { count: 2, timeoutMs: 500 }), onlyFrom('web-1'));
    await api.remove('Service', 'demo', 'deep');
  }, 60_000);

  it('rides out a restart of the API server', async () => {
    await api.restart(1_000);
    await api.apply(web(['10.244.1.10', '10.244.2.10']));
    await eventually(toWeb, onlyFrom('web-1', 'web-2'), 60_000);
  }, 120_000);
});
