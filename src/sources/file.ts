/**
 * File source: reads Services, EndpointSlices and Nodes from YAML or JSON files, the way
 * `kubectl get svc,endpointslices -A -o yaml|json` and `kubectl get nodes -o yaml` write them.
 *
 * Accepted shapes: a single object, multi-document YAML (`---`), `kind: List` and typed lists
 * (`ServiceList`, `EndpointSliceList`, `NodeList`, whose items may omit `kind` as the API server's
 * list responses do). A directory is read one level deep, its `.yaml`, `.yml` and `.json` files in
 * name order. Objects of any other kind are skipped with a warning; a file that cannot be read or
 * parsed is an error (the caller decides whether that is fatal).
 * @module
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { ObjectBatch, ObjectKind, RawObject } from './objects.ts';

/** A message about the input, as data: what was skipped and why. */
export interface SourceWarning {
  readonly file: string;
  readonly message: string;
}

/** Thrown when a path cannot be read or a file is not valid YAML/JSON. */
export class SourceError extends Error {
  override readonly name = 'SourceError';
  readonly file: string;
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(`${file}: ${message}`, options);
    this.file = file;
  }
}

/** The result of reading files: the objects found, and warnings about what was skipped. */
export interface FileSourceResult extends ObjectBatch {
  readonly warnings: SourceWarning[];
}

// Maps, never plain objects: a kind such as `constructor` or `__proto__` must find nothing.
const KINDS: ReadonlyMap<string, ObjectKind> = new Map([
  ['Service', 'Service'],
  ['EndpointSlice', 'EndpointSlice'],
  ['Node', 'Node'],
]);
const LIST_ITEM_KIND: ReadonlyMap<string, ObjectKind> = new Map([
  ['ServiceList', 'Service'],
  ['EndpointSliceList', 'EndpointSlice'],
  ['NodeList', 'Node'],
]);
const EXTENSIONS = /\.(ya?ml|json)$/i;
/** Files above this size are refused: a cluster dump of 50k Services is well below it. */
export const MAX_FILE_BYTES = 512 * 1024 * 1024;

/**
 * Reads every path (file or directory) and sorts the objects by kind.
 * @param paths files or directories, in the order given on the command line
 * @throws SourceError when a path is missing or unreadable, or a file does not parse
 */
export async function readObjectFiles(paths: readonly string[]): Promise<FileSourceResult> {
  const result: FileSourceResult = { services: [], endpointSlices: [], nodes: [], warnings: [] };
  for (const path of paths) {
    for (const file of await expand(path)) {
      let text: string;
      try {
        const info = await stat(file);
        if (info.size > MAX_FILE_BYTES) throw new SourceError(file, `larger than ${MAX_FILE_BYTES} bytes`);
        text = await readFile(file, 'utf8');
      } catch (err) {
        if (err instanceof SourceError) throw err;
        throw new SourceError(file, `cannot read: ${(err as Error).message}`, { cause: err });
      }
      collect(file, parseDocuments(file, text), result);
    }
  }
  return result;
}

/**
 * Parses the text of one file into its top-level documents (JSON or YAML).
 * @throws SourceError on a syntax error, with the parser's message and position
 */
export function parseDocuments(file: string, text: string): unknown[] {
  if (/\.json$/i.test(file)) {
    try {
      return [JSON.parse(text)];
    } catch (err) {
      throw new SourceError(file, `invalid JSON: ${(err as Error).message}`, { cause: err });
    }
  }
  const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: false });
  const out: unknown[] = [];
  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    const [first] = doc.errors;
    if (first) throw new SourceError(file, `invalid YAML: ${first.message}`, { cause: first });
    let value: unknown;
    try {
      // Aliases are resolved here: an unresolved one, or an alias bomb, throws.
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      throw new SourceError(file, `invalid YAML: ${(err as Error).message}`, { cause: err });
    }
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

/**
 * Sorts parsed documents into the batch, unrolling lists; anything unusable becomes a warning.
 * Exported for tests and for other sources that hand over already-parsed documents.
 */
export function collect(file: string, docs: readonly unknown[], into: FileSourceResult): void {
  const add = (value: unknown, where: string, impliedKind?: ObjectKind) => {
    if (!isObject(value)) {
      into.warnings.push({ file, message: `${where}: not an object, skipped` });
      return;
    }
    const kind = typeof value.kind === 'string' ? value.kind : impliedKind;
    if (kind === 'List' || (kind !== undefined && LIST_ITEM_KIND.has(kind))) {
      const items = value.items;
      if (items === null || items === undefined) return;
      if (!Array.isArray(items)) {
        into.warnings.push({ file, message: `${where}: ${kind}.items is not a list, skipped` });
        return;
      }
      items.forEach((item, i) => add(item, `${where}.items[${i}]`, LIST_ITEM_KIND.get(kind)));
      return;
    }
    const known = kind === undefined ? undefined : KINDS.get(kind);
    if (!known) {
      const shown = kind === undefined ? 'an object without kind' : `kind ${JSON.stringify(kind).slice(0, 60)}`;
      into.warnings.push({ file, message: `${where}: ${shown} is not used by kproxy, skipped` });
      return;
    }
    const obj = value as RawObject;
    if (known === 'Service') into.services.push(obj);
    else if (known === 'EndpointSlice') into.endpointSlices.push(obj);
    else into.nodes.push(obj);
  };
  docs.forEach((doc, i) => add(doc, docs.length > 1 ? `document ${i + 1}` : 'document'));
}

async function expand(path: string): Promise<string[]> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    throw new SourceError(path, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  if (!info.isDirectory()) return [path];
  const names = (await readdir(path)).filter((n) => EXTENSIONS.test(n)).sort();
  return names.map((n) => join(path, n));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
