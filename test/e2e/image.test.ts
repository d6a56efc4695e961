/**
 * The image's iptables backend choice (image/iptables-mode, image/iptables-shim), run with the
 * real iptables-legacy and iptables-nft in a network namespace made here: kubelet's marker chain
 * wins, else the backend with more rules, else nft; the shim then runs the chosen backend. (The
 * image itself cannot be built here: these machines have no container engine.)
 */
import { execa } from 'execa';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ROOT } from './harness/cluster.ts';

const NS = `kpimg-${process.pid}`;
const inNs = async (cmd: string, args: string[] = [], env: Record<string, string> = {}) =>
  (await execa('ip', ['netns', 'exec', NS, cmd, ...args], { env, timeout: 30_000 })).stdout.trim();
const mode = () => inNs(join(ROOT, 'image/iptables-mode'));

describe('image: iptables backend detection', () => {
  let shims: string;
  beforeEach(async () => {
    await execa('ip', ['netns', 'add', NS]);
    shims = mkdtempSync(join(tmpdir(), 'kproxy-shims-'));
    for (const t of ['iptables', 'iptables-save']) symlinkSync(join(ROOT, 'image/iptables-shim'), join(shims, t));
  });
  afterEach(async () => {
    await execa('ip', ['netns', 'del', NS], { reject: false });
    rmSync(shims, { recursive: true, force: true });
  });

  it('chooses nft on an empty host, legacy where the rules are, nft when kubelet marks it', async () => {
    expect(await mode()).toBe('nft');
    await inNs('iptables-legacy', ['-A', 'INPUT', '-s', '192.0.2.1/32', '-j', 'ACCEPT']);
    expect(await mode()).toBe('legacy');
    await inNs('iptables-nft', ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    expect(await mode()).toBe('nft');
  });

  it('the shim runs the chosen backend under the plain tool names', async () => {
    await inNs('iptables-legacy', ['-A', 'INPUT', '-s', '192.0.2.7/32', '-j', 'ACCEPT']);
    const legacy = await inNs(join(shims, 'iptables-save'), ['-t', 'filter'], { KPROXY_IPTABLES_MODE: 'legacy' });
    expect(legacy).toContain('-A INPUT -s 192.0.2.7/32 -j ACCEPT');
    const nft = await inNs(join(shims, 'iptables-save'), ['-t', 'filter'], { KPROXY_IPTABLES_MODE: 'nft' });
    expect(nft).not.toContain('192.0.2.7');
    await expect(inNs(join(shims, 'iptables'), ['-L'], { KPROXY_IPTABLES_MODE: 'bogus' })).rejects.toThrow(/must be nft or legacy/);
  });
});
