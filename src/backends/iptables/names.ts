/**
 * Chain names and number formats of upstream kube-proxy's iptables mode, so kproxy writes the same
 * chains kube-proxy would and can take over a node from it (pkg/proxy/iptables/proxier.go
 * `portProtoHash`, `servicePortEndpointChainName`, `computeProbability`).
 *
 * - per-service-port suffix: base32(sha256(`ns/svc:port` + lower-case protocol))[:16]
 * - per-endpoint suffix: base32(sha256(`ns/svc:port` + protocol + `ip:port`))[:16]
 * - probabilities: Go `%0.10f` of the float64 1/n (round half to even on the exact binary value)
 * @module
 */
import type { Protocol } from '../../state/model.ts';
import { flat, hashSuffix } from '../../state/strings.ts';

/** The four chains of one service port; they share one hash suffix. */
export interface ServiceChainNames {
  /** KUBE-SVC-: load balancing over the Cluster endpoints. */
  readonly svc: string;
  /** KUBE-SVL-: load balancing over the Local endpoints. */
  readonly svl: string;
  /** KUBE-EXT-: entry for external destinations (NodePort, externalIPs, LB IPs). */
  readonly ext: string;
  /** KUBE-FW-: loadBalancerSourceRanges filter. */
  readonly fw: string;
}

/**
 * A comment that fits in `max` characters: as it is when it fits, else cut and ended with `~` and 8
 * characters of its hash, so two long comments that share a prefix stay distinct and the result
 * is the same on every node. Upstream's comments hold `namespace/name:port`, up to 143 characters,
 * plus a phrase: they fit iptables' 255 but not always nft's 128.
 */
export function fitComment(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 9)}~${hashSuffix(text).slice(0, 8)}`;
}

/**
 * Chain names of a service port.
 * @param name `namespace/name:portName` (ServicePortName.String())
 */
export function serviceChainNames(name: string, protocol: Protocol): ServiceChainNames {
  const suffix = hashSuffix(name + protocol.toLowerCase());
  return { svc: flat('KUBE-SVC-', suffix), svl: flat('KUBE-SVL-', suffix), ext: flat('KUBE-EXT-', suffix), fw: flat('KUBE-FW-', suffix) };
}

/**
 * The KUBE-SEP- chain of one endpoint of a service port.
 * @param hostPort `ip:port`, or `[ip]:port` for IPv6
 */
export function endpointChainName(name: string, protocol: Protocol, hostPort: string): string {
  return flat('KUBE-SEP-', hashSuffix(name + protocol.toLowerCase() + hostPort));
}

const probabilityCache: string[] = [];

/**
 * The `--probability` of the i-th of n endpoints, given k = n - i remaining: 1/k to 10 decimals,
 * formatted as Go's `%0.10f` does (e.g. 3 → `0.3333333333`, 2048 → `0.0004882812`).
 * @throws RangeError for k < 1
 */
export function probability(k: number): string {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`probability needs a whole k >= 1, got ${k}`);
  if (k < 1024) return (probabilityCache[k] ??= fixed10(1 / k));
  return fixed10(1 / k);
}

/** Exact decimal rounding (half to even) of a double in [0, 1] to 10 places. */
function fixed10(x: number): string {
  // x = mantissa / 2^shift exactly; scale by 10^10 and round the rational.
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const exponent = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const mantissa = exponent === 0 ? fraction : fraction | (1n << 52n);
  const shift = BigInt(1075 - (exponent === 0 ? 1 : exponent));
  const scaled = mantissa * 10n ** 10n;
  let q = scaled >> shift;
  const rem = scaled - (q << shift);
  const half = 1n << (shift - 1n);
  if (rem > half || (rem === half && (q & 1n) === 1n)) q += 1n;
  const digits = q.toString().padStart(11, '0');
  return `${digits.slice(0, -10)}.${digits.slice(-10)}`;
}
