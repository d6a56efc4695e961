/**
 * The dual-stack fixtures (a real kube-apiserver v1.26 with service CIDRs 10.96.0.0/12,fd00:10:96::/112)
 * through the state stage and the planner: one state, one plan per family, each with only its own
 * family's addresses (upstream pkg/proxy: serviceport.go per-family fields, endpointslicecache.go by addressType).
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { planProxy, type ServicePortPlan } from '../../src/planner/plan.ts';
import { readObjectFiles } from '../../src/sources/file.ts';
import { parseCIDR } from '../../src/state/ip.ts';
import { ProxyStateStore } from '../../src/state/store.ts';
import { endpoint, endpointSlice, service } from '../support/objects.ts';
import { TEST_CONFIG } from '../support/pipeline.ts';

const input = await readObjectFiles([join(import.meta.dirname, '../fixtures/dualstack')]);

function store() {
  const s = new ProxyStateStore('node-1');
  const ignored: string[] = [];
  for (const o of [...input.nodes, ...input.services, ...input.endpointSlices]) {
    const r = o.kind === 'Service' ? s.applyService(o) : o.kind === 'Node' ? s.applyNode(o) : s.applyEndpointSlice(o);
    expect(r.issues).toEqual([]);
    if (r.ignored) ignored.push(`${(o.metadata as { name: string }).name}: ${r.ignored}`);
  }
  return { s, ignored };
}

const plan = (family: 4 | 6) => {
  const { s } = store();
  return planProxy(s.servicePortStates(), s.node, { ...TEST_CONFIG, family, clusterCIDR: parseCIDR(family === 4 ? '10.244.0.0/16' : 'fd00:10:244::/56'), localAddresses: [] });
};
const byName = (ports: readonly ServicePortPlan[]) => new Map(ports.map((sp) => [sp.name, sp]));

describe('dual-stack fixtures', () => {
  it('keeps both ClusterIPs, primary first, and ignores the headless and ExternalName Services', () => {
    const { s, ignored } = store();
    const ips = (key: string) => s.servicePortStatesOf(key)[0]!.servicePort.clusterIPs.map((ip) => ip.text);
    expect(ips('kube-system/kube-dns')).toEqual(['10.96.0.10', 'fd00:10:96::a']);
    expect(ips('shop/checkout')).toEqual(['fd00:10:96::2003', '10.96.20.3']);
    expect(ips('shop/api')).toEqual(['fd00:10:96::2002']);
    expect(ignored.filter((i) => /^(db|legacy):/.test(i))).toHaveLength(2);
    expect(s.node.addresses.map((a) => a.text)).toEqual(['192.0.2.21', '2001:db8:1::21']);
  });

  it('plans each family with its own ClusterIP, endpoints, externalIPs, LB IPs and source ranges', () => {
    const v4 = byName(plan(4).servicePorts);
    const v6 = byName(plan(6).servicePorts);
    // IPv6-only Services are in the IPv6 plan alone.
    expect([...v4.keys()].sort()).toEqual(['kube-system/kube-dns:dns', 'kube-system/kube-dns:dns-tcp', 'shop/checkout:http', 'shop/frontend:http', 'shop/frontend:https']);
    expect([...v6.keys()]).toEqual(expect.arrayContaining(['shop/api:grpc', 'shop/payments:http', 'infra/metrics-gw:statsd']));
    const f4 = v4.get('shop/frontend:http')!;
    const f6 = v6.get('shop/frontend:http')!;
    expect([f4.clusterIP, f4.loadBalancerIPs, f4.loadBalancerSourceRanges]).toEqual(['10.96.20.1', ['203.0.113.10'], ['203.0.113.0/24']]);
    expect([f6.clusterIP, f6.loadBalancerIPs, f6.loadBalancerSourceRanges]).toEqual(['fd00:10:96::2001', ['2001:db8:f::10'], ['2001:db8:100::/56']]);
    expect(f4.localEndpoints.map((e) => e.hostPort)).toEqual(['10.244.1.10:8080', '10.244.1.11:8080']);
    expect(f6.localEndpoints.map((e) => e.hostPort)).toEqual(['[fd00:10:244:1::10]:8080', '[fd00:10:244:1::11]:8080']);
    expect(f6.clusterEndpoints.map((e) => e.hostPort)).toEqual(['[fd00:10:244:1::10]:8080', '[fd00:10:244:1::11]:8080', '[fd00:10:244:2::10]:8080']);
    expect(v4.get('shop/checkout:http')!.externalIPs).toEqual(['198.51.100.20']);
    expect(v6.get('shop/checkout:http')!.externalIPs).toEqual(['2001:db8:e::20']);
    // Node IP of the family: the node's own IPv6 address is not in the IPv6 range, so no LB-IP-as-source rule.
    expect(f6.allowLoadBalancerIPsAsSource).toBe(false);
    // A Service with an IPv6 slice without endpoints rejects on IPv6 only.
    expect(v6.get('shop/payments:http')!.internalNoEndpoints).toBe('REJECT');
  });

  it('counts each family’s endpoints apart (the large-cluster threshold)', () => {
    expect([plan(4).totalEndpoints, plan(6).totalEndpoints]).toEqual([12, 17]);
  });
});

describe('dual-stack bad input', () => {
  const PORTS = [{ name: 'http', port: 80 }];
  const apply = (o: Record<string, unknown>) => new ProxyStateStore('node-1').applyService(o);

  it('refuses a ClusterIP of the other family than spec.ipFamilies says, naming the field', () => {
    const s = service('demo/x', { clusterIP: 'fd00:10:96::1', ports: PORTS }) as { spec: Record<string, unknown> };
    s.spec.ipFamilies = ['IPv4'];
    expect(apply(s).issues).toEqual([expect.objectContaining({ field: 'spec.clusterIPs[0]', message: 'spec.clusterIPs[0]: is not an IPv4 address (spec.ipFamilies[0]): fd00:10:96::1' })]);
  });

  it('refuses two ClusterIPs of one family, an IPv4-mapped IPv6 ClusterIP and a zoned one', () => {
    for (const clusterIPs of [['10.96.0.1', '10.96.0.2'], ['::ffff:10.96.0.1'], ['fe80::1%eth0']]) {
      const s = service('demo/x', { clusterIP: clusterIPs[0]!, clusterIPs, ports: PORTS }) as { spec: Record<string, unknown> };
      delete s.spec.ipFamilies;
      expect(apply(s).issues, clusterIPs.join()).toHaveLength(1);
    }
  });

  it('writes IPv6 in canonical form, and skips an endpoint of the other family than its slice', () => {
    const s = new ProxyStateStore('node-1');
    s.applyService(service('demo/x', { clusterIP: 'FD00:10:96:0:0:0:0:1', ports: PORTS }));
    const r = s.applyEndpointSlice(endpointSlice('demo/x', PORTS, [endpoint('FD00:10:244:1:0:0:0:A'), endpoint('10.244.1.10')], 'v6', 'IPv6'));
    expect(r.issues).toEqual([expect.objectContaining({ field: 'endpoints[1].addresses[0]', skipped: 'endpoint' })]);
    const [state] = s.servicePortStates();
    expect(state!.servicePort.clusterIPs[0]!.text).toBe('fd00:10:96::1');
    expect(state!.endpoints.map((e) => e.hostPort)).toEqual(['[fd00:10:244:1::a]:80']);
  });
});
