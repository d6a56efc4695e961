/**
 * The image's iptables backend choice (image/iptables-mode, image/iptables-shim), run with the
 * real iptables-legacy and iptables-nft in a network namespace made here: kubelet's marker chain
 * wins (in either family), else the backend with more rules, else nft; looking creates no table;
 * the shim then runs the chosen backend. (The image itself is built by a separate tool with
 * buildah where available; these tests need no container engine.)
 */
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ROOT } from './harness/cluster.ts';

const NS = `kpimg-${process.pid}`;
const inNs = async (cmd: string, args: string[] = [], env: Record<string, string> = {}) => (await execa('ip', ['netns', 'exec', NS, cmd, ...args], { env, timeout: 30_000 })).stdout.trim();
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

  it('creates no table while it looks, in either backend or family', async () => {
    const tables = async () => (await Promise.all(['iptables-legacy-save', 'ip6tables-legacy-save', 'iptables-nft-save', 'ip6tables-nft-save'].map((t) => inNs(t)))).join('');
    expect(await tables()).toBe('');
    expect(await mode()).toBe('nft');
    expect(await tables()).toBe('');
    // Once legacy holds rules, asking again must not add a legacy mangle table beside them.
    await inNs('iptables-legacy', ['-A', 'INPUT', '-s', '192.0.2.1/32', '-j', 'ACCEPT']);
    expect(await mode()).toBe('legacy');
    expect(await inNs('iptables-legacy-save')).not.toContain('*mangle');
  });

  it("sees kubelet's marker in the IPv6 tables too", async () => {
    await inNs('iptables-legacy', ['-A', 'INPUT', '-s', '192.0.2.1/32', '-j', 'ACCEPT']);
    await inNs('ip6tables-nft', ['-t', 'mangle', '-N', 'KUBE-KUBELET-CANARY']);
    expect(await mode()).toBe('nft');
    await inNs('ip6tables-nft', ['-t', 'mangle', '-X', 'KUBE-KUBELET-CANARY']);
    await inNs('ip6tables-legacy', ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    await inNs('iptables-nft', ['-A', 'INPUT', '-s', '192.0.2.2/32', '-j', 'ACCEPT']);
    await inNs('iptables-nft', ['-A', 'INPUT', '-s', '192.0.2.3/32', '-j', 'ACCEPT']);
    expect(await mode()).toBe('legacy');
  });

  it("the image's build-time smoke test does not run the detection", () => {
    const smoke = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
      .split('\n')
      .find((l) => l.includes('kproxy --help'))!;
    expect(smoke).toMatch(/KPROXY_IPTABLES_MODE=nft /);
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
