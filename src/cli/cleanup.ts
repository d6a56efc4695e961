/**
 * What `run` and `sync` ask of the host before they write: which IP families it can proxy, and
 * the removal of what another proxy mode left behind. Like upstream kube-proxy
 * (cmd/kube-proxy/app/server_linux.go `cleanupLeftovers`), a node switched from iptables to
 * nftables mode, or back, must not keep DNAT rules of both.
 * @module
 */
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { ProxyMode } from '../backends/backend.ts';
import { cleanupIptables, IptablesError, systemIptables } from '../backends/iptables/writer.ts';
import { cleanupNftables, NftError, systemNft } from '../backends/nftables/writer.ts';
import { POLICY_TABLE } from '../backends/policy/render.ts';
import type { IPFamily } from '../state/ip.ts';
import { ALL_FAMILIES } from './node.ts';

/** Where the kernel says whether IPv6 is on (per network namespace). */
const DISABLE_IPV6 = '/proc/sys/net/ipv6/conf/all/disable_ipv6';

/**
 * Why this node cannot proxy IPv6 in `mode`, or undefined when it can: IPv6 off in the kernel, or
 * (iptables mode) no working `ip6tables` with a nat table. Upstream checks the same before it
 * builds its dual-stack proxier (cmd/kube-proxy/app/server_linux.go: `ipt[1].Present()`).
 */
async function ipv6Unavailable(mode: ProxyMode): Promise<string | undefined> {
  let disabled: string;
  try {
    disabled = (await readFile(DISABLE_IPV6, 'utf8')).trim();
  } catch {
    return 'the kernel has no IPv6 (no /proc/sys/net/ipv6)';
  }
  if (disabled !== '0') return 'IPv6 is disabled (net.ipv6.conf.all.disable_ipv6=1)';
  if (mode === 'iptables') {
    const r = await execa('ip6tables', ['-w', '5', '-t', 'nat', '-S', 'POSTROUTING'], { reject: false, timeout: 10_000 });
    if (r.exitCode !== 0) return r.code === 'ENOENT' ? 'ip6tables is not installed' : `ip6tables does not work: ${String(r.stderr).trim() || r.shortMessage}`;
  }
  return undefined;
}

/** The families a node agent proxies: both, or IPv4 alone with one warning when IPv6 cannot be used. */
export async function nodeFamilies(mode: ProxyMode, log: Logger): Promise<IPFamily[]> {
  const why = await ipv6Unavailable(mode);
  if (why === undefined) return [...ALL_FAMILIES];
  log.warn({ reason: why }, `running IPv4 only: ${why}`);
  return [4];
}

/**
 * Removes the rules of every mode in every family: iptables and ip6tables chains and jumps, and
 * the nftables tables.
 * @returns what was removed, per mode
 * @throws the first failure (a tool that is not installed counts as having nothing)
 */
export async function cleanupAll(): Promise<{ iptablesChains: number; nftablesTables: number; policyTables: number }> {
  let iptablesChains = 0;
  // On a node without IPv6, ip6tables fails for want of a table, not for want of rules.
  const families: readonly IPFamily[] = (await ipv6Unavailable('iptables')) === undefined ? ALL_FAMILIES : [4];
  for (const family of families) iptablesChains += await cleanupIptables(systemIptables(family)).catch(notInstalled);
  const nftablesTables = await cleanupNftables(systemNft()).catch(notInstalled);
  const policyTables = await cleanupNftables(systemNft(), ['inet'], POLICY_TABLE).catch(notInstalled);
  return { iptablesChains, nftablesTables, policyTables };
}

/**
 * Without --network-policy: removes the NetworkPolicy table an earlier run with it left, so that
 * turning the flag off never leaves pods isolated by policies nobody keeps current. Failures are
 * logged, not thrown.
 */
export async function cleanupPolicyTable(log: Logger): Promise<void> {
  try {
    const removed = await cleanupNftables(systemNft(), ['inet'], POLICY_TABLE).catch(notInstalled);
    if (removed > 0) log.info({ table: `inet ${POLICY_TABLE}` }, 'removed the NetworkPolicy table: --network-policy is off');
  } catch (err) {
    log.warn({ table: `inet ${POLICY_TABLE}`, err: (err as Error).message }, 'could not remove the NetworkPolicy table left by an earlier --network-policy run');
  }
}

/** Removes what modes other than `mode` left behind, in `families`; failures are logged, not thrown. */
export async function cleanupOtherModes(mode: ProxyMode, families: readonly IPFamily[], log: Logger): Promise<void> {
  const other = mode === 'nftables' ? 'iptables' : 'nftables';
  for (const family of families) {
    try {
      const removed = mode === 'nftables' ? await cleanupIptables(systemIptables(family)).catch(notInstalled) : await cleanupNftables(systemNft(), [family === 6 ? 'ip6' : 'ip']).catch(notInstalled);
      if (removed > 0) log.info({ mode: other, ipFamily: `IPv${family}`, removed }, 'removed rules left by the other proxy mode');
    } catch (err) {
      log.warn({ ipFamily: `IPv${family}`, err: (err as Error).message }, 'could not remove rules left by the other proxy mode');
    }
  }
}

function notInstalled(err: unknown): number {
  if ((err instanceof IptablesError && err.code === 'IPTABLES_NOT_FOUND') || (err instanceof NftError && err.code === 'NFT_NOT_FOUND')) return 0;
  throw err;
}
