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
import type { FamilyOutcome, Reconciler } from '../runner/reconciler.ts';
import { SourceError } from '../sources/file.ts';
import type { IPFamily } from '../state/ip.ts';
import type { ProxyStateStore } from '../state/store.ts';
import { ConfigError } from './config.ts';
import { tcpBeLiberal } from './host.ts';
import { ALL_FAMILIES, loadFileInput, settingsFromFlags, warnUnmasqueraded } from './node.ts';
import type { PolicyReconciler } from '../runner/policy.ts';
import type { PolicyStateStore } from '../state/policystore.ts';
import { collect, nodeFlags, nodeName, type ProxyFlags } from './options.ts';
import { runCommand } from './run.ts';
import { CommandExit, inspectCommands } from './inspect.ts';

/** A one-shot command's sync failed in some family; the reconciler has logged why. */
class SyncFailed extends Error {
  override readonly name = 'SyncFailed';
}

/**
 * Syncs each family once, both at once as `run` does (the one-shot commands' use of the
 * reconcilers); the log lines and outcomes come in family order, IPv4 first.
 * @throws SyncFailed when a family failed (every family is still tried)
 */
async function reconcileOnce(reconcilers: readonly Reconciler[], store: ProxyStateStore, log: Logger, message: string): Promise<FamilyOutcome[]> {
  const states = store.servicePortStates();
  const outcomes = await Promise.all(reconcilers.map((r) => r.reconcile(states, store.node, store.serviceCIDRs)));
  for (const o of outcomes) {
    if (o.ok)
      log.info(
        {
          ipFamily: `IPv${o.family}`,
          servicePorts: o.plan!.servicePorts.length,
          endpoints: o.plan!.totalEndpoints,
          phasesMs: o.phasesMs,
          ...(o.report ? { rulesWritten: o.report.rulesWritten, chainsDeleted: o.report.chainsDeleted } : {}),
        },
        message,
      );
  }
  const failed = outcomes.filter((o) => !o.ok);
  if (failed.length > 0) throw new SyncFailed(`IPv${failed.map((o) => o.family).join(', IPv')} failed: ${failed[0]!.error}`);
  return outcomes;
}

/**
 * Plans and writes (or prints) the NetworkPolicy table once (`sync`, `dry-run` with --network-policy).
 * @throws SyncFailed when it failed (the reconciler has logged why)
 */
async function reconcilePolicyOnce(reconciler: PolicyReconciler, policies: PolicyStateStore, store: ProxyStateStore, log: Logger, message: string): Promise<void> {
  const o = await reconciler.reconcile({ state: policies, nodeName: store.nodeName, nodeAddresses: store.node.addresses });
  if (!o.ok) throw new SyncFailed(`the NetworkPolicy table failed: ${o.error}`);
  const plan = o.plan!;
  log.info(
    {
      localPods: plan.pods.length,
      isolatedPods: plan.pods.filter((p) => p.ingress.isolated || p.egress.isolated).length,
      peerSets: plan.peerSets.size,
      phasesMs: o.phasesMs,
      ...(o.report ? { rulesWritten: o.report.rulesWritten } : {}),
    },
    message,
  );
}

function proxyCommand(program: Command, name: string, summary: string): Command {
  return nodeFlags(program.command(name).description(summary).requiredOption('--from <path>', 'YAML or JSON file or directory of Services, EndpointSlices and Nodes (repeatable)', collect));
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

  proxyCommand(program, 'dry-run', 'print the rules for the given objects (iptables-restore input, or an nft batch) of both IP families, change nothing')
    .addOption(new Option('--output <format>', 'nftables mode: nft text syntax, or the JSON batch exactly as run and sync send it').choices(['text', 'json']).default('text'))
    .addOption(
      new Option('--ip-family <family>', 'print one family only, ready to pipe into iptables-restore / ip6tables-restore / nft (default: both, each under a "# IPv4" / "# IPv6" line)').choices([
        '4',
        '6',
      ]),
    )
    .action(async (flags: ProxyFlags & { output: 'text' | 'json'; ipFamily?: '4' | '6' }) => {
      const { store, policies } = await loadFileInput(flags.from, nodeName(flags), log, flags.networkPolicy);
      const settings = settingsFromFlags(flags);
      const families: readonly IPFamily[] = flags.ipFamily ? [Number(flags.ipFamily) as IPFamily] : ALL_FAMILIES;
      warnUnmasqueraded(log, settings, families);
      const liberal = await tcpBeLiberal();
      // Header lines are comments to iptables-restore and nft alike; JSON batches go one per line instead.
      const headed = families.length > 1 && !(flags.proxyMode === 'nftables' && flags.output === 'json');
      const print = (text: string, family: IPFamily) => void process.stdout.write(headed ? `# IPv${family}\n${text}` : text);
      const { createReconcilers, ONE_SHOT } = await import('./backends.ts');
      const reconcilers = createReconcilers(flags.proxyMode, families, {
        settings,
        tcpBeLiberal: () => liberal,
        output: flags.output,
        applier: { kind: 'print', print },
        timing: ONE_SHOT,
        log,
        retries: false,
      });
      await reconcileOnce(reconcilers, store, log, 'rules printed');
      if (policies) {
        const { createPolicyReconciler } = await import('./backends.ts');
        const policy = createPolicyReconciler({
          output: flags.output,
          timing: ONE_SHOT,
          log,
          retries: false,
          applier: { kind: 'print', print: (text) => void process.stdout.write(flags.output === 'json' ? text : `# NetworkPolicy (inet table, both families)\n${text}`) },
        });
        await reconcilePolicyOnce(policy, policies, store, log, 'NetworkPolicy table printed');
      }
    });

  proxyCommand(program, 'sync', 'apply the rules of both IP families once, atomically per family (iptables-restore / ip6tables-restore --noflush, or one nft transaction each)').action(
    async (flags: ProxyFlags) => {
      const { store, policies } = await loadFileInput(flags.from, nodeName(flags), log, flags.networkPolicy);
      const settings = settingsFromFlags(flags);
      const { createReconcilers, ONE_SHOT } = await import('./backends.ts');
      const { cleanupOtherModes, nodeFamilies } = await import('./cleanup.ts');
      const families = await nodeFamilies(flags.proxyMode, log);
      warnUnmasqueraded(log, settings, families);
      const liberal = await tcpBeLiberal();
      await cleanupOtherModes(flags.proxyMode, families, log);
      const reconcilers = createReconcilers(flags.proxyMode, families, { settings, tcpBeLiberal: () => liberal, output: 'text', applier: { kind: 'write' }, timing: ONE_SHOT, log, retries: false });
      const { cleanupPolicyTable } = await import('./cleanup.ts');
      if (!policies) await cleanupPolicyTable(log);
      await reconcileOnce(reconcilers, store, log, 'rules applied');
      if (policies) {
        const { createPolicyReconciler } = await import('./backends.ts');
        const policy = createPolicyReconciler({ output: 'text', timing: ONE_SHOT, log, retries: false, applier: { kind: 'write' } });
        await reconcilePolicyOnce(policy, policies, store, log, 'NetworkPolicy table applied');
      }
    },
  );

  runCommand(program, log);
  inspectCommands(program, log);

  program
    .command('cleanup')
    .description('remove every rule, chain and table kproxy (or kube-proxy) installed, in both modes, and nothing else')
    .addOption(new Option('--proxy-mode <mode>', 'accepted for kube-proxy compatibility: both modes are always cleaned up').choices(PROXY_MODES))
    .action(async () => {
      const { cleanupAll } = await import('./cleanup.ts');
      log.info(await cleanupAll(), 'cleanup done');
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
    if (err instanceof CommandExit) return err.status;
    if (err instanceof SyncFailed) return 1; // the reconciler logged the failure with its facts
    if (err instanceof ToolError) log.error({ err: errorFacts(err) }, err.message);
    else if (err instanceof SourceError || err instanceof ConfigError) log.error(err.message);
    else log.error({ err }, `kproxy failed: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
