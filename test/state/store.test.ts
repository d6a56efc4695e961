import { describe, expect, it } from 'vitest';
import { ProxyStateStore } from '../../src/state/store.ts';
import { endpoint, endpointSlice, fixtureItems, node, service } from '../support/objects.ts';

function load(items: Record<string, unknown>[], nodeName = 'node-1') {
  const store = new ProxyStateStore(nodeName);
  const issues = [];
  const ignored: string[] = [];
  for (const o of items) {
    const r = o.kind === 'Service' ? store.applyService(o) : o.kind === 'Node' ? store.applyNode(o) : store.applyEndpointSlice(o);
    issues.push(...r.issues);
    if (r.ignored) ignored.push(`${(o.metadata as { name: string }).name}: ${r.ignored}`);
  }
  return { store, issues, ignored };
}

describe('ProxyStateStore on the fixture cluster', () => {
  const { store, issues, ignored } = load(fixtureItems());

  it('keeps the proxied Services and ignores headless and ExternalName ones', () => {
    expect(issues).toEqual([]);
    expect(ignored.sort()).toEqual(['db-txk4z: slice of a headless Service', 'db: headless (clusterIP None)', 'legacy: type ExternalName']);
    expect(store.servicePortStates().map((s) => `${s.servicePort.name}/${s.servicePort.protocol}`)).toEqual([
      'default/kubernetes:https/TCP',
      'infra/metrics-gw:statsd/UDP',
      'infra/metrics-gw:sctp/SCTP',
      'kube-system/kube-dns:dns/UDP',
      'kube-system/kube-dns:dns-tcp/TCP',
      'kube-system/kube-dns:metrics/TCP',
      'shop/api:grpc/TCP',
      'shop/checkout:http/TCP',
      'shop/frontend:http/TCP',
      'shop/frontend:https/TCP',
      'shop/payments:http/TCP',
    ]);
  });

  it('matches slice ports to Service ports by name and protocol, with upstream condition defaults', () => {
    const byName = new Map(store.servicePortStates().map((s) => [s.servicePort.name, s]));
    expect(byName.get('shop/frontend:https')!.endpoints.map((e) => e.hostPort)).toEqual(['10.244.1.10:8443', '10.244.1.11:8443', '10.244.2.10:8443']);
    const api = byName.get('shop/api:grpc')!;
    expect(api.servicePort.affinityTimeoutSeconds).toBe(1800);
    expect(api.endpoints.find((e) => e.ip.text === '10.244.2.21')).toMatchObject({ ready: false, serving: true, terminating: true });
    // metrics-gw's endpoints give only ready: serving defaults to true, terminating to false.
    expect(byName.get('infra/metrics-gw:statsd')!.endpoints[1]).toMatchObject({ ready: false, serving: true, terminating: false });
    expect(byName.get('shop/payments:http')!.endpoints).toEqual([]);
    expect(byName.get('shop/frontend:http')!.servicePort).toMatchObject({ externalTrafficPolicy: 'Local', healthCheckNodePort: 32622, nodePort: 31080 });
  });
});

describe('ProxyStateStore', () => {
  const ports = [{ name: 'p', port: 80 }];
  const svc = service('ns/s', { clusterIP: '10.96.0.1', ports });

  it('merges slices: one entry per ip:port, a local copy preferred, sorted as strings', () => {
    const { store } = load([
      svc,
      endpointSlice('ns/s', ports, [endpoint('10.0.0.10', { node: 'other' }), endpoint('10.0.0.2')], 'a'),
      endpointSlice('ns/s', ports, [endpoint('10.0.0.10', { node: 'node-1' })], 'b'),
    ]);
    const eps = store.servicePortStates()[0]!.endpoints;
    expect(eps.map((e) => e.hostPort)).toEqual(['10.0.0.10:80', '10.0.0.2:80']);
    expect(eps[0]!.nodeName).toBe('node-1');
  });

  it('skips an invalid endpoint but keeps the rest of the slice; an invalid Service removes its old version', () => {
    const { store, issues } = load([svc, endpointSlice('ns/s', ports, [endpoint('10.0.0.1'), endpoint('10.0.0.300'), endpoint('fd00::1')])]);
    expect(issues.map((i) => [i.field, i.skipped])).toEqual([
      ['endpoints[1].addresses[0]', 'endpoint'],
      ['endpoints[2].addresses[0]', 'endpoint'],
    ]);
    expect(store.servicePortStates()[0]!.endpoints).toHaveLength(1);
    const r = store.applyService(service('ns/s', { clusterIP: 'bogus', ports }));
    expect(r.issues[0]).toMatchObject({ kind: 'Service', object: 'ns/s', field: 'spec.clusterIPs[0]', skipped: 'object' });
    expect(store.servicePortStates()).toEqual([]);
  });

  it.each([
    ['metadata.name', { metadata: { name: 'Bad_Name', namespace: 'ns' } }],
    ['metadata.name', { metadata: { name: 'x\n-A INPUT -j ACCEPT', namespace: 'ns' } }],
    ['spec.ports[0].port', { spec: { clusterIP: '10.96.0.1', ports: [{ port: 70000 }] } }],
    ['spec.ports[0].protocol', { spec: { clusterIP: '10.96.0.1', ports: [{ port: 80, protocol: 'tcp' }] } }],
    ['spec.ports[0].name', { spec: { clusterIP: '10.96.0.1', ports: [{ port: 80, name: 'a b' }] } }],
    ['spec.externalIPs[0]', { spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], externalIPs: ['1.2.3.4"'] } }],
    ['spec.loadBalancerSourceRanges[0]', { spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], loadBalancerSourceRanges: ['nope'] } }],
    ['spec.externalIPs', { spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], externalIPs: Array(1001).fill('1.1.1.1') } }],
    [
      'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
      { spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } } },
    ],
  ])('names the bad field %s', (field, patch) => {
    const store = new ProxyStateStore('node-1');
    const r = store.applyService({ ...service('ns/s', { clusterIP: '10.96.0.1', ports }), ...patch });
    expect(r.issues[0]?.field).toBe(field);
    expect(store.serviceCount).toBe(0);
  });

  it('ignores Services and slices claimed by another proxy, and slices without the service-name label', () => {
    const { store, ignored } = load([
      service('ns/s', { clusterIP: '10.96.0.1', ports, labels: { 'service.kubernetes.io/service-proxy-name': 'other' } }),
      { ...endpointSlice('ns/t', ports, []), metadata: { name: 't-1', namespace: 'ns' } },
    ]);
    expect(store.serviceCount).toBe(0);
    expect(ignored).toHaveLength(2);
  });

  it('tracks which Services changed; a zone change marks every Service', () => {
    const store = new ProxyStateStore('node-1');
    store.applyService(svc);
    store.applyService(service('ns/t', { clusterIP: '10.96.0.2', ports }));
    expect([...store.takeDirty()].sort()).toEqual(['ns/s', 'ns/t']);
    store.applyEndpointSlice(endpointSlice('ns/t', ports, [endpoint('10.0.0.1')]));
    expect([...store.takeDirty()]).toEqual(['ns/t']);
    store.applyNode(node('node-1', 'zone-a'));
    expect([...store.takeDirty()].sort()).toEqual(['ns/s', 'ns/t']);
    store.applyNode(node('node-2', 'zone-b'));
    expect(store.node.zone).toBe('zone-a');
  });
});

describe('endpoints in one form', () => {
  it('shares a single-port slice endpoint with the service-port state; copies per port from a multi-port slice', () => {
    const { store } = load([
      service('a/one', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
      endpointSlice('a/one', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.1'), endpoint('10.244.1.2')]),
      service('a/two', {
        clusterIP: '10.96.0.11',
        ports: [
          { name: 'http', port: 80 },
          { name: 'metrics', port: 9090 },
        ],
      }),
      endpointSlice(
        'a/two',
        [
          { name: 'http', port: 8080 },
          { name: 'metrics', port: 9100 },
        ],
        [endpoint('10.244.2.1')],
      ),
    ]);
    const states = new Map(store.servicePortStates().map((s) => [`${s.servicePort.serviceKey}:${s.servicePort.portName}`, s.endpoints]));
    expect(states.get('a/one:http')!.map((e) => [e.hostPort, e.port])).toEqual([
      ['10.244.1.1:8080', 8080],
      ['10.244.1.2:8080', 8080],
    ]);
    expect(states.get('a/two:http')!.map((e) => e.hostPort)).toEqual(['10.244.2.1:8080']);
    expect(states.get('a/two:metrics')!.map((e) => e.hostPort)).toEqual(['10.244.2.1:9100']);
    // States recomputed from the same slices (the Services applied again): a single-port slice's
    // endpoints are the stored objects themselves, a multi-port slice's are made anew per port.
    store.applyService(service('a/one', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }));
    store.applyService(
      service('a/two', {
        clusterIP: '10.96.0.11',
        ports: [
          { name: 'http', port: 80 },
          { name: 'metrics', port: 9090 },
        ],
      }),
    );
    const again = new Map(store.servicePortStates().map((s) => [`${s.servicePort.serviceKey}:${s.servicePort.portName}`, s.endpoints]));
    expect(again.get('a/one:http')).not.toBe(states.get('a/one:http'));
    expect(again.get('a/one:http')![0]).toBe(states.get('a/one:http')![0]);
    expect(again.get('a/two:http')![0]).not.toBe(states.get('a/two:http')![0]);
    expect(again.get('a/two:http')![0]).toEqual(states.get('a/two:http')![0]);
  });
});
