/**
 * IP addresses and CIDRs as kproxy models them: family-tagged, parsed once, and stored in the
 * canonical text form that is later written into rules. Nothing that fails these parsers can reach
 * a rule.
 *
 * Behaviour follows upstream kube-proxy, which parses API addresses with `netutils.ParseIPSloppy`
 * and `ParseCIDRSloppy` (k8s.io/utils/net): IPv4 octets may carry leading zeros and are read as
 * decimal (`10.180.00.001` → `10.180.0.1`), CIDRs are reduced to their network address
 * (`203.0.113.000/025` → `203.0.113.0/25`), and surrounding white space in
 * `loadBalancerSourceRanges` is trimmed (pkg/proxy/serviceport.go, test `TestBadIPs`).
 * @module
 */
import { isIPv6 } from 'node:net';
import { flat } from './strings.ts';

/** IP family: 4 for IPv4, 6 for IPv6. */
export type IPFamily = 4 | 6;

/** A parsed IP address. `text` is canonical: dotted quad without leading zeros, or RFC 5952 IPv6. */
export interface IPAddress {
  readonly family: IPFamily;
  readonly text: string;
  /** Network-order bytes: 4 for IPv4, 16 for IPv6 (computed from `text` on each read). */
  readonly bytes: Uint8Array;
}

/**
 * An address holds only its family and canonical text; the bytes are derived when asked for.
 * A node holds one per endpoint (100k at 10k Services), and a Uint8Array with its ArrayBuffer
 * costs about 150 bytes more than the two fields, while only CIDR checks on a few node
 * addresses read the bytes.
 */
class Address implements IPAddress {
  readonly family: IPFamily;
  readonly text: string;
  constructor(family: IPFamily, text: string) {
    this.family = family;
    this.text = text;
  }
  get bytes(): Uint8Array {
    return this.family === 4 ? Uint8Array.from(this.text.split('.'), Number) : ipv6Bytes(this.text)!;
  }
}

/** A parsed CIDR, reduced to its network address. `text` is `network/prefix`. */
export interface CIDR {
  readonly family: IPFamily;
  readonly text: string;
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

const IPV4_SLOPPY = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * Parses an IPv4 or IPv6 address.
 * @param input address text as found in the API (`10.180.00.001`, `2001:DB8::1`)
 * @returns the address, or `undefined` when it is not a valid address. IPv4-mapped IPv6
 *   (`::ffff:1.2.3.4`) and zoned addresses (`fe80::1%eth0`) are refused: Kubernetes does not
 *   allocate them and their family is ambiguous.
 */
export function parseIP(input: string): IPAddress | undefined {
  if (typeof input !== 'string' || input.length > 45) return undefined;
  const v4 = IPV4_SLOPPY.exec(input);
  if (v4) {
    const bytes = new Uint8Array(4);
    for (let i = 0; i < 4; i++) {
      const n = Number(v4[i + 1]);
      if (n > 255) return undefined;
      bytes[i] = n;
    }
    return new Address(4, bytes.join('.'));
  }
  if (!isIPv6(input) || input.includes('%')) return undefined;
  const bytes = ipv6Bytes(input);
  if (bytes === undefined) return undefined;
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return undefined;
  return new Address(6, formatIPv6(bytes));
}

/**
 * Parses a CIDR (`10.0.0.0/8`, ` 203.0.113.000/025`, `2001:db8::/32`); white space around it is
 * ignored and host bits are cleared.
 * @returns the CIDR, or `undefined` when it is not valid.
 */
export function parseCIDR(input: string): CIDR | undefined {
  if (typeof input !== 'string' || input.length > 64) return undefined;
  const trimmed = input.trim();
  const slash = trimmed.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseIP(trimmed.slice(0, slash));
  const prefixText = trimmed.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > addr.bytes.length * 8) return undefined;
  const bytes = maskBytes(addr.bytes, prefix);
  const network = addr.family === 4 ? bytes.join('.') : formatIPv6(bytes);
  return { family: addr.family, text: `${network}/${prefix}`, bytes, prefix };
}

/** True for 127.0.0.0/8 and ::1: NodePorts are never served there (kproxy writes no localhost NodePorts). */
export function isLoopback(a: IPAddress): boolean {
  return a.family === 4 ? a.bytes[0] === 127 : a.text === '::1';
}

/** True when `ip` lies inside `cidr` (same family only). */
export function cidrContains(cidr: CIDR, ip: IPAddress): boolean {
  if (cidr.family !== ip.family) return false;
  const masked = maskBytes(ip.bytes, cidr.prefix);
  return masked.every((b, i) => b === cidr.bytes[i]);
}

/** `ip:port` for IPv4, `[ip]:port` for IPv6 (Go's net.JoinHostPort, used in upstream's hashes). */
export function joinHostPort(ip: IPAddress, port: number): string {
  return ip.family === 6 ? flat('[', ip.text, ']:', String(port)) : flat(ip.text, ':', String(port));
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

function ipv6Bytes(text: string): Uint8Array | undefined {
  let head = text;
  let tailV4: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const maybeV4 = text.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    const m = IPV4_SLOPPY.exec(maybeV4);
    if (!m) return undefined;
    tailV4 = m.slice(1).map(Number);
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const left = parse(halves[0]!);
  const right = halves.length === 2 ? parse(halves[1]!) : [];
  const groups = halves.length === 2 ? [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right] : left;
  if (groups.length !== 8 || groups.some((g) => !(g >= 0 && g <= 0xffff))) return undefined;
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  if (tailV4.length === 4) bytes.set(tailV4, 12);
  return bytes;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (≥2) of zero groups as `::`. */
function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
