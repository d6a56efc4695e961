/**
 * `explain`'s decisions, branch by branch (planner/explain.ts). The e2e suite checks them against
 * real packets; here each branch has its own small case.
 */
import { describe, expect, it } from 'vitest';
import { iptablesRuleNames } from '../../src/backends/iptables/explain.ts';
import { nftablesRuleNames } from '../../src/backends/nftables/explain.ts';
import { classifySource, EXPLAIN_EXIT, explainPacket, type Explanation, type SourceKind } from '../../src/planner/explain.ts';
import { planProxy, type ProxyConfig } from '../../src/planner/plan.ts';
import { parseCIDR, parseIP } from '../../src/state/ip.ts';
import type { Protocol } from '../../src/state/model.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { storeOf, TEST_CONFIG } from '../support/pipeline.ts';

const NODE = 'node-1';
const CONFIG: ProxyConfig = { ...TEST_CONFIG, clusterCIDR: parseCIDR('10.244.0.0/16'), localAddresses: [parseIP('192.0.2.21')!] };

interface Ask {
  /** A source kind (pod, node, external) or an address. */
  source?: string;
  protocol?: Protocol;
  config?: Partial<ProxyConfig>;
  mode?: 'iptables' | 'nftables';
}

function explain(objects: readonly RawObject[], dest: string, ask: Ask = {}): Explanation {
  const store = storeOf([node(NODE, 'zone-a', ['192.0.2.21']), ...objects], NODE);
  const [host, port] = dest.startsWith('[') ? [dest.slice(1, dest.indexOf(']')), dest.slice(dest.indexOf(']') + 2)] : dest.split(':');
  const destination = parseIP(host!)!;
  const config = { ...CONFIG, family: destination.family, ...(destination.family === 6 ? { clusterCIDR: parseCIDR('fd00:10:244::/56'), localAddresses: [] } : {}), ...ask.config };
  const plan = planProxy(store.servicePortStates(), store.node, config, undefined, store.serviceCIDRs);
  const who = ask.source ?? 'external';
  const ip = parseIP(who);
  const source = ip ? { kind: classifySource(ip, store.node, config), ip } : { kind: who as SourceKind, ip: undefined };
  const names = ask.mode === 'nftables' ? nftablesRuleNames(plan) : iptablesRuleNames(plan);
  return explainPacket(store.servicePortStates(), store.node, config, plan, { destination, port: Number(port), protocol: ask.protocol ?? 'TCP', source }, names);
}

const web = (o: Partial<Parameters<typeof service>[1]> = {}, eps = [endpoint('10.244.1.10', { node: NODE, zone: 'zone-a' }), endpoint('10.244.2.10', { node: 'node-2', zone: 'zone-b' })]) => [
  service('demo/web', { clusterIP: '10.96.0.50', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }], type: 'NodePort', ...o }),
  endpointSlice('demo/web', [{ name: 'http', port: 8080 }], eps),
];

describe('explain: ClusterIP', () => {
  it('a pod reaches every ready endpoint with probability 1/n, unmasqueraded', () => {
    const e = explain(web(), '10.96.0.50:80', { source: 'pod' });
    expect(e).toMatchObject({ verdict: 'DNAT', service: { name: 'demo/web:http', matchedAs: 'clusterIP' }, endpointSet: { set: 'Cluster' }, masquerade: { masquerade: false, reason: 'none' } });
    expect(e.endpoints.map((x) => [x.address, x.node, x.zone, x.probability])).toEqual([
      ['10.244.1.10', NODE, 'zone-a', 0.5],
      ['10.244.2.10', 'node-2', 'zone-b', 0.5],
    ]);
    expect(EXPLAIN_EXIT[e.verdict]).toBe(0);
  });

  it('outside --cluster-cidr is masqueraded; --masquerade-all masquerades all; without a cluster CIDR nothing is', () => {
    expect(explain(web(), '10.96.0.50:80').masquerade).toMatchObject({ masquerade: true, reason: 'outside-cluster-cidr' });
    expect(explain(web(), '10.96.0.50:80', { source: 'node' }).masquerade).toMatchObject({ masquerade: true, reason: 'outside-cluster-cidr' });
    expect(explain(web(), '10.96.0.50:80', { source: 'pod', config: { masqueradeAll: true } }).masquerade).toMatchObject({ masquerade: true, reason: 'masquerade-all' });
    expect(explain(web(), '10.96.0.50:80', { config: { clusterCIDR: undefined } }).masquerade).toMatchObject({ masquerade: false });
  });

  it('a source address is classified: the node, a pod, or external', () => {
    expect(explain(web(), '10.96.0.50:80', { source: '192.0.2.21' }).source).toMatchObject({ kind: 'node', address: '192.0.2.21' });
    expect(explain(web(), '10.96.0.50:80', { source: '10.244.1.99' }).source).toMatchObject({ kind: 'pod' });
    expect(explain(web(), '10.96.0.50:80', { source: '203.0.113.9' }).source).toMatchObject({ kind: 'external' });
  });

  it('a pod reaching itself is masqueraded (hairpin)', () => {
    const e = explain(web(), '10.96.0.50:80', { source: '10.244.1.10' });
    expect(e.endpoints.find((x) => x.address === '10.244.1.10')?.hairpin).toBe(true);
    expect(e.endpoints.find((x) => x.address === '10.244.2.10')?.hairpin).toBe(false);
    expect(e.notes.join()).toMatch(/hairpin/);
  });

  it('no endpoints: REJECT (exit 3), naming the filter rule', () => {
    const e = explain(web({}, []), '10.96.0.50:80');
    expect(e).toMatchObject({ verdict: 'REJECT' });
    expect(e.reason).toMatch(/no endpoints/);
    expect(e.steps.at(-1)!.rule).toBe('filter KUBE-SERVICES -j REJECT ("demo/web:http has no endpoints")');
    expect(explain(web({}, []), '10.96.0.50:80', { mode: 'nftables' }).steps.at(-1)!.rule).toMatch(/^service-endpoints-check -> map no-endpoint-services -> goto reject-chain/);
    expect(EXPLAIN_EXIT.REJECT).toBe(3);
  });

  it('only unready endpoints: REJECT, and each is listed with why it is not used', () => {
    const e = explain(web({}, [endpoint('10.244.1.10', { node: NODE, ready: false, serving: false })]), '10.96.0.50:80');
    expect(e.verdict).toBe('REJECT');
    expect(e.unusedEndpoints).toEqual([{ address: '10.244.1.10', port: 8080, node: NODE, reason: 'not ready' }]);
  });

  it('internalTrafficPolicy Local: the local endpoints; none local: DROP', () => {
    expect(explain(web({ internalTrafficPolicy: 'Local' }), '10.96.0.50:80', { source: 'pod' })).toMatchObject({
      verdict: 'DNAT',
      endpointSet: { set: 'Local' },
      endpoints: [{ address: '10.244.1.10' }],
    });
    const remote = [endpoint('10.244.2.10', { node: 'node-2' })];
    const e = explain(web({ internalTrafficPolicy: 'Local' }, remote), '10.96.0.50:80', { source: 'pod' });
    expect(e).toMatchObject({ verdict: 'DROP', unusedEndpoints: [{ address: '10.244.2.10', reason: 'on node-2, not node-1' }] });
    expect(e.steps.at(-1)!.rule).toBe('filter KUBE-SERVICES -j DROP ("demo/web:http has no local endpoints")');
  });

  it('no ready endpoint anywhere: the serving terminating ones (KEP-1669)', () => {
    const e = explain(web({}, [endpoint('10.244.2.10', { node: 'node-2', ready: false, serving: true, terminating: true })]), '10.96.0.50:80');
    expect(e).toMatchObject({ verdict: 'DNAT', endpoints: [{ address: '10.244.2.10', terminating: true }] });
    expect(e.endpointSet!.why.join()).toMatch(/serving, terminating/);
  });

  it('a terminating endpoint beside ready ones is not used, and says why', () => {
    const e = explain(web({}, [endpoint('10.244.1.10', { node: NODE }), endpoint('10.244.2.10', { node: 'node-2', ready: false, serving: true, terminating: true })]), '10.96.0.50:80');
    expect(e.unusedEndpoints).toEqual([{ address: '10.244.2.10', port: 8080, node: 'node-2', reason: 'terminating: used only when no endpoint is ready' }]);
  });

  it('topology hints for this zone narrow the Cluster set; hints missing on one endpoint are ignored', () => {
    const hinted = [endpoint('10.244.1.10', { node: NODE, forZones: ['zone-a'] }), endpoint('10.244.2.10', { node: 'node-2', forZones: ['zone-b'] })];
    const e = explain(web({}, hinted), '10.96.0.50:80');
    expect(e.endpoints.map((x) => x.address)).toEqual(['10.244.1.10']);
    expect(e.endpointSet!.why.join()).toMatch(/zone zone-a/);
    expect(e.unusedEndpoints[0]!.reason).toBe('not hinted for this node or zone');
    const partial = [endpoint('10.244.1.10', { node: NODE, forZones: ['zone-a'] }), endpoint('10.244.2.10', { node: 'node-2' })];
    expect(explain(web({}, partial), '10.96.0.50:80').endpointSet!.why.join()).toMatch(/ignored: not every ready endpoint/);
  });

  it('ClientIP affinity: its timeout, and the rule that keeps it', () => {
    const e = explain(web({ affinityTimeout: 600 }), '10.96.0.50:80');
    expect(e.affinityTimeoutSeconds).toBe(600);
    expect(e.steps.some((s) => s.decision.includes('600 s'))).toBe(true);
  });
});

describe('explain: external destinations', () => {
  it('NodePort with Cluster policy: every endpoint, masqueraded', () => {
    const e = explain(web(), '192.0.2.21:30080');
    expect(e).toMatchObject({ verdict: 'DNAT', service: { matchedAs: 'nodePort' }, masquerade: { masquerade: true, reason: 'external-cluster-policy' } });
    expect(e.endpoints).toHaveLength(2);
  });

  it('externalTrafficPolicy Local: clients reach local endpoints with their address kept; pods and the node short-circuit to all', () => {
    const local = web({ externalTrafficPolicy: 'Local', externalIPs: ['198.51.100.20'] });
    expect(explain(local, '198.51.100.20:80')).toMatchObject({ endpointSet: { set: 'Local' }, endpoints: [{ address: '10.244.1.10' }], masquerade: { masquerade: false } });
    const pod = explain(local, '198.51.100.20:80', { source: 'pod' });
    expect(pod).toMatchObject({ endpointSet: { set: 'Cluster' }, masquerade: { masquerade: false } });
    expect(pod.steps.some((s) => s.rule.includes('-s 10.244.0.0/16 -j KUBE-SVC-'))).toBe(true);
    expect(explain(local, '198.51.100.20:80', { source: 'node' })).toMatchObject({ endpointSet: { set: 'Cluster' }, masquerade: { masquerade: true, reason: 'node-external-local' } });
  });

  it('externalTrafficPolicy Local with no local endpoint: external clients DROP, pods still DNAT', () => {
    const remote = web({ externalTrafficPolicy: 'Local' }, [endpoint('10.244.2.10', { node: 'node-2' })]);
    const e = explain(remote, '192.0.2.21:30080');
    expect(e.verdict).toBe('DROP');
    expect(e.steps.at(-1)!.rule).toBe('filter KUBE-EXTERNAL-SERVICES -j DROP ("demo/web:http has no local endpoints")');
    expect(explain(remote, '192.0.2.21:30080', { source: 'pod' }).verdict).toBe('DNAT');
    expect(explain(remote, '192.0.2.21:30080', { mode: 'nftables' }).steps.at(-1)!.rule).toMatch(/^nodeport-endpoints-check -> map no-endpoint-nodeports -> drop/);
  });

  it('loadBalancerSourceRanges: a source inside is allowed, outside (or unknown) dropped before DNAT', () => {
    const lb = web({ type: 'LoadBalancer', loadBalancerIPs: ['203.0.113.10'], loadBalancerSourceRanges: ['203.0.113.0/24'] });
    expect(explain(lb, '203.0.113.10:80', { source: '203.0.113.2' })).toMatchObject({ verdict: 'DNAT', firewall: { allowed: true, by: '203.0.113.0/24' } });
    const blocked = explain(lb, '203.0.113.10:80', { source: '198.51.100.9' });
    expect(blocked).toMatchObject({ verdict: 'DROP', firewall: { allowed: false } });
    expect(blocked.steps.at(-1)!.rule).toMatch(/^filter KUBE-PROXY-FIREWALL -j DROP/);
    expect(explain(lb, '203.0.113.10:80', { mode: 'nftables' }).steps.at(-1)!.rule).toMatch(/^firewall-check -> map firewall-ips -> firewall-\w{8}-demo\/web\/tcp\/http: drop$/);
    // NodePorts are never filtered by source ranges.
    expect(explain(lb, '192.0.2.21:30080', { source: '198.51.100.9' }).verdict).toBe('DNAT');
  });
});

describe('explain: nothing matches', () => {
  it('an unknown destination: NO_MATCH (exit 4)', () => {
    const e = explain(web(), '10.96.9.9:80');
    expect(e.verdict).toBe('NO_MATCH');
    expect(EXPLAIN_EXIT[e.verdict]).toBe(4);
  });

  it('a ClusterIP on a port it does not serve: left alone in iptables mode, rejected in nftables mode', () => {
    expect(explain(web(), '10.96.0.50:81').verdict).toBe('NO_MATCH');
    const nft = explain(web(), '10.96.0.50:81', { mode: 'nftables' });
    expect(nft).toMatchObject({ verdict: 'REJECT' });
    expect(nft.steps.at(-1)!.rule).toBe('cluster-ips-check: ip daddr @cluster-ips reject');
  });

  it('an unallocated address of a ServiceCIDR: left alone in iptables mode, dropped in nftables mode', () => {
    const objects = [...web(), { apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.96.0.0/12'] } }];
    expect(explain(objects, '10.96.9.9:80').verdict).toBe('NO_MATCH');
    const nft = explain(objects, '10.96.9.9:80', { mode: 'nftables' });
    expect(nft).toMatchObject({ verdict: 'DROP', reason: '10.96.9.9 is an unallocated address of the ServiceCIDR 10.96.0.0/12' });
    expect(nft.steps.at(-1)!.rule).toBe('cluster-ips-check: ip daddr 10.96.0.0/12 drop ("Drop traffic to unallocated ClusterIPs")');
    // A ClusterIP's undefined port is rejected first; an address outside the range is left alone.
    expect(explain(objects, '10.96.0.50:81', { mode: 'nftables' }).verdict).toBe('REJECT');
    expect(explain(objects, '10.200.0.1:80', { mode: 'nftables' }).verdict).toBe('NO_MATCH');
  });

  it('another protocol, loopback NodePorts and --nodeport-addresses say why they do not match', () => {
    expect(explain(web(), '10.96.0.50:80', { protocol: 'UDP' }).notes.join()).toMatch(/serves 80\/TCP, not UDP/);
    expect(explain(web(), '127.0.0.1:30080').notes.join()).toMatch(/not served on loopback/);
    expect(explain(web(), '192.0.2.99:30080').notes.join()).toMatch(/not an address of this node/);
    const limited = explain(web(), '192.0.2.21:30080', { config: { nodePortAddresses: [parseCIDR('198.18.0.0/24')!] } });
    expect(limited.verdict).toBe('NO_MATCH');
    expect(limited.notes.join()).toMatch(/--nodeport-addresses/);
  });

  it('a destination another, older Service keeps: the note names both', () => {
    const older = service('demo/old', { clusterIP: '10.96.0.60', ports: [{ name: 'http', port: 80 }], externalIPs: ['198.51.100.20'] });
    (older.metadata as Record<string, unknown>).creationTimestamp = '2020-01-01T00:00:00Z';
    const objects = [...web({ externalIPs: ['198.51.100.20'] }), older, endpointSlice('demo/old', [{ name: 'http', port: 80 }], [endpoint('10.244.1.70', { node: NODE })])];
    const e = explain(objects, '198.51.100.20:80');
    expect(e.service?.name).toBe('demo/old:http');
    expect(e.notes.join()).toMatch(/demo\/web:http also claims .* demo\/old:http keeps it/);
  });
});

describe('explain: IPv6', () => {
  it('an IPv6 ClusterIP, with the ip6 names in nftables mode', () => {
    const objects = [
      service('demo/v6', { clusterIP: 'fd00:10:96::50', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
      endpointSlice('demo/v6', [{ name: 'http', port: 8080 }], [endpoint('fd00:10:244:1::10', { node: NODE })]),
    ];
    const e = explain(objects, '[fd00:10:96::50]:80', { mode: 'nftables', source: 'external' });
    expect(e).toMatchObject({ destination: '[fd00:10:96::50]:80/TCP', family: 6, verdict: 'DNAT', endpoints: [{ address: 'fd00:10:244:1::10' }] });
    expect(e.steps.find((s) => s.decision.startsWith('marked'))!.rule).toMatch(/ip6 saddr != fd00:10:244::\/56/);
  });

  it('refuses a destination of the other family', () => {
    const store = storeOf(web(), NODE);
    const plan = planProxy(store.servicePortStates(), store.node, CONFIG);
    const query = { destination: parseIP('fd00::1')!, port: 80, protocol: 'TCP' as const, source: { kind: 'external' as const, ip: undefined } };
    expect(() => explainPacket(store.servicePortStates(), store.node, CONFIG, plan, query, iptablesRuleNames(plan))).toThrow(RangeError);
  });
});
