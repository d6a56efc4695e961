/**
 * The hand-over between the watch sources and the sync loop: a queue of plain events. Informer
 * handlers only push (they never throw and never touch the proxy state); the runner alone drains
 * the queue and applies the events, so all state changes happen on one path.
 * @module
 */
import type { ObjectKind, RawObject } from './objects.ts';

/** One thing a source saw, as data. */
export type SourceEvent =
  /** An object was added or changed (list or watch). */
  | { readonly type: 'upsert'; readonly kind: ObjectKind; readonly object: RawObject }
  /** An object was deleted (watch DELETED, or missing from a re-list). */
  | { readonly type: 'delete'; readonly kind: ObjectKind; readonly object: RawObject }
  /** A full list of `kind` has been delivered: its cache is complete (again). */
  | { readonly type: 'synced'; readonly kind: ObjectKind };

/** An unbounded FIFO of {@link SourceEvent}s with a way to wait for the next one. */
export class EventQueue {
  #events: SourceEvent[] = [];
  #wake: (() => void) | undefined;

  /** Appends an event and wakes a waiting consumer. Never throws. */
  push(event: SourceEvent): void {
    this.#events.push(event);
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Number of queued events. */
  get size(): number {
    return this.#events.length;
  }

  /** Removes and returns every queued event, oldest first. */
  drain(): SourceEvent[] {
    const out = this.#events;
    this.#events = [];
    return out;
  }

  /**
   * Resolves when an event is queued (at once if one is), after `timeoutMs`, or when `signal`
   * aborts, whichever comes first. Never rejects.
   */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.#events.length > 0 || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      signal?.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }
}
