/**
 * Metric labels shared by the stages that set metrics, kept apart from prom-client so that the
 * file commands, which share the runner's helpers, never load it.
 * @module
 */
import type { IPFamily } from '../state/ip.ts';

/** The label upstream v1.36 puts on its per-family metrics (pkg/proxy/metrics/metrics.go). */
export const IP_FAMILY = 'ip_family';

/** The `ip_family` label of a family, as upstream writes it: `IPv4` or `IPv6`. */
export function ipFamilyLabel(family: IPFamily): { ip_family: 'IPv4' | 'IPv6' } {
  return { ip_family: family === 6 ? 'IPv6' : 'IPv4' };
}
