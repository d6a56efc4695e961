/**
 * The NetworkPolicy pipeline at scale (bench/README.md, "NetworkPolicy"): P pods, Q policies, L of
 * the pods on this node, through the real policy store, planner, renderer and nft writer, into a
 * network namespace made here (deleted when it ends).
 *
 * The synthetic cluster: policy-cluster.ts.
 *
 * Measured, each the median of `--runs`:
 * - **cold**: the store filled from the objects; the plan, the render, and the write of the whole
 *   table by kproxy's writer (`nft -j -f`, in the first run where there is no table); the floor:
 *   `nft -f` of the same table as text, and `nft -j -f` of the same JSON, into an empty namespace;
 * - **one change, in the kernel**: a remote pod relabelled (it leaves one app's peer sets and joins
 *   another's), and a local pod starting (the window in which a new pod is not yet isolated, past
 *   the watch and the min sync period): from the store's apply to the delta written, with its phases;
 * - **memory**: heap and RSS after the store is filled, and after the plan and the table are built
 *   (`--expose-gc`), in a process of its own per size;
 * - **slope** (`--slope`): the same at other pod and policy counts, one child process each.
 *
 * Usage: `node --expose-gc bench/policy.ts [--pods 10000] [--policies 1000] [--local 100] [--runs 5]
 * [--slope] [--out bench/results/policy.json]`. Needs root (the namespace).
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { fullBatch } from '../src/backends/nftables/batch.ts';
import { formatBatch } from '../src/backends/nftables/text.ts';
import { NftWriter, systemNft } from '../src/backends/nftables/writer.ts';
import { PolicyRenderCache, renderPolicies } from '../src/backends/policy/render.ts';
import { planPolicies } from '../src/planner/policy.ts';
import { PolicyPlanCache } from '../src/planner/policycache.ts';
import { parseIP } from '../src/state/ip.ts';
import { PolicyStateStore } from '../src/state/policystore.ts';
import { BENCH_POLICY_NODE as NODE, policyCluster, type PolicyCluster } from './policy-cluster.ts';

const { values: args } = parseArgs({
  options: {
    pods: { type: 'string', default: '10000' },
    policies: { type: 'string', default: '1000' },
    local: { type: 'string', default: '100' },
    runs: { type: 'string', default: '5' },
    slope: { type: 'boolean', default: false },
    single: { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/policy.json' },
  },
});
const PODS = Number(args.pods);
const POLICIES = Number(args.policies);
const LOCAL = Number(args.local);
const RUNS = Number(args.runs);
const NODE_ADDRESSES = [parseIP('192.0.2.1')!, parseIP('2001:db8::1')!];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const mib = (bytes: number) => round(bytes / 2 ** 20);

async function ns(name: string, ...cmd: string[]) {
  return execa('ip', ['netns', 'exec', name, ...cmd], { timeout: 600_000 });
}

/** One size, in this process. */
async function single() {
  const gc = (globalThis as { gc?: () => void }).gc;
  const cluster: PolicyCluster = { pods: PODS, policies: POLICIES, local: LOCAL };
  const input = policyCluster(cluster);
  const benchPod = (j: number, labels?: Record<string, string>) => input.pod(j, labels);
  gc?.();
  const base = process.memoryUsage();
  const cold = { loadMs: [] as number[], planMs: [] as number[], renderMs: [] as number[], writeS: [] as number[], floorTextS: [] as number[], floorJsonS: [] as number[] };
  const relabel = { planMs: [] as number[], renderMs: [] as number[], writeMs: [] as number[], totalMs: [] as number[], commands: 0 };
  const start = { planMs: [] as number[], renderMs: [] as number[], writeMs: [] as number[], totalMs: [] as number[], commands: 0 };
  let sizes = { rules: 0, elements: 0, sets: 0, chains: 0, isolatedPods: 0, peerSets: 0 };
  let memory = { heapAfterStoreMiB: 0, heapAfterTableMiB: 0, rssMiB: 0 };
  const name = `kppolicy-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-policy-bench-'));
  await execa('ip', ['netns', 'add', name]);
  try {
    for (let run = 0; run < RUNS; run++) {
      await ns(name, 'nft', 'flush', 'ruleset');
      let t = performance.now();
      const store = new PolicyStateStore();
      for (const o of input.namespaces) store.applyNamespace(o);
      for (const o of input.pods) store.applyPod(o);
      for (const o of input.policies) store.applyNetworkPolicy(o);
      cold.loadMs.push(performance.now() - t);
      if (run === 0) {
        gc?.();
        memory.heapAfterStoreMiB = mib(process.memoryUsage().heapUsed - base.heapUsed);
      }
      const plans = new PolicyPlanCache();
      const renders = new PolicyRenderCache();
      const writer = new NftWriter(systemNft(['ip', 'netns', 'exec', name]), { verifyBudget: 1 });
      t = performance.now();
      const plan = planPolicies({ state: store, changes: store.takeChanges(), nodeName: NODE, nodeAddresses: NODE_ADDRESSES }, plans);
      cold.planMs.push(performance.now() - t);
      t = performance.now();
      const table = renderPolicies(plan, renders);
      cold.renderMs.push(performance.now() - t);
      t = performance.now();
      await writer.write(table, { verify: false });
      cold.writeS.push((performance.now() - t) / 1000);
      if (run === 0) {
        gc?.();
        memory = { ...memory, heapAfterTableMiB: mib(process.memoryUsage().heapUsed - base.heapUsed), rssMiB: mib(process.memoryUsage().rss) };
        let rules = 0;
        for (const c of table.chains) rules += c.rules.length;
        let elements = 0;
        for (const l of table.elements.values()) elements += l.length;
        sizes = {
          rules,
          elements,
          sets: table.sets.length,
          chains: table.chains.length,
          isolatedPods: plan.pods.filter((p) => p.ingress.isolated || p.egress.isolated).length,
          peerSets: plan.peerSets.size,
        };
        const batch = fullBatch(table).commands;
        writeFileSync(join(dir, 'table.nft'), formatBatch(batch, 'text'));
        writeFileSync(join(dir, 'table.json'), formatBatch(batch, 'json'));
      }
      // One change at a time, as the runner would sync it.
      const change = async (apply: () => void, into: typeof relabel) => {
        const t0 = performance.now();
        apply();
        const plan2 = planPolicies({ state: store, changes: store.takeChanges(), nodeName: NODE, nodeAddresses: NODE_ADDRESSES }, plans);
        const t1 = performance.now();
        const table2 = renderPolicies(plan2, renders);
        const t2 = performance.now();
        const r = await writer.write(table2, { verify: false });
        const t3 = performance.now();
        into.planMs.push(t1 - t0);
        into.renderMs.push(t2 - t1);
        into.writeMs.push(t3 - t2);
        into.totalMs.push(t3 - t0);
        into.commands = r.rules + r.elements;
      };
      // A remote pod of ns-00 (app a0) becomes an a1: a peer of ns-00's first policy, which isolates local pod 0.
      const remote = 100 * (run + 1);
      await change(() => store.applyPod(benchPod(remote, { app: 'a1', tier: String(remote % 3) })), relabel);
      await change(() => store.applyPod({ ...benchPod(PODS + run), spec: { ...(benchPod(PODS + run).spec as object), nodeName: NODE } }), start);
    }
    for (let run = 0; run < RUNS; run++) {
      await ns(name, 'nft', 'flush', 'ruleset');
      let t = performance.now();
      await ns(name, 'nft', '-f', join(dir, 'table.nft'));
      cold.floorTextS.push((performance.now() - t) / 1000);
      await ns(name, 'nft', 'flush', 'ruleset');
      t = performance.now();
      await ns(name, 'nft', '-j', '-f', join(dir, 'table.json'));
      cold.floorJsonS.push((performance.now() - t) / 1000);
    }
  } finally {
    await execa('ip', ['netns', 'del', name], { reject: false });
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (o: Record<string, number[] | number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? v : round(median(v), k.endsWith('S') ? 3 : 1)]));
  return { pods: PODS, policies: POLICIES, localPods: LOCAL, runs: RUNS, sizes, cold: med(cold), relabelRemotePod: med(relabel), localPodStarts: med(start), memory };
}

async function main() {
  if (args.single) {
    process.stdout.write(`${JSON.stringify(await single())}\n`);
    return;
  }
  const one = async (pods: number, policies: number) => {
    const r = await execa(
      process.execPath,
      ['--expose-gc', import.meta.filename, '--single', '--pods', String(pods), '--policies', String(policies), '--local', String(LOCAL), '--runs', String(RUNS)],
      { timeout: 3_600_000 },
    );
    const row = JSON.parse(r.stdout) as Record<string, unknown>;
    console.error(JSON.stringify(row));
    return row;
  };
  const main = await one(PODS, POLICIES);
  let slope: { byPods: unknown[]; byPolicies: unknown[] } | undefined;
  if (args.slope) {
    slope = { byPods: [], byPolicies: [] };
    for (const p of [2500, 5000, 20_000, 40_000, 150_000]) slope.byPods.push(await one(p, POLICIES));
    for (const q of [250, 500, 2000, 4000]) slope.byPolicies.push(await one(PODS, q));
  }
  const host = { cpus: (await import('node:os')).cpus().length, node: process.version, nft: (await execa('nft', ['--version'])).stdout.trim(), kernel: (await execa('uname', ['-r'])).stdout.trim() };
  mkdirSync(dirname(args.out), { recursive: true });
  writeFileSync(args.out, `${JSON.stringify({ date: new Date().toISOString(), host, main, ...(slope ? { slope } : {}) }, null, 2)}\n`);
  console.error(`written to ${args.out}`);
}

await main();
