/**
 * kube-proxy's flags as kproxy reads them, turned into typed configuration. Flag names and
 * defaults are upstream's (cmd/kube-proxy/app/options.go) so a kube-proxy command line carries over.
 * @module
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { hostname } from 'node:os';
import { PROXY_MODES, type ProxyMode } from '../backends/backend.ts';
import { parseCIDR, type CIDR } from '../state/ip.ts';
import { DETECT_LOCAL_MODES } from './config.ts';

/** Flags shared by dry-run and sync, as commander hands them over. */
export interface ProxyFlags {
  readonly from: readonly string[];
  readonly proxyMode: ProxyMode;
  readonly hostnameOverride?: string;
  readonly clusterCidr: readonly CIDR[];
  readonly masqueradeAll: boolean;
  /** CIDRs, or `primary` (this node's primary IP of each family). */
  readonly nodeportAddresses: readonly CIDR[] | 'primary';
  readonly iptablesMasqueradeBit: number;
  readonly detectLocalMode?: string;
  readonly podBridgeInterface?: string;
  readonly podInterfaceNamePrefix?: string;
  /** Enforce NetworkPolicy for this node's pods in the `inet kproxy-policy` table. */
  readonly networkPolicy: boolean;
}

/** Adds the flags that say what this node is and how it proxies (kube-proxy's names and defaults), shared by every command that plans. */
export function nodeFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--proxy-mode <mode>', 'which proxy backend to use').choices(PROXY_MODES).default('iptables'))
    .option('--hostname-override <name>', "this node's name (default: the host name); endpoints on it are local")
    .option('--cluster-cidr <cidrs>', 'pod CIDR(s), comma-separated, one per family: traffic from outside them to ClusterIPs is masqueraded', cidrList, [])
    .option('--masquerade-all', 'masquerade all traffic to ClusterIPs', false)
    .option(
      '--nodeport-addresses <cidrs>',
      "accept NodePorts only on local addresses in these CIDRs, either family, or 'primary': on the Node's IP of each family (default: all local addresses)",
      nodePortAddressList,
      [],
    )
    .option('--iptables-masquerade-bit <bit>', 'bit of the packet mark that flags masquerading (0-31)', masqueradeBit, 14)
    .addOption(
      new Option('--detect-local-mode <mode>', "how this node's pod traffic is told apart: ClusterCIDR (default), NodeCIDR (the Node's spec.podCIDRs), BridgeInterface, InterfaceNamePrefix").choices(
        DETECT_LOCAL_MODES,
      ),
    )
    .option('--pod-bridge-interface <name>', 'with --detect-local-mode BridgeInterface: the bridge the pods are on')
    .option('--pod-interface-name-prefix <prefix>', "with --detect-local-mode InterfaceNamePrefix: the start of the pods' interface names")
    .option('--network-policy', NETWORK_POLICY_HELP, false);
}

/** `--network-policy`'s help, shared by every command that takes it. */
export const NETWORK_POLICY_HELP =
  "enforce NetworkPolicy (networking.k8s.io/v1) for this node's pods, in an nftables table of its own (inet kproxy-policy), in either proxy mode; reads NetworkPolicies, Pods and Namespaces too";

/** commander parser: collects a repeatable option into a list. */
export function collect(value: string, previous: readonly string[] = []): string[] {
  return [...previous, value];
}

/**
 * commander parser for comma-separated CIDRs (`--cluster-cidr`, `--nodeport-addresses`).
 * @throws InvalidArgumentError naming the bad entry
 */
export function cidrList(value: string): CIDR[] {
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return entries.map((entry) => {
    const cidr = parseCIDR(entry);
    if (!cidr) throw new InvalidArgumentError(`${JSON.stringify(entry)} is not a CIDR`);
    return cidr;
  });
}

/**
 * commander parser for `--nodeport-addresses`: comma-separated CIDRs, or `primary` alone.
 * @throws InvalidArgumentError naming the bad entry
 */
export function nodePortAddressList(value: string): CIDR[] | 'primary' {
  if (value.trim() === 'primary') return 'primary';
  if (value.split(',').some((e) => e.trim() === 'primary')) throw new InvalidArgumentError('"primary" cannot be combined with CIDRs');
  return cidrList(value);
}

/** commander parser for the masquerade bit, 0–31. */
export function masqueradeBit(value: string): number {
  const n = Number(value);
  if (!/^\d{1,2}$/.test(value) || n > 31) throw new InvalidArgumentError('must be a whole number 0-31');
  return n;
}

/**
 * The node name: `--hostname-override`, else the host name, lower-cased as upstream does
 * (`nodeutil.GetHostname`).
 */
export function nodeName(flags: Pick<ProxyFlags, 'hostnameOverride'>): string {
  return (flags.hostnameOverride?.trim() || hostname()).toLowerCase();
}
