/**
 * Field validators for untrusted API input. Each returns the clean value or throws a
 * {@link FieldError} naming the field; the normalisers turn those into {@link InputIssue}s.
 *
 * Rules follow Kubernetes API validation (k8s.io/apimachinery/pkg/util/validation): names are
 * DNS-1123 labels (≤63) or subdomains (≤253), label values ≤63 of `[A-Za-z0-9._-]`, ports 1–65535.
 * They are checked again here because a file, or a misbehaving server, need not have gone through
 * the API server, and because these strings end up in iptables-restore input.
 * @module
 */
import { parseCIDR, parseIP, type CIDR, type IPAddress } from './ip.ts';
import type { InputIssue, Protocol } from './model.ts';
import { findTooDeep, formatPath, MAX_NESTING_DEPTH } from '../sources/objects.ts';

/** A field failed validation. `field` is a JSON-path-like location such as `spec.ports[0].port`. */
export class FieldError extends Error {
  override readonly name = 'FieldError';
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

/**
 * Turns a caught {@link FieldError} into an {@link InputIssue}.
 * @throws the error itself when it is not a FieldError (a bug, not bad input)
 */
export function issueFrom(err: unknown, kind: InputIssue['kind'], object: string, skipped: InputIssue['skipped']): InputIssue {
  if (!(err instanceof FieldError)) throw err;
  return { kind, object, field: err.field, message: err.message, skipped };
}

/** Upper bound on list fields (externalIPs, source ranges, ports, …): larger ones are refused. */
export const MAX_LIST = 1000;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Shows a bad value in a message: JSON-quoted and cut, so it cannot break a log line. */
export function show(value: unknown): string {
  let text: string;
  try {
    // JSON.stringify gives undefined for these, whatever its types say.
    const unjsonable = value === undefined || typeof value === 'function' || typeof value === 'symbol';
    text = unjsonable ? String(value) : JSON.stringify(value);
  } catch {
    // Too deep for JSON.stringify's stack; String() of such a list would recurse the same way.
    text = typeof value === 'object' && value !== null ? `<${Array.isArray(value) ? 'list' : 'object'} nested too deep to print>` : String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Checks that a whole raw object nests no deeper than {@link MAX_NESTING_DEPTH} levels (walked
 * without recursion). Run before any field is read beyond the name, so that no deep value reaches
 * code that recurses.
 * @throws FieldError naming the path of the first too-deep value (shortened: `metadata.annotations.x[0]…`)
 */
export function nesting(raw: object): void {
  const path = findTooDeep(raw, MAX_NESTING_DEPTH);
  if (path) throw new FieldError(formatPath(path), `nested deeper than ${MAX_NESTING_DEPTH} levels of objects and lists`);
}

/** A DNS-1123 label (namespaces, Service names, port names): ≤63 of `[a-z0-9-]`. */
export function dnsLabel(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length > 63 || !DNS1123_LABEL.test(value)) {
    throw new FieldError(field, `must be a DNS label (lower-case letters, digits, '-'; at most 63), got ${show(value)}`);
  }
  return value;
}

/** A DNS-1123 subdomain (EndpointSlice and Node names): ≤253. */
export function dnsSubdomain(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length > 253 || !DNS1123_SUBDOMAIN.test(value)) {
    throw new FieldError(field, `must be a DNS subdomain (at most 253), got ${show(value)}`);
  }
  return value;
}

/** A label value (zones): ≤63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric. */
export function labelValue(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length > 63 || !LABEL_VALUE.test(value)) {
    throw new FieldError(field, `must be a label value (at most 63 of [A-Za-z0-9._-]), got ${show(value)}`);
  }
  return value;
}

/** An optional port name: absent or '' means unnamed; otherwise a DNS label. */
export function portName(value: unknown, field: string): string {
  if (value === undefined || value === null || value === '') return '';
  return dnsLabel(value, field);
}

/** A TCP/UDP/SCTP port, 1–65535. */
export function port(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new FieldError(field, `must be a port number 1-65535, got ${show(value)}`);
  }
  return value;
}

/** An optional port: absent, null or 0 give 0 (not set). */
export function optionalPort(value: unknown, field: string): number {
  if (value === undefined || value === null || value === 0) return 0;
  return port(value, field);
}

/** TCP, UDP or SCTP; absent means TCP (the API server's default). */
export function protocol(value: unknown, field: string): Protocol {
  if (value === undefined || value === null) return 'TCP';
  if (value === 'TCP' || value === 'UDP' || value === 'SCTP') return value;
  throw new FieldError(field, `must be TCP, UDP or SCTP, got ${show(value)}`);
}

/** An IP address (sloppy IPv4 accepted and normalised). */
export function ip(value: unknown, field: string): IPAddress {
  const parsed = typeof value === 'string' ? parseIP(value) : undefined;
  if (!parsed) throw new FieldError(field, `must be an IP address, got ${show(value)}`);
  return parsed;
}

/** A CIDR (white space trimmed, host bits cleared). */
export function cidr(value: unknown, field: string): CIDR {
  const parsed = typeof value === 'string' ? parseCIDR(value) : undefined;
  if (!parsed) throw new FieldError(field, `must be a CIDR, got ${show(value)}`);
  return parsed;
}

/** An optional list (absent or null → []); anything but an array, or one over {@link MAX_LIST}, throws. */
export function list(value: unknown, field: string): readonly unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new FieldError(field, `must be a list, got ${show(value)}`);
  if (value.length > MAX_LIST) throw new FieldError(field, `has ${value.length} entries, more than ${MAX_LIST}`);
  return value;
}

/** An optional object (absent or null → {}). */
export function record(value: unknown, field: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new FieldError(field, `must be an object, got ${show(value)}`);
  return value as Record<string, unknown>;
}

/** An optional boolean condition with its API default. */
export function condition(value: unknown, field: string, absent: boolean): boolean {
  if (value === undefined || value === null) return absent;
  if (typeof value !== 'boolean') throw new FieldError(field, `must be true or false, got ${show(value)}`);
  return value;
}

/** An optional string from a fixed set, with its default. */
export function oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[], absent: T): T {
  if (value === undefined || value === null || value === '') return absent;
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  throw new FieldError(field, `must be one of ${allowed.join(', ')}, got ${show(value)}`);
}

/**
 * An RFC 3339 time (`metadata.creationTimestamp`) in ms since the epoch; undefined when absent or
 * not a time. Lenient: a proxy only orders by it, so a bad value is not a reason to drop an object.
 */
export function optionalTime(value: unknown): number | undefined {
  if (typeof value !== 'string' || value.length > 64 || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value)) return undefined;
  const t = Date.parse(value);
  return Number.isFinite(t) ? t : undefined;
}
