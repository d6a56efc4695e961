/**
 * bench/README.md's "NetworkPolicy" tables, from bench/results/policy.json (policy.ts) and
 * bench/results/policy-run.json (policy-run.ts, when present). Called by report.ts.
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface PolicyRow {
  pods: number;
  policies: number;
  localPods: number;
  runs: number;
  sizes: { rules: number; elements: number; sets: number; chains: number; isolatedPods: number; peerSets: number };
  cold: { loadMs: number; planMs: number; renderMs: number; writeS: number; floorTextS: number; floorJsonS: number };
  relabelRemotePod: { planMs: number; renderMs: number; writeMs: number; totalMs: number; commands: number };
  localPodStarts: { planMs: number; renderMs: number; writeMs: number; totalMs: number; commands: number };
  memory: { heapAfterStoreMiB: number; heapAfterTableMiB: number; rssMiB: number };
}
interface PolicyRun {
  networkPolicy: boolean;
  coldSeconds: number;
  coldCpuSeconds: number;
  rssMiB: number;
  idleCpuShare: number;
  relabelMedianSeconds?: number;
  newPodWindowMedianSeconds?: number;
  newPodWindowMaxSeconds?: number;
  churnCpuShare?: number;
  churnRssMiB?: number;
}

const ms = (x: number) => `${x.toFixed(1)} ms`;
const s = (x: number) => `${x.toFixed(3)} s`;
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const k = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));

function row(r: PolicyRow): string {
  return `| ${k(r.pods)} | ${k(r.policies)} | ${r.sizes.rules} / ${r.sizes.elements.toLocaleString('en')} | ${ms(r.cold.planMs)} | ${ms(r.cold.renderMs)} | ${s(r.cold.writeS)} | ${s(r.cold.floorJsonS)} / ${s(r.cold.floorTextS)} | ${ms(r.relabelRemotePod.totalMs)} (${r.relabelRemotePod.commands}) | ${ms(r.localPodStarts.totalMs)} | ${r.memory.heapAfterStoreMiB} / ${r.memory.heapAfterTableMiB} MiB | ${Math.round(r.memory.rssMiB)} MiB |`;
}

/** The tables, as markdown lines. */
export function policyTables(dir: string): string[] {
  const d = JSON.parse(readFileSync(join(dir, 'results/policy.json'), 'utf8')) as {
    date: string;
    host: { nft: string; kernel: string; cpus: number };
    main: PolicyRow;
    slope?: { byPods: PolicyRow[]; byPolicies: PolicyRow[] };
  };
  const out = [
    `\`bench/policy.ts\` (${d.date.slice(0, 10)}, ${d.host.nft}, kernel ${d.host.kernel}, ${d.host.cpus} CPUs; ${d.main.localPods} pods on this node; medians of ${d.main.runs} runs). Cold: the store, plan, render and write of the whole table by kproxy's writer, beside nft alone loading the same table; a change: from the store's apply to the nft transaction returned (nft commands in it).`,
    '',
    '| pods | policies | table: rules / elements | cold plan | cold render | cold write (kproxy) | nft alone: JSON / text | remote pod relabelled → kernel | local pod starts → kernel | heap: store / + plan and table | RSS |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    row(d.main),
  ];
  if (d.slope) {
    out.push('', 'The slope: pods at 1k policies, then policies at 10k pods.', '');
    out.push(out[2]!, out[3]!);
    for (const r of [...d.slope.byPods, d.main].sort((a, b) => a.pods - b.pods)) out.push(row(r));
    for (const r of [...d.slope.byPolicies].sort((a, b) => a.policies - b.policies)) out.push(row(r));
  }
  const runFile = join(dir, 'results/policy-run.json');
  if (existsSync(runFile)) {
    const r = JSON.parse(readFileSync(runFile, 'utf8')) as { date: string; host: { apiServer: string }; size: { pods: number; policies: number; local: number }; runs: PolicyRun[] };
    out.push(
      '',
      `\`bench/policy-run.ts\` (${r.date.slice(0, 10)}, kube-apiserver ${r.host.apiServer}, ${k(r.size.pods)} pods, ${k(r.size.policies)} NetworkPolicies, ${r.size.local} pods on this node; \`kproxy run --proxy-mode nftables\`, the defaults' 1 s min sync period):`,
      '',
      '| `kproxy run` | cold start (CPU) | RSS | idle CPU | relabel through the API → table | new pod: address → isolated (median, max) | one relabel a second: CPU, RSS |',
      '|---|---|---|---|---|---|---|',
    );
    for (const x of r.runs) {
      out.push(
        `| ${x.networkPolicy ? 'with' : 'without'} \`--network-policy\` | ${s(x.coldSeconds)} (${x.coldCpuSeconds.toFixed(2)} s) | ${x.rssMiB} MiB | ${pct(x.idleCpuShare)} | ${x.relabelMedianSeconds === undefined ? '-' : s(x.relabelMedianSeconds)} | ${x.newPodWindowMedianSeconds === undefined ? '-' : `${s(x.newPodWindowMedianSeconds)}, ${s(x.newPodWindowMaxSeconds!)}`} | ${x.churnCpuShare === undefined ? '-' : `${pct(x.churnCpuShare)}, ${x.churnRssMiB} MiB`} |`,
      );
    }
  }
  return out;
}
