/**
 * Incremental sync, both backends: with the planner's and renderers' caches, a change to one
 * Service re-plans and re-renders only that Service and writes only its chains and elements; and
 * any sequence of incremental writes leaves the (in-memory, kernel-strict) tables equal to a full
 * write of the last state. The real kernel is exercised by test/e2e/incremental.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IptablesRenderCache, renderIptables, type IptablesRuleset } from '../../src/backends/iptables/render.ts';
import { buildChangeScript, buildRestoreScript, diffRulesets } from '../../src/backends/iptables/restore.ts';
import { deltaBatch, fullBatch } from '../../src/backends/nftables/batch.ts';
import { NftRenderCache, renderNftables, type NftRuleset } from '../../src/backends/nftables/render.ts';
import { batchText } from '../../src/backends/nftables/text.ts';
import { PlanCache, planProxy, type ProxyPlan } from '../../src/planner/plan.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { ProxyStateStore } from '../../src/state/store.ts';
import { cluster } from '../support/arbitraries.ts';
import { FakeIptables } from '../support/iptfake.ts';
import { FakeNft } from '../support/nftfake.ts';
import { endpoint, endpointSlice, service } from '../support/objects.ts';
import { TEST_CONFIG } from '../support/pipeline.ts';

const OPTIONS = { conntrackTCPBeLiberal: false };

/** One long-lived proxy's pipeline: a store fed object by object, and the three caches. */
class Pipeline {
  readonly store = new ProxyStateStore('test-node');
  readonly plans = new PlanCache();
  readonly ipt = new IptablesRenderCache();
  readonly nft = new NftRenderCache();
  #held = new Map<string, RawObject>();

  /** Makes the store hold exactly `objects`: applies new and changed ones, deletes the rest. */
  set(objects: readonly RawObject[]): void {
    const next = new Map<string, RawObject>();
    for (const o of objects) next.set(`${o.kind} ${o.metadata?.namespace}/${o.metadata?.name}`, o);
    for (const [key, o] of this.#held) {
      if (next.has(key)) continue;
      const name = `${o.metadata?.namespace}/${o.metadata?.name}`;
      if (o.kind === 'Service') this.store.deleteService(name);
      else this.store.deleteEndpointSlice(name);
    }
    for (const [key, o] of next) {
      // An informer delivers only objects that changed.
      const held = this.#held.get(key);
      if (held !== undefined && JSON.stringify(held) === JSON.stringify(o)) continue;
      if (o.kind === 'Service') this.store.applyService(o);
      else this.store.applyEndpointSlice(o);
    }
    this.#held = next;
  }

  plan(): ProxyPlan {
    return planProxy(this.store.servicePortStates(), this.store.node, TEST_CONFIG, this.plans);
  }

  /** The same plan without any cache. */
  fresh(): ProxyPlan {
    return planProxy(this.store.servicePortStates(), this.store.node, TEST_CONFIG);
  }
}

const PORTS = [{ name: 'http', port: 80 }];
/** Service i with endpoints `eps`; a NodePort Service when `nodePort` is given. */
const svc = (i: number, eps: string[], nodePort?: number) => [
  service(`ns/svc${i}`, { clusterIP: `172.30.0.${i}`, ...(nodePort ? { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort }] } : { ports: PORTS }) }),
  endpointSlice(
    `ns/svc${i}`,
    PORTS,
    eps.map((ip) => endpoint(ip)),
  ),
];
const world = (n: number, change: Record<number, string[]> = {}) =>
  Array.from({ length: n }, (_, i) => svc(i + 1, change[i + 1] ?? [`10.1.${i}.1`, `10.1.${i}.2`], i % 3 === 0 ? 30000 + i : undefined)).flat();

const iptView = (rules: IptablesRuleset) => {
  const fake = new FakeIptables();
  fake.restore(buildRestoreScript(rules));
  return fake.view();
};
const nftView = (rules: NftRuleset) => {
  const fake = new FakeNft();
  fake.apply(fullBatch(rules).commands);
  return fake.dump();
};
/** Plain data of a ruleset, without the lazily built lists' getters. */
const iptData = (r: IptablesRuleset) => ({ filter: r.filter, nat: r.nat, jumps: r.jumps });
const nftData = (r: NftRuleset) => ({ chains: r.chains, sets: r.sets, elements: r.elements });

describe('a one-Service change', () => {
  const p = new Pipeline();
  p.set(world(40));
  const plan1 = p.plan();
  const ipt1 = renderIptables(plan1, OPTIONS, p.ipt);
  const nft1 = renderNftables(plan1, p.nft);
  p.set(world(40, { 7: ['10.1.6.1', '10.1.6.9'] }));
  const plan2 = p.plan();
  const ipt2 = renderIptables(plan2, OPTIONS, p.ipt);
  const nft2 = renderNftables(plan2, p.nft);

  it('re-plans and re-renders only that Service; the rest are the same objects', () => {
    expect(p.plans.planned).toBe(1);
    expect(p.ipt.rendered).toBe(1);
    expect(p.nft.rendered).toBe(1);
    const changed = plan2.servicePorts.filter((sp, i) => sp !== plan1.servicePorts[i]).map((sp) => sp.name);
    expect(changed).toEqual(['ns/svc7:http']);
    expect(plan2).toEqual(p.fresh());
    expect(iptData(ipt2)).toEqual(iptData(renderIptables(p.fresh(), OPTIONS)));
    expect(nftData(nft2)).toEqual(nftData(renderNftables(p.fresh())));
  });

  it('iptables: writes only its KUBE-SVC and KUBE-SEP chains; no dispatch chain, no filter table', () => {
    const change = diffRulesets(ipt1, ipt2);
    const part = ipt2.services.get('ns/svc7:http TCP')!;
    expect(change.write.filter).toEqual([]);
    expect(change.edit).toEqual({ filter: [], nat: [] });
    const svcChain = part.chains.find((c) => c.name.startsWith('KUBE-SVC-'))!.name;
    const newSep = part.chains.filter((c) => c.name.startsWith('KUBE-SEP-') && !ipt1.services.get('ns/svc7:http TCP')!.chains.some((o) => o.name === c.name));
    expect(change.write.nat.map((c) => c.name).sort()).toEqual([svcChain, ...newSep.map((c) => c.name)].sort());
    expect(change.remove.nat).toHaveLength(1); // the KUBE-SEP chain of 10.1.6.2
    const script = buildChangeScript(ipt1, ipt2)!;
    expect(script).not.toContain('*filter');
    expect(script).not.toContain('KUBE-SERVICES');
    // KUBE-SVC-: masquerade + two picks; the new KUBE-SEP-: masquerade + DNAT.
    expect(script.split('\n').filter((l) => l.startsWith('-A '))).toHaveLength(5);
  });

  it('nftables: sends only its chain and its hairpin elements', () => {
    const batch = deltaBatch(nft1, nft2, []);
    const text = batchText(batch.commands);
    expect(batch).toMatchObject({ chainsWritten: 1, elements: 2 });
    expect(text.split('\n').filter((l) => l.startsWith('flush chain'))).toHaveLength(1);
    expect(text).not.toMatch(/svc[0-689]|svc7[0-9]/);
  });
});

describe('dispatch chains are edited in place', () => {
  const p = new Pipeline();
  p.set(world(30));
  const before = renderIptables(p.plan(), OPTIONS, p.ipt);
  p.set([...world(30).filter((o) => (o.metadata as { name: string }).name !== 'svc4'), ...svc(31, ['10.1.31.1'], 31999)]);
  const after = renderIptables(p.plan(), OPTIONS, p.ipt);
  const script = buildChangeScript(before, after)!;
  const lines = script.split('\n');

  it('a Service that comes or goes adds or deletes its own rules, not the whole of KUBE-SERVICES', () => {
    expect(lines.filter((l) => l.startsWith(':KUBE-SERVICES') || l.startsWith(':KUBE-NODEPORTS'))).toEqual([]);
    expect(lines.filter((l) => l.startsWith('-D '))).toEqual([expect.stringMatching(/^-D KUBE-SERVICES .*ns\/svc4:http cluster IP/), expect.stringMatching(/^-D KUBE-NODEPORTS .*ns\/svc4:http/)]);
    expect(lines.filter((l) => l.startsWith('-I '))).toEqual([expect.stringMatching(/^-I KUBE-SERVICES 1 .*ns\/svc31:http cluster IP/), expect.stringMatching(/^-I KUBE-NODEPORTS 1 .*--dport 31999/)]);
  });

  it('applied to the old rules, gives the new ones with the NodePort jump still last', () => {
    const fake = new FakeIptables();
    fake.restore(buildRestoreScript(before));
    fake.restore(script);
    expect(fake.view()).toEqual(iptView(after));
    expect(fake.tables.nat.get('KUBE-SERVICES')!.at(-1)).toMatch(/-j KUBE-NODEPORTS$/);
  });
});

describe('two Services claiming the same external IP and port', () => {
  /** Service i, created at minute `created`, claiming `ip`:80. */
  const claim = (i: number, ip: string, created: number) => {
    const svc = service(`ns/claim${i}`, { clusterIP: `172.30.1.${i}`, ports: PORTS, externalIPs: [ip] }) as { metadata: Record<string, unknown> };
    svc.metadata.creationTimestamp = `2026-11-21T08:${String(created).padStart(2, '0')}:00Z`;
    return [svc, endpointSlice(`ns/claim${i}`, PORTS, [endpoint(`10.2.0.${i}`)])];
  };
  const older = claim(2, '192.0.2.50', 1);
  const newer = claim(1, '192.0.2.50', 5);

  it('the planner gives it to the older Service, whatever the order of names or of arrival', () => {
    for (const objects of [
      [...newer, ...older],
      [...older, ...newer],
    ]) {
      const p = new Pipeline();
      p.set(objects);
      const plan = p.plan();
      expect(plan.conflicts).toEqual([{ destination: '192.0.2.50:80/TCP', kind: 'externalIP', winner: 'ns/claim2:http', loser: 'ns/claim1:http' }]);
      expect(plan.servicePorts.map((sp) => [sp.name, sp.externalIPs])).toEqual([
        ['ns/claim1:http', []],
        ['ns/claim2:http', ['192.0.2.50']],
      ]);
      expect(renderNftables(plan, p.nft).conflicts).toEqual([]);
    }
  });

  it('iptables: the winner is the same after an incremental write (-I … 1) and a whole write, in an order-sensitive table', () => {
    const p = new Pipeline();
    p.set(newer);
    const first = renderIptables(p.plan(), { conntrackTCPBeLiberal: false }, p.ipt);
    const fake = new FakeIptables();
    fake.restore(buildRestoreScript(first));
    p.set([...newer, ...older]);
    const both = renderIptables(p.plan(), { conntrackTCPBeLiberal: false }, p.ipt);
    fake.restore(buildChangeScript(first, both)!);
    expect(fake.view()).toEqual(iptView(both));
    expect(fake.tables.nat.get('KUBE-SERVICES')!.filter((r) => r.includes('-d 192.0.2.50 '))).toEqual([expect.stringContaining('ns/claim2:http external IP')]);
  });

  it('nftables: the other Service takes over when the winner goes', () => {
    const p = new Pipeline();
    p.set([...newer, ...older]);
    const both = renderNftables(p.plan(), p.nft);
    const fake = new FakeNft();
    fake.apply(fullBatch(both).commands);
    p.set(newer);
    const one = renderNftables(p.plan(), p.nft);
    const batch = deltaBatch(both, one, []);
    fake.apply(batch.commands);
    fake.apply(deltaBatch(one, one, batch.stale).commands); // deletes the flushed chain of claim2
    expect(fake.dump()).toEqual(nftView(one));
    expect(JSON.stringify(fake.dump())).toContain('192.0.2.50');
  });
});

describe('any sequence of incremental writes equals a full write of the last state', () => {
  it('iptables and nftables, with every cache in use', () => {
    fc.assert(
      fc.property(fc.array(cluster, { minLength: 2, maxLength: 5 }), (clusters) => {
        const p = new Pipeline();
        const ipt = new FakeIptables();
        const nft = new FakeNft();
        let prevIpt: IptablesRuleset | undefined;
        let prevNft: NftRuleset | undefined;
        let deferred: readonly string[] = [];
        for (const objects of clusters) {
          p.set(objects);
          const plan = p.plan();
          expect(plan).toEqual(p.fresh());
          const nextIpt = renderIptables(plan, OPTIONS, p.ipt);
          const script = buildChangeScript(prevIpt, nextIpt);
          if (script) ipt.restore(script);
          const nextNft = renderNftables(plan, p.nft);
          const batch = prevNft ? deltaBatch(prevNft, nextNft, deferred) : fullBatch(nextNft);
          nft.apply(batch.commands);
          deferred = batch.stale;
          prevIpt = nextIpt;
          prevNft = nextNft;
        }
        expect(ipt.view()).toEqual(iptView(prevIpt!));
        nft.apply(deltaBatch(prevNft!, prevNft!, deferred).commands);
        expect(nft.dump()).toEqual(nftView(prevNft!));
      }),
      { numRuns: Number(process.env.RUNS ?? 150) },
    );
  });
});
