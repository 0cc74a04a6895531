/**
 * Client-side error helpers. Every error the client raises is an FtsError; this module decides which code a
 * local failure gets and remembers which errors were sent by the server, because the CLI prints the code
 * only for those (a local "no such file" is not a server NOT_FOUND, even though it shares the code).
 */
import { errnoOf, errnoWords, errorFromReply, FtsError, type ErrorCode, type Header } from '../protocol/index.js';

const fromServer = new WeakSet<FtsError>();

/** What the person at the fts command line can do about an error, in its flags (see cliHintOf). */
const cliHints = new WeakMap<FtsError, string>();

/** Turns an error reply or a 'bye' frame into an FtsError and remembers that the server sent it. */
export function serverError(reply: Header): FtsError {
  const err = errorFromReply(reply);
  fromServer.add(err);
  return err;
}

/** A mark that errors can carry without a field of their own (a WeakSet: marking keeps nothing alive). */
function errorMark(): { mark(err: FtsError): FtsError; has(err: unknown): boolean } {
  const marked = new WeakSet<FtsError>();
  return {
    mark: (err) => {
      marked.add(err);
      return err;
    },
    has: (err) => err instanceof FtsError && marked.has(err),
  };
}

/** Errors that are the server's final reply to the request they fail: not a `bye`, not a lost connection. */
const answers = errorMark();

/** Marks `err` as the final error reply to the request it fails (see isAnswer); returns it. */
export const markAnswer = answers.mark;

/**
 * The server answered the request with this error, so the request ended there and then: a final error reply
 * means that it did nothing (§3.2), also a fatal SHUTTING_DOWN refusal during a drain. Anything else that
 * fails a request (a `bye` while it ran, a lost connection) leaves open whether it took effect.
 */
export const isAnswer = answers.has;

/**
 * The same error with `context: ` in front of its message (for example the file name, which the server's
 * generic messages leave out). Code, details and server origin are kept.
 */
export function withContext(err: unknown, context: string): unknown {
  if (!(err instanceof FtsError) || err.message.includes(context)) return err;
  return carryMarks(err, new FtsError(err.code, `${context}: ${err.message}`, { ...err.details }, { cause: err, fatal: err.fatal }));
}

/** The same error with a hint for the person at the command line appended to its message. */
export function withHint(err: FtsError, hint: string): FtsError {
  return carryMarks(err, new FtsError(err.code, `${err.message}; ${hint}`, { ...err.details }, { cause: err, fatal: err.fatal }));
}

/** `wrapped`, an error that says more about `err`, with what is known of `err`: sent by the server, its CLI hint. */
function carryMarks(err: FtsError, wrapped: FtsError): FtsError {
  if (fromServer.has(err)) fromServer.add(wrapped);
  const hint = cliHints.get(err);
  if (hint !== undefined) cliHints.set(wrapped, hint);
  return wrapped;
}

/**
 * The connection ended (`reason`: the server's `bye` or fatal reply, or the loss of the connection) and
 * reconnecting then failed (`err`): one error that says both and keeps the reason's code, so that a drain
 * shows as SHUTTING_DOWN, and a transfer cut mid-way as cut, rather than as a bare "connection refused".
 */
export function reconnectFailed(reason: FtsError, err: unknown): FtsError {
  const why = err instanceof Error ? err.message : String(err);
  const wrapped = new FtsError(reason.code, `${reason.message}; reconnecting failed: ${why}`, { ...reason.details }, { cause: err, fatal: true });
  if (fromServer.has(reason)) fromServer.add(wrapped);
  return endedSession.mark(wrapped);
}

/** Local failures that end a transfer however the connection fares (its output failed, say). */
const local = errorMark();

/**
 * Marks `err` as a local failure that closed the connection on purpose (see isLocalFailure); returns it.
 * Its code may be a transport code (IO_ERROR), yet another connection would not help.
 */
export const markLocal = local.mark;

/** A failure marked by markLocal: never retried on a new connection. */
export const isLocalFailure = local.has;

/** Errors that ended a whole session: every request in flight on it failed with one of them. */
const endedSession = errorMark();

/** Marks `err` as what ended its connection (see endedTheSession); returns it. */
export const markSessionEnded = endedSession.mark;

/**
 * The error ended the connection it came from (a lost connection, a `bye`, a fatal reply, a close by the
 * client, reconnecting that failed after one of those), rather than one request: it names no file, and it
 * failed every request that was in flight.
 */
export const endedTheSession = endedSession.has;

/**
 * Attaches a hint in the CLI's terms (`drop --tls`) to `err`, whose message names no CLI flag: the library's
 * callers have options, not flags. Returns `err`.
 */
export function withCliHint(err: FtsError, hint: string): FtsError {
  cliHints.set(err, hint);
  return err;
}

/** The CLI hint attached to `err`, if any. */
export function cliHintOf(err: unknown): string | undefined {
  return err instanceof FtsError ? cliHints.get(err) : undefined;
}

/** Transport failures of a connection that had been established (the TCP connect, and TLS, succeeded). */
const afterConnect = errorMark();

/** Marks `err` as the loss of an established connection (see isLostAfterConnect); returns it. */
export const lostAfterConnect = afterConnect.mark;

/**
 * The connection was accepted and then lost (closed or reset before its greeting or a reply): what
 * a server does when the worker holding it dies, unlike a refused connect, an unknown host or a failed TLS
 * handshake, which a new attempt would only repeat.
 */
export const isLostAfterConnect = afterConnect.has;

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

/**
 * A local file-system failure as an FtsError: `<path>: <reason>`. The code follows the errno so that the CLI
 * exit status means the same thing for local and remote failures (a missing local file exits 4, like a
 * missing remote one). `missing` overrides the code for ENOENT where "not found" would mislead (a missing
 * target directory of a download is not a missing file).
 */
export function localFsError(err: unknown, path: string, missing: ErrorCode = 'NOT_FOUND'): FtsError {
  if (err instanceof FtsError) return err;
  const errno = errnoOf(err);
  let code: ErrorCode = 'IO_ERROR';
  if (errno === 'ENOENT' || errno === 'ENOTDIR') code = missing;
  else if (errno === 'EISDIR') code = 'NOT_A_FILE';
  else if (errno === 'ENOSPC' || errno === 'EDQUOT') code = 'NO_SPACE';
  else if (errno === 'EROFS') code = 'READ_ONLY';
  return new FtsError(code, `${path}: ${errnoWords(err)}`, {}, { cause: err });
}
