/**
 * The local half of an upload: hashing a file and streaming it as data frames, both with bounded memory.
 *
 * A large file is streamed where the server offers it (§6.1 "Streamed uploads"): it is hashed while it is
 * sent, and the digest follows the data in a trailer, so it is read once (a resume reads the kept prefix
 * once more, to hash it). Otherwise the digest goes in the header, before the data, and the file is read
 * twice: once to hash it, once to send it. Every pass reads through the same open FileHandle so that they
 * see the same file even if its path is replaced in between. If its content changes anyway, nothing is
 * published: the two passes disagree and the server's checksum check refuses the upload, or, for a
 * streamed upload, the file's version has changed by the end and the client sends a digest that the
 * server must refuse. A small file is read once, whole, and sent from the bytes that were hashed (within a
 * per-process memory budget), which halves the file system round trips of a batch of small uploads.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants, type BigIntStats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { DEFAULT_CHUNK_BYTES, FtsError } from '../protocol/index.js';
import type { DataWriter } from './replies.js';
import { localFsError } from './errors.js';
import { clientPayloads, UPLOAD_READ_BYTES } from './payloads.js';
import { ChunkReader, FileShrank, type Chunk } from '../protocol/chunk-reader.js';
import { DIRECT_MIN_BYTES } from '../protocol/direct-io.js';

/** `done` counts from the start of the file, so a resumed transfer starts at its offset, not at 0. */
export type ProgressCallback = (done: number, total: number) => void;

/** What an upload sends: hashed once, sent from any offset as often as the resend policy needs. */
export interface UploadSource {
  /** Its size when it was opened. */
  size(): Promise<number>;
  /** Its digest: hashes it on first use, unless a stream() has already hashed all of it. */
  digest(): Promise<Digest>;
  /** Starts hashing now (in the background) if it has not started: the digest will be needed. */
  prepareDigest(): void;
  /**
   * Writes bytes from … size−1 as data frames. Returns a local problem to report instead of the server's
   * answer (the data could not be read and padding was sent), or null.
   */
  send(out: DataWriter, from: number, onProgress?: ProgressCallback): Promise<FtsError | null>;
}

/** A source that can be sent as a streamed upload (§6.1 "Streamed uploads"). */
export interface StreamableSource extends UploadSource {
  /** The version tag the upload is staged under. */
  version(): Promise<string>;
  /**
   * Gets ready to stream bytes from … size−1: reads and hashes the bytes before `from` (unless an earlier
   * stream already hashed the whole file). This is done before the request is written, because once the
   * server has the header it expects the data without a pause (its stall timeout), and hashing a long
   * prefix can take minutes. Rejects with the local problem if the prefix cannot be read whole.
   */
  prepareStream(from: number): Promise<PreparedStream>;
}

/** A stream ready to go: its data follows the header at once. */
export interface PreparedStream {
  /**
   * Writes bytes from … size−1 as data frames, hashing them after the prefix, and returns the whole file's
   * digest for the trailer, with the local problem, if any, as send() does.
   */
  send(out: DataWriter, onProgress?: ProgressCallback): Promise<{ problem: FtsError | null; sha256: string }>;
}

/** Files at least this large are streamed (hashed while sent) where the server offers it. */
export const STREAM_MIN_BYTES = 1024 * 1024;

/** Files up to this size are read once, whole, and sent from the bytes that were hashed. */
export const READ_ONCE_MAX_BYTES = 256 * 1024;
/**
 * How many bytes of read-once files one process may hold at a time. A pipelined batch hashes ahead of
 * what it sends; beyond the budget a small file is read twice like a large one rather than held.
 */
const READ_ONCE_BUDGET_BYTES = 16 * 1024 * 1024;
let readOnceHeld = 0;

/** An open local file: the handle and its size when it was opened (fstat). */
interface OpenFile {
  fh: FileHandle;
  size: number;
  /** versionTag() of the file when it was opened. */
  version: string;
}

/**
 * The tag a streamed upload is staged under (§6.1): a digest of the local file's device, inode, size and
 * timestamps (ns), so that a rerun on the same, unchanged file continues its partial upload, and a file
 * that changed in any way (ctime cannot be set back) starts from 0. Nothing about the file leaves the
 * machine but this digest.
 */
export function versionTag(st: BigIntStats): string {
  return createHash('sha256').update(`fts-version\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`).digest('hex');
}

/** What the hashing pass produced: the digest, and the whole content when it was read once. */
interface Hashed {
  digest: Digest;
  content: Buffer | null;
  /** Bytes of the read-once budget this file holds (fstat's size, even if the file then shrank). */
  held: number;
}

/**
 * A local file, opened once: hashing and every send read through the same FileHandle, so they see the
 * same file even if its path is replaced meanwhile. Opening starts ahead of the upload's turn once the
 * source has a place among OPEN_FILES, and so does hashing of a file too small to stream (or of any file,
 * after prepareDigest()), so that they overlap with earlier requests still being sent; a larger file is
 * hashed as it is streamed. Without a place by its turn, the file is opened and hashed there.
 */
export class FileSource implements StreamableSource {
  /** The open file; null until opened (once a place among OPEN_FILES is granted, or at the upload's turn). */
  private file: Promise<OpenFile> | null = null;
  /** Started at once for files too small to stream, on first need for the others. */
  private hashed: Promise<Hashed> | null = null;
  /** The digest of the whole file, once a stream() has read and sent all of it. */
  private streamed: Digest | null = null;
  /** The last send, which may still be reading when its request already failed (connection lost). */
  private sending: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Gives back this source's place among OPEN_FILES (if it had one) once its descriptor is closed. */
  private releaseOpen: () => void = () => undefined;
  /** The descriptor was closed early: a small file's content is in memory, and every send uses that. */
  private fhClosed = false;
  /** prepareDigest() asked for the digest ahead of the turn (a server without streamed uploads). */
  private digestWanted = false;

  constructor(
    private readonly localPath: string,
    private readonly hashing: Limiter,
  ) {
    // Opened (and a small file hashed) ahead of the upload's turn, overlapping with earlier requests still
    // being sent, once it has a place among OPEN_FILES (at once, or when an earlier file gives its place
    // back); if its turn comes first, it opens there, without one. The turn never waits for a place: it
    // would hold its connection up behind other connections' uploads.
    const offer = OPEN_FILES.offer();
    this.cancelOffer = offer.cancel;
    void offer.granted.then((release) => {
      if (this.file !== null || this.closed) return release(); // opened at its turn already, or over
      this.releaseOpen = release;
      this.opened().then(
        (f) => {
          if (f.size < STREAM_MIN_BYTES || this.digestWanted) this.hashedNow().catch(() => undefined); // reported through digest()
        },
        () => undefined, // reported through size() and digest()
      );
    });
  }

  /** Withdraws this source from the line for a place among OPEN_FILES. */
  private cancelOffer: () => void = () => undefined;

  /** The open file, opening it on first need. */
  private opened(): Promise<OpenFile> {
    if (this.file === null) {
      // A turn that goes on after its upload was closed (its connection failed) must not open a file that
      // nothing would close.
      if (this.closed) return Promise.reject(new FtsError('IO_ERROR', `${this.localPath}: the upload was abandoned`));
      this.cancelOffer();
      this.file = openRegularFile(this.localPath);
      this.file.catch(() => this.releaseOpen());
    }
    return this.file;
  }

  size(): Promise<number> {
    return this.opened().then((f) => f.size);
  }

  digest(): Promise<Digest> {
    return this.hashedNow().then((h) => h.digest);
  }

  /**
   * Hashes ahead of the turn where the digest must precede the data: at once if the file is open, else once
   * it gets its place (opening it here would bypass OPEN_FILES).
   */
  prepareDigest(): void {
    this.digestWanted = true;
    if (this.file !== null) this.hashedNow().catch(() => undefined); // reported through digest()
  }

  private hashedNow(): Promise<Hashed> {
    this.hashed ??= this.opened().then((f) => this.hashing.run(() => this.hash(f)));
    return this.hashed;
  }

  version(): Promise<string> {
    return this.opened().then((f) => f.version);
  }

  async prepareStream(from: number): Promise<PreparedStream> {
    const { fh, size, version } = await this.opened();
    const known = this.streamed;
    if (known !== null) {
      // A resend: the whole file was hashed as it was sent the first time.
      return { send: (out, onProgress) => this.track(sendFile(fh, size, from, out, this.localPath, onProgress).then((problem) => ({ problem, sha256: known.sha256 }))) };
    }
    const hash = createHash('sha256');
    if (from > 0) await this.track(hashPrefix(fh, from, hash, this.localPath, () => this.closed));
    return {
      send: (out, onProgress) =>
        this.track(
          (async () => {
            const problem = await sendFile(fh, size, from, out, this.localPath, onProgress, hash);
            const sha256 = hash.digest('hex');
            if (problem !== null) return { problem, sha256 };
            // The trailer vouches for exactly the bytes that were sent. A file written to meanwhile may have
            // given a mix of old and new bytes, which hash consistently; its version tells. The server must
            // then refuse the upload, so the trailer gets a digest that cannot match.
            const changed = await changedSince(fh, version, this.localPath);
            if (changed !== null) return { problem: changed, sha256: notThisDigest(sha256) };
            // Everything was read and hashed: a resend needs no hashing pass, and neither does digest().
            this.streamed = { size, sha256 };
            this.hashed ??= Promise.resolve({ digest: this.streamed, content: null, held: 0 });
            return { problem: null, sha256 };
          })(),
        ),
    };
  }

  /** Remembers a read of the file in progress, so that close() waits for it. */
  private track<T>(run: Promise<T>): Promise<T> {
    this.sending = run.catch(() => undefined);
    return run;
  }

  private async hash({ fh, size, version }: OpenFile): Promise<Hashed> {
    if (size <= READ_ONCE_MAX_BYTES && !this.closed && readOnceHeld + size <= READ_ONCE_BUDGET_BYTES) {
      readOnceHeld += size;
      let content: Buffer | null;
      try {
        content = await readWhole(fh, size, this.localPath);
        // Sent from the very bytes that were hashed, so the server cannot tell a read torn by a writer
        // (a file being rewritten) from the real content: the file's version tells, as for a streamed one.
        const changed = content === null ? null : await changedSince(fh, version, this.localPath);
        if (changed !== null) throw changed;
      } catch (err) {
        readOnceHeld -= size;
        throw err;
      }
      if (content !== null) {
        // Every send uses the content from now on: the descriptor (and its place) can go at once, so a long
        // pipelined batch of small uploads does not hold one descriptor per file until its reply.
        this.fhClosed = true;
        await fh.close().catch(() => undefined);
        this.releaseOpen();
        return { digest: digestBuffer(content), content, held: size };
      }
      readOnceHeld -= size; // it grew past what fstat said: hash it as a large file
    }
    return { digest: await digestFile(fh, this.localPath, () => this.closed), content: null, held: 0 };
  }

  send(out: DataWriter, from: number, onProgress?: ProgressCallback): Promise<FtsError | null> {
    return this.track(
      Promise.all([this.opened(), this.hashedNow()]).then(([{ fh }, { digest, content }]) =>
        content !== null ? sendBuffer(content, from, out, onProgress) : sendFile(fh, digest.size, from, out, this.localPath, onProgress),
      ),
    );
  }

  /** Closes the file once no send reads it any more, and gives back what it held. Never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cancelOffer();
    await this.sending;
    const hashed = await this.hashed?.catch(() => null);
    if (hashed) readOnceHeld -= hashed.held;
    // Never opened (its turn did not come): nothing to close.
    const file = this.file === null ? null : await this.file.catch(() => null);
    if (file !== null && !this.fhClosed) await file.fh.close().catch(() => undefined);
    this.releaseOpen();
  }
}

/** Bytes held in memory (uploadBuffer). */
export class BufferSource implements UploadSource {
  private readonly hashed: Digest;

  constructor(private readonly data: Uint8Array) {
    this.hashed = digestBuffer(data);
  }

  size(): Promise<number> {
    return Promise.resolve(this.data.length);
  }

  digest(): Promise<Digest> {
    return Promise.resolve(this.hashed);
  }

  prepareDigest(): void {
    // Hashed in the constructor.
  }

  send(out: DataWriter, from: number, onProgress?: ProgressCallback): Promise<null> {
    return sendBuffer(this.data, from, out, onProgress);
  }
}

/**
 * Opens a local file for an upload. O_NONBLOCK keeps open() of a FIFO from waiting for a writer, O_NOCTTY
 * keeps a terminal from becoming ours (neither has an effect on a regular file); the fstat of the open
 * descriptor then refuses anything but a regular file.
 */
async function openRegularFile(localPath: string): Promise<OpenFile> {
  let fh: FileHandle | null = null;
  try {
    fh = await open(localPath, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) throw new FtsError('NOT_A_FILE', `${localPath}: not a regular file`);
    return { fh, size: Number(st.size), version: versionTag(st) };
  } catch (err) {
    await fh?.close().catch(() => undefined);
    throw localFsError(err, localPath);
  }
}

/**
 * The whole content of a file that fstat said has `size` bytes, read with one read where possible: asking
 * for one byte more than expected shows the end of the file without a second read. Null when the file has
 * grown past `size` meanwhile (the caller falls back to the streaming pass); a file that shrank is read
 * as it is now.
 */
async function readWhole(fh: FileHandle, size: number, displayPath: string): Promise<Buffer | null> {
  const buf = Buffer.allocUnsafe(size + 1);
  let have = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, have, buf.length - have, have);
      have += bytesRead;
      if (have > size) return null;
      // A regular file's read comes back short only at its end (so `size` bytes of the size+1 asked for is
      // the whole file); before the expected end a short read is asked again, and 0 bytes is the end.
      if (bytesRead === 0 || have === size) return buf.subarray(0, have);
    }
  } catch (err) {
    throw localFsError(err, displayPath);
  }
}

export interface Digest {
  size: number;
  /** 64 lowercase hex digits. */
  sha256: string;
}

/** Hash reads are large because hashing is cheap per byte and syscalls are not; one buffer is reused. */
const HASH_READ_BYTES = 1024 * 1024;

/**
 * Read buffers of finished hashing passes, kept for the next: a batch of small uploads would otherwise
 * allocate (and leave to the GC) a whole HASH_READ_BYTES buffer per file.
 */
const spareHashBuffers: Buffer[] = [];
const SPARE_HASH_BUFFERS = 4;

/**
 * SHA-256 and size of an open file, read sequentially from offset 0 in fixed-size pieces. Two buffers take
 * turns: the next piece is read (on the thread pool) while the current one is hashed (on this thread).
 */
export async function digestFile(fh: FileHandle, displayPath: string, stop?: () => boolean): Promise<Digest> {
  const hash = createHash('sha256');
  const size = await hashInto(fh, hash, Number.MAX_SAFE_INTEGER, displayPath, stop);
  return { size, sha256: hash.digest('hex') };
}

/**
 * Feeds the first `limit` bytes of an open file (fewer if it ends first) to `hash`; returns how many there
 * were. The same double-buffered reads as digestFile. Once `stop()` says the transfer was abandoned, it
 * stops after the read in progress and rejects. Also hashes a download's kept LOCAL.part.
 */
export async function hashInto(fh: FileHandle, hash: Hash, limit: number, displayPath: string, stop: () => boolean = () => false): Promise<number> {
  if (limit >= DIRECT_MIN_BYTES && limit < Number.MAX_SAFE_INTEGER) {
    const direct = await hashDirectly(fh, hash, limit, displayPath, stop);
    if (direct !== null) return direct;
  }
  const buffers = [spareHashBuffers.pop() ?? Buffer.allocUnsafe(HASH_READ_BYTES), spareHashBuffers.pop() ?? Buffer.allocUnsafe(HASH_READ_BYTES)];
  let size = 0;
  let turn = 0;
  let reading: Promise<{ bytesRead: number }> | null = null;
  const readAhead = (position: number): Promise<{ bytesRead: number }> | null =>
    position < limit ? fh.read(buffers[turn]!, 0, Math.min(HASH_READ_BYTES, limit - position), position) : null;
  try {
    reading = readAhead(0);
    while (reading !== null) {
      const { bytesRead }: { bytesRead: number } = await reading;
      reading = null;
      if (bytesRead === 0) break;
      // Abandoned (Ctrl+C, a lost connection): a long pass must not hold the caller up until it ends.
      if (stop()) throw new FtsError('IO_ERROR', `${displayPath}: hashing stopped: the transfer was abandoned`);
      const current = buffers[turn]!;
      turn ^= 1;
      reading = readAhead(size + bytesRead);
      hash.update(current.subarray(0, bytesRead));
      size += bytesRead;
    }
  } catch (err) {
    throw localFsError(err, displayPath);
  } finally {
    // A read still running (after a failure) must end before its buffer is handed to another pass.
    await reading?.catch(() => undefined);
    for (const buf of buffers) if (spareHashBuffers.length < SPARE_HASH_BUFFERS) spareHashBuffers.push(buf);
  }
  return size;
}

/**
 * hashInto for a prefix of known length (a resume's kept bytes) read with O_DIRECT (chunk-reader.ts): a
 * kept LOCAL.part was itself written with O_DIRECT and a file being uploaded may have been written long
 * ago, so neither is likely to be in the page cache, and filling it is the most expensive part of reading
 * on a VM. Null when direct reads are not available for this file (the caller reads it the ordinary way).
 * A file that ends early yields the count of the whole chunks before its end (less than `limit`, which is
 * all callers check).
 */
async function hashDirectly(fh: FileHandle, hash: Hash, limit: number, displayPath: string, stop: () => boolean): Promise<number | null> {
  const failure = (err: unknown): Error => (err instanceof FileShrank ? err : localFsError(err, displayPath));
  const reader = await ChunkReader.open(fh, limit, limit, clientPayloads, failure);
  if (!reader.direct) {
    await reader.close();
    return null;
  }
  let size = 0;
  try {
    for await (const { data, memory } of reader.chunks(0, limit, HASH_READ_BYTES)) {
      try {
        hash.update(data);
      } finally {
        clientPayloads.release(memory); // aligned memory that is not given back is lost to the arena
      }
      size += data.length;
      // Abandoned (Ctrl+C, a lost connection): a long pass must not hold the caller up until it ends.
      if (stop()) throw new FtsError('IO_ERROR', `${displayPath}: hashing stopped: the transfer was abandoned`);
    }
    return size;
  } catch (err) {
    if (err instanceof FileShrank) return size;
    throw err;
  } finally {
    await reader.close();
  }
}

/** Null if the open file still has the version it had when it was opened; else the problem to report. */
async function changedSince(fh: FileHandle, version: string, displayPath: string): Promise<FtsError | null> {
  try {
    if (versionTag(await fh.stat({ bigint: true })) === version) return null;
  } catch (err) {
    return localFsError(err, displayPath);
  }
  return new FtsError('IO_ERROR', `${displayPath}: file changed while it was being uploaded; nothing was published`);
}

/** A well-formed SHA-256 (hex) that differs from `sha256` in every digit. */
/** Another valid-looking digest, which the server is sure to refuse. */
export function notThisDigest(sha256: string): string {
  return sha256.replace(/[0-9a-f]/g, (d) => ((parseInt(d, 16) + 1) % 16).toString(16));
}

function shrank(displayPath: string): FtsError {
  return new FtsError('IO_ERROR', `${displayPath}: file shrank while it was being uploaded; nothing was published`);
}

/** Hashes the `length` bytes before a streamed resume's offset; rejects if they cannot all be read. */
async function hashPrefix(fh: FileHandle, length: number, hash: Hash, displayPath: string, stop: () => boolean): Promise<void> {
  const read = await hashInto(fh, hash, length, displayPath, stop);
  if (read !== length) throw shrank(displayPath);
}

export function digestBuffer(data: Uint8Array): Digest {
  return { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}

/** Chunk size actually used: the protocol's default, unless the server announced a smaller maximum. */
export function chunkSize(out: DataWriter): number {
  return Math.max(1, Math.min(DEFAULT_CHUNK_BYTES, out.maxChunk));
}

/**
 * Sends bytes from … size−1 of the file as data frames (`from` > 0 continues a partial upload), feeding
 * them to `hash` (a streamed upload) on the way.
 *
 * The server needs exactly `size − from` bytes to stay in step with the stream (§6.1), so if the file
 * cannot be read to the end (it shrank, or a read failed) the rest is padded with zeros, and the first
 * padding frame carries a wrong CRC32C: the server then answers CHUNK_CORRUPT and publishes nothing, the
 * session survives, and the real cause is returned here to be reported instead of the server's code.
 */
export async function sendFile(
  fh: FileHandle,
  size: number,
  from: number,
  out: DataWriter,
  displayPath: string,
  onProgress?: ProgressCallback,
  hash?: Hash,
): Promise<FtsError | null> {
  const chunk = chunkSize(out);
  let sent = from;
  let problem: FtsError | null = null;
  let padding: Buffer | null = null; // zeros; never modified, so one buffer serves every padding frame
  // Pool memory, given back once the socket has sent it: a fresh buffer per frame would make every frame
  // fault in new pages (expensive on VMs) until a GC frees the old ones. A large file is read with O_DIRECT
  // where its file system allows it (chunk-reader.ts): an upload of a file that is not in the page cache
  // then costs no page-cache fills.
  const failure = (err: unknown): FtsError => (err instanceof FileShrank ? shrank(displayPath) : localFsError(err, displayPath));
  const reader = await ChunkReader.open(fh, size, size - from, clientPayloads, failure);
  // One read is made ahead while the current one is checksummed and sent. A read holds several frames
  // (UPLOAD_READ_BYTES): measured in session 13, 1 MiB reads one at a time held a 1 GiB upload to ~400
  // MiB/s on the reference VM; with 4 MiB reads and the server's growing write batches, ~480.
  const readBytes = UPLOAD_READ_BYTES - (UPLOAD_READ_BYTES % chunk); // whole frames (chunk ≤ MAX_CHUNK_BYTES)
  const chunks = reader.chunks(from, size, readBytes);
  try {
    while (sent < size) {
      const want = Math.min(chunk, size - sent);
      if (padding === null) {
        const step = await chunks.next().catch((err: unknown) => err as FtsError);
        const piece = step instanceof FtsError || step.done === true ? null : step.value;
        if (piece !== null) {
          hash?.update(piece.data);
          await sendFrames(out, piece, chunk);
          sent += piece.data.length;
          onProgress?.(sent, size);
          continue;
        }
        problem = step instanceof FtsError ? step : shrank(displayPath);
        padding = Buffer.alloc(chunk);
        await out.write(padding.subarray(0, want), true); // wrong CRC: the server must refuse this upload
      } else {
        await out.write(padding.subarray(0, want));
      }
      sent += want;
    }
  } finally {
    // A send cut short (connection lost) leaves no read running on a handle the caller may close next.
    await chunks.return();
    await reader.close();
  }
  return problem;
}

/**
 * Sends one read as data frames of at most `chunk` bytes. Its memory goes back once every frame handed to
 * the socket has left and this function is done (also when a write fails part-way).
 */
async function sendFrames(out: DataWriter, piece: Chunk, chunk: number): Promise<void> {
  const { data, memory } = piece;
  let holds = 1; // this function's own, dropped when it returns or throws
  const drop = (): void => {
    if (--holds === 0) clientPayloads.release(memory);
  };
  try {
    for (let at = 0; at < data.length; at += chunk) {
      holds++;
      await out.write(data.subarray(at, Math.min(data.length, at + chunk)), false, drop);
    }
  } finally {
    drop();
  }
}

/** Sends bytes from … end of an in-memory buffer as data frames; the payloads are views, not copies. */
export async function sendBuffer(data: Uint8Array, from: number, out: DataWriter, onProgress?: ProgressCallback): Promise<null> {
  const chunk = chunkSize(out);
  for (let sent = from; sent < data.length; ) {
    const end = Math.min(data.length, sent + chunk);
    await out.write(data.subarray(sent, end));
    sent = end;
    onProgress?.(sent, data.length);
  }
  return null;
}

/**
 * A first-come first-served limit on concurrent jobs. Hashing is limited so that a pipelined batch of
 * uploads does not read many large files at once; FIFO order matters because the write queue sends
 * headers in call order, so the oldest upload must get its hash first.
 */
export class Limiter {
  private active = 0;
  /** Waiting for a place, first in line at `head`. A withdrawn offer is only marked, so withdrawing is O(1). */
  private waiting: Array<{ run: () => void; withdrawn: boolean }> = [];
  private head = 0;

  constructor(private readonly max: number) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await job();
    } finally {
      release();
    }
  }

  /** A place now if one is free (its release), else null: for work that may as well be done later. */
  tryAcquire(): (() => void) | null {
    if (this.active >= this.max) return null;
    this.active++;
    return this.releaser();
  }

  /**
   * A place as soon as one is free, first come first served, unless cancelled before (the place then goes
   * to the next in line). For work worth doing early but not worth waiting for.
   */
  offer(): { granted: Promise<() => void>; cancel: () => void } {
    const now = this.tryAcquire();
    if (now !== null) return { granted: Promise.resolve(now), cancel: () => undefined };
    let grant: (release: () => void) => void = () => undefined;
    const granted = new Promise<() => void>((resolve) => (grant = resolve));
    const entry = { run: () => grant(this.releaser()), withdrawn: false };
    this.waiting.push(entry);
    return { granted, cancel: () => void (entry.withdrawn = true) };
  }

  /** A place, first come first served; resolves with its release (which does nothing the second time). */
  acquire(): Promise<() => void> {
    return this.offer().granted;
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.nextWaiting();
      if (next) next.run();
      else this.active--;
    };
  }

  /** The first in line that has not withdrawn, taken out of the line (served entries are dropped in bulk). */
  private nextWaiting(): { run: () => void } | undefined {
    while (this.head < this.waiting.length) {
      const next = this.waiting[this.head++]!;
      if (this.head >= 1024 && this.head * 2 >= this.waiting.length) {
        this.waiting = this.waiting.slice(this.head);
        this.head = 0;
      }
      if (!next.withdrawn) return next;
    }
    return undefined;
  }
}

/**
 * Local files opened ahead of their upload's turn at once in this process, across all connections (each
 * FileSource that got a place holds it from its open to its close, or until a small file's content is in
 * memory): a pipelined batch of thousands of uploads must not run the process out of descriptors (EMFILE).
 * The others wait in line for a place; one whose turn comes first opens its file there (one descriptor per
 * upload still awaiting its reply; a small file's only while it is read).
 */
const OPEN_FILES = new Limiter(128);
