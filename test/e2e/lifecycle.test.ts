/**
 * The CLI's contract on a real kernel: dry-run output applies as is, sync is atomic, idempotent and
 * leaves foreign rules alone, stale chains are removed, cleanup removes exactly what kproxy owns,
 * and bad input is skipped with a warning while every other Service keeps working.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service, webServices } from '../support/objects.ts';
import { tally, TestCluster } from './harness/cluster.ts';

const PORTS = [{ name: 'http', port: 80, targetPort: 8080 }];
const objects = webServices;

/** iptables-save without comments and counters: what the kernel holds. */
async function saved(c: TestCluster): Promise<string> {
  return (await c.onNode('iptables-save', []))
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

const FOREIGN = `*filter
:FOREIGN - [0:0]
:KUBE-FIREWALL - [0:0]
-A FOREIGN -s 192.0.2.99/32 -j DROP
-A INPUT -j FOREIGN
-A OUTPUT -j KUBE-FIREWALL
COMMIT
*nat
-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE
COMMIT
`;

describe('kproxy dry-run / sync / cleanup on a real kernel', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create([
      { name: 'web', ip: '10.244.1.10', node: 'node-1', tcp: [8080] },
      { name: 'src', ip: '10.244.1.99', node: 'node-1' },
    ]);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('dry-run prints a script per family that iptables-restore / ip6tables-restore apply as is to an empty namespace', async () => {
    const file = c.writeObjects(objects('a', 'b'));
    const dry = (...more: string[]) => c.kproxy(['dry-run', '--from', file, '--proxy-mode', 'iptables', '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16', ...more]);
    const v4 = (await dry('--ip-family', '4')).stdout;
    const v6 = (await dry('--ip-family', '6')).stdout;
    // Without --ip-family: both, each under its header line.
    expect((await dry()).stdout).toBe(`# IPv4\n${v4}\n# IPv6\n${v6}`);
    await c.onNode('iptables-restore', [], `${v4}\n`);
    await c.onNode('ip6tables-restore', [], `${v6}\n`);
    expect(await c.onNode('ip6tables-save', ['-t', 'nat'])).toContain(':KUBE-SERVICES');
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });
    await c.kproxy(['cleanup', '--proxy-mode', 'iptables']);
    expect(await c.onNode('ip6tables-save', [])).not.toContain('KUBE-');
  });

  it('sync keeps foreign rules, is idempotent, removes stale chains; cleanup removes only its own', async () => {
    await c.onNode('iptables-restore', ['--noflush'], FOREIGN);
    const before = await saved(c);

    await c.sync(objects('a', 'b'));
    const first = await saved(c);
    expect(first).toContain('-A FOREIGN -s 192.0.2.99/32 -j DROP');
    expect(first).toContain('-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE');
    await c.sync(objects('a', 'b'));
    expect(await saved(c)).toBe(first);
    expect(tally(await c.probe('src', 'tcp', '10.96.3.2', 80, { count: 3 }))).toEqual({ web: 3 });

    // b disappears: its chains go, a keeps working.
    await c.sync(objects('a'));
    const after = await saved(c);
    const chains = (text: string) => text.split('\n').filter((l) => /^:KUBE-(SVC|SEP)-/.test(l)).length;
    expect(chains(after)).toBe(chains(first) - 2);
    expect(await c.probe('src', 'tcp', '10.96.3.2', 80, { count: 1, timeoutMs: 300 })).toMatchObject({ answers: [] });
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });

    await c.kproxy(['cleanup', '--proxy-mode', 'iptables']);
    expect(await saved(c)).toBe(before);
    await c.onNode('iptables', ['-F', 'INPUT']);
    await c.onNode('iptables', ['-F', 'OUTPUT']);
    await c.onNode('iptables', ['-t', 'nat', '-F', 'POSTROUTING']);
  });

  it('skips an invalid object with a warning naming it and the field; other Services keep their rules', async () => {
    const bad = [
      service('demo/bad-ip', { clusterIP: '10.96.3.300', ports: PORTS }),
      { ...service('demo/x', { clusterIP: '10.96.3.9', ports: PORTS }), metadata: { namespace: 'demo', name: 'evil"\n-A INPUT -j ACCEPT' } },
      service('demo/bad-proto', { clusterIP: '10.96.3.8', ports: [{ name: 'http', port: 80, protocol: 'ICMP' as never }] }),
    ];
    const file = c.writeObjects([...objects('a'), ...bad]);
    const { stderr } = await c.kproxy(['sync', '--from', file, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16']);
    expect(stderr).toContain('demo/bad-ip');
    expect(stderr).toContain('spec.clusterIP');
    expect(stderr).toContain('metadata.name');
    expect(stderr).toContain('spec.ports[0].protocol');
    const rules = await saved(c);
    expect(rules).not.toContain('evil');
    expect(rules).not.toContain('10.96.3.8');
    expect(tally(await c.probe('src', 'tcp', '10.96.3.1', 80, { count: 3 }))).toEqual({ web: 3 });
    await c.kproxy(['cleanup']);
  });

  it('fails with a message and a non-zero exit on unreadable input, changing nothing', async () => {
    const before = await saved(c);
    const r = await execa('ip', ['netns', 'exec', c.ns('node-1'), `${import.meta.dirname}/../../bin/kproxy`, 'sync', '--from', '/nonexistent/path'], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('/nonexistent/path');
    expect(await saved(c)).toBe(before);
  });
});
