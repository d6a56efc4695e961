/**
 * `kproxy run`: the command line of the node agent that replaces kube-proxy in a DaemonSet: its
 * flags, the kube-proxy flags it tolerates, and the config file folded in. The agent itself is
 * agent.ts, loaded only when `run` runs.
 * @module
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Logger } from 'pino';
import { PROXY_MODES } from '../backends/backend.ts';
import type { RunFlags } from './agent.ts';
import { DETECT_LOCAL_MODES, loadConfigFile, parseDuration, type FileSettings } from './config.ts';
import { masqueradeBit, NETWORK_POLICY_HELP } from './options.ts';
import { CONNTRACK_DEFAULTS } from './sysctl.ts';

/**
 * kube-proxy flags kproxy accepts but does not implement (cmd/kube-proxy/app/options.go): a
 * kube-proxy command line carries over, and each of these is logged as unsupported. Any other
 * unknown flag is a usage error.
 */
const UPSTREAM_ONLY_FLAGS = new Set([
  'v',
  'vmodule',
  'feature-gates',
  'bind-address',
  'oom-score-adj',
  'profiling',
  'proxy-port-range',
  'config-sync-period',
  'kube-api-burst',
  'kube-api-qps',
  'kube-api-content-type',
  'iptables-localhost-nodeports',
  'ipvs-exclude-cidrs',
  'ipvs-min-sync-period',
  'ipvs-scheduler',
  'ipvs-strict-arp',
  'ipvs-sync-period',
  'ipvs-tcp-timeout',
  'ipvs-tcpfin-timeout',
  'ipvs-udp-timeout',
  'nftables-min-sync-period',
  'nftables-sync-period',
  'show-hidden-metrics-for-version',
  'logging-format',
  'log-flush-frequency',
  'log-json-info-buffer-size',
  'log-json-split-stream',
  'log-text-info-buffer-size',
  'log-text-split-stream',
  'write-config-to',
  'healthz-port',
  'metrics-port',
  'masquerade-all-udp',
  'boot-id-file',
]);

/**
 * Splits the arguments commander could not place into upstream-only flags (reported) and errors.
 * @throws InvalidArgumentError naming the first flag that is neither kproxy's nor kube-proxy's
 */
export function upstreamOnlyFlags(args: readonly string[]): string[] {
  const flags: string[] = [];
  for (const arg of args) {
    const m = /^--?([a-z0-9-]+)(=.*)?$/.exec(arg);
    if (!m) continue; // a value of the previous flag
    if (!UPSTREAM_ONLY_FLAGS.has(m[1]!)) throw new InvalidArgumentError(`unknown flag ${JSON.stringify(arg.split('=')[0])}`);
    flags.push(m[1]!);
  }
  return flags;
}

const countFlag = (value: string): number => {
  if (!/^\d{1,10}$/.test(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a whole number`);
  return Number(value);
};

const durationFlag = (value: string): number => {
  try {
    return parseDuration(value, 'duration');
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

/** Registers `run` on the program. */
export function runCommand(program: Command, log: Logger): Command {
  return program
    .command('run')
    .description("watch the API server and keep this node's Service rules in sync (what a kube-proxy DaemonSet runs)")
    .option('--config <file>', 'KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) file; flags given on the command line override it')
    .option('--kubeconfig <file>', 'kubeconfig with the API server address and credentials (default: in-cluster service account)')
    .option('--master <url>', "API server address, overriding the kubeconfig's")
    .addOption(new Option('--proxy-mode <mode>', 'which proxy backend to use').choices(PROXY_MODES).default('iptables'))
    .option('--hostname-override <name>', "this node's name (default: the host name)")
    .option('--cluster-cidr <cidrs>', 'pod CIDR(s), one per family: traffic from outside them to ClusterIPs is masqueraded', '')
    .option('--masquerade-all', 'masquerade all traffic to ClusterIPs', false)
    .addOption(
      new Option('--detect-local-mode <mode>', "how this node's pod traffic is told apart: ClusterCIDR (default), NodeCIDR (the Node's spec.podCIDRs), BridgeInterface, InterfaceNamePrefix").choices(
        DETECT_LOCAL_MODES,
      ),
    )
    .option('--pod-bridge-interface <name>', 'with --detect-local-mode BridgeInterface: the bridge the pods are on')
    .option('--pod-interface-name-prefix <prefix>', "with --detect-local-mode InterfaceNamePrefix: the start of the pods' interface names")
    .option('--nodeport-addresses <cidrs>', 'accept NodePorts only on local addresses in these CIDRs (default: all)', '')
    .option('--network-policy', NETWORK_POLICY_HELP, false)
    .option('--iptables-masquerade-bit <bit>', 'bit of the packet mark that flags masquerading (0-31)', masqueradeBit, 14)
    .option('--iptables-sync-period <duration>', 'longest time between full syncs, which also repair flushed rules (both modes)', durationFlag, 30_000)
    .option('--iptables-min-sync-period <duration>', 'shortest time between syncs; changes within it are batched (both modes)', durationFlag, 1_000)
    .option('--healthz-bind-address <host:port>', '/healthz and /livez address; empty to disable', '0.0.0.0:10256')
    .option('--metrics-bind-address <host:port>', '/metrics address; empty to disable', '127.0.0.1:10249')
    .option('--bind-address-hard-fail', 'exit when the healthz or metrics port cannot be bound', false)
    .option('--cleanup', "remove kproxy's (and kube-proxy's) rules and exit", false)
    .option('--init-only', 'set the conntrack sysctls (what needs full root privileges) and exit, as an init container does', false)
    .option('--conntrack-max-per-core <n>', 'conntrack entries per CPU: nf_conntrack_max is raised to this × CPUs (0: leave it)', countFlag, CONNTRACK_DEFAULTS.maxPerCore)
    .option('--conntrack-min <n>', 'floor of the conntrack table size from --conntrack-max-per-core', countFlag, CONNTRACK_DEFAULTS.min)
    .option('--conntrack-tcp-timeout-established <duration>', 'nf_conntrack_tcp_timeout_established (0: leave it)', durationFlag, CONNTRACK_DEFAULTS.tcpEstablishedTimeout * 1000)
    .option('--conntrack-tcp-timeout-close-wait <duration>', 'nf_conntrack_tcp_timeout_close_wait (0: leave it)', durationFlag, CONNTRACK_DEFAULTS.tcpCloseWaitTimeout * 1000)
    .option('--conntrack-tcp-be-liberal', 'set nf_conntrack_tcp_be_liberal to 1', false)
    .option('--conntrack-udp-timeout <duration>', 'nf_conntrack_udp_timeout (0: leave it)', durationFlag, 0)
    .option('--conntrack-udp-timeout-stream <duration>', 'nf_conntrack_udp_timeout_stream (0: leave it)', durationFlag, 0)
    .option('--dry-run', "watch as usual but print each sync's rule changes on stdout instead of applying them", false)
    .addOption(new Option('--output <format>', 'nftables --dry-run: nft text syntax, or the JSON batches exactly as they would be sent').choices(['text', 'json']).default('text'))
    .addOption(new Option('--watch-stall-timeout <duration>', 'restart a watch that stays silent this long').argParser(durationFlag).default(90_000).hideHelp())
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (_opts: RunFlags, cmd: Command) => {
      let ignored: string[];
      try {
        ignored = upstreamOnlyFlags(cmd.args);
      } catch (err) {
        cmd.error((err as Error).message, { exitCode: 2 });
      }
      for (const flag of ignored) log.warn({ flag: `--${flag}` }, `kube-proxy flag --${flag} is not supported by kproxy and has no effect`);
      const flags = await resolveFlags(cmd, log);
      // Loaded here, not at the top: the API client and the writers cost 0.5 s and ~100 MB that the
      // file commands do not need.
      const { runProxy } = await import('./agent.ts');
      await runProxy(flags, log);
    });
}

/** Flags with the config file folded in: file values apply unless the flag was given explicitly. */
async function resolveFlags(cmd: Command, log: Logger): Promise<RunFlags> {
  const flags = cmd.opts<RunFlags>();
  if (!flags.config) return flags;
  const { settings, reports } = await loadConfigFile(flags.config);
  for (const r of reports) log.warn({ config: flags.config, field: r.field, problem: r.problem }, r.message);
  const merged: Record<string, unknown> = { ...flags };
  for (const [key, value] of Object.entries(settings) as [keyof FileSettings, unknown][]) {
    if (cmd.getOptionValueSource(key) !== 'cli') merged[key] = value;
  }
  return merged as unknown as RunFlags;
}
