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
