/**
 * Client-side error helpers. Every error the client raises is an FtsError; this module decides which code a
 * local failure gets and remembers which errors were sent by the server, because the CLI prints the code
 * only for those (a local "no such file" is not a server NOT_FOUND, even though it shares the code).
 */
import { errorFromReply, FtsError, type ErrorCode, type Header } from '../protocol/index.js';

const fromServer = new WeakSet<FtsError>();

/** Turns an error reply or a 'bye' frame into an FtsError and remembers that the server sent it. */
export function serverError(reply: Header): FtsError {
  const err = errorFromReply(reply);
  fromServer.add(err);
  return err;
}

/**
 * The same error with `context: ` in front of its message (for example the file name, which the server's
 * generic messages leave out). Code, details and server origin are kept.
 */
export function withContext(err: unknown, context: string): unknown {
  if (!(err instanceof FtsError) || err.message.includes(context)) return err;
  const wrapped = new FtsError(err.code, `${context}: ${err.message}`, { ...err.details }, { cause: err, fatal: err.fatal });
  if (fromServer.has(err)) fromServer.add(wrapped);
  return wrapped;
}

/**
 * The server ended the session (`reason`: its `bye` or fatal reply) and reconnecting then failed (`err`):
 * one error that says both and keeps the server's code, so that a drain shows as SHUTTING_DOWN rather than
 * as a bare "connection refused".
 */
export function reconnectFailed(reason: FtsError, err: unknown): FtsError {
  const why = err instanceof Error ? err.message : String(err);
  const wrapped = new FtsError(reason.code, `${reason.message}; reconnecting failed: ${why}`, { ...reason.details }, { cause: err, fatal: true });
  fromServer.add(wrapped);
  return wrapped;
}

/** True when the error was sent by the server (an error reply or 'bye'), false for errors raised locally. */
export function isServerError(err: unknown): boolean {
  return err instanceof FtsError && fromServer.has(err);
}

/** Wraps anything thrown into an FtsError; something that is not an FtsError is a bug, hence the default. */
export function asFtsError(err: unknown, code: ErrorCode = 'INTERNAL'): FtsError {
  if (err instanceof FtsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new FtsError(code, message, {}, { cause: err });
}

/** Short human texts for the errno codes a user is likely to meet, instead of libuv's "ENOENT: …" strings. */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  ENOSPC: 'no space left on device',
  EROFS: 'read-only file system',
  EEXIST: 'file exists',
  ENAMETOOLONG: 'file name too long',
  EMFILE: 'too many open files',
  EIO: 'input/output error',
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by peer',
  ECONNABORTED: 'connection aborted',
  EPIPE: 'broken pipe',
  ETIMEDOUT: 'timed out',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'temporary failure in name resolution',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EADDRNOTAVAIL: 'address not available',
};

export function errnoCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** "connection refused" for an errno-style error, else the error's own message. */
export function describeErrno(err: unknown): string {
  const code = errnoCode(err);
  if (code !== undefined && ERRNO_TEXT[code] !== undefined) return ERRNO_TEXT[code];
  return err instanceof Error ? err.message : String(err);
}

/**
 * A local file-system failure as an FtsError: `<path>: <reason>`. The code follows the errno so that the CLI
 * exit status means the same thing for local and remote failures (a missing local file exits 4, like a
 * missing remote one). `missing` overrides the code for ENOENT where "not found" would mislead (a missing
 * target directory of a download is not a missing file).
 */
export function localFsError(err: unknown, path: string, missing: ErrorCode = 'NOT_FOUND'): FtsError {
  if (err instanceof FtsError) return err;
  const errno = errnoCode(err);
  let code: ErrorCode = 'IO_ERROR';
  if (errno === 'ENOENT' || errno === 'ENOTDIR') code = missing;
  else if (errno === 'EISDIR') code = 'NOT_A_FILE';
  else if (errno === 'ENOSPC' || errno === 'EDQUOT') code = 'NO_SPACE';
  else if (errno === 'EROFS') code = 'READ_ONLY';
  return new FtsError(code, `${path}: ${describeErrno(err)}`, {}, { cause: err });
}
