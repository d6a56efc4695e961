/**
 * Smoke run of the benchmarks at a small size, so they keep working: each must finish, report
 * every figure, and leave no namespace behind. The figures themselves are not
 * asserted (speed is measured in bench/, never asserted by a test).
 */
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './harness/cluster.ts';
import { ASSETS, ENVTEST_HINT } from '../support/envtest.ts';

describe('bench smoke run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-bench-smoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const node = join(ROOT, 'node_modules/.bin/node');

  it.each([
    ['iptables', '4'],
    ['nftables', '4'],
    ['iptables', '4,6'],
    ['nftables', '4,6'],
  ])('%s mode, families %s: measures cold start and one change at 50 Services, and cleans up', async (mode, families) => {
    const out = join(dir, `${mode}-${families}.json`);
    const layouts = mode === 'nftables' && families === '4' ? ['--layout-sizes', '50'] : [];
    const child = execa(node, [join(ROOT, 'bench/e2e.ts'), '--mode', mode, '--sizes', '50', '--runs', '1', '--families', families, ...layouts, '--out', out], { cwd: ROOT, timeout: 120_000 });
    await child;
    const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: Record<string, number>[]; layouts: Record<string, number>[] };
    expect(result.rows).toHaveLength(1);
    for (const key of ['coldMs', 'coldFloorMs', 'changeMs', 'changeFloorMs', 'changeCommands']) expect(result.rows[0]![key]).toBeGreaterThan(0);
    if (families === '4,6') expect(result.rows[0]).toMatchObject({ endpoints: 1000, changeMsByFamily: { IPv4: expect.any(Number), IPv6: expect.any(Number) } });
    if (layouts.length > 0) expect(result.layouts[0]).toMatchObject({ services: 50 });
    expect((await execa('ip', ['netns', 'list'])).stdout).not.toContain(`kpbench-${child.pid}-`);
  });

  it.each(['4', '4,6'])('measures the pure hot path and memory at 100 Services, families %s', async (families) => {
    const out = join(dir, `hotpath-${families}.json`);
    await execa(node, ['--expose-gc', join(ROOT, 'bench/hotpath.ts'), '--sizes', '100', '--families', families, '--out', out], { cwd: ROOT, timeout: 120_000 });
    const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: Record<string, unknown>[] };
    expect(result.rows[0]).toMatchObject({
      services: 100,
      endpoints: families === '4' ? 1000 : 2000,
      changeIptablesBytes: expect.any(Number),
      rssMB: { iptables: expect.any(Number), nftables: expect.any(Number) },
    });
    expect(result.rows[0]!.changeNftablesBytes).toBeGreaterThan(0);
  });

  it('attributes the heap to the stages of a cold sync at 50 Services', async () => {
    const out = join(dir, 'memory.json');
    await execa(node, ['--expose-gc', join(ROOT, 'bench/memory.ts'), '--services', '50', '--out', out], { cwd: ROOT, timeout: 120_000 });
    const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: { mode: string; stages: unknown[]; heapMiB: number }[] };
    expect(result.rows.map((r) => r.mode)).toEqual(['iptables', 'nftables']);
    for (const r of result.rows) expect(r.stages).toHaveLength(7);
  });

  it("times the file commands' start", async () => {
    const out = join(dir, 'startup.json');
    await execa(node, [join(ROOT, 'bench/startup.ts'), '--runs', '1', '--out', out], { cwd: ROOT, timeout: 120_000 });
    const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: { wallSeconds: number; maxRssMiB: number }[] };
    expect(result.rows).toHaveLength(2);
    for (const r of result.rows) expect(r.maxRssMiB).toBeGreaterThan(0);
  });

  it("measures nft's own floors at 50 Services and cleans up", async () => {
    const out = join(dir, 'nft-floor.json');
    const child = execa(node, [join(ROOT, 'bench/nft-floor.ts'), '--services', '50', '--runs', '1', '--out', out], { cwd: ROOT, timeout: 120_000 });
    await child;
    const result = JSON.parse(readFileSync(out, 'utf8')) as { coldJsonSeconds: number; changeSeconds: Record<string, number> };
    expect(result.coldJsonSeconds).toBeGreaterThan(0);
    expect(Object.keys(result.changeSeconds)).toHaveLength(6);
    expect((await execa('ip', ['netns', 'list'])).stdout).not.toContain(`kpfloor-${child.pid}`);
  });

  if (!ASSETS) console.log(ENVTEST_HINT);
  it.skipIf(!ASSETS)(
    'runs kproxy and upstream kube-proxy side by side against a real API server at 20 Services',
    async () => {
      const out = join(dir, 'run.json');
      const args = ['--services', '20', '--quiet-seconds', '1', '--changes', '2', '--churn-seconds', '2', '--cold-limit', '60', '--out', out];
      await execa(node, [join(ROOT, 'bench/run.ts'), ...args], { cwd: ROOT, timeout: 300_000 });
      const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: { proxy: string; coldStartSeconds?: number; changeSeconds?: number[]; rssAfterChurnMiB?: number }[] };
      expect(result.rows.map((r) => r.proxy)).toEqual(['kproxy-iptables', 'kproxy-nftables', 'upstream', 'upstream-minimize']);
      for (const r of result.rows) {
        expect(r.coldStartSeconds).toBeGreaterThan(0);
        expect(r.changeSeconds).toHaveLength(2);
        expect(r.rssAfterChurnMiB).toBeGreaterThan(0);
      }
    },
    320_000,
  );
});
