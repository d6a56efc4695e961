/**
 * Smoke run of the nftables benchmark at a small size, so the benchmark keeps working: it must
 * finish, report every figure, and leave no namespace behind. The figures themselves are not
 * asserted (speed is measured in bench/, never asserted by a test).
 */
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './harness/cluster.ts';

describe('bench smoke run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-bench-smoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('measures nftables cold start and one change at 50 Services, and cleans up', async () => {
    const out = join(dir, 'nftables.json');
    const child = execa(join(ROOT, 'node_modules/.bin/node'), [join(ROOT, 'bench/nftables.ts'), '--sizes', '50', '--runs', '1', '--layout-sizes', '50', '--out', out], { cwd: ROOT, timeout: 120_000 });
    await child;
    const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: Record<string, number>[]; layouts: Record<string, number>[] };
    expect(result.rows).toHaveLength(1);
    for (const key of ['coldMs', 'coldFloorMs', 'changeMs', 'changeFloorMs', 'changeCommands']) expect(result.rows[0]![key]).toBeGreaterThan(0);
    expect(result.layouts[0]).toMatchObject({ services: 50 });
    expect((await execa('ip', ['netns', 'list'])).stdout).not.toContain(`kpbench-${child.pid}-`);
  });
});
