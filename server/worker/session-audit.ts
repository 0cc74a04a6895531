import { errnoOf, FtsError, isOp, type ErrorCode } from '../../protocol/index.js';
import type { Logger } from '../log.js';
import { DISCONNECTED_CODE, STORAGE_FAILURE_CODES } from '../metrics/worker-metrics.js';
import type { HandlerResult } from './session-io.js';

/** Failures that are the client's connection going away (audited with "disconnected": true, never sent). */
const disconnections = new WeakSet<FtsError>();

/** The failure of a request cut by its client leaving (see isDisconnection). */
export function disconnection(): FtsError {
  const gone = new FtsError('IO_ERROR', 'connection closed during the request');
  disconnections.add(gone);
  return gone;
}

/** Whether `failure` is the client's connection going away rather than a failure to report. */
export function isDisconnection(failure: FtsError | null): boolean {
  return failure !== null && disconnections.has(failure);
}

/** The `code` label fts_operation_errors_total counts `failure` under (null: no failure). */
export function failureCode(failure: FtsError | null): ErrorCode | typeof DISCONNECTED_CODE | null {
  if (failure === null) return null;
  return isDisconnection(failure) ? DISCONNECTED_CODE : failure.code;
}

/** An error's message with the errno of its cause, when the message does not already name it. */
function withErrno(err: FtsError): string {
  const errno = errnoOf(err.cause);
  return errno === undefined || err.message.includes(errno) ? err.message : `${err.message} (${errno})`;
}

const STORAGE_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(STORAGE_FAILURE_CODES);

/** One request as its audit line records it. */
export interface AuditedRequest {
  /** The op the client sent, whatever it was. */
  op: unknown;
  user: string | null;
  result: HandlerResult | null;
  /** Epoch ms the request started. */
  started: number;
  failure: FtsError | null;
  /** Payload bytes the session counted, for a result that does not say. */
  bytes: number;
  name?: string;
  to?: string;
}

/** Writes the audit line of one request. */
export function logAudit(log: Logger, { op, user, result, started, failure, bytes, name, to }: AuditedRequest): void {
  const audit = result?.audit;
  // Only our own op names become events or messages: a client must not be able to write an audit line
  // whose event or message reads "session-end", "admin" or "banned …". What it sent is kept, clipped, in `op`.
  const known = isOp(op);
  const event = known ? op : 'unknown';
  const disconnected = isDisconnection(failure);
  // A failure of the storage itself (not of the client) is the operator's business: at warn, with the
  // reason in words and its errno, which the client was told and the log did not say.
  const storageFailure = failure !== null && !disconnected && STORAGE_FAILURES.has(failure.code);
  (storageFailure ? log.warn : log.info).call(
    log,
    {
      event,
      op: known ? undefined : typeof op === 'string' ? op.slice(0, 32) : typeof op,
      user,
      file: audit?.file ?? name ?? null,
      to,
      bytes: audit?.bytes ?? bytes,
      sha256: audit?.sha256,
      durationMs: Date.now() - started,
      result: failure ? 'error' : 'ok',
      code: failure?.code,
      disconnected: disconnected ? true : undefined,
      reason: storageFailure ? withErrno(failure) : undefined,
    },
    failure ? `${event} failed` : `${event} ok`,
  );
}
