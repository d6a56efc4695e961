/**
 * What every command builds before it plans: this node's configuration per IP family, from
 * kube-proxy's flags, and (for the file commands) the state read from files. One place, so `run`,
 * `sync` and `dry-run` agree on what a flag means in each family.
 * @module
 */
import type { Logger } from 'pino';
import type { ProxyMode } from '../backends/backend.ts';
import type { LocalDetection, ProxyConfig } from '../planner/plan.ts';
import { readObjectFiles, SourceError } from '../sources/file.ts';
import type { ObjectBatch, RawObject } from '../sources/objects.ts';
import type { CIDR, IPFamily } from '../state/ip.ts';
import { ProxyStateStore } from '../state/store.ts';
import { PolicyStateStore } from '../state/policystore.ts';
import { logApplyResult } from '../runner/runner.ts';
import { ConfigError, DETECT_LOCAL_MODES, INTERFACE_NAME } from './config.ts';
import { localAddresses } from './host.ts';
import type { ProxyFlags } from './options.ts';

/** The node-level flags the planner reads, both families mixed as given. */
export interface NodeSettings {
  /** `--cluster-cidr`: at most one CIDR per family (kube-proxy's comma-separated list). */
  readonly clusterCIDRs: readonly CIDR[];
  readonly masqueradeAll: boolean;
  /** `--iptables-masquerade-bit`, 0–31. */
  readonly masqueradeBit: number;
  /** `--nodeport-addresses`, both families; each family uses its own. */
  readonly nodePortAddresses: readonly CIDR[];
  /** `--nodeport-addresses primary`: NodePorts on the Node's IP of each family. */
  readonly nodePortPrimary?: boolean;
  /** `--detect-local-mode` with its interface flag (default ClusterCIDR). */
  readonly detectLocal?: LocalDetection;
}

/**
 * The local-traffic detection of `--detect-local-mode` and its interface flags (upstream
 * cmd/kube-proxy/app/server.go: the mode's interface flag must be set, and is a valid name).
 * @param names the flags' or config fields' names, for messages
 * @throws ConfigError naming the field: an unknown mode, a missing or invalid interface name
 */
export function localDetection(
  mode: string | undefined,
  bridge: string | undefined,
  prefix: string | undefined,
  names = { mode: '--detect-local-mode', bridge: '--pod-bridge-interface', prefix: '--pod-interface-name-prefix' },
): LocalDetection {
  const m = mode === undefined || mode === '' ? 'ClusterCIDR' : mode;
  const name = (value: string | undefined, field: string) => {
    if (!value) throw new ConfigError(`${field} must be set with ${names.mode} ${m}`);
    if (!INTERFACE_NAME.test(value)) throw new ConfigError(`${field}: ${JSON.stringify(value.slice(0, 40))} is not an interface name (at most 15 of [A-Za-z0-9_.-])`);
    return value;
  };
  switch (m) {
    case 'ClusterCIDR':
    case 'NodeCIDR':
      return { mode: m };
    case 'BridgeInterface':
      return { mode: m, bridge: name(bridge, names.bridge) };
    case 'InterfaceNamePrefix':
      return { mode: m, prefix: name(prefix, names.prefix) };
    default:
      throw new ConfigError(`${names.mode}: ${JSON.stringify(m.slice(0, 40))} is not one of ${DETECT_LOCAL_MODES.join(', ')}`);
  }
}

/** IPv4 first, as upstream orders a dual-stack node's proxiers when IPv4 is primary. */
export const ALL_FAMILIES: readonly IPFamily[] = [4, 6];

/**
 * Checks the settings: at most one cluster CIDR per family (upstream's ClusterCIDR detector).
 * @throws ConfigError naming the family with two
 */
export function checkSettings(settings: NodeSettings): void {
  for (const family of ALL_FAMILIES) {
    const same = settings.clusterCIDRs.filter((c) => c.family === family);
    if (same.length > 1) throw new ConfigError(`--cluster-cidr takes one CIDR per IP family, got ${same.map((c) => c.text).join(', ')}`);
  }
}

/**
 * Whether NodePorts answer on the Node's primary IP only: `--nodeport-addresses primary`, or no
 * `--nodeport-addresses` in nftables mode, whose default upstream made `primary` (KEP-3866; v1.36
 * fills its `nodeport-ips` set with the Node's IP); iptables mode's default stays every local address.
 */
export function nodePortPrimaryDefault(mode: ProxyMode, given: readonly unknown[] | 'primary'): boolean {
  return given === 'primary' || (mode === 'nftables' && given.length === 0);
}

/**
 * The settings the node flags give.
 * @throws ConfigError as {@link checkSettings}
 */
export function settingsFromFlags(
  flags: Pick<ProxyFlags, 'proxyMode' | 'clusterCidr' | 'masqueradeAll' | 'iptablesMasqueradeBit' | 'nodeportAddresses' | 'detectLocalMode' | 'podBridgeInterface' | 'podInterfaceNamePrefix'>,
): NodeSettings {
  const settings = {
    clusterCIDRs: flags.clusterCidr,
    masqueradeAll: flags.masqueradeAll,
    masqueradeBit: flags.iptablesMasqueradeBit,
    nodePortAddresses: flags.nodeportAddresses === 'primary' ? [] : flags.nodeportAddresses,
    nodePortPrimary: nodePortPrimaryDefault(flags.proxyMode, flags.nodeportAddresses),
    detectLocal: localDetection(flags.detectLocalMode, flags.podBridgeInterface, flags.podInterfaceNamePrefix),
  };
  checkSettings(settings);
  return settings;
}

/**
 * This family's {@link ProxyConfig}, read anew at every sync (the node's addresses may change).
 * The other family's CIDRs are left out, so an IPv6 `--nodeport-addresses` entry never reaches an
 * IPv4 rule and the reverse.
 */
export function proxyConfig(settings: NodeSettings, family: IPFamily): () => ProxyConfig {
  const clusterCIDR = settings.clusterCIDRs.find((c) => c.family === family);
  const nodePortAddresses = settings.nodePortAddresses.filter((c) => c.family === family);
  const detectLocal = settings.detectLocal ?? { mode: 'ClusterCIDR' };
  const nodePortPrimary = settings.nodePortPrimary === true;
  return () => ({
    family,
    clusterCIDR,
    masqueradeAll: settings.masqueradeAll,
    masqueradeBit: settings.masqueradeBit,
    nodePortAddresses,
    nodePortPrimary,
    localAddresses: localAddresses(),
    detectLocal,
  });
}

/** Warns once per family that has neither a cluster CIDR nor `--masquerade-all`: traffic from outside the pod network is then not masqueraded. */
export function warnUnmasqueraded(log: Logger, settings: NodeSettings, families: readonly IPFamily[]): void {
  // Only ClusterCIDR depends on a flag per family (NodeCIDR on the Node, interfaces on no family).
  if (settings.masqueradeAll || (settings.detectLocal !== undefined && settings.detectLocal.mode !== 'ClusterCIDR')) return;
  for (const family of families) {
    if (!settings.clusterCIDRs.some((c) => c.family === family)) log.warn(`no --cluster-cidr for IPv${family}: traffic from outside the pod network to ClusterIPs is not masqueraded`);
  }
}

/** What a command read: the Service state, and with --network-policy the policy state. */
export interface LoadedInput {
  readonly store: ProxyStateStore;
  readonly policies: PolicyStateStore | undefined;
}

/**
 * Reads input files (Services, EndpointSlices, Nodes, ServiceCIDRs; with `networkPolicy`, also
 * NetworkPolicies, Pods and Namespaces) into stores, logging every skipped object.
 * @throws SourceError when a file cannot be read or parsed
 */
export async function loadFileInput(paths: readonly string[], nodeName: string, log: Logger, networkPolicy = false): Promise<LoadedInput> {
  const input = await readObjectFiles(paths);
  for (const w of input.warnings) log.warn({ file: w.file }, w.message);
  return { store: loadObjects(input, nodeName, log), policies: networkPolicy ? loadPolicyObjects(input, log) : undefined };
}

/** {@link loadFileInput} without policy. */
export async function loadFiles(paths: readonly string[], nodeName: string, log: Logger): Promise<ProxyStateStore> {
  return (await loadFileInput(paths, nodeName, log)).store;
}

/**
 * Reads Services, EndpointSlices and this node's Node once from the API server (the operator
 * commands without `--from`), with `run`'s selectors. The API client is loaded only here.
 * @param kubeconfig a kubeconfig file; default in-cluster, then `$KUBECONFIG` / `~/.kube/config`
 * @throws Error when no configuration loads; SourceError naming the server when a list fails
 */
export async function loadApi(kubeconfig: string | undefined, master: string | undefined, nodeName: string, log: Logger): Promise<ProxyStateStore> {
  return (await loadApiInput(kubeconfig, master, nodeName, log)).store;
}

/** {@link loadApi}, and with `networkPolicy` the NetworkPolicies, Pods and Namespaces too. */
export async function loadApiInput(kubeconfig: string | undefined, master: string | undefined, nodeName: string, log: Logger, networkPolicy = false): Promise<LoadedInput> {
  const { listProxyObjects, loadKubeConfig } = await import('../sources/api.ts');
  const kc = loadKubeConfig(kubeconfig, master);
  const server = kc.getCurrentCluster()?.server ?? 'the API server';
  let batch: ObjectBatch;
  try {
    batch = await listProxyObjects(kc, nodeName, { networkPolicy });
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause?.message;
    throw new SourceError(server, `reading Services, EndpointSlices and Nodes failed: ${(err as Error).message}${cause ? ` (${cause})` : ''}`, { cause: err });
  }
  return { store: loadObjects(batch, nodeName, log), policies: networkPolicy ? loadPolicyObjects(batch, log) : undefined };
}

/** Applies a batch's NetworkPolicies, Namespaces and Pods to a new policy store, logging every skipped one. */
function loadPolicyObjects(input: ObjectBatch, log: Logger): PolicyStateStore {
  const store = new PolicyStateStore();
  let invalid = 0;
  const at = (o: RawObject) => input.origins?.get(o);
  for (const o of input.namespaces ?? []) invalid += logApplyResult(log, 'Namespace', store.applyNamespace(o), at(o));
  for (const o of input.pods ?? []) invalid += logApplyResult(log, 'Pod', store.applyPod(o), at(o));
  for (const o of input.networkPolicies ?? []) invalid += logApplyResult(log, 'NetworkPolicy', store.applyNetworkPolicy(o), at(o));
  log.info({ networkPolicies: store.policies.size, pods: store.pods.size, namespaces: store.namespaces.size, invalid }, 'NetworkPolicy input loaded');
  return store;
}

/** Applies a batch of objects to a new store, logging every skipped one. */
function loadObjects(input: ObjectBatch, nodeName: string, log: Logger): ProxyStateStore {
  const store = new ProxyStateStore(nodeName);
  let invalid = 0;
  const at = (o: RawObject) => input.origins?.get(o);
  for (const o of input.nodes) invalid += logApplyResult(log, 'Node', store.applyNode(o), at(o));
  for (const o of input.serviceCIDRs) invalid += logApplyResult(log, 'ServiceCIDR', store.applyServiceCIDR(o), at(o));
  for (const o of input.services) invalid += logApplyResult(log, 'Service', store.applyService(o), at(o));
  for (const o of input.endpointSlices) invalid += logApplyResult(log, 'EndpointSlice', store.applyEndpointSlice(o), at(o));
  log.info({ services: store.serviceCount, invalid, node: store.node.name, zone: store.node.zone }, 'input loaded');
  return store;
}
