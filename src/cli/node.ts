/**
 * What every command builds before it plans: this node's configuration per IP family, from
 * kube-proxy's flags, and (for the file commands) the state read from files. One place, so `run`,
 * `sync` and `dry-run` agree on what a flag means in each family.
 * @module
 */
import type { Logger } from 'pino';
import type { ProxyConfig } from '../planner/plan.ts';
import { readObjectFiles, SourceError } from '../sources/file.ts';
import type { ObjectBatch, RawObject } from '../sources/objects.ts';
import type { CIDR, IPFamily } from '../state/ip.ts';
import { ProxyStateStore } from '../state/store.ts';
import { logApplyResult } from '../runner/runner.ts';
import { ConfigError } from './config.ts';
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
 * The settings the node flags give.
 * @throws ConfigError as {@link checkSettings}
 */
export function settingsFromFlags(flags: Pick<ProxyFlags, 'clusterCidr' | 'masqueradeAll' | 'iptablesMasqueradeBit' | 'nodeportAddresses'>): NodeSettings {
  const settings = { clusterCIDRs: flags.clusterCidr, masqueradeAll: flags.masqueradeAll, masqueradeBit: flags.iptablesMasqueradeBit, nodePortAddresses: flags.nodeportAddresses };
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
  return () => ({ family, clusterCIDR, masqueradeAll: settings.masqueradeAll, masqueradeBit: settings.masqueradeBit, nodePortAddresses, localAddresses: localAddresses() });
}

/** Warns once per family that has neither a cluster CIDR nor `--masquerade-all`: traffic from outside the pod network is then not masqueraded. */
export function warnUnmasqueraded(log: Logger, settings: NodeSettings, families: readonly IPFamily[]): void {
  if (settings.masqueradeAll) return;
  for (const family of families) {
    if (!settings.clusterCIDRs.some((c) => c.family === family)) log.warn(`no --cluster-cidr for IPv${family}: traffic from outside the pod network to ClusterIPs is not masqueraded`);
  }
}

/**
 * Reads input files (Services, EndpointSlices, Nodes) into a store, logging every skipped object.
 * @throws SourceError when a file cannot be read or parsed
 */
export async function loadFiles(paths: readonly string[], nodeName: string, log: Logger): Promise<ProxyStateStore> {
  const input = await readObjectFiles(paths);
  for (const w of input.warnings) log.warn({ file: w.file }, w.message);
  return loadObjects(input, nodeName, log);
}

/**
 * Reads Services, EndpointSlices and this node's Node once from the API server (the operator
 * commands without `--from`), with `run`'s selectors. The API client is loaded only here.
 * @param kubeconfig a kubeconfig file; default in-cluster, then `$KUBECONFIG` / `~/.kube/config`
 * @throws Error when no configuration loads; SourceError naming the server when a list fails
 */
export async function loadApi(kubeconfig: string | undefined, master: string | undefined, nodeName: string, log: Logger): Promise<ProxyStateStore> {
  const { listProxyObjects, loadKubeConfig } = await import('../sources/kube.ts');
  const kc = loadKubeConfig(kubeconfig, master);
  const server = kc.getCurrentCluster()?.server ?? 'the API server';
  let batch: ObjectBatch;
  try {
    batch = await listProxyObjects(kc, nodeName);
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause?.message;
    throw new SourceError(server, `reading Services, EndpointSlices and Nodes failed: ${(err as Error).message}${cause ? ` (${cause})` : ''}`, { cause: err });
  }
  return loadObjects(batch, nodeName, log);
}

/** Applies a batch of objects to a new store, logging every skipped one. */
function loadObjects(input: ObjectBatch, nodeName: string, log: Logger): ProxyStateStore {
  const store = new ProxyStateStore(nodeName);
  let invalid = 0;
  const at = (o: RawObject) => input.origins?.get(o);
  for (const o of input.nodes) invalid += logApplyResult(log, 'Node', store.applyNode(o), at(o));
  for (const o of input.services) invalid += logApplyResult(log, 'Service', store.applyService(o), at(o));
  for (const o of input.endpointSlices) invalid += logApplyResult(log, 'EndpointSlice', store.applyEndpointSlice(o), at(o));
  log.info({ services: store.serviceCount, invalid, node: store.node.name, zone: store.node.zone }, 'input loaded');
  return store;
}
