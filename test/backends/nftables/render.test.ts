/**
 * nftables rendering: upstream's names and hashes, the layout (dispatch maps, cascade endpoint
 * selection, affinity sets, firewall rules), and the text form of each statement.
 */
import { describe, expect, it } from 'vitest';
import { endpointNames, serviceNames } from '../../../src/backends/nftables/names.ts';
import { renderNftables, type NftRuleset } from '../../../src/backends/nftables/render.ts';
import { batchText, statementText } from '../../../src/backends/nftables/text.ts';
import { fullBatch } from '../../../src/backends/nftables/batch.ts';
import { keyText } from '../../../src/backends/nftables/json.ts';
import { endpoint, endpointSlice, service } from '../../support/objects.ts';
import { plan } from '../../support/pipeline.ts';
import { parseCIDR } from '../../../src/state/ip.ts';

const p80 = [{ name: 'p80', port: 80 }];

/** Rules of a chain in nft's text syntax. */
function chainText(r: NftRuleset, name: string): string[] | undefined {
  return r.chains.find((c) => c.name === name)?.rules.map((rule) => rule.expr.map(statementText).join(' ') + (rule.comment ? ` comment "${rule.comment}"` : ''));
}
function elements(r: NftRuleset, set: string): string[] {
  return (r.elements.get(set) ?? []).map((e) => `${keyText(e.key)}${e.value ? ` : ${Object.keys(e.value)[0]}${'goto' in e.value ? ` ${e.value.goto.target}` : ''}` : ''}`);
}

describe('nftables names (upstream pkg/proxy/nftables/proxier.go)', () => {
  it('hashes and names service and endpoint chains as upstream does', () => {
    expect(serviceNames('ns1/svc1:p80', 'TCP').service).toBe('service-ULMVA6XW-ns1/svc1/tcp/p80');
    expect(endpointNames('ns1/svc1/tcp/p80', '10.180.0.1', 80).chain).toBe('endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
    expect(endpointNames('ns4/svc4/tcp/p80', '10.180.0.4', 80).chain).toBe('endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80');
    expect(endpointNames('ns/s/tcp/p', 'fd00::1', 80).chain).toMatch(/__fd00..1\/80$/);
  });

  it('refuses a name nft could not take unquoted', () => {
    expect(() => serviceNames('ns/a b:p', 'TCP')).toThrow(/refusing/);
  });
});

describe('nftables layout (TestOverallNFTablesRules shapes)', () => {
  const objects = [
    service('ns1/svc1', { clusterIP: '172.30.0.41', ports: p80 }),
    endpointSlice('ns1/svc1', p80, [endpoint('10.180.0.1'), endpoint('10.180.0.2'), endpoint('10.180.0.3')]),
    service('ns5/svc5', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.45',
      ports: [{ name: 'p80', port: 80, nodePort: 3002 }],
      loadBalancerIPs: ['5.6.7.8'],
      loadBalancerSourceRanges: ['203.0.113.0/25'],
      affinityTimeout: 10800,
    }),
    endpointSlice('ns5/svc5', p80, [endpoint('10.180.0.3')]),
    service('ns6/svc6', { clusterIP: '172.30.0.46', ports: p80 }),
  ];
  const r = renderNftables(plan(objects));

  it('picks endpoints with a cascade of plain rules that DNAT: 1/3, then 1/2, then the last; no per-endpoint chains', () => {
    expect(chainText(r, 'service-ULMVA6XW-ns1/svc1/tcp/p80')).toEqual([
      'ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade comment "ns1/svc1:p80 cluster IP"',
      'numgen random mod 3 0 meta l4proto tcp dnat to 10.180.0.1:80',
      'numgen random mod 2 0 meta l4proto tcp dnat to 10.180.0.2:80',
      'meta l4proto tcp dnat to 10.180.0.3:80',
    ]);
    expect(r.chains.filter((c) => c.name.startsWith('endpoint-'))).toEqual([]);
  });

  it('hairpin: one saddr . daddr lookup after DNAT, over the endpoints that may be on this node', () => {
    expect(chainText(r, 'masquerading')![0]).toBe('ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade');
    expect(elements(r, 'hairpin-endpoints')).toEqual(['10.180.0.1 . 10.180.0.1', '10.180.0.2 . 10.180.0.2', '10.180.0.3 . 10.180.0.3']);
    const remote = renderNftables(
      plan([service('ns/a', { clusterIP: '172.30.0.9', ports: p80 }), endpointSlice('ns/a', p80, [endpoint('10.180.0.8', { node: 'other' }), endpoint('10.180.0.9', { node: 'test-node' })])]),
    );
    expect(elements(remote, 'hairpin-endpoints')).toEqual(['10.180.0.9 . 10.180.0.9']);
  });

  it('dispatches through the service-ips and service-nodeports maps; no endpoints goes to reject-chain', () => {
    const svc5 = serviceNames('ns5/svc5:p80', 'TCP');
    expect(elements(r, 'service-ips')).toEqual([
      '172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80',
      `172.30.0.45 . tcp . 80 : goto ${svc5.service}`,
      `5.6.7.8 . tcp . 80 : goto ${svc5.external}`,
    ]);
    expect(elements(r, 'service-nodeports')).toEqual([`tcp . 3002 : goto ${svc5.external}`]);
    expect(elements(r, 'no-endpoint-services')).toEqual(['172.30.0.46 . tcp . 80 : goto reject-chain']);
    expect(r.elements.get('no-endpoint-services')![0]!.comment).toBe('ns6/svc6:p80');
    expect(elements(r, 'cluster-ips')).toEqual(['172.30.0.41', '172.30.0.45', '172.30.0.46']);
    expect(chainText(r, 'services')).toEqual(['ip daddr . meta l4proto . th dport vmap @service-ips', 'fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports']);
  });

  it('affinity: a timeout set per endpoint, checked before the cascade and refreshed on every DNAT', () => {
    const svc5 = serviceNames('ns5/svc5:p80', 'TCP');
    const ep = endpointNames(svc5.base, '10.180.0.3', 80);
    expect(r.sets.find((s) => s.name === ep.affinity)).toEqual({ name: ep.affinity, type: 'ipv4_addr', flags: ['timeout'], timeout: 10800 });
    expect(chainText(r, svc5.service)!.slice(1)).toEqual([
      `ip saddr @${ep.affinity} meta l4proto tcp update @${ep.affinity} { ip saddr } dnat to 10.180.0.3:80`,
      `meta l4proto tcp update @${ep.affinity} { ip saddr } dnat to 10.180.0.3:80`,
    ]);
  });

  it('loadBalancerSourceRanges: plain return rules then drop, reached through firewall-ips before DNAT', () => {
    const svc5 = serviceNames('ns5/svc5:p80', 'TCP');
    expect(elements(r, 'firewall-ips')).toEqual([`5.6.7.8 . tcp . 80 : goto ${svc5.firewall}`]);
    expect(chainText(r, svc5.firewall)).toEqual(['ip saddr 203.0.113.0/25 return', 'drop']);
    expect(chainText(r, svc5.external)).toEqual(['jump mark-for-masquerade comment "masquerade traffic for ns5/svc5:p80 external destinations"', `goto ${svc5.service}`]);
  });

  it('masquerades by mark, and hooks in where upstream does', () => {
    expect(chainText(r, 'masquerading')).toEqual([
      'ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade',
      'meta mark & 0x00004000 == 0x00000000 return',
      'meta mark set meta mark ^ 0x00004000',
      'masquerade fully-random comment "kubernetes service traffic requiring SNAT"',
    ]);
    expect(r.chains.filter((c) => c.hook).map((c) => `${c.name} ${c.hook!.type} ${c.hook!.hook} ${c.hook!.prio}`)).toEqual([
      'filter-forward filter forward 0',
      'filter-input filter input 0',
      'filter-output filter output 0',
      'filter-output-pre-dnat filter output -110',
      'filter-prerouting-pre-dnat filter prerouting -110',
      'nat-output nat output -100',
      'nat-postrouting nat postrouting 100',
      'nat-prerouting nat prerouting -100',
    ]);
  });

  it('eTP Local: pods and the node short-circuit to the Cluster chain; others go to the Local one', () => {
    const local = renderNftables(
      plan([
        service('ns/lb', { type: 'NodePort', clusterIP: '172.30.0.60', ports: [{ name: 'p80', port: 80, nodePort: 3003 }], externalTrafficPolicy: 'Local' }),
        endpointSlice('ns/lb', p80, [endpoint('10.180.0.7', { node: 'test-node' }), endpoint('10.180.1.7', { node: 'other' })]),
      ]),
    );
    const n = serviceNames('ns/lb:p80', 'TCP');
    expect(chainText(local, n.external)).toEqual([
      `ip saddr 10.0.0.0/8 goto ${n.service} comment "pod traffic for ns/lb:p80 external destinations"`,
      'fib saddr type local jump mark-for-masquerade comment "masquerade LOCAL traffic for ns/lb:p80 external destinations"',
      `fib saddr type local goto ${n.service} comment "route LOCAL traffic for ns/lb:p80 external destinations"`,
      `goto ${n.local}`,
    ]);
    expect(chainText(local, n.local)).toEqual(['meta l4proto tcp dnat to 10.180.0.7:80']);
  });

  it('--nodeport-addresses: NodePorts only on the addresses of the nodeport-ips set', () => {
    const limited = renderNftables(plan(objects, { nodePortAddresses: [parseCIDR('192.168.0.0/24')!] }));
    expect(elements(limited, 'nodeport-ips')).toEqual(['192.168.0.2']);
    expect(chainText(limited, 'services')![1]).toBe('ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports');
  });

  it('prints a full batch in text that starts by replacing the table', () => {
    const text = batchText(fullBatch(r).commands).split('\n');
    expect(text.slice(0, 3)).toEqual(['add table ip kube-proxy', 'delete table ip kube-proxy', 'add table ip kube-proxy']);
    expect(text).toContain('add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }');
    expect(text).toContain('add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; policy accept ; }');
    expect(text).toContain('add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }');
  });
});
