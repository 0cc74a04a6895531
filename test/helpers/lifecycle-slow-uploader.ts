/**
 * A raw-protocol uploader whose pace the test controls, so that an upload is "in flight" for exactly as
 * long as the test wants: it logs in, sends the upload header, then sends data frames of `chunkBytes`
 * every `intervalMs` until `pauseAt` bytes have been sent, and stops there. The test then calls
 * resume() (keep pumping at a pace), finish() (send the rest at once) or nothing at all (an upload that
 * never finishes). outcome() resolves with the first thing the server says about the upload.
 */
import { randomBytes } from 'node:crypto';
import type { Header } from '../../protocol/index.js';
import { RawClient } from './raw-client.js';
import { sha256, sleep } from './lifecycle-util.js';

export interface SlowUploadOptions {
  port: number;
  user: string;
  password: string;
  name: string;
  /** Declared file size in bytes. Default 1 MiB. */
  size?: number;
  /** Payload bytes per data frame. Default 16 KiB. */
  chunkBytes?: number;
  /** Delay between data frames while pumping. Default 20 ms. */
  intervalMs?: number;
  /** Stop after this many bytes until resume()/finish(). Default half the size. */
  pauseAt?: number;
}

export type UploadOutcome =
  /** The final reply to the upload request (status ok or error). */
  | { kind: 'reply'; header: Header }
  /** A bye frame before any final reply: the upload was not completed. */
  | { kind: 'bye'; header: Header }
  /** The connection closed before any reply. */
  | { kind: 'closed'; error: string | null };

export class SlowUploader {
  readonly data: Buffer;
  readonly sha256: string;
  readonly name: string;
  readonly user: string;
  readonly uploadId: number;
  /** Payload bytes written to the socket so far. */
  sent = 0;
  /** Everything the server said after the upload header, in order. */
  readonly afterUpload: Header[] = [];
  private limit: number;
  private intervalMs: number;
  private readonly chunkBytes: number;
  private wake: (() => void) | null = null;
  /** Set by close(): the pump stops at its next step (the socket's 'close' event comes later). */
  private stopped = false;
  private readonly outcomePromise: Promise<UploadOutcome>;
  private readonly pumpDone: Promise<void>;

  private constructor(
    readonly conn: RawClient,
    options: Required<SlowUploadOptions>,
    uploadId: number,
    data: Buffer,
  ) {
    this.data = data;
    this.sha256 = sha256(data);
    this.name = options.name;
    this.user = options.user;
    this.uploadId = uploadId;
    this.limit = options.pauseAt;
    this.intervalMs = options.intervalMs;
    this.chunkBytes = options.chunkBytes;
    this.outcomePromise = this.watch();
    this.outcomePromise.catch(() => undefined);
    this.pumpDone = this.pump();
  }

  /** Logs in, sends the upload header and starts pumping. */
  static async start(options: SlowUploadOptions): Promise<SlowUploader> {
    const size = options.size ?? 1024 * 1024;
    const full: Required<SlowUploadOptions> = {
      size,
      chunkBytes: 16 * 1024,
      intervalMs: 20,
      pauseAt: Math.floor(size / 2),
      ...options,
    };
    if (full.pauseAt > size) throw new Error('pauseAt is beyond the size');
    const data = randomBytes(size);
    const conn = await RawClient.login(options.port, options.user, options.password);
    const id = await conn.send({ op: 'upload', name: options.name, size, sha256: sha256(data) });
    return new SlowUploader(conn, full, id, data);
  }

  /** The local port of the connection (matches the `remote` column of `fts-admin sessions`). */
  get localPort(): number {
    return this.conn.localPort;
  }

  /** Keeps pumping at `intervalMs` per frame until the whole file is sent (or until `upTo` bytes). */
  resume(intervalMs = this.intervalMs, upTo = this.data.length): void {
    this.intervalMs = intervalMs;
    this.limit = Math.min(upTo, this.data.length);
    this.poke();
  }

  /** Sends everything that is left as fast as the socket takes it. */
  finish(): void {
    this.resume(0);
  }

  /** Resolves once at least `bytes` payload bytes have been written (throws after `timeoutMs`). */
  async waitForSent(bytes: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.sent < bytes) {
      if (this.conn.isClosed) throw new Error(`connection of upload ${this.name} closed after ${this.sent} bytes`);
      if (Date.now() > deadline) throw new Error(`upload ${this.name}: only ${this.sent} of ${bytes} bytes sent after ${timeoutMs} ms`);
      await sleep(10);
    }
  }

  /** The first thing the server said about the upload (or that the connection closed). */
  outcome(timeoutMs = 30_000): Promise<UploadOutcome> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.outcomePromise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`upload ${this.name}: no outcome within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** Cuts the connection (idempotent) and waits for the pump to stop. */
  async close(): Promise<void> {
    this.stopped = true;
    this.conn.destroy();
    this.poke();
    await this.pumpDone;
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async pump(): Promise<void> {
    while (this.sent < this.data.length && !this.conn.isClosed && !this.stopped) {
      if (this.sent >= this.limit) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      const n = Math.min(this.chunkBytes, this.limit - this.sent);
      const payload = this.data.subarray(this.sent, this.sent + n);
      await this.conn.sendData(payload);
      this.sent += n;
      if (this.intervalMs > 0 && this.sent < this.limit) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, this.intervalMs);
          function done(): void {
            clearTimeout(timer);
            resolve();
          }
          this.wake = done;
        });
        this.wake = null;
      }
    }
  }

  /** Reads frames after the upload header: the first final reply or bye decides the outcome. */
  private async watch(): Promise<UploadOutcome> {
    let outcome: UploadOutcome | null = null;
    let resolveOutcome: (o: UploadOutcome) => void = () => undefined;
    const result = new Promise<UploadOutcome>((resolve) => {
      resolveOutcome = resolve;
    });
    void (async () => {
      for (;;) {
        const e = await this.conn.nextEvent(0).catch(() => null);
        if (e === null || e.kind === 'closed') {
          if (outcome === null) {
            outcome = { kind: 'closed', error: e === null ? 'no frame' : e.error };
            resolveOutcome(outcome);
          }
          return;
        }
        if (e.kind !== 'header') continue;
        this.afterUpload.push(e.header);
        if (outcome !== null) continue;
        const status = e.header['status'];
        if (status === 'bye') {
          outcome = { kind: 'bye', header: e.header };
          resolveOutcome(outcome);
        } else if (status === 'ok' || status === 'error') {
          outcome = { kind: 'reply', header: e.header };
          resolveOutcome(outcome);
        }
      }
    })();
    return result;
  }
}

export interface ResumeResult {
  /** The durable offset the server reported for the upload's identity before the resume. */
  offset: number;
  /** The final reply to the resuming upload, or null if the connection closed first. */
  reply: Header | null;
}

/**
 * Continues a partial upload the way docs/PROTOCOL.md §6.1 describes: on a new connection, ask `offset`
 * for the identity (name, size, sha256), then send `upload` with that offset and the remaining bytes.
 */
export async function resumeUpload(port: number, user: string, password: string, name: string, data: Buffer): Promise<ResumeResult> {
  const conn = await RawClient.login(port, user, password);
  try {
    const digest = sha256(data);
    const answer = await conn.request({ op: 'offset', name, size: data.length, sha256: digest });
    if (answer?.['status'] !== 'ok' || typeof answer['offset'] !== 'number') throw new Error(`offset for ${name} failed: ${JSON.stringify(answer)}`);
    const offset = answer['offset'];
    await conn.send({ op: 'upload', name, size: data.length, sha256: digest, offset });
    for (let at = offset; at < data.length; at += 256 * 1024) await conn.sendData(data.subarray(at, Math.min(data.length, at + 256 * 1024)));
    return { offset, reply: await conn.nextHeaderOrNull(20_000) };
  } finally {
    conn.destroy();
  }
}
