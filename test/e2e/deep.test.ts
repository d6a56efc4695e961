/**
 * Issue 24 with real packets, in both modes: `kproxy sync --from` a folder of hostile files (every
 * format, one value nested 100 to 100,000 levels deep in each, test/support/deep.ts) exits 0,
 * applies, and every valid neighbour Service in those files answers on its ClusterIP; the deep
 * Services get no rules. `dry-run` over the same folder exits 0 too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEPTHS, NEIGHBOUR_POD, writeDeepFiles } from '../support/deep.ts';
import { MODES, tally, TestCluster } from './harness/cluster.ts';

const root = mkdtempSync(join(tmpdir(), 'kproxy-deep-e2e-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.each(MODES)('%s mode: input files with a value nested deep', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: NEIGHBOUR_POD.name, ip: NEIGHBOUR_POD.ip, node: 'node-1', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it.each(DEPTHS)(
    '%i levels: sync and dry-run exit 0, every neighbour answers, no deep Service has a rule',
    async (depth) => {
      const { dir, files } = writeDeepFiles(root, depth);
      const flags = ['--from', dir, '--proxy-mode', mode, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16'];
      const dry = await c.kproxyResult(['dry-run', ...flags]);
      expect(dry.exitCode, dry.stderr.slice(-2000)).toBe(0);
      const sync = await c.kproxyResult(['sync', ...flags]);
      expect(sync.exitCode, sync.stderr.slice(-2000)).toBe(0);
      expect(sync.stderr.match(/"msg":"skipping Service deep\/deep-/g)).toHaveLength(files.length);
      await c.flushConntrack();
      for (const f of files) {
        if (f.neighbourIP === undefined) continue;
        expect(tally(await c.probe('src', 'tcp', f.neighbourIP, 80, { count: 2 })), `${f.name}: neighbour ${f.neighbourIP}`).toEqual({ [NEIGHBOUR_POD.name]: 2 });
      }
      // The deep Services' ClusterIPs (10.96.25.x) appear in no rule: they were skipped whole.
      const rules = await c.rules();
      expect(rules).not.toMatch(/10\.96\.25\.\d/);
      expect(rules).toMatch(/10\.96\.24\.1\b/);
    },
    120_000,
  );
});
