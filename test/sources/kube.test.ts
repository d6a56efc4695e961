/**
 * The supervised informers against a test API server over real HTTP: the real client-node
 * ListWatch does the watching; faults are injected on the server side.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { listCollection, listProxyObjects, LIST_PAGE_SIZE, PROXY_LABEL_SELECTOR, proxyResources } from '../../src/sources/api.ts';
import { keepIdentityOnly, KubeSource, SupervisedInformer } from '../../src/sources/kube.ts';
import { EventQueue, type SourceEvent } from '../../src/sources/queue.ts';
import { TestApiServer, wire } from '../support/apiserver.ts';
import { endpoint, endpointSlice, service } from '../support/objects.ts';

const log = pino({ level: 'silent' });

type List = { metadata: { resourceVersion: string }; items: { metadata: { name: string; namespace?: string } }[] };

/** An API server seeded with the captured lists of the fixture cluster. */
async function fixtureServer(): Promise<{ api: TestApiServer; kc: KubeConfig }> {
  const api = new TestApiServer();
  const services = wire<List>('list-services.json');
  const slices = wire<List>('list-endpointslices.json');
  api.seed('services', services.items, Number(services.metadata.resourceVersion));
  api.seed('endpointslices', slices.items, Number(slices.metadata.resourceVersion));
  const server = await api.listen();
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'test', server, skipTLSVerify: true }],
    users: [{ name: 'test' }],
    contexts: [{ name: 'test', cluster: 'test', user: 'test' }],
    currentContext: 'test',
  });
  return { api, kc };
}

/** Mirrors what the events say exists: kind → key → object. */
class Mirror {
  readonly objects = new Map<string, Map<string, unknown>>();
  readonly synced = new Map<string, number>();
  readonly events: SourceEvent[] = [];
  readonly queue: EventQueue;
  constructor(queue: EventQueue) {
    this.queue = queue;
  }
  pump(): void {
    for (const e of this.queue.drain()) {
      this.events.push(e);
      if (e.type === 'synced') {
        this.synced.set(e.kind, (this.synced.get(e.kind) ?? 0) + 1);
        continue;
      }
      const m = this.objects.get(e.kind) ?? new Map<string, unknown>();
      this.objects.set(e.kind, m);
      const text = (v: unknown) => (typeof v === 'string' ? v : '');
      const k = `${text(e.object.metadata?.namespace)}/${text(e.object.metadata?.name)}`;
      if (e.type === 'upsert') m.set(k, e.object);
      else m.delete(k);
    }
  }
  keys(kind: string): string[] {
    return [...(this.objects.get(kind)?.keys() ?? [])].sort();
  }
  /** Polls (bounded) until `check` holds. */
  async until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      this.pump();
      if (check()) return;
      await this.queue.wait(100);
    }
    this.pump();
    expect(check(), 'condition not reached in time').toBe(true);
  }
}

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f();
  cleanup = [];
});

async function started(opts = {}): Promise<{ api: TestApiServer; source: KubeSource; mirror: Mirror }> {
  const { api, kc } = await fixtureServer();
  const queue = new EventQueue();
  const source = new KubeSource(kc, 'node-1', queue, log, { minBackoffMs: 50, maxBackoffMs: 200, ...opts });
  cleanup.push(
    () => api.close(),
    () => source.stop(),
  );
  await source.start();
  const mirror = new Mirror(queue);
  await mirror.until(() => mirror.synced.get('Service') === 1 && mirror.synced.get('EndpointSlice') === 1 && mirror.synced.get('Node') === 1);
  return { api, source, mirror };
}

describe('listCollection', () => {
  it('pages with limit/continue and applies the selector to the list', async () => {
    const { api, kc } = await fixtureServer();
    cleanup.push(() => api.close());
    const all = await listCollection(kc, proxyResources('node-1')[1]!, { pageSize: 2 });
    const pages = api.requests.filter((r) => r.includes('endpointslices'));
    expect(pages.length).toBeGreaterThan(3);
    expect(new URL(`http://x${pages[0]!.slice(4)}`).searchParams.get('labelSelector')).toBe(PROXY_LABEL_SELECTOR);
    // The fixture's headless Service shop/db has a slice labelled service.kubernetes.io/headless.
    const names = all.items.map((i) => `${i.metadata?.namespace}/${i.metadata?.name}`);
    expect(names.some((n) => n.startsWith('shop/db-'))).toBe(false);
    expect(names.some((n) => n.startsWith('shop/frontend-'))).toBe(true);
    expect(all.metadata?.resourceVersion).toBe(String(api.resourceVersion));
  });

  it('restarts the list once when a continue token expires (410 with the captured Status)', async () => {
    const { api, kc } = await fixtureServer();
    cleanup.push(() => api.close());
    const first = await listCollection(kc, proxyResources('node-1')[0]!, { pageSize: 100 });
    api.expireContinueTokensAfterNextPage();
    const paged = await listCollection(kc, proxyResources('node-1')[0]!, { pageSize: 2 });
    expect(paged.items.map((i) => i.metadata?.name)).toEqual(first.items.map((i) => i.metadata?.name));
    // The first list, then the paged one's first page, its 410'd second page, and a fresh first page.
    expect(api.requests.filter((r) => r.startsWith('GET /api/v1/services?') && !r.includes('continue=')).length).toBe(3);
  });

  it('reports an error status with the server message', async () => {
    const { api, kc } = await fixtureServer();
    cleanup.push(() => api.close());
    api.failNextList(403);
    await expect(listCollection(kc, proxyResources('node-1')[0]!)).rejects.toMatchObject({ statusCode: 403, message: expect.stringContaining('injected') });
  });
});

describe('a value nested 100,000 levels deep on the wire', () => {
  it('reaches the queue whole from the list and from a watch event, without a stack overflow (the store then skips it)', async () => {
    // Written as text: a real API server refuses such a body (Go's decoder stops at 10,000 levels,
    // test/e2e/apiserver.test.ts), and JSON.stringify overflows long before 100,000.
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const object = (name: string, rv: number) =>
      `{"metadata":{"name":"${name}","namespace":"demo","resourceVersion":"${rv}","annotations":{"x":${deep}}},"spec":{"clusterIP":"10.96.0.9","ports":[{"port":80}]}}`;
    const watches: http.ServerResponse[] = [];
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (!req.url?.includes('watch=true')) {
        res.end(`{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[${object('listed', 5)}]}`);
        return;
      }
      watches.push(res);
      res.write(`{"type":"ADDED","object":{"kind":"Service","apiVersion":"v1",${object('watched', 6).slice(1)}}\n`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 't', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: 't' }],
      contexts: [{ name: 't', cluster: 't', user: 't' }],
      currentContext: 't',
    });
    const queue = new EventQueue();
    const informer = new SupervisedInformer(kc, proxyResources('node-1')[0]!, queue, log);
    cleanup.push(
      async () => {
        for (const w of watches) w.destroy();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
      () => informer.stop(),
    );
    await informer.start();
    const mirror = new Mirror(queue);
    await mirror.until(() => mirror.keys('Service').length === 2);
    expect(mirror.keys('Service')).toEqual(['demo/listed', 'demo/watched']);
    const annotations = (mirror.objects.get('Service')!.get('demo/watched') as { metadata: { annotations: { x: unknown } } }).metadata.annotations;
    expect(Array.isArray(annotations.x)).toBe(true);
    expect(informer.stats.errors).toEqual({});
  });
});

describe('keepIdentityOnly', () => {
  it('leaves what client-node matches on: name, namespace, uid, resourceVersion', () => {
    const o = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: 'b', uid: 'u', resourceVersion: '7', managedFields: [{}], labels: { x: 'y' } }, spec: { ports: [] }, status: {} };
    keepIdentityOnly(o);
    expect(o).toEqual({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: 'b', uid: 'u', resourceVersion: '7' } });
  });
});

describe('supervised informers', () => {
  it('delivers the listed objects, then watch events, with one wire shape', async () => {
    const { api, mirror } = await started();
    expect(mirror.keys('Service')).toContain('shop/frontend');
    expect(mirror.keys('Service')).not.toContain('shop/db-not-there');
    api.apply('services', service('demo/new', { clusterIP: '10.96.9.9', ports: [{ name: 'http', port: 80 }] }) as never);
    api.apply('endpointslices', endpointSlice('demo/new', [{ name: 'http', port: 80 }], [endpoint('10.244.1.9')]) as never);
    api.remove('services', 'shop', 'api');
    await mirror.until(() => mirror.keys('Service').includes('demo/new') && !mirror.keys('Service').includes('shop/api') && mirror.keys('EndpointSlice').includes('demo/new-abcde'));
    const watched = mirror.objects.get('Service')!.get('demo/new') as { metadata: { creationTimestamp?: unknown } };
    const listed = mirror.objects.get('Service')!.get('shop/frontend') as { metadata: { creationTimestamp?: unknown } };
    expect(typeof listed.metadata.creationTimestamp).toBe('string');
    // The informer's cache is cut to identity (keepIdentityOnly); the queued events are whole.
    expect((listed as { spec?: { ports?: unknown[] } }).spec?.ports?.length).toBeGreaterThan(0);
    expect((mirror.objects.get('EndpointSlice')!.get('demo/new-abcde') as { endpoints?: unknown[] }).endpoints).toHaveLength(1);
    expect(watched.metadata.creationTimestamp === undefined || typeof watched.metadata.creationTimestamp === 'string').toBe(true);
    // Watches asked for bookmarks and a server-side timeout of 5-10 minutes.
    const watch = api.requests.find((r) => r.includes('/api/v1/services?') && r.includes('watch=true'))!;
    expect(watch).toMatch(/allowWatchBookmarks=true/);
    expect(Number(/timeoutSeconds=(\d+)/.exec(watch)![1])).toBeGreaterThanOrEqual(300);
  });

  it('resumes from the last resourceVersion after a reset, without re-listing', async () => {
    const { api, source, mirror } = await started();
    const lists = api.requests.filter((r) => !r.includes('watch=')).length;
    api.resetWatches();
    api.apply('services', service('demo/after-reset', { clusterIP: '10.96.9.10', ports: [{ name: 'http', port: 80 }] }) as never);
    await mirror.until(() => mirror.keys('Service').includes('demo/after-reset'));
    expect(api.requests.filter((r) => !r.includes('watch=')).length).toBe(lists);
    expect(source.stats().reduce((n, s) => n + s.restarts, 0)).toBeGreaterThan(0);
  });

  it('restarts with backoff after HTTP 500 on the watch and on the list', async () => {
    const { api, source, mirror } = await started();
    api.failNextWatch(500);
    api.failNextWatch(500);
    api.endWatches();
    api.apply('services', service('demo/after-500', { clusterIP: '10.96.9.11', ports: [{ name: 'http', port: 80 }] }) as never);
    await mirror.until(() => mirror.keys('Service').includes('demo/after-500'));
    const errors = () =>
      source
        .stats()
        .map((s) => s.errors.http_500 ?? 0)
        .reduce((a, b) => a + b, 0);
    expect(errors()).toBe(2);
    // A re-list that fails is retried too.
    api.failNextList(500);
    api.expireWatches();
    api.apply('services', service('demo/after-list-500', { clusterIP: '10.96.9.14', ports: [{ name: 'http', port: 80 }] }) as never);
    await mirror.until(() => mirror.keys('Service').includes('demo/after-list-500'));
    expect(errors()).toBe(3);
  });

  it('re-lists after an in-stream 410 and reconciles deletions made meanwhile', async () => {
    const { api, mirror } = await started();
    api.stallWatches();
    api.remove('services', 'shop', 'checkout');
    api.apply('services', service('demo/during-gap', { clusterIP: '10.96.9.12', ports: [{ name: 'http', port: 80 }] }) as never);
    api.expireWatches();
    await mirror.until(() => mirror.synced.get('Service') === 2);
    expect(mirror.keys('Service')).toContain('demo/during-gap');
    expect(mirror.keys('Service')).not.toContain('shop/checkout');
  });

  it("lists first from the watch cache (resourceVersion=0, as client-go's reflector), and after a 410 consistently, paged", async () => {
    const { api, mirror } = await started();
    const lists = () => api.requests.filter((r) => r.startsWith('GET /api/v1/services?') && !r.includes('watch=')).map((r) => new URL(`http://x${r.slice(4)}`).searchParams);
    expect(lists().map((q) => q.get('resourceVersion'))).toEqual(['0']);
    api.expireWatches();
    await mirror.until(() => mirror.synced.get('Service') === 2);
    const relist = lists()[1]!;
    expect(relist.get('resourceVersion')).toBeNull();
    expect(relist.get('limit')).toBe(String(LIST_PAGE_SIZE));
  });

  it('a re-list of unchanged objects emits no update: the identity kept in the cache still matches', async () => {
    const { api, mirror } = await started();
    const upserts = () => mirror.events.filter((e) => e.type === 'upsert').length;
    const before = upserts();
    api.expireWatches();
    await mirror.until(() => mirror.synced.get('Service') === 2);
    expect(upserts()).toBe(before);
  });

  it('re-lists after an HTTP 410 on the watch', async () => {
    const { api, mirror } = await started();
    api.failNextWatch(410);
    api.failNextWatch(410);
    api.failNextWatch(410);
    api.endWatches();
    await mirror.until(() => (mirror.synced.get('Service') ?? 0) + (mirror.synced.get('EndpointSlice') ?? 0) + (mirror.synced.get('Node') ?? 0) >= 6);
  });

  it('aborts a silent (half-open) watch after the stall time and resumes it', async () => {
    const { api, mirror } = await started({ stallMs: 1_000 });
    api.stallWatches();
    api.apply('services', service('demo/after-stall', { clusterIP: '10.96.9.13', ports: [{ name: 'http', port: 80 }] }) as never);
    await mirror.until(() => mirror.keys('Service').includes('demo/after-stall'), 15_000);
  });

  it('resumes from a BOOKMARK resourceVersion', async () => {
    const { api, mirror } = await started();
    api.apply('nodes', { metadata: { name: 'other-node' } }); // advances the RV elsewhere
    api.bookmark();
    await new Promise((r) => setTimeout(r, 200));
    const rv = api.resourceVersion;
    api.endWatches();
    await mirror.until(() => api.requests.some((r) => r.includes('/api/v1/services?') && r.includes(`resourceVersion=${rv}`)));
  });

  it('stop() is final: no request after it', async () => {
    const { api, source } = await started();
    await source.stop();
    const count = api.requests.length;
    api.endWatches();
    await new Promise((r) => setTimeout(r, 500));
    expect(api.requests.length).toBe(count);
  });

  it('watches only its own Node', async () => {
    const { api, mirror } = await started();
    api.apply('nodes', { metadata: { name: 'node-2' } });
    api.apply('nodes', { metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/zone': 'zone-a' } } });
    await mirror.until(() => mirror.keys('Node').includes('/node-1'));
    expect(mirror.keys('Node')).toEqual(['/node-1']);
  });
});

describe('ServiceCIDRs: watched where the server serves them (v1.33 and later)', () => {
  const cidrs = wire<List>('list-servicecidrs-v1.36.json');
  /** Starts a source on `kc` (default: the server's own) and mirrors its events; everything is cleaned up after the test. */
  const watch = async (api: TestApiServer, kc: KubeConfig, logger = log) => {
    const queue = new EventQueue();
    const source = new KubeSource(kc, 'node-1', queue, logger, { minBackoffMs: 50, maxBackoffMs: 200 });
    cleanup.push(
      () => api.close(),
      () => source.stop(),
    );
    await source.start();
    return { source, mirror: new Mirror(queue) };
  };

  it('a server that serves them: discovered, listed and watched like the rest', async () => {
    const { api, kc } = await fixtureServer();
    api.serviceCIDRs = true;
    api.seed('servicecidrs', cidrs.items);
    const { source, mirror } = await watch(api, kc);
    await mirror.until(() => mirror.synced.get('ServiceCIDR') === 1 && mirror.keys('ServiceCIDR').includes('/kubernetes'));
    api.apply('servicecidrs', { metadata: { name: 'extra' }, spec: { cidrs: ['10.100.0.0/16'] } });
    await mirror.until(() => mirror.keys('ServiceCIDR').includes('/extra'));
    api.remove('servicecidrs', '', 'extra');
    await mirror.until(() => !mirror.keys('ServiceCIDR').includes('/extra'));
    expect(source.stats().map((s) => s.kind)).toEqual(['Service', 'EndpointSlice', 'Node', 'ServiceCIDR']);
  });

  it('a server that does not (v1.26): one discovery request, never a list, and the others sync', async () => {
    const lines: string[] = [];
    const capture = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const { api, kc } = await fixtureServer();
    const { source, mirror } = await watch(api, kc, capture);
    await mirror.until(() => mirror.synced.get('Service') === 1 && mirror.synced.get('EndpointSlice') === 1 && mirror.synced.get('Node') === 1);
    expect(api.requests.filter((r) => r.includes('networking.k8s.io'))).toEqual(['GET /apis/networking.k8s.io/v1']);
    expect(lines.join('')).toMatch(/does not serve networking.k8s.io\/v1\/servicecidrs/);
    expect(source.stats().map((s) => s.kind)).toEqual(['Service', 'EndpointSlice', 'Node']);
  });

  it('a discovery that fails is retried with backoff until it answers', async () => {
    const { api, kc } = await fixtureServer();
    api.serviceCIDRs = true;
    api.seed('servicecidrs', cidrs.items);
    const broken = new KubeConfig();
    // The first discovery goes to a closed port; then the cluster's server is put back.
    broken.loadFromOptions({ ...kc, clusters: [{ name: 'test', server: 'http://127.0.0.1:1', skipTLSVerify: true }], users: kc.users, contexts: kc.contexts, currentContext: 'test' });
    const { mirror } = await watch(api, broken);
    broken.clusters = kc.clusters;
    await mirror.until(() => mirror.keys('ServiceCIDR').includes('/kubernetes'));
  });

  it('a one-shot read lists them, or none when the ClusterRole predates them (403), and still reads the Services', async () => {
    const { api, kc } = await fixtureServer();
    cleanup.push(() => api.close());
    api.serviceCIDRs = true;
    api.seed('servicecidrs', cidrs.items);
    expect((await listProxyObjects(kc, 'node-1')).serviceCIDRs.map((c) => c.metadata?.name)).toEqual(['kubernetes']);
    api.forbidden.add('servicecidrs');
    const batch = await listProxyObjects(kc, 'node-1');
    expect(batch.serviceCIDRs).toEqual([]);
    expect(batch.services.length).toBeGreaterThan(3);
  });
});
