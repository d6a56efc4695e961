/**
 * Upstream's NetworkPolicy e2e matrix (test/e2e/network/netpol) in network namespaces: namespaces
 * x, y, z with pods a, b, c each, serving TCP and UDP on 80 and 81 (and UDP 53, for DNS), both
 * families. Pods a and b run on node-1, where kproxy enforces; pods c on node-2, the remote node
 * (their ingress would be another node's kproxy's to enforce, so here only the egress of local
 * sources applies to them). A case's expected reachability is what the model predicts: the
 * planner's plan of node-1 and {@link connectionVerdict}; a pod always reaches itself (its own
 * loopback path, as upstream's `AllowLoopback`).
 */
import { planPolicies } from '../../../src/planner/policy.ts';
import { connectionVerdict } from '../../../src/planner/policyexplain.ts';
import { parseIP } from '../../../src/state/ip.ts';
import type { Protocol } from '../../../src/state/model.ts';
import { PolicyStateStore } from '../../../src/state/policystore.ts';
import { namespace, node, pod } from '../../support/objects.ts';
import { NODE1_IP, NODE1_IP6, NODE2_IP, NODE2_IP6, type PodSpec, type TestCluster } from './cluster.ts';

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const PODS = ['a', 'b', 'c'] as const;
/** `x/a` … `z/c`. */
export type MatrixPod = `${(typeof NAMESPACES)[number]}/${(typeof PODS)[number]}`;
export const ALL: readonly MatrixPod[] = NAMESPACES.flatMap((n) => PODS.map((p) => `${n}/${p}` as MatrixPod));

/** What the matrix probes: TCP and UDP on 80 and 81. */
export const PORTS: readonly (readonly ['tcp' | 'udp', number])[] = [
  ['tcp', 80],
  ['tcp', 81],
  ['udp', 80],
  ['udp', 81],
];

const nodeOf = (p: MatrixPod): 'node-1' | 'node-2' => (p.endsWith('/c') ? 'node-2' : 'node-1');
/** 10.244.1.1x (x), .2x (y), .3x (z); the last digit by pod; node-2's pods in 10.244.2.0/24. */
export function ipOf(p: MatrixPod, family: 4 | 6 = 4): string {
  const host = 10 * (NAMESPACES.indexOf(p[0] as never) + 1) + PODS.indexOf(p[2] as never);
  const net = nodeOf(p) === 'node-1' ? 1 : 2;
  return family === 6 ? `fd00:10:244:${net}::${host}` : `10.244.${net}.${host}`;
}
/** A pod's netns name: `x-a`. */
export const nsName = (p: MatrixPod) => p.replace('/', '-');

/** The netns pods of the matrix. */
export function matrixPods(): PodSpec[] {
  return ALL.map((p) => ({ name: nsName(p), ip: ipOf(p), ip6: ipOf(p, 6), node: nodeOf(p), tcp: [80, 81], udp: [53, 80, 81] }));
}

/** The API objects of the matrix: its namespaces (label `ns`), pods (label `pod`, upstream's port names) and the two Nodes. */
export function matrixObjects(): Record<string, unknown>[] {
  return [
    node('node-1', undefined, [NODE1_IP, NODE1_IP6]),
    node('node-2', undefined, [NODE2_IP, NODE2_IP6]),
    ...NAMESPACES.map((n) => namespace(n, { ns: n })),
    ...ALL.map((p) =>
      pod(p, {
        ips: [ipOf(p), ipOf(p, 6)],
        node: nodeOf(p),
        labels: { pod: p[2]! },
        ports: [
          { name: 'serve-80-tcp', port: 80 },
          { name: 'serve-81-tcp', port: 81 },
          { name: 'serve-80-udp', port: 80, protocol: 'UDP' },
          { name: 'serve-81-udp', port: 81, protocol: 'UDP' },
          { name: 'dns', port: 53, protocol: 'UDP' },
        ],
      }),
    ),
  ];
}

/**
 * The model's matrix for `objects` (matrix objects plus policies): per source and target, per
 * port, whether a new connection gets through.
 * @throws Error when a policy does not load cleanly (a case must test what it says)
 */
export function modelMatrix(objects: readonly Record<string, unknown>[], family: 4 | 6): Matrix {
  const s = new PolicyStateStore();
  for (const o of objects) {
    const r = o.kind === 'Pod' ? s.applyPod(o) : o.kind === 'Namespace' ? s.applyNamespace(o) : o.kind === 'NetworkPolicy' ? s.applyNetworkPolicy(o) : { issues: [] };
    if (r.issues.length > 0) throw new Error(`${JSON.stringify(o).slice(0, 200)}: ${r.issues[0]!.message}`);
  }
  const plan = planPolicies({ state: s, nodeName: 'node-1', nodeAddresses: [parseIP(NODE1_IP)!, parseIP(NODE1_IP6)!] });
  const m: Matrix = new Map();
  for (const from of ALL)
    for (const to of ALL)
      for (const [proto, port] of PORTS) {
        const ok = from === to || connectionVerdict(plan, ipOf(from, family), ipOf(to, family), proto.toUpperCase() as Protocol, port).allowed;
        m.set(cell(from, to, proto, port), ok);
      }
  return m;
}

/** Reachability by `from>to proto/port`. */
export type Matrix = Map<string, boolean>;
const cell = (from: MatrixPod, to: MatrixPod, proto: string, port: number) => `${from}>${to} ${proto}/${port}`;

/**
 * The matrix from real packets: one fresh connection from every pod to every pod on every port, at once.
 * A connection counts as through when the target pod itself answered.
 */
export async function packetMatrix(c: TestCluster, family: 4 | 6, timeoutMs = 800): Promise<Matrix> {
  const targets = ALL.flatMap((to) => PORTS.map(([proto, port]) => [proto, ipOf(to, family), port] as const));
  const got = await c.probeMatrix(ALL.map(nsName), targets, timeoutMs);
  const m: Matrix = new Map();
  for (const from of ALL) {
    const answers = got.get(nsName(from))!;
    let i = 0;
    for (const to of ALL) for (const [proto, port] of PORTS) m.set(cell(from, to, proto, port), answers[i++] === nsName(to));
  }
  return m;
}

/**
 * The matrix as text, a block per port: rows are sources, columns targets, `X` through, `.` not;
 * with `want`, a cell that differs shows `!` (got through, should not) or `?` (should, did not).
 */
export function showMatrix(got: Matrix, want?: Matrix): string {
  const blocks: string[] = [];
  for (const [proto, port] of PORTS) {
    const lines = [`${proto}/${port}`.padEnd(8) + ALL.map((p) => ` ${p.replace('/', '')}`).join('')];
    for (const from of ALL) {
      const row = ALL.map((to) => {
        const k = cell(from, to, proto, port);
        const g = got.get(k);
        const w = want?.get(k);
        return w === undefined || w === g ? (g ? ' X ' : ' . ') : g ? ' ! ' : ' ? ';
      });
      lines.push(`${from.replace('/', '')}      ${row.join('')}`);
    }
    blocks.push(lines.join('\n'));
  }
  return blocks.join('\n\n');
}

/** Whether the matrix denies anything. */
export const deniesSome = (m: Matrix) => [...m.values()].some((v) => !v);
