import { FtsError, type Request } from '../../../protocol/index.js';
import type { StagedUpload } from '../../storage/store.js';
import { asFtsError } from '../errors.js';
import { workerPayloads } from '../payloads.js';
import type { DeferredResult, HandlerResult, SessionIo } from '../session-io.js';

type UploadRequest = Extract<Request, { op: 'upload' }>;

/**
 * Streams the data frames into the identity's staging file, then publishes it only if the size and
 * SHA-256 match. Whatever goes wrong, the declared data is still read to its end, so that the next request
 * on the connection starts on a frame boundary.
 *
 * What happens to the staged bytes: published on success; removed when the digest proves them wrong;
 * otherwise (dropped connection, corrupt chunk, disk error, drain) kept for a resume until --partial-ttl.
 *
 * Once every byte is in, the publish is handed back as a deferred result: the session reads the next
 * pipelined request while this file's fsyncs run, so a burst of small uploads publishes in parallel
 * (concurrent fsyncs share journal commits) instead of one fsync round trip after another.
 */
export async function upload(req: UploadRequest, io: SessionIo): Promise<DeferredResult> {
  const expected = req.size - req.offset;
  let failure: FtsError | null = null;
  let staged: StagedUpload | null = null;
  try {
    staged = await io.userStore().beginUpload(req.name, req.size, req.sha256, req.offset);
  } catch (err) {
    failure = asFtsError(err);
  }
  let handedOff = false;
  try {
    let received = 0;
    while (received < expected) {
      const chunk = await io.readData();
      const length = chunk.payload.length;
      // The payload's pool memory goes back once it is written (staged.write calls this) or, if it will not
      // be written, at once.
      const done = () => workerPayloads.release(chunk.payload);
      const writable = length <= expected - received && failure === null && staged !== null && chunk.crcOk;
      if (!writable) done();
      if (length > expected - received) throw new FtsError('PROTOCOL_ERROR', 'data frame goes past the declared upload size');
      const at = req.offset + received;
      received += length;
      io.progress(received, req.name);
      if (failure !== null || staged === null) continue;
      if (!chunk.crcOk) {
        // Everything before this chunk is good: make it durable and tell the client to resend from here.
        const offset = await staged.durableOffset();
        failure = new FtsError('CHUNK_CORRUPT', `data frame at offset ${at} failed its CRC32C check; resend from offset ${offset}`, { offset });
        continue;
      }
      try {
        await staged.write(chunk.payload, done);
        io.ctx.metrics.transferBytes('upload', length);
      } catch (err) {
        failure = asFtsError(err);
      }
    }
    if (failure !== null || staged === null) throw failure ?? new FtsError('INTERNAL');
    const later = publish(staged, req, expected);
    handedOff = true;
    return { later };
  } finally {
    if (!handedOff && staged !== null) await staged.release();
  }
}

async function publish(staged: StagedUpload, req: UploadRequest, bytes: number): Promise<HandlerResult> {
  let published = false;
  try {
    const { mtime } = await staged.commit();
    published = true;
    return {
      reply: { name: req.name, size: req.size, sha256: req.sha256, mtime },
      audit: { file: req.name, bytes, sha256: req.sha256 },
    };
  } finally {
    if (!published) await staged.release();
  }
}
