/**
 * The parts of `@kubernetes/client-node` kproxy uses — `KubeConfig`, `ListWatch`, `Watch` and the
 * fetch-based HTTP library — loaded without the generated API.
 *
 * client-node 2.0.1's package index, and its `config.js` on its own, import `gen/index.js`: 225
 * generated API classes and 2,742 model classes. kproxy calls none of them; it lists with raw
 * requests and watches with `Watch`. Loading them costs every node ~34 MiB of RSS and ~0.3 s of
 * start (measured by `bench/startup.ts`: 112 MiB and 0.5 s for the index, 78 MiB and 0.2 s for this
 * module, against Node's own 42 MiB). So this module imports the library's own files one by one,
 * with a resolve hook, active only while they load, that answers two of their imports with what
 * those files actually use:
 *
 * - `config.js` imports `createConfiguration` and `ServerConfiguration` from `./gen/index.js`
 *   (for `makeApiClient`, which kproxy never calls): they come from `gen/configuration.js` and
 *   `gen/servers.js`, the files `gen/index.js` takes them from;
 * - `cache.js` (`ListWatch`) imports `./serializer.js` only to serialise its label and field
 *   selectors as `'string'`, which the model serialiser returns unchanged: a serialiser that does
 *   exactly that, and throws for any other type, stands in.
 *
 * The hook is keyed by importing file and specifier; if an upgrade of client-node moves either, it
 * no longer matches and the full library loads (correct, only heavier). `test/sources/client-node.test.ts`
 * fails in that case, so the upgrade that breaks it is seen.
 * @module
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { registerHooks } from 'node:module';

/** The client-node `dist/` directory, resolved the way a bare import of the package would be. */
const DIST = new URL('./', import.meta.resolve('@kubernetes/client-node'));

/** Data URL modules standing in for the two imports (see the module comment). */
const STAND_INS: Readonly<Record<string, { parent: string; url: string }>> = {
  './gen/index.js': {
    parent: new URL('config.js', DIST).href,
    url: moduleUrl(
      `export { createConfiguration } from ${JSON.stringify(new URL('gen/configuration.js', DIST).href)};\n` +
        `export { ServerConfiguration } from ${JSON.stringify(new URL('gen/servers.js', DIST).href)};\n`,
    ),
  },
  './serializer.js': {
    parent: new URL('cache.js', DIST).href,
    url: moduleUrl(
      'export const ObjectSerializer = { serialize(data, type) {\n' +
        "  if (type !== 'string') throw new Error(`kproxy's client-node stand-in serialises strings only, not ${type}`);\n" +
        '  return data;\n' +
        '} };\n',
    ),
  },
};

function moduleUrl(source: string): string {
  return `data:text/javascript,${encodeURIComponent(source)}`;
}

const hooks = registerHooks({
  resolve(specifier, context, next) {
    const standIn = STAND_INS[specifier];
    if (standIn !== undefined && context.parentURL === standIn.parent) return { url: standIn.url, format: 'module', shortCircuit: true };
    return next(specifier, context);
  },
});

const [config, cache, watch, http] = await Promise.all([
  import('@kubernetes/client-node/dist/config.js'),
  import('@kubernetes/client-node/dist/cache.js'),
  import('@kubernetes/client-node/dist/watch.js'),
  import('@kubernetes/client-node/dist/gen/http/http.js'),
]).finally(() => hooks.deregister());

type Library = typeof import('@kubernetes/client-node');

// The library's own classes and constants, typed as its package index exports them (the same code,
// from the same files).

export const KubeConfig: Library['KubeConfig'] = config.KubeConfig;
export type KubeConfig = import('@kubernetes/client-node').KubeConfig;
export const ListWatch: Library['ListWatch'] = cache.ListWatch;
export type ListWatch<T extends KubernetesObject> = import('@kubernetes/client-node').ListWatch<T>;
export const Watch: Library['Watch'] = watch.Watch;
export type Watch = import('@kubernetes/client-node').Watch;
export const HttpMethod: Library['HttpMethod'] = http.HttpMethod;
export const RequestContext: Library['RequestContext'] = http.RequestContext;
export const IsomorphicFetchHttpLibrary: Library['IsomorphicFetchHttpLibrary'] = http.IsomorphicFetchHttpLibrary;
export type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
