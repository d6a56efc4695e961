/**
 * The `--config` file: a KubeProxyConfiguration in `kubeproxy.config.k8s.io/v1alpha1` form, as
 * kubeadm writes it into the `kube-proxy` ConfigMap (k8s.io/kube-proxy/config/v1alpha1/types.go).
 *
 * Every field is accounted for. Fields kproxy applies are validated; fields of other modes or
 * platforms (ipvs, winkernel, …) and client tuning that does not apply are accepted; fields set to
 * something kproxy does not implement are reported as unsupported, and fields the API does not
 * have are reported as unknown. Reports are data ({@link ConfigReport}); the caller logs them.
 * Like upstream's lenient fallback after strict decoding, reports do not stop the proxy; invalid
 * values of applied fields do.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { PROXY_MODES, type ProxyMode } from '../backends/backend.ts';

export const CONFIG_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';

/** Local-traffic detector modes, as upstream names them (`--detect-local-mode`, `detectLocalMode`). */
export const DETECT_LOCAL_MODES = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'] as const;

/** An interface name as Linux takes it (at most 15 characters), of characters no rule can misread. */
export const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** The settings a config file can give, all optional; flags given on the command line win. */
export interface FileSettings {
  kubeconfig?: string;
  hostnameOverride?: string;
  healthzBindAddress?: string;
  metricsBindAddress?: string;
  bindAddressHardFail?: boolean;
  proxyMode?: ProxyMode;
  clusterCidr?: string;
  nodeportAddresses?: string;
  masqueradeAll?: boolean;
  iptablesMasqueradeBit?: number;
  iptablesSyncPeriod?: number;
  iptablesMinSyncPeriod?: number;
  conntrackMaxPerCore?: number;
  conntrackMin?: number;
  /** Milliseconds, as the flags'. */
  conntrackTcpTimeoutEstablished?: number;
  conntrackTcpTimeoutCloseWait?: number;
  conntrackTcpBeLiberal?: boolean;
  conntrackUdpTimeout?: number;
  conntrackUdpTimeoutStream?: number;
  detectLocalMode?: string;
  podBridgeInterface?: string;
  podInterfaceNamePrefix?: string;
  /** kproxy's own field (`networkPolicy: true`): what `--network-policy` does. */
  networkPolicy?: boolean;
}

/** A field that is reported instead of applied. */
export interface ConfigReport {
  /** Dotted path, e.g. `ipvs.scheduler`. */
  readonly field: string;
  readonly problem: 'unknown' | 'unsupported';
  readonly message: string;
}

/** Thrown for an unreadable file or an invalid value of an applied field. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/**
 * Parses a Go duration (`30s`, `1m30s`, `500ms`, `2h22m`, `0s`) to milliseconds.
 * @throws ConfigError for anything else, or a negative value
 */
export function parseDuration(text: string, field: string): number {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let at = 0;
  while (at < text.length) {
    re.lastIndex = at;
    const m = re.exec(text);
    if (!m) throw new ConfigError(`${field}: ${JSON.stringify(text)} is not a duration (like 30s, 1m, 500ms)`);
    total += Number(m[1]) * units[m[2]!]!;
    at = re.lastIndex;
  }
  if (text.length === 0) throw new ConfigError(`${field}: empty duration`);
  return Math.round(total);
}

type Rule =
  /** Applied: validated and turned into a setting. */
  | { readonly apply: (value: unknown, out: FileSettings, field: string) => void }
  /** Accepted without effect (another mode's or platform's settings, or client tuning). */
  | { readonly ignore: true }
  /** Not implemented: reported unless the value is the default (`isDefault`). */
  | { readonly unsupported: string; readonly isDefault: (value: unknown) => boolean };

const isEmpty = (v: unknown) =>
  v === null || v === undefined || v === '' || v === false || v === 0 || v === '0s' || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && Object.keys(v).length === 0);

const str = (key: keyof FileSettings) => ({
  apply(value: unknown, out: FileSettings, field: string) {
    if (value === null || value === '') return;
    if (typeof value !== 'string') throw new ConfigError(`${field}: must be a string`);
    (out as Record<string, unknown>)[key] = value;
  },
});
const bool = (key: keyof FileSettings) => ({
  apply(value: unknown, out: FileSettings, field: string) {
    if (value === null) return;
    if (typeof value !== 'boolean') throw new ConfigError(`${field}: must be true or false`);
    (out as Record<string, unknown>)[key] = value;
  },
});
const duration = (key: 'iptablesSyncPeriod' | 'iptablesMinSyncPeriod') => ({
  apply(value: unknown, out: FileSettings, field: string) {
    if (value === null) return;
    if (typeof value !== 'string') throw new ConfigError(`${field}: must be a duration string`);
    const ms = parseDuration(value, field);
    if (ms > 0) out[key] = ms; // 0 means the default, as upstream's defaulting does
  },
});
/** A conntrack duration: null means upstream's default (the flag's), `0s` leaves the sysctl alone. */
const conntrackDuration = (key: 'conntrackTcpTimeoutEstablished' | 'conntrackTcpTimeoutCloseWait' | 'conntrackUdpTimeout' | 'conntrackUdpTimeoutStream') => ({
  apply(value: unknown, out: FileSettings, field: string) {
    if (value === null) return;
    if (typeof value !== 'string') throw new ConfigError(`${field}: must be a duration string`);
    out[key] = parseDuration(value, field);
  },
});
/** A conntrack count (`maxPerCore`, `min`): null means the default, 0 leaves the table size alone. */
const conntrackCount = (key: 'conntrackMaxPerCore' | 'conntrackMin') => ({
  apply(value: unknown, out: FileSettings, field: string) {
    if (value === null) return;
    if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 2 ** 31 - 1) throw new ConfigError(`${field}: must be a whole number 0 or more`);
    out[key] = value as number;
  },
});
/** An interface name (`detectLocal.*`); empty means unset. */
const interfaceName = (key: 'podBridgeInterface' | 'podInterfaceNamePrefix') => ({
  apply(value: unknown, out: FileSettings, field: string) {
    if (value === null || value === '') return;
    if (typeof value !== 'string' || !INTERFACE_NAME.test(value)) throw new ConfigError(`${field}: ${JSON.stringify(value)} is not an interface name (at most 15 of [A-Za-z0-9_.-])`);
    out[key] = value;
  },
});
const masqBit: Rule = {
  apply(value, out, field) {
    if (value === null) return;
    if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 31) throw new ConfigError(`${field}: must be a whole number 0-31`);
    out.iptablesMasqueradeBit = value as number;
  },
};
const unsupported = (why: string, isDefault: (v: unknown) => boolean = isEmpty): Rule => ({ unsupported: why, isDefault });
const ignore: Rule = { ignore: true };

/** Every field of v1alpha1 KubeProxyConfiguration, by dotted path. */
const RULES: ReadonlyMap<string, Rule> = new Map(
  Object.entries<Rule>({
    apiVersion: ignore,
    kind: ignore,
    featureGates: unsupported("kproxy has no feature gates: every feature it has behaves as upstream's GA version"),
    'clientConnection.kubeconfig': str('kubeconfig'),
    'clientConnection.acceptContentTypes': ignore,
    'clientConnection.contentType': ignore,
    'clientConnection.qps': ignore,
    'clientConnection.burst': ignore,
    logging: ignore,
    hostnameOverride: str('hostnameOverride'),
    bindAddress: unsupported('the node IP is taken from the Node object', (v) => isEmpty(v) || v === '0.0.0.0' || v === '::'),
    healthzBindAddress: str('healthzBindAddress'),
    metricsBindAddress: str('metricsBindAddress'),
    bindAddressHardFail: bool('bindAddressHardFail'),
    enableProfiling: unsupported('there is no profiling endpoint'),
    showHiddenMetricsForVersion: ignore,
    serviceProxyName: unsupported('kproxy handles the Services without a service-proxy-name label'),
    mode: {
      apply(value, out, field) {
        if (value === null || value === '') return;
        if (!PROXY_MODES.includes(value as ProxyMode)) throw new ConfigError(`${field}: proxy mode ${JSON.stringify(value)} is not supported (${PROXY_MODES.join(', ')})`);
        out.proxyMode = value as ProxyMode;
      },
    },
    // The iptables.* and nftables.* sections carry the same settings; the one of the file's mode applies.
    'iptables.masqueradeBit': masqBit,
    'iptables.masqueradeAll': bool('masqueradeAll'),
    'iptables.localhostNodePorts': unsupported('localhost NodePorts are never enabled (route_localnet, CVE-2020-8558)', (v) => v === null || v === undefined || v === false),
    'iptables.syncPeriod': duration('iptablesSyncPeriod'),
    'iptables.minSyncPeriod': duration('iptablesMinSyncPeriod'),
    'nftables.masqueradeBit': masqBit,
    'nftables.masqueradeAll': bool('masqueradeAll'),
    'nftables.syncPeriod': duration('iptablesSyncPeriod'),
    'nftables.minSyncPeriod': duration('iptablesMinSyncPeriod'),
    ipvs: ignore,
    winkernel: ignore,
    detectLocalMode: {
      apply(value, out, field) {
        if (value === null || value === '') return;
        if (!(DETECT_LOCAL_MODES as readonly unknown[]).includes(value)) throw new ConfigError(`${field}: ${JSON.stringify(value)} is not one of ${DETECT_LOCAL_MODES.join(', ')}`);
        out.detectLocalMode = value as string;
      },
    },
    'detectLocal.bridgeInterface': interfaceName('podBridgeInterface'),
    'detectLocal.interfaceNamePrefix': interfaceName('podInterfaceNamePrefix'),
    clusterCIDR: str('clusterCidr'),
    nodePortAddresses: {
      apply(value, out, field) {
        if (value === null) return;
        if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new ConfigError(`${field}: must be a list of CIDRs`);
        if (value.includes('primary') && value.length > 1) throw new ConfigError(`${field}: "primary" cannot be combined with CIDRs`);
        if (value.length > 0) out.nodeportAddresses = value.join(',');
      },
    },
    oomScoreAdj: unsupported('set the OOM score in the pod spec instead'),
    'conntrack.maxPerCore': conntrackCount('conntrackMaxPerCore'),
    'conntrack.min': conntrackCount('conntrackMin'),
    'conntrack.tcpEstablishedTimeout': conntrackDuration('conntrackTcpTimeoutEstablished'),
    'conntrack.tcpCloseWaitTimeout': conntrackDuration('conntrackTcpTimeoutCloseWait'),
    'conntrack.tcpBeLiberal': bool('conntrackTcpBeLiberal'),
    'conntrack.udpTimeout': conntrackDuration('conntrackUdpTimeout'),
    'conntrack.udpStreamTimeout': conntrackDuration('conntrackUdpTimeoutStream'),
    configSyncPeriod: ignore,
    // kproxy's own field, not in v1alpha1 (upstream's lenient decoding would skip it): --network-policy.
    networkPolicy: bool('networkPolicy'),
    portRange: ignore,
  }),
);

/** Sections whose children are each listed in RULES. */
const SECTIONS = new Set(['clientConnection', 'iptables', 'nftables', 'conntrack', 'detectLocal']);

/**
 * Interprets a parsed KubeProxyConfiguration.
 * @throws ConfigError for a wrong apiVersion/kind or an invalid value of an applied field
 */
export function interpretConfig(doc: unknown): { settings: FileSettings; reports: ConfigReport[] } {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ConfigError('the config file must hold one KubeProxyConfiguration object');
  const obj = doc as Record<string, unknown>;
  if (obj.kind !== 'KubeProxyConfiguration') throw new ConfigError(`kind must be KubeProxyConfiguration, got ${JSON.stringify(obj.kind)}`);
  if (obj.apiVersion !== CONFIG_API_VERSION) throw new ConfigError(`apiVersion must be ${CONFIG_API_VERSION}, got ${JSON.stringify(obj.apiVersion)}`);
  const settings: FileSettings = {};
  const sections: Record<'iptables' | 'nftables', FileSettings> = { iptables: {}, nftables: {} };
  const reports: ConfigReport[] = [];
  const visit = (path: string, value: unknown) => {
    // A Map: a field named `constructor` or `__proto__` must not find Object.prototype's.
    const rule = RULES.get(path);
    if (!rule) {
      reports.push({ field: path, problem: 'unknown', message: `unknown field "${path}" (not in ${CONFIG_API_VERSION})` });
      return;
    }
    const section = path.split('.')[0];
    if ('apply' in rule) rule.apply(value, section === 'iptables' || section === 'nftables' ? sections[section] : settings, path);
    else if ('unsupported' in rule && !rule.isDefault(value)) reports.push({ field: path, problem: 'unsupported', message: `"${path}" is not supported and has no effect: ${rule.unsupported}` });
  };
  for (const [key, value] of Object.entries(obj)) {
    if (SECTIONS.has(key) && value !== null) {
      if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${key}: must be an object`);
      for (const [child, v] of Object.entries(value as Record<string, unknown>)) visit(`${key}.${child}`, v);
    } else visit(key, value);
  }
  return { settings: { ...settings, ...sections[settings.proxyMode ?? 'iptables'] }, reports };
}

/**
 * Reads and interprets a config file (YAML or JSON).
 * @throws ConfigError when it cannot be read or parsed, or holds invalid values
 */
export async function loadConfigFile(path: string): Promise<{ settings: FileSettings; reports: ConfigReport[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read --config ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parse(text, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(`--config ${path} is not valid YAML: ${(err as Error).message}`);
  }
  try {
    return interpretConfig(doc);
  } catch (err) {
    throw new ConfigError(`--config ${path}: ${(err as Error).message}`);
  }
}
