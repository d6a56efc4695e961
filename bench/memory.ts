/**
 * Where `kproxy run`'s heap goes at N Services × E endpoints: the live heap after each stage of a
 * cold sync, each measured after two full collections, in one process. The objects are the bench
 * mix as the API server serialises them, with the metadata it adds (uid, resourceVersion,
 * creationTimestamp, one managedFields entry).
 *
 * Stages: the informer's copies (kproxy cuts them to identities, `keepIdentityOnly`; the stage
 * before the cut is the objects as listed) → the state store → the merged service-port states →
 * the plan and its cache → the rendered rules with the render cache (one mode per run, as a node
 * runs one) → the restore script or batch of a cold write (transient).
 *
 * Usage: `node --expose-gc bench/memory.ts [--services 1000,10000] [--endpoints 10]
 * [--out bench/results/memory.json]`; each size and mode runs in a child process of its own.
 * @module
 */
import { execa } from 'execa';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { iptablesBackend } from '../src/backends/iptables/backend.ts';
import { buildRestoreScript } from '../src/backends/iptables/restore.ts';
import { nftablesBackend } from '../src/backends/nftables/backend.ts';
import { fullBatch } from '../src/backends/nftables/batch.ts';
import { formatBatch } from '../src/backends/nftables/text.ts';
import { PlanCache, planProxy } from '../src/planner/plan.ts';
import { keepIdentityOnly } from '../src/sources/kube.ts';
import type { RawObject } from '../src/sources/objects.ts';
import { ProxyStateStore } from '../src/state/store.ts';
import { BENCH_CONFIG, BENCH_NODE, benchNode, benchService, benchSlice } from './cluster.ts';

const { values: args } = parseArgs({
  options: {
    services: { type: 'string', default: '1000,10000' },
    endpoints: { type: 'string', default: '10' },
    out: { type: 'string', default: 'bench/results/memory.json' },
    child: { type: 'string' },
  },
});

/** One stage: the live heap it added, MiB. */
export interface MemoryStage {
  readonly stage: string;
  readonly addedMiB: number;
}

function measure(n: number, e: number, mode: 'iptables' | 'nftables'): { stages: MemoryStage[]; heapMiB: number; rssMiB: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  const heap = () => {
    gc();
    gc();
    return process.memoryUsage().heapUsed / 2 ** 20;
  };
  const stages: MemoryStage[] = [];
  let last = heap();
  const step = (stage: string) => {
    const now = heap();
    stages.push({ stage, addedMiB: Math.round((now - last) * 10) / 10 });
    last = now;
  };
  const meta = (o: RawObject, i: number): RawObject => {
    const m = o.metadata as Record<string, unknown>;
    const fields = {
      'f:metadata': { 'f:labels': { '.': {}, 'f:kubernetes.io/service-name': {} } },
      'f:spec': { 'f:ports': { '.': {}, 'k:{"port":80,"protocol":"TCP"}': { '.': {}, 'f:name': {}, 'f:port': {} } } },
    };
    const managedFields = [{ manager: 'kube-controller-manager', operation: 'Update', apiVersion: o.apiVersion, time: '2026-11-29T21:00:00Z', fieldsType: 'FieldsV1', fieldsV1: fields }];
    // Through JSON, as the client receives them: no structure shared between objects.
    return JSON.parse(
      JSON.stringify({
        ...o,
        metadata: { ...m, uid: `3c1e2f0a-0000-4000-8000-${String(i).padStart(12, '0')}`, resourceVersion: String(100000 + i), creationTimestamp: '2026-11-29T21:00:00Z', managedFields },
      }),
    ) as RawObject;
  };
  const listed: RawObject[] = [];
  for (let i = 0; i < n; i++) listed.push(meta(benchService(i + 2), 2 * i), meta(benchSlice(i + 2, e), 2 * i + 1));
  step('objects as listed (the informer cache before the cut)');
  const store = new ProxyStateStore(BENCH_NODE);
  store.applyNode(benchNode());
  for (const o of listed) {
    if (o.kind === 'Service') store.applyService(o);
    else store.applyEndpointSlice(o);
  }
  step('state store (normalised Services and EndpointSlices)');
  for (const o of listed) keepIdentityOnly(o as never);
  step('informer cache cut to identities (keepIdentityOnly)');
  const states = store.servicePortStates();
  store.takeDirty();
  step('merged service-port states');
  const plans = new PlanCache();
  const plan = planProxy(states, store.node, BENCH_CONFIG, plans);
  step('plan and plan cache');
  const rules = mode === 'iptables' ? iptablesBackend(4, () => ({ conntrackTCPBeLiberal: false })).render(plan) : nftablesBackend(4, 'json').render(plan);
  step('rendered rules and render cache');
  // The cold write's input lives only inside this call, as in the writer.
  ((input: string) =>
    step(`cold write: its input while alive, plus what the ruleset memoises for it (transient: ${(input.length / 2 ** 20).toFixed(1)} MiB of ${mode === 'iptables' ? 'restore script' : 'JSON'})`))(
    'fixed' in rules ? buildRestoreScript(rules) : formatBatch(fullBatch(rules).commands, 'json'),
  );
  const heapMiB = heap();
  const rssMiB = process.memoryUsage().rss / 2 ** 20;
  (globalThis as { keep?: unknown }).keep = [listed, store, plans, plan, rules];
  return { stages, heapMiB: Math.round(heapMiB), rssMiB: Math.round(rssMiB) };
}

if (args.child) {
  const [n, e, mode] = args.child.split(':');
  process.stdout.write(JSON.stringify(measure(Number(n), Number(e), mode as 'iptables' | 'nftables')));
} else {
  const rows = [];
  for (const n of args.services.split(',').map(Number)) {
    for (const mode of ['iptables', 'nftables']) {
      const { stdout } = await execa(process.execPath, ['--expose-gc', '--disable-warning=ExperimentalWarning', import.meta.filename, '--child', `${n}:${args.endpoints}:${mode}`]);
      const r = JSON.parse(stdout) as ReturnType<typeof measure>;
      rows.push({ services: n, endpoints: Number(args.endpoints), mode, ...r });
      console.log(`${n} ${mode}: heap ${r.heapMiB} MiB`);
      for (const s of r.stages) console.log(`  ${String(s.addedMiB).padStart(7)} MiB  ${s.stage}`);
    }
  }
  mkdirSync(dirname(args.out), { recursive: true });
  writeFileSync(args.out, `${JSON.stringify({ date: new Date().toISOString(), node: process.versions.node, rows }, null, 2)}\n`);
}
