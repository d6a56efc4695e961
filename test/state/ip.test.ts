import { describe, expect, it } from 'vitest';
import { cidrContains, joinHostPort, parseCIDR, parseIP } from '../../src/state/ip.ts';

describe('parseIP', () => {
  it('normalises sloppy IPv4 as upstream ParseIPSloppy does (TestBadIPs)', () => {
    expect(parseIP('172.30.0.041')?.text).toBe('172.30.0.41');
    expect(parseIP('10.180.00.001')).toMatchObject({ family: 4, text: '10.180.0.1' });
  });
  it('writes IPv6 in RFC 5952 form', () => {
    expect(parseIP('2001:DB8:0:0:0:0:0:1')?.text).toBe('2001:db8::1');
    expect(parseIP('fd00:0:0:1::0')?.text).toBe('fd00:0:0:1::');
    expect(parseIP('::')?.text).toBe('::');
    expect(parseIP('1:0:0:2:0:0:0:3')?.text).toBe('1:0:0:2::3');
    expect(parseIP('::1.2.3.4')?.text).toBe('::102:304');
  });
  it.each(['', '1.2.3', '256.1.1.1', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.4\n', '::ffff:1.2.3.4', 'fe80::1%eth0', '1:2:3:4:5:6:7:8:9', 'a', '1.2.3.4/32'])('refuses %j', (s) =>
    expect(parseIP(s)).toBeUndefined(),
  );
});

describe('parseCIDR', () => {
  it('trims, normalises and clears host bits', () => {
    expect(parseCIDR(' 203.0.113.000/025')?.text).toBe('203.0.113.0/25');
    expect(parseCIDR('10.1.2.3/8')?.text).toBe('10.0.0.0/8');
    expect(parseCIDR('2001:db8::1/32')?.text).toBe('2001:db8::/32');
  });
  it.each(['10.0.0.0', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/a', '::/129', '10.0.0.0/8/8'])('refuses %j', (s) => expect(parseCIDR(s)).toBeUndefined());
  it('tests containment within one family', () => {
    const c = parseCIDR('192.168.0.0/24')!;
    expect(cidrContains(c, parseIP('192.168.0.2')!)).toBe(true);
    expect(cidrContains(c, parseIP('192.168.1.2')!)).toBe(false);
    expect(cidrContains(c, parseIP('::1')!)).toBe(false);
    expect(cidrContains(parseCIDR('0.0.0.0/0')!, parseIP('8.8.8.8')!)).toBe(true);
  });
  it('joins host and port as Go does', () => {
    expect(joinHostPort(parseIP('10.0.0.1')!, 80)).toBe('10.0.0.1:80');
    expect(joinHostPort(parseIP('fd00::1')!, 80)).toBe('[fd00::1]:80');
  });
});
