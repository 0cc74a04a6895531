import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { DIRECT_IO_ALIGNMENT, directIoPrefix } from './aligned-slabs.js';
import { openDirect } from './direct-io.js';
import { errnoOf } from './errno.js';
import type { PayloadPool } from './payload-pool.js';

/** One read: `data` is what to send, `memory` what to give back to the pool once it is sent. */
export interface Chunk {
  readonly data: Buffer;
  readonly memory: Buffer;
}

/** The file ended before the size it had when it was opened. */
export class FileShrank extends Error {
  constructor() {
    super('file shrank while it was being read');
  }
}

/**
 * Reads a file being sent (a download on the server, an upload's local file on the client) in
 * payload-sized chunks taken from a payload pool. A large file on a local block file system is read
 * through a second, O_DIRECT descriptor of it (direct-io.ts), into aligned pool memory.
 *
 * Why: a large file is often not in the page cache (the server wrote it with O_DIRECT, direct-writer.ts;
 * a user's file was written long ago), and on the reference VM filling the page cache on the way cost
 * ~1.5–3 s of system time per GiB in the thread pool against ~0.15 s for direct reads: the server's 1 GiB
 * download went from ~310 to ~450 MiB/s, an upload of a local file that was not cached from 175–270 to
 * 320–430 MiB/s (client system time 1.4–3.0 → 0.3–0.45 s/GiB). Reading a file that is in the cache
 * directly was as fast as reading it from the cache there. Direct reads never use the cache, so the server
 * reads a file that it sent recently through the cache (server/worker/recent-reads.ts); --direct-io off on
 * the server and FTS_DIRECT_IO=off for the client keep the page cache for everything. Direct reads are coherent with the page cache: the kernel writes back dirty cached pages of
 * the range first.
 *
 * Unaligned positions (a resume) read up to the next 4 KiB boundary the ordinary way, then continue
 * directly; an EINVAL from a direct read (the device wants another alignment) falls back to the page cache
 * for the rest of the file. A read that gets no aligned memory from the pool (under 64 KiB, or the arena
 * all in use) goes through the page cache, and direct reads resume with the next one.
 */
export class ChunkReader {
  readonly #file: FileHandle;
  readonly #size: number;
  readonly #pool: PayloadPool;
  readonly #failure: (err: unknown) => Error;
  #direct: FileHandle | undefined;

  private constructor(file: FileHandle, size: number, pool: PayloadPool, failure: (err: unknown) => Error, direct: FileHandle | undefined) {
    this.#file = file;
    this.#size = size;
    this.#pool = pool;
    this.#failure = failure;
    this.#direct = direct;
  }

  /**
   * A reader of `file` (`size` bytes when opened) of which `bytesToRead` will be read. `failure` turns a
   * read's error (an errno error, or FileShrank) into the one read() and chunks() reject with. With
   * `viaPageCache`, the file is read through the page cache whatever its size (a file read again soon).
   */
  static async open(file: FileHandle, size: number, bytesToRead: number, pool: PayloadPool, failure: (err: unknown) => Error, viaPageCache = false): Promise<ChunkReader> {
    const direct = viaPageCache ? undefined : await openDirect(file, bytesToRead, constants.O_RDONLY);
    return new ChunkReader(file, size, pool, failure, direct);
  }

  /** Whether direct reads are in use (for tests). */
  get direct(): boolean {
    return this.#direct !== undefined;
  }

  /**
   * Up to `max` bytes from `position` (fewer only at the end of the file, or to reach an aligned position).
   * A file that is shorter than its size at open fails (FileShrank, through `failure`).
   */
  async read(position: number, max: number): Promise<Chunk> {
    const want = Math.min(max, this.#size - position);
    const direct = this.#direct;
    if (direct !== undefined) {
      const misalignment = position % DIRECT_IO_ALIGNMENT;
      if (misalignment !== 0) return this.#readBuffered(position, Math.min(want, DIRECT_IO_ALIGNMENT - misalignment));
      // O_DIRECT wants an aligned length too: the tail is read into a rounded-up buffer (the read stops at
      // the end of the file).
      const memory = this.#pool.take(Math.ceil(want / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT, true);
      // The pool gives aligned memory only for 64 KiB or more and while its arena has a free slab: a small
      // read (a tail, the last piece of a resume's prefix) or one made while the arena is all in use goes
      // through the page cache into the memory it got (kept, so that the pool's current slab fills up and
      // the next read gets an arena slab again), and the reads after it are direct again. Only an EINVAL
      // with aligned memory (the device wants another alignment) turns direct reads off for good.
      const aligned = directIoPrefix([memory], position) === 1;
      try {
        await readFully(aligned ? direct : this.#file, memory, want, position);
        return { data: want === memory.length ? memory : memory.subarray(0, want), memory };
      } catch (err) {
        this.#pool.release(memory);
        if (!aligned || errnoOf(err) !== 'EINVAL') throw this.#failure(err);
        this.#direct = undefined;
        await direct.close().catch(() => undefined);
      }
    }
    return this.#readBuffered(position, want);
  }

  /**
   * Bytes from … to−1 as chunks of at most `max` bytes, in order, each read while the one before it is
   * being used (one read ahead). Every chunk yielded is the caller's, to give back to the pool; a read still
   * ahead when the caller stops early (break, throw) is awaited and given back here, so no read is left
   * running on the descriptor. A read's error is thrown at the chunk it was for.
   */
  async *chunks(from: number, to: number, max: number): AsyncGenerator<Chunk, void, undefined> {
    let next: Promise<Chunk> | null = from < to ? this.read(from, Math.min(max, to - from)) : null;
    try {
      for (let position = from; next !== null; ) {
        const chunk: Chunk = await next;
        position += chunk.data.length;
        next = position < to ? this.read(position, Math.min(max, to - position)) : null;
        next?.catch(() => undefined); // raised when its turn comes
        yield chunk;
      }
    } finally {
      const unread = await next?.catch(() => null);
      if (unread) this.#pool.release(unread.memory);
    }
  }

  async #readBuffered(position: number, want: number): Promise<Chunk> {
    const memory = this.#pool.take(want, false); // for the socket: no aligned memory needed
    try {
      await readFully(this.#file, memory, want, position);
    } catch (err) {
      this.#pool.release(memory);
      throw this.#failure(err);
    }
    return { data: memory, memory };
  }

  /** Closes the direct descriptor, after any read in flight on it (the ordinary one is the caller's). Never rejects. */
  async close(): Promise<void> {
    const direct = this.#direct;
    this.#direct = undefined;
    await direct?.close().catch(() => undefined);
  }
}

/** Reads until `want` bytes are in `into` (asking for all of `into`, which a direct read needs). */
async function readFully(handle: FileHandle, into: Buffer, want: number, position: number): Promise<void> {
  let filled = 0;
  while (filled < want) {
    const { bytesRead } = await handle.read(into, filled, into.length - filled, position + filled);
    if (bytesRead === 0) throw new FileShrank();
    filled += bytesRead;
  }
}
