/** The background verify: one at a time, names written meanwhile left out, deep reads within a CPU budget. */
import { describe, expect, it } from 'vitest';
import { BackgroundCheck } from '../../src/backends/verify.ts';

describe('BackgroundCheck', () => {
  it('runs one check at a time and hands its result over once', async () => {
    const check = new BackgroundCheck<string>();
    let release = () => {};
    const first = check.start(() => new Promise((r) => (release = () => r('chain X is missing'))));
    expect(check.running).toBe(true);
    expect(check.start(async () => 'other')).toBeUndefined();
    release();
    expect(await first).toBe(true);
    expect(check.take()).toMatchObject({ drift: 'chain X is missing', error: undefined });
    expect(check.take()).toBeUndefined();
  });

  it('gives the check the names writes touched while it read', async () => {
    const check = new BackgroundCheck<string>();
    let release = () => {};
    const done = check.start(async (_deep, touched) => {
      await new Promise<void>((r) => (release = r));
      return touched.has('chain a') ? undefined : 'chain a differs';
    });
    check.touch('chain a');
    release();
    expect(await done).toBe(false);
    expect(check.take()).toBeUndefined();
  });

  it('keeps a read error as a result, and drops what a check found once the writer reset', async () => {
    const check = new BackgroundCheck<string>();
    expect(await check.start(async () => Promise.reject(new Error('iptables: timed out')))).toBe(true);
    expect(check.take()?.error?.message).toBe('iptables: timed out');
    let release = () => {};
    const done = check.start(() => new Promise((r) => (release = () => r('drift'))));
    check.reset();
    release();
    expect(await done).toBe(false);
    expect(check.take()).toBeUndefined();
  });

  it('spaces deep reads so they use at most the budget: a read of d ms waits d / budget', async () => {
    const check = new BackgroundCheck<string>(0.5);
    const deeps: boolean[] = [];
    const run = async (now: number) => {
      await check.start(async (deep) => {
        deeps.push(deep);
        if (deep) await new Promise((r) => setTimeout(r, 40));
        return undefined;
      }, now);
    };
    await run(1_000); // deep, ~40 ms: next deep not before ~1080
    await run(1_010);
    await run(1_050);
    await run(2_000);
    expect(deeps).toEqual([true, false, false, true]);
    expect(() => new BackgroundCheck(0)).toThrow(RangeError);
  });

  it('a write that replaced everything counts as a deep read of its cost: the first deep read after a cold start waits', async () => {
    const check = new BackgroundCheck<string>(0.01);
    const deeps: boolean[] = [];
    const run = (now: number) => check.start(async (deep) => (deeps.push(deep), undefined), now);
    check.replaced(2, 1_000); // a 2 s cold write: no deep read for 200 s
    await run(30_000);
    await run(200_000);
    await run(201_001);
    expect(deeps).toEqual([false, false, true]);
    // A later, smaller replacement does not pull a deep read forward.
    check.replaced(0.001, 201_002);
    check.replaced(1, 0);
    await run(201_003);
    expect(deeps.at(-1)).toBe(false);
  });
});
