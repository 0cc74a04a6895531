/**
 * How the CLI turns errors into a line on stderr and an exit status (see the table at the top of cli.ts).
 *
 * Usage errors are FtsErrors too (code BAD_REQUEST), remembered in a WeakSet so that they exit 2 without
 * a new error class (likewise Ctrl+C, exit 130); errors already printed (mput/mget report each failure as it happens) are remembered
 * the same way so that they are not printed twice.
 */
import { ERROR_CODES, FtsError } from '../../protocol/index.js';
import { cliHintOf, isServerError } from '../errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** Ctrl+C: the shell convention 128 + SIGINT. */
export const EXIT_INTERRUPTED = 130;

const usageErrors = new WeakSet<FtsError>();
const interruptions = new WeakSet<FtsError>();
const reported = new WeakSet<object>();

export function usageError(message: string): FtsError {
  const err = new FtsError('BAD_REQUEST', message);
  usageErrors.add(err);
  return err;
}

/** The user pressed Ctrl+C (the command was abandoned, not refused). */
export function interruptedError(message = 'interrupted'): FtsError {
  const err = new FtsError('IO_ERROR', message);
  interruptions.add(err);
  return err;
}

export function exitCodeFor(err: unknown): number {
  if (!(err instanceof FtsError)) return EXIT_FAILURE;
  if (usageErrors.has(err)) return EXIT_USAGE;
  if (interruptions.has(err)) return EXIT_INTERRUPTED;
  // A name refused before sending is a bad argument; the same code from the server is an ordinary failure.
  if (err.code === 'BAD_NAME' && !isServerError(err)) return EXIT_USAGE;
  return ERROR_CODES[err.code].exit;
}

/**
 * Replaces control characters (C0 including newlines, DEL, C1) by \xNN, and invisible format characters
 * (zero-width, line/paragraph separators, bidirectional overrides and isolates, BOM) by \uNNNN; clips very
 * long text. Messages can quote a server's words or a file name; neither may drive the terminal, fake extra
 * output lines or display as something else.
 */
export function printable(text: string): string {
  const chars = Array.from(text); // by code point: clipping must not split a surrogate pair
  const clipped = chars.length > MAX_PRINTED_CHARS ? `${chars.slice(0, MAX_PRINTED_CHARS).join('')}… (${chars.length - MAX_PRINTED_CHARS} more characters)` : text;
  return clipped
    .replace(/\p{Cc}/gu, (c) => `\\x${c.codePointAt(0)!.toString(16).padStart(2, '0')}`)
    .replace(/[\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

/** A server's error message is printed up to this long: a megabyte of text is not a message. */
const MAX_PRINTED_CHARS = 2000;

/** `fts: <message> (<CODE>)` for errors from the server, `fts: <message>` otherwise. */
export function formatError(err: unknown): string {
  if (err instanceof FtsError) {
    const hint = cliHintOf(err);
    return `fts: ${printable(err.message)}${hint === undefined ? '' : `; ${hint}`}${retryHint(err)}${isServerError(err) ? ` (${err.code})` : ''}`;
  }
  // Not an FtsError: a bug. Say so rather than hide it behind a vague message.
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  return `fts: internal error: ${text}`;
}

/** A ban's time left, which the server sends as `retryAfter` (seconds) with RATE_LIMITED. */
function retryHint(err: FtsError): string {
  const seconds = err.details['retryAfter'];
  if (err.code !== 'RATE_LIMITED' || typeof seconds !== 'number' || !Number.isSafeInteger(seconds) || seconds < 0) return '';
  return `; try again in ${seconds} s`;
}

/** Prints the error once (later calls for the same error object do nothing) and returns its exit status. */
export function report(err: unknown): number {
  if (typeof err !== 'object' || err === null || !reported.has(err)) {
    process.stderr.write(`${formatError(err)}\n`);
    if (typeof err === 'object' && err !== null) reported.add(err);
  }
  return exitCodeFor(err);
}
