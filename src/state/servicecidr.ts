/**
 * ServiceCIDR (`networking.k8s.io/v1`, GA in Kubernetes v1.33; KEP-1880 "Multiple Service CIDRs")
 * → the ranges ClusterIPs are allocated from. Upstream kube-proxy's nftables mode drops new
 * connections to an address inside one of them that no Service holds (`cluster-ips-check`,
 * pkg/proxy/nftables/proxier.go, fed by pkg/proxy/config `ServiceCIDRConfig`), so a client sees a
 * timeout rather than a connection that wanders off the node; kproxy's nftables mode does the same.
 * @module
 */
import { describeObject, type RawObject } from '../sources/objects.ts';
import type { CIDR } from './ip.ts';
import type { InputIssue } from './model.ts';
import * as v from './validate.ts';

/** One ServiceCIDR: its name and its ranges (one per family, at most two, as the API validates). */
export interface ServiceCIDR {
  readonly name: string;
  readonly cidrs: readonly CIDR[];
}

/**
 * Normalises a ServiceCIDR: `{ serviceCIDR }` or `{ issue }` naming the bad field. A ServiceCIDR
 * being deleted still counts, as upstream's informer keeps it until it is gone (the API server
 * deletes it only once no ClusterIP is allocated from it). Never throws.
 */
export function normaliseServiceCIDR(raw: RawObject): { serviceCIDR: ServiceCIDR } | { issue: InputIssue } {
  try {
    const meta = v.record(raw.metadata, 'metadata');
    const name = v.dnsSubdomain(meta.name, 'metadata.name');
    v.nesting(raw);
    const spec = v.record(raw.spec, 'spec');
    const listed = v.list(spec.cidrs, 'spec.cidrs');
    // networking/validation: one or two CIDRs, and two only of different families.
    if (listed.length > 2) throw new v.FieldError('spec.cidrs', `at most 2 CIDRs, got ${listed.length}`);
    const cidrs = listed.map((c, i) => v.cidr(c, `spec.cidrs[${i}]`));
    if (cidrs.length === 2 && cidrs[0]!.family === cidrs[1]!.family) throw new v.FieldError('spec.cidrs', `two CIDRs must be of different IP families, got ${cidrs[0]!.text} and ${cidrs[1]!.text}`);
    return { serviceCIDR: { name, cidrs } };
  } catch (err) {
    return { issue: v.issueFrom(err, 'ServiceCIDR', describeObject(raw), 'object') };
  }
}
