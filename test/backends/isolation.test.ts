/**
 * No single service port can stop the rules of the others: one whose rules cannot be rendered is
 * left out (and reported), and comments too long for a tool are shortened deterministically.
 */
import fc from 'fast-check';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { renderIptables } from '../../src/backends/iptables/render.ts';
import { fitComment } from '../../src/backends/iptables/names.ts';
import { renderNftables } from '../../src/backends/nftables/render.ts';
import { batchText } from '../../src/backends/nftables/text.ts';
import { fullBatch } from '../../src/backends/nftables/batch.ts';
import type { ProxyPlan } from '../../src/planner/plan.ts';
import { reportSkipped } from '../../src/runner/reconciler.ts';
import { ProxyMetrics } from '../../src/server/metrics.ts';
import { endpoint, endpointSlice, service } from '../support/objects.ts';
import { plan } from '../support/pipeline.ts';

const PORTS = [{ name: 'http', port: 80 }];
const objects = (ns: string, name: string, port = 'http') => [
  service(`${ns}/${name}`, {
    type: 'LoadBalancer',
    clusterIP: '10.96.0.9',
    ports: [{ name: port, port: 80, nodePort: 30080 }],
    loadBalancerIPs: ['203.0.113.9'],
    loadBalancerSourceRanges: ['198.18.0.0/24'],
    affinityTimeout: 60,
  }),
  endpointSlice(`${ns}/${name}`, [{ name: port, port: 80 }], [endpoint('10.244.1.1', { node: 'test-node' })]),
];

/** A plan with one more service port whose name holds a quote: the validators refuse such names, so only a bug could plan it. */
function withBrokenPort(p: ProxyPlan): ProxyPlan {
  const good = p.servicePorts[0]!;
  return { ...p, servicePorts: [...p.servicePorts, { ...good, name: 'demo/br"oken:http', clusterIP: '10.96.0.99' }] };
}

describe('a service port that cannot be rendered', () => {
  const base = plan([service('demo/good', { clusterIP: '10.96.0.1', ports: PORTS }), endpointSlice('demo/good', PORTS, [endpoint('10.244.1.1')])]);

  it('is left out of the iptables ruleset, named with the reason; the others are rendered', () => {
    const r = renderIptables(withBrokenPort(base), { conntrackTCPBeLiberal: false });
    expect(r.skipped).toEqual([{ servicePort: 'demo/br"oken:http TCP', reason: expect.stringMatching(/^refusing to write comment/) }]);
    expect([...r.services.keys()]).toEqual(['demo/good:http TCP']);
  });

  it('is left out of the nft table, named with the reason; the others are rendered', () => {
    const r = renderNftables(withBrokenPort(base));
    expect(r.skipped.map((s) => s.servicePort)).toEqual(['demo/br"oken:http TCP']);
    expect([...r.services.keys()]).toEqual(['demo/good:http TCP']);
    expect(batchText(fullBatch(r).commands)).not.toContain('br"oken');
  });

  it('is logged and counted once while it stays left out', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    const metrics = new ProxyMetrics();
    const skipped = renderNftables(withBrokenPort(base)).skipped;
    const first = reportSkipped(log, metrics, skipped);
    reportSkipped(log, metrics, skipped, first);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ servicePort: 'demo/br"oken:http TCP', msg: expect.stringContaining('skipping service port demo/br"oken:http TCP') });
    expect((await metrics.invalidObjects.get()).values).toEqual([{ labels: { kind: 'Service', skipped: 'object' }, value: 1 }]);
  });
});

describe('comments', () => {
  it('are shortened to the limit with a hash of the whole, deterministically and distinctly', () => {
    const a = `masquerade LOCAL traffic for ${'a'.repeat(63)}/${'b'.repeat(63)}:https-metricsxy external destinations`;
    const b = a.replace('external', 'EXTERNAL');
    expect(fitComment(a, 128)).toHaveLength(128);
    expect(fitComment(a, 128)).toMatch(/^masquerade LOCAL traffic for a+.*~[A-Z2-7]{8}$/);
    expect(fitComment(a, 128)).toBe(fitComment(a, 128));
    expect(fitComment(a, 128)).not.toBe(fitComment(b, 128));
    expect(fitComment('short', 128)).toBe('short');
  });

  it('fit nft and iptables for any valid names up to the API limits', () => {
    const dnsLabel = (max: number) => fc.stringMatching(new RegExp(`^[a-z]([a-z0-9-]{0,${max - 2}}[a-z0-9])?$`));
    const portName = fc.stringMatching(/^[a-z][a-z0-9-]{0,13}[a-z0-9]$/).filter((s) => !s.includes('--'));
    fc.assert(
      fc.property(dnsLabel(63), dnsLabel(63), portName, (ns, name, port) => {
        const p = plan(objects(ns, name, port));
        const nft = renderNftables(p);
        expect(nft.skipped).toEqual([]);
        for (const c of nft.chains) for (const r of c.rules) if (r.comment !== undefined) expect(r.comment.length).toBeLessThanOrEqual(128);
        for (const list of nft.elements.values()) for (const e of list) if (e.comment !== undefined) expect(e.comment.length).toBeLessThanOrEqual(128);
        expect(renderIptables(p, { conntrackTCPBeLiberal: false }).skipped).toEqual([]);
      }),
      { numRuns: 60 },
    );
  });
});
