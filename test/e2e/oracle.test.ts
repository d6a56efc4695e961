/**
 * Upstream as an oracle, once per version of the envtest assets (v1.26 and v1.36): the same
 * clusters, loaded into a real kube-apiserver of that version, programmed by upstream kube-proxy of
 * the same version (iptables mode) in one node namespace and by `kproxy sync` (with the objects as
 * that API server serialises them) in another; the two kernels' `iptables-save` must be
 * identical, up to the intended departures below. Every other difference is a bug in one of the
 * two. Clusters: the bundled example, and fast-check generated ones with every Service type and
 * policy, source ranges, affinity, terminating endpoints and zone hints. Needs KUBEBUILDER_ASSETS.
 *
 * Intended departures (README "Departures from upstream"), applied to the dumps before comparing:
 * 1. no canary chains (`KUBE-PROXY-CANARY` in mangle, nat and filter): kproxy verifies what it
 *    wrote instead (src/backends/verify.ts), and so writes nothing in mangle;
 * 2. the per-Service rules of KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES and
 *    KUBE-PROXY-FIREWALL are compared as sets: upstream writes them in Go's map order, which
 *    changes from sync to sync, and no two of them match the same packets (shared destinations
 *    are settled, see the last test);
 * 3. the last rule of a KUBE-FW- chain, a comment-only no-op (`other traffic to … will be dropped by
 *    KUBE-PROXY-FIREWALL`), is written by upstream from v1.27 on and by kproxy; v1.26 lacks it;
 * 4. zone hints: v1.26 also wants the Service annotation `service.kubernetes.io/topology-aware-hints:
 *    auto`; kproxy, like later upstream, trusts the hints the EndpointSlice controller writes.
 *    Generated Services with hints carry the annotation;
 * 5. v1.28 on keeps a `KUBE-FIREWALL` chain in filter, jumped to from INPUT and OUTPUT, for its
 *    localhost NodePorts' martian-packet drop; without them (`--iptables-localhost-nodeports=false`)
 *    it is empty, and kproxy, which has no localhost NodePorts, writes neither chain nor jumps;
 * 6. v1.29 on counts the conntrack-INVALID drop of KUBE-FORWARD in an nfacct object
 *    (`-m nfacct --nfacct-name ct_state_invalid_dropped_pkts`, for its metric
 *    `kubeproxy_iptables_ct_state_invalid_dropped_packets_total`) where the kernel has nfacct;
 *    kproxy drops the same packets uncounted.
 * Upstream runs with `--iptables-localhost-nodeports=false` (kproxy has no localhost NodePorts) and
 * `--bind-address` = node-1's IP (test/support/upstream.ts `upstreamArgs`).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ASSET_SETS, ENVTEST_HINT, SUITE_ASSET_SETS } from '../support/envtest.ts';
import { comparable, exampleObjects, OracleRig } from '../support/upstream.ts';
import { endpoint, endpointSlice, fixtureItems, service } from '../support/objects.ts';
import { genService, NAMESPACES, objectsOf } from '../support/generated.ts';

if (ASSET_SETS.length === 0) console.log(ENVTEST_HINT);

describe.skipIf(ASSET_SETS.length === 0).each(SUITE_ASSET_SETS)('upstream kube-proxy $version as an oracle (iptables mode)', (assets) => {
  let rig: OracleRig;

  beforeAll(async () => {
    rig = await OracleRig.start('iptables', assets);
  }, 120_000);
  afterAll(async () => {
    await rig?.stop();
  });

  /** Replaces the cluster's objects in the API, lets both proxies program them, and returns both dumps. */
  async function program(objects: readonly object[], flags: readonly string[] = []): Promise<{ upstream: string; ours: string }> {
    await rig.program(objects, flags);
    return { upstream: await rig.upstream.onNode('iptables-save', []), ours: await rig.ours.onNode('iptables-save', []) };
  }

  it('the bundled example cluster', async () => {
    for (const ns of NAMESPACES) await rig.api.ensureNamespace(ns);
    const dumps = await program(exampleObjects(fixtureItems()));
    const theirs = comparable(dumps.upstream);
    expect(Object.keys(theirs).filter((k) => k.startsWith('nat KUBE-SEP-')).length).toBeGreaterThan(5);
    expect(comparable(dumps.ours)).toEqual(theirs);
  }, 60_000);

  it('--detect-local-mode NodeCIDR, BridgeInterface and InterfaceNamePrefix, on the bundled example cluster', async () => {
    for (const ns of NAMESPACES) await rig.api.ensureNamespace(ns);
    // NodeCIDR reads node-1's spec.podCIDRs (upstream waits for them at start).
    const current = (await rig.api.request('GET', '/api/v1/nodes/node-1')).body as { spec?: Record<string, unknown> };
    await rig.api.apply({ ...current, spec: { ...current.spec, podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] } });
    const items = exampleObjects(fixtureItems());
    for (const flags of [
      ['--detect-local-mode', 'NodeCIDR'],
      ['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', 'cbr0'],
      ['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'veth'],
    ]) {
      await rig.restartUpstream(flags);
      const dumps = await program(items, flags);
      const theirs = comparable(dumps.upstream);
      const marker = flags[1] === 'NodeCIDR' ? '10.244.1.0/24' : flags[1] === 'BridgeInterface' ? '-i cbr0' : '-i veth+';
      expect(
        Object.values(theirs)
          .flat()
          .some((r) => r.includes(marker)),
        `${flags.join(' ')}: upstream's rules use ${marker}`,
      ).toBe(true);
      expect(comparable(dumps.ours), flags.join(' ')).toEqual(theirs);
    }
    // Back to the default detector for the tests after this one.
    await rig.restartUpstream();
  }, 180_000);

  it('generated clusters: every Service type and policy, source ranges, affinity, terminating endpoints, zone hints', async () => {
    for (const ns of NAMESPACES) await rig.api.ensureNamespace(ns);
    let chains = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(genService, { minLength: 1, maxLength: 5 }), async (services) => {
        const dumps = await program(objectsOf(services));
        const theirs = comparable(dumps.upstream);
        chains += Object.keys(theirs).filter((k) => /^nat KUBE-(SVC|SVL|EXT|FW|SEP)-/.test(k)).length;
        expect(comparable(dumps.ours)).toEqual(theirs);
      }),
      // A fixed seed: CI compares the same 25 clusters every run; change it to explore others.
      { numRuns: 25, seed: 1126, endOnFailure: true },
    );
    expect(chains).toBeGreaterThan(100);
  }, 600_000);

  it("shared destinations: upstream keeps both rules in map order, kproxy only the older Service's", async () => {
    const claim = (key: string, i: number, created: string) => {
      const s = service(key, { clusterIP: `10.96.2.${i}`, ports: [{ name: 'http', port: 80 }], externalIPs: ['198.51.100.99'] }) as { metadata: Record<string, unknown> };
      delete (s as { status?: unknown }).status;
      s.metadata.creationTimestamp = created;
      return [s, endpointSlice(key, [{ name: 'http', port: 80 }], [endpoint(`10.244.1.${200 + i}`, { node: 'node-1' })])];
    };
    const dumps = await program([...claim('ns-a/older', 1, '2026-01-01T00:00:00Z'), ...claim('ns-b/newer', 2, '2026-01-01T00:00:00Z')]);
    const external = (save: string) =>
      save
        .split('\n')
        .filter((l) => l.startsWith('-A KUBE-SERVICES') && l.includes('-d 198.51.100.99/32'))
        .map((l) => /"(\S+) external IP"/.exec(l)?.[1])
        .sort();
    // The API server sets creationTimestamp itself: the one created first is the older.
    expect(external(dumps.upstream)).toEqual(['ns-a/older:http', 'ns-b/newer:http']);
    expect(external(dumps.ours)).toEqual(['ns-a/older:http']);
  }, 60_000);
});
