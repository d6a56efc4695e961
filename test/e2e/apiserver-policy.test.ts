/**
 * `kproxy run --network-policy` against a real kube-apiserver, each version of the envtest assets
 * (v1.26 in iptables mode, v1.36 in nftables mode: the policy table is the same in both), as its
 * ServiceAccount with exactly manifests/rbac.yaml and manifests/rbac-networkpolicy.yaml: pods,
 * namespaces and NetworkPolicies created and changed through the API, each change in packets
 * within {@link BOUND_MS} (min-sync-period 100 ms here; the bound covers the watch, one sync and
 * the probes' own timeouts). The matrix pods of harness/netpol.ts, a and b on node-1, c on node-2.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ASSET_SETS, ENVTEST_HINT, RealApiServer, SUITE_ASSET_SETS } from '../support/envtest.ts';
import { networkPolicy } from '../support/objects.ts';
import { ROOT, TestCluster } from './harness/cluster.ts';
import { ALL, ipOf, matrixObjects, matrixPods, nsName, type MatrixPod } from './harness/netpol.ts';

/** How long a change through the API may take to show in packets. */
const BOUND_MS = 10_000;

if (ASSET_SETS.length === 0) console.log(ENVTEST_HINT);
const RUNS = SUITE_ASSET_SETS.map((assets) => ({ assets, version: assets.version, mode: assets.minor >= 33 ? ('nftables' as const) : ('iptables' as const) }));

describe.skipIf(ASSET_SETS.length === 0).each(RUNS)('kproxy run --network-policy against a real kube-apiserver $version ($mode mode)', ({ assets, mode }) => {
  let c: TestCluster;
  let api: RealApiServer;
  let logs: { stdout: string; stderr: string };
  const reaches = async (from: MatrixPod, to: MatrixPod) => (await c.probe(nsName(from), 'tcp', ipOf(to), 80, { timeoutMs: 400 })).answers[0]?.name === nsName(to);
  /** Waits until `from → to` is `want`; resolves to the milliseconds it took. */
  const until = async (from: MatrixPod, to: MatrixPod, want: boolean): Promise<number> => {
    const start = Date.now();
    for (let i = 0; i < 100 && Date.now() - start < BOUND_MS; i++) {
      if ((await reaches(from, to)) === want) return Date.now() - start;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${from} → ${to} not ${want ? 'open' : 'closed'} within ${BOUND_MS} ms; kproxy's log:\n${readFileSync(logs.stderr, 'utf8').slice(-3000)}`);
  };
  const objectsOf = (kind: string) => matrixObjects().filter((o) => o.kind === kind);

  beforeAll(async () => {
    c = await TestCluster.create(matrixPods(), [], mode);
    api = await RealApiServer.start([], assets);
    await api.applyManifest(join(ROOT, 'manifests/rbac.yaml'));
    await api.applyManifest(join(ROOT, 'manifests/rbac-networkpolicy.yaml'));
    for (const o of objectsOf('Node')) await api.apply(o);
    for (const o of objectsOf('Namespace')) {
      await api.apply(o);
      // No controller manager here to make it: a pod needs its namespace's default ServiceAccount.
      await api.apply({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: (o.metadata as { name: string }).name } });
    }
    for (const o of objectsOf('Pod')) await api.apply(o);
    const port = await c.serveInNamespace('node-1', (h) => new Promise<void>((resolve) => api.forwarder().listen(h as never, resolve)));
    const kubeconfig = join(c.dir, 'kubeconfig');
    writeFileSync(kubeconfig, api.kubeconfig(api.kproxyToken, `https://127.0.0.1:${port}`));
    logs = c.startAgent([
      '--kubeconfig',
      kubeconfig,
      '--hostname-override',
      'node-1',
      '--cluster-cidr',
      '10.244.0.0/16',
      '--network-policy',
      '--iptables-min-sync-period',
      '100ms',
      '--iptables-sync-period',
      '5s',
    ]);
  }, 120_000);
  afterAll(async () => {
    await c?.stopAgent('SIGKILL');
    await api?.stop();
    await c?.destroy();
  });

  it('enforces a NetworkPolicy created through the API, and follows it as it changes and goes', async () => {
    const took: Record<string, number> = {};
    took['first sync, no policy'] = await until('y/a', 'x/a', true);
    await api.apply(networkPolicy('x/a-from-b', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }));
    took['policy created'] = await until('y/a', 'x/a', false);
    expect(await reaches('x/b', 'x/a')).toBe(true);
    // A remote pod's label: x/c (node-2) becomes a b and is let in; x/b stops being one.
    await api.label('Pod', 'x', 'c', { pod: 'b' });
    took['remote pod relabelled in'] = await until('x/c', 'x/a', true);
    await api.label('Pod', 'x', 'b', { pod: 'gone' });
    took['local pod relabelled out'] = await until('x/b', 'x/a', false);
    // A namespace label: a second policy admits namespaces team=blue; z gets the label.
    await api.apply(networkPolicy('x/a-from-blue', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }] }] }));
    expect(await reaches('z/a', 'x/a')).toBe(false);
    await api.label('Namespace', undefined, 'z', { team: 'blue' });
    took['namespace relabelled'] = await until('z/a', 'x/a', true);
    await api.remove('NetworkPolicy', 'x', 'a-from-b');
    await api.remove('NetworkPolicy', 'x', 'a-from-blue');
    took['policies deleted'] = await until('y/a', 'x/a', true);
    console.log(`kproxy run --network-policy, ${assets.version}: ms until packets showed each change: ${JSON.stringify(took)}`);
    for (const p of ALL) expect(await reaches('y/a', p), p).toBe(true);
  }, 120_000);

  it('repairs the policy table when someone deletes it (the periodic verify, every sync period: 5 s here)', async () => {
    await api.apply(networkPolicy('x/deny', { podSelector: {}, policyTypes: ['Ingress'] }));
    await until('y/a', 'x/a', false);
    await c.onNode('nft', ['delete', 'table', 'inet', 'kproxy-policy']);
    expect(await reaches('y/a', 'x/a')).toBe(true);
    const repaired = await until('y/a', 'x/a', false);
    expect(readFileSync(logs.stderr, 'utf8')).toContain('the NetworkPolicy table differed from what kproxy wrote; rewrote it');
    console.log(`kproxy run --network-policy, ${assets.version}: policy table repaired ${repaired} ms after it was deleted`);
    await api.remove('NetworkPolicy', 'x', 'deny');
    await until('y/a', 'x/a', true);
  }, 60_000);
});
