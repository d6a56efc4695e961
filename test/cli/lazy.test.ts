/**
 * The file commands never load the API client, prom-client or execa (issue 12): a child process
 * runs `kproxy dry-run` (and the operator commands `list` and `explain` with `--from`) with a
 * module hook that records every package it resolves.
 */
import { execa } from 'execa';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const HOOK = `
import { registerHooks } from 'node:module';
const seen = new Set();
registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(r.url); if (m) seen.add(m[1]); return r; } });
process.on('exit', () => process.stderr.write('PACKAGES ' + JSON.stringify([...seen].sort()) + '\\n'));
`;

describe('commands that read files', () => {
  it.each([
    ['dry-run', 'iptables'],
    ['dry-run', 'nftables'],
    ['list', 'iptables'],
    ['explain', 'nftables'],
  ])('%s (%s) loads neither client-node nor prom-client nor execa', async (command, mode) => {
    const r = await execa(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        '--import',
        `data:text/javascript,${encodeURIComponent(HOOK)}`,
        join(ROOT, 'src/cli/main.ts'),
        command,
        ...(command === 'explain' ? ['10.96.0.10:53'] : []),
        '--from',
        join(ROOT, 'examples'),
        '--proxy-mode',
        mode,
        '--hostname-override',
        'node-1',
      ],
      { reject: false },
    );
    expect(r.exitCode).toBe(0);
    const packages = JSON.parse(/PACKAGES (.*)/.exec(r.stderr)![1]!) as string[];
    expect(packages).toContain('commander');
    expect(packages).not.toContain('@kubernetes/client-node');
    expect(packages).not.toContain('prom-client');
    expect(packages).not.toContain('execa');
  });
});
