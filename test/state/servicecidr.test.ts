/**
 * ServiceCIDRs (networking.k8s.io/v1): validation, the store's union of their ranges, and what the
 * plan and the nftables renderer make of it (upstream pkg/proxy/nftables/proxier.go, "Drop traffic
 * to unallocated ClusterIPs"). Packets: test/e2e/servicecidr.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderNftables } from '../../src/backends/nftables/render.ts';
import { statementText } from '../../src/backends/nftables/text.ts';
import { renderIptables } from '../../src/backends/iptables/render.ts';
import { normaliseServiceCIDR } from '../../src/state/servicecidr.ts';
import { ProxyStateStore } from '../../src/state/store.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { WIRE } from '../support/apiserver.ts';
import { endpoint, endpointSlice, service } from '../support/objects.ts';
import { plan } from '../support/pipeline.ts';

/** The default ServiceCIDR of a real v1.36 API server (test/fixtures/README.md). */
const REAL: RawObject = {
  kind: 'ServiceCIDR',
  apiVersion: 'networking.k8s.io/v1',
  ...(JSON.parse(readFileSync(join(WIRE, 'list-servicecidrs-v1.36.json'), 'utf8')) as { items: RawObject[] }).items[0]!,
};
const cidr = (name: string, cidrs: unknown): RawObject => ({ apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name }, spec: { cidrs } });

describe('ServiceCIDR validation', () => {
  it('reads the real default ServiceCIDR: both families', () => {
    const r = normaliseServiceCIDR(REAL);
    expect('serviceCIDR' in r && r.serviceCIDR.cidrs.map((c) => c.text)).toEqual(['10.96.0.0/12', 'fd00:10:96::/112']);
  });

  it.each([
    ['a bad CIDR', cidr('x', ['10.96.0.0/33']), 'spec.cidrs[0]'],
    ['an address without a prefix', cidr('x', ['10.96.0.1']), 'spec.cidrs[0]'],
    ['three CIDRs', cidr('x', ['10.96.0.0/12', 'fd00::/112', '10.128.0.0/16']), 'spec.cidrs'],
    ['two of one family', cidr('x', ['10.96.0.0/12', '10.128.0.0/16']), 'spec.cidrs'],
    ['cidrs not a list', cidr('x', '10.96.0.0/12'), 'spec.cidrs'],
    ['a name with a newline', cidr('x\n-A INPUT -j ACCEPT', ['10.96.0.0/12']), 'metadata.name'],
  ])('refuses %s, naming the field', (_, raw, field) => {
    const r = normaliseServiceCIDR(raw);
    expect('issue' in r && r.issue).toMatchObject({ kind: 'ServiceCIDR', field, skipped: 'object' });
  });
});

describe('the store: ranges of every ServiceCIDR, once', () => {
  it('unions, sorts by family, keeps a range two ServiceCIDRs share until both are gone', () => {
    const store = new ProxyStateStore('node-1');
    store.applyServiceCIDR(REAL);
    store.applyServiceCIDR(cidr('extra', ['10.100.0.0/16']));
    store.applyServiceCIDR(cidr('twin', ['10.96.0.0/12']));
    expect(store.serviceCIDRs.map((c) => c.text)).toEqual(['10.100.0.0/16', '10.96.0.0/12', 'fd00:10:96::/112']);
    const same = store.serviceCIDRs;
    expect(store.serviceCIDRs).toBe(same);
    store.deleteServiceCIDR('kubernetes');
    expect(store.serviceCIDRs.map((c) => c.text)).toEqual(['10.100.0.0/16', '10.96.0.0/12']);
    store.deleteServiceCIDR('twin');
    expect(store.serviceCIDRs.map((c) => c.text)).toEqual(['10.100.0.0/16']);
  });

  it('an invalid new version removes the old one and reports why', () => {
    const store = new ProxyStateStore('node-1');
    store.applyServiceCIDR(cidr('extra', ['10.100.0.0/16']));
    const result = store.applyServiceCIDR(cidr('extra', ['10.100.0.0/99']));
    expect(result.issues).toHaveLength(1);
    expect(store.serviceCIDRs).toEqual([]);
  });
});

describe('plan and render', () => {
  const objects = [
    service('ns/web', { clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] }),
    endpointSlice('ns/web', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.10')]),
    REAL,
    cidr('extra', ['10.100.0.0/16']),
  ];

  it('the plan keeps its family’s ranges', () => {
    expect(plan(objects).serviceCIDRs).toEqual(['10.100.0.0/16', '10.96.0.0/12']);
    expect(plan(objects, { family: 6, clusterCIDR: undefined }).serviceCIDRs).toEqual(['fd00:10:96::/112']);
  });

  it('nftables mode: cluster-ips-check rejects a ClusterIP’s undefined port, then drops each range', () => {
    const rules = renderNftables(plan(objects)).chains.find((c) => c.name === 'cluster-ips-check')!.rules;
    expect(rules.map((r) => r.expr.map(statementText).join(' ') + (r.comment ? ` # ${r.comment}` : ''))).toEqual([
      'ip daddr @cluster-ips reject',
      'ip daddr 10.100.0.0/16 drop # Drop traffic to unallocated ClusterIPs',
      'ip daddr 10.96.0.0/12 drop # Drop traffic to unallocated ClusterIPs',
    ]);
    const without = renderNftables(plan(objects.slice(0, 2))).chains.find((c) => c.name === 'cluster-ips-check')!.rules;
    expect(without).toHaveLength(1);
  });

  it('iptables mode writes nothing for them, as upstream’s', () => {
    const withRanges = renderIptables(plan(objects), { conntrackTCPBeLiberal: false });
    const withoutRanges = renderIptables(plan(objects.slice(0, 2)), { conntrackTCPBeLiberal: false });
    expect(withRanges).toEqual(withoutRanges);
  });
});
