/**
 * Which large files this worker has sent lately, so that a file downloaded again is read through the page
 * cache instead of with O_DIRECT.
 *
 * Why: direct reads keep a one-off download (a file just uploaded, a backup pulled once) from filling the
 * page cache, which on the reference VM cost ~2–3 s of system time per GiB. But a direct read never uses
 * the cache either: the same 1 GiB file downloaded by 16 clients would be read from the device 16 times,
 * where every other server reads it once and serves the rest from memory. A file that was sent within the
 * window is likely to be asked for again, so from its second download on it goes through the cache, which
 * the first buffered read fills.
 *
 * Per worker, in memory: a repeated download that lands on another worker is direct once more there, which
 * costs one more device read, not correctness. The key is the file's version (device, inode, size,
 * modification time), so a replaced file starts cold again.
 */

/** A file sent again within this time counts as hot. */
const RECENT_READ_WINDOW_MS = 30 * 60 * 1000;
/** Versions remembered at most; the least recently sent are forgotten first. */
const RECENT_READ_CAPACITY = 4096;

export class RecentReads {
  readonly #windowMs: number;
  readonly #capacity: number;
  readonly #now: () => number;
  /** Version → when it was last sent; Map order is least recently sent first. */
  readonly #lastSent = new Map<string, number>();

  constructor(windowMs = RECENT_READ_WINDOW_MS, capacity = RECENT_READ_CAPACITY, now: () => number = Date.now) {
    this.#windowMs = windowMs;
    this.#capacity = capacity;
    this.#now = now;
  }

  /** Records that `version` is being sent now; true when it was also sent within the window before. */
  note(version: string): boolean {
    const now = this.#now();
    const last = this.#lastSent.get(version);
    this.#lastSent.delete(version);
    this.#lastSent.set(version, now);
    if (this.#lastSent.size > this.#capacity) this.#lastSent.delete(this.#lastSent.keys().next().value!);
    return last !== undefined && now - last <= this.#windowMs;
  }

  /** Versions remembered (for tests). */
  get size(): number {
    return this.#lastSent.size;
  }
}

/** The worker's one tracker, shared by all its sessions. */
export const recentReads = new RecentReads();
