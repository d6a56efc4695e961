/**
 * String helpers for what lives long (rendered rules, chain names, endpoint keys).
 * @module
 */
import { hash } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * `parts` as one flat string. V8 makes `a + b` and template literals of 13 characters or more a
 * cons string: a 32-byte node pointing at both halves (and a string built by `+=` a chain of
 * them), kept for as long as the result lives. Rendered rules and chain names live as long as
 * their plan, so they are built flat; `Array.prototype.join` returns a flat string. (Heap
 * snapshots of the iptables render at 2k Services showed 120k cons nodes, 3.7 MiB, from chain names.)
 */
export function flat(...parts: string[]): string {
  return parts.join('');
}

/**
 * The 16-character suffix: upper-case standard base32 of the first 10 bytes of a SHA-256, as
 * upstream names its chains (pkg/proxy/iptables/proxier.go `portProtoHash`); also the NetworkPolicy
 * table's names.
 */
export function hashSuffix(input: string): string {
  const digest = hash('sha256', input, 'buffer');
  const out: string[] = [];
  // 10 bytes = 80 bits = exactly 16 base32 characters, no padding; a bit buffer of < 13 bits.
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < 10; i++) {
    buffer = (buffer << 8) | digest[i]!;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out.push(BASE32[(buffer >> bits) & 31]!);
    }
    buffer &= (1 << bits) - 1;
  }
  return out.join(''); // flat, see flat()
}
