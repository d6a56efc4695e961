/**
 * `kproxy run` on a dual-stack cluster: a real kube-apiserver, each version of the envtest assets
 * (KUBEBUILDER_ASSETS: v1.26 and v1.36), with the service CIDRs `10.96.0.0/12,fd00:10:96::/112` holding the dual-stack
 * fixtures (test/fixtures/dualstack) as they are, pods at the fixtures' addresses, in both modes,
 * with IPv4 and IPv6 traffic: dual-stack, IPv6-only and IPv6-primary Services, an IPv6-only change,
 * /healthz over IPv6. In iptables mode, upstream kube-proxy of the same version watches the same API server from
 * another node namespace, and both kernels' `iptables-save` and `ip6tables-save` must match up to
 * the intended departures (oracle.test.ts); in nftables mode against v1.36, both families' tables
 * must do the same to packets (oracle-nft.test.ts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readObjectFiles } from '../../src/sources/file.ts';
import { ASSET_SETS, ENVTEST_HINT, RealApiServer, SUITE_ASSET_SETS } from '../support/envtest.ts';
import { endpoint } from '../support/objects.ts';
import { comparable, hideKubernetesService, startUpstream, upstreamArgs, upstreamSettled } from '../support/upstream.ts';
import { behaviour, NftTable, probes, type ProbeNode } from '../support/nfteval.ts';
import { CLIENT_IP, CLIENT_IP6, eventually, MODES, NODE1_EXT_IP, NODE1_EXT_IP6, NODE1_IP, NODE1_IP6, onlyFrom, tally, TestCluster } from './harness/cluster.ts';

const FIXTURES = join(import.meta.dirname, '../fixtures/dualstack');
const CLUSTER_CIDRS = '10.244.0.0/16,fd00:10:244::/56';

/** The fixture objects as a client would create them: no server-set metadata, no owners (nothing here runs the garbage collector). */
async function fixtureObjects(): Promise<object[]> {
  const input = await readObjectFiles([FIXTURES]);
  return [...input.nodes, ...input.services, ...input.endpointSlices].map((o) => {
    const c = structuredClone(o) as { metadata: Record<string, unknown> };
    for (const f of ['resourceVersion', 'uid', 'managedFields', 'creationTimestamp', 'generation', 'ownerReferences']) delete c.metadata[f];
    return c;
  });
}

if (ASSET_SETS.length === 0) console.log(ENVTEST_HINT);
const MATRIX = SUITE_ASSET_SETS.flatMap((assets) => MODES.map((mode) => ({ mode, assets, version: assets.version })));

describe.skipIf(ASSET_SETS.length === 0).each(MATRIX)('$mode mode: kproxy run on a dual-stack cluster (real kube-apiserver $version)', ({ mode, assets }) => {
  let c: TestCluster;
  let api: RealApiServer;
  let upstream: TestCluster | undefined;
  let proxy: ReturnType<typeof startUpstream> | undefined;
  const probe = (host: string, port: number, o: { proto?: 'tcp' | 'udp'; from?: string; timeoutMs?: number; count?: number } = {}) =>
    c.probe(o.from ?? 'src', o.proto ?? 'tcp', host, port, { count: o.count ?? 8, timeoutMs: o.timeoutMs ?? 500 });

  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'coredns-0', ip: '10.244.1.2', ip6: 'fd00:10:244:1::2', node: 'node-1', tcp: [53], udp: [53] },
        { name: 'coredns-1', ip: '10.244.2.2', ip6: 'fd00:10:244:2::2', node: 'node-2', tcp: [53], udp: [53] },
        { name: 'api-0', ip: '10.244.1.20', ip6: 'fd00:10:244:1::20', node: 'node-1', tcp: [9000] },
        { name: 'api-1', ip: '10.244.2.20', ip6: 'fd00:10:244:2::20', node: 'node-2', tcp: [9000] },
        { name: 'checkout-0', ip: '10.244.1.30', ip6: 'fd00:10:244:1::30', node: 'node-1', tcp: [8080] },
        { name: 'checkout-1', ip: '10.244.2.30', ip6: 'fd00:10:244:2::30', node: 'node-2', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', ip6: 'fd00:10:244:1::99', node: 'node-1' },
      ],
      [],
      mode,
    );
    api = await RealApiServer.start(['--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/112'], assets);
    await hideKubernetesService(api);
    for (const o of await fixtureObjects()) await api.apply(o);
    const port = await c.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
    const kubeconfig = join(c.dir, 'kubeconfig');
    writeFileSync(kubeconfig, api.kubeconfig(api.adminToken, `https://127.0.0.1:${port}`));
    c.startAgent(['--kubeconfig', kubeconfig, '--hostname-override', 'node-1', '--cluster-cidr', CLUSTER_CIDRS, '--iptables-min-sync-period', '100ms', '--iptables-sync-period', '5s']);
    // The oracle: upstream in the same mode (its nftables mode is GA from v1.33).
    if (mode === 'iptables' || assets.minor >= 33) {
      upstream = await TestCluster.create([], [], mode);
      const upstreamPort = await upstream.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
      const upstreamConfig = join(upstream.dir, 'kubeconfig');
      writeFileSync(upstreamConfig, api.kubeconfig(api.adminToken, `https://127.0.0.1:${upstreamPort}`));
      proxy = startUpstream(
        upstream,
        upstreamArgs(upstreamConfig, CLUSTER_CIDRS).map((a) => (a === 'iptables' ? mode : a)),
        assets,
      );
    }
  }, 180_000);
  afterAll(async () => {
    proxy?.kill('SIGKILL');
    await proxy;
    await c?.stopAgent('SIGKILL');
    await api?.stop();
    await upstream?.destroy();
    await c?.destroy();
  });

  it('serves dual-stack, IPv6-only and IPv6-primary Services on the right families', async () => {
    const both = onlyFrom('coredns-0', 'coredns-1');
    await eventually(() => probe('10.96.0.10', 53), both, 30_000);
    await eventually(() => probe('fd00:10:96::a', 53), both);
    await eventually(() => probe('fd00:10:96::a', 53, { proto: 'udp' }), both);
    // shop/api is IPv6 only, with ClientIP affinity: every connection of src goes to one endpoint,
    // api-0 or api-1 (api-2 is terminating: no pod here, no traffic).
    const sticky = await eventually(
      () => probe('fd00:10:96::2002', 9000),
      (r) => r.answers.length === 8,
    );
    expect(Object.keys(tally(sticky))).toHaveLength(1);
    expect(['api-0', 'api-1']).toContain(sticky.answers[0]!.name);
    // shop/checkout: IPv6 primary, internalTrafficPolicy Local, NodePort 30808 on both families.
    await eventually(() => probe('fd00:10:96::2003', 8080), onlyFrom('checkout-0'));
    await eventually(() => probe('10.96.20.3', 8080), onlyFrom('checkout-0'));
    // nftables mode takes NodePorts on the Node's IPs only (--nodeport-addresses primary, its default, as upstream v1.36's).
    const [np4, np6] = mode === 'nftables' ? [NODE1_IP, NODE1_IP6] : [NODE1_EXT_IP, NODE1_EXT_IP6];
    await eventually(() => probe(np6, 30808, { from: 'client' }), onlyFrom('checkout-0', 'checkout-1'));
    await eventually(() => probe(np4, 30808, { from: 'client' }), onlyFrom('checkout-0', 'checkout-1'));
    if (mode === 'nftables') expect(await probe(NODE1_EXT_IP6, 30808, { from: 'client' })).toMatchObject({ answers: [], refused: 8 });
    // shop/payments (IPv6, no endpoints) rejects; see ipv6.test.ts for the 3 s wait.
    const rejected = await probe('fd00:10:96::2004', 80, { timeoutMs: 3000 });
    expect(rejected, JSON.stringify(rejected)).toMatchObject({ answers: [], refused: 8 });
  });

  it('follows a change of the IPv6 slice alone and leaves IPv4 as it was', async () => {
    const slice = (await api.request('GET', '/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-qqzp5')).body as Record<string, unknown>;
    await api.apply({ ...slice, endpoints: [endpoint('fd00:10:244:1::2', { node: 'node-1' })] });
    await eventually(() => probe('fd00:10:96::a', 53), onlyFrom('coredns-0'));
    // One look, not eventually: 24 connections, as onlyFrom(a, b) needs both to answer and with 8 one endpoint
    // took all of them 1 time in 128 (CI, 2026-12-07).
    const v4 = await probe('10.96.0.10', 53, { count: 24 });
    expect(onlyFrom('coredns-0', 'coredns-1')(v4), JSON.stringify(v4)).toBe(true);
    await api.apply(slice);
    await eventually(() => probe('fd00:10:96::a', 53), onlyFrom('coredns-0', 'coredns-1'));
  });

  it('answers /healthz over IPv6 and IPv4 (bound to 0.0.0.0: one socket for both families)', async () => {
    for (const host of [`[${NODE1_EXT_IP6}]`, NODE1_EXT_IP]) {
      const r = await eventually(
        () => c.httpGet('client', `http://${host}:10256/healthz`),
        (x) => x.status === 200,
      );
      expect(JSON.parse(r.body!)).toMatchObject({ nodeEligible: true });
    }
  });

  // Defined where upstream has nftables mode (v1.33 on).
  if (mode === 'nftables' && assets.minor >= 33)
    it(`does to IPv4 and IPv6 packets what upstream kube-proxy ${assets.version} in nftables mode does`, async () => {
      await upstreamSettled(upstream!, 0);
      const nodes: Record<'ip' | 'ip6', ProbeNode> = {
        // The unallocated addresses: both proxies drop them, from the server's ServiceCIDR.
        ip: { addresses: [NODE1_IP, NODE1_EXT_IP], ip: NODE1_IP, client: CLIENT_IP, unallocated: ['10.111.255.253'] },
        ip6: { addresses: [NODE1_IP6, NODE1_EXT_IP6], ip: NODE1_IP6, client: CLIENT_IP6, pod: 'fd00:10:244:1::99', allowed: '2001:db8:ff::200', unallocated: ['fd00:10:96::fffd'] },
      };
      for (const family of ['ip', 'ip6'] as const) {
        const table = async (cluster: TestCluster) => new NftTable(await cluster.onNode('nft', ['-j', 'list', 'table', family, 'kube-proxy']));
        const [theirs, ours] = [await table(upstream!), await table(c)];
        // Hairpin sources from upstream's set: the departure of oracle-nft.test.ts.
        const packets = probes([theirs, ours], nodes[family], [theirs]);
        expect(packets.length, family).toBeGreaterThan(50);
        expect(behaviour(ours, packets), family).toEqual(behaviour(theirs, packets));
      }
    });

  // Defined in iptables mode only (upstream runs there): nothing is reported as skipped.
  if (mode === 'iptables')
    it(`writes what upstream kube-proxy ${assets.version} writes, in iptables and ip6tables`, async () => {
      await upstreamSettled(upstream!, 0);
      // kproxy has synced the restored slice (previous test); upstream has settled on the same objects.
      const ours = (family: 4 | 6) => c.onNode(family === 6 ? 'ip6tables-save' : 'iptables-save', []);
      const theirs = (family: 4 | 6) => upstream!.onNode(family === 6 ? 'ip6tables-save' : 'iptables-save', []);
      for (const family of [4, 6] as const) {
        const want = comparable(await theirs(family));
        expect(Object.keys(want).filter((k) => k.startsWith('nat KUBE-SEP-')).length, `IPv${family}`).toBeGreaterThan(3);
        expect(comparable(await ours(family)), `IPv${family}`).toEqual(want);
      }
    });
});
