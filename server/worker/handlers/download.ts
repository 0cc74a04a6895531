import { createHash } from 'node:crypto';
import { FtsError, MAX_CHUNK_BYTES, type Request } from '../../../protocol/index.js';
import type { ReadableFile } from '../../storage/store.js';
import { fsError } from '../../storage/errors.js';
import type { HandlerResult, SessionIo } from '../session-io.js';
import { workerPayloads } from '../payloads.js';

type DownloadRequest = Extract<Request, { op: 'download' }>;

/** Read size per data frame: the largest frame, so that per-frame costs are paid as rarely as possible. */
export const READ_CHUNK_BYTES = MAX_CHUNK_BYTES;

/**
 * Sends one version of a file: the one open on our descriptor, whatever renames or deletes happen meanwhile.
 * The final digest always covers the whole file, so a client that resumed at an offset can verify the
 * complete result: the digest recorded at publish for this version, or else a hash of the whole file read
 * now (the bytes before the offset are then hashed but not sent).
 */
export async function download(req: DownloadRequest, io: SessionIo): Promise<HandlerResult> {
  const file = await io.userStore().openRead(req.name);
  let closing: Promise<void> | null = null;
  try {
    // Like HTTP If-Range: a resume is only valid against the version it started from; any other version
    // is sent whole, so the client never splices two versions.
    const sameVersion = (req.ifSize === undefined || req.ifSize === file.size) && (req.ifMtime === undefined || req.ifMtime === file.mtime);
    const offset = sameVersion ? req.offset : 0;
    if (offset > file.size) {
      throw new FtsError('OFFSET_MISMATCH', `offset ${offset} is past the end of the file (${file.size} bytes)`, { size: file.size });
    }
    const length = file.size - offset;
    // A digest recorded at publish for this very version spares hashing (and, on a resume, reading the
    // skipped prefix); the client's check then also covers the time the file spent on disk.
    const recorded = await file.recordedDigest();
    const hash = recorded === null ? createHash('sha256') : null;
    if (hash !== null) await hashRange(file, 0, offset, hash, () => io.working());
    // The data reply goes out with the first data frame, so that both leave in one socket write (the
    // session corks what is sent within one tick); a read that fails first is then the request's only reply.
    const dataReply = { status: 'data', size: file.size, mtime: file.mtime, offset, length };
    if (length === 0) io.send(dataReply);
    let sent = 0;
    // Read ahead one chunk while the previous one is being sent. Chunks come from the worker's payload
    // pool and go back to it once the socket has handed them to the kernel.
    let pending = length > 0 ? readChunk(file, offset) : null;
    try {
      while (pending !== null) {
        const chunk = await pending;
        const position = offset + sent + chunk.length;
        pending = position < file.size ? readChunk(file, position) : null;
        pending?.catch(() => {}); // its error, if any, is raised when awaited above
        if (sent === 0) io.send(dataReply);
        hash?.update(chunk);
        await io.sendData(chunk, () => workerPayloads.release(chunk));
        io.ctx.metrics.transferBytes('download', chunk.length);
        sent += chunk.length;
        io.progress(sent, req.name);
      }
    } finally {
      // A send that failed leaves the read-ahead running: its buffer goes back once it is done.
      pending?.then((chunk) => workerPayloads.release(chunk), () => undefined);
    }
    // Everything is read and sent: the close runs in the background (it never rejects) instead of delaying
    // the final reply, which then leaves in the same socket write as the last data frame.
    closing = file.close();
    const sha256 = hash === null ? recorded! : hash.digest('hex');
    return { reply: { name: req.name, size: file.size, length, sha256 }, audit: { file: req.name, bytes: length, sha256 } };
  } finally {
    // A failure closes the descriptor before its error reply.
    if (closing === null) await file.close();
  }
}

async function readChunk(file: ReadableFile, position: number): Promise<Buffer> {
  const want = Math.min(READ_CHUNK_BYTES, file.size - position);
  const buf = workerPayloads.take(want, false); // for the socket: no aligned memory needed
  let filled = 0;
  try {
    while (filled < want) {
      const { bytesRead } = await file.handle.read(buf, filled, want - filled, position + filled);
      if (bytesRead === 0) throw new FtsError('IO_ERROR', 'file shrank while it was being read');
      filled += bytesRead;
    }
  } catch (err) {
    workerPayloads.release(buf);
    throw err instanceof FtsError ? err : fsError(err, 'read');
  }
  return buf;
}

/** Hashes bytes from … to−1 (a resume's skipped prefix: no byte moves on the socket meanwhile, hence `working`). */
async function hashRange(file: ReadableFile, from: number, to: number, hash: ReturnType<typeof createHash>, working: () => void): Promise<void> {
  for (let position = from; position < to; ) {
    const chunk = await readChunk(file, position);
    const usable = chunk.subarray(0, Math.min(chunk.length, to - position));
    hash.update(usable);
    position += usable.length;
    workerPayloads.release(chunk);
    working();
  }
}
