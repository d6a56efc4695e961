/**
 * `src/sources/client-node.ts` loads client-node's KubeConfig, ListWatch and Watch without the
 * generated API (issue 12, memory): a child process imports it under a module hook that records
 * every file of the library it loads. If a client-node upgrade moves the two imports the
 * stand-ins answer, this test fails rather than the proxy silently growing by ~36 MiB.
 */
import { execa } from 'execa';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const HOOK = `
import { registerHooks } from 'node:module';
const seen = new Set();
registerHooks({
  load(url, context, next) {
    const m = /@kubernetes\\/client-node\\/dist\\/(.*)$/.exec(url);
    if (m) seen.add(m[1]);
    if (url.startsWith('data:')) seen.add('stand-in ' + /export (?:const|\\{) ?(\\w+)/.exec(decodeURIComponent(url))[1]);
    return next(url, context);
  },
});
process.on('exit', () => process.stderr.write('FILES ' + JSON.stringify([...seen].sort()) + '\\n'));
`;
const SCRIPT = `
const m = await import(${JSON.stringify(join(ROOT, 'src/sources/client-node.ts'))});
const kc = new m.KubeConfig();
kc.loadFromClusterAndUser({ name: 'c', server: 'https://127.0.0.1:1', skipTLSVerify: false }, { name: 'u', token: 't' });
const ctx = new m.RequestContext('https://127.0.0.1:1/api/v1/services', m.HttpMethod.GET);
await kc.applySecurityAuthentication(ctx);
const lw = new m.ListWatch('/api/v1/services', new m.Watch(kc), async () => ({ items: [], metadata: {} }), false, 'a=b');
console.log(JSON.stringify({ server: kc.getCurrentCluster().server, auth: ctx.getHeaders().Authorization, store: lw.list().length }));
`;

describe('client-node, slim', () => {
  it('loads KubeConfig, ListWatch and Watch without the generated API classes and models', async () => {
    const r = await execa(process.execPath, ['--disable-warning=ExperimentalWarning', '--import', `data:text/javascript,${encodeURIComponent(HOOK)}`, '--input-type=module', '-e', SCRIPT], {
      reject: false,
      cwd: ROOT,
    });
    expect(r.stderr).toContain('FILES');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ server: 'https://127.0.0.1:1', auth: 'Bearer t', store: 0 });
    const files = JSON.parse(/FILES (.*)/.exec(r.stderr)![1]!) as string[];
    expect(files).toEqual(expect.arrayContaining(['config.js', 'cache.js', 'watch.js', 'gen/http/http.js', 'stand-in createConfiguration', 'stand-in ObjectSerializer']));
    expect(files).not.toContain('index.js');
    expect(files).not.toContain('gen/index.js');
    expect(files.filter((f) => f.startsWith('gen/apis/') || f.startsWith('gen/models/'))).toEqual([]);
  });
});
