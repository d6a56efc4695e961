/**
 * Gives memory back after a sync (or a background verify) that allocated a lot. A cold sync at 10k Services parses 20k
 * objects and builds a 34 MB restore script; V8 then sits idle with several hundred MB of
 * garbage on a heap it has grown to fit, and with nothing left to allocate it never collects:
 * the node keeps paying for the peak. One full collection after such a sync returns it (measured
 * in bench/README.md, "Memory").
 *
 * Needs `global.gc` (node `--expose-gc`, which bin/kproxy passes); without it this does nothing.
 * @module
 */
import { getHeapStatistics } from 'node:v8';

/**
 * Heap growth since the last collection, bytes, that makes the next {@link HeapCompactor.afterSync}
 * collect. 32 MiB: at 10k Services the first verify after the cold sync reads ~130k chain names and
 * leaves ~30 MiB of garbage, which V8 otherwise keeps, with the heap it grew for it, while idle.
 */
export const COMPACT_GROWTH_BYTES = 32 * 2 ** 20;

/** Decides after each sync, and after each background verify, whether a full collection pays, and runs it. */
export class HeapCompactor {
  readonly #gc: ((options?: object) => void) | undefined;
  readonly #growth: number;
  #baseline: number;

  /**
   * @param gc the collector (default `globalThis.gc`, present under `--expose-gc`)
   * @param growthBytes heap growth, bytes, above the size after the last collection that triggers one
   */
  constructor(gc: ((options?: object) => void) | undefined = (globalThis as { gc?: (options?: object) => void }).gc, growthBytes = COMPACT_GROWTH_BYTES) {
    this.#gc = gc;
    this.#growth = growthBytes;
    this.#baseline = getHeapStatistics().used_heap_size;
  }

  /** Collects when the heap grew by more than the threshold since the last collection. Returns whether it did. */
  afterSync(): boolean {
    if (this.#gc === undefined) return false;
    const used = getHeapStatistics().used_heap_size;
    if (used - this.#baseline < this.#growth) return false;
    // 'last-resort' is V8's memory-reducing full collection: it compacts and gives pages back.
    this.#gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    this.#baseline = getHeapStatistics().used_heap_size;
    return true;
  }
}
