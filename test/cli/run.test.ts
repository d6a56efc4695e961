import { describe, expect, it } from 'vitest';
import { upstreamOnlyFlags } from '../../src/cli/run.ts';

describe('kube-proxy flags kproxy does not implement', () => {
  it('are accepted and listed, values and all', () => {
    expect(upstreamOnlyFlags(['--v=2', '--feature-gates', 'A=true', '--profiling=false', '-v', '4'])).toEqual(['v', 'feature-gates', 'profiling', 'v']);
  });
  it('anything else is a usage error', () => {
    expect(() => upstreamOnlyFlags(['--v=2', '--hostname-overide=x'])).toThrow(/unknown flag "--hostname-overide"/);
  });
});
