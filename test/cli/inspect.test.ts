/**
 * The operator commands as a person sees them: golden text of `explain`, `list` and `verify`'s
 * report on the example cluster (test/golden/), exit statuses, bad arguments, and the one-shot
 * read of a live API server (`--kubeconfig`, the protocol-faithful test server on port 0).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DriftItem } from '../../src/backends/drift.ts';
import { formatDrift } from '../../src/cli/format.ts';
import { parseDestination, parseSource } from '../../src/cli/inspect.ts';
import { main } from '../../src/cli/main.ts';
import { kubeconfigFor, TestApiServer } from '../support/apiserver.ts';
import { EXAMPLES, fixtureItems, node } from '../support/objects.ts';

const FLAGS = ['--from', EXAMPLES, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16'];
const golden = (name: string) => join(import.meta.dirname, '../golden', name);

/** Runs the CLI in-process; resolves to its exit status and what it printed on stdout. */
async function kproxy(...args: string[]): Promise<{ status: number; stdout: string }> {
  let stdout = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  try {
    const status = await main(['--log-level', 'error', ...args]);
    return { status, stdout };
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('kproxy explain, text form (golden)', () => {
  const cases: [string, string[], number][] = [
    ['explain-dns-from-pod.txt', ['10.96.0.10:53', '--protocol', 'udp', '--source', 'pod'], 0],
    ['explain-frontend-lb-allowed.txt', ['203.0.113.10:80', '--source', '203.0.113.2'], 0],
    ['explain-frontend-lb-blocked.txt', ['203.0.113.10:80', '--source', '198.51.100.200'], 3],
    ['explain-api-affinity-hairpin.txt', ['10.96.20.2:9000', '--source', '10.244.1.20'], 0],
    ['explain-checkout-node.txt', ['10.96.20.3:8080', '--source', 'node'], 0],
    ['explain-payments-reject.txt', ['10.96.20.4:80'], 3],
    ['explain-no-match.txt', ['10.96.99.99:80'], 4],
  ];
  it.each(cases)('%s', async (file, args, status) => {
    const r = await kproxy('explain', ...args, ...FLAGS);
    expect(r.status).toBe(status);
    await expect(r.stdout).toMatchFileSnapshot(golden(file));
  });

  it('nftables mode names its maps and chains', async () => {
    const r = await kproxy('explain', '198.51.100.20:8080', '--source', 'pod', '--proxy-mode', 'nftables', ...FLAGS);
    expect(r.status).toBe(0);
    await expect(r.stdout).toMatchFileSnapshot(golden('explain-checkout-externalip-nftables.txt'));
    const unknown = await kproxy('explain', '10.96.0.1:8080', '--proxy-mode', 'nftables', ...FLAGS);
    expect(unknown.status).toBe(3);
  });

  it('the JSON form has every documented field, null where the text shows nothing', async () => {
    const r = await kproxy('explain', '10.96.20.4:80', '--output', 'json', ...FLAGS);
    const e = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(e).sort()).toEqual(
      ['affinityTimeoutSeconds', 'destination', 'endpointSet', 'endpoints', 'family', 'firewall', 'masquerade', 'notes', 'reason', 'service', 'source', 'steps', 'unusedEndpoints', 'verdict'].sort(),
    );
    expect(e).toMatchObject({ verdict: 'REJECT', firewall: null, masquerade: null, service: { name: 'shop/payments:http', protocol: 'TCP', matchedAs: 'clusterIP' } });
  });

  it('bad DEST or --source is a usage error (exit 2)', async () => {
    expect((await kproxy('explain', '10.96.0.10', ...FLAGS)).status).toBe(2);
    expect((await kproxy('explain', '10.96.0.10:70000', ...FLAGS)).status).toBe(2);
    expect((await kproxy('explain', '10.96.0.10:53', '--source', 'nobody', ...FLAGS)).status).toBe(2);
    expect((await kproxy('explain', '10.96.0.10:53', '--source', 'fd00::1', ...FLAGS)).status).toBe(2);
    expect(() => parseDestination('fd00::1:80')).toThrow(/\[IPv6\]:PORT/);
    expect(parseDestination('[fd00::1]:80')).toMatchObject({ ip: { text: 'fd00::1' }, port: 80 });
    expect(parseSource('10.0.0.1')).toMatchObject({ ip: { text: '10.0.0.1' } });
  });
});

describe('kproxy list (golden)', () => {
  it('text, wide and JSON', async () => {
    await expect((await kproxy('list', ...FLAGS)).stdout).toMatchFileSnapshot(golden('list.txt'));
    await expect((await kproxy('list', '--output', 'wide', '--from', join(EXAMPLES, 'dualstack'), '--hostname-override', 'node-1')).stdout).toMatchFileSnapshot(golden('list-dualstack-wide.txt'));
    const rows = JSON.parse((await kproxy('list', '--output', 'json', ...FLAGS)).stdout) as { name: string; flags: string[] }[];
    expect(rows.find((r) => r.name === 'shop/payments:http')?.flags).toEqual(['no-endpoints']);
  });
});

describe('README', () => {
  it("shows the commands' real output (the golden files)", () => {
    const readme = readFileSync(join(import.meta.dirname, '../../README.md'), 'utf8');
    for (const file of ['list.txt', 'explain-frontend-lb-allowed.txt']) expect(readme).toContain(readFileSync(golden(file), 'utf8').trimEnd());
  });
});

describe("kproxy verify's report (golden)", () => {
  it('groups differences per Service, kproxy’s own first', async () => {
    const items: DriftItem[] = [
      { servicePort: 'shop/api:grpc TCP', change: 'missing', object: 'chain', table: 'nat', name: 'KUBE-SEP-2LWV4533S544KRES' },
      { servicePort: undefined, change: 'missing', object: 'jump', table: 'filter', name: 'INPUT', detail: '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS' },
      { servicePort: 'kube-system/kube-dns:dns UDP', change: 'extra', object: 'rule', table: 'nat', name: 'KUBE-SVC-TCOU7JCQXEZGVUNU', detail: '-j ACCEPT' },
    ];
    await expect(
      formatDrift([
        { family: 4, mode: 'iptables', items },
        { family: 6, mode: 'iptables', items: [] },
      ]),
    ).toMatchFileSnapshot(golden('verify-report.txt'));
    // A rule someone else wrote cannot put control characters on the operator's terminal.
    const odd: DriftItem = { servicePort: undefined, change: 'extra', object: 'rule', table: 'nat', name: 'KUBE-SERVICES', detail: '-j ACCEPT \u001b[2J\n' };
    expect(formatDrift([{ family: 4, mode: 'iptables', items: [odd] }])).toContain('-j ACCEPT \\x1b[2J\\x0a');
  });
});

describe('one read of a live API server (--kubeconfig)', () => {
  const api = new TestApiServer();
  let dir: string;
  let kubeconfig: string;
  beforeAll(async () => {
    const items = fixtureItems();
    api.seed('services', items.filter((o) => o.kind === 'Service') as never);
    api.seed('endpointslices', items.filter((o) => o.kind === 'EndpointSlice') as never);
    api.seed('nodes', [node('node-1', 'zone-a', ['192.0.2.21']) as never]);
    dir = mkdtempSync(join(tmpdir(), 'kproxy-inspect-'));
    kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, kubeconfigFor(await api.listen()));
  });
  afterAll(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('list and explain read the same state from the API as from the files', async () => {
    const live = ['--kubeconfig', kubeconfig, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16'];
    const fromApi = await kproxy('list', ...live);
    expect(fromApi.status).toBe(0);
    expect(fromApi.stdout).toBe((await kproxy('list', ...FLAGS)).stdout);
    // The Node from the API gives node-1 its address: a NodePort on it matches.
    const np = await kproxy('explain', '192.0.2.21:30808', '--output', 'json', ...live);
    expect(JSON.parse(np.stdout)).toMatchObject({ verdict: 'DNAT', service: { name: 'shop/checkout:http', matchedAs: 'nodePort' } });
  });

  it('an API server that cannot be reached is an error (exit 1), not a hang', async () => {
    // A port that was just free: nothing listens on it.
    const closed = new TestApiServer();
    const url = await closed.listen();
    await closed.close();
    const dead = join(dir, 'dead');
    writeFileSync(dead, kubeconfigFor(url));
    expect((await kproxy('list', '--kubeconfig', dead, '--hostname-override', 'node-1')).status).toBe(1);
  });
});
