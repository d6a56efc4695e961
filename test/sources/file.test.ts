import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readObjectFiles, SourceError } from '../../src/sources/file.ts';

const SHARED = join(import.meta.dirname, '../../examples');

const made: string[] = [];
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

function dir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'kproxy-src-'));
  made.push(d);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

describe('readObjectFiles', () => {
  it('reads the fixture List (kubectl get svc,endpointslices -A -o yaml) and NodeList', async () => {
    const r = await readObjectFiles([join(SHARED, 'cluster.yaml'), join(SHARED, 'nodes.yaml')]);
    expect(r.services).toHaveLength(9);
    expect(r.endpointSlices).toHaveLength(8);
    expect(r.nodes.map((n) => n.metadata?.name)).toEqual(['node-1', 'node-2']);
    expect(r.warnings).toEqual([]);
  });

  it('reads the JSON form of the same list identically', async () => {
    const yaml = await readObjectFiles([join(SHARED, 'cluster.yaml')]);
    const json = await readObjectFiles([join(import.meta.dirname, '../fixtures/cluster.json')]);
    expect(json.services.map((s) => s.metadata?.name)).toEqual(yaml.services.map((s) => s.metadata?.name));
    expect(json.endpointSlices).toHaveLength(yaml.endpointSlices.length);
  });

  it('reads a directory, multi-document YAML and typed lists whose items have no kind', async () => {
    const d = dir({
      'a.yaml': 'apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n',
      'b.json': JSON.stringify({ kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1', items: [{ metadata: { name: 's' } }] }),
      'notes.txt': 'ignored',
    });
    const r = await readObjectFiles([d]);
    expect(r.services).toHaveLength(1);
    expect(r.endpointSlices).toHaveLength(1);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]!.message).toContain('ConfigMap');
  });

  it('reads NetworkPolicies, Pods and Namespaces as kubectl get networkpolicies,pods,namespaces -A -o yaml writes them', async () => {
    const d = dir({
      'policy.yaml': [
        'apiVersion: v1\nkind: List\nitems:',
        '- {apiVersion: v1, kind: Namespace, metadata: {name: x}}',
        '- {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}}',
        '- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: x}}',
        '---',
        'apiVersion: v1\nkind: PodList\nitems:\n- {metadata: {name: b, namespace: x}}',
      ].join('\n'),
    });
    const r = await readObjectFiles([d]);
    expect([r.namespaces?.length, r.pods?.length, r.networkPolicies?.length]).toEqual([1, 2, 1]);
    expect(r.warnings).toEqual([]);
  });

  it('throws SourceError naming the file for missing paths and syntax errors', async () => {
    await expect(readObjectFiles(['/nonexistent.yaml'])).rejects.toThrow(SourceError);
    const d = dir({ 'bad.yaml': 'kind: Service\n  metadata: [\n', 'bad.json': '{"kind":' });
    await expect(readObjectFiles([join(d, 'bad.yaml')])).rejects.toThrow(/bad\.yaml: invalid YAML/);
    await expect(readObjectFiles([join(d, 'bad.json')])).rejects.toThrow(/bad\.json: invalid JSON/);
  });

  it('treats kinds named like JavaScript built-ins as unknown kinds: warned about, never a crash, nothing else lost', async () => {
    const builtins = ['constructor', 'valueOf', 'toString', 'hasOwnProperty', '__proto__', 'isPrototypeOf'];
    const d = dir({
      'lists.json': JSON.stringify({ kind: 'List', items: builtins.map((kind) => ({ kind, items: [{ metadata: { name: 'x' } }] })) }),
      'top.yaml': builtins.map((kind) => `kind: ${kind}\nmetadata: {name: y}\n`).join('---\n') + '---\napiVersion: v1\nkind: Service\nmetadata: {name: kept}\n',
      'listitem.json': JSON.stringify({ kind: 'constructor', items: [{ metadata: { name: 'z' } }] }),
    });
    const r = await readObjectFiles([d]);
    expect(r.services.map((s) => s.metadata?.name)).toEqual(['kept']);
    expect(r.endpointSlices).toEqual([]);
    expect(r.nodes).toEqual([]);
    // One warning per object with a built-in's kind, each naming it.
    expect(r.warnings).toHaveLength(2 * builtins.length + 1);
    for (const kind of builtins) expect(r.warnings.some((w) => w.message.includes(`kind "${kind}"`))).toBe(true);
  });

  it('names the file for YAML that only fails when aliases are resolved', async () => {
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x, x]',
      ...Array.from(
        { length: 8 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(', ')}]`,
      ),
    ].join('\n');
    const d = dir({ 'bomb.yaml': `${bomb}\n`, 'alias.yaml': 'kind: Service\nmetadata: *nowhere\n' });
    await expect(readObjectFiles([join(d, 'bomb.yaml')])).rejects.toThrow(/bomb\.yaml: invalid YAML: .*alias/i);
    await expect(readObjectFiles([join(d, 'alias.yaml')])).rejects.toThrow(/alias\.yaml: invalid YAML/);
  });
});
