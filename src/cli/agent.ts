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
import { ProxyHealth, ServiceHealthServers, startHealthServer } from '../server/health.ts';
import { parseBindAddress, ProxyMetrics, startMetricsServer } from '../server/metrics.ts';
import { KubeSource, loadKubeConfig, type SupervisorOptions } from '../sources/kube.ts';
import { EventQueue } from '../sources/queue.ts';
import { ProxyStateStore } from '../state/store.ts';
import { ConfigError } from './config.ts';
import { cidrList, clusterCIDRFor, nodeName } from './options.ts';
import { localAddresses, tcpBeLiberal } from './host.ts';
import { cleanupAll, cleanupOtherModes, createBackend } from './backends.ts';

const FAMILY = 4;

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
  nodeportAddresses: string;
  iptablesMasqueradeBit: number;
  iptablesSyncPeriod: number;
  iptablesMinSyncPeriod: number;
  healthzBindAddress: string;
  metricsBindAddress: string;
  bindAddressHardFail: boolean;
  cleanup: boolean;
  dryRun: boolean;
  watchStallTimeout: number;
}

function parseCidrs(text: string, flag: string) {
  try {
    return cidrList(text);
  } catch (err) {
    throw new ConfigError(`${flag}: ${(err as Error).message}`);
  }
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

/**
 * Runs the node agent until SIGTERM or SIGINT (or does `--cleanup` and returns).
 * @throws ConfigError for a bad flag value, an unloadable kubeconfig or (with --bind-address-hard-fail) an unbindable port
 */
export async function runProxy(flags: RunFlags, log: Logger): Promise<void> {
  if (flags.cleanup) {
    log.info(await cleanupAll(FAMILY), 'cleanup done');
    return;
  }
  if (flags.iptablesSyncPeriod <= 0) throw new ConfigError('--iptables-sync-period must be greater than 0');
  const node = nodeName(flags);
  const clusterCIDR = clusterCIDRFor(parseCidrs(flags.clusterCidr, '--cluster-cidr'), FAMILY);
  const nodePortAddresses = parseCidrs(flags.nodeportAddresses, '--nodeport-addresses').filter((c) => c.family === FAMILY);
  let kc: ReturnType<typeof loadKubeConfig>;
  try {
    kc = loadKubeConfig(flags.kubeconfig, flags.master);
  } catch (err) {
    throw new ConfigError(`cannot load the kubeconfig${flags.kubeconfig ? ` ${flags.kubeconfig}` : ''}: ${(err as Error).message}`);
  }
  if (!clusterCIDR && !flags.masqueradeAll) log.warn('no --cluster-cidr for IPv4: traffic from outside the pod network to ClusterIPs is not masqueraded');

  const queue = new EventQueue();
  const store = new ProxyStateStore(node);
  const supervisor: SupervisorOptions = { stallMs: flags.watchStallTimeout };
  const source = new KubeSource(kc, node, queue, log, supervisor);
  const metrics = new ProxyMetrics(() => source.stats());
  const health = new ProxyHealth(2 * flags.iptablesSyncPeriod);
  log.info(
    { node, mode: flags.proxyMode, dryRun: flags.dryRun, server: kc.getCurrentCluster()?.server, minSyncPeriodMs: flags.iptablesMinSyncPeriod, syncPeriodMs: flags.iptablesSyncPeriod },
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
    let liberal = await tcpBeLiberal();
    const backend = createBackend(flags.proxyMode, FAMILY, { tcpBeLiberal: () => liberal, output: flags.output });
    if (!flags.dryRun) await cleanupOtherModes(flags.proxyMode, FAMILY, log);
    const nodePortHealth = flags.dryRun ? undefined : new ServiceHealthServers('0.0.0.0', () => health.healthy(Date.now()), log);
    serviceHealth = nodePortHealth;
    // One at a time, so a hard failure of the second still closes the first (finally, below).
    servers.push(await startServer('healthz', flags.healthzBindAddress, flags.bindAddressHardFail, (b) => startHealthServer(health, metrics, b), log));
    servers.push(await startServer('metrics', flags.metricsBindAddress, flags.bindAddressHardFail, (b) => startMetricsServer(metrics, b), log));

    const runner = new ProxyRunner({
      store,
      queue,
      backend,
      config: () => ({
        family: FAMILY,
        clusterCIDR,
        masqueradeAll: flags.masqueradeAll,
        masqueradeBit: flags.iptablesMasqueradeBit,
        nodePortAddresses,
        localAddresses: localAddresses(),
      }),
      timing: { minSyncPeriodMs: flags.iptablesMinSyncPeriod, syncPeriodMs: flags.iptablesSyncPeriod },
      health,
      metrics,
      log,
      conntrack: deleteConntrackEntries,
      ...(nodePortHealth ? { healthChecks: (targets) => nodePortHealth.update(targets) } : {}),
      ...(flags.dryRun ? { dryRun: (change: string) => void process.stdout.write(`# sync at ${new Date().toISOString()}\n${change}`) } : {}),
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
