/**
 * `kproxy verify` on a real kernel, both modes: after `sync` of the example cluster it reports no
 * drift (exit 0); after a rule, a chain or a map element is deleted by hand, or a rule is added
 * inside a kproxy chain, it names the Service and the difference (exit 1); foreign rules and
 * tables are not drift. Each case is undone by another `sync`, which verify then finds clean.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DriftItem } from '../../src/backends/drift.ts';
import { EXAMPLES } from '../support/objects.ts';
import { MODES, TestCluster } from './harness/cluster.ts';

const FLAGS = ['--from', EXAMPLES, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16'];

describe.each(MODES)('%s mode: kproxy verify', (mode) => {
  let c: TestCluster;
  const sync = () => c.kproxy(['sync', '--proxy-mode', mode, ...FLAGS]);
  /** verify's exit status and the IPv4 differences as `service: change object name`. */
  const verify = async () => {
    const r = await c.kproxyResult(['verify', '--output', 'json', '--proxy-mode', mode, ...FLAGS]);
    const reports = JSON.parse(r.stdout) as { family: number; items: (Omit<DriftItem, 'servicePort'> & { servicePort: string | null })[] }[];
    expect(reports.map((x) => x.family)).toEqual([4, 6]);
    const items = reports.flatMap((x) => x.items.map((i) => `${i.servicePort ?? '-'}: ${i.change} ${i.object} ${i.name}${i.object === 'rule' || i.object === 'element' ? ` ${i.detail}` : ''}`));
    return { status: r.exitCode, items, text: (await c.kproxyResult(['verify', '--proxy-mode', mode, ...FLAGS])).stdout };
  };
  const run = (cmd: string, ...args: string[]) => c.onNode(cmd, args);

  beforeAll(async () => {
    c = await TestCluster.create([], [], mode);
    await sync();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('an untouched sync: no drift in either family', async () => {
    const r = await verify();
    expect(r).toMatchObject({ status: 0, items: [] });
    expect(r.text).toBe(`IPv4 ${mode}: no drift\nIPv6 ${mode}: no drift`);
  });

  it('names the Service and the difference after a rule, a chain or a map element is deleted or a rule added; foreign rules are not drift', async () => {
    if (mode === 'iptables') await iptablesCases();
    else await nftablesCases();
  });

  /** iptables: a deleted rule, a deleted chain, an added rule (there are no map elements); foreign chains are ignored. */
  async function iptablesCases(): Promise<void> {
    const save = await run('iptables-save', '-t', 'nat');
    // One rule: kube-dns:dns's dispatch rule in KUBE-SERVICES.
    const dispatch = save.split('\n').find((l) => l.startsWith('-A KUBE-SERVICES ') && l.includes('"kube-system/kube-dns:dns cluster IP"'))!;
    await run(
      'iptables',
      '-t',
      'nat',
      '-D',
      ...dispatch
        .slice(3)
        .match(/"[^"]*"|\S+/g)!
        .map((w) => w.replace(/^"|"$/g, '')),
    );
    let r = await verify();
    expect(r.status).toBe(1);
    expect(r.items).toEqual([expect.stringMatching(/^kube-system\/kube-dns:dns UDP: missing rule KUBE-SERVICES .*"kube-system\/kube-dns:dns cluster IP".* -j KUBE-SVC-TCOU7JCQXEZGVUNU$/)]);
    expect(r.text).toMatch(/^IPv4 iptables: 1 difference\(s\) in 1 place\(s\)\n {2}kube-system\/kube-dns:dns UDP\n {4}missing rule {2}nat KUBE-SERVICES/);
    await sync();

    // One chain: an endpoint chain of shop/api (its jump removed first, as the kernel demands).
    const sep = /-j (KUBE-SEP-\w+)/.exec(save.split('\n').find((l) => l.startsWith('-A KUBE-SVC-TG4Y7II5EGIOXNPD ') && l.includes('KUBE-SEP-'))!)![1]!;
    await run('iptables', '-t', 'nat', '-F', 'KUBE-SVC-TG4Y7II5EGIOXNPD');
    await run('iptables', '-t', 'nat', '-F', sep);
    await run('iptables', '-t', 'nat', '-X', sep);
    r = await verify();
    expect(r.status).toBe(1);
    expect(r.items).toContain(`shop/api:grpc TCP: missing chain ${sep}`);
    expect(r.items.every((i) => i.startsWith('shop/api:grpc TCP: '))).toBe(true);
    await sync();

    // A rule added inside a kproxy chain.
    await run('iptables', '-t', 'nat', '-I', 'KUBE-SVC-TCOU7JCQXEZGVUNU', '-j', 'RETURN');
    r = await verify();
    expect(r.items).toEqual(['kube-system/kube-dns:dns UDP: extra rule KUBE-SVC-TCOU7JCQXEZGVUNU -j RETURN']);
    await sync();

    // Foreign chains and rules, even in the built-in chains kproxy jumps from, are not drift.
    await run('iptables', '-t', 'nat', '-N', 'FOREIGN');
    await run('iptables', '-t', 'nat', '-I', 'PREROUTING', '-j', 'FOREIGN');
    await run('ip6tables', '-t', 'filter', '-N', 'FOREIGN6');
    expect(await verify()).toMatchObject({ status: 0, items: [] });
  }

  /** nftables: a deleted rule, a deleted chain, a deleted map element, an added rule; foreign tables are ignored. */
  async function nftablesCases(): Promise<void> {
    const nft = (...args: string[]) => run('nft', ...args);
    const dnsChain = 'service-FY5PMXPG-kube-system/kube-dns/udp/dns';
    // One rule: kube-dns:dns's masquerade rule, by its handle.
    const listing = JSON.parse(await nft('-j', '-a', 'list', 'chain', 'ip', 'kube-proxy', dnsChain)) as { nftables: { rule?: { handle: number } }[] };
    const handle = listing.nftables.find((o) => o.rule)!.rule!.handle;
    await nft('delete', 'rule', 'ip', 'kube-proxy', dnsChain, 'handle', String(handle));
    let r = await verify();
    expect(r.status).toBe(1);
    expect(r.items).toEqual([
      `kube-system/kube-dns:dns UDP: missing rule ${dnsChain} ip daddr 10.96.0.10 udp dport 53 ip saddr != 10.244.0.0/16 jump mark-for-masquerade comment "kube-system/kube-dns:dns cluster IP"`,
    ]);
    await sync();

    // One chain: shop/api's (the map element that goes to it removed first, as the kernel demands).
    const apiChain = 'service-R6NSGCUN-shop/api/tcp/grpc';
    await nft('delete', 'element', 'ip', 'kube-proxy', 'service-ips', '{ 10.96.20.2 . tcp . 9000 }');
    await nft('delete', 'chain', 'ip', 'kube-proxy', apiChain);
    r = await verify();
    expect(r.items).toEqual([`shop/api:grpc TCP: missing chain ${apiChain}`, `shop/api:grpc TCP: missing element service-ips 10.96.20.2 . tcp . 9000 : goto ${apiChain}`]);
    await sync();

    // One map element.
    await nft('delete', 'element', 'ip', 'kube-proxy', 'no-endpoint-services', '{ 10.96.20.4 . tcp . 80 }');
    r = await verify();
    expect(r.items).toEqual(['shop/payments:http TCP: missing element no-endpoint-services 10.96.20.4 . tcp . 80 : goto reject-chain']);
    await sync();

    // A rule added inside a kproxy chain.
    await nft('add', 'rule', 'ip', 'kube-proxy', dnsChain, 'counter');
    r = await verify();
    expect(r.items).toHaveLength(1);
    expect(r.items[0]).toMatch(new RegExp(`^kube-system/kube-dns:dns UDP: extra rule ${dnsChain} `));
    await sync();

    // Foreign tables are not drift.
    await nft('add', 'table', 'ip', 'foreign');
    await nft('add', 'chain', 'ip', 'foreign', 'pre', '{ type nat hook prerouting priority -50 ; }');
    expect(await verify()).toMatchObject({ status: 0, items: [] });
  }
});
