/**
 * Service → {@link Service}: validation and normalisation of one core/v1 Service.
 *
 * Which Services a proxy ignores follows upstream kube-proxy (pkg/proxy/servicechangetracker.go,
 * tests `TestBuildServiceMapServiceHeadless`, `...TypeExternalName`; cmd/kube-proxy label selector
 * `!service.kubernetes.io/service-proxy-name`): headless (`clusterIP: None`), no ClusterIP,
 * `type: ExternalName`, and Services claimed by another proxy. LoadBalancer ingress IPs are used
 * when `ipMode` is `VIP` or unset (KEP-1860, `TestLoadBalancerIngressRouteTypeProxy`).
 *
 * An invalid field makes the whole Service invalid: its rules are left out rather than written
 * half, so a bad `loadBalancerSourceRanges` entry can never open a load balancer to everyone.
 * @module
 */
import { describeObject, type RawObject } from '../sources/objects.ts';
import type { IPAddress } from './ip.ts';
import type { NormaliseResult, Service, ServicePort } from './model.ts';
import * as v from './validate.ts';

/** Label by which another service proxy claims a Service (upstream `apis.LabelServiceProxyName`). */
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
/** API default of sessionAffinityConfig.clientIP.timeoutSeconds (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

/**
 * Validates a raw Service and builds its service ports.
 * @returns `ok` with the Service; `ignored` for kinds of Service a proxy does not handle; `invalid`
 *   with an issue naming the first bad field. Never throws.
 */
export function normaliseService(raw: RawObject): NormaliseResult<Service> {
  let key: string | undefined;
  try {
    const meta = v.record(raw.metadata, 'metadata');
    const namespace = meta.namespace === undefined ? 'default' : v.dnsLabel(meta.namespace, 'metadata.namespace');
    const name = v.dnsLabel(meta.name, 'metadata.name');
    key = `${namespace}/${name}`;
    v.nesting(raw);
    const labels = v.record(meta.labels, 'metadata.labels');
    const createdAt = v.optionalTime(meta.creationTimestamp);
    if (SERVICE_PROXY_NAME_LABEL in labels) {
      return { status: 'ignored', key, reason: `labelled ${SERVICE_PROXY_NAME_LABEL}` };
    }
    const spec = v.record(raw.spec, 'spec');
    const type = v.oneOf(spec.type, 'spec.type', ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'], 'ClusterIP');
    if (type === 'ExternalName') return { status: 'ignored', key, reason: 'type ExternalName' };
    if (spec.clusterIP === 'None') return { status: 'ignored', key, reason: 'headless (clusterIP None)' };
    const clusterIPs = readClusterIPs(spec);
    if (clusterIPs.length === 0) return { status: 'ignored', key, reason: 'no ClusterIP' };

    const externalIPs = v.list(spec.externalIPs, 'spec.externalIPs').map((x, i) => v.ip(x, `spec.externalIPs[${i}]`));
    const sourceRanges = v.list(spec.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges').map((x, i) => v.cidr(x, `spec.loadBalancerSourceRanges[${i}]`));
    const loadBalancerIPs = type === 'LoadBalancer' ? readIngressIPs(raw.status) : [];
    const affinity = v.oneOf(spec.sessionAffinity, 'spec.sessionAffinity', ['None', 'ClientIP'], 'None');
    const affinityTimeoutSeconds = affinity === 'ClientIP' ? readAffinityTimeout(spec) : undefined;
    const externalTrafficPolicy = v.oneOf(spec.externalTrafficPolicy, 'spec.externalTrafficPolicy', ['Cluster', 'Local'], 'Cluster');
    const internalTrafficPolicy = v.oneOf(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy', ['Cluster', 'Local'], 'Cluster');
    const healthCheckNodePort = type === 'LoadBalancer' && externalTrafficPolicy === 'Local' ? v.optionalPort(spec.healthCheckNodePort, 'spec.healthCheckNodePort') : 0;

    const rawPorts = v.list(spec.ports, 'spec.ports');
    if (rawPorts.length === 0) return { status: 'ignored', key, reason: 'no ports' };
    const seen = new Set<string>();
    const ports: ServicePort[] = rawPorts.map((item, i) => {
      const p = v.record(item, `spec.ports[${i}]`);
      const portName = v.portName(p.name, `spec.ports[${i}].name`);
      const protocol = v.protocol(p.protocol, `spec.ports[${i}].protocol`);
      const id = `${portName}/${protocol}`;
      if (seen.has(id)) throw new v.FieldError(`spec.ports[${i}]`, `duplicate port name ${v.show(portName)} for ${protocol}`);
      seen.add(id);
      return {
        serviceKey: key!,
        name: portName === '' ? key! : `${key}:${portName}`,
        portName,
        protocol,
        port: v.port(p.port, `spec.ports[${i}].port`),
        nodePort: type === 'ClusterIP' ? 0 : v.optionalPort(p.nodePort, `spec.ports[${i}].nodePort`),
        clusterIPs,
        externalIPs,
        loadBalancerIPs,
        loadBalancerSourceRanges: sourceRanges,
        affinityTimeoutSeconds,
        externalTrafficPolicy,
        internalTrafficPolicy,
        healthCheckNodePort,
        createdAt,
      };
    });
    return { status: 'ok', value: { key, namespace, name, ports }, issues: [] };
  } catch (err) {
    return { status: 'invalid', key, issue: v.issueFrom(err, 'Service', key ?? describeObject(raw), 'object') };
  }
}

/**
 * spec.clusterIPs (or the older spec.clusterIP alone), primary first: at most one address per
 * family, each of the family `spec.ipFamilies` gives it at the same index when that is set (the
 * API server keeps them in step; an address of the other family there is refused, not moved).
 */
function readClusterIPs(spec: Record<string, unknown>): IPAddress[] {
  const listed = v.list(spec.clusterIPs, 'spec.clusterIPs');
  const texts = listed.length > 0 ? listed : spec.clusterIP === undefined || spec.clusterIP === '' ? [] : [spec.clusterIP];
  const field = listed.length > 0 ? 'spec.clusterIPs' : 'spec.clusterIP';
  const ips = texts.map((x, i) => v.ip(x, listed.length > 0 ? `${field}[${i}]` : field));
  if (ips.length > 2 || (ips.length === 2 && ips[0]!.family === ips[1]!.family)) {
    throw new v.FieldError(field, 'must hold at most one address per IP family');
  }
  v.list(spec.ipFamilies, 'spec.ipFamilies').forEach((item, i) => {
    const family = v.oneOf(item, `spec.ipFamilies[${i}]`, ['IPv4', 'IPv6'], 'IPv4');
    const ip = ips[i];
    if (ip && `IPv${ip.family}` !== family) throw new v.FieldError(listed.length > 0 ? `${field}[${i}]` : field, `is not an ${family} address (spec.ipFamilies[${i}]): ${ip.text}`);
  });
  return ips;
}

function readIngressIPs(status: unknown): IPAddress[] {
  const lb = v.record(v.record(status, 'status').loadBalancer, 'status.loadBalancer');
  const out: IPAddress[] = [];
  v.list(lb.ingress, 'status.loadBalancer.ingress').forEach((item, i) => {
    const ing = v.record(item, `status.loadBalancer.ingress[${i}]`);
    const mode = v.oneOf(ing.ipMode, `status.loadBalancer.ingress[${i}].ipMode`, ['VIP', 'Proxy'], 'VIP');
    if (ing.ip === undefined || ing.ip === null || ing.ip === '') return; // hostname-only ingress
    const addr = v.ip(ing.ip, `status.loadBalancer.ingress[${i}].ip`);
    if (mode === 'VIP') out.push(addr);
  });
  return out;
}

function readAffinityTimeout(spec: Record<string, unknown>): number {
  const config = v.record(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig');
  const clientIP = v.record(config.clientIP, 'spec.sessionAffinityConfig.clientIP');
  const t = clientIP.timeoutSeconds;
  if (t === undefined || t === null) return DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_AFFINITY_TIMEOUT_SECONDS) {
    throw new v.FieldError('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `must be 1-${MAX_AFFINITY_TIMEOUT_SECONDS}, got ${v.show(t)}`);
  }
  return t;
}
