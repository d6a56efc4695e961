/** Shared destinations: the oldest Service keeps them, the others keep the rest, and the result is stable. */
import { describe, expect, it } from 'vitest';
import { FrontendMemo, resolveFrontends } from '../../src/planner/frontends.ts';
import { PlanCache, planProxy } from '../../src/planner/plan.ts';
import { endpoint, endpointSlice, service, type ServiceOptions } from '../support/objects.ts';
import { storeOf, TEST_CONFIG } from '../support/pipeline.ts';
import type { RawObject } from '../../src/sources/objects.ts';

const PORTS = [{ name: 'http', port: 80 }];
const NODEPORT = { type: 'LoadBalancer' as const, ports: [{ name: 'http', port: 80, nodePort: 30080 }] };
function svc(key: string, created: string | undefined, o: Partial<ServiceOptions>): RawObject[] {
  const s = service(key, { clusterIP: '10.96.0.1', ports: PORTS, ...o }) as RawObject & { metadata: Record<string, unknown> };
  if (created !== undefined) s.metadata.creationTimestamp = created;
  return [s, endpointSlice(key, PORTS, [endpoint('10.244.1.1')])];
}
const states = (objects: RawObject[]) => storeOf(objects).servicePortStates();

describe('resolveFrontends', () => {
  it('gives a shared externalIP or LB IP to the oldest Service; the newer keeps the rest', () => {
    const r = resolveFrontends(
      states([
        ...svc('a/new', '2026-11-21T10:00:00Z', { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.1', '192.0.2.2'] }),
        ...svc('z/old', '2026-11-21T09:00:00Z', { type: 'LoadBalancer', clusterIP: '10.96.0.2', loadBalancerIPs: ['192.0.2.1'], ports: [{ name: 'http', port: 80, nodePort: 30002 }] }),
      ]),
      4,
    );
    expect(r.conflicts).toEqual([{ destination: '192.0.2.1:80/TCP', kind: 'externalIP', winner: 'z/old:http', loser: 'a/new:http' }]);
    const byName = new Map(r.states.map((s) => [s.servicePort.name, s.servicePort]));
    expect(byName.get('a/new:http')!.externalIPs.map((ip) => ip.text)).toEqual(['192.0.2.2']);
    expect(byName.get('z/old:http')!.loadBalancerIPs.map((ip) => ip.text)).toEqual(['192.0.2.1']);
  });

  it('breaks ties by namespace/name; a Service without a creation time counts as newest', () => {
    const t = '2026-11-21T09:00:00Z';
    const tie = resolveFrontends(states([...svc('b/x', t, { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.1'] }), ...svc('a/x', t, { clusterIP: '10.96.0.2', externalIPs: ['192.0.2.1'] })]), 4);
    expect(tie.conflicts.map((c) => c.winner)).toEqual(['a/x:http']);
    const undated = resolveFrontends(
      states([...svc('a/x', undefined, { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.1'] }), ...svc('b/x', '2026-11-21T09:00:00Z', { clusterIP: '10.96.0.2', externalIPs: ['192.0.2.1'] })]),
      4,
    );
    expect(undated.conflicts.map((c) => c.winner)).toEqual(['b/x:http']);
  });

  it('keeps the first role of a destination a service port lists twice, without calling it a conflict', () => {
    const r = resolveFrontends(states(svc('a/x', undefined, { ...NODEPORT, externalIPs: ['192.0.2.1'], loadBalancerIPs: ['192.0.2.1'] })), 4);
    expect(r.conflicts).toEqual([]);
    expect(r.states[0]!.servicePort.externalIPs.map((ip) => ip.text)).toEqual(['192.0.2.1']);
    expect(r.states[0]!.servicePort.loadBalancerIPs).toEqual([]);
  });

  it('settles NodePorts the same way, and leaves out a service port whose ClusterIP and port another holds', () => {
    const r = resolveFrontends(
      states([
        ...svc('a/old', '2026-11-21T09:00:00Z', { ...NODEPORT, clusterIP: '10.96.0.1' }),
        ...svc('b/np', '2026-11-21T10:00:00Z', { ...NODEPORT, clusterIP: '10.96.0.2' }),
        ...svc('c/dup', '2026-11-21T11:00:00Z', { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.9'] }),
      ]),
      4,
    );
    expect(r.conflicts.map((c) => `${c.kind} ${c.destination} ${c.loser}`)).toEqual(['clusterIP 10.96.0.1:80/TCP c/dup:http', 'nodePort :30080/TCP b/np:http']);
    expect(r.states.map((s) => [s.servicePort.name, s.servicePort.nodePort])).toEqual([
      ['a/old:http', 30080],
      ['b/np:http', 0],
    ]);
  });

  it('hands out the same adjusted object while the loss is the same, and the original once it is gone', () => {
    const memo = new FrontendMemo();
    const input = states([
      ...svc('a/x', '2026-11-21T09:00:00Z', { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.1'] }),
      ...svc('b/x', '2026-11-21T10:00:00Z', { clusterIP: '10.96.0.2', externalIPs: ['192.0.2.1'] }),
    ]);
    const one = resolveFrontends(input, 4, memo);
    const two = resolveFrontends(input, 4, memo);
    expect(two.states[1]).toBe(one.states[1]);
    expect(one.states[0]).toBe(input[0]);
    expect(resolveFrontends([input[1]!], 4, memo).states[0]).toBe(input[1]);
  });

  it('looks at one family at a time', () => {
    const objects = [
      ...svc('a/x', '2026-11-21T09:00:00Z', { clusterIP: '10.96.0.1', externalIPs: ['fd00::1'] }),
      ...svc('b/x', '2026-11-21T10:00:00Z', { clusterIP: '10.96.0.2', externalIPs: ['fd00::1', '192.0.2.1'] }),
    ];
    expect(resolveFrontends(states(objects), 4).conflicts).toEqual([]);
  });

  it('reaches the plan: the loser is planned without the destination, and re-planned only when the loss changes', () => {
    const cache = new PlanCache();
    const store = storeOf([
      ...svc('a/x', '2026-11-21T09:00:00Z', { clusterIP: '10.96.0.1', externalIPs: ['192.0.2.1'] }),
      ...svc('b/x', '2026-11-21T10:00:00Z', { clusterIP: '10.96.0.2', externalIPs: ['192.0.2.1'] }),
    ]);
    const p1 = planProxy(store.servicePortStates(), store.node, TEST_CONFIG, cache);
    expect(p1.servicePorts.map((sp) => sp.externalIPs)).toEqual([['192.0.2.1'], []]);
    const p2 = planProxy(store.servicePortStates(), store.node, TEST_CONFIG, cache);
    expect(cache.planned).toBe(0);
    expect(p2.servicePorts[1]).toBe(p1.servicePorts[1]);
  });
});
