/**
 * Where iptables mode's cold render goes: the whole cold plan + render at N Services × 10
 * endpoints, beside the SHA-256 chain names alone (one `KUBE-SVC-`/`-SVL-`/`-EXT-`/`-FW-` suffix
 * per service port and one `KUBE-SEP-` per endpoint, upstream's `portProtoHash` and
 * `servicePortEndpointChainName`, which a drop-in replacement must write identically). Medians of
 * `--runs`, a garbage collection before each.
 *
 * Usage: `node --expose-gc bench/names.ts [--sizes 1000,10000] [--runs 9] [--out bench/results/names.json]`.
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { endpointChainName, serviceChainNames } from '../src/backends/iptables/names.ts';
import { renderIptables } from '../src/backends/iptables/render.ts';
import { benchPlan, benchStore } from './cluster.ts';

const { values: args } = parseArgs({
  options: { sizes: { type: 'string', default: '1000,10000' }, runs: { type: 'string', default: '9' }, out: { type: 'string', default: 'bench/results/names.json' } },
});
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const time = (fn: () => unknown): number => {
  gc();
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
};

const rows = [];
for (const n of args.sizes.split(',').map(Number)) {
  const store = benchStore(n, 10);
  const plan = benchPlan(store);
  let hashes = 0;
  for (const sp of plan.servicePorts) hashes += 1 + sp.reachableEndpoints.length;
  const runs = { plan: [] as number[], render: [] as number[], names: [] as number[] };
  for (let i = 0; i < Number(args.runs); i++) {
    runs.plan.push(time(() => benchPlan(store)));
    runs.render.push(time(() => renderIptables(plan, { conntrackTCPBeLiberal: false })));
    runs.names.push(
      time(() => {
        for (const sp of plan.servicePorts) {
          serviceChainNames(sp.name, sp.protocol);
          for (const ep of sp.reachableEndpoints) endpointChainName(sp.name, sp.protocol, ep.hostPort);
        }
      }),
    );
  }
  const row = { services: n, hashes, planMs: median(runs.plan), renderMs: median(runs.render), namesMs: median(runs.names) };
  rows.push(row);
  console.log(JSON.stringify(row));
}
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, runs: Number(args.runs), rows }, null, 2)}\n`);
