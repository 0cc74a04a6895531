import { crc32c } from './crc32c.js';
import { FtsError } from './errors.js';
import { FRAME_DATA, FRAME_HEADER, type Frame, type Header, type UndecodedFrame } from './frames.js';
import { DATA_CRC_BYTES, DEFAULT_MAX_HEADER_BYTES, FRAME_PREFIX_BYTES, MAX_CHUNK_BYTES } from './limits.js';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface DecoderOptions {
  /** Largest header body accepted; larger declared lengths are refused before any buffering. */
  maxHeaderBytes?: number;
  /** Largest data payload accepted (the `maxChunk` a server announced); at most MAX_CHUNK_BYTES, the default. */
  maxDataBytes?: number;
  /**
   * Where data-frame payloads go. Without it a payload is a view of the pushed chunk when it lies in one
   * (no copy) and a fresh buffer otherwise. With it, every payload is copied into a buffer of exactly
   * `length` bytes that this returns, so the pushed chunks are garbage as soon as push() returns (a server
   * recycling payload buffers from a pool keeps its memory flat this way).
   */
  payloadBuffer?: (length: number) => Buffer;
  /**
   * The caller reuses the memory of each pushed chunk once push() returns (a socket reading into one fixed
   * buffer). The decoder then keeps nothing that points into a chunk: data payloads are filled as their
   * bytes arrive (payloadBuffer is required), and the few bytes of an unfinished header or frame prefix
   * are copied.
   */
  reusedChunks?: boolean;
}

/** A data frame whose payload is being filled as its bytes arrive (reusedChunks). */
interface Filling {
  payload: Buffer;
  filled: number;
  crc: number;
}

/**
 * Pure, incremental frame decoder: feed it byte chunks of any size, get whole frames back.
 * It never sees a socket. A framing error (unknown type byte, a length over a limit) throws an FtsError and
 * leaves the decoder unusable, because the stream cannot be resynchronised after it.
 *
 * Buffering is bounded by the largest legal frame: a declared length is checked against the limits as soon
 * as the 5-byte prefix is complete, before the body is collected.
 */
export class FrameDecoder {
  private readonly maxHeaderBytes: number;
  private readonly maxDataBytes: number;
  private readonly payloadBuffer: ((length: number) => Buffer) | null;
  private readonly reusedChunks: boolean;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private filling: Filling | null = null;
  private failed: FtsError | null = null;

  constructor(options: DecoderOptions = {}) {
    this.maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    this.maxDataBytes = Math.min(options.maxDataBytes ?? MAX_CHUNK_BYTES, MAX_CHUNK_BYTES);
    this.payloadBuffer = options.payloadBuffer ?? null;
    this.reusedChunks = options.reusedChunks ?? false;
    if (this.reusedChunks && this.payloadBuffer === null) throw new TypeError('reusedChunks needs payloadBuffer');
  }

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.pendingBytes + (this.filling?.filled ?? 0);
  }

  /**
   * The payload of a data frame that is being filled (reusedChunks), taken away from the decoder: a
   * connection that ends mid-frame gives it back to its pool. Null if none.
   */
  takeUnfinishedPayload(): Buffer | null {
    const payload = this.filling?.payload ?? null;
    this.filling = null;
    return payload;
  }

  /** The framing error that stopped this decoder, if any. */
  get failure(): FtsError | null {
    return this.failed;
  }

  /**
   * Decodes what `chunk` completes. If a framing error follows some good frames in the same push, those
   * frames are returned (their requests deserve replies) and the error is kept in `failure`, to be thrown
   * by the next push; a push that decodes no frame before the error throws it at once.
   */
  push(chunk: Buffer): Frame[] {
    return this.decodeAll(chunk, false).map((frame) => (frame.kind === 'header-body' ? parseHeaderBody(frame.body) : frame));
  }

  /**
   * push() without decoding the header bodies: each is returned as a copy of its bytes, for a caller that
   * queues frames and decodes each header only when it gets to it (parseHeaderBody). A queued body costs
   * its length, where a decoded header can cost ~30 times that (16 KiB of nested `[` parse to ~450 KiB).
   */
  pushUndecoded(chunk: Buffer): UndecodedFrame[] {
    return this.decodeAll(chunk, true);
  }

  private decodeAll(chunk: Buffer, copyHeaders: boolean): UndecodedFrame[] {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
    }
    const frames: UndecodedFrame[] = [];
    try {
      for (;;) {
        const frame = this.next();
        if (frame === null) break;
        // A body left as a view would pin the whole pushed chunk, or be overwritten with reusedChunks.
        frames.push(copyHeaders && frame.kind === 'header-body' ? { kind: 'header-body', body: Buffer.from(frame.body) } : frame);
      }
    } catch (err) {
      this.failed = err instanceof FtsError ? err : new FtsError('PROTOCOL_ERROR', String(err));
      this.pending = [];
      this.pendingBytes = 0;
      if (frames.length === 0) throw this.failed;
    }
    if (this.reusedChunks) this.detach(chunk);
    return frames;
  }

  /** Copies what is still buffered from `chunk` (a partial header or prefix), which its owner will reuse. */
  private detach(chunk: Buffer): void {
    for (let i = 0; i < this.pending.length; i++) {
      const piece = this.pending[i]!;
      if (piece.buffer === chunk.buffer) this.pending[i] = Buffer.from(piece);
    }
  }

  private next(): UndecodedFrame | null {
    if (this.filling !== null) return this.fill(this.filling);
    if (this.pendingBytes < FRAME_PREFIX_BYTES) return null;
    const prefix = this.peek(FRAME_PREFIX_BYTES);
    const type = prefix[0]!;
    const length = prefix.readUInt32BE(1);
    if (type === FRAME_HEADER) {
      if (length > this.maxHeaderBytes) {
        throw new FtsError('FRAME_TOO_LARGE', `header frame of ${length} bytes exceeds the limit of ${this.maxHeaderBytes}`);
      }
    } else if (type === FRAME_DATA) {
      if (length <= DATA_CRC_BYTES) throw new FtsError('PROTOCOL_ERROR', 'data frame with an empty payload');
      if (length > DATA_CRC_BYTES + this.maxDataBytes) {
        throw new FtsError('FRAME_TOO_LARGE', `data frame of ${length} bytes exceeds the limit of ${DATA_CRC_BYTES + this.maxDataBytes}`);
      }
    } else {
      throw new FtsError('PROTOCOL_ERROR', `unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
    }
    if (type === FRAME_DATA && this.reusedChunks) {
      if (this.pendingBytes < FRAME_PREFIX_BYTES + DATA_CRC_BYTES) return null;
      this.consume(FRAME_PREFIX_BYTES);
      const crc = this.take(DATA_CRC_BYTES).readUInt32BE(0);
      this.filling = { payload: this.payloadBuffer!(length - DATA_CRC_BYTES), filled: 0, crc };
      return this.fill(this.filling);
    }
    if (this.pendingBytes < FRAME_PREFIX_BYTES + length) return null;
    this.consume(FRAME_PREFIX_BYTES);
    if (type === FRAME_HEADER) return { kind: 'header-body', body: this.take(length) };
    const crc = this.take(DATA_CRC_BYTES).readUInt32BE(0);
    const size = length - DATA_CRC_BYTES;
    return dataFrame(this.payloadBuffer === null ? this.take(size) : this.takeInto(this.payloadBuffer(size)), crc);
  }

  /** Copies what has arrived of the payload being filled; the frame once it is complete. */
  private fill(filling: Filling): UndecodedFrame | null {
    const want = Math.min(filling.payload.length - filling.filled, this.pendingBytes);
    if (want > 0) {
      this.takeInto(filling.payload.subarray(filling.filled, filling.filled + want));
      filling.filled += want;
    }
    if (filling.filled < filling.payload.length) return null;
    this.filling = null;
    return dataFrame(filling.payload, filling.crc);
  }

  /** The first n buffered bytes, copying only when they span chunks. */
  private peek(n: number): Buffer {
    const first = this.pending[0]!;
    if (first.length >= n) return first;
    // Copy only as many chunks as cover n bytes: concatenating everything on every push would make a frame
    // that trickles in byte by byte cost O(size^2).
    const parts: Buffer[] = [];
    let have = 0;
    for (const chunk of this.pending) {
      parts.push(chunk);
      have += chunk.length;
      if (have >= n) break;
    }
    return Buffer.concat(parts, have).subarray(0, n);
  }

  private consume(n: number): void {
    this.take(n);
  }

  /** Removes and returns the first n buffered bytes; zero-copy when they sit in one chunk. */
  private take(n: number): Buffer {
    const first = this.pending[0];
    if (first !== undefined && first.length >= n) {
      this.pendingBytes -= n;
      if (first.length === n) this.pending.shift();
      else this.pending[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    return this.takeInto(Buffer.allocUnsafe(n));
  }

  /** Removes the first out.length buffered bytes, copying them into `out`. */
  private takeInto(out: Buffer): Buffer {
    const n = out.length;
    this.pendingBytes -= n;
    let filled = 0;
    while (filled < n) {
      const head = this.pending[0]!;
      const want = n - filled;
      if (head.length <= want) {
        head.copy(out, filled);
        filled += head.length;
        this.pending.shift();
      } else {
        head.copy(out, filled, 0, want);
        this.pending[0] = head.subarray(want);
        filled += want;
      }
    }
    return out;
  }
}

/** A complete data frame: its payload and whether the payload matches the CRC32C the frame carried. */
function dataFrame(payload: Buffer, crc: number): UndecodedFrame {
  return { kind: 'data', payload, crcOk: crc32c(payload) === crc };
}

/** A header frame's body decoded: a 'header' frame if it is a JSON object in UTF-8, else 'bad-header'. */
export function parseHeaderBody(body: Buffer): Frame {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    return { kind: 'bad-header', reason: 'header is not valid UTF-8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'bad-header', reason: 'header is not valid JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { kind: 'bad-header', reason: 'header is not a JSON object' };
  }
  return { kind: 'header', header: value as Header };
}
