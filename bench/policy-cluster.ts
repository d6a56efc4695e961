/**
 * The synthetic cluster of the NetworkPolicy benchmarks (policy.ts, policy-run.ts; bench/README.md,
 * "NetworkPolicy"), deterministic: 100 namespaces (`ns-00`…, labels `team=t<i % 10>`), P pods
 * spread over them and over 100 nodes (the first L on `node-1`, the benchmark's node), each dual
 * stack with labels `app=a<j % 10>` and `tier=<j % 3>` and a named port `http` (8080, or 9090 for
 * one pod in 7), as the API server serialises them. Q policies, Q / 100 per namespace, rotate
 * through five shapes: ingress from an app of the namespace on port 8080; ingress from a tier in
 * the namespaces of a team (both selectors) on the named port; ingress from an ipBlock with an
 * except on a port range; egress to a team's namespaces on 53/UDP and the named port; and a
 * default deny of both directions for one app.
 * @module
 */
import type { RawObject } from '../src/sources/objects.ts';

/** The benchmark's node. */
export const BENCH_POLICY_NODE = 'node-1';
const NAMESPACES = 100;

/** A cluster's size: pods, policies, and pods on the benchmark's node. */
export interface PolicyCluster {
  readonly pods: number;
  readonly policies: number;
  readonly local: number;
}

export const nsOf = (j: number) => `ns-${String(j % NAMESPACES).padStart(2, '0')}`;
export const v4 = (j: number) => `10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255}`;
const v6 = (j: number) => `fd00:10:64::${(j >>> 16).toString(16)}:${(j & 0xffff).toString(16)}`;

/** Pod j of the synthetic cluster, as the API server serialises one (the fields policy reads, and a few it does not). */
function benchPod(c: PolicyCluster, j: number, labels: Record<string, string> = { app: `a${j % 10}`, tier: String(j % 3) }): RawObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: nsOf(j), name: `pod-${j}`, uid: `uid-${j}`, resourceVersion: String(1000 + j), labels },
    spec: {
      nodeName: j < c.local ? BENCH_POLICY_NODE : `node-${2 + (j % 99)}`,
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

/** The objects of a cluster of that size, and its pod maker (pod j with other labels: a relabel; j ≥ pods: a new pod). */
export function policyCluster(c: PolicyCluster): { namespaces: RawObject[]; pods: RawObject[]; policies: RawObject[]; pod: (j: number, labels?: Record<string, string>) => RawObject } {
  const namespaces = Array.from({ length: NAMESPACES }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: nsOf(i), labels: { 'kubernetes.io/metadata.name': nsOf(i), team: `t${i % 10}` } },
  }));
  const pods = Array.from({ length: c.pods }, (_, j) => benchPod(c, j));
  const policies = Array.from({ length: c.policies }, (_, i) => benchPolicy(i % NAMESPACES, Math.floor(i / NAMESPACES)));
  return { namespaces, pods, policies, pod: (j, labels) => benchPod(c, j, labels) };
}
