/** Node settings per IP family (cli/node.ts), the conntrack call per family and the listen address of a dual-stack node. */
import { describe, expect, it } from 'vitest';
import { conntrackArgs } from '../../src/backends/conntrack.ts';
import { listenHost } from '../../src/cli/agent.ts';
import { ConfigError } from '../../src/cli/config.ts';
import { checkSettings, localDetection, nodePortPrimaryDefault, proxyConfig, type NodeSettings } from '../../src/cli/node.ts';
import { nodePortAddressList } from '../../src/cli/options.ts';
import { localDetector, planProxy } from '../../src/planner/plan.ts';
import { parseCIDR, parseIP } from '../../src/state/ip.ts';
import { cidrList } from '../../src/cli/options.ts';

const settings = (clusterCidr: string, nodeportAddresses = ''): NodeSettings => ({
  clusterCIDRs: cidrList(clusterCidr),
  masqueradeAll: false,
  masqueradeBit: 14,
  nodePortAddresses: cidrList(nodeportAddresses),
});

describe('node settings per family', () => {
  it('gives each family its own cluster CIDR and NodePort CIDRs, from kube-proxy’s comma-separated lists', () => {
    const s = settings('10.244.0.0/16, fd00:10:244::/56', '192.0.2.0/24,2001:db8:1::/64');
    checkSettings(s);
    const v4 = proxyConfig(s, 4)();
    const v6 = proxyConfig(s, 6)();
    expect([v4.family, v4.clusterCIDR?.text, v4.nodePortAddresses.map((c) => c.text)]).toEqual([4, '10.244.0.0/16', ['192.0.2.0/24']]);
    expect([v6.family, v6.clusterCIDR?.text, v6.nodePortAddresses.map((c) => c.text)]).toEqual([6, 'fd00:10:244::/56', ['2001:db8:1::/64']]);
  });

  it('a family without a cluster CIDR has no local-traffic detector', () => {
    expect(proxyConfig(settings('10.244.0.0/16'), 6)().clusterCIDR).toBeUndefined();
  });

  it('refuses two cluster CIDRs of one family', () => {
    expect(() => checkSettings(settings('10.244.0.0/16,10.245.0.0/16'))).toThrow(ConfigError);
    expect(() => checkSettings(settings('10.244.0.0/16,10.245.0.0/16'))).toThrow(/one CIDR per IP family, got 10.244.0.0\/16, 10.245.0.0\/16/);
  });
});

describe('--detect-local-mode', () => {
  const node = (podCIDRs: string[]) => ({ podCIDRs: podCIDRs.map((c) => parseCIDR(c)!) });
  it("gives each family upstream's detector: the cluster CIDR, the Node's pod CIDR, the bridge or the interface prefix", () => {
    const s = (mode: string, bridge?: string, prefix?: string) => ({ ...settings('10.244.0.0/16'), detectLocal: localDetection(mode, bridge, prefix) });
    const n = node(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    expect(localDetector(proxyConfig(s('ClusterCIDR'), 4)(), n)).toEqual({ kind: 'cidr', cidr: '10.244.0.0/16' });
    expect(localDetector(proxyConfig(s('ClusterCIDR'), 6)(), n)).toBeUndefined();
    expect(localDetector(proxyConfig(s('NodeCIDR'), 4)(), n)).toEqual({ kind: 'cidr', cidr: '10.244.1.0/24' });
    expect(localDetector(proxyConfig(s('NodeCIDR'), 6)(), n)).toEqual({ kind: 'cidr', cidr: 'fd00:10:244:1::/64' });
    expect(localDetector(proxyConfig(s('NodeCIDR'), 4)(), node([]))).toBeUndefined();
    expect(localDetector(proxyConfig(s('BridgeInterface', 'cbr0'), 6)(), n)).toEqual({ kind: 'interface', name: 'cbr0' });
    expect(localDetector(proxyConfig(s('InterfaceNamePrefix', undefined, 'veth'), 4)(), n)).toEqual({ kind: 'interfacePrefix', prefix: 'veth' });
  });

  it('refuses an unknown mode, a missing interface and a name no rule could hold, naming the flag', () => {
    expect(() => localDetection('Bridge', undefined, undefined)).toThrow(/^--detect-local-mode: "Bridge" is not one of ClusterCIDR/);
    expect(() => localDetection('BridgeInterface', undefined, undefined)).toThrow('--pod-bridge-interface must be set with --detect-local-mode BridgeInterface');
    expect(() => localDetection('InterfaceNamePrefix', undefined, 'veth" accept')).toThrow(/^--pod-interface-name-prefix: .* is not an interface name/);
    expect(() => localDetection('InterfaceNamePrefix', undefined, 'a-name-longer-than-15')).toThrow(ConfigError);
  });
});

describe('--nodeport-addresses primary', () => {
  it("is the default of nftables mode only, as upstream v1.36's; 'primary' is alone or an error", () => {
    expect(nodePortPrimaryDefault('nftables', [])).toBe(true);
    expect(nodePortPrimaryDefault('iptables', [])).toBe(false);
    expect(nodePortPrimaryDefault('nftables', cidrList('0.0.0.0/0'))).toBe(false);
    expect(nodePortPrimaryDefault('iptables', nodePortAddressList('primary'))).toBe(true);
    expect(() => nodePortAddressList('primary,10.0.0.0/8')).toThrow(/cannot be combined/);
  });

  it("puts NodePorts on the Node's IP of each family, and on every address where the Node has none of it", () => {
    const s: NodeSettings = { ...settings(''), nodePortPrimary: true };
    const node = { name: 'node-1', zone: undefined, addresses: [parseIP('192.0.2.21')!], podCIDRs: [], deleting: false };
    expect(planProxy([], node, proxyConfig(s, 4)()).nodePortDestinations).toEqual({ kind: 'addresses', addresses: ['192.0.2.21'] });
    expect(planProxy([], node, proxyConfig(s, 6)()).nodePortDestinations).toEqual({ kind: 'all' });
  });
});

describe('per-family host calls', () => {
  it('deletes conntrack entries in the family of the sync', () => {
    expect(conntrackArgs({ origDst: 'fd00:10:96::a', replySrc: 'fd00:10:244:1::2' }, 6)).toEqual(['-D', '-f', 'ipv6', '-p', 'udp', '--orig-dst', 'fd00:10:96::a', '--reply-src', 'fd00:10:244:1::2']);
    expect(conntrackArgs({ origPortDst: 30053 }, 4)).toEqual(['-D', '-f', 'ipv4', '-p', 'udp', '--orig-port-dst', '30053']);
  });

  it('listens on :: for 0.0.0.0 on a dual-stack node, and keeps any other address', () => {
    expect(listenHost('0.0.0.0', [4, 6])).toBe('::');
    expect(listenHost('0.0.0.0', [4])).toBe('0.0.0.0');
    expect(listenHost('127.0.0.1', [4, 6])).toBe('127.0.0.1');
  });
});
