/**
 * Deletes conntrack entries with the real `conntrack` tool (conntrack-tools), through execa, one
 * bounded run per filter. "0 flow entries have been deleted" is success.
 * @module
 */
import { execa } from 'execa';
import type { ConntrackFilter } from '../planner/conntrack.ts';
import type { IPFamily } from '../state/ip.ts';

/** Time limit of one conntrack run. */
const CONNTRACK_TIMEOUT_MS = 10_000;

/** The `conntrack` arguments of one filter (UDP) in one family (`-f ipv4` or `-f ipv6`). */
export function conntrackArgs(f: ConntrackFilter, family: IPFamily): string[] {
  const args = ['-D', '-f', family === 6 ? 'ipv6' : 'ipv4', '-p', 'udp'];
  if (f.origDst !== undefined) args.push('--orig-dst', f.origDst);
  if (f.origPortDst !== undefined) args.push('--orig-port-dst', String(f.origPortDst));
  if (f.replySrc !== undefined) args.push('--reply-src', f.replySrc);
  return args;
}

/**
 * Deletes the entries of every filter. Failures are collected, not thrown: a stale entry only
 * delays a flow until it times out, so the sync itself stands.
 * @returns the error messages, empty when all runs succeeded
 */
export async function deleteConntrackEntries(filters: readonly ConntrackFilter[], family: IPFamily): Promise<string[]> {
  const errors: string[] = [];
  for (const f of filters) {
    const r = await execa('conntrack', conntrackArgs(f, family), { reject: false, timeout: CONNTRACK_TIMEOUT_MS });
    if (r.exitCode === 0 || /0 flow entries have been deleted/.test(String(r.stderr))) continue;
    errors.push(r.code === 'ENOENT' ? 'conntrack not found (install conntrack)' : `conntrack ${conntrackArgs(f, family).join(' ')}: ${String(r.stderr).trim() || r.shortMessage}`);
  }
  return errors;
}
