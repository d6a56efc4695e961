/**
 * Hostile input files for issue 24: one value nested N levels deep beside valid objects, in every
 * format `--from` reads. Each file holds a Service whose annotation `x` is the deep value and a
 * valid neighbour Service (with its EndpointSlice where the format can hold one) that must keep
 * its rules. Text is built by concatenation: JSON.stringify itself overflows at about 10,000 levels.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The depths every format is tested at (issue 24). */
export const DEPTHS = [100, 1_000, 10_000, 100_000] as const;

/** The neighbours' endpoint: one pod on node-1, port 8080. */
export const NEIGHBOUR_POD = { name: 'next-door', ip: '10.244.1.11' } as const;

/** One file of the set. */
export interface DeepFile {
  /** File name in the folder, which also says the format. */
  readonly name: string;
  /** `namespace/name` of the deep Service, which must be skipped. */
  readonly deep: string;
  /** Where the deep Service sits, as the warning names it (`document 1`, `document.items[0]`). */
  readonly at: string;
  /** The field path the warning starts with. */
  readonly field: string;
  /** ClusterIP of the valid neighbour Service (port 80 → NEIGHBOUR_POD:8080), undefined for a file of the deep object alone. */
  readonly neighbourIP: string | undefined;
}

const arrays = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
const maps = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);

function serviceJson(name: string, ip: string, annotation?: string): string {
  const annotations = annotation === undefined ? '' : `,"annotations":{"x":${annotation}}`;
  return `{"apiVersion":"v1","kind":"Service","metadata":{"name":"${name}","namespace":"deep"${annotations}},"spec":{"type":"ClusterIP","clusterIP":"${ip}","clusterIPs":["${ip}"],"ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}}`;
}

function sliceJson(service: string): string {
  return `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"${service}-abcde","namespace":"deep","labels":{"kubernetes.io/service-name":"${service}"}},"addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],"endpoints":[{"addresses":["${NEIGHBOUR_POD.ip}"],"conditions":{"ready":true},"nodeName":"node-1"}]}`;
}

/** A block-style YAML Service (as kubectl writes them) with `annotation` lines under `x:`, indented for it. */
function serviceYaml(name: string, ip: string, indent: string, deepLines?: string): string {
  const lines = [
    'apiVersion: v1',
    'kind: Service',
    'metadata:',
    `  name: ${name}`,
    '  namespace: deep',
    ...(deepLines === undefined ? [] : ['  annotations:', `    x:${deepLines}`]),
    'spec:',
    '  type: ClusterIP',
    `  clusterIP: ${ip}`,
    `  clusterIPs: [${ip}]`,
    '  ports:',
    '  - name: http',
    '    port: 80',
    '    protocol: TCP',
    '    targetPort: 8080',
  ];
  return lines.map((l, i) => (i === 0 ? l : indent + l)).join('\n');
}

function sliceYaml(service: string, indent: string): string {
  const lines = [
    'apiVersion: discovery.k8s.io/v1',
    'kind: EndpointSlice',
    'metadata:',
    `  name: ${service}-abcde`,
    '  namespace: deep',
    `  labels: {kubernetes.io/service-name: ${service}}`,
    'addressType: IPv4',
    'ports: [{name: http, port: 8080, protocol: TCP}]',
    'endpoints:',
    `- addresses: [${NEIGHBOUR_POD.ip}]`,
    '  conditions: {ready: true}',
    '  nodeName: node-1',
  ];
  return lines.map((l, i) => (i === 0 ? l : indent + l)).join('\n');
}

/**
 * Writes the set of files for one depth into `dir/depth-N/` and says what each must give.
 * The deep values: nested lists and maps (JSON, YAML flow), compact block sequences (`- - - x`,
 * the only block form whose size grows linearly with depth) and, up to 1,000 levels, block maps
 * nested by indentation.
 */
export function writeDeepFiles(dir: string, depth: number): { dir: string; files: DeepFile[] } {
  const out = join(dir, `depth-${depth}`);
  mkdirSync(out, { recursive: true });
  const files: DeepFile[] = [];
  let n = 0;
  const add = (name: string, text: string, at: string, field: string, withNeighbour = true) => {
    n++;
    files.push({ name, deep: `deep/deep-${n}`, at, field, neighbourIP: withNeighbour ? `10.96.24.${n}` : undefined });
    writeFileSync(join(out, name), text);
  };
  const ip = () => `10.96.24.${n + 1}`;
  const deepName = () => `deep-${n + 1}`;
  const good = () => `good-${n + 1}`;

  // JSON: a List with the deep Service first, and a JSON document of maps nested deep.
  add(
    'list.json',
    `{"apiVersion":"v1","kind":"List","items":[${serviceJson(deepName(), '10.96.25.1', arrays(depth))},${serviceJson(good(), ip())},${sliceJson(good())}]}`,
    'document.items[0]',
    'metadata.annotations.x[0]',
  );
  add(
    'maps.json',
    `{"apiVersion":"v1","kind":"List","items":[${sliceJson(good())},${serviceJson(good(), ip())},${serviceJson(deepName(), '10.96.25.2', maps(depth))}]}`,
    'document.items[2]',
    'metadata.annotations.x.a',
  );
  // JSON: a typed list, whose items have no kind (the neighbour's slice is in list.json's sibling below).
  add(
    'typed.json',
    `{"apiVersion":"v1","kind":"ServiceList","items":[${serviceJson(good(), ip())},${serviceJson(deepName(), '10.96.25.3', arrays(depth)).replace('"kind":"Service",', '')}]}`,
    'document.items[1]',
    'metadata.annotations.x[0]',
  );
  writeFileSync(join(out, 'typed-slice.json'), sliceJson(`good-${n}`));
  // YAML flow style inside block style, multi-document.
  add(
    'flow.yaml',
    [serviceYaml(deepName(), '10.96.25.4', '', ` ${arrays(depth)}`), serviceYaml(good(), ip(), ''), sliceYaml(good(), '')].join('\n---\n') + '\n',
    'document 1',
    'metadata.annotations.x[0]',
  );
  // A whole YAML file in flow style (JSON is YAML), with maps nested deep.
  add(
    'flow-list.yaml',
    `{"apiVersion":"v1","kind":"List","items":[${serviceJson(good(), ip())},${serviceJson(deepName(), '10.96.25.5', maps(depth))},${sliceJson(good())}]}\n`,
    'document.items[1]',
    'metadata.annotations.x.a',
  );
  // YAML block style: compact nested sequences, multi-document with the deep one in the middle.
  add(
    'block.yaml',
    [sliceYaml(good(), ''), serviceYaml(deepName(), '10.96.25.6', '', `\n    ${'- '.repeat(depth)}x`), serviceYaml(good(), ip(), '')].join('\n---\n') + '\n',
    'document 2',
    'metadata.annotations.x[0]',
  );
  // YAML kind: List as kubectl writes it, block style, the deep item between two good ones.
  const item = (text: string) => `- ${text}`;
  add(
    'list.yaml',
    [
      'apiVersion: v1',
      'kind: List',
      'items:',
      item(serviceYaml(good(), ip(), '  ')),
      item(serviceYaml(deepName(), '10.96.25.7', '  ', `\n      ${'- '.repeat(depth)}x`)),
      item(sliceYaml(good(), '  ')),
      'metadata: {resourceVersion: ""}',
      '',
    ].join('\n'),
    'document.items[1]',
    'metadata.annotations.x[0]',
  );
  // YAML typed list, block style.
  add(
    'typed.yaml',
    [
      'apiVersion: v1',
      'kind: ServiceList',
      'items:',
      item(serviceYaml(deepName(), '10.96.25.8', '  ', `\n      ${'- '.repeat(depth)}x`).replace('kind: Service\n  ', '')),
      item(serviceYaml(good(), ip(), '  ')),
      '',
    ].join('\n'),
    'document.items[0]',
    'metadata.annotations.x[0]',
  );
  writeFileSync(join(out, 'typed-slice.yaml'), sliceYaml(`good-${n}`, '') + '\n');
  if (depth <= 1_000) {
    // Block maps nested by indentation: 1,000 levels are a 1 MB file; 10,000 would be 100 MB.
    const nested = Array.from({ length: depth }, (_, i) => `\n${'  '.repeat(i + 3)}a:`).join('') + ' 1';
    add('indented.yaml', [serviceYaml(deepName(), '10.96.25.9', '', nested), serviceYaml(good(), ip(), ''), sliceYaml(good(), '')].join('\n---\n') + '\n', 'document 1', 'metadata.annotations.x.a');
  }
  // A file whose only object is the deep one: a warning, nothing else.
  add('alone.yaml', serviceYaml(deepName(), '10.96.25.10', '', ` ${arrays(depth)}`) + '\n', 'document', 'metadata.annotations.x[0]', false);
  return { dir: out, files };
}
