import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { directIoPrefix } from './aligned-slabs.js';
import { DIRECT_MIN_BYTES, openDirect } from './direct-io.js';
import { errnoOf } from './errno.js';

/**
 * A large file is synced in the background every this many bytes, so the device (and, on a VM, the host's
 * cache) writes it back while the rest arrives, and the fsync before the acknowledgement has little left to
 * do (it was ~0.7 s per GiB when everything waited for the end).
 */
const SYNC_EVERY_BYTES = 64 * 1024 * 1024;

/**
 * Writes a file being received (an upload's staging file on the server, a download's LOCAL.part on the
 * client) through two descriptors of it: batches that meet O_DIRECT's alignment go through an O_DIRECT
 * descriptor, bypassing the page cache; everything else (the file's tail, unaligned payloads, file systems
 * without direct I/O) through the ordinary one.
 *
 * Why: on a virtual machine, copying written bytes into the page cache is the largest single cost of
 * storing a large file (~2 s of system time per GiB measured on the reference VM, against ~0.15 s for the
 * same writes with O_DIRECT), and the final fsync then has to write back everything at once (~0.7 s per
 * GiB). Direct writes are on the device when they return, so the fsync before acknowledging only flushes
 * the metadata and the device cache. Durability rules do not change: the caller still fsyncs (either
 * descriptor: fsync is per file) before it reports anything as stored.
 *
 * Writes must not overlap in time (the callers write strictly in order, one batch at a time), which also
 * keeps the two descriptors from ever touching the same bytes at once.
 */
export class DirectWriter {
  readonly #buffered: FileHandle;
  #direct: FileHandle | undefined;
  /** SYNC_EVERY_BYTES for a large file; never for a small one. */
  #syncEvery: number;
  /**
   * A file of unknown size (null given to forFile): written as a small one until this many bytes have
   * come, then as a large one. Undefined once decided.
   */
  #largeFrom: number | undefined;
  #written = 0;
  /** Bytes written since the last background sync started. */
  #unsynced = 0;
  #syncing: Promise<void> | null = null;
  /**
   * The first failed background sync. It must fail the file: Linux reports a writeback error to a
   * descriptor once, so the final fsync would not see it again.
   */
  #syncError: unknown = null;

  private constructor(buffered: FileHandle, direct: FileHandle | undefined, syncEvery: number, largeFrom?: number) {
    this.#buffered = buffered;
    this.#direct = direct;
    this.#syncEvery = syncEvery;
    this.#largeFrom = largeFrom;
  }

  /**
   * The writer for a file with `bytesToCome` still to be written through `buffered`.
   * Below DIRECT_MIN_BYTES: the page cache only, no background syncs. From it on: background syncs, and
   * a second, O_DIRECT descriptor of the file where direct-io.ts allows one; otherwise the page cache only.
   * `null`, a size not known yet (an unsized upload): small until DIRECT_MIN_BYTES have been written, so
   * that a short stream neither opens a descriptor it never uses nor waits on the device for each of its
   * first writes.
   */
  static async forFile(buffered: FileHandle, bytesToCome: number | null): Promise<DirectWriter> {
    if (bytesToCome === null) return new DirectWriter(buffered, undefined, Infinity, DIRECT_MIN_BYTES);
    if (bytesToCome < DIRECT_MIN_BYTES) return new DirectWriter(buffered, undefined, Infinity);
    const direct = await openDirect(buffered, bytesToCome, constants.O_WRONLY);
    return new DirectWriter(buffered, direct, SYNC_EVERY_BYTES);
  }

  /**
   * A background sync failed: what was written may never reach the disk, so the file must be neither
   * published nor kept for a resume (a later fsync, on any descriptor, would no longer report the error).
   */
  get failed(): boolean {
    return this.#syncError !== null;
  }

  /** Whether direct writes are in use (for tests and logs). */
  get direct(): boolean {
    return this.#direct !== undefined;
  }

  /** Writes `buffers` contiguously at `position`; throws the error of a failed background sync. */
  async writeAt(buffers: Buffer[], position: number): Promise<void> {
    if (this.#syncError !== null) throw this.#syncError;
    if (this.#largeFrom !== undefined && this.#written >= this.#largeFrom) await this.#becomeLarge();
    await this.#write(buffers, position);
    const n = byteLength(buffers);
    this.#written += n;
    this.#unsynced += n;
    if (this.#unsynced >= this.#syncEvery && this.#syncing === null) this.#syncInBackground();
  }

  /**
   * Waits for the background sync in flight, if any, and throws if one failed. Call before the final fsync
   * (which, not this, is what makes the file durable).
   */
  async settle(): Promise<void> {
    await this.#syncing;
    if (this.#syncError !== null) throw this.#syncError;
  }

  /** A file of unknown size has grown large: from now on, as forFile would have made it for its size. */
  async #becomeLarge(): Promise<void> {
    this.#largeFrom = undefined;
    this.#direct = await openDirect(this.#buffered, DIRECT_MIN_BYTES, constants.O_WRONLY);
    this.#syncEvery = SYNC_EVERY_BYTES;
  }

  #syncInBackground(): void {
    this.#unsynced = 0;
    const sync: Promise<void> = this.#buffered
      .datasync()
      .catch((err: unknown) => {
        this.#syncError ??= err;
      })
      .finally(() => {
        if (this.#syncing === sync) this.#syncing = null;
      });
    this.#syncing = sync;
  }

  /** The aligned leading buffers go through the direct descriptor, the rest through the ordinary one. */
  async #write(buffers: Buffer[], position: number): Promise<void> {
    const direct = this.#direct;
    const n = direct === undefined ? 0 : directIoPrefix(buffers, position);
    if (n === 0) return writeAllAt(this.#buffered, buffers, position);
    const head = buffers.slice(0, n);
    try {
      await writeAllAt(direct!, head, position);
    } catch (err) {
      // EINVAL: this file system or device wants another alignment, or no direct I/O for this file. The
      // batch is written again the ordinary way (over whatever part of it landed), and so is the rest.
      if (errnoOf(err) !== 'EINVAL') throw err;
      await this.closeDirect();
      return writeAllAt(this.#buffered, buffers, position);
    }
    if (n < buffers.length) await writeAllAt(this.#buffered, buffers.slice(n), position + byteLength(head));
  }

  /**
   * Closes the O_DIRECT descriptor, once no write and no background sync is in flight (the ordinary
   * descriptor stays the caller's). Never throws.
   */
  async closeDirect(): Promise<void> {
    await this.#syncing;
    const direct = this.#direct;
    this.#direct = undefined;
    this.#largeFrom = undefined; // closed for good: a file of unknown size that grows later stays buffered
    await direct?.close().catch(() => undefined);
  }
}

function byteLength(buffers: readonly Buffer[]): number {
  let n = 0;
  for (const b of buffers) n += b.length;
  return n;
}

/** Writes `buffers` contiguously at `position`, however short the kernel's writes are. */
export async function writeAllAt(handle: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let at = position;
  let rest = buffers;
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest, at);
    if (bytesWritten === 0) throw new Error('writev wrote nothing');
    at += bytesWritten;
    let skip = bytesWritten;
    const left: Buffer[] = [];
    for (const b of rest) {
      if (skip >= b.length) skip -= b.length;
      else {
        left.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    rest = left;
  }
}
