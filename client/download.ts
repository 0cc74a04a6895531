/**
 * The local half of `download` and `view` (§6.2, §6.3): checking the data phase against what the server
 * announced, and putting the bytes somewhere.
 *
 * A file download is written to a temporary file next to the target and renamed over it only after the
 * byte count and the SHA-256 of everything received match the final reply, and after an fsync. Any failure
 * removes the temporary file, so the target name only ever holds a complete, verified file (or whatever it
 * held before).
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, SHA256_PATTERN, VIEW_BYTES, type Header } from '../protocol/index.js';
import { localFsError } from './errors.js';
import type { ProgressCallback } from './upload.js';

/** The connection's read throttle, used to stop the network from outrunning the disk. */
export interface ReadThrottle {
  pauseReading(): void;
  resumeReading(): void;
}

/** Pause the socket when this many received bytes wait for the disk; resume below the low mark. */
const WRITE_HIGH_WATER_BYTES = 8 * 1024 * 1024;
const WRITE_LOW_WATER_BYTES = 2 * 1024 * 1024;

function bad(message: string): FtsError {
  return new FtsError('PROTOCOL_ERROR', message);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Checks one data phase: the 'data' reply, the byte count, the SHA-256 of what arrived. `kind` says what
 * the request asked for: a whole download from offset 0, or a view (the first VIEW_BYTES bytes, no hash).
 */
export class DataPhase {
  size = -1;
  length = -1;
  received = 0;
  private readonly hash: Hash | null;

  constructor(
    private readonly kind: 'download' | 'view',
    private readonly onProgress?: ProgressCallback,
  ) {
    this.hash = kind === 'download' ? createHash('sha256') : null;
  }

  /** Validates the interim reply. Anything but 'data' is out of protocol for these operations. */
  begin(reply: Header): void {
    if (reply['status'] !== 'data') throw bad(`unexpected ${JSON.stringify(reply['status'])} reply`);
    if (this.length >= 0) throw bad('second data reply for one request');
    const { size, length } = reply;
    const offset = reply['offset'] ?? 0;
    if (!isSize(size) || !isSize(length) || offset !== 0) throw bad('data reply with an invalid size, length or offset');
    const expected = this.kind === 'view' ? Math.min(size, VIEW_BYTES) : size;
    if (length !== expected) throw bad(`data reply announces ${length} bytes where ${expected} were expected`);
    this.size = size;
    this.length = length;
  }

  add(payload: Buffer): void {
    this.received += payload.length;
    this.hash?.update(payload);
    this.onProgress?.(this.received, this.length);
  }

  /** Checks the final 'ok' against what arrived; returns the verified SHA-256 for downloads, '' for views. */
  finish(reply: Header): string {
    if (this.length < 0) throw bad('final reply without a data phase');
    // The connection already refuses a final 'ok' that cuts a data phase short; this is the end-to-end check.
    if (this.received !== this.length) throw bad(`received ${this.received} of ${this.length} bytes`);
    if (reply['size'] !== this.size || (reply['length'] !== undefined && reply['length'] !== this.length)) {
      throw bad('final reply disagrees with the data reply about the size');
    }
    if (this.hash === null) return '';
    const expected = reply['sha256'];
    if (typeof expected !== 'string' || !SHA256_PATTERN.test(expected)) throw bad('final reply without a valid sha256');
    const actual = this.hash.digest('hex');
    if (actual !== expected) {
      throw new FtsError('CHECKSUM_MISMATCH', `received bytes hash to ${actual}, the server announced ${expected}`);
    }
    return actual;
  }
}

/** Collects a data phase in memory (downloadBuffer, view). */
export class MemoryDownload {
  readonly phase: DataPhase;
  private readonly chunks: Buffer[] = [];

  constructor(kind: 'download' | 'view', onProgress?: ProgressCallback) {
    this.phase = new DataPhase(kind, onProgress);
  }

  onInterim(reply: Header): void {
    this.phase.begin(reply);
  }

  onData(payload: Buffer): void {
    this.phase.add(payload);
    this.chunks.push(payload);
  }

  finish(reply: Header): { data: Buffer; size: number; sha256: string } {
    const sha256 = this.phase.finish(reply);
    return { data: Buffer.concat(this.chunks, this.phase.received), size: this.phase.size, sha256 };
  }
}

/** Streams a data phase into a temporary file and publishes it under the target name once verified. */
export class FileDownload {
  readonly phase: DataPhase;
  /** Where the file ends up; known after prepare(). */
  target = '';
  private tmp: string | null = null;
  private fh: FileHandle | null = null;
  /** Disk writes run one after another, in order; `queued` bytes are waiting in this chain. */
  private writes: Promise<void> = Promise.resolve();
  private queued = 0;
  private position = 0;
  private writeError: FtsError | null = null;
  private paused = false;
  /** prepare() in progress or done; discard() waits for it, or a late temporary file would be orphaned. */
  private preparing: Promise<void> | null = null;

  constructor(
    private readonly throttle: ReadThrottle,
    private readonly name: string,
    private readonly localPath: string | undefined,
    onProgress?: ProgressCallback,
  ) {
    this.phase = new DataPhase('download', onProgress);
  }

  /**
   * Resolves the target (the remote name in the current directory by default; inside the directory when
   * localPath names one) and creates the temporary file next to it, so that the final rename stays on one
   * file system and is atomic.
   */
  prepare(): Promise<void> {
    this.preparing ??= this.createTemp();
    return this.preparing;
  }

  private async createTemp(): Promise<void> {
    let target = this.localPath ?? this.name;
    if (target.endsWith('/') || target.endsWith(path.sep) || (await isDirectory(target))) target = path.join(target, this.name);
    this.target = target;
    const tmp = path.join(path.dirname(target), `.${shorten(path.basename(target))}.fts-${randomBytes(6).toString('hex')}.tmp`);
    try {
      // 'wx': never follow or reuse something that appeared under the temporary name.
      this.fh = await open(tmp, 'wx', 0o666);
    } catch (err) {
      throw localFsError(err, path.dirname(target) === '.' ? tmp : path.dirname(target), 'IO_ERROR');
    }
    this.tmp = tmp;
  }

  onInterim(reply: Header): void {
    this.phase.begin(reply);
  }

  onData(payload: Buffer): void {
    this.phase.add(payload);
    if (this.writeError !== null) return; // keep consuming the stream; the error is reported at the end
    const position = this.position;
    this.position += payload.length;
    this.queued += payload.length;
    this.writes = this.writes.then(() => this.writeAt(payload, position));
    if (!this.paused && this.queued > WRITE_HIGH_WATER_BYTES) {
      this.paused = true;
      this.throttle.pauseReading();
    }
  }

  private async writeAt(payload: Buffer, position: number): Promise<void> {
    try {
      if (this.writeError === null && this.fh !== null) {
        for (let done = 0; done < payload.length; ) {
          const { bytesWritten } = await this.fh.write(payload, done, payload.length - done, position + done);
          done += bytesWritten;
        }
      }
    } catch (err) {
      this.writeError ??= localFsError(err, this.target);
    } finally {
      this.queued -= payload.length;
      if (this.paused && (this.queued <= WRITE_LOW_WATER_BYTES || this.writeError !== null)) this.unpause();
    }
  }

  private unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    this.throttle.resumeReading();
  }

  /** Verifies the final reply, makes the file durable and renames it into place. */
  async commit(reply: Header): Promise<{ size: number; sha256: string; localPath: string }> {
    const sha256 = this.phase.finish(reply);
    await this.writes;
    if (this.writeError !== null) throw this.writeError;
    const fh = this.fh;
    const tmp = this.tmp;
    if (fh === null || tmp === null) throw new FtsError('INTERNAL', 'download committed before it was prepared');
    try {
      await fh.sync();
      this.fh = null;
      await fh.close();
      await rename(tmp, this.target);
      this.tmp = null;
    } catch (err) {
      throw localFsError(err, this.target, 'IO_ERROR');
    }
    await syncDirectory(path.dirname(this.target));
    return { size: this.phase.size, sha256, localPath: this.target };
  }

  /** Removes the temporary file after a failure. Never throws: it runs on error paths. */
  async discard(): Promise<void> {
    this.writeError ??= new FtsError('IO_ERROR', 'download abandoned');
    this.unpause();
    await this.preparing?.catch(() => undefined);
    await this.writes.catch(() => undefined);
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(() => undefined);
    const tmp = this.tmp;
    this.tmp = null;
    if (tmp !== null) await unlink(tmp).catch(() => undefined);
  }
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false; // missing or unreadable: treat it as a file path; creating the temp file reports problems
  }
}

/** Keeps the temporary name under NAME_MAX (255 bytes) even for a 255-byte target name. */
function shorten(base: string): string {
  if (Buffer.byteLength(base) <= 200) return base;
  let out = '';
  for (const ch of base) {
    if (Buffer.byteLength(out + ch) > 200) break;
    out += ch;
  }
  return out;
}

/** fsync of the directory makes the rename itself durable. Best effort: some file systems refuse it. */
async function syncDirectory(dir: string): Promise<void> {
  let fh: FileHandle | null = null;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Not fatal: the file's data is already synced, only the directory entry may be lost in a crash.
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
