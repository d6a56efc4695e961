/**
 * An in-memory iptables table pair that applies `iptables-restore --noflush` input the way the
 * kernel does, and refuses what it refuses: `-A`/`-I`/`-D` on a missing chain, `-D` of a rule that
 * is not there, `-X` of a chain that is missing, not empty, or still jumped to. For property tests
 * of the incremental writer (a knftables-style fake; the real kernel is exercised by the e2e tests).
 */
import type { TableName } from '../../src/backends/iptables/render.ts';

const BUILTIN = ['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING'];

export class FakeIptables {
  readonly tables: Record<TableName, Map<string, string[]>> = { filter: new Map(), nat: new Map() };

  constructor() {
    for (const t of ['filter', 'nat'] as const) for (const c of BUILTIN) this.tables[t].set(c, []);
  }

  /** Applies a script; all or nothing per table, as iptables-restore. @throws Error naming the failing line */
  restore(script: string): void {
    let table: TableName | undefined;
    let work: Map<string, string[]> | undefined;
    for (const [i, line] of script.split('\n').entries()) {
      if (line === '' || line.startsWith('#')) continue;
      const fail = (why: string) => new Error(`line ${i + 1} failed (${why}): ${line}`);
      if (line.startsWith('*')) {
        table = line.slice(1) as TableName;
        work = new Map([...this.tables[table]].map(([k, v]) => [k, [...v]]));
        continue;
      }
      if (!table || !work) throw fail('no table');
      if (line === 'COMMIT') {
        this.tables[table] = work;
        table = undefined;
        continue;
      }
      if (line.startsWith(':')) {
        work.set(line.slice(1).split(' ')[0]!, []);
        continue;
      }
      const [op, chain, ...rest] = line.split(' ');
      const rules = work.get(chain!);
      if (!rules) throw fail(`no chain ${chain}`);
      if (op === '-X') {
        if (rules.length > 0) throw fail('chain not empty');
        if ([...work.values()].some((list) => list.some((r) => r.endsWith(`-j ${chain}`)))) throw fail('chain in use');
        work.delete(chain!);
        continue;
      }
      const target = / -j (\S+)$/.exec(` ${rest.join(' ')}`)?.[1];
      if ((op === '-A' || op === '-I') && target && /^KUBE-/.test(target) && !work.has(target)) throw fail(`no target ${target}`);
      if (op === '-A') rules.push(rest.join(' '));
      else if (op === '-I') {
        const at = /^\d+$/.test(rest[0]!) ? Number(rest.shift()) - 1 : 0;
        rules.splice(at, 0, rest.join(' '));
      } else if (op === '-D') {
        const at = rules.indexOf(rest.join(' '));
        if (at < 0) throw fail('no such rule');
        rules.splice(at, 1);
      } else throw fail(`unknown ${op}`);
    }
  }

  /**
   * The kproxy chains of both tables, for comparison. In the dispatch chains, whose rules the
   * incremental writer inserts at the top, order is free only while no two rules match the same
   * packets: then they are sorted; when two do, the first one wins in the kernel, so order decides
   * and the view refuses to hide it (throws, naming the rules).
   */
  view(unordered: ReadonlySet<string> = UNORDERED): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const t of ['filter', 'nat'] as const) {
      for (const [name, rules] of [...this.tables[t]].sort(([a], [b]) => (a < b ? -1 : 1))) {
        if (!unordered.has(`${t} ${name}`)) {
          out[`${t} ${name}`] = rules;
          continue;
        }
        const seen = new Map<string, string>();
        for (const rule of rules) {
          const match = matchOf(rule);
          const other = seen.get(match);
          if (other !== undefined) throw new Error(`${t} ${name}: two rules match the same packets, so their order decides:\n  ${other}\n  ${rule}`);
          seen.set(match, rule);
        }
        out[`${t} ${name}`] = [...rules].sort();
      }
    }
    return out;
  }
}

/** What a rule matches: the rule without its comment and its target. */
function matchOf(rule: string): string {
  return rule.replace(/-m comment --comment ("[^"]*"|\S+) ?/, '').replace(/ ?-j \S+( .*)?$/, '');
}

const UNORDERED = new Set(['filter KUBE-SERVICES', 'filter KUBE-EXTERNAL-SERVICES', 'filter KUBE-NODEPORTS', 'filter KUBE-PROXY-FIREWALL', 'nat KUBE-SERVICES', 'nat KUBE-NODEPORTS']);
