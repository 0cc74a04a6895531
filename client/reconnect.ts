/**
 * When ResilientClient reconnects, and how long it waits first: which failures mean "the connection is
 * gone, the work may be done again on a new one", and an exponential backoff.
 */
import { FtsError, type ErrorCode } from '../protocol/index.js';

export interface ReconnectOptions {
  /**
   * Reconnections in a row that may be tried without the transfer moving forward; 0 never reconnects.
   * Default 5. An attempt that moved the transfer forward resets the count, so a long transfer over a
   * link that drops now and then still finishes, while a dead server is given up on after about 8 s.
   * Infinity never gives up.
   */
  retries?: number;
  /** Wait before the first reconnection, in milliseconds (1 to 2^31 − 1); doubled for each further one. Default 250. */
  initialDelayMs?: number;
  /** Upper bound of the wait, in milliseconds (1 to 2^31 − 1). Default 5000. */
  maxDelayMs?: number;
}

export interface ReconnectPolicy {
  retries: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

/** setTimeout's longest wait. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export const DEFAULT_RECONNECT: ReconnectPolicy = { retries: 5, initialDelayMs: 250, maxDelayMs: 5_000 };

/**
 * The policy `options` ask for: retries a whole number of 0 or more, or Infinity; delays whole milliseconds
 * from 1 to 2^31 − 1. Anything else is refused (BAD_REQUEST).
 */
export function reconnectPolicy(options: ReconnectOptions = {}): ReconnectPolicy {
  const pick = (name: keyof ReconnectOptions, fallback: number, min: number, max: number): number => {
    const v: unknown = options[name];
    if (v === undefined) return fallback;
    if (typeof v === 'number' && ((Number.isSafeInteger(v) && v >= min && v <= max) || (v === Infinity && max === Infinity))) return v;
    const range = max === Infinity ? `a whole number of ${min} or more, or Infinity` : `a whole number from ${min} to ${max}`;
    throw new FtsError('BAD_REQUEST', `reconnect.${name} must be ${range} (got ${String(v)})`);
  };
  return {
    retries: pick('retries', DEFAULT_RECONNECT.retries, 0, Infinity),
    // At least 1 ms: no retries without a wait, which against a dead server would spin.
    initialDelayMs: pick('initialDelayMs', DEFAULT_RECONNECT.initialDelayMs, 1, MAX_TIMER_MS),
    maxDelayMs: pick('maxDelayMs', DEFAULT_RECONNECT.maxDelayMs, 1, MAX_TIMER_MS),
  };
}

/**
 * The wait before reconnection number `n` (1-based): initialDelayMs · 2^(n−1), capped at maxDelayMs, plus up
 * to 20 % at random so that many clients cut off by one server restart do not all come back at once.
 */
export function backoffMs(n: number, policy: ReconnectPolicy): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, n - 1));
  // Capped at what setTimeout takes: beyond it Node waits 1 ms instead, and a dead server would be spun on.
  return Math.min(MAX_TIMER_MS, Math.round(base * (1 + Math.random() * 0.2)));
}

/**
 * Codes that, on a connection that is no longer open, mean the transport failed rather than the request:
 * IO_ERROR is how the client reports a reset, a close before the final reply, or a failed connect; the
 * others are the server ending the session for reasons that a new session does not share. Everything
 * else is final: AUTH_FAILED, NOT_FOUND, BAD_NAME, CHECKSUM_MISMATCH, NO_SPACE, KICKED (an administrator
 * meant it), PROTOCOL_ERROR (a new connection would meet the same bug)...
 */
const TRANSPORT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['IO_ERROR', 'SHUTTING_DOWN', 'TRANSFER_STALLED', 'IDLE_TIMEOUT', 'TOO_MANY_CONNECTIONS']);

export function isTransportFailure(err: unknown): boolean {
  return err instanceof FtsError && TRANSPORT_CODES.has(err.code);
}

/** Resolves after `ms`, or as soon as `signal` is aborted (a close() must not wait out a backoff). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted === true) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
