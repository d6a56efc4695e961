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

/** The two figures the compactor reads, bytes (v8.getHeapStatistics()). */
export interface HeapFigures {
  readonly used_heap_size: number;
  readonly total_heap_size: number;
}

/** Decides after each sync, and after each background verify, whether a full collection pays, and runs it. */
export class HeapCompactor {
  readonly #gc: ((options?: object) => void) | undefined;
  readonly #growth: number;
  readonly #stats: () => HeapFigures;
  #used: number;
  #total: number;

  /**
   * @param gc the collector (default `globalThis.gc`, present under `--expose-gc`)
   * @param growthBytes growth, bytes, of the live heap or of the heap V8 reserves, above their sizes
   *   after the last collection, that triggers one
   * @param stats where the figures come from (tests pass their own)
   */
  constructor(gc: ((options?: object) => void) | undefined = (globalThis as { gc?: (options?: object) => void }).gc, growthBytes = COMPACT_GROWTH_BYTES, stats: () => HeapFigures = getHeapStatistics) {
    this.#gc = gc;
    this.#growth = growthBytes;
    this.#stats = stats;
    const now = stats();
    this.#used = now.used_heap_size;
    this.#total = now.total_heap_size;
  }

  /**
   * Collects when the heap in use, or the heap V8 reserves, grew by more than the threshold since
   * the last collection. The second catches garbage an ordinary collection already freed while V8
   * kept the pages it grew for it (a verify's read of the whole nft table). Returns whether it did.
   */
  afterSync(): boolean {
    if (this.#gc === undefined) return false;
    const now = this.#stats();
    if (now.used_heap_size - this.#used < this.#growth && now.total_heap_size - this.#total < this.#growth) return false;
    // 'last-resort' is V8's memory-reducing full collection: it compacts and gives pages back.
    this.#gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    const after = this.#stats();
    this.#used = after.used_heap_size;
    this.#total = after.total_heap_size;
    return true;
  }
}
