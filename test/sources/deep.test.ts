/**
 * Issue 24: a value nested deep loses nothing but the object holding it. Every `--from` format at
 * 100, 1,000, 10,000 and 100,000 levels, each file beside a valid neighbour: the files load, the
 * deep Service is skipped with a warning naming the file, the document or item and the field, and
 * every neighbour (with its endpoint) is in the store. The same bound for any parsed value
 * ({@link findTooDeep}, compared with a plain recursive depth by fast-check). test/e2e/deep.test.ts
 * sends traffic through the rules of the same files.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadFiles } from '../../src/cli/node.ts';
import { parseDocuments, readObjectFiles } from '../../src/sources/file.ts';
import { findTooDeep, formatPath, MAX_NESTING_DEPTH } from '../../src/sources/objects.ts';
import { normaliseEndpointSlice } from '../../src/state/endpointslice.ts';
import { normaliseNode } from '../../src/state/node.ts';
import { normaliseService } from '../../src/state/service.ts';
import { DEPTHS, NEIGHBOUR_POD, writeDeepFiles } from '../support/deep.ts';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';

const root = mkdtempSync(join(tmpdir(), 'kproxy-deep-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A logger that keeps its lines. */
function capture() {
  const lines: { msg: string; origin?: string; field?: string; file?: string }[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
  return { log, lines };
}

/** Nesting depth by plain recursion: the reference the walk is checked against (shallow values only). */
function depthOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + Math.max(0, ...children.map(depthOf));
}

describe.each(DEPTHS)('a value nested %i levels deep', (depth) => {
  const { dir, files } = writeDeepFiles(root, depth);

  it('skips the object holding it, naming file, document or item and field, and keeps every neighbour', async () => {
    const { log, lines } = capture();
    const store = await loadFiles([dir], 'node-1', log);
    const ports = new Map(store.servicePortStates().map((s) => [s.servicePort.serviceKey, s]));
    for (const f of files) {
      expect(ports.has(f.deep), `${f.name}: ${f.deep} must be skipped`).toBe(false);
      const warning = lines.find((l) => l.origin === `${join(dir, f.name)}, ${f.at}`);
      expect(warning?.msg, `${f.name}: no warning for ${f.at} in ${JSON.stringify(lines.map((l) => l.msg))}`).toContain(`skipping Service ${f.deep}`);
      expect(warning!.field!.startsWith(f.field), `${f.name}: ${warning!.field}`).toBe(true);
      expect(warning!.msg).toContain(`nested deeper than ${MAX_NESTING_DEPTH} levels`);
      if (f.neighbourIP === undefined) continue;
      const good = [...ports.values()].find((s) => s.servicePort.clusterIPs[0]?.text === f.neighbourIP);
      expect(
        good?.endpoints.map((e) => e.ip.text),
        `${f.name}: neighbour ${f.neighbourIP}`,
      ).toEqual([NEIGHBOUR_POD.ip]);
    }
    expect(store.serviceCount).toBe(files.filter((f) => f.neighbourIP !== undefined).length);
  });

  it('a file whose only object is the deep one gives zero objects and no error', async () => {
    const alone = files.find((f) => f.neighbourIP === undefined)!;
    const r = await readObjectFiles([join(dir, alone.name)]);
    expect(r.services).toHaveLength(1);
    const { log, lines } = capture();
    const store = await loadFiles([join(dir, alone.name)], 'node-1', log);
    expect(store.serviceCount).toBe(0);
    expect(lines.filter((l) => l.msg.startsWith('skipping'))).toHaveLength(1);
  });
});

describe('nesting bound', () => {
  it('findTooDeep agrees with a recursive depth on arbitrary JSON values, and names a path that exists', () => {
    fc.assert(
      fc.property(fc.jsonValue({ depthSize: 'large', maxDepth: 12 }), fc.integer({ min: 1, max: 8 }), (value, limit) => {
        const path = findTooDeep(value, limit);
        expect(path !== undefined).toBe(depthOf(value) > limit);
        if (path === undefined) return;
        // The path leads to a collection at level limit + 1.
        let at: unknown = value;
        for (const step of path) at = (at as Record<string | number, unknown>)[step];
        expect(typeof at === 'object' && at !== null).toBe(true);
        expect(path).toHaveLength(limit);
      }),
      { numRuns: 300 },
    );
  });

  it('treats a cycle as too deep instead of looping', () => {
    const a: unknown[] = [];
    a.push(a);
    expect(findTooDeep({ x: a })).toHaveLength(MAX_NESTING_DEPTH);
  });

  it('prints paths short and quoted where keys are not names', () => {
    expect(formatPath(['metadata', 'annotations', 'a\nb', 0])).toBe('metadata.annotations["a\\nb"][0]');
    expect(formatPath(Array.from({ length: 20 }, () => 0))).toBe('[0][0][0][0][0][0][0][0]…');
  });

  it('refuses a deep Service, EndpointSlice or Node by name, before any field reaches code that recurses', () => {
    const deep = JSON.parse('['.repeat(100_000) + ']'.repeat(100_000)) as unknown;
    const svc = service('demo/a', { clusterIP: '10.96.0.1', ports: [{ port: 80 }] }) as { metadata: Record<string, unknown> };
    svc.metadata.annotations = { x: deep };
    const r = normaliseService(svc);
    expect(r).toMatchObject({ status: 'invalid', key: 'demo/a', issue: { field: expect.stringMatching(/^metadata\.annotations\.x\[0\]/) as unknown } });
    const slice = endpointSlice('demo/a', [{ port: 80 }], [endpoint('10.244.1.1')]) as { endpoints: Record<string, unknown>[] };
    slice.endpoints[0]!.hints = deep;
    expect(normaliseEndpointSlice(slice)).toMatchObject({ status: 'invalid', key: 'demo/a-abcde' });
    const n = node('node-1', 'zone-a') as { spec?: Record<string, unknown> };
    n.spec = { taints: deep };
    expect(normaliseNode(n)).toMatchObject({ issue: { field: expect.stringMatching(/^spec\.taints\[0\]/) as unknown } });
    // A deep value where a name belongs is reported, not printed (JSON.stringify and String would overflow).
    const named = service('demo/b', { clusterIP: '10.96.0.2', ports: [{ port: 80 }] }) as { metadata: Record<string, unknown> };
    named.metadata.name = deep;
    expect(normaliseService(named)).toMatchObject({ status: 'invalid', issue: { field: 'metadata.name' } });
  });

  it('keeps YAML anchors and aliases outside the pruned part, and parses what is not deep unchanged', () => {
    const text = 'a: &x {k: v}\nb: *x\nc: [[[[1]]]]\n---\n- - - y\n';
    expect(parseDocuments('t.yaml', text)).toEqual([{ a: { k: 'v' }, b: { k: 'v' }, c: [[[[1]]]] }, [[['y']]]]);
  });

  it('still names the line of a YAML syntax error', () => {
    expect(() => parseDocuments('t.yaml', 'a: 1\nb: [\n')).toThrow(/t\.yaml: invalid YAML: .* at line \d+, column \d+/);
  });
});
