/**
 * Node → {@link NodeInfo}: the fields of this node's Node object the proxy uses — its zone label
 * (topology hints, KEP-2433) and its addresses (upstream uses the node IP to let a node reach its own
 * load balancer through `loadBalancerSourceRanges`, pkg/proxy/iptables/proxier.go).
 * @module
 */
import { describeObject, type RawObject } from '../sources/objects.ts';
import type { IPAddress } from './ip.ts';
import type { InputIssue, NodeInfo } from './model.ts';
import * as v from './validate.ts';

/** Well-known zone label (`v1.LabelTopologyZone`). */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** Taint the cluster autoscaler puts on a node it is about to delete. */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** Normalises a Node: `{ node }` or `{ issue }` naming the bad field. Never throws. */
export function normaliseNode(raw: RawObject): { node: NodeInfo } | { issue: InputIssue } {
  try {
    const meta = v.record(raw.metadata, 'metadata');
    const name = v.dnsSubdomain(meta.name, 'metadata.name');
    v.nesting(raw);
    const labels = v.record(meta.labels, 'metadata.labels');
    const zone = labels[ZONE_LABEL] === undefined ? undefined : v.labelValue(labels[ZONE_LABEL], `metadata.labels["${ZONE_LABEL}"]`);
    const status = v.record(raw.status, 'status');
    const addresses: IPAddress[] = [];
    v.list(status.addresses, 'status.addresses').forEach((item, i) => {
      const a = v.record(item, `status.addresses[${i}]`);
      if (a.type === 'InternalIP' || a.type === 'ExternalIP') addresses.push(v.ip(a.address, `status.addresses[${i}].address`));
    });
    const spec = v.record(raw.spec, 'spec');
    const listed = v.list(spec.podCIDRs, 'spec.podCIDRs');
    const podCIDRs = (listed.length > 0 ? listed : spec.podCIDR === undefined || spec.podCIDR === '' ? [] : [spec.podCIDR]).map((c, i) =>
      v.cidr(c, listed.length > 0 ? `spec.podCIDRs[${i}]` : 'spec.podCIDR'),
    );
    const taints = v.list(spec.taints, 'spec.taints');
    const deleting = meta.deletionTimestamp != null || taints.some((t) => (t as { key?: unknown } | null)?.key === TO_BE_DELETED_TAINT);
    return { node: { name, zone, addresses, podCIDRs, deleting } };
  } catch (err) {
    return { issue: v.issueFrom(err, 'Node', describeObject(raw), 'object') };
  }
}
