/**
 * Names of upstream kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go and
 * pkg/proxy/nftables/helpers.go), so `nft list table ip kube-proxy` on a kproxy node reads like one run by kube-proxy:
 *
 * - per-service-port base: `ns/svc/proto/portName`; per-endpoint base: that plus `__ip/port`,
 *   with an IPv6 address's `:` replaced by `.`;
 * - chain or set name: `<prefix>-<hash>-<base>`, where hash = base32(sha256(base))[:8] and the
 *   whole stays within upstream's 240 characters (`hashAndTruncate`).
 * @module
 */
import type { Protocol } from '../../state/model.ts';
import { flat, hashSuffix } from '../../state/strings.ts';
import { fitComment } from '../iptables/names.ts';

/** The table kproxy owns in each family (upstream's name, so `cleanup` of either removes the other). */
export const TABLE = 'kube-proxy';

/** Fixed chain, set and map names (upstream's). */
export const NFT = {
  services: 'services',
  serviceIPs: 'service-ips',
  serviceNodePorts: 'service-nodeports',
  noEndpointServices: 'no-endpoint-services',
  noEndpointNodePorts: 'no-endpoint-nodeports',
  firewallIPs: 'firewall-ips',
  clusterIPs: 'cluster-ips',
  nodePortIPs: 'nodeport-ips',
  hairpin: 'hairpin-endpoints',
  firewallCheck: 'firewall-check',
  serviceEndpointsCheck: 'service-endpoints-check',
  nodePortEndpointsCheck: 'nodeport-endpoints-check',
  clusterIPsCheck: 'cluster-ips-check',
  markMasq: 'mark-for-masquerade',
  masquerading: 'masquerading',
  reject: 'reject-chain',
} as const;

/** Longest chain or set name kproxy writes (upstream `chainNameBaseLengthMax` plus prefix room). */
const MAX_NAME = 240;

/** Characters nft's text parser takes in an unquoted name (nft 1.0.6 rejects quoted chain names). */
const NAME = /^[a-zA-Z][a-zA-Z0-9/_.-]*$/;

/** The names of one service port's chains. */
export interface ServiceNames {
  /** Load balancing over the Cluster endpoints (iptables KUBE-SVC-). */
  readonly service: string;
  /** Load balancing over the Local endpoints (KUBE-SVL-). */
  readonly local: string;
  /** Entry for external destinations (KUBE-EXT-). */
  readonly external: string;
  /** loadBalancerSourceRanges filter (KUBE-FW-, here in the filter hooks). */
  readonly firewall: string;
  /** The base, `ns/svc/proto/portName`, to derive endpoint names from. */
  readonly base: string;
}

/**
 * @param name `namespace/name:portName` (ServicePortName.String())
 * @throws Error when the name holds characters nft could not take unquoted (the state stage admits
 *   only DNS names, so this is a bug)
 */
export function serviceNames(name: string, protocol: Protocol): ServiceNames {
  const colon = name.indexOf(':');
  const base = `${colon < 0 ? name : name.slice(0, colon)}/${protocol.toLowerCase()}/${colon < 0 ? '' : name.slice(colon + 1)}`;
  const hashed = hashAndTruncate(base);
  return { service: flat('service-', hashed), local: flat('local-', hashed), external: flat('external-', hashed), firewall: flat('firewall-', hashed), base };
}

/**
 * The inverse of {@link serviceNames} and {@link endpointNames}: `namespace/name:port PROTOCOL` (a
 * service port's key) from one of kproxy's chain or set names, if it is one (drift reports name
 * the Service of a chain kproxy no longer knows).
 */
export function servicePortOfName(name: string): string | undefined {
  const m = /^(?:service|local|external|firewall|endpoint|affinity)-[A-Z2-7]{8}-([^/]+)\/([^/]+)\/(tcp|udp|sctp)\/([^_]*)/.exec(name);
  if (!m) return undefined;
  return `${m[1]}/${m[2]}${m[4] ? `:${m[4]}` : ''} ${m[3]!.toUpperCase()}`;
}

/** Names of one endpoint's chain and (ClientIP affinity) set. */
export function endpointNames(serviceBase: string, ip: string, port: number): { readonly chain: string; readonly affinity: string } {
  const hashed = hashAndTruncate(`${serviceBase}__${ip.replaceAll(':', '.')}/${port}`);
  return { chain: flat('endpoint-', hashed), affinity: flat('affinity-', hashed) };
}

/**
 * `<8 of hash>-<base>`, cut to fit a name with the longest prefix kproxy gives (upstream's
 * `hashAndTruncate`, pkg/proxy/nftables/helpers.go).
 * @throws Error when the result holds characters nft could not take unquoted
 */
export function hashAndTruncate(base: string): string {
  const hash = hashSuffix(base).slice(0, 8);
  const name = `${hash}-${base}`.slice(0, MAX_NAME - 'endpoint-'.length);
  if (!NAME.test(`x${name}`)) throw new Error(`refusing to write nft name ${JSON.stringify(name)}`);
  return name;
}

/** nft's limit on a comment (NFT_USERDATA_MAXLEN allows more; nft's parser takes 128). */
const MAX_COMMENT = 128;

/**
 * The comment as written: shortened to fit ({@link fitComment}), then checked.
 * @throws Error when it holds a character nft cannot take (the state stage's validators refuse those first)
 */
export function checkedComment(full: string): string {
  const text = fitComment(full, MAX_COMMENT);
  if (!/^[\x20-\x7e]{1,128}$/.test(text) || /["\\]/.test(text)) throw new Error(`refusing to write comment ${JSON.stringify(text)} into an nft rule`);
  return text;
}
