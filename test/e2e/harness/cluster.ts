/**
 * A two-node dual-stack test cluster made of network namespaces, for proving rules with real packets.
 *
 *   client (external)              node-1 (kproxy's rules)                   node-2 (remote node)
 *   eth0 198.18.0.2/24     ──────  ext0 198.18.0.1/24
 *        2001:db8:ff::2/64              2001:db8:ff::1/64
 *   + /32 and /128 client          lan0 192.0.2.21/24     ─────────────────  lan0 192.0.2.22/24
 *     addresses                         2001:db8:1::21/64                         2001:db8:1::22/64
 *                                  p<i> ── pod (10.244.1.x/32,                p<i> ── pod (10.244.2.x/32,
 *                                              fd00:10:244:1::x/128)                    fd00:10:244:2::x/128)
 *
 * The addresses are those of the dual-stack fixtures (test/fixtures/dualstack). Pods are routed,
 * not bridged (a /32 and a /128 per pod, link-local gateways 169.254.1.1 and fe80::1, as Calico
 * does), so hairpin traffic goes back out the pod's veth without br_netfilter. IPv6 addresses are
 * added without duplicate address detection, so they work at once. Only namespaces made here are
 * touched: nothing runs in or changes the root namespace. Every namespace and process is removed
 * by destroy(), and by an exit hook if a test run dies.
 */
import { execa } from 'execa';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { endpoint, endpointSlice } from '../../support/objects.ts';

export const ROOT = resolve(import.meta.dirname, '../../..');
const NODE = join(ROOT, 'node_modules/.bin/node');
const AGENT = join(import.meta.dirname, 'agent.ts');
const KPROXY = join(ROOT, 'bin/kproxy');

/** The proxy modes every conformance scenario runs in: one suite, two backends. */
export const MODES = ['iptables', 'nftables'] as const;
export type Mode = (typeof MODES)[number];

export const NODE1_IP = '192.0.2.21';
export const NODE2_IP = '192.0.2.22';
export const NODE1_EXT_IP = '198.18.0.1';
export const CLIENT_IP = '198.18.0.2';
const GATEWAY = '169.254.1.1';
export const NODE1_IP6 = '2001:db8:1::21';
export const NODE2_IP6 = '2001:db8:1::22';
export const NODE1_EXT_IP6 = '2001:db8:ff::1';
export const CLIENT_IP6 = '2001:db8:ff::2';
const GATEWAY6 = 'fe80::1';

/** A pod: a namespace on a node, answering on the given ports with its name (on both families when it has both addresses). */
export interface PodSpec {
  readonly name: string;
  readonly ip: string;
  /** Its IPv6 address (a /128 routed to it), if any: fd00:10:244:1::x on node-1, fd00:10:244:2::x on node-2. */
  readonly ip6?: string;
  readonly node: 'node-1' | 'node-2';
  readonly tcp?: readonly number[];
  readonly udp?: readonly number[];
}

/**
 * The pods of the bundled fixture cluster (examples/, test/fixtures/README.md): one at every
 * endpoint address, answering on the endpoint's ports, and `src`, a client pod on node-1.
 */
export const FIXTURE_PODS: readonly PodSpec[] = [
  { name: 'apiserver', ip: '10.254.254.1', node: 'node-1', tcp: [6443] },
  { name: 'coredns-0', ip: '10.244.1.2', node: 'node-1', tcp: [53, 9153], udp: [53] },
  { name: 'coredns-1', ip: '10.244.2.2', node: 'node-2', tcp: [53, 9153], udp: [53] },
  { name: 'api-0', ip: '10.244.1.20', node: 'node-1', tcp: [9000] },
  { name: 'api-1', ip: '10.244.2.20', node: 'node-2', tcp: [9000] },
  { name: 'api-2', ip: '10.244.2.21', node: 'node-2', tcp: [9000] },
  { name: 'checkout-0', ip: '10.244.1.30', node: 'node-1', tcp: [8080] },
  { name: 'checkout-1', ip: '10.244.2.30', node: 'node-2', tcp: [8080] },
  { name: 'frontend-0', ip: '10.244.1.10', node: 'node-1', tcp: [8080, 8443] },
  { name: 'frontend-1', ip: '10.244.1.11', node: 'node-1', tcp: [8080, 8443] },
  { name: 'frontend-2', ip: '10.244.2.10', node: 'node-2', tcp: [8080, 8443] },
  { name: 'metrics-0', ip: '10.244.1.50', node: 'node-1', udp: [8125] },
  { name: 'metrics-1', ip: '10.244.2.50', node: 'node-2', udp: [8125] },
  { name: 'src', ip: '10.244.1.99', node: 'node-1' },
];

/** What a probe saw. */
export interface ProbeResult {
  readonly answers: readonly { readonly name: string; readonly peer: string }[];
  readonly refused: number;
  readonly timeout: number;
  readonly errors: readonly string[];
}

/** Where a probe starts: the external client, node-1 itself, node-2, or a pod by name. */
/** A namespace of the cluster: `client`, `node-1`, `node-2`, or a pod's name. */
export type Origin = string;

const live = new Set<string>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const ns of live) {
      try {
        execFileSync('ip', ['netns', 'pids', ns])
          .toString()
          .split('\n')
          .filter(Boolean)
          .forEach((pid) => process.kill(Number(pid), 'SIGKILL'));
        execFileSync('ip', ['netns', 'del', ns]);
      } catch {
        // best effort while exiting
      }
    }
  });
}

async function ip(...args: string[]): Promise<void> {
  await execa('ip', args, { timeout: 10_000 });
}

/**
 * A veth pair between two namespaces, each end addressed and up: [namespace, device, addresses/prefix...].
 * IPv6 addresses skip duplicate address detection (`nodad`).
 */
async function link(a: [string, string, ...string[]], b: [string, string, ...string[]]): Promise<void> {
  await ip('-n', a[0], 'link', 'add', a[1], 'type', 'veth', 'peer', 'name', b[1], 'netns', b[0]);
  for (const [ns, dev, ...addrs] of [a, b]) {
    for (const addr of addrs) await ip('-n', ns, 'addr', 'add', addr, 'dev', dev, ...(addr.includes(':') ? ['nodad'] : []));
    await ip('-n', ns, 'link', 'set', dev, 'up');
  }
}

/** The test cluster. Create with {@link TestCluster.create}; always `destroy()` it (afterAll). */
export class TestCluster {
  readonly id = randomBytes(3).toString('hex');
  readonly dir = mkdtempSync(join(tmpdir(), 'kproxy-e2e-'));
  readonly pods = new Map<string, PodSpec>();
  readonly #namespaces: string[] = [];
  readonly #servers: { kill(signal: NodeJS.Signals): boolean; then: PromiseLike<unknown>['then'] }[] = [];
  #agent: { kill(signal: NodeJS.Signals): boolean; then: PromiseLike<unknown>['then']; pid?: number | undefined } | undefined;
  #pending: Promise<void> = Promise.resolve();
  /** The proxy mode `sync` and `startAgent` pass to kproxy. */
  readonly mode: Mode;

  private constructor(mode: Mode) {
    this.mode = mode;
  }

  /** Namespace name of an origin. */
  ns(origin: Origin): string {
    return `kp${this.id}-${origin}`;
  }

  /**
   * Builds the namespaces, links and routes, and starts the pods' servers.
   * @param clientAddresses extra /32 source addresses the external client may use
   * @param mode the proxy mode kproxy runs in
   */
  static async create(pods: readonly PodSpec[], clientAddresses: readonly string[] = [], mode: Mode = 'iptables'): Promise<TestCluster> {
    hookExit();
    const c = new TestCluster(mode);
    try {
      await c.#build(pods, clientAddresses);
    } catch (err) {
      await c.destroy();
      throw err;
    }
    return c;
  }

  async #addNamespace(origin: Origin): Promise<string> {
    const ns = this.ns(origin);
    await ip('netns', 'add', ns);
    live.add(ns);
    this.#namespaces.push(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    // icmp_ratelimit 0: REJECT answers with ICMP, which the kernel otherwise rate-limits per peer.
    // accept_dad 0: link-local addresses of new links are usable at once.
    for (const [key, value] of [
      ['net.ipv4.ip_forward', '1'],
      ['net.ipv4.conf.all.rp_filter', '0'],
      ['net.ipv4.conf.default.rp_filter', '0'],
      ['net.ipv4.icmp_ratelimit', '0'],
      ['net.ipv6.conf.all.disable_ipv6', '0'],
      ['net.ipv6.conf.all.forwarding', '1'],
      ['net.ipv6.conf.all.accept_dad', '0'],
      ['net.ipv6.conf.default.accept_dad', '0'],
      ['net.ipv6.icmp.ratelimit', '0'],
    ]) {
      await execa('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `${key}=${value}`]);
    }
    return ns;
  }

  async #build(pods: readonly PodSpec[], clientAddresses: readonly string[]): Promise<void> {
    const n1 = await this.#addNamespace('node-1');
    const n2 = await this.#addNamespace('node-2');
    const cl = await this.#addNamespace('client');
    await link([n1, 'lan0', `${NODE1_IP}/24`, `${NODE1_IP6}/64`], [n2, 'lan0', `${NODE2_IP}/24`, `${NODE2_IP6}/64`]);
    await ip('-n', n1, 'route', 'add', '10.244.2.0/24', 'via', NODE2_IP);
    await ip('-n', n1, '-6', 'route', 'add', 'fd00:10:244:2::/64', 'via', NODE2_IP6);
    await ip('-n', n2, 'route', 'add', 'default', 'via', NODE1_IP);
    await ip('-n', n2, '-6', 'route', 'add', 'default', 'via', NODE1_IP6);
    await link([n1, 'ext0', `${NODE1_EXT_IP}/24`, `${NODE1_EXT_IP6}/64`], [cl, 'eth0', `${CLIENT_IP}/24`, `${CLIENT_IP6}/64`]);
    await ip('-n', cl, 'route', 'add', 'default', 'via', NODE1_EXT_IP);
    await ip('-n', cl, '-6', 'route', 'add', 'default', 'via', NODE1_EXT_IP6);
    await ip('-n', n1, 'route', 'add', 'default', 'via', CLIENT_IP);
    await ip('-n', n1, '-6', 'route', 'add', 'default', 'via', CLIENT_IP6);
    for (const a of clientAddresses) {
      const six = a.includes(':');
      await ip('-n', cl, 'addr', 'add', `${a}/${six ? 128 : 32}`, 'dev', 'eth0', ...(six ? ['nodad'] : []));
      await ip('-n', n1, 'route', 'add', `${a}/${six ? 128 : 32}`, 'via', six ? CLIENT_IP6 : CLIENT_IP);
    }
    let index = 0;
    for (const pod of pods) {
      const host = this.ns(pod.node);
      const ns = await this.#addNamespace(pod.name);
      const dev = `p${index++}`;
      await link([host, dev, `${GATEWAY}/32`, ...(pod.ip6 ? [`${GATEWAY6}/64`] : [])], [ns, 'eth0', `${pod.ip}/32`, ...(pod.ip6 ? [`${pod.ip6}/128`] : [])]);
      await ip('-n', host, 'route', 'add', `${pod.ip}/32`, 'dev', dev);
      await ip('-n', ns, 'route', 'add', GATEWAY, 'dev', 'eth0');
      await ip('-n', ns, 'route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0');
      if (pod.ip6) {
        await ip('-n', host, '-6', 'route', 'add', `${pod.ip6}/128`, 'dev', dev);
        await ip('-n', ns, '-6', 'route', 'add', 'default', 'via', GATEWAY6, 'dev', 'eth0');
      }
      this.pods.set(pod.name, pod);
    }
    await Promise.all(pods.map((p) => this.#startServer(p)));
    // The first IPv6 packet across a fresh veth link is lost here (TCP recovers after its 1 s SYN
    // retransmit, longer than a probe waits): one connection over each link first. Refused is the answer.
    if (pods.some((p) => p.ip6)) {
      await this.probe('node-1', 'tcp', NODE2_IP6, 9, { timeoutMs: 3000 });
      await this.probe('client', 'tcp', NODE1_EXT_IP6, 9, { timeoutMs: 3000 });
    }
  }

  async #startServer(pod: PodSpec): Promise<void> {
    if (!pod.tcp?.length && !pod.udp?.length) return;
    const args = ['netns', 'exec', this.ns(pod.name), NODE, AGENT, 'serve', pod.name, '--tcp', (pod.tcp ?? []).join(','), '--udp', (pod.udp ?? []).join(','), ...(pod.ip6 ? ['--ipv6'] : [])];
    const proc = execa('ip', args, { reject: false, buffer: false });
    this.#servers.push(proc);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pod ${pod.name} did not start`)), 15_000);
      proc.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void proc.then(() => reject(new Error(`pod ${pod.name} server exited`)));
    });
  }

  /** Writes objects (Services, EndpointSlices, Nodes) as a JSON List; returns the file path. */
  writeObjects(objects: readonly object[], name = `input-${Date.now()}.json`): string {
    const path = join(this.dir, name);
    writeFileSync(path, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    return path;
  }

  /** Runs bin/kproxy inside node-1's namespace. Rejects on a non-zero exit. */
  async kproxy(args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
    const r = await execa('ip', ['netns', 'exec', this.ns('node-1'), KPROXY, ...args], { timeout: 60_000 });
    return { stdout: r.stdout, stderr: r.stderr };
  }

  /** Runs bin/kproxy inside node-1's namespace and resolves to its output and exit status, whatever the status. */
  async kproxyResult(args: readonly string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const r = await execa('ip', ['netns', 'exec', this.ns('node-1'), KPROXY, ...args], { timeout: 60_000, reject: false });
    if (r.exitCode === undefined) throw new Error(`kproxy ${args[0]} did not finish: ${r.shortMessage}`);
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
  }

  /**
   * Applies rules for `objects` with `kproxy sync` in node-1 (node name node-1) and forgets old
   * connections, so each scenario starts from the rules alone.
   */
  async sync(objects: readonly object[], flags: readonly string[] = ['--cluster-cidr', '10.244.0.0/16']): Promise<void> {
    const file = this.writeObjects(objects);
    await this.kproxy(['sync', '--from', file, '--proxy-mode', this.mode, '--hostname-override', 'node-1', ...flags]);
    await this.flushConntrack();
  }

  /** node-1's proxy rules of one family as the kernel holds them: `iptables-save` / `ip6tables-save`, or kproxy's nft table ('' when absent). */
  async rules(family: 4 | 6 = 4): Promise<string> {
    if (this.mode === 'iptables') return this.onNode(family === 6 ? 'ip6tables-save' : 'iptables-save', []);
    const r = await execa('ip', ['netns', 'exec', this.ns('node-1'), 'nft', 'list', 'table', family === 6 ? 'ip6' : 'ip', 'kube-proxy'], { reject: false, timeout: 30_000 });
    return r.exitCode === 0 ? r.stdout : '';
  }

  /** Breaks node-1's Service dispatch as an admin's mistake would: flushes KUBE-SERVICES, or nft's `services` chain. */
  async flushServiceDispatch(): Promise<void> {
    if (this.mode === 'iptables') await this.onNode('iptables', ['-t', 'nat', '-F', 'KUBE-SERVICES']);
    else await this.onNode('nft', ['flush', 'chain', 'ip', 'kube-proxy', 'services']);
  }

  /** Deletes node-1's conntrack entries (new connections must go through the new rules). */
  async flushConntrack(): Promise<void> {
    await execa('ip', ['netns', 'exec', this.ns('node-1'), 'conntrack', '-F'], { reject: false });
  }

  /** Runs a command in node-1's namespace (iptables-save and the like). */
  async onNode(cmd: string, args: readonly string[], input?: string): Promise<string> {
    const r = await execa('ip', ['netns', 'exec', this.ns('node-1'), cmd, ...args], { timeout: 30_000, ...(input === undefined ? {} : { input }) });
    return r.stdout;
  }

  /**
   * Sends `count` fresh connections (TCP) or datagrams (UDP) from `origin` to `host:port`.
   * Probes run one origin at a time per cluster so counts stay exact.
   */
  async probe(origin: Origin, proto: 'tcp' | 'udp', host: string, port: number, opts: { count?: number; bind?: string; timeoutMs?: number; sport?: number } = {}): Promise<ProbeResult> {
    const args = ['netns', 'exec', this.ns(origin), NODE, AGENT, 'probe', proto, host, String(port), '--count', String(opts.count ?? 1), '--timeout', String(opts.timeoutMs ?? 1000)];
    if (opts.bind) args.push('--bind', opts.bind);
    if (opts.sport) args.push('--sport', String(opts.sport));
    const run = this.#pending.then(() => execa('ip', args, { timeout: 120_000 }));
    this.#pending = run.then(
      () => undefined,
      () => undefined,
    );
    const r = await run;
    return JSON.parse(r.stdout) as ProbeResult;
  }

  /**
   * One fresh connection from each origin to each target, all at once (a reachability matrix in
   * about one timeout): per origin, per target in order, the name that answered or `!` and the
   * failure (`!TIMEOUT`, `!ECONNREFUSED`). Runs after, and before, any other probe of this cluster.
   */
  async probeMatrix(origins: readonly Origin[], targets: readonly (readonly ['tcp' | 'udp', string, number])[], timeoutMs = 1000): Promise<Map<Origin, string[]>> {
    const one = (origin: Origin) =>
      execa('ip', ['netns', 'exec', this.ns(origin), NODE, AGENT, 'matrix', '--targets', JSON.stringify(targets), '--timeout', String(timeoutMs)], { timeout: 60_000 }).then(
        (r) => [origin, JSON.parse(r.stdout) as string[]] as const,
      );
    const run = this.#pending.then(() => Promise.all(origins.map(one)));
    this.#pending = run.then(
      () => undefined,
      () => undefined,
    );
    return new Map(await run);
  }

  /**
   * Hands `server` a listener on `origin`'s loopback (127.0.0.1, a fresh port): a helper process
   * opens it inside the namespace and passes it over IPC, so a server running in the test process
   * (the test API server) is reachable only from inside that namespace. Resolves to the port.
   */
  async serveInNamespace(origin: Origin, listenOn: (handle: unknown) => Promise<void>): Promise<number> {
    const child = spawn('ip', ['netns', 'exec', this.ns(origin), NODE, AGENT, 'listen-socket'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    try {
      const [port, handle] = await new Promise<[number, unknown]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('listen-socket helper did not answer')), 10_000);
        child.once('message', (msg: { port: number }, h: unknown) => {
          clearTimeout(timer);
          resolve([msg.port, h]);
        });
        child.once('exit', (code) => reject(new Error(`listen-socket helper exited with ${code}`)));
      });
      await listenOn(handle);
      return port;
    } finally {
      child.kill('SIGKILL');
    }
  }

  /**
   * Starts `kproxy run --proxy-mode <mode>` in node-1 in the background (stdout and stderr to files
   * in the cluster's directory). Only one at a time; {@link stopAgent} ends it.
   */
  startAgent(args: readonly string[]): { stdout: string; stderr: string } {
    if (this.#agent) throw new Error('kproxy run is already running');
    const n = Date.now();
    const files = { stdout: join(this.dir, `run-${n}.out`), stderr: join(this.dir, `run-${n}.err`) };
    this.#agent = execa('ip', ['netns', 'exec', this.ns('node-1'), KPROXY, 'run', '--proxy-mode', this.mode, ...args], {
      reject: false,
      buffer: false,
      stdout: { file: files.stdout },
      stderr: { file: files.stderr },
    });
    return files;
  }

  /**
   * Stops `kproxy run`: SIGTERM (graceful), or SIGKILL to every process in node-1's namespace
   * (a crash: nothing runs after the signal).
   */
  async stopAgent(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const agent = this.#agent;
    if (!agent) return;
    this.#agent = undefined;
    if (signal === 'SIGKILL') {
      const pids = (await execa('ip', ['netns', 'pids', this.ns('node-1')], { reject: false })).stdout.split('\n').filter(Boolean);
      for (const pid of pids) {
        // A short-lived process of the namespace (an nft or iptables run of kproxy's) may exit between
        // the listing and the kill.
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      }
    } else agent.kill('SIGTERM');
    const timer = setTimeout(() => agent.kill('SIGKILL'), 10_000);
    await agent;
    clearTimeout(timer);
  }

  /** GET `url` from inside `origin`'s namespace. */
  async httpGet(origin: Origin, url: string): Promise<{ status?: number; body?: string; error?: string }> {
    const r = await execa('ip', ['netns', 'exec', this.ns(origin), NODE, AGENT, 'http-get', url], { timeout: 30_000 });
    return JSON.parse(r.stdout) as { status?: number; body?: string; error?: string };
  }

  /** Stops every server and deletes every namespace this cluster made. Safe to call twice. */
  async destroy(): Promise<void> {
    await this.stopAgent('SIGKILL');
    for (const s of this.#servers) s.kill('SIGKILL');
    await Promise.allSettled(this.#servers);
    for (const ns of this.#namespaces.reverse()) {
      await execa('ip', ['netns', 'del', ns], { reject: false });
      live.delete(ns);
    }
    this.#namespaces.length = 0;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Answer counts by pod name. */
export function tally(r: ProbeResult): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of r.answers) out[a.name] = (out[a.name] ?? 0) + 1;
  return out;
}

/** The distinct peer addresses endpoints saw. */
export function peers(r: ProbeResult): string[] {
  return [...new Set(r.answers.map((a) => a.peer))].sort();
}

/**
 * Polls `get` until `accept` holds; bounded in attempts (200) and time.
 * @throws Error with the last value when it is not reached within `timeoutMs`
 */
export async function eventually<T>(get: () => Promise<T>, accept: (r: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: T | undefined;
  for (let i = 0; i < 200 && Date.now() < end; i++) {
    last = await get();
    if (accept(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`not reached within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

/** A probe every answer of which came from one of `names`, and each of them answered at least once. */
export const onlyFrom =
  (...names: string[]) =>
  (r: ProbeResult): boolean =>
    r.answers.length > 0 && Object.keys(tally(r)).every((n) => names.includes(n)) && names.every((n) => tally(r)[n]);

/** The EndpointSlice of `demo/web` (port 8080) with endpoints at `ips`, on node-1 (10.244.1.x) or node-2. */
export const webSlice = (ips: string[]): Record<string, unknown> =>
  endpointSlice(
    'demo/web',
    [{ name: 'http', port: 8080 }],
    ips.map((ip) => endpoint(ip, { node: ip.startsWith('10.244.1.') ? 'node-1' : 'node-2' })),
  );

/**
 * Waits out the spacing of deep verifies after a whole-table write by a writer made with
 * `verifyBudget: 1` (verify.ts: the write counts as a deep read of its cost, so the next deep read
 * waits as long as the write took; the small tables of these tests are written well within this).
 */
export function settle(ms = 400): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
