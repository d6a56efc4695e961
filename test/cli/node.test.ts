/** Node settings per IP family (cli/node.ts), the conntrack call per family and the listen address of a dual-stack node. */
import { describe, expect, it } from 'vitest';
import { conntrackArgs } from '../../src/backends/conntrack.ts';
import { listenHost } from '../../src/cli/agent.ts';
import { ConfigError } from '../../src/cli/config.ts';
import { checkSettings, proxyConfig, type NodeSettings } from '../../src/cli/node.ts';
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
