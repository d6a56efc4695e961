/**
 * The real fixture (examples/cluster.yaml and nodes.yaml, as a kube-apiserver serialised them)
 * on node-1, with a pod at every endpoint address: each Service answers as upstream kube-proxy
 * would make it answer (test/fixtures/README.md describes the cluster).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLES } from '../support/objects.ts';
import { CLIENT_IP, FIXTURE_PODS, NODE1_EXT_IP, peers, tally, MODES, TestCluster } from './harness/cluster.ts';

const CLIENT = '203.0.113.2';
const BLOCKED = '198.51.100.200';

describe.each(MODES)('%s mode: the fixture cluster on node-1', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(FIXTURE_PODS, [CLIENT, BLOCKED], mode);
    await c.kproxy(['sync', '--from', EXAMPLES, '--proxy-mode', mode, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16']);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('default/kubernetes: 10.96.0.1:443 reaches the API server at :6443', async () => {
    expect(tally(await c.probe('src', 'tcp', '10.96.0.1', 443, { count: 5 }))).toEqual({ apiserver: 5 });
  });

  it('kube-dns: UDP 53, TCP 53 and 9153 spread over both CoreDNS pods', async () => {
    for (const [proto, port] of [
      ['udp', 53],
      ['tcp', 53],
      ['tcp', 9153],
    ] as const) {
      const r = await c.probe('src', proto, '10.96.0.10', port, { count: 40 });
      expect(Object.keys(tally(r)).sort(), `${proto}/${port}`).toEqual(['coredns-0', 'coredns-1']);
      expect(peers(r)).toEqual(['10.244.1.99']);
    }
  });

  it('shop/api: ClientIP affinity to one ready endpoint, never the terminating one', async () => {
    const r = await c.probe('src', 'tcp', '10.96.20.2', 9000, { count: 30 });
    const names = Object.keys(tally(r));
    expect(names).toHaveLength(1);
    expect(['api-0', 'api-1']).toContain(names[0]);
  });

  it('shop/checkout: internalTrafficPolicy Local for ClusterIP, all endpoints via NodePort and externalIP', async () => {
    expect(tally(await c.probe('src', 'tcp', '10.96.20.3', 8080, { count: 20 }))).toEqual({ 'checkout-0': 20 });
    for (const [host, port] of [
      [NODE1_EXT_IP, 30808],
      ['198.51.100.20', 8080],
    ] as const) {
      const r = await c.probe('client', 'tcp', host, port, { count: 40 });
      expect(Object.keys(tally(r)).sort(), `${host}:${port}`).toEqual(['checkout-0', 'checkout-1']);
      expect(peers(r)).not.toContain(CLIENT_IP);
    }
  });

  it('shop/frontend: eTP Local LB with source ranges and named targetPorts', async () => {
    const http = await c.probe('client', 'tcp', '203.0.113.10', 80, { count: 40, bind: CLIENT });
    expect(Object.keys(tally(http)).sort()).toEqual(['frontend-0', 'frontend-1']);
    expect(peers(http)).toEqual([CLIENT]);
    const https = await c.probe('client', 'tcp', '203.0.113.10', 443, { count: 10, bind: CLIENT });
    expect(https.answers).toHaveLength(10); // 443 → named targetPort web-tls = 8443
    expect(await c.probe('client', 'tcp', '203.0.113.10', 80, { count: 2, bind: BLOCKED, timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 2 });
    const np = await c.probe('client', 'tcp', NODE1_EXT_IP, 31080, { count: 20, bind: BLOCKED });
    expect(Object.keys(tally(np)).sort()).toEqual(['frontend-0', 'frontend-1']);
    expect(peers(np)).toEqual([BLOCKED]);
  });

  it('shop/payments (no endpoints) is REJECTed', async () => {
    expect(await c.probe('src', 'tcp', '10.96.20.4', 80, { count: 2 })).toMatchObject({ answers: [], refused: 2 });
  });

  it('infra/metrics-gw: UDP goes only to the ready endpoint', async () => {
    expect(tally(await c.probe('src', 'udp', '10.96.30.1', 8125, { count: 20 }))).toEqual({ 'metrics-0': 20 });
  });
});
