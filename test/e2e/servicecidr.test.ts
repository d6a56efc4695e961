/**
 * ServiceCIDRs with real packets, both families: in nftables mode a new connection to an address
 * of a ServiceCIDR that no Service holds is dropped (upstream v1.36's `cluster-ips-check`), from a
 * pod and from the node, while its Services and a ClusterIP's undefined port (rejected) behave as
 * before; in iptables mode, as upstream's, such traffic is left alone. To see "left alone", a
 * squatter pod on node-1 holds that address: without the drop, the connection reaches it.
 * The real API server's ServiceCIDRs reach `kproxy run` in test/e2e/dualstack.test.ts and
 * test/e2e/apiserver.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { MODES, NODE1_IP, NODE1_IP6, tally, TestCluster } from './harness/cluster.ts';

const UNALLOCATED = '10.111.255.253';
const UNALLOCATED6 = 'fd00:10:96::fffd';
const serviceCIDR = (cidrs: string[]) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs } });
const objects = (withCIDR: boolean) => [
  node('node-1', 'zone-a', [NODE1_IP, NODE1_IP6]),
  service('demo/web', {
    clusterIP: '10.96.7.1',
    clusterIPs: ['10.96.7.1', 'fd00:10:96::7:1'],
    ports: [{ name: 'http', port: 80, targetPort: 8080 }],
  }),
  endpointSlice('demo/web', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.10', { node: 'node-1' })]),
  {
    ...endpointSlice('demo/web', [{ name: 'http', port: 8080 }], [endpoint('fd00:10:244:1::10', { node: 'node-1' })]),
    addressType: 'IPv6',
    metadata: { name: 'web-v6', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'web' } },
  },
  ...(withCIDR ? [serviceCIDR(['10.96.0.0/12', 'fd00:10:96::/112'])] : []),
];

describe.each(MODES)('%s mode: unallocated addresses of a ServiceCIDR', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'web', ip: '10.244.1.10', ip6: 'fd00:10:244:1::10', node: 'node-1', tcp: [8080] },
        { name: 'squatter', ip: UNALLOCATED, ip6: UNALLOCATED6, node: 'node-1', tcp: [80] },
        { name: 'src', ip: '10.244.1.99', ip6: 'fd00:10:244:1::99', node: 'node-1' },
      ],
      [],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** What `origin` gets from each address: the name that answered, or how it failed. */
  const fates = async (origin: string) => {
    const one = async (host: string) => {
      const r = await c.probe(origin, 'tcp', host, 80, { timeoutMs: 700 });
      return r.answers.length > 0 ? Object.keys(tally(r)).join() : r.refused > 0 ? 'refused' : r.timeout > 0 ? 'timeout' : r.errors.join();
    };
    return { v4: await one(UNALLOCATED), v6: await one(UNALLOCATED6), service: await one('10.96.7.1'), service6: await one('fd00:10:96::7:1') };
  };

  it('without a ServiceCIDR the address is left alone: the squatter answers', async () => {
    await c.sync(objects(false), ['--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56']);
    for (const origin of ['src', 'node-1']) expect(await fates(origin), origin).toEqual({ v4: 'squatter', v6: 'squatter', service: 'web', service6: 'web' });
  });

  it(mode === 'nftables' ? 'with one, nftables mode drops it in both families, from a pod and from the node' : 'with one, iptables mode still leaves it alone, as upstream’s', async () => {
    await c.sync(objects(true), ['--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56']);
    const dropped = mode === 'nftables' ? 'timeout' : 'squatter';
    for (const origin of ['src', 'node-1']) expect(await fates(origin), origin).toEqual({ v4: dropped, v6: dropped, service: 'web', service6: 'web' });
    if (mode === 'nftables') {
      // A ClusterIP's undefined port is still rejected before the range is dropped.
      const r = await c.probe('src', 'tcp', '10.96.7.1', 81, { timeoutMs: 700 });
      expect(r.refused).toBe(1);
      expect(await c.onNode('nft', ['list', 'chain', 'ip', 'kube-proxy', 'cluster-ips-check'])).toMatch(/ip daddr 10\.96\.0\.0\/12 drop comment "Drop traffic to unallocated ClusterIPs"/);
    }
  });

  it('explain says the same as the packets', async () => {
    const file = c.writeObjects(objects(true));
    const r = await c.kproxyResult([
      'explain',
      `${UNALLOCATED}:80`,
      '--source',
      '10.244.1.99',
      '--output',
      'json',
      '--proxy-mode',
      mode,
      '--from',
      file,
      '--hostname-override',
      'node-1',
      '--cluster-cidr',
      '10.244.0.0/16',
    ]);
    const e = JSON.parse(r.stdout) as { verdict: string; steps: { rule: string }[] };
    expect(e.verdict).toBe(mode === 'nftables' ? 'DROP' : 'NO_MATCH');
    if (mode === 'nftables') expect(e.steps.at(-1)!.rule).toMatch(/cluster-ips-check: ip daddr 10\.96\.0\.0\/12 drop/);
  });
});
