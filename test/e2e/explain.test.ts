/**
 * `kproxy explain` checked against the kernel, not against itself: the fixture cluster
 * (examples/) synced on node-1, and for every destination of every Service (ClusterIP,
 * externalIPs, load-balancer IPs, NodePort) and three sources — a pod on node-1, node-1 itself,
 * an external client — `explain`'s verdict, endpoint set and masquerade decision must be what
 * real packets show: which endpoints answer, which source address they see, refused or timed out.
 * SCTP ports are explained but not probed (the probe agent speaks TCP and UDP).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Explanation } from '../../src/planner/explain.ts';
import type { ListRow } from '../../src/planner/list.ts';
import { EXAMPLES } from '../support/objects.ts';
import { FIXTURE_PODS, MODES, NODE1_EXT_IP, TestCluster } from './harness/cluster.ts';
import { expectExplained } from './harness/expect.ts';

/** External client addresses inside and outside shop/frontend's loadBalancerSourceRanges. */
const CLIENT = '203.0.113.2';
const BLOCKED = '198.51.100.200';
/** node-1's own traffic leaves by its default route, from this address. */
const NODE_SOURCE = NODE1_EXT_IP;

/** The three sources: where the probe runs, the address it sends from, and how explain is told. */
const SOURCES = [
  { kind: 'pod', origin: 'src', address: '10.244.1.99', bind: undefined },
  { kind: 'node', origin: 'node-1', address: NODE_SOURCE, bind: undefined },
  { kind: 'external', origin: 'client', address: CLIENT, bind: CLIENT },
] as const;

const podByIP = new Map(FIXTURE_PODS.map((p) => [p.ip, p.name]));
const FLAGS = ['--from', EXAMPLES, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16'];

/** Every destination of a listed service port: `host:port`. */
function destinations(row: ListRow): string[] {
  const f = row.frontends;
  return [f.clusterIP, ...f.externalIPs, ...f.loadBalancerIPs, ...(f.nodePort ? [`${NODE1_EXT_IP}:${f.nodePort}`] : [])];
}

describe.each(MODES)('%s mode: kproxy explain agrees with real packets', (mode) => {
  let c: TestCluster;
  let rows: ListRow[];

  const explain = async (dest: string, protocol: string, source: string): Promise<{ e: Explanation; status: number }> => {
    const r = await c.kproxyResult(['explain', dest, '--protocol', protocol, '--source', source, '--output', 'json', '--proxy-mode', mode, ...FLAGS]);
    return { e: JSON.parse(r.stdout) as Explanation, status: r.exitCode };
  };

  beforeAll(async () => {
    c = await TestCluster.create(FIXTURE_PODS, [CLIENT, BLOCKED], mode);
    await c.kproxy(['sync', '--proxy-mode', mode, ...FLAGS]);
    rows = JSON.parse((await c.kproxy(['list', '--output', 'json', '--proxy-mode', mode, ...FLAGS])).stdout) as ListRow[];
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('lists every service port of the example cluster', () => {
    expect(rows.map((r) => `${r.name} ${r.protocol}`)).toEqual([
      'default/kubernetes:https TCP',
      'infra/metrics-gw:sctp SCTP',
      'infra/metrics-gw:statsd UDP',
      'kube-system/kube-dns:dns UDP',
      'kube-system/kube-dns:dns-tcp TCP',
      'kube-system/kube-dns:metrics TCP',
      'shop/api:grpc TCP',
      'shop/checkout:http TCP',
      'shop/frontend:http TCP',
      'shop/frontend:https TCP',
      'shop/payments:http TCP',
    ]);
  });

  it.each(['pod', 'node', 'external'] as const)('every destination from %s: verdict, endpoints and masquerade match the packets', async (kind) => {
    const source = SOURCES.find((s) => s.kind === kind)!;
    const verdicts: string[] = [];
    for (const row of rows.filter((r) => r.protocol !== 'SCTP')) {
      for (const dest of destinations(row)) {
        const { e, status } = await explain(dest, row.protocol.toLowerCase(), source.address);
        const label = `${row.name} ${dest}/${row.protocol} from ${kind}`;
        expect(e.source.kind, label).toBe(kind);
        expect(status, label).toBe({ DNAT: 0, REJECT: 3, DROP: 3, NO_MATCH: 4 }[e.verdict]);
        const count = e.verdict === 'DNAT' ? Math.max(12, 12 * e.endpoints.length) : 2;
        const [host, port] = [dest.slice(0, dest.lastIndexOf(':')), Number(dest.slice(dest.lastIndexOf(':') + 1))];
        const r = await c.probe(source.origin, row.protocol === 'UDP' ? 'udp' : 'tcp', host, port, { count, ...(source.bind ? { bind: source.bind } : {}), timeoutMs: 800 });
        expectExplained(e, r, source.address, podByIP, label);
        verdicts.push(`${label}: ${e.verdict}`);
      }
    }
    // Each kind of answer came up at least once over the cluster (so the checks above ran on all of them).
    const seen = new Set(verdicts.map((v) => v.split(': ')[1]));
    expect([...seen].sort(), verdicts.join('\n')).toEqual(kind === 'external' ? ['DNAT', 'REJECT'] : ['DNAT', 'DROP', 'REJECT']);
  });

  it('a source outside the load balancer source ranges is dropped, as explain says', async () => {
    const { e, status } = await explain('203.0.113.10:80', 'tcp', BLOCKED);
    expect([e.verdict, status]).toEqual(['DROP', 3]);
    expect(await c.probe('client', 'tcp', '203.0.113.10', 80, { count: 2, bind: BLOCKED, timeoutMs: 500 })).toMatchObject({ answers: [], timeout: 2 });
  });

  it('a ClusterIP on a port no Service defines: left alone in iptables mode, rejected in nftables mode', async () => {
    const { e, status } = await explain('10.96.0.1:8080', 'tcp', '10.244.1.99');
    const r = await c.probe('src', 'tcp', '10.96.0.1', 8080, { count: 2, timeoutMs: 500 });
    if (mode === 'iptables') {
      expect([e.verdict, status]).toEqual(['NO_MATCH', 4]);
      expect(r).toMatchObject({ answers: [], refused: 0 });
    } else {
      expect([e.verdict, status]).toEqual(['REJECT', 3]);
      expect(r).toMatchObject({ answers: [], refused: 2 });
    }
  });
});
