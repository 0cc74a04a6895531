import { createHash, type Hash } from 'node:crypto';
import { FtsError, MAX_CHUNK_BYTES, type Request } from '../../../protocol/index.js';
import type { ReadableFile } from '../../storage/store.js';
import { ChunkReader, FileShrank } from '../../../protocol/chunk-reader.js';
import { DIRECT_MIN_BYTES } from '../../../protocol/direct-io.js';
import { fsError } from '../../storage/errors.js';
import type { HandlerResult, SessionIo } from '../session-io.js';
import { workerPayloads } from '../payloads.js';
import { pacedFrameBytes } from '../pacer.js';
import { recentReads } from '../recent-reads.js';

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
    const toRead = hash === null ? length : file.size;
    // Only files large enough to be read directly are remembered, so small ones do not crowd them out.
    const again = toRead >= DIRECT_MIN_BYTES && recentReads.note(file.version);
    const reader = await ChunkReader.open(file.handle, file.size, toRead, workerPayloads, readFailure, again);
    try {
      if (hash !== null) await hashRange(reader, 0, offset, hash, () => io.working());
      await sendRange(reader, file, offset, hash, req.name, io);
    } finally {
      void reader.close(); // never rejects
    }
    // Everything is read and sent: the close runs in the background (it never rejects) instead of delaying
    // the final reply, which then leaves in the same socket write as the last data frame.
    closing = file.close();
    const sha256 = hash === null ? recorded! : hash.digest('hex');
    return {
      reply: { name: req.name, size: file.size, length, sha256 },
      audit: { file: req.name, bytes: length, sha256 },
      hookEvent: { event: 'download', name: req.name, size: file.size, sha256, mtime: file.mtime, offset, length },
    };
  } finally {
    // A failure closes the descriptor before its error reply.
    if (closing === null) await file.close();
  }
}

/** Sends bytes offset … end of `file` as data frames after the data reply, hashing them into `hash` if given. */
async function sendRange(reader: ChunkReader, file: ReadableFile, offset: number, hash: Hash | null, name: string, io: SessionIo): Promise<void> {
  // The data reply goes out with the first data frame, so that both leave in one socket write (the
  // session corks what is sent within one tick); a read that fails first is then the request's only reply.
  const length = file.size - offset;
  const dataReply = { status: 'data', size: file.size, mtime: file.mtime, offset, length };
  if (length === 0) io.send(dataReply);
  let sent = 0;
  // One chunk is read ahead while the previous one is being sent. Chunks come from the worker's payload
  // pool and go back to it once the socket has handed them to the kernel.
  // A rate-limited download is sent in smaller frames (pacer.ts), so that its waits are short.
  for await (const { data, memory } of reader.chunks(offset, file.size, pacedFrameBytes(io.rateLimit('download')))) {
    if (sent === 0) io.send(dataReply);
    hash?.update(data);
    await io.sendData(data, () => workerPayloads.release(memory), true);
    io.ctx.metrics.transferBytes('download', data.length);
    sent += data.length;
    io.progress(sent, name);
  }
}

/**
 * Hashes bytes from … to−1 (a resume's skipped prefix, or a whole file for `hash`: no byte moves on the
 * socket meanwhile, hence `working`, called with the position reached after each chunk).
 */
export async function hashRange(reader: ChunkReader, from: number, to: number, hash: Hash, working: (position: number) => void): Promise<void> {
  let position = from;
  for await (const { data, memory } of reader.chunks(from, to, READ_CHUNK_BYTES)) {
    hash.update(data);
    position += data.length;
    workerPayloads.release(memory);
    working(position);
  }
}

export function readFailure(err: unknown): Error {
  return err instanceof FileShrank ? new FtsError('IO_ERROR', err.message) : fsError(err, 'read');
}
