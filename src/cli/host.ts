/**
 * What kproxy reads of the host it runs on (the network namespace of the process): its interface
 * addresses and the conntrack sysctl that changes the rules.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { parseIP, type IPAddress } from '../state/ip.ts';

/** Addresses of this host's interfaces, read now (they may change while kproxy runs). */
export function localAddresses(): IPAddress[] {
  const out: IPAddress[] = [];
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) {
      const ip = parseIP(a.address);
      if (ip) out.push(ip);
    }
  return out;
}

/** `net.netfilter.nf_conntrack_tcp_be_liberal`; false when unreadable (module not loaded). */
export async function tcpBeLiberal(): Promise<boolean> {
  try {
    return (await readFile('/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal', 'utf8')).trim() === '1';
  } catch {
    return false;
  }
}
