import { describe, expect, it } from 'vitest';
import { endpointChainName, probability, serviceChainNames } from '../../../src/backends/iptables/names.ts';
import { hashSuffix } from '../../../src/state/strings.ts';
import { comment } from '../../../src/backends/iptables/render.ts';
import { parseCIDR, parseIP } from '../../../src/state/ip.ts';
import { endpoint, endpointSlice, node, service } from '../../support/objects.ts';
import { chain, rules, script } from '../../support/pipeline.ts';

const p80 = [{ name: 'p80', port: 80 }];

describe('chain names and number formats (upstream pkg/proxy/iptables/proxier.go)', () => {
  it.each([
    ['ns1/svc1:p80tcp', 'XPGD46QRK7WJZT7O'],
    ['ns1/svc1:p80tcp10.180.0.1:80', 'SXIVWICOYRO3J4NJ'],
    ['ns4/svc4:p80tcp', '4SW47YFZTEDKD3PK'],
    ['ns5/svc5:p80tcp10.180.0.3:80', 'I77PXRDZVX7PMWMN'],
  ])('hash of %s is %s', (input, expected) => expect(hashSuffix(input)).toBe(expected));

  it('names the four service chains and the endpoint chain as upstream does', () => {
    expect(serviceChainNames('ns1/svc1:p80', 'TCP')).toEqual({ svc: 'KUBE-SVC-XPGD46QRK7WJZT7O', svl: 'KUBE-SVL-XPGD46QRK7WJZT7O', ext: 'KUBE-EXT-XPGD46QRK7WJZT7O', fw: 'KUBE-FW-XPGD46QRK7WJZT7O' });
    expect(endpointChainName('ns1/svc1:p80', 'TCP', '10.180.0.1:80')).toBe('KUBE-SEP-SXIVWICOYRO3J4NJ');
  });

  it('formats probabilities like Go %0.10f, including its round-half-even tie at 1/2048', () => {
    expect([2, 3, 6, 7, 100001, 2048, 1024].map(probability)).toEqual(['0.5000000000', '0.3333333333', '0.1666666667', '0.1428571429', '0.0000099999', '0.0004882812', '0.0009765625']);
    for (let k = 1; k < 5000; k++) if (k !== 2048) expect(probability(k)).toBe((1 / k).toFixed(10));
  });
});

describe('rules in upstream shapes (TestOverallIPTablesRules)', () => {
  const objects = [
    service('ns1/svc1', { clusterIP: '172.30.0.41', ports: p80 }),
    endpointSlice('ns1/svc1', p80, [endpoint('10.180.0.1')]),
    service('ns5/svc5', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.45',
      ports: [{ name: 'p80', port: 80, nodePort: 3002 }],
      loadBalancerIPs: ['5.6.7.8'],
      loadBalancerSourceRanges: ['203.0.113.0/25'],
      affinityTimeout: 10800,
      externalTrafficPolicy: 'Cluster',
    }),
    endpointSlice('ns5/svc5', p80, [endpoint('10.180.0.3')]),
  ];
  const r = rules(objects);

  it('writes svc1 and svc5 exactly as upstream', () => {
    expect(chain(r, 'nat', 'KUBE-SVC-XPGD46QRK7WJZT7O')).toEqual([
      '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ',
      '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ',
    ]);
    expect(chain(r, 'nat', 'KUBE-SEP-SXIVWICOYRO3J4NJ')).toEqual([
      '-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80',
    ]);
    expect(chain(r, 'nat', 'KUBE-SVC-NUKIZ6OKUXPJNT4C')).toEqual([
      '-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ',
      '-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN',
      '-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN',
    ]);
    expect(chain(r, 'nat', 'KUBE-SEP-I77PXRDZVX7PMWMN')).toEqual([
      '-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80',
    ]);
    expect(chain(r, 'nat', 'KUBE-FW-NUKIZ6OKUXPJNT4C')).toEqual([
      '-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C',
      '-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"',
    ]);
    expect(chain(r, 'nat', 'KUBE-EXT-NUKIZ6OKUXPJNT4C')).toEqual([
      '-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ',
      '-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C',
    ]);
    expect(chain(r, 'nat', 'KUBE-SERVICES')).toEqual([
      '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
      '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C',
      '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C',
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS',
    ]);
    expect(chain(r, 'nat', 'KUBE-NODEPORTS')).toEqual(['-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C']);
    expect(chain(r, 'filter', 'KUBE-PROXY-FIREWALL')).toEqual([
      '-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP',
    ]);
    expect(chain(r, 'nat', 'KUBE-POSTROUTING')).toEqual([
      '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
      '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
      '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]);
  });

  it('eTP Local without local endpoints: short-circuit EXT chain and filter DROPs (ns2/svc2)', () => {
    const r2 = rules([
      service('ns2/svc2', {
        type: 'LoadBalancer',
        clusterIP: '172.30.0.42',
        ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
        externalIPs: ['192.168.99.22'],
        loadBalancerIPs: ['1.2.3.4'],
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 30000,
      }),
      endpointSlice('ns2/svc2', p80, [endpoint('10.180.0.2', { node: 'other' })]),
    ]);
    const ext = 'KUBE-EXT-GNZBNJ2PO5MGZ6GT';
    expect(chain(r2, 'nat', ext)).toEqual([
      `-A ${ext} -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT`,
      `-A ${ext} -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`,
      `-A ${ext} -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT`,
    ]);
    expect(chain(r2, 'filter', 'KUBE-EXTERNAL-SERVICES')).toEqual([
      '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP',
      '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP',
      '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP',
    ]);
    expect(chain(r2, 'filter', 'KUBE-NODEPORTS')).toEqual(['-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT']);
    expect(r2.nat.some((c) => c.name.startsWith('KUBE-SVL-'))).toBe(false);
  });

  it('REJECTs a Service without endpoints in filter and writes no nat chain for it (TestNoEndpointsReject)', () => {
    const r3 = rules([service('ns6/svc6', { clusterIP: '172.30.0.46', ports: p80 })]);
    expect(chain(r3, 'filter', 'KUBE-SERVICES')).toEqual(['-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT']);
    expect(r3.nat.map((c) => c.name)).toEqual(['KUBE-MARK-MASQ', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-SERVICES']);
  });

  it('load-balances 3 endpoints with 1/3, 1/2, then unconditionally, ordered by ip:port string', () => {
    const r4 = rules([
      service('ns4/svc4', { clusterIP: '172.30.0.44', ports: p80 }),
      endpointSlice(
        'ns4/svc4',
        p80,
        ['10.180.0.2', '10.180.0.10', '10.180.0.5'].map((ip) => endpoint(ip)),
      ),
    ]);
    const lb = chain(r4, 'nat', 'KUBE-SVC-4SW47YFZTEDKD3PK')!.slice(1);
    expect(lb.map((l) => /-> (\S+)"/.exec(l)![1])).toEqual(['10.180.0.10:80', '10.180.0.2:80', '10.180.0.5:80']);
    expect(lb.map((l) => /--probability (\S+)/.exec(l)?.[1])).toEqual(['0.3333333333', '0.5000000000', undefined]);
  });

  it('--masquerade-all drops the pod-CIDR test; no detector writes no ClusterIP masquerade rule', () => {
    const objs = objects.slice(0, 2);
    expect(chain(rules(objs, { masqueradeAll: true }), 'nat', 'KUBE-SVC-XPGD46QRK7WJZT7O')![0]).toBe(
      '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-MARK-MASQ',
    );
    expect(chain(rules(objs, { clusterCIDR: undefined }), 'nat', 'KUBE-SVC-XPGD46QRK7WJZT7O')).toHaveLength(1);
  });

  it('--nodeport-addresses jumps to KUBE-NODEPORTS per matching non-loopback local address', () => {
    const r5 = rules(objects, { nodePortAddresses: [parseCIDR('192.168.0.0/24')!, parseCIDR('127.0.0.1/32')!] });
    expect(chain(r5, 'nat', 'KUBE-SERVICES')!.at(-1)).toBe(
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 192.168.0.2 -j KUBE-NODEPORTS',
    );
  });

  it('lets the node reach its own LB through source ranges when the node IP is inside one (TestLoadBalancer)', () => {
    const r6 = rules([
      node('test-node', undefined, ['192.168.0.2']),
      service('ns1/svc1', {
        type: 'LoadBalancer',
        clusterIP: '172.30.0.41',
        ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
        loadBalancerIPs: ['1.2.3.4', '5.6.7.8'],
        loadBalancerSourceRanges: ['192.168.0.0/24', ' 203.0.113.0/25'],
      }),
      endpointSlice('ns1/svc1', p80, [endpoint('10.180.0.1')]),
    ]);
    const fw = chain(r6, 'nat', 'KUBE-FW-XPGD46QRK7WJZT7O')!;
    expect(fw.map((l) => /-s (\S+)/.exec(l)?.[1])).toEqual(['192.168.0.0/24', '203.0.113.0/25', '1.2.3.4', '5.6.7.8', undefined]);
  });

  it('leaves comments off endpoint rules above 1000 endpoints (large-cluster mode)', () => {
    const eps = Array.from({ length: 1001 }, (_, i) => endpoint(`10.1.${i >> 8}.${i & 255}`));
    // Two slices: the API caps a slice at 1000 endpoints, and so does kproxy's validation.
    const big = rules([service('ns1/svc1', { clusterIP: '172.30.0.41', ports: p80 }), endpointSlice('ns1/svc1', p80, eps.slice(0, 500), 'a'), endpointSlice('ns1/svc1', p80, eps.slice(500), 'b')]);
    const seps = big.nat.filter((c) => c.name.startsWith('KUBE-SEP-'));
    expect(seps).toHaveLength(1001);
    expect(seps.every((c) => c.rules.every((r) => !r.includes('--comment')))).toBe(true);
  });

  it('renders the same input to the same bytes', () => {
    expect(script(objects)).toBe(script([...objects].reverse()));
  });

  it('refuses comment text that iptables-restore could misread, and shortens what is too long for xt_comment', () => {
    for (const bad of ['a"b', 'a\nb', "a'b", 'a\\b', '']) expect(() => comment(bad)).toThrow(/refusing/);
    expect(comment('a/b:c')).toBe('-m comment --comment a/b:c');
    expect(comment('x'.repeat(256))).toMatch(/^-m comment --comment x{246}~[A-Z2-7]{8}$/);
  });

  it('judges external access per family: an IPv6-only external IP gives the IPv4 rules no KUBE-EXT chain', () => {
    const r8 = rules([
      service('ns1/svc1', { clusterIP: '172.30.0.41', ports: p80, externalIPs: ['fd00::20'], externalTrafficPolicy: 'Local' }),
      endpointSlice('ns1/svc1', p80, [endpoint('10.180.0.1', { node: 'other' })]),
    ]);
    expect(r8.nat.map((c) => c.name).filter((n) => /^KUBE-(EXT|SVL)-/.test(n))).toEqual([]);
    expect(chain(r8, 'filter', 'KUBE-EXTERNAL-SERVICES')).toEqual([]);
  });

  it('leaves out objects of the other IP family', () => {
    expect(parseIP('fd00::1')?.family).toBe(6);
    const r7 = rules([service('ns1/v6', { clusterIP: 'fd00::1', ports: p80 }), endpointSlice('ns1/v6', p80, [])]);
    expect(chain(r7, 'filter', 'KUBE-SERVICES')).toEqual([]);
  });
});
