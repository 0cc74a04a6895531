/**
 * The rate limit of one session in one direction (--max-upload-rate, --max-download-rate), as vsftpd's
 * local_max_rate or pure-ftpd's -t/-T: a token bucket that holds up to one second's worth of bytes. A
 * transfer moves a data frame, then waits as long as the frame overdrew the bucket, so that over any stretch
 * longer than a second it moves no more than the rate; a session that was quiet for a second may move one
 * second's worth at once.
 *
 * Per session, not per user: a user with several sessions has the rate in each, as with vsftpd.
 */
export class Pacer {
  readonly #bytesPerMs: number;
  readonly #capacity: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;

  constructor(bytesPerSecond: number, now: () => number = () => performance.now()) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`a rate must be positive (got ${bytesPerSecond})`);
    this.#bytesPerMs = bytesPerSecond / 1000;
    this.#capacity = bytesPerSecond;
    this.#now = now;
    this.#tokens = this.#capacity;
    this.#last = now();
  }

  /** Counts `bytes` that moved; returns how many milliseconds to wait before moving more (0: none). */
  took(bytes: number): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#capacity, this.#tokens + (now - this.#last) * this.#bytesPerMs) - bytes;
    this.#last = now;
    return this.#tokens >= 0 ? 0 : -this.#tokens / this.#bytesPerMs;
  }
}
