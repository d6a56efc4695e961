/** Reading iptables chain by chain: `-S -v` listings as save lines, chain names, what to read. */
import { describe, expect, it } from 'vitest';
import { chainNamesFromNft, chainsToRead, mapLimit, parseChainListing, savedTable } from '../../../src/backends/iptables/kernel.ts';
import { buildTableScript, tableScriptChunks } from '../../../src/backends/iptables/restore.ts';

describe('parseChainListing', () => {
  it('moves -c counters to the front, as iptables-save -c prints them, and keeps a policy with its counters', () => {
    const text = ['-P PREROUTING DROP -c 12 345', '-A PREROUTING -p tcp -m comment --comment "x -c 5 6 y" -c 7 8 -j FOO', '-A PREROUTING -c 0 0 -j BAR', ''].join('\n');
    expect(parseChainListing('PREROUTING', text)).toEqual({
      header: ':PREROUTING DROP [12:345]',
      lines: ['[7:8] -A PREROUTING -p tcp -m comment --comment "x -c 5 6 y" -j FOO', '[0:0] -A PREROUTING -j BAR'],
    });
  });

  it('reads a user chain without counters', () => {
    expect(parseChainListing('FOO', '-N FOO\n-A FOO -s 192.0.2.9/32 -j DROP\n')).toEqual({ header: ':FOO - [0:0]', lines: ['-A FOO -s 192.0.2.9/32 -j DROP'] });
  });
});

describe('reading tables', () => {
  it("reads built-in and foreign chains only, never kproxy's own", () => {
    expect(chainsToRead('nat', ['PREROUTING', 'KUBE-SERVICES', 'KUBE-SVC-ABC', 'DOCKER', 'KUBE-MARK-DROP', 'OUTPUT'])).toEqual(['PREROUTING', 'DOCKER', 'KUBE-MARK-DROP', 'OUTPUT']);
  });

  it("takes one table's chain names out of nft -j list chains", () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: {} },
        { chain: { family: 'ip', table: 'nat', name: 'PREROUTING' } },
        { chain: { family: 'ip', table: 'filter', name: 'INPUT' } },
        { chain: { family: 'ip', table: 'nat', name: 'KUBE-SERVICES' } },
      ],
    });
    expect(chainNamesFromNft(json, 'nat')).toEqual(['PREROUTING', 'KUBE-SERVICES']);
  });

  it('builds a whole-table restore from per-chain listings, declaring built-in chains that do not exist yet', () => {
    const listings = new Map([
      ['PREROUTING', parseChainListing('PREROUTING', '-P PREROUTING ACCEPT -c 1 2\n-A PREROUTING -c 3 4 -j DOCKER\n')],
      ['DOCKER', parseChainListing('DOCKER', '-N DOCKER\n-A DOCKER -i docker0 -c 5 6 -j RETURN\n')],
    ]);
    const saved = savedTable('nat', ['PREROUTING', 'DOCKER', 'KUBE-SVC-OLD'], listings);
    expect([...saved.chains].sort()).toEqual(['DOCKER', 'INPUT', 'KUBE-SVC-OLD', 'OUTPUT', 'POSTROUTING', 'PREROUTING']);
    const script = buildTableScript(
      {
        filter: [],
        nat: [],
        fixed: { filter: new Map(), nat: new Map() },
        jumps: [{ table: 'nat', from: 'PREROUTING', target: 'KUBE-SERVICES', spec: '-j KUBE-SERVICES' }],
        services: new Map(),
        skipped: [],
      },
      { filter: savedTable('filter', [], new Map()), nat: saved },
    );
    expect(script).toContain(':PREROUTING ACCEPT [1:2]\n');
    expect(script).toContain(':OUTPUT ACCEPT [0:0]\n');
    expect(script).toContain('-A PREROUTING -j KUBE-SERVICES\n[3:4] -A PREROUTING -j DOCKER\n');
    expect(script).toContain('[5:6] -A DOCKER -i docker0 -j RETURN\n');
    // A stale chain of kproxy's is not declared: the whole-table restore drops it.
    expect(script).not.toContain('KUBE-SVC-OLD');
  });

  it('streams the whole-table restore in chunks of about 64 KiB, counting the rules of each table as it goes', () => {
    const nat = Array.from({ length: 2_000 }, (_, i) => ({
      name: `KUBE-SEP-${String(i).padStart(16, '0')}`,
      rules: Array.from({ length: 10 }, (_, r) => `-m comment --comment "rule ${r}" -j RETURN`),
    }));
    const ruleset = {
      filter: [],
      nat,
      fixed: { filter: new Map(), nat: new Map() },
      jumps: [{ table: 'nat' as const, from: 'PREROUTING', target: 'KUBE-SERVICES', spec: '-j KUBE-SERVICES' }],
      services: new Map(),
      skipped: [],
    };
    const current = { filter: savedTable('filter', [], new Map()), nat: savedTable('nat', [], new Map()) };
    const counts = { filter: 0, nat: 0 };
    const chunks = [...tableScriptChunks(ruleset, current, counts)];
    expect(chunks.length).toBeGreaterThan(10);
    expect(Math.max(...chunks.map((c) => c.length))).toBeLessThan(66 * 1024);
    expect(chunks.every((c) => c.endsWith('\n'))).toBe(true);
    const text = chunks.join('');
    expect(text).toBe(buildTableScript(ruleset, current));
    expect(counts).toEqual({ filter: 0, nat: 20_001 });
    expect(text.split('\n').filter((l) => l.startsWith('-A ')).length).toBe(20_001);
  });

  it('mapLimit keeps order and bounds concurrency', async () => {
    let inFlight = 0;
    let most = 0;
    const out = await mapLimit([5, 1, 3, 2, 4], 2, async (n) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, n));
      inFlight--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 30, 20, 40]);
    expect(most).toBe(2);
  });
});
