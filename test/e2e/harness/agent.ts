/**
 * The program the end-to-end tests run inside network namespaces.
 *
 *   agent.ts serve NAME --tcp 80,8080 --udp 53 [--ipv6]
 *     answers every TCP connection and UDP datagram with "NAME PEER_IP\n", then closes;
 *     on IPv4, and with --ipv6 on IPv6 too (a socket per family, so peers are never IPv4-mapped);
 *     prints "ready" once every port listens. Exits after --max-seconds (default 600).
 *   agent.ts probe tcp|udp HOST PORT --count N [--bind SRC] [--timeout MS] [--sport PORT]
 *     makes N fresh connections (new source port each unless --sport), one after another, and
 *     prints one JSON line: {"answers":[{"name","peer"}],"refused":n,"timeout":n,"errors":[...]}.
 *   agent.ts matrix --targets '[["tcp","10.244.1.10",80],…]' [--timeout MS]
 *     one fresh connection to every target at once; prints a JSON list, per target, of the name
 *     that answered or "!" and the failure ("!TIMEOUT", "!ECONNREFUSED").
 *   agent.ts http-get URL [--timeout MS]
 *     prints one JSON line: {"status":n,"body":"..."} or {"error":"CODE"}.
 *   agent.ts listen-socket
 *     (with an IPC channel) opens a TCP listener on 127.0.0.1:0 in its namespace, hands it to the
 *     parent over IPC and exits: the parent then serves on this namespace's loopback.
 *
 * Bounded: every probe has a timeout, the count is capped, servers stop by themselves.
 */
import dgram from 'node:dgram';
import net from 'node:net';

/** One fresh TCP connection or UDP datagram: the answer, or why there was none (`ECONNREFUSED`, `TIMEOUT`, …). */
function connectOnce(proto: 'tcp' | 'udp', host: string, port: number, timeoutMs: number, bind?: string, sport?: number): Promise<{ name: string; peer: string } | { fail: string }> {
  return new Promise((resolve) => {
    let done = false;
    let cleanup = () => {};
    const finish = (r: { name: string; peer: string } | { fail: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      cleanup();
      resolve(r);
    };
    const answer = (line: string) => {
      const [name = '', peer = ''] = line.trim().split(' ');
      finish({ name, peer });
    };
    const timer = setTimeout(() => finish({ fail: 'TIMEOUT' }), timeoutMs);
    if (proto === 'tcp') {
      const s = net.connect({ host, port, ...(bind ? { localAddress: bind } : {}), ...(sport ? { localPort: sport } : {}) });
      cleanup = () => s.destroy();
      let data = '';
      s.on('data', (d: Buffer) => (data += d.toString()));
      s.on('end', () => answer(data));
      s.on('error', (e: NodeJS.ErrnoException) => finish({ fail: e.code ?? 'unknown' }));
    } else {
      const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      cleanup = () => s.close();
      s.on('error', (e: NodeJS.ErrnoException) => finish({ fail: e.code ?? 'unknown' }));
      s.on('message', (m) => answer(m.toString()));
      s.bind({ ...(bind ? { address: bind } : {}), ...(sport ? { port: sport } : {}) }, () => {
        s.connect(port, host, () => s.send('probe'));
      });
    }
  });
}

const [mode, ...rest] = process.argv.slice(2);
const flag = (name: string, fallback?: string) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : fallback;
};
const ports = (name: string) => (flag(name) ?? '').split(',').filter(Boolean).map(Number);

if (mode === 'serve') {
  const name = rest[0]!;
  let pending = 0;
  const ready = () => {
    if (--pending === 0) process.stdout.write('ready\n');
  };
  const families = rest.includes('--ipv6') ? (['0.0.0.0', '::'] as const) : (['0.0.0.0'] as const);
  for (const host of families)
    for (const port of ports('tcp')) {
      pending++;
      net
        .createServer((s) => {
          s.on('error', () => {});
          s.end(`${name} ${s.remoteAddress}\n`);
        })
        .listen({ port, host, ipv6Only: host === '::' }, ready);
    }
  for (const host of families)
    for (const port of ports('udp')) {
      pending++;
      const sock = dgram.createSocket({ type: host === '::' ? 'udp6' : 'udp4', ipv6Only: host === '::' });
      sock.on('message', (_msg, rinfo) => sock.send(`${name} ${rinfo.address}\n`, rinfo.port, rinfo.address));
      sock.bind(port, host, ready);
    }
  setTimeout(() => process.exit(0), Number(flag('max-seconds', '600')) * 1000).unref();
  if (pending === 0) process.stdout.write('ready\n');
} else if (mode === 'probe') {
  const [proto, host, portText] = rest;
  const port = Number(portText);
  const count = Math.min(Number(flag('count', '1')), 2000);
  const timeoutMs = Number(flag('timeout', '1000'));
  const bind = flag('bind');
  const sport = flag('sport') === undefined ? undefined : Number(flag('sport'));
  const result = { answers: [] as { name: string; peer: string }[], refused: 0, timeout: 0, errors: [] as string[] };
  for (let i = 0; i < count; i++) {
    const r = await connectOnce(proto as 'tcp' | 'udp', host!, port, timeoutMs, bind, sport);
    if ('name' in r) result.answers.push(r);
    else if (r.fail === 'ECONNREFUSED') result.refused++;
    else if (r.fail === 'TIMEOUT') result.timeout++;
    else result.errors.push(r.fail);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else if (mode === 'matrix') {
  // One fresh connection to each target at once; prints, per target, the name that answered or the failure.
  const targets = JSON.parse(flag('targets', '[]')!) as [string, string, number][];
  const timeoutMs = Number(flag('timeout', '1000'));
  const results = await Promise.all(targets.slice(0, 2000).map(([proto, host, port]) => connectOnce(proto as 'tcp' | 'udp', host, port, timeoutMs)));
  process.stdout.write(`${JSON.stringify(results.map((r) => ('name' in r ? r.name : `!${r.fail}`)))}\n`);
} else if (mode === 'http-get') {
  const timeoutMs = Number(flag('timeout', '2000'));
  try {
    const res = await fetch(rest[0]!, { signal: AbortSignal.timeout(timeoutMs) });
    process.stdout.write(`${JSON.stringify({ status: res.status, body: await res.text() })}\n`);
  } catch (err) {
    const e = err as { name?: string; cause?: { code?: string } };
    process.stdout.write(`${JSON.stringify({ error: e.cause?.code ?? e.name ?? 'unknown' })}\n`);
  }
} else if (mode === 'listen-socket') {
  const server = net.createServer();
  server.listen(0, '127.0.0.1', () => {
    process.send!({ port: (server.address() as net.AddressInfo).port }, server, () => process.exit(0));
  });
  setTimeout(() => process.exit(1), 10_000).unref();
} else {
  process.stderr.write('usage: agent.ts serve NAME --tcp P,.. --udp P,.. | probe tcp|udp HOST PORT --count N\n');
  process.exit(2);
}
