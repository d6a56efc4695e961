/**
 * The deployment manifests, checked two ways with maintained libraries: against the Kubernetes
 * OpenAPI schemas (kubernetes-models' validators: types, required fields, formats), and for
 * fields the API does not know (a round trip through @kubernetes/client-node's typed models,
 * which keep only the fields each type has: a typo'd field would vanish). Then what kproxy needs
 * of them: host network, node-critical priority, every taint tolerated, the xtables lock, the node
 * name from the downward API, only NET_ADMIN/NET_RAW, read-only RBAC, and a config file kproxy
 * reads without a single report.
 */
import { dumpYaml, loadYaml } from '@kubernetes/client-node';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { interpretConfig } from '../../src/cli/config.ts';
import { parse } from 'yaml';

const DIR = join(import.meta.dirname, '../../manifests');
type Doc = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } } & Record<string, unknown>;

const docs: Doc[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(DIR, f), 'utf8')).map((d) => {
      expect(d.errors, f).toEqual([]);
      return d.toJS() as Doc;
    }),
  );
const byKind = (kind: string) => docs.filter((d) => d.kind === kind);
const one = <T = Doc>(kind: string) => byKind(kind)[0] as T;

const modelOf = (d: Doc): { validate(): void } => {
  switch (d.kind) {
    case 'DaemonSet':
      return new DaemonSet(d);
    case 'ServiceAccount':
      return new ServiceAccount(d);
    case 'ConfigMap':
      return new ConfigMap(d);
    case 'ClusterRole':
      return new ClusterRole(d);
    case 'ClusterRoleBinding':
      return new ClusterRoleBinding(d as never);
  }
  throw new Error(`no model for ${d.kind}`);
};

/** The object after client-node's typed models read and wrote it: unknown fields are dropped. */
const roundTrip = (doc: unknown): unknown => parse(dumpYaml(loadYaml(JSON.stringify(doc))));

/** Paths present in `a` but not in `b`. */
function missing(a: unknown, b: unknown, path = ''): string[] {
  if (Array.isArray(a)) return a.flatMap((v, i) => missing(v, Array.isArray(b) ? b[i] : undefined, `${path}[${i}]`));
  if (typeof a !== 'object' || a === null) return [];
  return Object.entries(a).flatMap(([k, v]) => {
    const other = typeof b === 'object' && b !== null ? (b as Record<string, unknown>)[k] : undefined;
    return other === undefined ? [`${path}.${k}`] : missing(v, other, `${path}.${k}`);
  });
}

describe('manifests/', () => {
  it('hold the expected objects', () => {
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
      'ClusterRole/kproxy',
      'ClusterRole/kproxy-network-policy',
      'ClusterRoleBinding/kproxy',
      'ClusterRoleBinding/kproxy-network-policy',
      'ConfigMap/kproxy',
      'DaemonSet/kproxy',
      'ServiceAccount/kproxy',
    ]);
  });

  it.each(docs.map((d) => [`${d.kind}/${d.metadata.name}`, d] as const))('%s is valid against the Kubernetes schema', (_name, doc) => {
    expect(() => modelOf(doc).validate()).not.toThrow();
  });

  it.each(docs.map((d) => [`${d.kind}/${d.metadata.name}`, d] as const))('%s has no field unknown to the API', (_name, doc) => {
    expect(missing(doc, roundTrip(doc))).toEqual([]);
  });

  it('the schema check does catch mistakes', () => {
    const bad = structuredClone(one('DaemonSet')) as { spec: { template: { spec: { containers: { image: unknown }[] } } } };
    bad.spec.template.spec.containers[0]!.image = 42;
    expect(() => modelOf(bad as never).validate()).toThrow(/image/);
    const typo = structuredClone(one('DaemonSet')) as { spec: { template: { spec: Record<string, unknown> } } };
    typo.spec.template.spec.hostNetworking = true;
    expect(missing(typo, roundTrip(typo))).toEqual(['.spec.template.spec.hostNetworking']);
  });

  it('DaemonSet: host network, node-critical, tolerates everything, least capabilities', () => {
    const ds = one<{ metadata: { namespace: string }; spec: { template: { spec: any } } }>('DaemonSet');
    const pod = ds.spec.template.spec;
    expect(ds.metadata.namespace).toBe('kube-system');
    expect(pod.hostNetwork).toBe(true);
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.serviceAccountName).toBe(one('ServiceAccount').metadata.name);
    const c = pod.containers[0];
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(c.command).toContain('--hostname-override=$(NODE_NAME)');
    expect(c.securityContext.privileged).toBeUndefined();
    expect(c.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    const lock = pod.volumes.find((v: any) => v.hostPath?.path === '/run/xtables.lock');
    expect(lock.hostPath.type).toBe('FileOrCreate');
    expect(c.volumeMounts).toContainEqual({ name: lock.name, mountPath: '/run/xtables.lock' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/livez', port: 10256 });
  });

  type Role = { metadata: { name: string }; rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] };
  const grantsOf = (name: string) =>
    byKind('ClusterRole')
      .map((d) => d as unknown as Role)
      .find((r) => r.metadata.name === name)!
      .rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g || 'core'}/${res}:${v}`))))
      .sort();

  it('RBAC for --network-policy: its own role, read-only, bound to the same ServiceAccount', () => {
    expect(grantsOf('kproxy-network-policy')).toEqual([
      'core/namespaces:list',
      'core/namespaces:watch',
      'core/pods:list',
      'core/pods:watch',
      'networking.k8s.io/networkpolicies:list',
      'networking.k8s.io/networkpolicies:watch',
    ]);
    const binding = byKind('ClusterRoleBinding').find((d) => d.metadata.name === 'kproxy-network-policy') as unknown as { roleRef: { name: string }; subjects: unknown[] };
    expect(binding.roleRef.name).toBe('kproxy-network-policy');
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'kproxy', namespace: 'kube-system' }]);
  });

  it('RBAC: read-only, on exactly what kproxy watches', () => {
    const grants = grantsOf('kproxy');
    expect(grants).toEqual([
      'core/nodes:list',
      'core/nodes:watch',
      'core/services:list',
      'core/services:watch',
      'discovery.k8s.io/endpointslices:list',
      'discovery.k8s.io/endpointslices:watch',
      'networking.k8s.io/servicecidrs:list',
      'networking.k8s.io/servicecidrs:watch',
    ]);
    const binding = byKind('ClusterRoleBinding').find((d) => d.metadata.name === 'kproxy') as unknown as { roleRef: { name: string }; subjects: unknown[] };
    expect(binding.roleRef.name).toBe('kproxy');
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'kproxy', namespace: 'kube-system' }]);
  });

  it('ConfigMap: config.conf is read by kproxy without a report, and points at the mounted kubeconfig', () => {
    const cm = one<{ data: Record<string, string> }>('ConfigMap');
    const { settings, reports } = interpretConfig(parse(cm.data['config.conf']!));
    expect(reports).toEqual([]);
    expect(settings.kubeconfig).toBe('/var/lib/kproxy/kubeconfig.conf');
    const kubeconfig = parse(cm.data['kubeconfig.conf']!) as { users: { user: { tokenFile: string } }[] };
    expect(kubeconfig.users[0]!.user.tokenFile).toBe('/var/run/secrets/kubernetes.io/serviceaccount/token');
  });
});
