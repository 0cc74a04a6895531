/**
 * An upload of a stream whose length is not known in advance (a pipe): PROTOCOL.md §6.1 "Unsized uploads".
 * The data frames carry the bytes as the stream gives them, hashed on the way; the trailer brings the size
 * and the SHA-256, and the server publishes only if both match what it received. Nothing of it can be
 * resumed (the stream cannot be read again): a failure of any kind leaves nothing on the server.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { setImmediate } from 'node:timers/promises';
import { FtsError, type Header } from '../protocol/index.js';
import type { FtsConnection } from './connection.js';
import { isServerError, localFsError } from './errors.js';
import type { DataWriter } from './replies.js';
import { sleep } from './reconnect.js';
import { notThisDigest, type ProgressCallback } from './upload.js';
import { receivedOf } from './upload-resume.js';

/**
 * While the stream has nothing to give, a keep-alive frame goes out this often, so that the server's stall
 * timeout (--stall-timeout, at least 1 s, not announced) does not end a session whose source is only slow.
 */
export const SILENT_SOURCE_KEEPALIVE_MS = 250;

/** How long after the end of the input a Ctrl+C still counts as cutting it (see StreamUploadOptions.signal). */
const INTERRUPT_GRACE_MS = 100;

/** Options of FtsClient.uploadStream. */
export interface StreamUploadOptions {
  /**
   * Ctrl+C: checked once the source has ended, after a short pause. A shell's SIGINT reaches the writer of
   * the pipe too, and its death can look like the end of the input before our own handler runs: then the
   * trailer carries a digest that cannot match, so that a cut input is never published.
   */
  signal?: AbortSignal;
  /** Called once, before the first byte, with offset 0 and total Infinity (the size is not known). */
  onStart?: (offset: number, size: number) => void;
  /**
   * Called with the bytes moved so far, and Infinity: as the server reports what it has received (then once
   * with the whole size when it answers), or, from a server without `upload-progress`, after each frame sent.
   */
  onProgress?: ProgressCallback;
}

export interface StreamUploadOutcome {
  reply: Header;
  size: number;
  sha256: string;
}

/** What an unsized upload sent, whose bytes the server kept when it could not publish them. */
export interface KeptUpload {
  size: number;
  sha256: string;
}

const keptBy = new WeakMap<FtsError, KeptUpload>();

/**
 * The bytes the server kept for the unsized upload that failed with `err` (its error carried `offset`, all
 * of them: a publish that failed after they were verified, LOCKED mostly), or null. They are published by
 * FtsClient.publishKept, without the stream (PROTOCOL.md §6.1 "Unsized uploads").
 */
export function keptUpload(err: unknown): KeptUpload | null {
  return err instanceof FtsError ? (keptBy.get(err) ?? null) : null;
}

/** Records that the bytes `kept` are still on the server for the upload that failed with `err`. */
export function noteKept(err: unknown, kept: KeptUpload): void {
  if (err instanceof FtsError) keptBy.set(err, kept);
}

/** Sends `source` as the unsized upload `name` on `conn` and returns the server's final reply. */
export async function sendStream(conn: FtsConnection, name: string, source: AsyncIterable<Uint8Array>, options: StreamUploadOptions = {}): Promise<StreamUploadOutcome> {
  const hash = createHash('sha256');
  let size = 0;
  let sha256 = '';
  let sent = false;
  // The server's `stop`: the upload has failed, and its final reply will say why. Sending the rest would
  // only cost time (a stream can be long), so the trailer goes at once.
  const stop = new AbortController();
  // What the server received, where it says so (PROTOCOL.md §6.1 "Progress"), rather than what was sent.
  const acked = options.onProgress !== undefined && conn.offers('upload-progress');
  const reply = await conn.request({
    header: { op: 'upload', name, trailer: true, unsized: true, stoppable: true, ...(acked ? { progress: true } : {}) },
    onInterim: (h) => {
      if (acked && h['status'] === 'progress') {
        options.onProgress?.(receivedOf(h, Number.MAX_SAFE_INTEGER), Infinity);
        return;
      }
      if (h['status'] !== 'stop') throw new FtsError('PROTOCOL_ERROR', `unexpected ${JSON.stringify(h['status'])} reply to an upload`);
      stop.abort();
    },
    body: async (out) => {
      options.onStart?.(0, Infinity);
      let problem = await copyInto(source, out, stop.signal, (piece) => {
        hash.update(piece);
        size += piece.length;
        if (!acked) options.onProgress?.(size, Infinity);
      });
      if (problem === null && !stop.signal.aborted && options.signal !== undefined) {
        await sleep(INTERRUPT_GRACE_MS);
        if (options.signal.aborted) problem = new FtsError('IO_ERROR', 'interrupted before the end of the input was confirmed; nothing was published');
      }
      sha256 = hash.digest('hex');
      // The source failed or was cut: the server must not publish what it got. A digest that cannot be right
      // makes sure of it (CHECKSUM_MISMATCH), and the request then fails with the local problem.
      if (problem !== null) sha256 = notThisDigest(sha256);
      else sent = true;
      return problem;
    },
    trailer: () => ({ size, sha256 }),
  }).catch((err: unknown) => {
    if (sent && isServerError(err) && (err as FtsError).details['offset'] === size) noteKept(err, { size, sha256 });
    throw err;
  });
  if (acked) options.onProgress?.(size, Infinity);
  return { reply, size, sha256 };
}

const STOPPED = Symbol('stopped');

/** Bytes sent between two turns of the event loop at most (see copyInto). */
const YIELD_EVERY_BYTES = 4 * 1024 * 1024;

/**
 * Writes the source's bytes as data frames (each at most out.maxChunk), with a keep-alive frame whenever
 * the source has been silent for SILENT_SOURCE_KEEPALIVE_MS, until the source ends or `stop` is aborted
 * (the server said `stop`; the source is then let go, unread). Returns the source's failure, if it failed;
 * a failure of the connection is thrown.
 */
async function copyInto(source: AsyncIterable<Uint8Array>, out: DataWriter, stop: AbortSignal, sent: (piece: Uint8Array) => void): Promise<FtsError | null> {
  const it = iterate(source);
  let finished = false;
  let unyielded = 0;
  try {
    for (;;) {
      const next = it.next();
      let step: IteratorResult<unknown> | 'silent' | typeof STOPPED;
      for (;;) {
        try {
          step = await orSilence(next, SILENT_SOURCE_KEEPALIVE_MS, stop);
        } catch (err) {
          finished = true; // a failed iterator is done
          return localFsError(err, 'the input', 'IO_ERROR');
        }
        if (step === STOPPED) return null;
        if (step !== 'silent') break;
        await out.keepAlive();
      }
      if (step.done === true) {
        finished = true;
        return null;
      }
      // A Readable in text mode (setEncoding, Readable.from of strings) gives strings: their UTF-8 bytes.
      const value: unknown = step.value;
      if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
        // An object-mode stage in the caller's pipe: storing nothing of it and saying so beats an empty file.
        return new FtsError('BAD_REQUEST', `the input gave ${describeChunk(value)}, not bytes (a Buffer, Uint8Array or string); nothing was published`);
      }
      const chunk: Uint8Array = typeof value === 'string' ? Buffer.from(value) : value;
      for (let at = 0; at < chunk.length; at += out.maxChunk) {
        const piece = chunk.subarray(at, Math.min(chunk.length, at + out.maxChunk));
        sent(piece);
        await out.write(piece);
        unyielded += piece.length;
        if (unyielded >= YIELD_EVERY_BYTES) {
          // A source that gives at once and a socket that takes at once never leave the microtask queue,
          // and a `stop` waiting on the socket would not be read until the whole source was sent.
          unyielded = 0;
          await setImmediate();
        }
        if (stop.aborted) return null;
      }
    }
  } finally {
    if (!finished) abandon(it);
  }
}

/**
 * The source's iterator. A Readable's is asked not to destroy it on return(): the source is the caller's,
 * who may still need it after a refusal (answer an HTTP request whose body it was, say).
 */
function iterate(source: AsyncIterable<Uint8Array>): AsyncIterator<unknown> {
  const stream = source as Partial<Pick<Readable, 'iterator'>>;
  if (typeof stream.iterator === 'function') return stream.iterator({ destroyOnReturn: false });
  return source[Symbol.asyncIterator]();
}

/**
 * The upload ended (a refusal, a failed connection) while the source was still open: let it go, unread
 * and not destroyed (it is the caller's). return() is not waited for: it waits for a pending next(), which
 * a silent pipe may never settle.
 */
function abandon(it: AsyncIterator<unknown>): void {
  void Promise.resolve(it.return?.()).catch(() => undefined);
}

/** A chunk that is not bytes, for a message: its type. */
function describeChunk(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  return `a ${typeof value}`;
}

/**
 * What `next` gives; 'silent' if it gives nothing within `ms`; STOPPED once `stop` is aborted. The timer
 * and the listener are removed either way: nothing of this step (its chunk above all) stays reachable from
 * anything that lives as long as the upload.
 */
async function orSilence<T>(next: Promise<T>, ms: number, stop: AbortSignal): Promise<T | 'silent' | typeof STOPPED> {
  if (stop.aborted) return STOPPED;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      next,
      new Promise<'silent'>((resolve) => (timer = setTimeout(() => resolve('silent'), ms))),
      new Promise<typeof STOPPED>((resolve) => {
        onAbort = () => resolve(STOPPED);
        stop.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) stop.removeEventListener('abort', onAbort);
  }
}

