/**
 * Upstream kube-proxy in nftables mode as an oracle (GA since v1.33: the newest envtest assets,
 * v1.36): the same clusters in a real kube-apiserver of that version, programmed by upstream with
 * `--proxy-mode nftables` in one node namespace and by `kproxy sync --proxy-mode nftables` in
 * another. The two tables are laid out differently on purpose (README "nftables mode"), so they are
 * compared by what they do: every destination either table dispatches (ClusterIP, externalIP and
 * LB IP ports, NodePorts on the NodePort addresses, an unused port of each ClusterIP), from a pod,
 * from the node, from clients inside and outside the source ranges, and from each local endpoint
 * (hairpin), is walked through both listings by test/support/nfteval.ts; the fates (dropped,
 * rejected, untouched or DNATed to which endpoints with which probability, masqueraded or not,
 * sticky or not) must be equal; an unallocated address of the service CIDR is probed too (both
 * drop it, from the API server's ServiceCIDR). Identical up to this intended departure:
 * a pod reaching itself through an endpoint whose EndpointSlice names no node: kproxy
 *    masquerades it, as an endpoint that may be on this node (planner `mayBeLocal`; upstream's
 *    iptables mode masquerades every endpoint's hairpin); v1.36's nftables mode only for endpoints
 *    the slice puts on this node. The hairpin probes come from the pods upstream's set names.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENVTEST_HINT, NEWEST_ASSETS } from '../support/envtest.ts';
import { genService, NAMESPACES, objectsOf } from '../support/generated.ts';
import { behaviour, NftTable, probes } from '../support/nfteval.ts';
import { fixtureItems } from '../support/objects.ts';
import { exampleObjects, OracleRig } from '../support/upstream.ts';
import { CLIENT_IP, NODE1_EXT_IP, NODE1_IP, type TestCluster } from './harness/cluster.ts';

const ENABLED = NEWEST_ASSETS !== undefined && NEWEST_ASSETS.minor >= 33;
/** node-1's addresses in the test cluster, and the sources of the probes (test/support/nfteval.ts {@link probes}). */
const NODE = { addresses: [NODE1_IP, NODE1_EXT_IP], ip: NODE1_IP, client: CLIENT_IP, unallocated: ['10.111.255.253'] };

if (!ENABLED) console.log(NEWEST_ASSETS === undefined ? ENVTEST_HINT : `the nftables-mode oracle needs kube-proxy v1.33 or later; the newest assets are ${NEWEST_ASSETS.version}`);

describe.skipIf(!ENABLED)(`upstream kube-proxy ${NEWEST_ASSETS?.version ?? ''} as an oracle (nftables mode)`, () => {
  let rig: OracleRig;

  beforeAll(async () => {
    rig = await OracleRig.start('nftables', NEWEST_ASSETS!);
  }, 120_000);
  afterAll(async () => {
    await rig?.stop();
  });

  /** Replaces the cluster's objects, lets both proxies program them, and returns both tables. */
  async function program(objects: readonly object[]): Promise<{ upstream: NftTable; ours: NftTable }> {
    await rig.program(objects);
    const list = (c: TestCluster) => c.onNode('nft', ['-j', 'list', 'table', 'ip', 'kube-proxy']);
    return { upstream: new NftTable(await list(rig.upstream)), ours: new NftTable(await list(rig.ours)) };
  }

  /** Both tables' behaviour on the probes of both. */
  function compare(tables: { upstream: NftTable; ours: NftTable }) {
    // The departure: hairpin sources are the pods upstream's set names.
    const packets = probes([tables.upstream, tables.ours], NODE, [tables.upstream]);
    return { theirs: behaviour(tables.upstream, packets), ours: behaviour(tables.ours, packets), packets };
  }

  it('the bundled example cluster', async () => {
    for (const ns of NAMESPACES) await rig.api.ensureNamespace(ns);
    const { theirs, ours: mine, packets } = compare(await program(exampleObjects(fixtureItems())));
    // The probes cover DNAT, rejection, source ranges and hairpin.
    const all = Object.values(theirs).flat();
    expect(all.filter((f) => f.verdict === 'dnat').length).toBeGreaterThan(50);
    expect(all.some((f) => f.verdict === 'reject')).toBe(true);
    expect(all.some((f) => f.verdict === 'drop')).toBe(true);
    expect(all.some((f) => f.sticky !== undefined)).toBe(true);
    expect(packets.length).toBeGreaterThan(100);
    expect(mine).toEqual(theirs);
  }, 60_000);

  it('generated clusters: every Service type and policy, source ranges, affinity, terminating endpoints, zone hints', async () => {
    for (const ns of NAMESPACES) await rig.api.ensureNamespace(ns);
    let probed = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(genService, { minLength: 1, maxLength: 5 }), async (services) => {
        const { theirs, ours: mine } = compare(await program(objectsOf(services)));
        probed += Object.keys(theirs).length;
        expect(mine).toEqual(theirs);
      }),
      // A fixed seed: CI compares the same 25 clusters every run; change it to explore others.
      { numRuns: 25, seed: 1136, endOnFailure: true },
    );
    expect(probed).toBeGreaterThan(500);
  }, 600_000);
});
