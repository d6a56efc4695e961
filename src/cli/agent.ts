/**
 * The body of `kproxy run`: wires the stages together (API source → state → planner → backend,
 * driven by the runner) and serves /healthz, /livez, /metrics and the health-check node ports.
 * Kept apart from the command's definition (run.ts) so that only `run` loads the API client,
 * prom-client and the writers: the commands that read files start without them.
 * @module
 */
import type http from 'node:http';
import type { Logger } from 'pino';
import { deleteConntrackEntries } from '../backends/conntrack.ts';
import type { ProxyMode } from '../backends/backend.ts';
import { ProxyRunner } from '../runner/runner.ts';
import type { IPFamily } from '../state/ip.ts';
import { ProxyHealth, ServiceHealthServers, startHealthServer } from '../server/health.ts';
import { parseBindAddress, ProxyMetrics, startMetricsServer } from '../server/metrics.ts';
import { loadKubeConfig } from '../sources/api.ts';
import { KubeSource, type SupervisorOptions } from '../sources/kube.ts';
import { EventQueue } from '../sources/queue.ts';
import { ProxyStateStore } from '../state/store.ts';
import { ConfigError } from './config.ts';
import { cidrList, nodeName } from './options.ts';
import { tcpBeLiberal } from './host.ts';
import { applyConntrackSettings, type ConntrackSettings, type SysctlOutcome } from './sysctl.ts';
import { createPolicyReconciler, createReconcilers } from './backends.ts';
import { cleanupAll, cleanupOtherModes, cleanupPolicyTable, nodeFamilies } from './cleanup.ts';
import { PolicyStateStore } from '../state/policystore.ts';
import { checkSettings, localDetection, nodePortPrimaryDefault, warnUnmasqueraded, type NodeSettings } from './node.ts';

/** `run`'s options as commander hands them over (defaults applied). */
export interface RunFlags {
  config?: string;
  kubeconfig?: string;
  master?: string;
  proxyMode: ProxyMode;
  output: 'text' | 'json';
  hostnameOverride?: string;
  clusterCidr: string;
  masqueradeAll: boolean;
  detectLocalMode?: string;
  podBridgeInterface?: string;
  podInterfaceNamePrefix?: string;
  nodeportAddresses: string;
  iptablesMasqueradeBit: number;
  iptablesSyncPeriod: number;
  iptablesMinSyncPeriod: number;
  healthzBindAddress: string;
  metricsBindAddress: string;
  bindAddressHardFail: boolean;
  cleanup: boolean;
  initOnly: boolean;
  dryRun: boolean;
  conntrackMaxPerCore: number;
  conntrackMin: number;
  /** Milliseconds, as every duration flag. */
  conntrackTcpTimeoutEstablished: number;
  conntrackTcpTimeoutCloseWait: number;
  conntrackTcpBeLiberal: boolean;
  conntrackUdpTimeout: number;
  conntrackUdpTimeoutStream: number;
  watchStallTimeout: number;
  networkPolicy: boolean;
}

function parseCidrs(text: string, flag: string) {
  try {
    return cidrList(text);
  } catch (err) {
    throw new ConfigError(`${flag}: ${(err as Error).message}`);
  }
}

/**
 * The address to listen on: `0.0.0.0` (every IPv4 address) becomes `::` on a dual-stack node, one
 * socket for both families, as upstream's dual-stack healthz does; any other address stays.
 */
export function listenHost(host: string, families: readonly IPFamily[]): string {
  return host === '0.0.0.0' && families.includes(6) ? '::' : host;
}

async function startServer(what: string, address: string, hardFail: boolean, start: (bind: { host: string; port: number }) => Promise<http.Server>, log: Logger): Promise<http.Server | undefined> {
  if (!address) return undefined;
  try {
    const server = await start(parseBindAddress(address));
    log.info({ address }, `${what} server listening`);
    return server;
  } catch (err) {
    if (hardFail) throw new ConfigError(`${what} server on ${address}: ${(err as Error).message}`);
    log.error({ address, err: (err as Error).message }, `${what} server failed to start; continuing`);
    return undefined;
  }
}

/** The conntrack settings of the flags, durations in whole seconds as the sysctls take them. */
export function conntrackSettings(flags: RunFlags): ConntrackSettings {
  const seconds = (ms: number) => Math.floor(ms / 1000);
  return {
    maxPerCore: flags.conntrackMaxPerCore,
    min: flags.conntrackMin,
    tcpEstablishedTimeout: seconds(flags.conntrackTcpTimeoutEstablished),
    tcpCloseWaitTimeout: seconds(flags.conntrackTcpTimeoutCloseWait),
    tcpBeLiberal: flags.conntrackTcpBeLiberal,
    udpTimeout: seconds(flags.conntrackUdpTimeout),
    udpStreamTimeout: seconds(flags.conntrackUdpTimeoutStream),
  };
}

/** One line per sysctl changed or not writable; one debug line for those already right. */
function logSysctls(log: Logger, outcomes: readonly SysctlOutcome[]): void {
  for (const o of outcomes) {
    const at = { sysctl: o.name, wanted: o.wanted, was: o.was };
    if (o.outcome === 'set') log.info(at, `set ${o.name} to ${o.wanted}`);
    else if (o.outcome === 'failed')
      log.warn(
        { ...at, err: o.error },
        `cannot write ${o.name} (${o.error}): it stays ${o.was ?? 'unknown'}; in a container, /proc/sys or /sys may be read-only, and outside the host's network namespace nf_conntrack_max always is`,
      );
    else if (o.outcome === 'skipped') log.warn(at, `${o.name} left at ${o.was ?? 'unknown'}: it is global, and written only with nf_conntrack_max from the host's network namespace`);
    else log.debug(at, `${o.name} already ${o.was}`);
  }
}

/**
 * Runs the node agent until SIGTERM or SIGINT (or does `--cleanup`, or with `--init-only` sets the
 * conntrack sysctls, and returns).
 * @throws ConfigError for a bad flag value, an unloadable kubeconfig or (with --bind-address-hard-fail) an unbindable port
 */
export async function runProxy(flags: RunFlags, log: Logger): Promise<void> {
  if (flags.cleanup) {
    log.info(await cleanupAll(), 'cleanup done');
    return;
  }
  // As upstream, before anything else; not in --dry-run, which changes nothing.
  if (!flags.dryRun) logSysctls(log, await applyConntrackSettings(conntrackSettings(flags)));
  if (flags.initOnly) {
    log.info('--init-only: initialised, exiting');
    return;
  }
  if (flags.iptablesSyncPeriod <= 0) throw new ConfigError('--iptables-sync-period must be greater than 0');
  const node = nodeName(flags);
  const settings: NodeSettings = {
    clusterCIDRs: parseCidrs(flags.clusterCidr, '--cluster-cidr'),
    masqueradeAll: flags.masqueradeAll,
    masqueradeBit: flags.iptablesMasqueradeBit,
    nodePortAddresses: flags.nodeportAddresses.trim() === 'primary' ? [] : parseCidrs(flags.nodeportAddresses, '--nodeport-addresses'),
    nodePortPrimary: nodePortPrimaryDefault(flags.proxyMode, flags.nodeportAddresses.trim() === 'primary' ? 'primary' : parseCidrs(flags.nodeportAddresses, '--nodeport-addresses')),
    detectLocal: localDetection(flags.detectLocalMode, flags.podBridgeInterface, flags.podInterfaceNamePrefix),
  };
  checkSettings(settings);
  let kc: ReturnType<typeof loadKubeConfig>;
  try {
    kc = loadKubeConfig(flags.kubeconfig, flags.master);
  } catch (err) {
    throw new ConfigError(`cannot load the kubeconfig${flags.kubeconfig ? ` ${flags.kubeconfig}` : ''}: ${(err as Error).message}`);
  }

  const queue = new EventQueue();
  const store = new ProxyStateStore(node);
  const supervisor: SupervisorOptions = { stallMs: flags.watchStallTimeout };
  const policies = flags.networkPolicy ? new PolicyStateStore() : undefined;
  const source = new KubeSource(kc, node, queue, log, { ...supervisor, networkPolicy: flags.networkPolicy });
  const metrics = new ProxyMetrics(() => source.stats());
  const health = new ProxyHealth(2 * flags.iptablesSyncPeriod);
  log.info(
    {
      node,
      mode: flags.proxyMode,
      networkPolicy: flags.networkPolicy,
      dryRun: flags.dryRun,
      server: kc.getCurrentCluster()?.server,
      minSyncPeriodMs: flags.iptablesMinSyncPeriod,
      syncPeriodMs: flags.iptablesSyncPeriod,
    },
    'kproxy starting',
  );
  // The lists go out first: the API round trips overlap the other mode's cleanup and the servers'
  // start, and the runner waits for every list before its first sync anyway.
  await source.start();
  const servers: (http.Server | undefined)[] = [];
  let serviceHealth: ServiceHealthServers | undefined;
  let sysctlTimer: NodeJS.Timeout | undefined;
  const onRejection = (err: unknown) => log.error({ err }, 'unhandled rejection');
  try {
    const families = await nodeFamilies(flags.proxyMode, log);
    warnUnmasqueraded(log, settings, families);
    let liberal = await tcpBeLiberal();
    const timing = { minSyncPeriodMs: flags.iptablesMinSyncPeriod, syncPeriodMs: flags.iptablesSyncPeriod };
    const print = (change: string, family: IPFamily) => void process.stdout.write(`# sync at ${new Date().toISOString()}, IPv${family}\n${change}`);
    const reconcilers = createReconcilers(flags.proxyMode, families, {
      settings,
      tcpBeLiberal: () => liberal,
      output: flags.output,
      applier: flags.dryRun ? { kind: 'print', print } : { kind: 'write' },
      timing,
      log,
      metrics,
      conntrack: deleteConntrackEntries,
    });
    if (!flags.dryRun) await cleanupOtherModes(flags.proxyMode, families, log);
    if (!flags.dryRun && !policies) await cleanupPolicyTable(log);
    const policyPrint = (change: string) => void process.stdout.write(`# sync at ${new Date().toISOString()}, NetworkPolicy\n${change}`);
    const policy = policies
      ? { store: policies, reconciler: createPolicyReconciler({ output: flags.output, timing, log, metrics, applier: flags.dryRun ? { kind: 'print', print: policyPrint } : { kind: 'write' } }) }
      : undefined;
    const nodePortHealth = flags.dryRun ? undefined : new ServiceHealthServers(listenHost('0.0.0.0', families), () => health.healthy(Date.now()), log);
    serviceHealth = nodePortHealth;
    const bind = (b: { host: string; port: number }) => ({ host: listenHost(b.host, families), port: b.port });
    // One at a time, so a hard failure of the second still closes the first (finally, below).
    servers.push(await startServer('healthz', flags.healthzBindAddress, flags.bindAddressHardFail, (b) => startHealthServer(health, metrics, bind(b)), log));
    servers.push(await startServer('metrics', flags.metricsBindAddress, flags.bindAddressHardFail, (b) => startMetricsServer(metrics, bind(b)), log));

    const runner = new ProxyRunner({
      store,
      queue,
      reconcilers,
      timing,
      health,
      metrics,
      log,
      ...(nodePortHealth ? { healthChecks: (targets) => nodePortHealth.update(targets) } : {}),
      ...(policy ? { policy } : {}),
    });

    const stop = new AbortController();
    const onSignal = (signal: string) => {
      log.info({ signal }, 'stopping; the rules stay in place');
      stop.abort();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    // A bug in a library callback must not take the node's proxy down; it is logged and counted.
    process.on('unhandledRejection', onRejection);
    sysctlTimer = setInterval(() => void tcpBeLiberal().then((v) => (liberal = v)), flags.iptablesSyncPeriod);
    sysctlTimer.unref();
    await runner.run(stop.signal);
  } finally {
    clearInterval(sysctlTimer);
    process.off('unhandledRejection', onRejection);
    await source.stop();
    await serviceHealth?.close();
    for (const s of servers) {
      s?.close();
      s?.closeAllConnections();
    }
  }
}
