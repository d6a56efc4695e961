/**
 * Memory of per-service-port results, keyed by the identity of the object they were computed
 * from. The state store hands out the same objects for a Service until it or one of its
 * EndpointSlices changes, and the planner and the renderers keep handing on the same objects for
 * what they did not recompute, so identity is a version key that needs no bookkeeping.
 *
 * A WeakMap rather than an LRU: an entry lives exactly as long as the object it was computed from.
 * An LRU sized below the Service count would evict live Services and miss on every sync; one sized
 * above it would keep deleted Services. Everything else a result depends on goes into the context
 * string given to {@link IdentityCache.begin}; a new context drops every entry.
 * @module
 */

/** Results of type `V` per key object `K`, for one context at a time. Not for concurrent use. */
export class IdentityCache<K extends object, V> {
  #context = '';
  #entries = new WeakMap<K, V>();
  /** Results computed (misses) since the last {@link begin}; for tests and benchmarks. */
  misses = 0;

  /** Starts a pass (one plan or one render) under `context`; a context unlike the last one empties the cache. */
  begin(context: string): void {
    if (context !== this.#context) {
      this.#context = context;
      this.#entries = new WeakMap();
    }
    this.misses = 0;
  }

  /** The result for `key`, computed by `make` when absent. */
  get(key: K, make: () => V): V {
    if (this.#entries.has(key)) return this.#entries.get(key) as V;
    this.misses++;
    const value = make();
    this.#entries.set(key, value);
    return value;
  }
}
