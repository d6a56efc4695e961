/**
 * The conntrack sysctls kube-proxy sets on start (src/cli/sysctl.ts), against a folder standing in
 * for /proc/sys/net/netfilter and the module's hash size. test/e2e/sysctl.test.ts does the same on
 * a real kernel in a network namespace.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { applyConntrackSettings, CONNTRACK_DEFAULTS, conntrackMax } from '../../src/cli/sysctl.ts';

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function fakeProc(values: Record<string, number>) {
  const root = mkdtempSync(join(tmpdir(), 'kproxy-sysctl-'));
  dirs.push(root);
  const netfilter = join(root, 'netfilter');
  mkdirSync(netfilter);
  for (const [name, v] of Object.entries(values)) writeFileSync(join(netfilter, name), `${v}\n`);
  const hashsize = join(root, 'hashsize');
  writeFileSync(hashsize, '4096\n');
  const read = (name: string) => Number(readFileSync(name === 'hashsize' ? hashsize : join(netfilter, name), 'utf8'));
  return { paths: { netfilter, hashsize, cpus: 2, inHostNamespace: async () => true }, read, netfilter };
}

const KERNEL = {
  nf_conntrack_max: 65536,
  nf_conntrack_tcp_timeout_established: 432000,
  nf_conntrack_tcp_timeout_close_wait: 60,
  nf_conntrack_tcp_be_liberal: 0,
  nf_conntrack_udp_timeout: 30,
  nf_conntrack_udp_timeout_stream: 120,
};

describe('conntrack sysctls', () => {
  it('sizes the table as upstream: maxPerCore × CPUs, at least min; 0 leaves it', () => {
    expect(conntrackMax(CONNTRACK_DEFAULTS, 2)).toBe(131072);
    expect(conntrackMax(CONNTRACK_DEFAULTS, 8)).toBe(262144);
    expect(conntrackMax({ ...CONNTRACK_DEFAULTS, maxPerCore: 0 }, 8)).toBe(0);
  });

  it("writes upstream's defaults, the hash size a quarter of the table, and leaves what is 0 alone", async () => {
    const k = fakeProc(KERNEL);
    const outcomes = await applyConntrackSettings(CONNTRACK_DEFAULTS, k.paths);
    expect(outcomes.map((o) => `${o.name} ${o.outcome}`)).toEqual(['nf_conntrack_max set', 'hashsize set', 'nf_conntrack_tcp_timeout_established set', 'nf_conntrack_tcp_timeout_close_wait set']);
    expect([k.read('nf_conntrack_max'), k.read('hashsize'), k.read('nf_conntrack_tcp_timeout_established'), k.read('nf_conntrack_tcp_timeout_close_wait')]).toEqual([131072, 32768, 86400, 3600]);
    // UDP timeouts of 0 and be-liberal false are not written.
    expect([k.read('nf_conntrack_udp_timeout'), k.read('nf_conntrack_tcp_be_liberal')]).toEqual([30, 0]);
    // A second start finds everything set.
    expect((await applyConntrackSettings(CONNTRACK_DEFAULTS, k.paths)).every((o) => o.outcome === 'unchanged')).toBe(true);
  });

  it('never lowers the table size, and sets be-liberal and the UDP timeouts when asked', async () => {
    const k = fakeProc({ ...KERNEL, nf_conntrack_max: 1_048_576 });
    const outcomes = await applyConntrackSettings({ ...CONNTRACK_DEFAULTS, tcpBeLiberal: true, udpTimeout: 60, udpStreamTimeout: 300 }, k.paths);
    expect(outcomes.find((o) => o.name === 'nf_conntrack_max')).toMatchObject({ outcome: 'unchanged', was: 1_048_576 });
    expect(outcomes.some((o) => o.name === 'hashsize')).toBe(false);
    expect([k.read('nf_conntrack_max'), k.read('nf_conntrack_tcp_be_liberal'), k.read('nf_conntrack_udp_timeout'), k.read('nf_conntrack_udp_timeout_stream')]).toEqual([1_048_576, 1, 60, 300]);
  });

  it('writes the global hash size only from the host network namespace', async () => {
    const k = fakeProc(KERNEL);
    const outcomes = await applyConntrackSettings(CONNTRACK_DEFAULTS, { ...k.paths, inHostNamespace: async () => false });
    expect(outcomes.slice(0, 2).map((o) => `${o.name} ${o.outcome}`)).toEqual(['nf_conntrack_max set', 'hashsize skipped']);
    expect(k.read('hashsize')).toBe(4096);
  });

  it('reports a sysctl it cannot write and goes on; the global hash size is left alone when the table size was not writable', async () => {
    const k = fakeProc(KERNEL);
    // A read-only file, as nf_conntrack_max is outside the host's network namespace. (Root ignores
    // file modes, so a folder stands in: writing to it fails with EISDIR.)
    rmSync(join(k.netfilter, 'nf_conntrack_max'));
    mkdirSync(join(k.netfilter, 'nf_conntrack_max'));
    chmodSync(join(k.netfilter, 'nf_conntrack_max'), 0o555);
    const outcomes = await applyConntrackSettings(CONNTRACK_DEFAULTS, k.paths);
    expect(outcomes[0]).toMatchObject({ name: 'nf_conntrack_max', outcome: 'failed', error: expect.any(String) as unknown });
    expect(outcomes[1]).toMatchObject({ name: 'hashsize', outcome: 'skipped', was: 4096 });
    expect(k.read('hashsize')).toBe(4096);
    expect(k.read('nf_conntrack_tcp_timeout_established')).toBe(86400);
  });
});
