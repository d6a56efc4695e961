import { describe, expect, it } from 'vitest';
import { staleUDPFlows } from '../../src/planner/conntrack.ts';
import { endpoint, endpointSlice, service, type PortSpec } from '../support/objects.ts';
import { plan } from '../support/pipeline.ts';

const DNS = (ports: PortSpec[] = [{ name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 }]) =>
  service('kube-system/dns', { type: 'NodePort', clusterIP: '10.96.0.10', externalIPs: ['198.51.100.5'], ports });
const eps = (...ips: string[]) =>
  endpointSlice(
    'kube-system/dns',
    [{ name: 'dns', port: 53, protocol: 'UDP' }],
    ips.map((ip) => endpoint(ip)),
  );

describe('staleUDPFlows (upstream conntrack cleanup)', () => {
  it('nothing at start or without change', () => {
    const p = plan([DNS(), eps('10.180.0.1')]);
    expect(staleUDPFlows(undefined, p)).toEqual([]);
    expect(staleUDPFlows(p, plan([DNS(), eps('10.180.0.1')]))).toEqual([]);
  });

  it('flows answered by a removed endpoint, on every service address and the NodePort', () => {
    const before = plan([DNS(), eps('10.180.0.1', '10.180.0.2')]);
    expect(staleUDPFlows(before, plan([DNS(), eps('10.180.0.2')]))).toEqual([
      { origDst: '10.96.0.10', replySrc: '10.180.0.1' },
      { origDst: '198.51.100.5', replySrc: '10.180.0.1' },
      { origPortDst: 30053, replySrc: '10.180.0.1' },
    ]);
    // The Service itself deleted: all its endpoints' flows.
    expect(staleUDPFlows(before, plan([]))).toHaveLength(6);
  });

  it('every flow to a UDP service that gets its first endpoint (they met REJECT)', () => {
    expect(staleUDPFlows(plan([DNS()]), plan([DNS(), eps('10.180.0.1')]))).toEqual([{ origDst: '10.96.0.10' }, { origDst: '198.51.100.5' }, { origPortDst: 30053 }]);
  });

  it('ignores TCP', () => {
    const tcp = [{ name: 'dns', port: 53, protocol: 'TCP' as const, nodePort: 30053 }];
    const tcpEps = (...ips: string[]) =>
      endpointSlice(
        'kube-system/dns',
        [{ name: 'dns', port: 53, protocol: 'TCP' }],
        ips.map((ip) => endpoint(ip)),
      );
    expect(staleUDPFlows(plan([DNS(tcp), tcpEps('10.180.0.1')]), plan([DNS(tcp), tcpEps('10.180.0.2')]))).toEqual([]);
  });
});
