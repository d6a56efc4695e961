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
  const record = (line: string) => {
    const [name = '', peer = ''] = line.trim().split(' ');
    result.answers.push({ name, peer });
  };
  const fail = (code: string | undefined) => {
    if (code === 'ECONNREFUSED') result.refused++;
    else if (code === 'TIMEOUT') result.timeout++;
    else result.errors.push(code ?? 'unknown');
  };
  const once = () =>
    new Promise<void>((resolve) => {
      let done = false;
      const finish = (fn: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        fn();
        resolve();
      };
      const timer = setTimeout(
        () =>
          finish(() => {
            fail('TIMEOUT');
            cleanup();
          }),
        timeoutMs,
      );
      let cleanup = () => {};
      if (proto === 'tcp') {
        const opts: net.NetConnectOpts = { host: host!, port, ...(bind ? { localAddress: bind } : {}), ...(sport ? { localPort: sport } : {}) };
        const s = net.connect(opts);
        cleanup = () => s.destroy();
        let data = '';
        s.on('data', (d: Buffer) => (data += d.toString()));
        s.on('end', () =>
          finish(() => {
            record(data);
            s.destroy();
          }),
        );
        s.on('error', (e: NodeJS.ErrnoException) =>
          finish(() => {
            fail(e.code);
            s.destroy();
          }),
        );
      } else {
        const s = dgram.createSocket(net.isIPv6(host!) ? 'udp6' : 'udp4');
        cleanup = () => s.close();
        s.on('error', (e: NodeJS.ErrnoException) =>
          finish(() => {
            fail(e.code);
            s.close();
          }),
        );
        s.on('message', (m) =>
          finish(() => {
            record(m.toString());
            s.close();
          }),
        );
        s.bind({ ...(bind ? { address: bind } : {}), ...(sport ? { port: sport } : {}) }, () => {
          s.connect(port, host, () => s.send('probe'));
        });
      }
    });
  for (let i = 0; i < count; i++) await once();
  process.stdout.write(`${JSON.stringify(result)}\n`);
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
