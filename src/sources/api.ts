/**
 * One-shot reads of the Kubernetes API: the resources a proxy reads ({@link proxyResources}, with
 * upstream kube-proxy's selectors), the client configuration, paginated raw lists (`limit` /
 * `continue`, as client-go's reflector pages at 500; an expired `continue` token restarts the list
 * once), and discovery of optional resources. The supervised watches built on them are in kube.ts.
 * @module
 */
import { HttpMethod, IsomorphicFetchHttpLibrary, KubeConfig, RequestContext, type KubernetesListObject, type KubernetesObject } from './client-node.ts';
import type { ObjectBatch, ObjectKind, RawObject } from './objects.ts';
/** Upstream's selector: skip Services claimed by another proxy and headless EndpointSlices. */
export const PROXY_LABEL_SELECTOR = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';

/** Page size of list requests (client-go's reflector default). */
export const LIST_PAGE_SIZE = 500;
/** Upper bound on pages of one list, so a server that keeps answering `continue` cannot loop us. */
const MAX_LIST_PAGES = 10_000;
/** Time limit for one list page request. */
const LIST_TIMEOUT_MS = 60_000;

/** A resource kproxy watches. */
export interface WatchedResource {
  readonly kind: ObjectKind;
  /** Collection path, e.g. `/api/v1/services`. */
  readonly path: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /**
   * Watched only where the API server serves it: its group version's path and resource name, for
   * discovery (`GET /apis/networking.k8s.io/v1` lists `servicecidrs` from v1.33 on).
   */
  readonly optional?: { readonly groupVersion: string; readonly resource: string };
  /**
   * What of each object is kept from the wire (every list page and every watch event), when the
   * state reads only a part of a large object: a Pod's policy facts, a tenth of the bytes.
   */
  readonly project?: (object: RawObject) => RawObject;
  /** Its first list is paged from etcd, not one answer from the watch cache: a 150k-pod list in one response is hundreds of MB. */
  readonly pagedFirstList?: boolean;
}

/** The resources of a proxy on node `nodeName`: Services, EndpointSlices, its Node, and ServiceCIDRs where served. */
export function proxyResources(nodeName: string): WatchedResource[] {
  return [
    { kind: 'Service', path: '/api/v1/services', labelSelector: PROXY_LABEL_SELECTOR },
    { kind: 'EndpointSlice', path: '/apis/discovery.k8s.io/v1/endpointslices', labelSelector: PROXY_LABEL_SELECTOR },
    { kind: 'Node', path: '/api/v1/nodes', fieldSelector: `metadata.name=${nodeName}` },
    { kind: 'ServiceCIDR', path: '/apis/networking.k8s.io/v1/servicecidrs', optional: { groupVersion: '/apis/networking.k8s.io/v1', resource: 'servicecidrs' } },
  ];
}

/**
 * The resources of the NetworkPolicy pipeline (--network-policy), cluster-wide because peers can
 * be anywhere: NetworkPolicies, Namespaces, and Pods that have not finished (the field selector
 * upstream's controllers use; a pod that finishes leaves the watch as a deletion, so its address,
 * which may be reused, is never a peer).
 */
export function policyResources(): WatchedResource[] {
  return [
    { kind: 'NetworkPolicy', path: '/apis/networking.k8s.io/v1/networkpolicies' },
    { kind: 'Namespace', path: '/api/v1/namespaces' },
    { kind: 'Pod', path: '/api/v1/pods', fieldSelector: 'status.phase!=Succeeded,status.phase!=Failed', project: podPolicyFacts, pagedFirstList: true },
  ];
}

/**
 * The part of a Pod the policy state reads (state/networkpolicy.ts normalisePod), and the identity
 * the informer's cache compares: metadata's name, namespace, uid, resourceVersion and labels;
 * spec's nodeName, hostNetwork and containers' ports; status's phase and addresses. The rest
 * (managedFields, conditions, container statuses, volumes, env) is dropped as it arrives. Never throws.
 */
export function podPolicyFacts(o: RawObject): RawObject {
  const meta = (o.metadata ?? {}) as Record<string, unknown>;
  const spec = (typeof o.spec === 'object' && o.spec !== null ? o.spec : {}) as Record<string, unknown>;
  const status = (typeof o.status === 'object' && o.status !== null ? o.status : {}) as Record<string, unknown>;
  const containers = Array.isArray(spec.containers) ? (spec.containers as unknown[]).map((c) => ({ ports: (c as { ports?: unknown } | null)?.ports })) : spec.containers;
  return {
    apiVersion: o.apiVersion,
    kind: o.kind,
    metadata: { name: meta.name, namespace: meta.namespace, uid: meta.uid, resourceVersion: meta.resourceVersion, labels: meta.labels, deletionTimestamp: meta.deletionTimestamp },
    spec: { nodeName: spec.nodeName, hostNetwork: spec.hostNetwork, containers },
    status: { phase: status.phase, podIP: status.podIP, podIPs: status.podIPs },
  };
}

/** An error answer of the API server, with its HTTP status. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly statusCode: number;
  /** Same as statusCode: client-node's ListWatch looks for `code === 410`. */
  readonly code: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
    this.code = statusCode;
  }
}

/**
 * Builds the API client configuration: `kubeconfig` when given (kube-proxy's `--kubeconfig`),
 * else in-cluster (service account) when running in a pod, else the default lookup
 * (`$KUBECONFIG`, `~/.kube/config`). `master` (kube-proxy's `--master`) overrides the server.
 * kube-proxy must not reach the API through the `kubernetes` ClusterIP it is about to program, so
 * a DaemonSet gives it the API server's real address (kubeconfig or `--master`).
 * @throws Error when no configuration can be loaded
 */
export function loadKubeConfig(kubeconfig: string | undefined, master: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (master) {
    const current = kc.getCurrentCluster();
    if (!current) throw new Error('no current cluster in the kubeconfig to apply --master to');
    kc.clusters = kc.clusters.map((c) => (c.name === current.name ? { ...c, server: master } : c));
  }
  if (!kc.getCurrentCluster()) throw new Error('the kubeconfig names no current cluster');
  return kc;
}

/** How {@link listCollection} reads. */
export interface ListOptions {
  /** Items per page asked for (`limit`). Default {@link LIST_PAGE_SIZE}. */
  readonly pageSize?: number;
  /**
   * `'0'`: any version, from the API server's watch cache (which ignores `limit` and answers in
   * one response; a server without the cache pages from etcd). Absent: a consistent read of the
   * latest version, paged (API concepts, "Resource versions" and "Retrieving large results sets
   * in chunks").
   */
  readonly resourceVersion?: '0';
}

/**
 * Lists a collection, following `continue` tokens. Objects are returned as the server sent them
 * (wire JSON), in server order.
 * @throws ApiError for an error status (after one restart on an expired continue token)
 */
export async function listCollection(kc: KubeConfig, resource: WatchedResource, options: ListOptions = {}): Promise<KubernetesListObject<KubernetesObject>> {
  const pageSize = options.pageSize ?? LIST_PAGE_SIZE;
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('no current cluster');
  let items: KubernetesObject[] = [];
  let cont: string | undefined;
  let restarted = false;
  for (let page = 0; page < MAX_LIST_PAGES; page++) {
    const url = new URL(server.replace(/\/$/, '') + resource.path);
    url.searchParams.set('limit', String(pageSize));
    if (resource.labelSelector) url.searchParams.set('labelSelector', resource.labelSelector);
    if (resource.fieldSelector) url.searchParams.set('fieldSelector', resource.fieldSelector);
    // The continue token carries the version of its snapshot; the server refuses both together.
    if (cont) url.searchParams.set('continue', cont);
    else if (options.resourceVersion) url.searchParams.set('resourceVersion', options.resourceVersion);
    const response = await get(kc, url);
    const text = response.text;
    if (response.httpStatusCode === 410 && cont && !restarted) {
      // The continue token expired mid-list (API concepts, "Retrieving large results sets in
      // chunks"): start over, once, for a consistent snapshot.
      restarted = true;
      items = [];
      cont = undefined;
      continue;
    }
    if (response.httpStatusCode !== 200) throw new ApiError(response.httpStatusCode, `list ${resource.path}: HTTP ${response.httpStatusCode}: ${statusMessage(text)}`);
    const body = JSON.parse(text) as KubernetesListObject<KubernetesObject>;
    if (!Array.isArray(body.items)) throw new ApiError(500, `list ${resource.path}: response has no items`);
    if (resource.project) for (const o of body.items) items.push(resource.project(o as RawObject) as KubernetesObject);
    else items.push(...body.items);
    cont = body.metadata?._continue ?? (body.metadata as { continue?: string } | undefined)?.continue;
    if (!cont) return { ...body, items };
  }
  throw new ApiError(500, `list ${resource.path}: more than ${MAX_LIST_PAGES} pages`);
}

/** One authenticated GET of a JSON document, with the list timeout. */
async function get(kc: KubeConfig, url: URL): Promise<{ httpStatusCode: number; text: string }> {
  const ctx = new RequestContext(url.toString(), HttpMethod.GET);
  ctx.setHeaderParam('Accept', 'application/json');
  ctx.setSignal(AbortSignal.timeout(LIST_TIMEOUT_MS));
  await kc.applySecurityAuthentication(ctx);
  const response = await new IsomorphicFetchHttpLibrary().send(ctx).toPromise();
  return { httpStatusCode: response.httpStatusCode, text: await response.body.text() };
}

/**
 * Whether the API server serves an optional resource, by discovery of its group version (an
 * `APIResourceList`): true for a required one without asking.
 * @throws ApiError for an error status other than 404 (the group version is not served), or a network error
 */
export async function servesResource(kc: KubeConfig, resource: WatchedResource): Promise<boolean> {
  if (!resource.optional) return true;
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('no current cluster');
  const response = await get(kc, new URL(server.replace(/\/$/, '') + resource.optional.groupVersion));
  if (response.httpStatusCode === 404) return false;
  if (response.httpStatusCode !== 200) throw new ApiError(response.httpStatusCode, `discovery ${resource.optional.groupVersion}: HTTP ${response.httpStatusCode}: ${statusMessage(response.text)}`);
  const body = JSON.parse(response.text) as { resources?: unknown };
  return Array.isArray(body.resources) && body.resources.some((r) => (r as { name?: unknown } | null)?.name === resource.optional!.resource);
}

/**
 * One complete read of what a proxy on `nodeName` watches (the operator commands' `--kubeconfig`
 * input): the lists of {@link proxyResources}, with upstream's selectors; an optional resource the
 * server does not serve, or does not let this user list (403), lists as empty. With
 * `networkPolicy`, the lists of {@link policyResources} too.
 * @throws ApiError or a network error when a list fails
 */
export async function listProxyObjects(kc: KubeConfig, nodeName: string, options: { readonly networkPolicy?: boolean } = {}): Promise<ObjectBatch> {
  const policy = options.networkPolicy ? Promise.all(policyResources().map(async (r) => (await listCollection(kc, r)).items as unknown as RawObject[])) : undefined;
  const [services, endpointSlices, nodes, serviceCIDRs] = await Promise.all(
    proxyResources(nodeName).map(async (r) => {
      if (!(await servesResource(kc, r))) return [];
      try {
        return (await listCollection(kc, r)).items as unknown as RawObject[];
      } catch (err) {
        // A ClusterRole of before ServiceCIDRs: the Services are still read, without them.
        if (r.optional && err instanceof ApiError && err.statusCode === 403) return [];
        throw err;
      }
    }),
  );
  const batch: ObjectBatch = { services: services!, endpointSlices: endpointSlices!, nodes: nodes!, serviceCIDRs: serviceCIDRs! };
  if (policy) {
    const [networkPolicies, namespaces, pods] = await policy;
    Object.assign(batch, { networkPolicies, namespaces, pods });
  }
  return batch;
}

function statusMessage(text: string): string {
  try {
    const status = JSON.parse(text) as { message?: unknown; reason?: unknown };
    const why = typeof status.message === 'string' ? status.message : typeof status.reason === 'string' ? status.reason : '';
    return why.slice(0, 300);
  } catch {
    return text.slice(0, 300);
  }
}
