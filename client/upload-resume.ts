/**
 * Where one upload starts and when it is sent again, on one connection (docs/PROTOCOL.md §6.1 "Resuming an
 * upload"):
 *
 * - A large file first asks `offset` and sends only what the server does not hold yet. A small one just
 *   sends from 0: asking would cost a round trip per file and break the pipelining of small uploads.
 * - CHUNK_CORRUPT and OFFSET_MISMATCH carry the offset to send from; the upload is sent again from there,
 *   a bounded number of times.
 * - A resumed upload (offset > 0) that ends in CHECKSUM_MISMATCH is sent once more from 0: the server has
 *   discarded the staged bytes, which were proven wrong.
 *
 * A dropped connection is not handled here: the whole call fails, the server keeps the staged bytes, and a
 * new call (ResilientClient does this after reconnecting) asks `offset` again and continues.
 */
import { FtsError, type Header } from '../protocol/index.js';
import type { FtsConnection, WriteTurn } from './connection.js';
import { isServerError } from './errors.js';
import type { Digest, ProgressCallback, UploadSource } from './upload.js';

/** Files at least this large ask `offset` before sending. */
export const RESUME_THRESHOLD_BYTES = 1024 * 1024;

/** Resends after CHUNK_CORRUPT or OFFSET_MISMATCH within one call; a link that keeps failing is given up on. */
export const MAX_RESENDS = 10;

export interface UploadPlan {
  name: string;
  source: UploadSource;
  /** Ask `offset` first for large files. False: always send the whole file. */
  resume: boolean;
  /** Called whenever sending starts, with the offset it starts from (again after a resend). */
  onStart?: (offset: number, size: number) => void;
  onProgress?: ProgressCallback;
}

export interface UploadOutcome {
  reply: Header;
  digest: Digest;
  /** The offset the first attempt of this call sent from: > 0 when it continued a partial upload. */
  resumedFrom: number;
}

/**
 * Runs one upload to its final reply. The first attempt is queued synchronously, before this function's
 * first await, so the upload keeps its place in the connection's request order (client.ts relies on it);
 * resends go to the back of the queue.
 */
export async function runUpload(conn: FtsConnection, plan: UploadPlan): Promise<UploadOutcome> {
  const first = conn.turn(async (w) => {
    const digest = await plan.source.digest;
    const ask = plan.resume && digest.size >= RESUME_THRESHOLD_BYTES && offersResume(conn);
    const from = ask ? await askOffset(w, plan.name, digest) : 0;
    return { from, sent: await sendUpload(w, plan, digest, from) };
  });
  let { from, sent } = await first;
  const digest = await plan.source.digest;
  const resumedFrom = from;
  let resends = 0;
  let restarted = false;
  for (;;) {
    try {
      return { reply: await sent.reply, digest, resumedFrom };
    } catch (err) {
      if (!(err instanceof FtsError) || !isServerError(err)) throw err;
      const named = err.details['offset'];
      if ((err.code === 'CHUNK_CORRUPT' || err.code === 'OFFSET_MISMATCH') && isOffset(named, digest.size) && resends < MAX_RESENDS) {
        resends++;
        from = named;
      } else if (err.code === 'CHECKSUM_MISMATCH' && from > 0 && !restarted) {
        restarted = true;
        from = 0;
      } else {
        throw err;
      }
    }
    const at = from;
    sent = await conn.turn((w) => sendUpload(w, plan, digest, at));
  }
}

/** The server announces resumable uploads (older servers lack the `offset` operation). */
function offersResume(conn: FtsConnection): boolean {
  const caps = conn.greeting['caps'];
  return Array.isArray(caps) && caps.includes('upload-resume');
}

function isOffset(v: unknown, size: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= size;
}

/** Asks where the partial upload of this identity stands; holds the write turn for the round trip. */
async function askOffset(w: WriteTurn, name: string, digest: Digest): Promise<number> {
  const { reply } = await w.send({ header: { op: 'offset', name, size: digest.size, sha256: digest.sha256 } });
  const offset = (await reply)['offset'];
  if (!isOffset(offset, digest.size)) throw new FtsError('PROTOCOL_ERROR', 'offset reply without a valid offset');
  return offset;
}

function sendUpload(w: WriteTurn, plan: UploadPlan, digest: Digest, from: number): Promise<{ reply: Promise<Header> }> {
  plan.onStart?.(from, digest.size);
  return w.send({
    header: { op: 'upload', name: plan.name, size: digest.size, sha256: digest.sha256, offset: from },
    body: (out) => plan.source.send(out, from, plan.onProgress),
  });
}
