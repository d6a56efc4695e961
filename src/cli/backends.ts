/**
 * Picks the proxy backend for `--proxy-mode`, and removes what the other mode left behind: like
 * upstream kube-proxy (cmd/kube-proxy/app/server_linux.go `cleanupLeftovers`), a node switched
 * from iptables to nftables mode, or back, must not keep DNAT rules of both.
 * @module
 */
import type { Logger } from 'pino';
import type { ProxyBackend, ProxyMode, Rendered } from '../backends/backend.ts';
import { iptablesBackend } from '../backends/iptables/backend.ts';
import { cleanupIptables, IptablesError, systemIptables } from '../backends/iptables/writer.ts';
import { nftablesBackend } from '../backends/nftables/backend.ts';
import type { NftOutput } from '../backends/nftables/text.ts';
import { cleanupNftables, NftError, systemNft } from '../backends/nftables/writer.ts';
import type { IPFamily } from '../state/ip.ts';

/** What a backend needs from the host and the command line. */
export interface BackendOptions {
  /** Current value of `net.netfilter.nf_conntrack_tcp_be_liberal` (iptables mode). */
  readonly tcpBeLiberal: () => boolean;
  /** How nftables mode prints dry-run batches. */
  readonly output: NftOutput;
}

/** The backend of `mode` for one family, writing with the real tools. */
export function createBackend(mode: ProxyMode, family: IPFamily, options: BackendOptions): ProxyBackend<Rendered> {
  return mode === 'nftables' ? nftablesBackend(options.output) : iptablesBackend(family, () => ({ conntrackTCPBeLiberal: options.tcpBeLiberal() }));
}

/**
 * Removes the rules of every mode: iptables chains and jumps, and the nftables tables.
 * @returns what was removed, per mode
 * @throws the first failure (a mode whose tool is not installed counts as having nothing)
 */
export async function cleanupAll(family: IPFamily): Promise<{ iptablesChains: number; nftablesTables: number }> {
  const iptablesChains = await cleanupIptables(systemIptables(family)).catch(notInstalled);
  const nftablesTables = await cleanupNftables(systemNft()).catch(notInstalled);
  return { iptablesChains, nftablesTables };
}

/** Removes what modes other than `mode` left behind; failures are logged, not thrown. */
export async function cleanupOtherModes(mode: ProxyMode, family: IPFamily, log: Logger): Promise<void> {
  try {
    const removed = mode === 'nftables' ? await cleanupIptables(systemIptables(family)).catch(notInstalled) : await cleanupNftables(systemNft()).catch(notInstalled);
    if (removed > 0) log.info({ mode: mode === 'nftables' ? 'iptables' : 'nftables', removed }, 'removed rules left by the other proxy mode');
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'could not remove rules left by the other proxy mode');
  }
}

function notInstalled(err: unknown): number {
  if ((err instanceof IptablesError && err.code === 'IPTABLES_NOT_FOUND') || (err instanceof NftError && err.code === 'NFT_NOT_FOUND')) return 0;
  throw err;
}
