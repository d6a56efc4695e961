/**
 * The iptables writer on a real kernel (iptables-nft in node-1's namespace): the first write
 * restores whole tables and keeps every foreign chain, rule and counter; later writes send only
 * what changed and leave the kernel as a whole write of the same ruleset would; a periodic verify
 * finds and repairs what someone else changed; a refused write names its line, and the next write
 * restores whole tables again. Traffic shows the rules work after each kind of write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IptablesRenderCache, renderIptables, isOwnedChain, type TableName } from '../../src/backends/iptables/render.ts';
import { IptablesError, IptablesWriter, systemIptables } from '../../src/backends/iptables/writer.ts';
import { PlanCache, planProxy } from '../../src/planner/plan.ts';
import { ProxyStateStore } from '../../src/state/store.ts';
import type { RawObject } from '../../src/sources/objects.ts';
import { endpoint, endpointSlice, service } from '../support/objects.ts';
import { TEST_CONFIG } from '../support/pipeline.ts';
import { settle, tally, TestCluster } from './harness/cluster.ts';

const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const EP_PORTS = [{ name: 'http', port: 8080 }];
/** Service i at 172.30.0.i; its endpoints; a NodePort Service every third one. */
const svc = (i: number, eps: string[]): RawObject[] => [
  service(`ns/svc${i}`, { clusterIP: `172.30.0.${i}`, ...(i % 3 === 0 ? { type: 'NodePort', ports: [{ ...PORTS[0]!, nodePort: 30000 + i }] } : { ports: PORTS }) }),
  endpointSlice(
    `ns/svc${i}`,
    EP_PORTS,
    eps.map((ip) => endpoint(ip, { node: 'node-1' })),
  ),
];
const UNORDERED = new Set(['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL']);

describe('the iptables writer on a real kernel', () => {
  let c: TestCluster;
  const store = new ProxyStateStore('node-1');
  const plans = new PlanCache();
  const renders = new IptablesRenderCache();
  /** Applies objects to the long-lived store (as informer events would) and renders with the caches. */
  const render = (objects: readonly RawObject[], gone: readonly string[] = []) => {
    for (const key of gone) {
      store.deleteService(key);
      store.deleteEndpointSlice(key);
    }
    for (const o of objects) {
      if (o.kind === 'Service') store.applyService(o);
      else store.applyEndpointSlice(o);
    }
    return renderIptables(planProxy(store.servicePortStates(), store.node, { ...TEST_CONFIG, clusterCIDR: undefined }, plans), { conntrackTCPBeLiberal: false }, renders);
  };
  /** kproxy's chains as iptables-save shows them, without counters; dispatch chains sorted (their order is free). */
  const owned = async () => {
    const out: string[] = [];
    for (const table of ['filter', 'nat'] as TableName[]) {
      const rules = new Map<string, string[]>();
      for (const line of (await c.onNode('iptables-save', ['-t', table])).split('\n')) {
        const m = /^(?::(\S+)|-A (\S+) (.*))/.exec(line);
        const chain = m?.[1] ?? m?.[2];
        if (!chain || !isOwnedChain(table, chain)) continue;
        if (!rules.has(chain)) rules.set(chain, []);
        if (m?.[3] !== undefined) rules.get(chain)!.push(m[3]);
      }
      for (const [chain, list] of [...rules].sort(([a], [b]) => (a < b ? -1 : 1))) out.push(`${table} ${chain}`, ...(UNORDERED.has(chain) ? [...list].sort() : list));
    }
    return out;
  };
  /** node-1's iptables; never the root namespace's. */
  const tools = () => systemIptables(4, ['ip', 'netns', 'exec', c.ns('node-1')]);
  const reset = async () => {
    for (const table of ['filter', 'nat']) {
      await c.onNode('iptables', ['-t', table, '-F']);
      await c.onNode('iptables', ['-t', table, '-X']);
    }
  };

  beforeAll(async () => {
    c = await TestCluster.create([
      { name: 'web', ip: '10.244.1.10', node: 'node-1', tcp: [8080] },
      { name: 'api', ip: '10.244.1.11', node: 'node-1', tcp: [8080] },
      { name: 'src', ip: '10.244.1.99', node: 'node-1' },
    ]);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('writes whole tables first, keeping foreign chains, rules and counters; then only changes, equal to a whole write', async () => {
    await c.onNode('iptables-restore', ['--noflush', '--counters'], '*filter\n:FOREIGN - [0:0]\n[7:700] -A INPUT -j FOREIGN\n[3:300] -A FOREIGN -s 192.0.2.9/32 -j DROP\nCOMMIT\n');
    const writer = new IptablesWriter(tools());
    const world = Array.from({ length: 20 }, (_, i) => svc(i + 1, [`10.1.${i}.1`, `10.1.${i}.2`])).flat();
    const first = await writer.write(render([...world, ...svc(1, ['10.244.1.10'])]), { verify: false });
    expect(first.how).toBe('tables');
    const saved = await c.onNode('iptables-save', ['-c', '-t', 'filter']);
    expect(saved).toContain('[7:700] -A INPUT -j FOREIGN');
    expect(saved).toContain('[3:300] -A FOREIGN -s 192.0.2.9/32 -j DROP');
    expect(tally(await c.probe('src', 'tcp', '172.30.0.1', 80, { count: 2 }))).toEqual({ web: 2 });

    // One endpoint change: only that Service's chains are written.
    const second = await writer.write(render(svc(1, ['10.244.1.11'])), { verify: false });
    expect(second.how).toBe('incremental');
    expect(second.rulesWritten).toEqual({ filter: 0, nat: 3 }); // KUBE-SVC-: one pick; the new KUBE-SEP-: masquerade, DNAT
    await c.flushConntrack();
    expect(tally(await c.probe('src', 'tcp', '172.30.0.1', 80, { count: 2 }))).toEqual({ api: 2 });
    // Services come and go: dispatch rules are deleted and inserted in place.
    await writer.write(render(svc(21, ['10.244.1.10']), ['ns/svc4']), { verify: false });
    const last = await writer.write(render([...svc(5, []), ...svc(22, ['10.244.1.10', '10.244.1.11'])], ['ns/svc9']), { verify: false });
    expect(last.how).toBe('incremental');
    expect(tally(await c.probe('src', 'tcp', '172.30.0.21', 80, { count: 2 }))).toEqual({ web: 2 });
    const nat = await c.onNode('iptables-save', ['-t', 'nat']);
    expect(
      nat
        .split('\n')
        .filter((l) => l.startsWith('-A KUBE-SERVICES '))
        .at(-1),
    ).toMatch(/-j KUBE-NODEPORTS$/);

    const incremental = await owned();
    await reset();
    await new IptablesWriter(tools()).write(renderIptables(planProxy(store.servicePortStates(), store.node, { ...TEST_CONFIG, clusterCIDR: undefined }), { conntrackTCPBeLiberal: false }), {
      verify: false,
    });
    expect(incremental).toEqual(await owned());
    await reset();
  });

  it('a periodic verify finds a flushed chain and a removed jump; the next write repairs only those', async () => {
    const writer = new IptablesWriter(tools(), { verifyBudget: 1 });
    const rules = render(svc(1, ['10.244.1.10']));
    /** Writes with a verify, waits for it, and writes again. */
    const verified = async () => {
      const r = await writer.write(rules, { verify: true });
      expect(r).toMatchObject({ how: 'none', rulesWritten: { filter: 0, nat: 0 } });
      await r.verifying;
      return writer.write(rules, { verify: false });
    };
    await writer.write(rules, { verify: false });
    expect((await verified()).repaired).toBeUndefined();
    await c.flushServiceDispatch();
    await c.onNode('iptables', ['-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
    const repaired = await verified();
    // Per service port: each lost its dispatch rule; kproxy itself lost a jump.
    expect(repaired.repaired).toMatch(/^\d+ difference\(s\) in \d+ service port\(s\): /);
    const where = new Set(repaired.drift!.map((i) => `${i.servicePort === undefined ? '-' : 'service'}: ${i.change} ${i.object} ${i.table} ${i.name}`));
    expect(where).toEqual(new Set(['service: missing rule nat KUBE-SERVICES', '-: missing rule nat KUBE-SERVICES', '-: missing jump nat PREROUTING']));
    expect(repaired.drift!.filter((i) => i.servicePort !== undefined).every((i) => i.detail!.includes(`"${i.servicePort!.split(' ')[0]} cluster IP"`))).toBe(true);
    expect(repaired.rulesWritten).toEqual({ filter: 0, nat: (await c.onNode('iptables-save', ['-t', 'nat'])).split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ')).length + 1 });
    await c.flushConntrack();
    expect(tally(await c.probe('src', 'tcp', '172.30.0.1', 80, { count: 2 }))).toEqual({ web: 2 });
    await reset();
  });

  it('a deep verify finds a flushed per-service chain (then rewrites whole tables) and a stale chain; writes meanwhile are not drift', async () => {
    const writer = new IptablesWriter(tools(), { verifyBudget: 1 });
    const rules = render(svc(3, ['10.244.1.10']));
    await writer.write(rules, { verify: false });
    // A whole-table write counts as a deep read of its cost (verify.ts): with budget 1, deep reads resume after as long again.
    await settle();
    // A write while the check reads is not mistaken for drift.
    const busy = await writer.write(rules, { verify: true });
    const changed = render(svc(3, ['10.244.1.11']));
    expect((await writer.write(changed, { verify: false })).how).toBe('incremental');
    await busy.verifying;
    expect((await writer.write(changed, { verify: false })).repaired).toBeUndefined();

    const svcChain = (await c.onNode('iptables-save', ['-t', 'nat']))
      .split('\n')
      .find((l) => l.startsWith(':KUBE-SVC-'))!
      .slice(1)
      .split(' ')[0]!;
    await c.onNode('iptables', ['-t', 'nat', '-F', svcChain]);
    await c.onNode('iptables', ['-t', 'nat', '-N', 'KUBE-SEP-LEFTOVER0000000']);
    await settle();
    const r = await writer.write(changed, { verify: true });
    expect(await r.verifying).toBe(true);
    const repaired = await writer.write(changed, { verify: false });
    expect(repaired.how).toBe('tables');
    expect(repaired.repaired).toMatch(/rewrote whole tables$/);
    const where = new Set(repaired.drift!.map((i) => `${i.servicePort ?? '-'}: ${i.change} ${i.object} ${i.name}`));
    expect([...where].filter((w) => w.includes(svcChain))).toEqual([expect.stringMatching(new RegExp(`^ns/svc\\d+:http TCP: missing rule ${svcChain}$`))]);
    expect(where).toContain('-: extra chain KUBE-SEP-LEFTOVER0000000');
    const nat = await c.onNode('iptables-save', ['-t', 'nat']);
    expect(nat).not.toContain('KUBE-SEP-LEFTOVER');
    await c.flushConntrack();
    expect(tally(await c.probe('src', 'tcp', '172.30.0.3', 80, { count: 2 }))).toEqual({ api: 2 });
    await reset();
  });

  it('a destination two Services claim stays with the older one when the newer arrives in an incremental write (-I … 1)', async () => {
    const claimant = (i: number, hour: number, ep: string): RawObject[] => {
      const [s, slice] = svc(i, [ep]) as [RawObject & { metadata: Record<string, unknown>; spec: Record<string, unknown> }, RawObject];
      s.metadata.creationTimestamp = `2026-11-21T${String(hour).padStart(2, '0')}:00:00Z`;
      s.spec.externalIPs = ['198.51.100.70'];
      return [s, slice];
    };
    const writer = new IptablesWriter(tools());
    await writer.write(render(claimant(8, 9, '10.244.1.10')), { verify: false });
    const second = await writer.write(render(claimant(7, 11, '10.244.1.11')), { verify: false });
    expect(second.how).toBe('incremental');
    await c.flushConntrack();
    expect(tally(await c.probe('src', 'tcp', '198.51.100.70', 80, { count: 4 }))).toEqual({ web: 4 });
    await reset();
  });

  it('a refused incremental write names its line; the next write restores whole tables', async () => {
    const writer = new IptablesWriter(tools());
    await writer.write(render(svc(2, ['10.244.1.10'])), { verify: false });
    // Someone deletes kproxy's dispatch rule for svc2: the delta that deletes it is refused.
    const rule = (await c.onNode('iptables-save', ['-t', 'nat'])).split('\n').find((l) => l.startsWith('-A KUBE-SERVICES') && l.includes('ns/svc2:http'))!;
    await c.onNode('iptables-restore', ['--noflush'], `*nat\n-D ${rule.slice(3)}\nCOMMIT\n`);
    const err = await writer.write(render([], ['ns/svc2']), { verify: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IptablesError);
    expect((err as IptablesError).failedLine).toMatch(/^-D KUBE-SERVICES .*ns\/svc2:http cluster IP/);
    expect(writer.committed).toBeUndefined();
    expect((await writer.write(render([]), { verify: false })).how).toBe('tables');
    expect((await owned()).join('\n')).not.toContain('ns/svc2:');
    await reset();
  });
});
