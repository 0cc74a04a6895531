import { MAX_CHUNK_BYTES } from '../../protocol/index.js';
import { HIGH_WATER_BYTES } from './frame-source.js';

/**
 * The rate limit of one session in one direction (--max-upload-rate, --max-download-rate), as vsftpd's
 * local_max_rate or pure-ftpd's -t/-T: a token bucket. Before each data frame moves, the transfer waits until
 * the bucket is no longer overdrawn; the frame then overdraws it by its size. So the debt of a transfer's
 * last frame is paid before the session's next data moves, not before its reply: a publish or a final reply
 * is never held back for data that has already arrived.
 *
 * The bucket starts empty (a new session has no head start) and fills at the rate up to one second's
 * worth, so a session that paused may move that much at once. Per session, not per user: a user with several
 * sessions has the rate in each, as with vsftpd. Each user may have rates of their own (--rates-file).
 */
export class Pacer {
  /** Bytes per second. */
  readonly rate: number;
  readonly #bytesPerMs: number;
  readonly #capacity: number;
  readonly #now: () => number;
  #tokens = 0;
  #last: number;

  constructor(bytesPerSecond: number, now: () => number = () => performance.now()) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`a rate must be positive (got ${bytesPerSecond})`);
    this.rate = bytesPerSecond;
    this.#bytesPerMs = bytesPerSecond / 1000;
    this.#capacity = bytesPerSecond;
    this.#now = now;
    this.#last = now();
  }

  /** Milliseconds to wait before the next bytes may move (0: now). */
  delay(): number {
    this.#refill();
    return this.#tokens >= 0 ? 0 : -this.#tokens / this.#bytesPerMs;
  }

  /** Counts `bytes` that moved. */
  moved(bytes: number): void {
    this.#refill();
    this.#tokens -= bytes;
  }

  #refill(): void {
    const now = this.#now();
    this.#tokens = Math.min(this.#capacity, this.#tokens + (now - this.#last) * this.#bytesPerMs);
    this.#last = now;
  }
}

/** Data frames of a rate-limited transfer are a multiple of this (O_DIRECT reads need aligned sizes). */
const PACED_FRAME_STEP = 64 * 1024;

/**
 * The data frame size for a direction with this rate limit (null: none): about a quarter of a second's
 * worth, from 64 KiB to the protocol's 1 MiB. Small frames keep the waits short (the wire is not silent for
 * seconds, which a client could take for a dead server) and what a waiting session holds small.
 */
export function pacedFrameBytes(bytesPerSecond: number | null): number {
  if (bytesPerSecond === null) return MAX_CHUNK_BYTES;
  const quarter = Math.floor(bytesPerSecond / 4 / PACED_FRAME_STEP) * PACED_FRAME_STEP;
  return Math.min(MAX_CHUNK_BYTES, Math.max(PACED_FRAME_STEP, quarter));
}

/**
 * How much of a rate-limited session's upload the server reads ahead of the handler: two frames (at least
 * 128 KiB), so that its data waits in the client's socket, not in our memory, for the length of the waits.
 */
export function pacedReadAheadBytes(bytesPerSecond: number | null): number {
  if (bytesPerSecond === null) return HIGH_WATER_BYTES;
  return Math.min(HIGH_WATER_BYTES, Math.max(2 * PACED_FRAME_STEP, 2 * pacedFrameBytes(bytesPerSecond)));
}
