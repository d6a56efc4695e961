/**
 * Errors of the kernel tools (iptables, nft), as data: callers match on `code`, never on the
 * message, and logs carry every fact (the tool, its stderr, the failing input, the cause), so an
 * operator reading one log line knows what failed (the coded errors of undici are the model).
 * @module
 */

/** Codes of {@link ToolError}: the tool is not installed, did not finish in time, or refused. */
export type ToolErrorCode = 'IPTABLES_NOT_FOUND' | 'IPTABLES_TIMEOUT' | 'IPTABLES_FAILED' | 'NFT_NOT_FOUND' | 'NFT_TIMEOUT' | 'NFT_FAILED';

/** A kernel tool failed. */
export class ToolError extends Error {
  override readonly name: string = 'ToolError';
  readonly code: ToolErrorCode;
  /** The program that failed, e.g. `iptables-restore`, `nft`. */
  readonly tool: string;
  /** What the tool printed on stderr, trimmed. */
  readonly stderr: string;
  constructor(message: string, facts: { readonly code: ToolErrorCode; readonly tool: string; readonly stderr: string }, options?: ErrorOptions) {
    super(message, options);
    this.code = facts.code;
    this.tool = facts.tool;
    this.stderr = facts.stderr;
  }
}

/**
 * An error as a plain object for a log line: name, code and message, and for tool errors every
 * fact they carry (stderr, failing line or command), plus the cause's message.
 */
export function errorFacts(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) };
  const facts: Record<string, unknown> = { type: err.name, message: err.message };
  for (const [k, v] of Object.entries(err)) if (v !== undefined && k !== 'name') facts[k] = v;
  if (err.cause instanceof Error) facts.cause = err.cause.message;
  return facts;
}
