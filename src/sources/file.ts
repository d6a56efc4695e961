/**
 * File source: reads Services, EndpointSlices, Nodes and ServiceCIDRs from YAML or JSON files, the
 * way `kubectl get svc,endpointslices -A -o yaml|json` and `kubectl get nodes,servicecidrs -o yaml` write them,
 * and NetworkPolicies, Pods and Namespaces as `kubectl get networkpolicies,pods,namespaces -A -o yaml` does
 * (used with --network-policy).
 *
 * Accepted shapes: a single object, multi-document YAML (`---`), `kind: List` and typed lists
 * (`ServiceList`, `EndpointSliceList`, `NodeList`, `ServiceCIDRList`, `NetworkPolicyList`, `PodList`,
 * `NamespaceList`, whose items may omit `kind` as the API server's
 * list responses do). A directory is read one level deep, its `.yaml`, `.yml` and `.json` files in
 * name order. Objects of any other kind are skipped with a warning; a file that cannot be read or
 * parsed is an error (the caller decides whether that is fatal).
 * @module
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Composer, CST, Lexer, LineCounter, Parser, type Document } from 'yaml';
import { MAX_NESTING_DEPTH, type ObjectBatch, type ObjectKind, type RawObject } from './objects.ts';

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

/** The result of reading files: the objects found, where each came from, and warnings about what was skipped. */
export interface FileSourceResult extends ObjectBatch {
  readonly warnings: SourceWarning[];
  /** `file, document 2.items[3]` for every object found. */
  readonly origins: Map<RawObject, string>;
}

// Maps, never plain objects: a kind such as `constructor` or `__proto__` must find nothing.
const KINDS: ReadonlyMap<string, ObjectKind> = new Map([
  ['Service', 'Service'],
  ['EndpointSlice', 'EndpointSlice'],
  ['Node', 'Node'],
  ['ServiceCIDR', 'ServiceCIDR'],
  ['NetworkPolicy', 'NetworkPolicy'],
  ['Pod', 'Pod'],
  ['Namespace', 'Namespace'],
]);
const LIST_ITEM_KIND: ReadonlyMap<string, ObjectKind> = new Map([
  ['ServiceList', 'Service'],
  ['EndpointSliceList', 'EndpointSlice'],
  ['NodeList', 'Node'],
  ['ServiceCIDRList', 'ServiceCIDR'],
  ['NetworkPolicyList', 'NetworkPolicy'],
  ['PodList', 'Pod'],
  ['NamespaceList', 'Namespace'],
]);
/** Lists inside lists read, at most. */
const MAX_LIST_NESTING = 4;
const EXTENSIONS = /\.(ya?ml|json)$/i;
/** Files above this size are refused: a cluster dump of 50k Services is well below it. */
export const MAX_FILE_BYTES = 512 * 1024 * 1024;

/**
 * Reads every path (file or directory) and sorts the objects by kind.
 * @param paths files or directories, in the order given on the command line
 * @throws SourceError when a path is missing or unreadable, or a file does not parse
 */
export async function readObjectFiles(paths: readonly string[]): Promise<FileSourceResult> {
  const result: FileSourceResult = { services: [], endpointSlices: [], nodes: [], serviceCIDRs: [], networkPolicies: [], pods: [], namespaces: [], warnings: [], origins: new Map() };
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
 * Levels of YAML nesting a document is composed to. The YAML composer and `toJS` recurse, a few stack
 * frames a level, and overflow at about 600 levels, losing the whole file. Collections deeper than
 * this are replaced by a null before composing: an object holding one is still deeper than
 * {@link MAX_NESTING_DEPTH} (this adds the two levels of a `List`'s `items` and one to spare), so the
 * state stage refuses that object alone, naming the field, and its neighbours are used.
 */
const YAML_COMPOSE_DEPTH = MAX_NESTING_DEPTH + 3;

/**
 * Parses the text of one file into its top-level documents (JSON or YAML). Nesting never reaches
 * the JavaScript stack: V8's `JSON.parse` does not recurse, and YAML is bounded while it is parsed
 * ({@link parseBounded}) and pruned before it is composed (see {@link YAML_COMPOSE_DEPTH}).
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
  const lines = new LineCounter();
  const composer = new Composer({ uniqueKeys: false });
  const docs: Document.Parsed[] = [];
  for (const token of parseBounded(text, lines, YAML_COMPOSE_DEPTH + 2)) {
    if (token.type === 'document') pruneDeepCollections(token, YAML_COMPOSE_DEPTH);
    docs.push(...composer.next(token));
  }
  docs.push(...composer.end());
  const out: unknown[] = [];
  for (const doc of docs) {
    const [first] = doc.errors;
    if (first) {
      const { line, col } = lines.linePos(first.pos[0]);
      throw new SourceError(file, `invalid YAML: ${first.message} at line ${line}, column ${col}`, { cause: first });
    }
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
 * yaml's CST parser, fed one lexeme at a time, with block nesting bounded. The parser keeps open
 * collections on a stack of its own, but closes them by recursion: one line that dedents past N
 * block levels costs N nested calls, and overflows at a few thousand (`- - - … x` then a key).
 * So once `maxStack` block levels are open, the lexemes of the deeper part are not fed to it: they
 * are skipped, offsets and line numbers kept, up to the first line that starts at or left of the
 * column where the skipping began, outside any flow collection. The parser sees an empty value
 * there (null), inside an object that is then too deep anyway. Flow collections (`[[[…]]]`) are
 * closed one bracket at a time and are left to {@link pruneDeepCollections}.
 */
function* parseBounded(text: string, lines: LineCounter, maxStack: number): Generator<CST.Token> {
  const parser = new Parser(lines.addNewLine);
  lines.addNewLine(0);
  const skip = (lexeme: string) => {
    const type = CST.tokenType(lexeme);
    if (type === 'scalar' || type === 'doc-mode' || type === 'flow-error-end') return; // zero width
    parser.offset += lexeme.length;
    if (type === 'newline') lines.addNewLine(parser.offset);
  };
  let column = 0; // of the next lexeme, on its line
  let skipping: { column: number; flow: number; newline?: string | undefined; space?: string | undefined } | undefined;
  for (const lexeme of new Lexer().lex(text)) {
    const type = CST.tokenType(lexeme);
    const at = column;
    column = type === 'newline' ? 0 : column + lexeme.length;
    if (skipping) {
      if (type === 'newline') {
        if (skipping.newline !== undefined) skip(skipping.newline);
        if (skipping.space !== undefined) skip(skipping.space);
        skipping.newline = lexeme;
        skipping.space = undefined;
        continue;
      }
      if (type === 'space' && skipping.newline !== undefined && skipping.space === undefined) {
        skipping.space = lexeme;
        continue;
      }
      const lineStart = skipping.newline !== undefined;
      if (type === 'doc-start' || type === 'doc-end' || type === 'directive-line' || (lineStart && skipping.flow === 0 && at <= skipping.column)) {
        const held = [skipping.newline, skipping.space];
        skipping = undefined;
        for (const h of held) if (h !== undefined) yield* parser.next(h);
      } else {
        if (skipping.newline !== undefined) skip(skipping.newline);
        if (skipping.space !== undefined) skip(skipping.space);
        skipping.newline = skipping.space = undefined;
        if (type === 'flow-seq-start' || type === 'flow-map-start') skipping.flow++;
        else if ((type === 'flow-seq-end' || type === 'flow-map-end') && skipping.flow > 0) skipping.flow--;
        skip(lexeme);
        continue;
      }
    }
    yield* parser.next(lexeme);
    // A scalar marker is followed by its text, which the parser must get next: check after the text.
    if (type === 'scalar' || parser.stack.length <= maxStack) continue;
    const top = parser.stack.at(-1)?.type;
    const below = parser.stack.at(-2)?.type;
    if (top === 'block-map' || top === 'block-seq' || below === 'block-map' || below === 'block-seq') skipping = { column: at, flow: 0 };
  }
  yield* parser.end();
}

/**
 * Replaces, in place, every collection of a parsed YAML document nested deeper than `limit` levels
 * by a `~` (null) scalar spanning the same source (the composer tracks offsets), walking without
 * recursion. Anchors and tags before a replaced collection stay: they belong to its parent's item.
 */
export function pruneDeepCollections(doc: CST.Document, limit: number): void {
  type Slot = { value?: CST.Token; key?: CST.Token | null };
  const stack: { token: CST.Token; level: number }[] = [];
  const visit = (slot: Slot, field: 'key' | 'value', level: number) => {
    const token = slot[field];
    if (!token || (token.type !== 'block-map' && token.type !== 'block-seq' && token.type !== 'flow-collection')) return;
    if (level <= limit) {
      stack.push({ token, level });
      return;
    }
    const rest = sourceEnd(token) - token.offset - 1;
    const end: CST.SourceToken[] = rest > 0 ? [{ type: 'space', offset: token.offset + 1, indent: token.indent, source: ' '.repeat(rest) }] : [];
    slot[field] = { type: 'scalar', offset: token.offset, indent: token.indent, source: '~', end };
  };
  visit(doc, 'value', 1);
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const token = top.token as CST.BlockMap | CST.BlockSequence | CST.FlowCollection;
    for (const item of token.items as Slot[]) {
      visit(item, 'key', top.level + 1);
      visit(item, 'value', top.level + 1);
    }
  }
}

/** Offset just past a CST token's source: the end of its last descendant, found without recursion. */
function sourceEnd(token: CST.Token): number {
  let end = token.offset;
  const past = (t: { offset: number; source: string }) => (end = Math.max(end, t.offset + t.source.length));
  for (let t: CST.Token | undefined = token; t !== undefined;) {
    if ('source' in t) past(t);
    let next: CST.Token | undefined;
    if (t.type === 'flow-collection' && t.end.length > 0) t.end.forEach(past);
    else if (t.type === 'block-map' || t.type === 'block-seq' || t.type === 'flow-collection') {
      const last: CST.CollectionItem | undefined = t.items.at(-1);
      next = last?.value ?? last?.sep?.at(-1) ?? last?.key ?? last?.start.at(-1);
    } else if ('end' in t && Array.isArray(t.end)) t.end.forEach(past);
    t = next;
  }
  return end;
}

/**
 * Sorts parsed documents into the batch, unrolling lists; anything unusable becomes a warning.
 * Exported for tests and for other sources that hand over already-parsed documents.
 */
export function collect(file: string, docs: readonly unknown[], into: FileSourceResult): void {
  const add = (value: unknown, where: string, impliedKind?: ObjectKind, listDepth = 0) => {
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
      // kubectl writes no List inside a List; a few levels are read, deeper ones are not unrolled.
      if (listDepth >= MAX_LIST_NESTING) {
        into.warnings.push({ file, message: `${where}: a ${kind} inside ${MAX_LIST_NESTING} levels of lists, skipped` });
        return;
      }
      items.forEach((item, i) => add(item, `${where}.items[${i}]`, LIST_ITEM_KIND.get(kind), listDepth + 1));
      return;
    }
    const known = kind === undefined ? undefined : KINDS.get(kind);
    if (!known) {
      const shown = kind === undefined ? 'an object without kind' : `kind ${JSON.stringify(kind).slice(0, 60)}`;
      into.warnings.push({ file, message: `${where}: ${shown} is not used by kproxy, skipped` });
      return;
    }
    const obj = value as RawObject;
    into.origins.set(obj, `${file}, ${where}`);
    if (known === 'Service') into.services.push(obj);
    else if (known === 'EndpointSlice') into.endpointSlices.push(obj);
    else if (known === 'ServiceCIDR') into.serviceCIDRs.push(obj);
    else if (known === 'NetworkPolicy') (into.networkPolicies ??= []).push(obj);
    else if (known === 'Pod') (into.pods ??= []).push(obj);
    else if (known === 'Namespace') (into.namespaces ??= []).push(obj);
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
