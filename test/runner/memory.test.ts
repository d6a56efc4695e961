import { describe, expect, it } from 'vitest';
import { HeapCompactor } from '../../src/runner/memory.ts';

describe('HeapCompactor', () => {
  it('collects only after the heap grew past the threshold, then measures from the new size', () => {
    const calls: unknown[] = [];
    const heap = new HeapCompactor((o) => calls.push(o), 8 * 2 ** 20);
    expect(heap.afterSync()).toBe(false);
    const held = Array.from({ length: 4 }, () => new Array<number>(2 ** 20).fill(1.5)); // ≈ 32 MB of doubles
    expect(heap.afterSync()).toBe(true);
    expect(calls).toEqual([{ type: 'major', execution: 'sync', flavor: 'last-resort' }]);
    expect(heap.afterSync()).toBe(false);
    expect(held).toHaveLength(4);
  });

  it('does nothing without a collector (node run without --expose-gc)', () => {
    const heap = new HeapCompactor(undefined, 0);
    expect(heap.afterSync()).toBe(false);
  });
});

describe('HeapCompactor on reserved heap', () => {
  it('collects when V8 grew its reserved heap by the threshold, even with the live heap back down', () => {
    const calls: unknown[] = [];
    let figures = { used_heap_size: 100, total_heap_size: 120 };
    const heap = new HeapCompactor(
      (o) => calls.push(o),
      50,
      () => figures,
    );
    figures = { used_heap_size: 110, total_heap_size: 160 };
    expect(heap.afterSync()).toBe(false);
    figures = { used_heap_size: 105, total_heap_size: 175 };
    expect(heap.afterSync()).toBe(true);
    expect(calls).toHaveLength(1);
    // Measured again from the sizes after the collection.
    figures = { used_heap_size: 104, total_heap_size: 130 };
    expect(heap.afterSync()).toBe(false);
  });
});
