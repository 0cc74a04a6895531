/**
 * Matching replies to requests (docs/PROTOCOL.md §3.2). The server answers in request order, so every
 * reply belongs to the oldest request without a final reply: a FIFO queue. Interim replies and data frames
 * go to that request's callbacks until its final 'ok' or 'error' removes it.
 *
 * The data phase is tracked here for every request, wanted or not, so that a stray data frame (fatal) can
 * be told from a legitimate one, and the frames of a request that already failed locally can be skipped
 * while the stream stays in step.
 */
import { FtsError, MAX_FILE_SIZE, type Frame, type Header } from '../protocol/index.js';
import { asFtsError, markAnswer, serverError } from './errors.js';
import { clientPayloads } from './payloads.js';

/** Writes the data frames of one upload; handed to RequestSpec.body. */
export interface DataWriter {
  /** Largest payload the server accepts in one data frame (from the greeting). */
  readonly maxChunk: number;
  /**
   * Writes one data frame and resolves once the socket can take more (backpressure). corruptCrc sends a
   * deliberately wrong CRC32C, which makes the server refuse the upload while the stream stays in step.
   * `sent` is called exactly once, when the socket no longer holds the payload (handed to the kernel, or
   * dropped because the connection failed, or never written): only then may its memory be reused.
   */
  write(payload: Uint8Array, corruptCrc?: boolean, sent?: () => void): Promise<void>;
  /**
   * An unsized upload's keep-alive: the header frame {op, id, "keepalive": true}, which moves bytes while the
   * source has none to give (PROTOCOL.md §6.1 "Unsized uploads").
   */
  keepAlive(): Promise<void>;
}

export interface RequestSpec {
  /**
   * The request header without `id` (the connection assigns it). A function is called when the request's
   * turn to be written comes; if it throws, the request fails without being sent and the queue moves on.
   */
  header: Header | (() => Promise<Header>);
  /**
   * For uploads: writes exactly the declared `size − offset` bytes of data frames. It returns an error to
   * fail the request with once the server's final reply arrives (for example when the local file could not
   * be read and padding was sent instead), or null.
   */
  body?: (out: DataWriter) => Promise<FtsError | null>;
  /**
   * For streamed uploads: the fields of the trailer header frame written right after the body's data
   * (the connection adds the request's `op` and `id`). Called once the body has finished.
   */
  trailer?: () => Header;
  /** Interim replies ('data', 'entry'). Throwing fails the request; its remaining replies are still consumed. */
  onInterim?: (reply: Header) => void;
  /** Payloads of the data phase, CRC already checked. Throwing fails the request as for onInterim. */
  onData?: (payload: Buffer) => void;
}

export interface InFlight {
  readonly id: number;
  readonly op: unknown;
  readonly spec: RequestSpec;
  readonly resolve: (reply: Header) => void;
  readonly reject: (err: FtsError) => void;
  /** Set when the request already failed on our side; its replies are consumed and then this is reported. */
  localError: FtsError | null;
  /**
   * The server may work in silence before its first reply to this request (copying a resumed upload's
   * kept prefix, hashing a resumed download's skipped one, reading a file to hash it), for as long as that takes: cleared by the
   * first frame that answers it.
   */
  quietStart?: boolean;
}

export class ReplyRouter {
  private readonly queue: InFlight[] = [];
  /** Payload bytes the head request's data phase still expects; > 0 only inside a data phase. */
  private dataRemaining = 0;

  /** Some request still waits for its final reply. */
  get waiting(): boolean {
    return this.queue.length > 0;
  }

  /** The oldest waiting request is one the server may legitimately be silent about (InFlight.quietStart). */
  get quietHead(): boolean {
    return this.queue[0]?.quietStart === true;
  }

  /** Appends a request that has just been written. */
  add(entry: InFlight): void {
    this.queue.push(entry);
  }

  /**
   * Routes one frame to the oldest in-flight request. Returns the error that ends the connection when the
   * frame says so ('bye', an error reply with fatal), else null; throws on anything out of protocol (which
   * ends the connection too: the stream can no longer be trusted to be in step).
   */
  route(frame: Frame): FtsError | null {
    if (frame.kind === 'bad-header') throw new FtsError('PROTOCOL_ERROR', `server sent a malformed header: ${frame.reason}`);
    const head = this.queue[0];
    if (head !== undefined) head.quietStart = false;
    if (frame.kind === 'data') {
      const n = frame.payload.length;
      const outside = head === undefined || this.dataRemaining === 0;
      if (outside || n > this.dataRemaining) {
        clientPayloads.release(frame.payload);
        throw new FtsError('PROTOCOL_ERROR', outside ? 'server sent a data frame outside a data phase' : 'server sent more data than its data reply announced');
      }
      this.dataRemaining -= n;
      const onData = head.spec.onData;
      if (head.localError || !frame.crcOk || onData === undefined) {
        // Already failed, failing now, or nobody reads data: consume and drop (the memory goes straight
        // back to the pool).
        if (!frame.crcOk) head.localError ??= new FtsError('CHUNK_CORRUPT', 'a data frame from the server failed its CRC32C check');
        clientPayloads.release(frame.payload);
        return null;
      }
      this.deliver(head, () => onData(frame.payload));
      return null;
    }

    const h = frame.header;
    const status = h['status'];
    if (status === 'bye') return serverError(h);
    // An error no request can be blamed for (§3.2 rule 5) while none is waiting: report the server's words.
    if (head === undefined && status === 'error' && h['id'] === null) return serverError(h);
    if (head === undefined) throw new FtsError('PROTOCOL_ERROR', `server sent an unsolicited ${JSON.stringify(status)} reply`);
    const id = h['id'];
    if (id !== head.id && !(id === null && status === 'error')) {
      throw new FtsError('PROTOCOL_ERROR', `server answered request ${JSON.stringify(id)} while request ${head.id} was waiting`);
    }

    if (status === 'ok' || status === 'error') {
      // A header frame while data is still expected is the final reply, per §6.2 (the server stopped early).
      const cutShort = this.dataRemaining > 0;
      this.dataRemaining = 0;
      this.queue.shift();
      if (status === 'error') {
        const err = serverError(h);
        head.reject(head.localError ?? markAnswer(err));
        if (err.fatal) return err; // the wire's `fatal`, or the code's when the reply omits it
      } else if (cutShort) {
        head.reject(new FtsError('PROTOCOL_ERROR', 'server sent its final reply before all announced data'));
      } else if (head.localError) {
        head.reject(head.localError);
      } else {
        head.resolve(h);
      }
      return null;
    }

    if (status === 'hello') throw new FtsError('PROTOCOL_ERROR', 'server sent a second greeting');
    if (this.dataRemaining > 0) throw new FtsError('PROTOCOL_ERROR', `server sent a ${JSON.stringify(status)} reply inside a data phase`);
    if (status === 'data') {
      // Tracked even when the request does not want data, so that the frames can be skipped in step.
      const length = h['length'];
      if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0 || length > MAX_FILE_SIZE) {
        throw new FtsError('PROTOCOL_ERROR', 'server sent a data reply without a valid length');
      }
      this.dataRemaining = length;
    }
    if (head.localError) return null;
    const onInterim = head.spec.onInterim;
    if (onInterim === undefined) {
      head.localError = new FtsError('PROTOCOL_ERROR', `unexpected ${JSON.stringify(status)} reply to ${String(head.op)}`);
      return null;
    }
    this.deliver(head, () => onInterim(h));
    return null;
  }

  /** Runs a caller's callback; a throw fails that request only (its remaining replies are still consumed). */
  private deliver(head: InFlight, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      head.localError = asFtsError(err);
    }
  }

  /** Fails every request still waiting (the connection is gone). */
  failAll(err: FtsError): void {
    for (const r of this.queue.splice(0)) r.reject(err);
    this.dataRemaining = 0;
  }
}
