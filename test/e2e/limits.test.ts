/**
 * Objects at the API server's own limits, with real packets, in both modes: a LoadBalancer Service
 * whose namespace, name, port name, labels, EndpointSlice name and node names are as long as the
 * API allows (all valid) gets its rules, and so does its neighbour. nft's comments are limited to
 * 128 characters, and upstream's comment texts (`masquerade LOCAL traffic for NS/NAME:PORT
 * external destinations`) exceed that with long names: kproxy shortens them deterministically
 * instead of failing the whole table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoint, endpointSlice, node, service } from '../support/objects.ts';
import { NODE1_EXT_IP, tally, MODES, TestCluster } from './harness/cluster.ts';

/** A DNS label of exactly 63 characters. */
const label63 = (start: string) => start.padEnd(62, 'x') + '0';
const NS = label63('team-payments-production-eu-west-1-');
const NAME = label63('checkout-api-gateway-frontend-service-');
const PORT_NAME = 'https-metricsxy'; // IANA_SVC_NAME: at most 15 characters
/** A DNS subdomain of exactly 253 characters. */
const SUBDOMAIN = [label63('a'), label63('b'), label63('c'), label63('d').slice(0, 61)].join('.');
const LABELS = { [`${SUBDOMAIN}/${label63('key-')}`]: label63('value-') };
const PORTS = [{ name: PORT_NAME, port: 443, targetPort: 8080, nodePort: 31443 }];
const EP_PORTS = [{ name: PORT_NAME, port: 8080 }];

function longService() {
  const svc = service(`${NS}/${NAME}`, {
    type: 'LoadBalancer',
    clusterIP: '10.96.5.1',
    ports: PORTS,
    externalIPs: ['198.51.100.50'],
    loadBalancerIPs: ['203.0.113.50'],
    loadBalancerSourceRanges: ['198.18.0.0/24'],
    affinityTimeout: 10800,
    labels: LABELS,
  }) as { metadata: Record<string, unknown> };
  svc.metadata.annotations = { [`${SUBDOMAIN}/${label63('note-')}`]: 'x'.repeat(4096) };
  const slice = endpointSlice(`${NS}/${NAME}`, EP_PORTS, [endpoint('10.244.1.10', { node: 'node-1' }), endpoint('10.244.2.10', { node: 'node-2' })]) as { metadata: Record<string, unknown> };
  // The EndpointSlice controller names slices `<service>-<random>`; at most a DNS subdomain.
  slice.metadata.name = `${NAME}-${'s'.repeat(253 - NAME.length - 1)}`;
  slice.metadata.labels = { ...(slice.metadata.labels as object), ...LABELS };
  return [svc, slice];
}

const neighbour = () => [
  service('demo/next-door', { clusterIP: '10.96.5.2', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
  endpointSlice('demo/next-door', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.11', { node: 'node-1' })]),
];

describe.each(MODES)('%s mode: objects at the API limits', (mode) => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.create(
      [
        { name: 'l1', ip: '10.244.1.10', node: 'node-1', tcp: [8080] },
        { name: 'n1', ip: '10.244.1.11', node: 'node-1', tcp: [8080] },
        { name: 'r1', ip: '10.244.2.10', node: 'node-2', tcp: [8080] },
        { name: 'src', ip: '10.244.1.99', node: 'node-1' },
      ],
      [],
      mode,
    );
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('writes the rules of a Service with every name at its maximum length, and of its neighbour', async () => {
    await c.sync([...longService(), ...neighbour(), node('node-1', label63('zone-'))]);
    expect(tally(await c.probe('src', 'tcp', '10.96.5.2', 80, { count: 4 }))).toEqual({ n1: 4 });
    // ClusterIP with ClientIP affinity: one endpoint answers every connection from one client.
    const affine = await c.probe('src', 'tcp', '10.96.5.1', 443, { count: 6 });
    expect(affine.answers).toHaveLength(6);
    expect(Object.keys(tally(affine))).toHaveLength(1);
    // NodePort and externalIP from outside (the LB IP is filtered by source range: allowed here).
    for (const [host, port] of [
      [NODE1_EXT_IP, 31443],
      ['198.51.100.50', 443],
      ['203.0.113.50', 443],
    ] as const) {
      expect((await c.probe('client', 'tcp', host, port, { count: 3 })).answers, `${host}:${port}`).toHaveLength(3);
    }
    const rules = await c.rules();
    expect(rules).toContain(NS);
    if (mode === 'nftables') {
      // Every comment nft holds fits its 128 characters; the long ones end in ~ and a hash.
      const comments = [...rules.matchAll(/comment "([^"]*)"/g)].map((m) => m[1]!);
      expect(comments.length).toBeGreaterThan(0);
      expect(comments.every((t) => t.length <= 128)).toBe(true);
      expect(comments.some((t) => /~[A-Z2-7]{8}$/.test(t))).toBe(true);
    }
  });

  it('dry-run prints the same Service', async () => {
    const file = c.writeObjects([...longService(), ...neighbour()]);
    const { stdout } = await c.kproxy(['dry-run', '--from', file, '--proxy-mode', mode, '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16']);
    expect(stdout).toContain(`${NS}/${NAME}:${PORT_NAME}`.slice(0, 100));
  });
});
