/**
 * Properties of the whole pipeline (state → plan → iptables-restore input) over generated
 * clusters, including hostile strings in every field that reaches a rule.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildRestoreScript } from '../../../src/backends/iptables/restore.ts';
import { endpoint, endpointSlice, service } from '../../support/objects.ts';
import { rules, script } from '../../support/pipeline.ts';

const hostile = fc.oneof(fc.string(), fc.constantFrom('a"b', 'x\n-A INPUT -j ACCEPT', "q'", 'a b', '-j DROP', '10.0.0.1\n', 'a\\', '\u0000', 'Ä'));
const name = fc.oneof({ weight: 4, arbitrary: fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/) }, { weight: 1, arbitrary: hostile });
const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.oneof({ weight: 6, arbitrary: fc.tuple(octet, octet).map(([a, b]) => `10.${a}.${b}.1`) }, { weight: 1, arbitrary: hostile });
const port = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 65535 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, 70000, 1.5) });
const proto = fc.constantFrom('TCP', 'UDP', 'SCTP', 'ICMP');

const cluster = fc.array(
  fc.record({
    ns: name, name, portName: name, port, proto, clusterIP: ipv4,
    type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer'),
    nodePort: port, lbIP: ipv4, range: fc.oneof(fc.constant('203.0.113.0/24'), hostile), eip: ipv4,
    etp: fc.constantFrom('Cluster', 'Local'), itp: fc.constantFrom('Cluster', 'Local'), affinity: fc.constantFrom(0, 30),
    endpoints: fc.array(fc.record({ ip: ipv4, node: fc.oneof(fc.constant('test-node'), fc.constant('other'), name), ready: fc.boolean(), serving: fc.boolean(), terminating: fc.boolean(), zone: fc.constantFrom(undefined, 'zone-a') }), { maxLength: 4 }),
  }),
  { maxLength: 6 },
).map((svcs) =>
  svcs.flatMap((s) => {
    const ports = [{ name: s.portName, port: s.port as number, protocol: s.proto as 'TCP', nodePort: s.nodePort as number }];
    return [
      service(`${s.ns}/${s.name}`, {
        type: s.type as 'LoadBalancer', clusterIP: s.clusterIP, ports, externalIPs: [s.eip], loadBalancerIPs: [s.lbIP], loadBalancerSourceRanges: [s.range],
        externalTrafficPolicy: s.etp as 'Local', internalTrafficPolicy: s.itp as 'Local', ...(s.affinity ? { affinityTimeout: s.affinity } : {}),
      }),
      endpointSlice(`${s.ns}/${s.name}`, ports, s.endpoints.map((e) => endpoint(e.ip, { node: e.node, ready: e.ready, serving: e.serving, terminating: e.terminating, ...(e.zone ? { forZones: [e.zone] } : {}) }))),
    ];
  }),
);

const BUILTIN_TARGETS = new Set(['ACCEPT', 'DROP', 'REJECT', 'RETURN', 'DNAT', 'MARK', 'MASQUERADE']);
const LINE = /^(\*(filter|nat)|COMMIT|:KUBE-[A-Z0-9-]+ - \[0:0\]|-[AIX] [A-Z][A-Z0-9-]*( .*)?)$/;

describe('pipeline properties', () => {
  it('is deterministic: the same objects in any order give byte-identical rules', () => {
    fc.assert(fc.property(cluster, (objs) => {
      expect(script(objs)).toBe(script([...objs].reverse()));
    }), { numRuns: 200 });
  });

  it('never writes a jump to a chain it does not define', () => {
    fc.assert(fc.property(cluster, (objs) => {
      const r = rules(objs);
      for (const table of ['filter', 'nat'] as const) {
        const defined = new Set(r[table].map((c) => c.name));
        for (const c of r[table]) for (const rule of c.rules) {
          const target = / -j (\S+)/.exec(` ${rule}`)?.[1];
          if (target !== undefined) expect(BUILTIN_TARGETS.has(target) || defined.has(target), `${c.name}: ${rule}`).toBe(true);
        }
        for (const j of r.jumps) if (j.table === table) expect(defined.has(j.target)).toBe(true);
      }
    }), { numRuns: 200 });
  });

  it('lets no input string inject anything: every line is a well-formed restore line of printable ASCII', () => {
    fc.assert(fc.property(cluster, (objs) => {
      const text = buildRestoreScript(rules(objs));
      for (const line of text.trimEnd().split('\n')) {
        expect(line).toMatch(LINE);
        expect(line).toMatch(/^[\x20-\x7e]*$/);
        expect((line.match(/"/g) ?? []).length % 2).toBe(0);
        expect(line).not.toMatch(/-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING)/);
      }
    }), { numRuns: 300 });
  });
});
