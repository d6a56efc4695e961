/**
 * The operator commands: `explain` (where a packet goes and why), `list` (what is programmed, one
 * line per service port) and `verify` (does the kernel hold what kproxy wants). They read the same
 * input as `dry-run` (`--from` files) or, without `--from`, make one read of the live API
 * (`--kubeconfig`, `--master`, or in-cluster), take the same node flags, and plan as `run` does.
 * @module
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Logger } from 'pino';
import { classifySource, EXPLAIN_EXIT, explainPacket, type PacketSource } from '../planner/explain.ts';
import { listPolicies, listServicePorts } from '../planner/list.ts';
import { planProxy, type ProxyPlan } from '../planner/plan.ts';
import { parseIP, type IPAddress, type IPFamily } from '../state/ip.ts';
import type { Protocol } from '../state/model.ts';
import type { ProxyStateStore } from '../state/store.ts';
import { iptablesRuleNames } from '../backends/iptables/explain.ts';
import { nftablesRuleNames } from '../backends/nftables/explain.ts';
import { formatDrift, formatExplanation, formatList, formatPolicyExplanations, formatPolicyList, type FamilyDrift } from './format.ts';
import { planPolicies, type PolicyPlan } from '../planner/policy.ts';
import { explainPolicy, type PolicyExplanation } from '../planner/policyexplain.ts';
import { POLICY_TABLE, podChainName } from '../backends/policy/render.ts';
import type { PolicyStateStore } from '../state/policystore.ts';
import { tcpBeLiberal } from './host.ts';
import { ALL_FAMILIES, loadApiInput, loadFileInput, proxyConfig, settingsFromFlags, type NodeSettings } from './node.ts';
import { collect, nodeFlags, nodeName, type ProxyFlags } from './options.ts';

/** The JSON forms: every documented field present, `null` where the text form shows nothing. */
function json(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v === undefined ? null : v), 2);
}

/** `explain --network-policy`'s exit status when the policy table drops the packet wherever it may end up. */
export const POLICY_DENIED_EXIT = 5;

/** A command finished with a status other than 0 that is not an error (explain's 3 and 4, verify's 1). */
export class CommandExit extends Error {
  override readonly name = 'CommandExit';
  readonly status: number;
  constructor(status: number) {
    super(`exit status ${status}`);
    this.status = status;
  }
}

/** Flags of the operator commands: the node flags, and where the objects come from. */
export interface InspectFlags extends Omit<ProxyFlags, 'from'> {
  readonly from?: readonly string[];
  readonly kubeconfig?: string;
  readonly master?: string;
}

/** A destination `IP:PORT` or `[IPv6]:PORT`. */
export interface HostPort {
  readonly ip: IPAddress;
  readonly port: number;
}

/**
 * commander parser for `explain`'s DEST.
 * @throws InvalidArgumentError naming what is wrong
 */
export function parseDestination(text: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  const ip = m ? parseIP(m[1]!) : undefined;
  const port = m ? Number(m[2]) : 0;
  if (!m || !ip || ip.family !== (m[0].startsWith('[') ? 6 : 4)) throw new InvalidArgumentError('must be IP:PORT, or [IPv6]:PORT');
  if (port < 1 || port > 65535) throw new InvalidArgumentError('the port must be 1-65535');
  return { ip, port };
}

/** commander parser for `--source`: `pod`, `node`, `external`, or an address. */
export function parseSource(text: string): { readonly kind: 'pod' | 'node' | 'external' } | { readonly ip: IPAddress } {
  if (text === 'pod' || text === 'node' || text === 'external') return { kind: text };
  const ip = parseIP(text);
  if (!ip) throw new InvalidArgumentError('must be pod, node, external, or an IP address');
  return { ip };
}

function inspectCommand(program: Command, name: string, summary: string): Command {
  return nodeFlags(
    program
      .command(name)
      .description(summary)
      .option('--from <path>', 'YAML or JSON file or directory of Services, EndpointSlices and Nodes (repeatable); without it, one read of the API server', collect)
      .option('--kubeconfig <file>', 'kubeconfig for the API read (default: in-cluster, then $KUBECONFIG or ~/.kube/config)')
      .option('--master <url>', "API server address, overriding the kubeconfig's"),
  );
}

async function load(flags: InspectFlags, log: Logger): Promise<{ store: ProxyStateStore; policies: PolicyStateStore | undefined; settings: NodeSettings }> {
  const settings = settingsFromFlags(flags);
  const name = nodeName(flags);
  const input =
    flags.from && flags.from.length > 0 ? await loadFileInput(flags.from, name, log, flags.networkPolicy) : await loadApiInput(flags.kubeconfig, flags.master, name, log, flags.networkPolicy);
  return { ...input, settings };
}

/** This node's NetworkPolicy plan (--network-policy). */
function planPolicy(store: ProxyStateStore, policies: PolicyStateStore): PolicyPlan {
  return planPolicies({ state: policies, nodeName: store.nodeName, nodeAddresses: store.node.addresses });
}

function plan(store: ProxyStateStore, settings: NodeSettings, family: IPFamily): ProxyPlan {
  return planProxy(store.servicePortStates(), store.node, proxyConfig(settings, family)(), undefined, store.serviceCIDRs);
}

/** Registers `explain`, `list` and `verify` on the program. */
export function inspectCommands(program: Command, log: Logger): void {
  inspectCommand(program, 'explain', 'explain where a packet to DEST (IP:PORT) goes on this node and why, decision by decision, naming the rule that makes each')
    .argument('<dest>', 'destination IP:PORT ([IPv6]:PORT): a ClusterIP, externalIP, load-balancer IP, or a node address with a NodePort', parseDestination)
    .option('--source <who>', 'the source: pod (a pod on this node), node (the node itself), external (a client outside the cluster), or an IP address', parseSource, { kind: 'external' as const })
    .addOption(new Option('--protocol <protocol>', 'transport protocol').choices(['tcp', 'udp', 'sctp']).default('tcp'))
    .addOption(new Option('--output <format>', 'text for a person, json for scripts').choices(['text', 'json']).default('text'))
    .action(async (dest: HostPort, flags: InspectFlags & { source: ReturnType<typeof parseSource>; protocol: string; output: 'text' | 'json' }) => {
      const { store, policies, settings } = await load(flags, log);
      const family = dest.ip.family;
      const config = proxyConfig(settings, family)();
      const p = plan(store, settings, family);
      let source: PacketSource;
      if ('ip' in flags.source) {
        if (flags.source.ip.family !== family) {
          log.error(`--source ${flags.source.ip.text} is not of DEST's IP family (IPv${family})`);
          throw new CommandExit(2);
        }
        source = { kind: classifySource(flags.source.ip, store.node, config), ip: flags.source.ip };
      } else source = { kind: flags.source.kind, ip: undefined };
      const names = flags.proxyMode === 'nftables' ? nftablesRuleNames(p) : iptablesRuleNames(p);
      const e = explainPacket(store.servicePortStates(), store.node, config, p, { destination: dest.ip, port: dest.port, protocol: flags.protocol.toUpperCase() as Protocol, source }, names);
      // With --network-policy and a source address: the policy table's decision for each place the packet may end up.
      let policy: PolicyExplanation[] | undefined;
      if (policies && source.ip) {
        const pp = planPolicy(store, policies);
        const ends = e.verdict === 'DNAT' ? e.endpoints.map((ep) => [ep.address, ep.port] as const) : e.verdict === 'NO_MATCH' ? [[dest.ip.text, dest.port] as const] : [];
        const ip = source.ip.text;
        policy = ends.map(([address, port]) => explainPolicy(pp, ip, address, flags.protocol.toUpperCase() as Protocol, port, podChainName));
      } else if (policies) log.warn('--network-policy explains a packet from an address: give --source IP');
      process.stdout.write(flags.output === 'json' ? `${json(policy ? { ...e, networkPolicy: policy } : e)}\n` : formatExplanation(e) + (policy ? formatPolicyExplanations(policy) : ''));
      // A pod-to-pod packet matches no Service: then the policy table's decision is the answer.
      const status = policy && e.verdict === 'NO_MATCH' ? 0 : EXPLAIN_EXIT[e.verdict];
      if (status !== 0) throw new CommandExit(status);
      if (policy && policy.length > 0 && policy.every((x) => !x.allowed)) throw new CommandExit(POLICY_DENIED_EXIT);
    });

  inspectCommand(program, 'verify', "compare the rules in this network namespace's kernel with the rules kproxy would write now, per Service; changes nothing")
    .addOption(new Option('--output <format>', 'text for a person, json for scripts').choices(['text', 'json']).default('text'))
    .action(async (flags: InspectFlags & { output: 'text' | 'json' }) => {
      const { store, policies, settings } = await load(flags, log);
      const { createBackend } = await import('./backends.ts');
      const { nodeFamilies } = await import('./cleanup.ts');
      const liberal = await tcpBeLiberal();
      const reports: FamilyDrift[] = [];
      for (const family of await nodeFamilies(flags.proxyMode, log)) {
        const backend = createBackend(flags.proxyMode, family, { tcpBeLiberal: () => liberal, output: 'text' });
        reports.push({ family, mode: flags.proxyMode, items: await backend.compare(backend.render(plan(store, settings, family))) });
      }
      if (policies) {
        const { policyBackend } = await import('../backends/policy/backend.ts');
        const backend = policyBackend();
        reports.push({ family: undefined, mode: `inet ${POLICY_TABLE}`, items: await backend.compare(backend.render(planPolicy(store, policies))) });
      }
      process.stdout.write(flags.output === 'json' ? `${json(reports)}\n` : formatDrift(reports));
      if (reports.some((r) => r.items.length > 0)) throw new CommandExit(1);
    });

  inspectCommand(program, 'list', 'list every service port this node proxies: frontends, policies, flags, and the endpoints in use with their weights')
    .addOption(new Option('--output <format>', 'text (first endpoints), wide (every endpoint), or json').choices(['text', 'wide', 'json']).default('text'))
    .option('--policies', "with --network-policy: list this node's pods instead, each direction's isolation and what its NetworkPolicy rules allow", false)
    .action(async (flags: InspectFlags & { output: 'text' | 'wide' | 'json'; policies: boolean }) => {
      if (flags.policies) {
        if (!flags.networkPolicy) {
          log.error('--policies needs --network-policy (it reads NetworkPolicies, Pods and Namespaces)');
          throw new CommandExit(2);
        }
        const { store, policies } = await load(flags, log);
        const rows = listPolicies(planPolicy(store, policies!));
        process.stdout.write(flags.output === 'json' ? `${json(rows)}\n` : formatPolicyList(rows));
        return;
      }
      const { store, settings } = await load(flags, log);
      const rows = listServicePorts(ALL_FAMILIES.map((f) => plan(store, settings, f)));
      process.stdout.write(flags.output === 'json' ? `${json(rows)}\n` : formatList(rows, flags.output === 'wide'));
    });
}
