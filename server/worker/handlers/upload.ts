import { FtsError, parseTrailer, type Request } from '../../../protocol/index.js';
import type { StagedUpload } from '../../storage/store.js';
import { asFtsError } from '../errors.js';
import { workerPayloads } from '../payloads.js';
import type { DataChunk, DeferredResult, HandlerResult, SessionIo } from '../session-io.js';
import { progressReplies } from './progress-replies.js';
import { unsizedUpload } from './unsized-upload.js';

type UploadRequest = Extract<Request, { op: 'upload'; size: number }>;

/**
 * Uploads of at most this many bytes are gathered in memory while their staging file opens (see
 * bufferedUpload). A session holds at most MAX_PUBLISHING of them, so this bounds what one connection can
 * pin: 32 × 64 KiB = 2 MiB, as much as its frame queue.
 */
export const BUFFERED_UPLOAD_MAX_BYTES = 64 * 1024;

/**
 * Streams the data frames into the identity's staging file, then publishes it only if the size and
 * SHA-256 match. A streamed upload is staged under its version tag instead of a digest, and its digest is
 * read from the trailer that follows the data. Whatever goes wrong, the declared data (and trailer) is still
 * read to its end, so that the next request on the connection starts on a frame boundary.
 *
 * What happens to the staged bytes: published on success; removed when the digest proves them wrong;
 * otherwise (dropped connection, corrupt chunk, disk error, drain) kept for a resume until --partial-ttl.
 *
 * Once every byte is in, the publish is handed back as a deferred result: the session reads the next
 * pipelined request while this file's fsyncs run, so a burst of small uploads publishes in parallel
 * (concurrent fsyncs share journal commits) instead of one fsync round trip after another.
 */
export async function upload(req: Extract<Request, { op: 'upload' }>, io: SessionIo): Promise<DeferredResult> {
  if ('unsized' in req) return unsizedUpload(req, io);
  const expected = req.size - req.offset;
  if ('sha256' in req.tag && expected <= BUFFERED_UPLOAD_MAX_BYTES) return bufferedUpload(req, io, expected, req.tag.sha256);
  let failure: FtsError | null = null;
  let staged: StagedUpload | null = null;
  try {
    // A resume copies the staged prefix first (minutes for a large one on slow storage): not a stall.
    staged = await io.userStore().beginUpload(req.name, req.size, req.tag, req.offset, () => io.working());
  } catch (err) {
    failure = asFtsError(err);
  }
  let handedOff = false;
  const tell = progressReplies(io, req.progress);
  try {
    let received = 0;
    while (received < expected) {
      const chunk = await io.readData();
      const at = req.offset + received;
      received += checkedLength(chunk, expected - received);
      io.progress(received, req.name);
      if (failure !== null || staged === null) {
        workerPayloads.release(chunk.payload);
        continue;
      }
      try {
        await stage(staged, chunk, at, io);
      } catch (err) {
        failure = asFtsError(err);
      }
      if (failure === null && received < expected) tell(req.offset + received);
    }
    // A streamed upload's digest follows its data; it is read even when the upload already failed, so
    // that the next request starts on a frame boundary.
    const sha256 = 'sha256' in req.tag ? req.tag.sha256 : await readTrailer(req.id, io, failure);
    if (failure !== null || staged === null) throw failure ?? new FtsError('INTERNAL');
    staged.expect(sha256);
    const later = publish(staged, req.name, req.size, expected, sha256);
    handedOff = true;
    return { later };
  } finally {
    if (!handedOff && staged !== null) await staged.release();
  }
}

/**
 * A small upload: its bytes are gathered in memory first, and the staging file's open (started at once)
 * is only waited for in the deferred result, together with the write and the publish. The session goes
 * on to the next pipelined request instead of waiting for that open, which queues on the thread pool
 * behind other uploads' fsyncs (measured: in a burst of 4 KiB uploads, that open was ~85 % of the time the
 * session spent per upload). Each payload is copied into one buffer of the upload's size and given back
 * to the pool at once, so a client that splits the data into tiny frames pins no per-frame memory.
 * Outcomes are those of the streaming path: a corrupt chunk still gets CHUNK_CORRUPT with the durable
 * offset of the good bytes before it, and a connection lost mid-data leaves them staged for a resume.
 */
async function bufferedUpload(req: UploadRequest, io: SessionIo, expected: number, sha256: string): Promise<DeferredResult> {
  const opening = io.userStore().beginUpload(req.name, req.size, { sha256 }, req.offset, () => io.working());
  opening.catch(() => undefined); // its failure is the deferred result's
  const data = Buffer.allocUnsafe(expected);
  let received = 0;
  /** Bytes before the first chunk that failed its CRC32C (all of them while none has). */
  let good = expected;
  try {
    while (received < expected) {
      const chunk = await io.readData();
      const length = checkedLength(chunk, expected - received);
      if (good === expected && !chunk.crcOk) good = received;
      if (good === expected) chunk.payload.copy(data, received);
      workerPayloads.release(chunk.payload);
      received += length;
      io.progress(received, req.name);
    }
  } catch (err) {
    // Cut short (connection lost, protocol violation): keep what arrived, as the streaming path does.
    const staged = await opening.catch(() => null);
    if (staged !== null) {
      const kept = Math.min(received, good);
      if (kept > 0) await append(staged, data.subarray(0, kept), io).catch(() => undefined);
      await staged.release();
    }
    throw err;
  }
  const later = (async (): Promise<HandlerResult> => {
    const staged = await opening;
    try {
      if (good > 0) await append(staged, data.subarray(0, good), io);
      if (good < expected) throw await chunkCorrupt(staged, req.offset + good);
    } catch (err) {
      await staged.release();
      throw err;
    }
    return publish(staged, req.name, req.size, expected, sha256);
  })();
  return { later };
}

/**
 * The digest from a streamed upload's trailer. A malformed one fails the upload with BAD_REQUEST, unless it
 * already failed: then that earlier error (CHUNK_CORRUPT with its resend offset, say) is the one reported.
 */
async function readTrailer(id: number, io: SessionIo, failure: FtsError | null): Promise<string> {
  try {
    return parseTrailer(await io.readContinuation(), id);
  } catch (err) {
    if (failure !== null && err instanceof FtsError && !err.fatal) throw failure;
    throw err;
  }
}

/** The payload length of a data frame; one that goes past the declared upload size is released and refused. */
function checkedLength(chunk: DataChunk, left: number): number {
  if (chunk.payload.length <= left) return chunk.payload.length;
  workerPayloads.release(chunk.payload);
  throw new FtsError('PROTOCOL_ERROR', 'data frame goes past the declared upload size');
}

/**
 * Appends one received chunk (at file offset `at`) to the staging file; the payload's pool memory goes back
 * once written. A chunk that failed its CRC32C is not written (see chunkCorrupt).
 */
async function stage(staged: StagedUpload, chunk: DataChunk, at: number, io: SessionIo): Promise<void> {
  if (!chunk.crcOk) {
    workerPayloads.release(chunk.payload);
    throw await chunkCorrupt(staged, at);
  }
  await append(staged, chunk.payload, io, () => workerPayloads.release(chunk.payload));
}

/** Appends bytes to the staging file and counts them; `written` is called once their memory is free. */
export async function append(staged: StagedUpload, bytes: Buffer, io: SessionIo, written?: () => void): Promise<void> {
  await staged.write(bytes, written);
  io.ctx.metrics.transferBytes('upload', bytes.length);
}

/**
 * The answer to a data frame at file offset `at` that failed its CRC32C: everything before it is made
 * durable, and the client is told to resend from there.
 */
async function chunkCorrupt(staged: StagedUpload, at: number): Promise<FtsError> {
  const offset = await staged.durableOffset();
  return new FtsError('CHUNK_CORRUPT', `data frame at offset ${at} failed its CRC32C check; resend from offset ${offset}`, { offset });
}

/** Publishes a verified upload of `size` bytes (`bytes` of them sent by this request). */
export async function publish(staged: StagedUpload, name: string, size: number, bytes: number, sha256: string): Promise<HandlerResult> {
  let committed = false;
  try {
    const { mtime, published } = await staged.commit();
    committed = true;
    return {
      reply: { name, size, sha256, mtime },
      audit: { file: name, bytes, sha256 },
      ...(published ? { hookEvent: { event: 'upload' as const, name, size, sha256, mtime } } : {}),
    };
  } finally {
    if (!committed) await staged.release();
  }
}
