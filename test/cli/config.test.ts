import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, interpretConfig, loadConfigFile, parseDuration } from '../../src/cli/config.ts';

/** The config.conf kubeadm writes into the kube-proxy ConfigMap (v1.30), with our values set. */
const KUBEADM = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
`;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function file(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-config-'));
  dirs.push(dir);
  const path = join(dir, 'config.conf');
  writeFileSync(path, text);
  return path;
}

describe('KubeProxyConfiguration v1alpha1', () => {
  it("reads kubeadm's file: applies what it sets, reports nothing for defaults", async () => {
    const { settings, reports } = await loadConfigFile(file(KUBEADM));
    expect(reports).toEqual([]);
    expect(settings).toEqual({
      kubeconfig: '/var/lib/kube-proxy/kubeconfig.conf',
      clusterCidr: '10.244.0.0/16',
      bindAddressHardFail: false,
      masqueradeAll: false,
      // Its explicit zeros: the same as the flags' defaults (null fields keep the defaults).
      conntrackTcpBeLiberal: false,
      conntrackUdpTimeout: 0,
      conntrackUdpTimeoutStream: 0,
    });
  });

  it('applies iptables timing, mode, bit and node port addresses', () => {
    const doc = {
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: 'iptables',
      iptables: { syncPeriod: '1m30s', minSyncPeriod: '500ms', masqueradeBit: 15 },
      nodePortAddresses: ['192.0.2.0/24', '198.18.0.0/15'],
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '0.0.0.0:10249',
    };
    expect(interpretConfig(doc).settings).toEqual({
      proxyMode: 'iptables',
      iptablesSyncPeriod: 90_000,
      iptablesMinSyncPeriod: 500,
      iptablesMasqueradeBit: 15,
      nodeportAddresses: '192.0.2.0/24,198.18.0.0/15',
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '0.0.0.0:10249',
    });
  });

  it("networkPolicy (kproxy's own field) turns on --network-policy, and must be a boolean", () => {
    const base = { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration' };
    expect(interpretConfig({ ...base, networkPolicy: true })).toEqual({ settings: { networkPolicy: true }, reports: [] });
    expect(() => interpretConfig({ ...base, networkPolicy: 'yes' })).toThrow(/networkPolicy/);
  });

  it('mode nftables takes the nftables section, and ignores the iptables one', () => {
    const doc = {
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: 'nftables',
      iptables: { syncPeriod: '30s', masqueradeBit: 14, masqueradeAll: false },
      nftables: { syncPeriod: '45s', minSyncPeriod: '2s', masqueradeBit: 13, masqueradeAll: true },
    };
    expect(interpretConfig(doc).settings).toEqual({ proxyMode: 'nftables', iptablesSyncPeriod: 45_000, iptablesMinSyncPeriod: 2_000, iptablesMasqueradeBit: 13, masqueradeAll: true });
    const { nftables: _n, ...iptablesDoc } = { ...doc, mode: 'iptables' };
    expect(interpretConfig({ ...iptablesDoc, nftables: doc.nftables }).settings).toEqual({ proxyMode: 'iptables', iptablesSyncPeriod: 30_000, iptablesMasqueradeBit: 14, masqueradeAll: false });
  });

  it('reports unknown fields and unsupported values, never silently', () => {
    const doc = {
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      frobnicate: 1,
      iptables: { localhostNodePorts: true, typo: 1 },
      featureGates: { Foo: true },
    };
    const { reports } = interpretConfig(doc);
    expect(reports.map((r) => `${r.problem} ${r.field}`).sort()).toEqual(['unknown frobnicate', 'unknown iptables.typo', 'unsupported featureGates', 'unsupported iptables.localhostNodePorts']);
  });

  it('applies the conntrack section as the --conntrack-* flags: null is the default, 0 leaves a sysctl alone', () => {
    const doc = {
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      conntrack: { maxPerCore: 0, min: null, tcpEstablishedTimeout: '2h0m0s', tcpCloseWaitTimeout: null, tcpBeLiberal: true, udpTimeout: '30s', udpStreamTimeout: '0s' },
    };
    expect(interpretConfig(doc)).toEqual({
      settings: { conntrackMaxPerCore: 0, conntrackTcpTimeoutEstablished: 7_200_000, conntrackTcpBeLiberal: true, conntrackUdpTimeout: 30_000, conntrackUdpTimeoutStream: 0 },
      reports: [],
    });
    expect(() => interpretConfig({ ...doc, conntrack: { maxPerCore: -1 } })).toThrow(/conntrack\.maxPerCore: must be a whole number/);
    expect(() => interpretConfig({ ...doc, conntrack: { udpTimeout: 30 } })).toThrow(/conntrack\.udpTimeout: must be a duration/);
  });

  it('applies detectLocalMode and detectLocal as the --detect-local-mode flags, and refuses an unknown mode or a bad interface name by field', () => {
    const base = { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration' };
    expect(interpretConfig({ ...base, detectLocalMode: 'InterfaceNamePrefix', detectLocal: { bridgeInterface: '', interfaceNamePrefix: 'veth' } })).toEqual({
      settings: { detectLocalMode: 'InterfaceNamePrefix', podInterfaceNamePrefix: 'veth' },
      reports: [],
    });
    expect(() => interpretConfig({ ...base, detectLocalMode: 'Bridge' })).toThrow(/^detectLocalMode: "Bridge" is not one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix/);
    expect(() => interpretConfig({ ...base, detectLocal: { bridgeInterface: 'br0"; drop' } })).toThrow(/^detectLocal\.bridgeInterface: .* is not an interface name/);
  });

  it('reports fields named like JavaScript built-ins as unknown', () => {
    const doc = { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', constructor: 1, toString: 'x', iptables: { hasOwnProperty: 2 } };
    expect(
      interpretConfig(doc)
        .reports.map((r) => `${r.problem} ${r.field}`)
        .sort(),
    ).toEqual(['unknown constructor', 'unknown iptables.hasOwnProperty', 'unknown toString']);
  });

  it('rejects a wrong kind, another proxy mode and invalid values of applied fields', () => {
    const base = { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration' };
    expect(() => interpretConfig({ ...base, kind: 'KubeletConfiguration' })).toThrow(ConfigError);
    expect(() => interpretConfig({ ...base, apiVersion: 'kubeproxy.config.k8s.io/v1alpha2' })).toThrow(/apiVersion/);
    expect(() => interpretConfig({ ...base, mode: 'ipvs' })).toThrow(/ipvs/);
    expect(() => interpretConfig({ ...base, iptables: { masqueradeBit: 32 } })).toThrow(/0-31/);
    expect(() => interpretConfig({ ...base, iptables: { syncPeriod: '30 seconds' } })).toThrow(/duration/);
    expect(() => interpretConfig({ ...base, nodePortAddresses: ['primary', '10.0.0.0/8'] })).toThrow(/"primary" cannot be combined/);
    expect(interpretConfig({ ...base, nodePortAddresses: ['primary'] }).settings).toEqual({ nodeportAddresses: 'primary' });
    expect(() => interpretConfig([base])).toThrow(ConfigError);
  });

  it('fails clearly on unreadable or duplicate-key YAML', async () => {
    await expect(loadConfigFile('/nonexistent/config.conf')).rejects.toThrow(/cannot read/);
    await expect(loadConfigFile(file('kind: KubeProxyConfiguration\nkind: Other\n'))).rejects.toThrow(/not valid YAML/);
  });
});

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000],
    ['1m', 60_000],
    ['2h22m', 8_520_000],
    ['500ms', 500],
    ['1.5s', 1_500],
    ['0s', 0],
    ['0', 0],
  ])('%s is %d ms', (text, ms) => expect(parseDuration(text, 'f')).toBe(ms));

  it.each(['', '30', '-1s', '1d', 's', '1s ', '1m x'])('rejects %j', (text) => expect(() => parseDuration(text, 'f')).toThrow(ConfigError));
});
