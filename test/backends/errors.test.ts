/** Tool errors are data: a code to match on, and every fact a log line needs. */
import { describe, expect, it } from 'vitest';
import { errorFacts } from '../../src/backends/errors.ts';
import { IptablesError, systemIptables } from '../../src/backends/iptables/writer.ts';
import { NftError, systemNft } from '../../src/backends/nftables/writer.ts';

/** A wrapper that stands in for the tool: prints `stderr` and exits 1, whatever it is asked. */
const failing = (stderr: string) => ['sh', '-c', `printf '%s\\n' ${JSON.stringify(stderr)} >&2; exit 1`, '--'];

describe('tool errors', () => {
  it('iptables-restore: IPTABLES_FAILED with the tool, its stderr and the failing input line', async () => {
    const tools = systemIptables(4, failing('iptables-restore: line 2 failed'));
    const err = await tools.restore('*nat\n-A KUBE-SERVICES -j NOWHERE\nCOMMIT\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IptablesError);
    expect(err).toMatchObject({ code: 'IPTABLES_FAILED', tool: 'iptables-restore', stderr: 'iptables-restore: line 2 failed', failedLine: '-A KUBE-SERVICES -j NOWHERE' });
    const facts = errorFacts(err);
    expect(facts).toMatchObject({ type: 'IptablesError', code: 'IPTABLES_FAILED', tool: 'iptables-restore', failedLine: '-A KUBE-SERVICES -j NOWHERE', stderr: 'iptables-restore: line 2 failed' });
    expect(facts.cause).toEqual(expect.stringContaining('exit code 1'));
  });

  it('a streamed script the tool stops reading fails the same way, naming the failing line', async () => {
    const tools = systemIptables(4, failing('iptables-restore: line 3 failed'));
    // Megabytes the stand-in never reads: the tool's exit, not the broken pipe, is the error.
    const chunks = function* () {
      yield '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j NOWHERE\n';
      for (let i = 0; i < 64; i++) yield `${'-A KUBE-SERVICES -j RETURN\n'.repeat(4096)}`;
      yield 'COMMIT\n';
    };
    const err = await tools.restore(chunks).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'IPTABLES_FAILED', tool: 'iptables-restore', failedLine: '-A KUBE-SERVICES -j NOWHERE' });
  });

  it('a tool the wrapper cannot find is NOT_FOUND, in both modes', async () => {
    const ipt = await systemIptables(4, failing('exec of "iptables-restore" failed: No such file or directory'))
      .restore('')
      .catch((e: unknown) => e);
    expect(ipt).toMatchObject({ code: 'IPTABLES_NOT_FOUND', message: expect.stringContaining('install iptables') });
    const nft = await systemNft(failing('exec of "nft" failed: No such file or directory'))
      .chains('ip', 'kube-proxy')
      .catch((e: unknown) => e);
    expect(nft).toBeInstanceOf(NftError);
    expect(nft).toMatchObject({ code: 'NFT_NOT_FOUND', tool: 'nft' });
  });

  it('a chain that does not exist is no error when listing it', async () => {
    for (const said of ['iptables: No chain/target/match by that name.', 'iptables v1.8.9 (nf_tables): chain KUBE-SVC-X in table nat is incompatible, use nft tool.']) {
      expect(await systemIptables(4, failing(said)).listChain('nat', 'KUBE-SVC-X')).toBeUndefined();
    }
    await expect(systemIptables(4, failing('iptables: Permission denied')).listChain('nat', 'KUBE-SVC-X')).rejects.toMatchObject({ code: 'IPTABLES_FAILED' });
  });

  it('errorFacts keeps a plain error and a non-error readable', () => {
    expect(errorFacts(new Error('boom'))).toEqual({ type: 'Error', message: 'boom' });
    expect(errorFacts('text')).toEqual({ message: 'text' });
  });
});
