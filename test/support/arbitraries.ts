/**
 * fast-check generators shared by the backends' property tests: small clusters of Services and
 * EndpointSlices with every feature, and hostile strings in every field that reaches a rule.
 */
import fc from 'fast-check';
import { endpoint, endpointSlice, service } from './objects.ts';

export const hostile = fc.oneof(fc.string(), fc.constantFrom('a"b', 'x\n-A INPUT -j ACCEPT', "q'", 'a b', '-j DROP', '10.0.0.1\n', 'a\\', '\u0000', 'Ä'));
const name = fc.oneof({ weight: 4, arbitrary: fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/) }, { weight: 1, arbitrary: hostile });
const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.oneof({ weight: 6, arbitrary: fc.tuple(octet, octet).map(([a, b]) => `10.${a}.${b}.1`) }, { weight: 1, arbitrary: hostile });
const port = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 65535 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, 70000, 1.5) });
const proto = fc.constantFrom('TCP', 'UDP', 'SCTP', 'ICMP');

/** A generated cluster: Services and their EndpointSlices, some fields hostile. */
export const cluster = fc
  .array(
    fc.record({
      ns: name,
      name,
      portName: name,
      port,
      proto,
      clusterIP: ipv4,
      type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer'),
      nodePort: port,
      lbIP: ipv4,
      range: fc.oneof(fc.constant('203.0.113.0/24'), hostile),
      eip: ipv4,
      etp: fc.constantFrom('Cluster', 'Local'),
      itp: fc.constantFrom('Cluster', 'Local'),
      affinity: fc.constantFrom(0, 30),
      endpoints: fc.array(
        fc.record({
          ip: ipv4,
          node: fc.oneof(fc.constant('test-node'), fc.constant('other'), name),
          ready: fc.boolean(),
          serving: fc.boolean(),
          terminating: fc.boolean(),
          zone: fc.constantFrom(undefined, 'zone-a'),
        }),
        { maxLength: 4 },
      ),
    }),
    { maxLength: 6 },
  )
  .map((svcs) =>
    svcs.flatMap((s) => {
      const ports = [{ name: s.portName, port: s.port, protocol: s.proto as 'TCP', nodePort: s.nodePort }];
      return [
        service(`${s.ns}/${s.name}`, {
          type: s.type,
          clusterIP: s.clusterIP,
          ports,
          externalIPs: [s.eip],
          loadBalancerIPs: [s.lbIP],
          loadBalancerSourceRanges: [s.range],
          externalTrafficPolicy: s.etp,
          internalTrafficPolicy: s.itp,
          ...(s.affinity ? { affinityTimeout: s.affinity } : {}),
        }),
        endpointSlice(
          `${s.ns}/${s.name}`,
          ports,
          s.endpoints.map((e) => endpoint(e.ip, { node: e.node, ready: e.ready, serving: e.serving, terminating: e.terminating, ...(e.zone ? { forZones: [e.zone] } : {}) })),
        ),
      ];
    }),
  );
