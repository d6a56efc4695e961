/**
 * Which health-check node ports this node serves, and what they answer: one per
 * `externalTrafficPolicy: Local` LoadBalancer Service with a `healthCheckNodePort`, counting its
 * ready endpoints on this node (upstream pkg/proxy/healthcheck/service_health.go, fed by
 * `GetLocalReadyEndpoints`: terminating endpoints do not count, even when serving). Pure.
 * @module
 */
import type { IPFamily } from '../state/ip.ts';
import type { ServicePortState } from '../state/model.ts';

/** One health-check node port and the Service behind it. */
export interface HealthCheckTarget {
  readonly port: number;
  readonly namespace: string;
  readonly name: string;
  /** Ready, non-terminating endpoints of the Service on this node. */
  readonly localEndpoints: number;
}

/**
 * The health-check node ports of `states`, sorted by port. When two Services claim one port (the
 * API server prevents it), the first by Service key keeps it.
 */
export function healthCheckTargets(states: readonly ServicePortState[], nodeName: string, family: IPFamily): HealthCheckTarget[] {
  const byPort = new Map<number, HealthCheckTarget>();
  for (const { servicePort: sp, endpoints } of states) {
    if (sp.healthCheckNodePort === 0) continue;
    const [namespace = '', name = ''] = sp.serviceKey.split('/');
    const local = endpoints.filter((e) => e.nodeName === nodeName && e.ready && !e.terminating && e.ip.family === family).length;
    const existing = byPort.get(sp.healthCheckNodePort);
    if (existing && (existing.namespace !== namespace || existing.name !== name)) continue;
    byPort.set(sp.healthCheckNodePort, { port: sp.healthCheckNodePort, namespace, name, localEndpoints: Math.max(local, existing?.localEndpoints ?? 0) });
  }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}
