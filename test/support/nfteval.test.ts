/**
 * The nftables oracle's evaluator (test/support/nfteval.ts) on two real listings of the example
 * cluster's table, `nft -j list table ip kube-proxy` as upstream kube-proxy v1.36.2 and kproxy wrote
 * them (test/fixtures/nft; node-1 at 192.0.2.21): known fates of known packets, the two layouts'
 * agreement, and that a change to one of them is seen.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { behaviour, fates, NftTable, probes, type Packet } from './nfteval.ts';

const FIXTURES = join(import.meta.dirname, '../fixtures/nft');
const read = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const UPSTREAM = read('example-upstream-v1.36.2.json');
const KPROXY = read('example-kproxy.json');
const NODE = { addresses: ['192.0.2.21', '198.18.0.1'], ip: '192.0.2.21', client: '198.18.0.2' };

const packet = (saddr: string, daddr: string, proto: Packet['proto'], dport: number, o: Partial<Packet> = {}): Packet => ({
  saddr,
  daddr,
  proto,
  dport,
  iifname: 'p9',
  fromNode: false,
  nodeAddresses: NODE.addresses,
  ...o,
});

describe.each([
  ['upstream v1.36.2', UPSTREAM],
  ['kproxy', KPROXY],
])('the evaluator on the %s table', (_name, listing) => {
  const t = new NftTable(listing);

  it('spreads a ClusterIP over its endpoints; a pod keeps its address, a client is masqueraded', () => {
    expect(fates(t, packet('10.244.1.99', '10.96.0.10', 'udp', 53))).toEqual([
      { verdict: 'dnat', to: '10.244.1.2:53', masquerade: false, p: 0.5 },
      { verdict: 'dnat', to: '10.244.2.2:53', masquerade: false, p: 0.5 },
    ]);
    expect(fates(t, packet('198.18.0.2', '10.96.0.10', 'udp', 53, { iifname: 'ext0' })).map((f) => f.masquerade)).toEqual([true, true]);
  });

  it('masquerades a pod reaching itself through its Service (hairpin), and only then', () => {
    expect(fates(t, packet('10.244.1.2', '10.96.0.10', 'tcp', 53))).toEqual([
      { verdict: 'dnat', to: '10.244.1.2:53', masquerade: true, p: 0.5 },
      { verdict: 'dnat', to: '10.244.2.2:53', masquerade: false, p: 0.5 },
    ]);
  });

  it('rejects a Service without endpoints and an unused port of a ClusterIP; source ranges drop the client outside them', () => {
    expect(fates(t, packet('10.244.1.99', '10.96.20.4', 'tcp', 80))).toEqual([{ verdict: 'reject', masquerade: false, p: 1 }]);
    expect(fates(t, packet('10.244.1.99', '10.96.0.10', 'tcp', 1))).toEqual([{ verdict: 'reject', masquerade: false, p: 1 }]);
    expect(fates(t, packet('198.18.0.2', '203.0.113.10', 'tcp', 80, { iifname: 'ext0' }))).toEqual([{ verdict: 'drop', masquerade: false, p: 1 }]);
    // Allowed, and eTP Local: the node-1 endpoints, the client's address kept.
    expect(fates(t, packet('203.0.113.200', '203.0.113.10', 'tcp', 80, { iifname: 'ext0' }))).toEqual([
      { verdict: 'dnat', to: '10.244.1.10:8080', masquerade: false, p: 0.5 },
      { verdict: 'dnat', to: '10.244.1.11:8080', masquerade: false, p: 0.5 },
    ]);
  });

  it('keeps a ClientIP-affinity client on its endpoint for the timeout', () => {
    expect(fates(t, packet('10.244.1.99', '10.96.20.2', 'tcp', 9000)).map((f) => f.sticky)).toEqual([1800, 1800]);
  });

  it('takes NodePorts on the Node IP only (nftables mode’s default, primary)', () => {
    expect(fates(t, packet('198.18.0.2', '192.0.2.21', 'tcp', 30808, { iifname: 'ext0' })).map((f) => [f.to, f.masquerade])).toEqual([
      ['10.244.1.30:8080', true],
      ['10.244.2.30:8080', true],
    ]);
    expect(fates(t, packet('198.18.0.2', '198.18.0.1', 'tcp', 30808, { iifname: 'ext0' }))).toEqual([{ verdict: 'untouched', masquerade: false, p: 1 }]);
  });
});

describe('the two layouts', () => {
  const upstream = new NftTable(UPSTREAM);
  const kproxy = new NftTable(KPROXY);
  const packets = probes([upstream, kproxy], NODE);

  it('do the same to every probe', () => {
    expect(packets.length).toBeGreaterThan(100);
    expect(behaviour(kproxy, packets)).toEqual(behaviour(upstream, packets));
  });

  it('differ where one table is changed: a hairpin pair or an endpoint taken out is seen', () => {
    const edit = (mutate: (objects: { [k: string]: any }[]) => void) => {
      const doc = JSON.parse(KPROXY) as { nftables: { [k: string]: any }[] };
      mutate(doc.nftables);
      return new NftTable(JSON.stringify(doc));
    };
    const noHairpin = edit((o) => {
      const set = o.find((x) => x.set?.name === 'hairpin-endpoints')!.set;
      set.elem = set.elem.slice(1);
    });
    expect(behaviour(noHairpin, packets)).not.toEqual(behaviour(upstream, packets));
    const lastEndpointGone = edit((o) => {
      const rules = o.filter((x) => x.rule?.chain === 'service-FY5PMXPG-kube-system/kube-dns/udp/dns');
      o.splice(o.indexOf(rules.at(-1)!), 1);
    });
    expect(behaviour(lastEndpointGone, packets)).not.toEqual(behaviour(upstream, packets));
  });
});
