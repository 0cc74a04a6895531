/**
 * Where one upload starts and when it is sent again, on one connection (docs/PROTOCOL.md §6.1 "Resuming an
 * upload"):
 *
 * - A large file first asks `offset` and sends only what the server does not hold yet. A small one just
 *   sends from 0: asking would cost a round trip per file and break the pipelining of small uploads.
 * - Where the server offers it, a large file is streamed (§6.1 "Streamed uploads"): hashed while it is
 *   sent, the digest in a trailer, and identified by a version tag of the local file instead of the
 *   digest. Its `offset` is asked by that tag, and a resume streams too (hashing the kept prefix locally
 *   first), so a streamed file is never read twice unless it is resumed.
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
import type { RequestSpec } from './replies.js';
import { isServerError, serverError } from './errors.js';
import type { ServerDigest } from './skip-same.js';
import { STREAM_MIN_BYTES, type Digest, type ProgressCallback, type StreamableSource, type UploadSource } from './upload.js';

/** Files at least this large ask `offset` before sending (and are streamed where the server offers it). */
export const RESUME_THRESHOLD_BYTES = STREAM_MIN_BYTES;

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
  /**
   * Asked first, at the upload's turn (skipSame): what the server holds when it holds these very bytes, and
   * then nothing is sent.
   */
  skipIf?: (w: WriteTurn) => Promise<ServerDigest | null>;
}

export interface UploadOutcome {
  reply: Header;
  digest: Digest;
  /** The bytes of a partial upload this call continued and kept (0 once they proved wrong and were sent again). */
  resumedFrom: number;
}

/**
 * Runs one upload to its final reply. The first attempt is queued synchronously, before this function's
 * first await, so the upload keeps its place in the connection's request order (client.ts relies on it);
 * resends go to the back of the queue.
 */
export async function runUpload(conn: FtsConnection, plan: UploadPlan & { skipIf?: undefined }): Promise<UploadOutcome>;
export async function runUpload(conn: FtsConnection, plan: UploadPlan): Promise<UploadOutcome | { skipped: ServerDigest }>;
export async function runUpload(conn: FtsConnection, plan: UploadPlan): Promise<UploadOutcome | { skipped: ServerDigest }> {
  // Without streamed uploads the digest goes first: hash ahead, overlapping earlier requests still being sent.
  if (!conn.offers('upload-trailer')) plan.source.prepareDigest();
  const acked = conn.offers('upload-progress');
  const first = conn.turn(async (w): Promise<Attempt | { skipped: ServerDigest }> => {
    const same = plan.skipIf === undefined ? null : await plan.skipIf(w);
    if (same !== null) return { skipped: same };
    const source = plan.source;
    const size = await source.size();
    refuseTooLarge(conn, plan.name, size);
    if (streams(conn, source, size)) {
      const version = await source.version();
      const from = plan.resume && conn.offers('upload-resume') ? await askOffset(w, plan.name, size, { version }) : 0;
      const resend: Attempt['resend'] = (at) => (turn) => sendStreamed(turn, plan, source, size, version, at, acked);
      return { from, size, sent: await resend(from)(w), resend };
    }
    // Without streamed uploads the file is hashed before its header (it may still be hashing now).
    const digest = await w.keepAlive(source.digest());
    const ask = plan.resume && digest.size >= RESUME_THRESHOLD_BYTES && conn.offers('upload-resume');
    const from = ask ? await askOffset(w, plan.name, digest.size, { sha256: digest.sha256 }) : 0;
    const resend: Attempt['resend'] = (at) => (turn) => sendUpload(turn, plan, digest, at, acked);
    return { from, size: digest.size, sent: await resend(from)(w), resend };
  });
  const attempt = await first;
  if ('skipped' in attempt) return attempt;
  let { from, sent } = attempt;
  /** What this run used of the bytes an earlier one left: less once the server proves it kept fewer, none once they are sent again. */
  let resumedFrom = from;
  let resends = 0;
  let restarted = false;
  for (;;) {
    try {
      const reply = await sent.reply;
      // With the server's progress replies the last one came before the end of the data.
      if (acked) plan.onProgress?.(attempt.size, attempt.size);
      // A streamed upload hashed the file as it sent it: this does not read it again.
      return { reply, digest: await plan.source.digest(), resumedFrom };
    } catch (err) {
      if (!(err instanceof FtsError) || !isServerError(err)) throw err;
      const named = err.details['offset'];
      if ((err.code === 'CHUNK_CORRUPT' || err.code === 'OFFSET_MISMATCH') && isOffset(named, attempt.size) && resends < MAX_RESENDS) {
        resends++;
        from = named;
        resumedFrom = Math.min(resumedFrom, named);
      } else if (err.code === 'CHECKSUM_MISMATCH' && from > 0 && !restarted) {
        restarted = true;
        from = 0;
        resumedFrom = 0;
      } else {
        throw err;
      }
    }
    sent = await conn.turn(attempt.resend(from));
  }
}

/** One way of sending this upload (streamed, or with the digest in the header), from any offset. */
interface Attempt {
  from: number;
  size: number;
  sent: { reply: Promise<Header> };
  resend: (from: number) => (w: WriteTurn) => Promise<{ reply: Promise<Header> }>;
}

/** Whether this upload is streamed: a source that can be, large enough, and a server that offers it. */
function streams(conn: FtsConnection, source: UploadSource, size: number): source is StreamableSource {
  return 'prepareStream' in source && 'version' in source && size >= STREAM_MIN_BYTES && conn.offers('upload-trailer');
}

/**
 * A file larger than the greeting's maxFileSize (PROTOCOL.md §4) is refused here, without sending a byte (for
 * a small file the server's refusal would come after its data). The refusal is the server's, announced
 * ahead: reported as its reply would be.
 */
function refuseTooLarge(conn: FtsConnection, name: string, size: number): void {
  const max = conn.greeting['maxFileSize'];
  if (typeof max === 'number' && Number.isSafeInteger(max) && size > max) {
    const message = `${name}: ${size} bytes is more than the largest file this server accepts (${max} bytes)`;
    throw serverError({ status: 'error', code: 'FILE_TOO_LARGE', message, size, maxFileSize: max });
  }
}

function isOffset(v: unknown, size: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= size;
}

/** Asks where the partial upload of this identity stands; holds the write turn for the round trip. */
async function askOffset(w: WriteTurn, name: string, size: number, tag: { sha256: string } | { version: string }): Promise<number> {
  const { reply } = await w.send({ header: { op: 'offset', name, size, ...tag } });
  const offset = (await reply)['offset'];
  if (!isOffset(offset, size)) throw new FtsError('PROTOCOL_ERROR', 'offset reply without a valid offset');
  return offset;
}

/**
 * Sends the file from `from` with the digest in a trailer after the data (§6.1 "Streamed uploads"). The
 * kept prefix is hashed before the header is written, keeping the session alive meanwhile: once the server
 * has the header, a pause before the data would count against its stall timeout.
 */
async function sendStreamed(w: WriteTurn, plan: UploadPlan, source: StreamableSource, size: number, version: string, from: number, acked: boolean): Promise<{ reply: Promise<Header> }> {
  const prepared = await w.keepAlive(source.prepareStream(from));
  plan.onStart?.(from, size);
  let sha256 = '';
  const progress = progressOf(plan, size, acked);
  return w.send({
    header: { op: 'upload', name: plan.name, size, trailer: true, version, offset: from, ...progress.header },
    ...progress.replies,
    body: async (out) => {
      const streamed = await prepared.send(out, progress.sent);
      sha256 = streamed.sha256;
      return streamed.problem;
    },
    trailer: () => ({ sha256 }),
  });
}

function sendUpload(w: WriteTurn, plan: UploadPlan, digest: Digest, from: number, acked: boolean): Promise<{ reply: Promise<Header> }> {
  plan.onStart?.(from, digest.size);
  const progress = progressOf(plan, digest.size, acked);
  return w.send({
    header: { op: 'upload', name: plan.name, size: digest.size, sha256: digest.sha256, offset: from, ...progress.header },
    ...progress.replies,
    body: (out) => plan.source.send(out, from, progress.sent),
  });
}

/**
 * How an upload reports its progress: from the server's `progress` replies where it offers them (what it
 * has received; PROTOCOL.md §6.1 "Progress"), else as the data is handed to the socket, which runs ahead by
 * what the sockets buffer. Nothing is asked for without a callback.
 */
function progressOf(plan: UploadPlan, size: number, acked: boolean): { header: { progress?: true }; replies: Pick<RequestSpec, 'onInterim'>; sent: ProgressCallback | undefined } {
  const onProgress = plan.onProgress;
  if (onProgress === undefined || !acked) return { header: {}, replies: {}, sent: onProgress };
  return {
    header: { progress: true },
    replies: { onInterim: (h) => onProgress(receivedOf(h, size), size) },
    sent: undefined,
  };
}

/** The `received` of a `progress` reply to an upload of `size` bytes; anything else is a protocol error. */
export function receivedOf(h: Header, size: number): number {
  const received = h['received'];
  if (h['status'] !== 'progress' || typeof received !== 'number' || !Number.isSafeInteger(received) || received < 0 || received > size) {
    throw new FtsError('PROTOCOL_ERROR', `unexpected ${JSON.stringify(h['status'])} reply to an upload`);
  }
  return received;
}
