/**
 * The NetworkPolicy pipeline at scale (bench/README.md, "NetworkPolicy"): P pods, Q policies, L of
 * the pods on this node, through the real policy store, planner, renderer and nft writer, into a
 * network namespace made here (deleted when it ends).
 *
 * The synthetic cluster (deterministic): 100 namespaces (`ns-00`…, labels `team=t<i % 10>`), the
 * pods spread over them and over 100 nodes (the first L pods on `node-1`, this node), each dual
 * stack with labels `app=a<j % 10>` and `tier=<j % 3>` and a named port `http` (8080, or 9090 for
 * one pod in 7). The policies, Q / 100 per namespace, rotate through five shapes: ingress from an
 * app of the namespace on port 8080; ingress from a tier in the namespaces of a team (both
 * selectors) on the named port; ingress from an ipBlock with an except on a port range; egress to
 * a team's namespaces on 53/UDP and the named port; and a default deny of both directions for one app.
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
import { PolicyPlanCache, planPolicies } from '../src/planner/policy.ts';
import type { RawObject } from '../src/sources/objects.ts';
import { parseIP } from '../src/state/ip.ts';
import { PolicyStateStore } from '../src/state/policystore.ts';

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
const NAMESPACES = 100;
const NODE = 'node-1';
const NODE_ADDRESSES = [parseIP('192.0.2.1')!, parseIP('2001:db8::1')!];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const mib = (bytes: number) => round(bytes / 2 ** 20);

const nsOf = (j: number) => `ns-${String(j % NAMESPACES).padStart(2, '0')}`;
const v4 = (j: number) => `10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255}`;
const v6 = (j: number) => `fd00:10:64::${(j >>> 16).toString(16)}:${(j & 0xffff).toString(16)}`;

/** Pod j of the synthetic cluster, as the API server serialises one (the fields policy reads, and a few it does not). */
export function benchPod(j: number, labels: Record<string, string> = { app: `a${j % 10}`, tier: String(j % 3) }): RawObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: nsOf(j), name: `pod-${j}`, uid: `uid-${j}`, resourceVersion: String(1000 + j), labels },
    spec: {
      nodeName: j < LOCAL ? NODE : `node-${2 + (j % 99)}`,
      containers: [{ name: 'app', image: 'registry.k8s.io/e2e-test-images/agnhost:2.53', ports: [{ name: 'http', containerPort: j % 7 === 0 ? 9090 : 8080, protocol: 'TCP' }] }],
    },
    status: { phase: 'Running', podIP: v4(j), podIPs: [{ ip: v4(j) }, { ip: v6(j) }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

/** Policy k of namespace n (see the module comment for the five shapes). */
function benchPolicy(n: number, k: number): RawObject {
  const ns = nsOf(n);
  const app = (x: number) => ({ matchLabels: { app: `a${x % 10}` } });
  const shape = k % 5;
  const spec =
    shape === 0
      ? { podSelector: app(k), ingress: [{ from: [{ podSelector: app(k + 1) }], ports: [{ port: 8080 }] }] }
      : shape === 1
        ? {
            podSelector: app(k),
            ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: `t${(n + k) % 10}` } }, podSelector: { matchLabels: { tier: String(k % 3) } } }], ports: [{ port: 'http' }] }],
          }
        : shape === 2
          ? { podSelector: app(k), ingress: [{ from: [{ ipBlock: { cidr: '10.64.0.0/10', except: [`10.64.${k % 200}.0/24`] } }], ports: [{ port: 8000, endPort: 8100 }] }] }
          : shape === 3
            ? {
                podSelector: app(k),
                policyTypes: ['Egress'],
                egress: [{ to: [{ namespaceSelector: { matchLabels: { team: `t${k % 10}` } } }], ports: [{ protocol: 'UDP', port: 53 }, { port: 'http' }] }],
              }
            : { podSelector: app(k + 5), policyTypes: ['Ingress', 'Egress'] };
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: ns, name: `policy-${k}`, uid: `p-${n}-${k}` }, spec };
}

function objects(): { namespaces: RawObject[]; pods: RawObject[]; policies: RawObject[] } {
  const namespaces = Array.from({ length: NAMESPACES }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: nsOf(i), labels: { 'kubernetes.io/metadata.name': nsOf(i), team: `t${i % 10}` } },
  }));
  const pods = Array.from({ length: PODS }, (_, j) => benchPod(j));
  const policies = Array.from({ length: POLICIES }, (_, i) => benchPolicy(i % NAMESPACES, Math.floor(i / NAMESPACES)));
  return { namespaces, pods, policies };
}

async function ns(name: string, ...cmd: string[]) {
  return execa('ip', ['netns', 'exec', name, ...cmd], { timeout: 600_000 });
}

/** One size, in this process. */
async function single() {
  const gc = (globalThis as { gc?: () => void }).gc;
  const input = objects();
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
      const remote = NAMESPACES * (run + 1);
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
