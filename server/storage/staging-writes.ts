import type { Hash } from 'node:crypto';
import type { DirectWriter } from '../../protocol/direct-writer.js';
import { fsError } from './errors.js';

/**
 * Received chunks are written in batches of at least this size (one writev each), fewer and larger syscalls
 * than one write per data frame.
 */
const WRITE_BATCH_BYTES = 1024 * 1024;
/**
 * While a batch is being written, the next one may keep gathering up to this size (plus the chunk that
 * crosses it) instead of waiting, and is written as soon as the disk is free. Why: each write costs a
 * thread-pool hand-off and a device round trip (~1.5–2.5 ms for 1 MiB on the reference VM, measured in
 * session 13), so 1 MiB writes one at a time held a fast upload to ~400 MiB/s; batches that grow while the
 * disk is busy amortise that cost where it matters, and stay at 1 MiB where it does not (a slow sender
 * never fills more than one batch per write).
 */
const MAX_WRITE_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * What all of this process's uploads together may hold beyond WRITE_BATCH_BYTES per batch, gathering or
 * being written: a lone fast upload gets the larger batches, many concurrent ones (each far slower) keep
 * the memory they held before.
 */
const SPARE_BATCH_BYTES = 8 * 1024 * 1024;
/** A partly gathered batch is written once no chunk has arrived for this long. */
const IDLE_FLUSH_MS = 100;

let spareBatchBytes = SPARE_BATCH_BYTES;

/** What this process's uploads may still gather beyond WRITE_BATCH_BYTES (for tests). */
export function spareWriteBatchBytes(): number {
  return spareBatchBytes;
}

/** What an upload's writes need from the upload (StagedUpload, which owns them). */
export interface StagedWritesHost {
  /** The upload's name, for the error a failed write is thrown as. */
  readonly name: string;
  /** The upload's size now (an unsized upload's comes with its trailer): bytes beyond it are not written. */
  size(): number;
  /** Whether the upload is still open: once it is not, no write starts on its own (a full batch, a pause). */
  open(): boolean;
  /** Whether its staging file was found gone: later bytes are then hashed and counted, not written. */
  orphaned(): boolean;
  /** After each completed write: notices a staging file gone from its name (orphaned() from then on). */
  checkStillStaged(): Promise<void>;
  /** Ends the upload after a failed write (the bytes staged so far stay, for a resume). */
  release(): Promise<void>;
}

/**
 * An upload's bytes on their way into its staging file: counted and hashed as they arrive, gathered into
 * batches and written. Writes stay strictly in order, one at a time, so the staging file never has a hole:
 * its length is always a prefix a resume can trust.
 */
export class StagedWrites {
  readonly #host: StagedWritesHost;
  /** Writes the batches (the upload settles and closes it). */
  readonly #writer: DirectWriter;
  readonly #hash: Hash;
  #received: number;
  /** Bytes from offset 0 whose write has completed (what the staging file's length shows). */
  #stored: number;
  /** Chunks gathered for the next write, and the file position of the first. */
  #batch: Buffer[] = [];
  /** The callers' `written` callbacks for the chunks in #batch. */
  #written: Array<() => void> = [];
  #batchBytes = 0;
  #batchAt = 0;
  /** Of spareBatchBytes, what this upload's batch holds beyond WRITE_BATCH_BYTES. */
  #borrowed = 0;
  #idleFlush: NodeJS.Timeout | undefined;
  /** The one write in flight (writes never overlap, so the staging file never has a hole). */
  #writing: Promise<void> | null = null;
  #failure: unknown = null;

  /** `offset`: the bytes the staging file holds already (a resume's copied prefix, hashed into `hash`). */
  constructor(host: StagedWritesHost, writer: DirectWriter, hash: Hash, offset: number) {
    this.#host = host;
    this.#writer = writer;
    this.#hash = hash;
    this.#received = offset;
    this.#stored = offset;
  }

  get stored(): number {
    return this.#stored;
  }

  get received(): number {
    return this.#received;
  }

  /** The SHA-256 of the bytes received up to the size (once: the hash is finished). */
  digest(): Buffer {
    return this.#hash.digest();
  }

  /** No write runs and nothing is gathered: nothing of the upload is held in memory any more. */
  get idle(): boolean {
    return this.#writing === null && this.#batch.length === 0;
  }

  /** A write has failed (its error was or will be thrown by write() or flush()). */
  get failed(): boolean {
    return this.#failure !== null;
  }

  /**
   * Appends a chunk of an open upload (StagedUpload.write says what the caller must do). Chunks are
   * gathered into writes of WRITE_BATCH_BYTES or more; one batch is written while the next is gathered, so
   * the disk works while the caller goes on receiving and hashing (the returned promise waits only when the
   * next batch is full, MAX_WRITE_BATCH_BYTES or the process's spare reached, and the previous write still
   * runs: that is the connection's backpressure).
   */
  async write(chunk: Buffer, written: () => void): Promise<void> {
    if (this.#failure !== null) {
      written();
      await this.#raiseFailure();
    }
    const size = this.#host.size();
    const position = this.#received;
    this.#received += chunk.length;
    // Bytes beyond the declared size are a protocol violation the decoder already refuses; if any get
    // here they are counted (so commit fails) but not written, so a liar cannot fill the disk.
    if (position >= size) {
      written();
      return;
    }
    const data = position + chunk.length > size ? chunk.subarray(0, size - position) : chunk;
    this.#hash.update(data);
    if (this.#host.orphaned()) {
      // Its staging file is gone (StagedUpload.#checkStillStaged): hashed and counted, no longer stored.
      written();
      return;
    }
    if (this.#batchBytes === 0) this.#batchAt = position;
    this.#batch.push(data);
    this.#written.push(written);
    this.#batchBytes += data.length;
    if (this.#batchBytes < WRITE_BATCH_BYTES) {
      this.#idleFlush ??= setTimeout(() => this.#onIdle(), IDLE_FLUSH_MS);
      return;
    }
    if (this.#writing !== null) {
      if (this.#borrow()) return;
      // Full: wait for the running write, whose end dispatches this batch (unless it failed).
      await this.#writing;
    }
    await this.#raiseFailure();
    if (this.#writing === null) this.dispatch();
  }

  /**
   * Lets the batch, already at WRITE_BATCH_BYTES or more, keep gathering while a write runs: false once it
   * reached MAX_WRITE_BATCH_BYTES or the process's spare is used up (the caller then waits, as before).
   */
  #borrow(): boolean {
    if (this.#batchBytes >= MAX_WRITE_BATCH_BYTES) return false;
    const more = this.#batchBytes - WRITE_BATCH_BYTES - this.#borrowed;
    if (more > spareBatchBytes) return false;
    spareBatchBytes -= more;
    this.#borrowed += more;
    return true;
  }

  /** Waits until no write runs (the end of one may have dispatched the next). */
  async writesDone(): Promise<void> {
    while (this.#writing !== null) await this.#writing;
  }

  /** A slow upload's bytes do not wait in memory for a batch to fill: they go to the file after a pause. */
  #onIdle(): void {
    this.#idleFlush = undefined;
    if (!this.#host.open() || this.#failure !== null) return;
    // One write at a time: if one runs, the next write() or the next pause dispatches.
    if (this.#writing === null) this.dispatch();
    else this.#idleFlush = setTimeout(() => this.#onIdle(), IDLE_FLUSH_MS);
  }

  /** Starts writing the gathered batch in the background; its failure is kept for #raiseFailure. */
  dispatch(): void {
    // Nothing gathered: nothing to do, even while a write runs (release() after a write() that was
    // waiting dispatched the last batch itself).
    if (this.#batch.length === 0) return;
    if (this.#writing !== null) throw new Error('StagedUpload: writes must not overlap');
    const { buffers, written, position, borrowed } = this.#takeBatch();
    let end = position;
    for (const b of buffers) end += b.length;
    const write: Promise<void> = this.#writer.writeAt(buffers, position)
      .then(() => {
        this.#stored = Math.max(this.#stored, end);
        return this.#host.checkStillStaged();
      })
      .catch((err: unknown) => {
        this.#failure ??= err;
      })
      .finally(() => {
        if (this.#writing === write) this.#writing = null;
        spareBatchBytes += borrowed;
        for (const done of written) done();
        // A batch that filled while this write ran goes next (see MAX_WRITE_BATCH_BYTES).
        if (this.#host.open() && this.#failure === null && this.#batchBytes >= WRITE_BATCH_BYTES) this.dispatch();
      });
    this.#writing = write;
  }

  /** Writes what is gathered and waits for it; throws the first write error, if any. */
  async flush(): Promise<void> {
    await this.writesDone();
    await this.#raiseFailure();
    this.dispatch();
    await this.writesDone();
    await this.#raiseFailure();
  }

  /** Drops the gathered chunks unwritten (their content will not be kept). */
  discard(): void {
    const { written, borrowed } = this.#takeBatch();
    spareBatchBytes += borrowed;
    for (const done of written) done();
  }

  /**
   * Empties the batch (and cancels its idle flush), returning what it held; the caller gives `borrowed`
   * back to the spare once the batch's memory is free.
   */
  #takeBatch(): { buffers: Buffer[]; written: Array<() => void>; position: number; borrowed: number } {
    clearTimeout(this.#idleFlush);
    this.#idleFlush = undefined;
    const taken = { buffers: this.#batch, written: this.#written, position: this.#batchAt, borrowed: this.#borrowed };
    this.#batch = [];
    this.#written = [];
    this.#batchBytes = 0;
    this.#borrowed = 0;
    return taken;
  }

  async #raiseFailure(): Promise<void> {
    if (this.#failure === null) return;
    const err = this.#failure;
    await this.#host.release();
    throw fsError(err, this.#host.name);
  }
}
