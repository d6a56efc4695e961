/**
 * Incremental nft batches: a one-Service change sends only that Service's chains and elements;
 * stale chains are flushed, then deleted one batch later; a changed set is re-created. Every
 * sequence of deltas leaves the table equal to a full write of the last ruleset (checked in an
 * in-memory table that refuses what the kernel refuses).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { commandWeight as weight, deltaBatch, fullBatch, stagedFullBatch } from '../../../src/backends/nftables/batch.ts';
import { renderNftables } from '../../../src/backends/nftables/render.ts';
import { batchText } from '../../../src/backends/nftables/text.ts';
import { cluster } from '../../support/arbitraries.ts';
import { FakeNft } from '../../support/nftfake.ts';
import { endpoint, endpointSlice, service } from '../../support/objects.ts';
import { plan } from '../../support/pipeline.ts';

const p80 = [{ name: 'p80', port: 80 }];
const svc = (i: number, eps: string[], extra = {}) => [
  service(`ns/svc${i}`, { clusterIP: `172.30.0.${i}`, ports: p80, ...extra }),
  endpointSlice(
    `ns/svc${i}`,
    p80,
    eps.map((ip) => endpoint(ip)),
  ),
];
const render = (objects: Record<string, unknown>[]) => renderNftables(plan(objects));
const world = (n: number, changed?: { i: number; eps: string[] }) =>
  render(Array.from({ length: n }, (_, i) => svc(i + 1, changed?.i === i + 1 ? changed.eps : [`10.1.${i}.1`, `10.1.${i}.2`])).flat());

describe('incremental nft batches', () => {
  it('sends nothing when nothing changed', () => {
    expect(deltaBatch(world(20), world(20), []).commands).toEqual([]);
  });

  it("an endpoint change of one Service rewrites only that Service's chains and elements", () => {
    const before = world(50);
    const after = world(50, { i: 7, eps: ['10.1.6.1', '10.1.6.9'] });
    const batch = deltaBatch(before, after, []);
    const chain = after.chains.find((c) => c.name.endsWith('ns/svc7/tcp/p80'))!.name;
    expect(batchText(batch.commands).trim().split('\n')).toEqual([
      `flush chain ip kube-proxy ${chain}`,
      'delete element ip kube-proxy hairpin-endpoints { 10.1.6.2 . 10.1.6.2 }',
      `add rule ip kube-proxy ${chain} ip daddr 172.30.0.7 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade comment "ns/svc7:p80 cluster IP"`,
      `add rule ip kube-proxy ${chain} numgen random mod 2 0 meta l4proto tcp dnat to 10.1.6.1:80`,
      `add rule ip kube-proxy ${chain} meta l4proto tcp dnat to 10.1.6.9:80`,
      'add element ip kube-proxy hairpin-endpoints { 10.1.6.9 . 10.1.6.9 }',
    ]);
    expect(batch).toMatchObject({ rules: 3, elements: 2, chainsWritten: 1, stale: [] });
  });

  it("a removed Service's chain is flushed with its elements gone, and deleted one batch later", () => {
    const batch = deltaBatch(world(3), world(2), []);
    const chain = world(3).chains.find((c) => c.name.endsWith('ns/svc3/tcp/p80'))!.name;
    expect(batch.stale).toEqual([chain]);
    const text = batchText(batch.commands);
    expect(text).toContain(`flush chain ip kube-proxy ${chain}`);
    expect(text).toContain('delete element ip kube-proxy service-ips { 172.30.0.3 . tcp . 80 }');
    expect(text).not.toContain('delete chain');
    expect(batchText(deltaBatch(world(2), world(2), batch.stale).commands)).toBe(`delete chain ip kube-proxy ${chain}\n`);
  });

  it('a stale chain wanted again before its deletion is rewritten, not deleted', () => {
    const a = world(3);
    const b = world(2);
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

describe('a large table written where there is none, in stages', () => {
  it('is the full batch, unchanged, when it fits in one stage', () => {
    const rs = world(3);
    const full = fullBatch(rs).commands;
    expect(
      stagedFullBatch(
        rs,
        full.reduce((n, c) => n + weight(c), 0),
      ).stages,
    ).toEqual([full]);
  });

  it('stages within the limit build the same table, and no base chain has a rule before the last one', () => {
    fc.assert(
      fc.property(cluster, fc.integer({ min: 1, max: 40 }), (objs, limit) => {
        const rs = render(objs);
        const { plan, stages } = stagedFullBatch(rs, limit);
        expect(plan).toEqual(fullBatch(rs));
        if (stages.length > 1) for (const stage of stages.slice(0, -1)) expect(stage.reduce((n, c) => n + weight(c), 0)).toBeLessThanOrEqual(limit);
        const base = new Set(rs.chains.filter((c) => c.hook).map((c) => c.name));
        const fake = new FakeNft();
        for (const stage of stages.slice(0, -1)) fake.apply(stage);
        if (stages.length > 1) {
          for (const name of base) expect(fake.dump()!.chains[name]).toEqual([]);
          expect(stages.at(-1)!.every((c) => 'add' in c && 'rule' in c.add && base.has(c.add.rule.chain))).toBe(true);
        }
        fake.apply(stages.at(-1)!);
        const fresh = new FakeNft();
        fresh.apply(plan.commands);
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
    fc.assert(
      fc.property(cluster, (objs) => {
        expect(JSON.stringify(fullBatch(render(objs)).commands)).toBe(JSON.stringify(fullBatch(render([...objs].reverse())).commands));
      }),
      { numRuns: 200 },
    );
  });

  it('lets no input string inject anything into the text form: one printable command per line', () => {
    const LINE = /^(add|delete|flush) (table|chain|rule|set|map|element) ip kube-proxy( [a-z][a-zA-Z0-9/_.-]*( .*)?)?$/;
    fc.assert(
      fc.property(cluster, (objs) => {
        for (const line of batchText(fullBatch(render(objs)).commands)
          .trimEnd()
          .split('\n')) {
          expect(line).toMatch(LINE);
          expect(line).toMatch(/^[\x20-\x7e]*$/);
          expect((line.match(/"/g) ?? []).length % 2).toBe(0);
        }
      }),
      { numRuns: 300 },
    );
  });
});
