/**
 * Incremental nft batches: a one-Service change sends only that Service's chains and elements;
 * stale chains are flushed, then deleted one batch later; a changed set is re-created. Every
 * sequence of deltas leaves the table equal to a full write of the last ruleset (checked in an
 * in-memory table that refuses what the kernel refuses).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deltaBatch, fullBatch } from '../../../src/backends/nftables/batch.ts';
import { renderNftables } from '../../../src/backends/nftables/render.ts';
import { batchText } from '../../../src/backends/nftables/text.ts';
import { cluster } from '../../support/arbitraries.ts';
import { FakeNft } from '../../support/nftfake.ts';
import { endpoint, endpointSlice, service } from '../../support/objects.ts';
import { plan } from '../../support/pipeline.ts';

const p80 = [{ name: 'p80', port: 80 }];
const svc = (i: number, eps: string[], extra = {}) => [
  service(`ns/svc${i}`, { clusterIP: `172.30.0.${i}`, ports: p80, ...extra }),
  endpointSlice(`ns/svc${i}`, p80, eps.map((ip) => endpoint(ip))),
];
const render = (objects: Record<string, unknown>[]) => renderNftables(plan(objects));
const world = (n: number, changed?: { i: number; eps: string[] }) =>
  render(Array.from({ length: n }, (_, i) => svc(i + 1, changed?.i === i + 1 ? changed.eps : [`10.1.${i}.1`, `10.1.${i}.2`])).flat());

describe('incremental nft batches', () => {
  it('sends nothing when nothing changed', () => {
    expect(deltaBatch(world(20), world(20), []).commands).toEqual([]);
  });

  it('an endpoint change of one Service rewrites only that Service\'s chains and elements', () => {
    const before = world(50);
    const after = world(50, { i: 7, eps: ['10.1.6.1', '10.1.6.9'] });
    const batch = deltaBatch(before, after, []);
    const text = batchText(batch.commands).trim().split('\n');
    expect(text.length).toBeGreaterThan(0);
    for (const line of text) expect(line).toMatch(/ns\/svc7\//);
    expect(text).toContain('flush chain ip kube-proxy service-' + after.chains.find((c) => c.name.startsWith('service-') && c.name.endsWith('ns/svc7/tcp/p80'))!.name.slice('service-'.length));
    expect(batch.chainsWritten).toBe(2); // the service chain (new cascade) and the new endpoint's chain
    expect(batch.stale).toHaveLength(1); // the old endpoint's chain: flushed now, deleted next time
    expect(text.filter((l) => l.startsWith('delete chain'))).toEqual([]);

    const next = deltaBatch(after, after, batch.stale);
    expect(batchText(next.commands).trim().split('\n')).toEqual([`delete chain ip kube-proxy ${batch.stale[0]}`]);
  });

  it('a stale chain wanted again before its deletion is rewritten, not deleted', () => {
    const a = world(3);
    const b = world(3, { i: 2, eps: ['10.1.1.1'] });
    const first = deltaBatch(a, b, []);
    const again = deltaBatch(b, a, first.stale);
    expect(batchText(again.commands)).not.toContain('delete chain');
    const fake = new FakeNft();
    fake.apply(fullBatch(a).commands);
    fake.apply(first.commands);
    fake.apply(again.commands);
    const fresh = new FakeNft();
    fresh.apply(fullBatch(a).commands);
    expect(fake.dump()).toEqual(fresh.dump());
  });

  it('re-creates an affinity set whose timeout changed, rewriting the chains that use it', () => {
    const a = render(svc(1, ['10.1.0.1'], { affinityTimeout: 60 }));
    const b = render(svc(1, ['10.1.0.1'], { affinityTimeout: 120 }));
    const batch = deltaBatch(a, b, []);
    const text = batchText(batch.commands);
    expect(text).toMatch(/delete set ip kube-proxy affinity-/);
    expect(text).toMatch(/add set ip kube-proxy affinity-.* timeout 120s/);
    const fake = new FakeNft();
    fake.apply(fullBatch(a).commands);
    fake.apply(batch.commands);
    const fresh = new FakeNft();
    fresh.apply(fullBatch(b).commands);
    expect(fake.dump()).toEqual(fresh.dump());
  });

  it('any sequence of deltas leaves the table equal to a full write of the last ruleset', () => {
    fc.assert(
      fc.property(fc.array(cluster, { minLength: 2, maxLength: 4 }), (clusters) => {
        const rulesets = clusters.map((objs) => render(objs));
        const fake = new FakeNft();
        fake.apply(fullBatch(rulesets[0]!).commands);
        let deferred: readonly string[] = [];
        for (let i = 1; i < rulesets.length; i++) {
          const batch = deltaBatch(rulesets[i - 1]!, rulesets[i]!, deferred);
          fake.apply(batch.commands);
          deferred = batch.stale;
        }
        // One more (empty) sync deletes the last stale chains.
        fake.apply(deltaBatch(rulesets.at(-1)!, rulesets.at(-1)!, deferred).commands);
        const fresh = new FakeNft();
        fresh.apply(fullBatch(rulesets.at(-1)!).commands);
        expect(fake.dump()).toEqual(fresh.dump());
      }),
      { numRuns: 150 },
    );
  });
});

describe('nft batch properties', () => {
  it('a full batch applies to an empty table, and again over itself', () => {
    fc.assert(
      fc.property(cluster, (objs) => {
        const fake = new FakeNft();
        const batch = fullBatch(render(objs)).commands;
        fake.apply(batch);
        const once = fake.dump();
        fake.apply(batch);
        expect(fake.dump()).toEqual(once);
      }),
      { numRuns: 200 },
    );
  });

  it('is deterministic: the same objects in any order give the same batch', () => {
    fc.assert(fc.property(cluster, (objs) => {
      expect(JSON.stringify(fullBatch(render(objs)).commands)).toBe(JSON.stringify(fullBatch(render([...objs].reverse())).commands));
    }), { numRuns: 200 });
  });

  it('lets no input string inject anything into the text form: one printable command per line', () => {
    const LINE = /^(add|delete|flush) (table|chain|rule|set|map|element) ip kube-proxy( [a-z][a-zA-Z0-9/_.-]*( .*)?)?$/;
    fc.assert(fc.property(cluster, (objs) => {
      for (const line of batchText(fullBatch(render(objs)).commands).trimEnd().split('\n')) {
        expect(line).toMatch(LINE);
        expect(line).toMatch(/^[\x20-\x7e]*$/);
        expect((line.match(/"/g) ?? []).length % 2).toBe(0);
      }
    }), { numRuns: 300 });
  });
});
