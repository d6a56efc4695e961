/**
 * Writes iptables rules to the kernel with the real tools: reads the current tables with
 * `iptables-save`, applies one `iptables-restore --noflush` per sync (atomic per table), and
 * removes kproxy's rules on cleanup. Processes run through execa with bounded time; the xtables
 * lock is waited for with upstream's bound (`-w 5 -W 100000`, pkg/util/iptables).
 * @module
 */
import { execa, ExecaError } from 'execa';
import type { IPFamily } from '../../state/ip.ts';
import type { IptablesRuleset } from './render.ts';
import { buildCleanupScript, buildRestoreScript, parseSave, type SavedTables } from './restore.ts';

/** Thrown when iptables-save or iptables-restore fails; carries the tool's stderr and the failing line. */
export class IptablesError extends Error {
  override readonly name = 'IptablesError';
  /** The restore input line iptables-restore reported, when it named one. */
  readonly failedLine: string | undefined;
  constructor(message: string, failedLine: string | undefined, options?: ErrorOptions) {
    super(message, options);
    this.failedLine = failedLine;
  }
}

/** Runs the iptables tools. The default runs the real binaries; tests may pass another. */
export interface IptablesTools {
  save(table: 'filter' | 'nat'): Promise<string>;
  restore(script: string): Promise<void>;
}

/** Time limit for one iptables-save or iptables-restore run. */
export const IPTABLES_TIMEOUT_MS = 60_000;

/** The real tools for one IP family (`iptables-*` or `ip6tables-*`). */
export function systemIptables(family: IPFamily): IptablesTools {
  const prefix = family === 6 ? 'ip6tables' : 'iptables';
  return {
    save: (table) => run(`${prefix}-save`, ['-t', table]),
    async restore(script) {
      await run(`${prefix}-restore`, ['-w', '5', '-W', '100000', '--noflush'], script);
    },
  };
}

async function run(bin: string, args: string[], input?: string): Promise<string> {
  try {
    const result = await execa(bin, args, { input: input ?? '', timeout: IPTABLES_TIMEOUT_MS, stripFinalNewline: false });
    return result.stdout;
  } catch (err) {
    if (!(err instanceof ExecaError)) throw err;
    const stderr = String(err.stderr ?? '').trim();
    const lineNo = /line (\d+) failed/.exec(stderr)?.[1];
    const failedLine = lineNo && input ? input.split('\n')[Number(lineNo) - 1] : undefined;
    const why = err.code === 'ENOENT' ? `${bin} not found (install iptables)` : err.timedOut ? `timed out after ${IPTABLES_TIMEOUT_MS} ms` : stderr || err.shortMessage;
    throw new IptablesError(`${bin} failed: ${why}${failedLine ? ` (input line ${lineNo}: ${failedLine})` : ''}`, failedLine, { cause: err });
  }
}

/** What a sync wrote. */
export interface SyncReport {
  /** The restore input that was applied. */
  readonly script: string;
  /** Rules written (`-A` and `-I` lines), per table. */
  readonly rulesWritten: { readonly filter: number; readonly nat: number };
  /** Stale kproxy chains removed. */
  readonly chainsDeleted: number;
}

/**
 * Makes the kernel's filter and nat tables match `ruleset`: rewrites kproxy's chains, removes its
 * stale ones, inserts missing jumps; other chains and rules are not touched.
 * @throws IptablesError when reading or restoring fails (nothing was applied for a failed table)
 */
export async function syncIptables(ruleset: IptablesRuleset, tools: IptablesTools): Promise<SyncReport> {
  const current = await readTables(tools);
  const script = buildRestoreScript(ruleset, current);
  await tools.restore(script);
  return { script, rulesWritten: countRules(script), chainsDeleted: script.split('\n').filter((l) => l.startsWith('-X ')).length };
}

/**
 * Removes every chain kproxy owns and the jumps to them. Returns the number of chains removed.
 * @throws IptablesError when reading or restoring fails
 */
export async function cleanupIptables(tools: IptablesTools): Promise<number> {
  const script = buildCleanupScript(await readTables(tools));
  if (script === undefined) return 0;
  await tools.restore(script);
  return script.split('\n').filter((l) => l.startsWith('-X ')).length;
}

async function readTables(tools: IptablesTools): Promise<SavedTables> {
  const [filter, nat] = await Promise.all([tools.save('filter'), tools.save('nat')]);
  return { filter: parseSave(filter, 'filter'), nat: parseSave(nat, 'nat') };
}

function countRules(script: string): { filter: number; nat: number } {
  const counts = { filter: 0, nat: 0 };
  let table: 'filter' | 'nat' | undefined;
  for (const line of script.split('\n')) {
    if (line === '*filter' || line === '*nat') table = line.slice(1) as 'filter' | 'nat';
    else if (table && (line.startsWith('-A ') || line.startsWith('-I '))) counts[table]++;
  }
  return counts;
}
