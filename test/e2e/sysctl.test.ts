/**
 * `kproxy run --init-only` and the `--conntrack-*` flags on a real kernel, in a test node's network
 * namespace: the per-namespace conntrack timeouts and be-liberal are written there; the table size
 * (`nf_conntrack_max`) is read-only outside the host's namespace, so kproxy says so and leaves the
 * global hash size alone (the host's is the same after); and it exits without an API server.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from './harness/cluster.ts';

const HASHSIZE = '/sys/module/nf_conntrack/parameters/hashsize';

describe('kproxy run --init-only: conntrack sysctls', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create([], [], 'iptables');
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('sets the per-namespace timeouts, reports the table size it cannot write, and exits', async () => {
    const sysctl = async (name: string) => Number((await c.onNode('cat', [`/proc/sys/net/netfilter/${name}`])).trim());
    const hashBefore = readFileSync(HASHSIZE, 'utf8');
    const r = await c.kproxyResult([
      'run',
      '--init-only',
      // A table larger than any kernel's default, so that kproxy must try to raise it.
      '--conntrack-min',
      '16777216',
      '--conntrack-tcp-timeout-established',
      '2h',
      '--conntrack-tcp-timeout-close-wait',
      '30m',
      '--conntrack-tcp-be-liberal',
      '--conntrack-udp-timeout',
      '45s',
      '--conntrack-udp-timeout-stream',
      '3m0s',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect([
      await sysctl('nf_conntrack_tcp_timeout_established'),
      await sysctl('nf_conntrack_tcp_timeout_close_wait'),
      await sysctl('nf_conntrack_tcp_be_liberal'),
      await sysctl('nf_conntrack_udp_timeout'),
      await sysctl('nf_conntrack_udp_timeout_stream'),
    ]).toEqual([7200, 1800, 1, 45, 180]);
    const lines = r.stderr.split('\n').flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as { msg: string; sysctl?: string }] : []));
    expect(lines.find((l) => l.sysctl === 'nf_conntrack_max')?.msg).toMatch(/^cannot write nf_conntrack_max .*outside the host's network namespace/);
    expect(lines.find((l) => l.sysctl === 'hashsize')?.msg).toMatch(/left at \d+: it is global, and written only with nf_conntrack_max from the host's network namespace/);
    expect(lines.at(-1)?.msg).toBe('--init-only: initialised, exiting');
    expect(readFileSync(HASHSIZE, 'utf8')).toBe(hashBefore);
  });

  it('--conntrack-max-per-core 0 leaves the table size alone without a word', async () => {
    const r = await c.kproxyResult(['run', '--init-only', '--conntrack-max-per-core', '0']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('nf_conntrack_max');
  });
});
