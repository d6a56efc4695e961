/**
 * nftables mode on a real kernel, beyond the shared traffic scenarios: dry-run's text and JSON
 * apply as is and give the same table; sync leaves other tables alone, is idempotent and removes
 * stale chains; cleanup deletes only kproxy's table; switching modes removes the other mode's
 * rules; incremental batches leave the kernel exactly as a full write would; a failed batch is
 * named command by command; the periodic check repairs what someone else changed; a large table
 * written where there is none goes in stages that traffic sees as one.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderNftables } from '../../src/backends/nftables/render.ts';
import { stagedFullBatch } from '../../src/backends/nftables/batch.ts';
import { NftError, NftWriter, systemNft, type NftTools } from '../../src/backends/nftables/writer.ts';
import { endpoint, endpointSlice, service, webServices } from '../support/objects.ts';
import { plan } from '../support/pipeline.ts';
import { settle, tally, TestCluster } from './harness/cluster.ts';

const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const EP_PORTS = [{ name: 'http', port: 8080 }];
const objects = webServices;
const FLAGS = ['--proxy-mode', 'nftables', '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16'];

describe('nftables mode on a real kernel', () => {
  let c: TestCluster;
  const nft = (...args: string[]) => c.onNode('nft', args);
  const table = () => c.rules();
  /** The table as `nft -j list` shows it, without handles and creation order: comparable across histories. */
  const contents = async () => {
    const items = (JSON.parse(await nft('-j', 'list', 'table', 'ip', 'kube-proxy')) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
    const out: string[] = [];
    for (const item of items) {
      const [kind, body] = Object.entries(item)[0]!;
      if (kind === 'metainfo') continue;
      const { handle: _h, elem, ...rest } = body;
      const sortedElem = Array.isArray(elem) ? elem.map((e) => JSON.stringify(e)).sort() : undefined;
      out.push(`${kind} ${kind === 'rule' ? `${String(rest.chain)}` : String(rest.name)} ${JSON.stringify(rest)} ${JSON.stringify(sortedElem ?? null)}`);
    }
    // Stable sort keeps each chain's rules in order.
    return out.sort((a, b) => {
      const ka = a.split(' ', 2).join(' ');
      const kb = b.split(' ', 2).join(' ');
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  };
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'web', ip: '10.244.1.10', node: 'node-1', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [],
      'nftables',
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('dry-run prints nft text and (--output json) the JSON batch; both apply as is and give the same table', async () => {
    const file = c.writeObjects(objects('a', 'b'));
    const text = (await c.kproxy(['dry-run', '--from', file, ...FLAGS, '--ip-family', '4'])).stdout;
    const json = (await c.kproxy(['dry-run', '--from', file, ...FLAGS, '--output', 'json', '--ip-family', '4'])).stdout;
    expect(text.split('\n')[0]).toBe('add table ip kube-proxy');
    expect((JSON.parse(json) as { nftables: unknown[] }).nftables.slice(0, 2)).toEqual([{ metainfo: { json_schema_version: 1 } }, { add: { table: { family: 'ip', name: 'kube-proxy' } } }]);
    writeFileSync(join(c.dir, 'dry.nft'), text);
    writeFileSync(join(c.dir, 'dry.json'), json);
    await nft('-f', join(c.dir, 'dry.nft'));
    const fromText = await table();
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });
    await nft('delete', 'table', 'ip', 'kube-proxy');
    await nft('-j', '-f', join(c.dir, 'dry.json'));
    expect(await table()).toBe(fromText);
    await c.kproxy(['cleanup']);
    expect(await table()).toBe('');
    // Both families: headed text is one `nft -f` input, JSON one batch per line; each writes both tables.
    const both = (await c.kproxy(['dry-run', '--from', file, ...FLAGS])).stdout;
    expect(both.split('\n').filter((l) => l.startsWith('# IPv'))).toEqual(['# IPv4', '# IPv6']);
    writeFileSync(join(c.dir, 'both.nft'), both);
    await nft('-f', join(c.dir, 'both.nft'));
    expect(await table()).toBe(fromText);
    expect(await nft('list', 'table', 'ip6', 'kube-proxy')).toContain('chain services');
    await c.kproxy(['cleanup']);
    const lines = (await c.kproxy(['dry-run', '--from', file, ...FLAGS, '--output', 'json'])).stdout.trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { nftables: { add?: { table?: { family: string } } }[] }).nftables[1]!.add!.table!.family)).toEqual(['ip', 'ip6']);
  });

  it('sync leaves other tables alone, is idempotent, removes stale chains; cleanup deletes only its table', async () => {
    await nft('add', 'table', 'inet', 'foreign');
    await nft('add', 'chain', 'inet', 'foreign', 'input', '{ type filter hook input priority 0 ; }');
    await nft('add', 'rule', 'inet', 'foreign', 'input', 'ip saddr 192.0.2.99 drop');
    const foreign = await nft('list', 'table', 'inet', 'foreign');

    await c.sync(objects('a', 'b'));
    const first = await table();
    await c.sync(objects('a', 'b'));
    expect(await table()).toBe(first);
    expect(tally(await c.probe('src', 'tcp', '10.96.3.2', 80, { count: 3 }))).toEqual({ web: 3 });

    await c.sync(objects('a'));
    const after = await table();
    expect(after).not.toContain('demo/b');
    expect(first).toContain('demo/b');
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });

    await c.kproxy(['cleanup']);
    expect(await table()).toBe('');
    expect(await nft('list', 'table', 'inet', 'foreign')).toBe(foreign);
    await nft('delete', 'table', 'inet', 'foreign');
  });

  it("switching modes removes the other mode's rules, both ways", async () => {
    const file = c.writeObjects(objects('a'));
    await c.kproxy(['sync', '--from', file, '--hostname-override', 'node-1', '--proxy-mode', 'iptables']);
    expect(await c.onNode('iptables-save', [])).toContain('KUBE-SERVICES');
    await c.kproxy(['sync', '--from', file, ...FLAGS]);
    expect(await c.onNode('iptables-save', [])).not.toContain('KUBE-');
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });
    await c.kproxy(['sync', '--from', file, '--hostname-override', 'node-1', '--proxy-mode', 'iptables']);
    expect(await table()).toBe('');
    await c.kproxy(['cleanup']);
  });

  it('skips invalid objects with a warning naming them; other Services keep their rules', async () => {
    const bad = [
      service('demo/bad-ip', { clusterIP: '10.96.3.300', ports: PORTS }),
      { ...service('demo/x', { clusterIP: '10.96.3.9', ports: PORTS }), metadata: { namespace: 'demo', name: 'evil"\nadd rule ip kube-proxy services accept' } },
      service('demo/bad-proto', { clusterIP: '10.96.3.8', ports: [{ name: 'http', port: 80, protocol: 'ICMP' as never }] }),
    ];
    const { stderr } = await c.kproxy(['sync', '--from', c.writeObjects([...objects('a'), ...bad]), ...FLAGS]);
    for (const field of ['spec.clusterIP', 'metadata.name', 'spec.ports[0].protocol']) expect(stderr).toContain(field);
    const rules = await table();
    expect(rules).not.toContain('evil');
    expect(rules).not.toContain('10.96.3.8');
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });
    await c.kproxy(['cleanup']);
  });

  describe('the writer', () => {
    const svc = (i: number, eps: string[], extra = {}) => [
      service(`ns/svc${i}`, { clusterIP: `172.30.0.${i}`, ports: PORTS, ...extra }),
      endpointSlice(
        `ns/svc${i}`,
        EP_PORTS,
        eps.map((ip) => endpoint(ip)),
      ),
    ];
    const world = (n: number, change: Record<number, string[]> = {}, extra = {}) =>
      renderNftables(plan(Array.from({ length: n }, (_, i) => svc(i + 1, change[i + 1] ?? [`10.1.${i}.1`, `10.1.${i}.2`], extra)).flat()));

    it('incremental batches leave the kernel exactly as a full write of the same ruleset', async () => {
      const tools = systemNft(['ip', 'netns', 'exec', c.ns('node-1')]);
      const writer = new NftWriter(tools);
      const steps = [
        world(30),
        world(30, { 3: ['10.1.2.1'], 9: [] }),
        world(29, { 3: ['10.1.2.7', '10.1.2.8', '10.1.2.9'] }, { affinityTimeout: 60 }),
        world(31, { 5: [] }, { affinityTimeout: 90 }),
        world(31, { 5: [] }, { affinityTimeout: 90 }),
      ];
      const reports = [];
      for (const step of steps) reports.push(await writer.write(step, { verify: false }));
      expect(reports.map((r) => r.full)).toEqual([true, false, false, false, false]);
      expect(reports[1]!.rules).toBeLessThan(reports[0]!.rules / 10);
      const incremental = await contents();
      await nft('delete', 'table', 'ip', 'kube-proxy');
      await new NftWriter(tools).write(steps.at(-1)!, { verify: false });
      expect(incremental).toEqual(await contents());
      await nft('delete', 'table', 'ip', 'kube-proxy');
    });

    it('writes a large table where there is none in stages that traffic sees as one; over a table, or after a failed stage, in one', async () => {
      const real = systemNft(['ip', 'netns', 'exec', c.ns('node-1')]);
      const rs = renderNftables(plan([...objects('a'), ...Array.from({ length: 20 }, (_, i) => svc(i + 1, [`10.1.${i}.1`, `10.1.${i}.2`])).flat()]));
      const STAGE = 40;
      const stages = stagedFullBatch(rs, STAGE).stages.length;
      expect(stages).toBeGreaterThan(3);
      const toA = () => c.probe('src', 'tcp', '10.96.3.1', 80, { count: 2, timeoutMs: 300 });
      const baseRules = async () => (await nft('list', 'chain', 'ip', 'kube-proxy', 'nat-prerouting')).split('\n').filter((l) => l.includes('jump')).length;
      /** The real nft, which fails the `failAt`th write, and checks the table and traffic before the last one. */
      const watched = (failAt?: number) => {
        let n = 0;
        const before: { baseRules: number; answers: number }[] = [];
        const tools: NftTools = {
          ...real,
          async apply(json, check) {
            if (!check && ++n === failAt) throw new NftError('nft failed (test)', { code: 'NFT_FAILED', stderr: '', failedCommand: undefined });
            if (!check && n === stages) before.push({ baseRules: await baseRules(), answers: (await toA()).answers.length });
            return real.apply(json, check);
          },
        };
        return { tools, before };
      };

      const staged = watched();
      const report = await new NftWriter(staged.tools, { stageCommands: STAGE }).write(rs, { verify: false });
      expect(report.transactions).toBe(stages);
      // Just before the last transaction: every other one is in, and neither rules nor traffic show it.
      expect(staged.before).toEqual([{ baseRules: 0, answers: 0 }]);
      expect(tally(await toA())).toEqual({ web: 2 });
      const inStages = await contents();
      await nft('delete', 'table', 'ip', 'kube-proxy');
      expect((await new NftWriter(real).write(rs, { verify: false })).transactions).toBe(1);
      expect(await contents()).toEqual(inStages);
      // Over a live table a replacement is one transaction: in stages, the first would delete it.
      expect((await new NftWriter(real, { stageCommands: STAGE }).write(rs, { verify: false })).transactions).toBe(1);
      expect(await contents()).toEqual(inStages);

      // A stage fails: what is in the kernel reaches no traffic; the next write replaces it in one go.
      await nft('delete', 'table', 'ip', 'kube-proxy');
      const failing = watched(3);
      const writer = new NftWriter(failing.tools, { stageCommands: STAGE });
      await expect(writer.write(rs, { verify: false })).rejects.toThrow(NftError);
      expect(await baseRules()).toBe(0);
      expect((await toA()).answers).toEqual([]);
      const retry = await writer.write(rs, { verify: false });
      expect(retry).toMatchObject({ full: true, transactions: 1 });
      expect(await contents()).toEqual(inStages);
      await nft('delete', 'table', 'ip', 'kube-proxy');
    });

    it('names the failing command of a rejected batch, then rewrites the table on the next write', async () => {
      const tools = systemNft(['ip', 'netns', 'exec', c.ns('node-1')]);
      const writer = new NftWriter(tools);
      await writer.write(world(5), { verify: false });
      // Someone deletes an element kproxy wrote: the delta that deletes it fails in the kernel.
      await nft('delete', 'element', 'ip', 'kube-proxy', 'service-ips', '{ 172.30.0.2 . tcp . 80 }');
      const err = await writer.write(world(5, { 2: [] }), { verify: false }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NftError);
      expect((err as NftError).failedCommand).toMatch(/^delete element ip kube-proxy service-ips \{ 172\.30\.0\.2 \. tcp \. 80 \}/);
      expect((err as Error).message).toMatch(/command \d+ of \d+: delete element/);
      const retry = await writer.write(world(5, { 2: [] }), { verify: false });
      expect(retry.full).toBe(true);
      await nft('delete', 'table', 'ip', 'kube-proxy');
    });

    it('the periodic check finds a flushed chain or a deleted element, and the next write rewrites the table', async () => {
      const tools = systemNft(['ip', 'netns', 'exec', c.ns('node-1')]);
      // Budget 1: every check may read deeply (the default spreads deep reads out in time).
      const writer = new NftWriter(tools, { verifyBudget: 1 });
      /** Writes with a verify, waits for it, and writes again: what the second write repaired. */
      const verified = async () => {
        // A full write (the first, and every repair) counts as a deep read of its cost (verify.ts):
        // with budget 1, deep reads resume after as long again.
        await settle();
        const r = await writer.write(world(5), { verify: true });
        expect(r).toMatchObject({ full: false, rules: 0 });
        await r.verifying;
        const w = await writer.write(world(5), { verify: false });
        // What was repaired, per service port (kproxy's own: '-'), as `kproxy verify` reports it.
        return w.repaired === undefined ? undefined : (w.drift ?? []).map((i) => `${i.servicePort ?? '-'}: ${i.change} ${i.object} ${i.name}${i.detail ? `: ${i.detail}` : ''}`);
      };
      await writer.write(world(5), { verify: false });
      expect(await verified()).toBeUndefined();
      await nft('flush', 'chain', 'ip', 'kube-proxy', 'services');
      expect(await verified()).toEqual([
        '-: missing rule services: ip daddr . meta l4proto . th dport vmap @service-ips',
        '-: missing rule services: fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports',
      ]);
      await nft('delete', 'element', 'ip', 'kube-proxy', 'cluster-ips', '{ 172.30.0.1 }');
      expect(await verified()).toEqual(['ns/svc1:http TCP: missing element cluster-ips: 172.30.0.1']);
      await nft('delete', 'chain', 'ip', 'kube-proxy', 'reject-chain');
      expect(await verified()).toEqual(['-: missing chain reject-chain']);
      await nft('delete', 'table', 'ip', 'kube-proxy');
      expect(await verified()).toEqual(['-: missing table kube-proxy']);
      await nft('delete', 'table', 'ip', 'kube-proxy');
    });
  });
});
