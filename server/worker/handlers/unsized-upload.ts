import { FtsError, parseUnsizedTrailer, stopReply, type Header, type Request } from '../../../protocol/index.js';
import type { UnsizedUpload } from '../../storage/store.js';
import { asFtsError } from '../errors.js';
import { workerPayloads } from '../payloads.js';
import type { DeferredResult, SessionIo } from '../session-io.js';
import { append, publish } from './upload.js';
import { progressReplies } from './progress-replies.js';

type UnsizedRequest = Extract<Request, { op: 'upload'; unsized: true }>;

/**
 * An unsized upload (§6.1 "Unsized uploads"): data frames until the trailer, which brings the size and the
 * SHA-256 of the whole file; published only if exactly that many bytes with that digest arrived. Room is
 * taken against the quota as the bytes come (UserStore.beginUnsizedUpload). Nothing can resume it, so
 * whatever ends it other than its publish removes what it staged. Whatever goes wrong, the data is read
 * up to its trailer, so that the next request starts on a frame boundary. (Keep-alive frames among the data
 * are consumed by the session: SessionIo.readDataOrTrailer.)
 */
export async function unsizedUpload(req: UnsizedRequest, io: SessionIo): Promise<DeferredResult> {
  let failure: FtsError | null = null;
  /** The upload has failed for good: a client that can stop sending (`stoppable`) is told now. */
  const fail = (err: unknown): void => {
    failure = asFtsError(err);
    if (req.stoppable) io.send(stopReply(req.id, failure));
  };
  let upload: UnsizedUpload | null = null;
  try {
    upload = await io.userStore().beginUnsizedUpload(req.name);
  } catch (err) {
    fail(err);
  }
  let handedOff = false;
  const tell = progressReplies(io, req.progress);
  try {
    let received = 0;
    let trailer: Header | null = null;
    for (;;) {
      let frame: Awaited<ReturnType<SessionIo['readDataOrTrailer']>>;
      try {
        frame = await io.readDataOrTrailer(req.id, () => upload?.staged.touch());
      } catch (err) {
        // A header frame that is not a JSON object still ends the data: this upload fails with it (or with
        // its earlier failure), and the session goes on.
        if (err instanceof FtsError && err.code === 'BAD_REQUEST') throw failure ?? err;
        throw err;
      }
      if ('trailer' in frame) {
        trailer = frame.trailer;
        break;
      }
      const { payload } = frame;
      if (failure !== null || upload === null) {
        workerPayloads.release(payload);
        continue;
      }
      const at = received;
      received += payload.length;
      io.progress(received, req.name);
      try {
        if (!frame.crcOk) {
          workerPayloads.release(payload);
          throw new FtsError('CHUNK_CORRUPT', `data frame at offset ${at} failed its CRC32C check; an unsized upload cannot be continued: send it again whole`);
        }
        await upload.room(received).catch((err: unknown) => {
          workerPayloads.release(payload);
          throw err;
        });
        await append(upload.staged, payload, io, () => workerPayloads.release(payload));
        tell(received); // only bytes that passed their checks: a `stop` never follows a report of its frame
      } catch (err) {
        fail(err);
        // Failed for good: what it staged and the quota room it took are freed now, not when (or if) the
        // client sends its trailer; the rest of its data is only read.
        await upload.staged.abort();
      }
    }
    let declared: { size: number; sha256: string };
    try {
      declared = parseUnsizedTrailer(trailer, req.id);
    } catch (err) {
      // Another request where the trailer belongs is fatal whatever happened before; a malformed size or
      // digest reports the upload's earlier failure, if it had one.
      if (failure !== null && err instanceof FtsError && !err.fatal) throw failure;
      throw err;
    }
    if (failure !== null || upload === null) throw failure ?? new FtsError('INTERNAL');
    upload.staged.expect(declared.sha256, declared.size);
    const later = publish(upload.staged, req.name, declared.size, received, declared.sha256);
    handedOff = true;
    return { later };
  } finally {
    if (!handedOff && upload !== null) await upload.staged.release();
  }
}
