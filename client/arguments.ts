/**
 * Checks of the library's arguments, before anything is queued or sent: a value of the wrong type (from
 * JavaScript, or past a cast) is refused with BAD_REQUEST instead of failing half-way through a request,
 * where it would break the connection and every request pipelined on it.
 */
import type { Writable } from 'node:stream';
import { FtsError } from '../protocol/index.js';
import type { ConnectOptions } from './connection.js';

export function badArgument(message: string): FtsError {
  return new FtsError('BAD_REQUEST', message);
}

export function requireString(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string') throw badArgument(`${what} must be a string (got ${typeName(value)})`);
}

export function requireBytes(value: unknown, what: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw badArgument(`${what} must be a Buffer or Uint8Array (got ${typeName(value)})`);
}

export function requireWritable(value: unknown, what: string): asserts value is Writable {
  const w = value as Partial<Writable> | null;
  if (typeof w?.write !== 'function' || typeof w.on !== 'function' || typeof w.once !== 'function') throw badArgument(`${what} must be a Writable stream (got ${typeName(value)})`);
}

/** A whole number of milliseconds a timer can take (setTimeout's 2^31 − 1 at most). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** ConnectOptions as FtsClient.connect takes them; anything else is refused, not quietly replaced. */
export function checkConnectOptions(options: ConnectOptions): void {
  if (typeof options !== 'object' || options === null) throw badArgument(`connect options must be an object (got ${typeName(options)})`);
  const { host, port, connectTimeoutMs, replyTimeoutMs, tls } = options;
  if (host !== undefined && (typeof host !== 'string' || host === '')) throw badArgument('host must be a non-empty string');
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535)) throw badArgument(`port must be a whole number from 1 to 65535 (got ${String(port)})`);
  if (connectTimeoutMs !== undefined && !(Number.isInteger(connectTimeoutMs) && connectTimeoutMs >= 1 && connectTimeoutMs <= MAX_TIMER_MS)) {
    throw badArgument(`connectTimeoutMs must be a whole number of milliseconds from 1 to ${MAX_TIMER_MS} (got ${String(connectTimeoutMs)})`);
  }
  // 0 or less turns the reply timeout off (documented); Infinity too.
  if (replyTimeoutMs !== undefined && (typeof replyTimeoutMs !== 'number' || Number.isNaN(replyTimeoutMs))) throw badArgument(`replyTimeoutMs must be a number (got ${typeName(replyTimeoutMs)})`);
  if (tls !== undefined && typeof tls !== 'boolean' && (typeof tls !== 'object' || tls === null)) throw badArgument('tls must be true, false or { ca, servername }');
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return `an object (${(value as object).constructor?.name ?? 'Object'})`;
  return typeof value;
}
