/**
 * The `kproxy` command line: `run` is the node agent (watch the API, keep the rules in sync),
 * `dry-run` prints the rules for files, `sync` applies them once, `cleanup` removes them. Logs are pino JSON lines on stderr; the rules (dry-run) are the only stdout.
 * Exit status: 0 on success (objects skipped for bad input are warnings, not failures), 1 on
 * errors (unreadable input, a failed iptables or nft run), 2 on bad usage.
 * @module
 */
import { Command, CommanderError, Option } from 'commander';
import { pino, type Logger } from 'pino';
import { PROXY_MODES } from '../backends/backend.ts';
import { errorFacts, ToolError } from '../backends/errors.ts';
import { renderIptables } from '../backends/iptables/render.ts';
import { buildRestoreScript } from '../backends/iptables/restore.ts';
import { formatBatch } from '../backends/nftables/text.ts';
import { fullBatch } from '../backends/nftables/batch.ts';
import { renderNftables } from '../backends/nftables/render.ts';
import { planProxy, type ProxyPlan } from '../planner/plan.ts';
import { readObjectFiles, SourceError } from '../sources/file.ts';
import { ProxyStateStore } from '../state/store.ts';
import { localAddresses, tcpBeLiberal } from './host.ts';
import { runCommand } from './run.ts';
import { logApplyResult, reportConflicts, reportSkipped } from '../runner/runner.ts';
import { ConfigError } from './config.ts';
import { cidrList, clusterCIDRFor, collect, masqueradeBit, nodeName, type ProxyFlags } from './options.ts';

const FAMILY = 4; // IPv4 single-stack for now; the model and planner already carry the family.

/** Reads the input files into a store, logging every skipped object. */
async function loadState(flags: ProxyFlags, log: Logger): Promise<ProxyStateStore> {
  const input = await readObjectFiles(flags.from);
  for (const w of input.warnings) log.warn({ file: w.file }, w.message);
  const store = new ProxyStateStore(nodeName(flags));
  let invalid = 0;
  for (const o of input.nodes) invalid += logApplyResult(log, 'Node', store.applyNode(o));
  for (const o of input.services) invalid += logApplyResult(log, 'Service', store.applyService(o));
  for (const o of input.endpointSlices) invalid += logApplyResult(log, 'EndpointSlice', store.applyEndpointSlice(o));
  log.info({ services: store.serviceCount, invalid, node: store.node.name, zone: store.node.zone }, 'input loaded');
  return store;
}

async function buildPlan(flags: ProxyFlags, log: Logger): Promise<ProxyPlan> {
  const store = await loadState(flags, log);
  const plan = planProxy(store.servicePortStates(), store.node, {
    family: FAMILY,
    clusterCIDR: clusterCIDRFor(flags.clusterCidr, FAMILY),
    masqueradeAll: flags.masqueradeAll,
    masqueradeBit: flags.iptablesMasqueradeBit,
    nodePortAddresses: flags.nodeportAddresses.filter((c) => c.family === FAMILY),
    localAddresses: localAddresses(),
  });
  if (plan.localCIDR === undefined && !plan.masqueradeAll) {
    log.warn('no --cluster-cidr for IPv4: traffic from outside the pod network to ClusterIPs is not masqueraded');
  }
  reportConflicts(log, plan);
  return plan;
}

function proxyCommand(program: Command, name: string, summary: string): Command {
  return program
    .command(name)
    .description(summary)
    .requiredOption('--from <path>', 'YAML or JSON file or directory of Services, EndpointSlices and Nodes (repeatable)', collect)
    .addOption(new Option('--proxy-mode <mode>', 'which proxy backend to use').choices(PROXY_MODES).default('iptables'))
    .option('--hostname-override <name>', "this node's name (default: the host name); endpoints on it are local")
    .option('--cluster-cidr <cidrs>', 'pod CIDR(s), comma-separated, one per family: traffic from outside them to ClusterIPs is masqueraded', cidrList, [])
    .option('--masquerade-all', 'masquerade all traffic to ClusterIPs', false)
    .option('--nodeport-addresses <cidrs>', 'accept NodePorts only on local addresses in these CIDRs (default: all local addresses)', cidrList, [])
    .option('--iptables-masquerade-bit <bit>', 'bit of the packet mark that flags masquerading (0-31)', masqueradeBit, 14);
}

/** Builds the program; `log` receives all diagnostics. Exported for tests. */
export function buildProgram(log: Logger): Command {
  const program = new Command('kproxy')
    .description('A drop-in replacement for kube-proxy: Services and EndpointSlices in, iptables or nftables rules out.')
    .option('--log-level <level>', 'fatal, error, warn, info, debug', 'info')
    .hook('preAction', (cmd) => {
      log.level = cmd.opts<{ logLevel: string }>().logLevel;
    })
    .showHelpAfterError()
    .exitOverride();

  proxyCommand(program, 'dry-run', 'print the rules for the given objects (iptables-restore input, or an nft batch), change nothing')
    .addOption(new Option('--output <format>', 'nftables mode: nft text syntax, or the JSON batch exactly as run and sync send it').choices(['text', 'json']).default('text'))
    .action(async (flags: ProxyFlags & { output: 'text' | 'json' }) => {
      const plan = await buildPlan(flags, log);
      if (flags.proxyMode === 'nftables') {
        const rules = renderNftables(plan);
        reportSkipped(log, undefined, rules.skipped);
        process.stdout.write(formatBatch(fullBatch(rules).commands, flags.output));
      } else {
        const rules = renderIptables(plan, { conntrackTCPBeLiberal: await tcpBeLiberal() });
        reportSkipped(log, undefined, rules.skipped);
        process.stdout.write(buildRestoreScript(rules));
      }
      log.info({ mode: flags.proxyMode, servicePorts: plan.servicePorts.length, endpoints: plan.totalEndpoints }, 'rules printed');
    });

  proxyCommand(program, 'sync', 'apply the rules once, atomically (iptables-restore --noflush, or one nft transaction)').action(async (flags: ProxyFlags) => {
    const plan = await buildPlan(flags, log);
    const liberal = await tcpBeLiberal();
    const { cleanupOtherModes, createBackend } = await import('./backends.ts');
    const backend = createBackend(flags.proxyMode, FAMILY, { tcpBeLiberal: () => liberal, output: 'text' });
    await cleanupOtherModes(flags.proxyMode, FAMILY, log);
    const rules = backend.render(plan);
    reportSkipped(log, undefined, rules.skipped);
    const report = await backend.write(rules, { full: true, previous: undefined });
    log.info({ mode: flags.proxyMode, servicePorts: plan.servicePorts.length, rulesWritten: report.rulesWritten, chainsDeleted: report.chainsDeleted }, 'rules applied');
  });

  runCommand(program, log);

  program
    .command('cleanup')
    .description('remove every rule, chain and table kproxy (or kube-proxy) installed, in both modes, and nothing else')
    .addOption(new Option('--proxy-mode <mode>', 'accepted for kube-proxy compatibility: both modes are always cleaned up').choices(PROXY_MODES))
    .action(async () => {
      const { cleanupAll } = await import('./backends.ts');
      log.info(await cleanupAll(FAMILY), 'cleanup done');
    });
  return program;
}

/** Runs the CLI; resolves to the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  const log = pino({ base: null, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }));
  try {
    await buildProgram(log).parseAsync([...argv], { from: 'user' });
    // What the command cost, for bench/startup.ts and for anyone who asks with --log-level debug.
    log.debug({ seconds: Math.round(process.uptime() * 1000) / 1000, maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) }, 'command done');
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof ToolError) log.error({ err: errorFacts(err) }, err.message);
    else if (err instanceof SourceError || err instanceof ConfigError) log.error(err.message);
    else log.error({ err }, `kproxy failed: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
