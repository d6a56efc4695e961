/**
 * The conntrack sysctls kube-proxy sets when it starts (cmd/kube-proxy/app/server_linux.go,
 * conntrack.go): the table size from `--conntrack-max-per-core` × CPUs (at least `--conntrack-min`)
 * with the hash size a quarter of it, and the TCP established / close-wait, be-liberal and UDP
 * timeouts. A setting of 0 (or false) leaves its sysctl alone, as upstream's.
 *
 * Where kproxy departs: a sysctl that cannot be written is reported, never fatal (upstream exits,
 * but for a read-only /sys), since a proxy that does not start is worse than a conntrack table of
 * the kernel's size; and the table size is only ever raised, and only where
 * `nf_conntrack_max` is writable, that is in the host's network namespace: in any other (a test's,
 * a pod's without hostNetwork) it is read-only. The hash size, a global module parameter, is written
 * only when the table size was, and only from the host's network namespace.
 * @module
 */
import { readFile, readlink, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/** Upstream's conntrack settings (KubeProxyConfiguration `conntrack`); durations in seconds. */
export interface ConntrackSettings {
  /** Entries per CPU; 0 leaves the table size alone. Default 32768. */
  readonly maxPerCore: number;
  /** Floor of the table size. Default 131072. */
  readonly min: number;
  /** `nf_conntrack_tcp_timeout_established`, seconds; 0 leaves it. Default 86400 (24 h). */
  readonly tcpEstablishedTimeout: number;
  /** `nf_conntrack_tcp_timeout_close_wait`, seconds; 0 leaves it. Default 3600 (1 h). */
  readonly tcpCloseWaitTimeout: number;
  /** Sets `nf_conntrack_tcp_be_liberal` to 1 when true; false leaves it. Default false. */
  readonly tcpBeLiberal: boolean;
  /** `nf_conntrack_udp_timeout`, seconds; 0 leaves it. Default 0. */
  readonly udpTimeout: number;
  /** `nf_conntrack_udp_timeout_stream`, seconds; 0 leaves it. Default 0. */
  readonly udpStreamTimeout: number;
}

/** kube-proxy v1.36's defaults (`kube-proxy --write-config-to`). */
export const CONNTRACK_DEFAULTS: ConntrackSettings = {
  maxPerCore: 32768,
  min: 131072,
  tcpEstablishedTimeout: 86400,
  tcpCloseWaitTimeout: 3600,
  tcpBeLiberal: false,
  udpTimeout: 0,
  udpStreamTimeout: 0,
};

/** What was done with one sysctl, as data for the log. */
export interface SysctlOutcome {
  /** The sysctl's name under /proc/sys/net/netfilter, or `hashsize` (the nf_conntrack module parameter). */
  readonly name: string;
  readonly wanted: number;
  /** The value read before, when it could be read. */
  readonly was: number | undefined;
  /** `set`; `unchanged` (already so, or larger for the table size); `failed` (not written: see `error`); `skipped` (the hash size, when the table size was not writable). */
  readonly outcome: 'set' | 'unchanged' | 'failed' | 'skipped';
  readonly error?: string;
}

/** Where the sysctls live; tests point these at a folder of their own. */
export interface SysctlPaths {
  /** Default `/proc/sys/net/netfilter`. */
  readonly netfilter: string;
  /** Default `/sys/module/nf_conntrack/parameters/hashsize`. */
  readonly hashsize: string;
  /** CPUs, for the table size. Default `os.availableParallelism()` (upstream: the CPUs it may run on). */
  readonly cpus: number;
  /**
   * Whether this process is in the host's network namespace (the one of PID 1: in a DaemonSet pod
   * with hostNetwork, its own init shares it). Default: `/proc/self/ns/net` and `/proc/1/ns/net` are
   * the same namespace. The global hash size is written only there.
   */
  readonly inHostNamespace: () => Promise<boolean>;
}

const SYSTEM: SysctlPaths = {
  netfilter: '/proc/sys/net/netfilter',
  hashsize: '/sys/module/nf_conntrack/parameters/hashsize',
  cpus: availableParallelism(),
  async inHostNamespace() {
    try {
      return (await readlink('/proc/self/ns/net')) === (await readlink('/proc/1/ns/net'));
    } catch {
      return false;
    }
  },
};

/**
 * The table size upstream asks for: `maxPerCore × cpus`, at least `min`; 0 when `maxPerCore` is 0.
 * (cmd/kube-proxy/app/server_linux.go getConntrackMax)
 */
export function conntrackMax(settings: ConntrackSettings, cpus: number): number {
  if (settings.maxPerCore <= 0) return 0;
  return Math.max(settings.maxPerCore * cpus, settings.min);
}

async function readInt(path: string): Promise<number | undefined> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isInteger(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes `value` to the sysctl at `path` unless it holds it already (or, with `raiseOnly`, more).
 * Never throws: a failure is an outcome.
 */
async function setSysctl(path: string, name: string, value: number, raiseOnly = false): Promise<SysctlOutcome> {
  const was = await readInt(path);
  if (was === value || (raiseOnly && was !== undefined && was >= value)) return { name, wanted: value, was, outcome: 'unchanged' };
  try {
    await writeFile(path, `${value}\n`);
    return { name, wanted: value, was, outcome: 'set' };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { name, wanted: value, was, outcome: 'failed', error: e.code ?? e.message };
  }
}

/**
 * Applies the conntrack settings, one sysctl at a time (see the module comment for what is left
 * alone and why).
 * @returns one outcome per sysctl considered, in the order written
 */
export async function applyConntrackSettings(settings: ConntrackSettings, paths: SysctlPaths = SYSTEM): Promise<SysctlOutcome[]> {
  const out: SysctlOutcome[] = [];
  const max = conntrackMax(settings, paths.cpus);
  if (max > 0) {
    const table = await setSysctl(join(paths.netfilter, 'nf_conntrack_max'), 'nf_conntrack_max', max, true);
    out.push(table);
    // The hash size is global: written only where the table size was, in the host's namespace.
    const hash = Math.floor(max / 4);
    if (table.outcome === 'set' && (await paths.inHostNamespace())) out.push(await setSysctl(paths.hashsize, 'hashsize', hash, true));
    else if (table.outcome !== 'unchanged') out.push({ name: 'hashsize', wanted: hash, was: await readInt(paths.hashsize), outcome: 'skipped' });
  }
  const timeouts: [string, number][] = [
    ['nf_conntrack_tcp_timeout_established', settings.tcpEstablishedTimeout],
    ['nf_conntrack_tcp_timeout_close_wait', settings.tcpCloseWaitTimeout],
    ['nf_conntrack_udp_timeout', settings.udpTimeout],
    ['nf_conntrack_udp_timeout_stream', settings.udpStreamTimeout],
  ];
  if (settings.tcpBeLiberal) timeouts.splice(2, 0, ['nf_conntrack_tcp_be_liberal', 1]);
  for (const [name, value] of timeouts) if (value > 0) out.push(await setSysctl(join(paths.netfilter, name), name, value));
  return out;
}
