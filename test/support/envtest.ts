/**
 * A real kube-apiserver (and etcd) for tests, after controller-runtime's envtest convention:
 * `KUBEBUILDER_ASSETS` names a folder holding `kube-apiserver` and `etcd` (and here also upstream's
 * `kube-proxy`, the oracle). Each of its subfolders that holds a `kube-apiserver` is one more
 * Kubernetes version (the layout `.ci/run` unpacks the assets into: v1.26 at the top, `v1.36/`
 * inside), and the suites run once per version ({@link ASSET_SETS}). Without it, the suites that need
 * it are skipped with one line saying how to enable them ({@link ENVTEST_HINT}).
 *
 * Both listen on free loopback ports of the root namespace only; etcd keeps its data in a
 * throw-away folder; the API server authenticates by a token file (an admin in `system:masters`,
 * and kproxy's ServiceAccount user, which only RBAC empowers) with a throw-away service-account
 * key, and makes its own self-signed serving certificate. There is no controller-manager: tests
 * write EndpointSlices themselves, as a selector-less Service's owner would.
 */
import { execa } from 'execa';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

/** One Kubernetes version's assets: a folder holding its `kube-apiserver`, `etcd` and upstream `kube-proxy`. */
export interface EnvtestAssets {
  /** What `kube-apiserver --version` prints, e.g. `v1.36.2`. */
  readonly version: string;
  /** The minor version, e.g. 36. */
  readonly minor: number;
  readonly dir: string;
}

/** `KUBEBUILDER_ASSETS` and each subfolder of it holding a kube-apiserver, oldest version first. */
function findAssetSets(root: string | undefined): EnvtestAssets[] {
  if (!root) return [];
  const dirs = [root, ...readdirSync(root, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? [join(root, e.name)] : []))];
  const sets = dirs.flatMap((dir) => {
    if (!existsSync(join(dir, 'kube-apiserver'))) return [];
    const version = /v1\.(\d+)\.\d+/.exec(execFileSync(join(dir, 'kube-apiserver'), ['--version'], { encoding: 'utf8', timeout: 10_000 }))?.[0];
    if (version === undefined) throw new Error(`${join(dir, 'kube-apiserver')} --version names no v1.x.y`);
    return [{ version, minor: Number(version.split('.')[1]), dir }];
  });
  return sets.sort((a, b) => a.minor - b.minor);
}

/** Every Kubernetes version the envtest suites run against (empty: they are skipped). */
export const ASSET_SETS: readonly EnvtestAssets[] = findAssetSets(process.env.KUBEBUILDER_ASSETS);
/**
 * The versions a suite is declared for: {@link ASSET_SETS}, or, when there are none, one stand-in
 * whose suite `describe.skipIf(ASSET_SETS.length === 0)` skips (a file that declares no suite at
 * all is an error to vitest, and a fresh clone runs without the assets).
 */
export const SUITE_ASSET_SETS: readonly EnvtestAssets[] = ASSET_SETS.length > 0 ? ASSET_SETS : [{ version: 'v0.0.0 (no KUBEBUILDER_ASSETS)', minor: 0, dir: '' }];
/** The assets folder, when the envtest suites are enabled. */
export const ASSETS = process.env.KUBEBUILDER_ASSETS;
/** The newest version's assets: the oracle's and the benchmarks' upstream. */
export const NEWEST_ASSETS: EnvtestAssets | undefined = ASSET_SETS.at(-1);
/** Why the envtest suites are skipped, when they are. */
export const ENVTEST_HINT =
  'real kube-apiserver suites skipped: set KUBEBUILDER_ASSETS to a folder with kube-apiserver, etcd and kube-proxy v1.26, and v1.36/ inside it with v1.36\'s (README: "Against a real kube-apiserver")';

/** kproxy's identity: the ServiceAccount manifests/rbac.yaml binds. */
/**
 * kube-proxy flags for running upstream in a network namespace: leave the conntrack sysctls alone
 * (a namespace cannot set them, and upstream exits when it fails to).
 */
export const UPSTREAM_IN_NAMESPACE: readonly string[] = ['--conntrack-max-per-core', '0', '--conntrack-tcp-timeout-established', '0', '--conntrack-tcp-timeout-close-wait', '0'];

export const KPROXY_USER = 'system:serviceaccount:kube-system:kproxy';

/** A free TCP port on 127.0.0.1 (closed again at once; the caller binds it soon after). */
export async function freePort(): Promise<number> {
  // Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default): a port the
  // kernel handed out for listen(0) and got back can go to any process's next outgoing connection
  // before the server that was meant to bind it does (CI, 2026-12-07: "bind: address already in use").
  for (let i = 0; i < 100; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port in 20000-31999 after 100 tries');
}

/** Paths to resources, by kind, for the objects tests write. */
const PATHS: Record<string, (ns: string | undefined) => string> = {
  Namespace: () => '/api/v1/namespaces',
  Service: (ns) => `/api/v1/namespaces/${ns}/services`,
  Node: () => '/api/v1/nodes',
  EndpointSlice: (ns) => `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`,
  ServiceAccount: (ns) => `/api/v1/namespaces/${ns}/serviceaccounts`,
  ClusterRole: () => '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  ClusterRoleBinding: () => '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
  ServiceCIDR: () => '/apis/networking.k8s.io/v1/servicecidrs',
  Pod: (ns) => `/api/v1/namespaces/${ns}/pods`,
  NetworkPolicy: (ns) => `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`,
};

/** Runs a server in the background, its stderr to `log`. */
function background(file: string, args: readonly string[], log: string) {
  return execa(file, args, { reject: false, buffer: false, stdout: 'ignore', stderr: { file: log } });
}
type Running = ReturnType<typeof background>;

type Obj = { kind: string; metadata: { name: string; namespace?: string; resourceVersion?: string } } & Record<string, unknown>;

/** etcd and kube-apiserver, started and stopped by the test that owns them. */
export class RealApiServer {
  readonly dir: string;
  readonly port: number;
  readonly adminToken = randomBytes(16).toString('hex');
  readonly kproxyToken = randomBytes(16).toString('hex');
  /** The version this server runs. */
  readonly assets: EnvtestAssets;
  readonly #args: string[];
  readonly #agent = new https.Agent({ keepAlive: true, maxSockets: 32 });
  readonly #forwarders: net.Server[] = [];
  readonly #forwarded = new Set<net.Socket>();
  #etcd: Running | undefined;
  #apiserver: Running | undefined;
  #ca: string | undefined;

  private constructor(assets: EnvtestAssets, dir: string, port: number, args: string[]) {
    this.assets = assets;
    this.dir = dir;
    this.port = port;
    this.#args = args;
  }

  /**
   * Starts etcd and the API server and waits until `/readyz` answers (bounded: 90 s).
   * @param extra more kube-apiserver flags (e.g. `--watch-cache=false`, `--etcd-compaction-interval=2s`)
   * @param assets the version to run (default the oldest); etcd is taken from beside it, else from KUBEBUILDER_ASSETS
   * @throws Error when KUBEBUILDER_ASSETS is unset or a binary is missing, or it is not ready in time
   */
  static async start(extra: readonly string[] = [], assets: EnvtestAssets | undefined = ASSET_SETS[0]): Promise<RealApiServer> {
    // A port can still be taken between the check and the bind (freePort): then again, on fresh ports, twice at most.
    for (let attempt = 1; ; attempt++) {
      try {
        return await RealApiServer.#startOnce(extra, assets);
      } catch (err) {
        if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
      }
    }
  }

  static async #startOnce(extra: readonly string[], assets: EnvtestAssets | undefined): Promise<RealApiServer> {
    if (!ASSETS || !assets) throw new Error(ENVTEST_HINT);
    const etcd = [join(assets.dir, 'etcd'), join(ASSETS, 'etcd')].find((f) => existsSync(f));
    if (!etcd) throw new Error(`no etcd in ${assets.dir} or ${ASSETS}`);
    const dir = mkdtempSync(join(tmpdir(), 'kproxy-envtest-'));
    const [port, etcdPort, peerPort] = [await freePort(), await freePort(), await freePort()];
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    writeFileSync(join(dir, 'sa.pub'), publicKey);
    writeFileSync(join(dir, 'sa.key'), privateKey, { mode: 0o600 });
    const server = new RealApiServer(assets, dir, port, []);
    writeFileSync(
      join(dir, 'tokens.csv'),
      `${server.adminToken},admin,admin,"system:masters"\n${server.kproxyToken},${KPROXY_USER},kproxy,"system:serviceaccounts,system:serviceaccounts:kube-system"\n`,
      { mode: 0o600 },
    );
    server.#args.push(
      `--etcd-servers=http://127.0.0.1:${etcdPort}`,
      `--secure-port=${port}`,
      '--bind-address=127.0.0.1',
      // Never contacted: the API server only writes it into the default "kubernetes" EndpointSlice.
      '--advertise-address=192.0.2.250',
      '--service-cluster-ip-range=10.96.0.0/12',
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-account-issuer=https://kubernetes.default.svc',
      `--cert-dir=${join(dir, 'certs')}`,
      '--enable-priority-and-fairness=false',
      '--profiling=false',
      ...extra,
    );
    try {
      server.#etcd = background(
        etcd,
        [
          '--name=default',
          `--data-dir=${join(dir, 'etcd')}`,
          `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
          `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
          `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
          `--initial-cluster=default=http://127.0.0.1:${peerPort}`,
          '--log-level=error',
        ],
        join(dir, 'etcd.log'),
      );
      await server.#startApiServer();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  /** `https://127.0.0.1:PORT`, reachable from the root namespace. */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** The API server's self-signed serving certificate, to trust. */
  get ca(): string {
    return (this.#ca ??= readFileSync(join(this.dir, 'certs', 'apiserver.crt'), 'utf8'));
  }

  async #startApiServer(): Promise<void> {
    const apiserver = background(join(this.assets.dir, 'kube-apiserver'), this.#args, join(this.dir, 'apiserver.log'));
    this.#apiserver = apiserver;
    let exited = false;
    void apiserver.then(() => (exited = true));
    const end = Date.now() + 90_000;
    for (let i = 0; i < 400 && Date.now() < end; i++) {
      if (exited) break;
      if (existsSync(join(this.dir, 'certs', 'apiserver.crt'))) {
        const r = await this.request('GET', '/readyz').catch(() => undefined);
        if (r?.status === 200) return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    const log = existsSync(join(this.dir, 'apiserver.log')) ? readFileSync(join(this.dir, 'apiserver.log'), 'utf8').split('\n').slice(-15).join('\n') : '';
    const etcdLog = existsSync(join(this.dir, 'etcd.log')) ? readFileSync(join(this.dir, 'etcd.log'), 'utf8') : '';
    const etcdBind = /address already in use/.test(etcdLog) ? '\netcd: address already in use' : '';
    throw new Error(`kube-apiserver did not become ready:\n${log}${etcdBind}`);
  }

  /** Stops the API server (SIGTERM) and starts it again on the same port and etcd: a control-plane restart. */
  async restart(downMs = 0): Promise<void> {
    const a = this.#apiserver;
    a?.kill('SIGTERM');
    await a;
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.#startApiServer();
  }

  /**
   * One request as the admin (or as `token`). `body` is sent as JSON, a string as it is.
   * @returns the status and the parsed JSON body (text when it is not JSON)
   */
  async request(method: string, path: string, body?: unknown, token = this.adminToken): Promise<{ status: number; body: unknown }> {
    // A string is sent as it is: JSON too deep for JSON.stringify's stack (test/e2e/deep.test.ts).
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: this.port,
          path,
          method,
          ca: this.ca,
          agent: this.#agent,
          headers: { authorization: `Bearer ${token}`, 'content-type': method === 'PATCH' ? 'application/merge-patch+json' : 'application/json', accept: 'application/json' },
          timeout: 30_000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // not JSON (e.g. /readyz)
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(data);
    });
  }

  /**
   * Creates `obj`, or replaces it when it exists (with its current resourceVersion).
   * @throws Error with the API's message on any other failure
   */
  async apply(obj: object): Promise<Obj> {
    const o = structuredClone(obj) as Obj;
    const base = PATHS[o.kind]?.(o.metadata.namespace);
    if (!base) throw new Error(`no path for kind ${o.kind}`);
    if (o.metadata.namespace && o.kind !== 'Namespace') await this.ensureNamespace(o.metadata.namespace);
    delete o.metadata.resourceVersion;
    // GET first: a POST of an existing Service fails on its ClusterIP (422) before its name (409).
    const current = await this.request('GET', `${base}/${o.metadata.name}`);
    let r: { status: number; body: unknown };
    const version = (current.body as Obj).metadata?.resourceVersion;
    if (current.status === 200 && version !== undefined) {
      o.metadata.resourceVersion = version;
      r = await this.request('PUT', `${base}/${o.metadata.name}`, o);
    } else r = await this.request('POST', base, o);
    // Status (a Service's load-balancer ingress, a Node's addresses, a Pod's IPs) is a subresource of its own.
    const written = (r.body as Obj).metadata?.resourceVersion;
    if ((r.status === 200 || r.status === 201) && (o.kind === 'Service' || o.kind === 'Node' || o.kind === 'Pod') && o.status && written !== undefined) {
      o.metadata.resourceVersion = written;
      r = await this.request('PUT', `${base}/${o.metadata.name}/status`, o);
    }
    if (r.status !== 200 && r.status !== 201) throw new Error(`${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}: HTTP ${r.status}: ${JSON.stringify(r.body).slice(0, 400)}`);
    return r.body as Obj;
  }

  /**
   * Creates `obj` (one POST; its namespace must exist), and sets its status when it has one.
   * @throws Error with the API's message when the server refuses it
   */
  async create(obj: object): Promise<void> {
    const o = obj as Obj;
    const base = PATHS[o.kind]?.(o.metadata.namespace);
    if (!base) throw new Error(`no path for kind ${o.kind}`);
    let r = await this.request('POST', base, o);
    const version = (r.body as Obj).metadata?.resourceVersion;
    if (r.status === 201 && o.status && version !== undefined) r = await this.request('PUT', `${base}/${o.metadata.name}/status`, { ...o, metadata: { ...o.metadata, resourceVersion: version } });
    if (r.status !== 200 && r.status !== 201) throw new Error(`${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}: HTTP ${r.status}: ${JSON.stringify(r.body).slice(0, 400)}`);
  }

  /** Replaces an object's labels (a JSON merge patch: a pod's spec cannot be PUT again). */
  async label(kind: string, namespace: string | undefined, name: string, labels: Record<string, string | null>): Promise<void> {
    const r = await this.request('PATCH', `${PATHS[kind]!(namespace)}/${name}`, { metadata: { labels } });
    if (r.status !== 200) throw new Error(`label ${kind} ${name}: HTTP ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
  }

  /** Deletes an object; a missing one is fine. */
  async remove(kind: string, namespace: string | undefined, name: string): Promise<void> {
    const r = await this.request('DELETE', `${PATHS[kind]!(namespace)}/${name}`);
    if (r.status !== 200 && r.status !== 202 && r.status !== 404) throw new Error(`delete ${kind} ${name}: HTTP ${r.status}`);
  }

  readonly #namespaces = new Set<string>();
  /** Creates the namespace once. */
  async ensureNamespace(name: string): Promise<void> {
    if (this.#namespaces.has(name)) return;
    const r = await this.request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
    if (r.status !== 201 && r.status !== 409) throw new Error(`namespace ${name}: HTTP ${r.status}`);
    this.#namespaces.add(name);
  }

  /** Applies every object of a YAML file (manifests/rbac.yaml). */
  async applyManifest(path: string): Promise<void> {
    for (const doc of parseAllDocuments(readFileSync(path, 'utf8'))) {
      const o = doc.toJS() as Obj | null;
      if (o) await this.apply(o);
    }
  }

  /** A kubeconfig for `server` (default: this API server) with `token`, trusting its certificate. */
  kubeconfig(token: string, server = this.url): string {
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'envtest', cluster: { server, 'certificate-authority-data': Buffer.from(this.ca).toString('base64') } }],
      users: [{ name: 'envtest', user: { token } }],
      contexts: [{ name: 'envtest', context: { cluster: 'envtest', user: 'envtest' } }],
      'current-context': 'envtest',
    });
  }

  /** A TCP proxy to the API server, for `net.Server#listen(handle)` in another namespace (TestCluster.serveInNamespace). */
  forwarder(): net.Server {
    const server = net.createServer((client) => {
      this.#forwarded.add(client);
      client.once('close', () => this.#forwarded.delete(client));
      const upstream = net.connect(this.port, '127.0.0.1');
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close);
      upstream.on('error', close);
      client.once('close', close);
    });
    this.#forwarders.push(server);
    return server;
  }

  /** Stops both processes and removes their data. Safe to call twice. */
  async stop(): Promise<void> {
    for (const p of [this.#apiserver, this.#etcd]) {
      if (!p) continue;
      p.kill('SIGTERM');
      const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await p;
      clearTimeout(timer);
    }
    this.#apiserver = undefined;
    this.#etcd = undefined;
    this.#agent.destroy();
    // Forwarders listen on handles from namespaces that may be gone; they would keep the process alive.
    for (const f of this.#forwarders.splice(0)) f.close();
    for (const c of this.#forwarded) c.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
