import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, FtsError, type StorageUsage } from '../../protocol/index.js';
import { fsError } from './errors.js';
import { mapBounded, STAT_CONCURRENCY } from './listing.js';
import { stagingDir } from './paths.js';

/**
 * Per-user storage quota (--quota): what a user's published files and kept partial uploads may hold
 * together; and the file-count quota (--max-files): how many published files they may have. Both are soft
 * limits, as in SFTPGo and pure-ftpd: an upload is admitted or refused when it starts, against the user's
 * usage plus the bytes the upload still has to send, and plus one file when its name is free then.
 *
 * Why measured and not kept in a shared counter: workers (and nodes behind HAProxy) share the storage, not
 * memory, and a counter file would need a lock on every upload's hot path (and drifts after a crash). Each
 * worker measures a user's usage from the storage (the sizes of their files, as a long listing reads them)
 * when its last measurement is older than REFRESH_MS (or MEASURE_SPACING times what the last one took), and
 * in between adds what its own uploads were admitted for. Uploads running at the same moment on other
 * workers or nodes are seen at the next measurement, so they can together exceed the quota by what they
 * send; the next upload is then refused.
 */

/**
 * A worker measures a user's usage again when its last measurement is older than this. Short, so that
 * what other workers and nodes published or deleted a moment ago counts (one `fts` command after another is
 * always measured afresh: a process takes longer than this to start); not shorter, so that a burst of
 * pipelined uploads measures a few times a second, not once per file.
 */
export const REFRESH_MS = 100;
/**
 * A measurement stats every file of the user: with thousands of files it takes tens of milliseconds of
 * thread-pool and CPU time. The next one waits at least this many times as long, so that measuring takes at
 * most about a tenth of the time of a burst of uploads (measured: into a directory of 1000–2000 files,
 * 1000 pipelined 4 KiB uploads ran at 40–70 % of their speed without a quota when measured every 100 ms).
 */
export const MEASURE_SPACING = 10;

/** What the regular files directly in a directory hold. */
export interface FilesTotal {
  bytes: number;
  files: number;
}

/**
 * The regular files directly in `dir` (none for a missing directory); files gone meanwhile do not count.
 * `names`, when given, receives the names of the files counted.
 */
export async function filesIn(dir: string, only: (name: string) => boolean = () => true, names?: Set<string>): Promise<FilesTotal> {
  let found: string[];
  try {
    found = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isFile() && only(d.name)).map((d) => d.name);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { bytes: 0, files: 0 };
    throw err;
  }
  const sizes = await mapBounded(found, STAT_CONCURRENCY, async (name): Promise<number | null> => {
    try {
      const st = await lstat(path.join(dir, name));
      return st.isFile() ? st.size : null;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null; // deleted since readdir
      throw err;
    }
  });
  let bytes = 0;
  let files = 0;
  sizes.forEach((size, i) => {
    if (size === null) return;
    bytes += size;
    files++;
    names?.add(found[i]!);
  });
  return { bytes, files };
}

/** What a user stores (the `usage` request, §6.8); `used` is what counts against the quota. */
export type Usage = StorageUsage;

/**
 * What a user holds on the storage: their published files and their partial uploads. A failure to read it
 * is the user's I/O error (IO_ERROR & co.), as for a listing.
 *
 * The staging directory is read before the user's directory, not beside it: a publish renames a file from
 * the first to the second, so a file published meanwhile is counted once or twice, never missed. A file
 * renamed within the user's directory during the read may be missed (readdir gives no snapshot): it counts
 * again at the next measurement, as the soft limit allows.
 */
export async function measureUsage(root: string, user: string, dir: string, names?: Set<string>): Promise<Omit<Usage, 'quota' | 'maxFiles'>> {
  try {
    const partial = await filesIn(stagingDir(root, user), (n) => n.endsWith('.part'));
    const published = await filesIn(dir, undefined, names);
    return { used: published.bytes + partial.bytes, files: published.files, partial: partial.bytes };
  } catch (err) {
    throw fsError(err, 'usage');
  }
}

/** An upload admitted against the quota, counted until it ends (its bytes are then on the storage, or gone). */
export interface QuotaHold {
  /** The upload's identity (user, name, size, digest or version). */
  readonly identity: string;
  /**
   * A resume (offset > 0): it takes over the bytes one attempt of its identity staged, so that attempt, if
   * still in flight (a cut connection not yet closed), will write no more, and stops counting.
   */
  readonly resume: boolean;
  /**
   * The name the upload will publish when that name was free at its start: it adds a file. null when it
   * replaces one (or when no file-count quota applies).
   */
  readonly newName: string | null;
  /** The upload's bytes not yet written to its staging file. */
  remaining(): number;
  /** Whether the upload has ended (published, kept for a resume, or discarded). */
  ended(): boolean;
}

/** A user's quotas now: bytes (--quota) and published files (--max-files); null = no limit of that kind. */
export interface QuotaLimit {
  bytes: number | null;
  files: number | null;
}

/** What a measurement finds on the storage: the bytes that count, and the published files. */
export interface Measured {
  bytes: number;
  files: number;
  /**
   * The published files' names, when a file-count quota applies: an upload in flight whose new name is among
   * them (published while the directory was read, or taken by another meanwhile) is not counted again.
   */
  names?: ReadonlySet<string>;
}

/** What a request would add: bytes, and whether a file. */
interface Extra {
  bytes: number;
  file: boolean;
}

/** One user's quota in one worker. */
export class UserQuota {
  readonly #limit: () => QuotaLimit;
  readonly #measure: () => Promise<Measured>;
  readonly #now: () => number;
  /**
   * The user's usage: the last measurement, plus what uploads in flight had not yet written (and the new
   * names they will publish) when it began, plus what was admitted since (minus what this worker deleted);
   * null before the first.
   */
  #used: Measured | null = null;
  #measuredAt = 0;
  /** How old a measurement may be before the next one (REFRESH_MS, or more after a slow measurement). */
  #refreshMs = REFRESH_MS;
  #measuring: Promise<void> | null = null;
  /** Measurements started so far, and the number of the one #used comes from. */
  #started = 0;
  #current = 0;
  /** What was admitted while a measurement runs: the measurement's own snapshot of the holds predates it. */
  #admittedMeanwhile: Measured = { bytes: 0, files: 0 };
  /** The uploads in flight, by identity. */
  readonly #holds = new Map<string, Set<QuotaHold>>();

  /**
   * `limit`: the user's quotas now (they may change at a reload). `measure`: what the user's published
   * files and partial uploads hold on the storage now. `now`: a monotonic clock in ms.
   */
  constructor(limit: () => QuotaLimit, measure: () => Promise<Measured>, now: () => number = () => performance.now()) {
    this.#limit = limit;
    this.#measure = measure;
    this.#now = now;
  }

  /** The user's quota in bytes now; null = none. */
  limit(): number | null {
    return this.#limit().bytes;
  }

  /** The most published files the user may have now; null = no limit. */
  maxFiles(): number | null {
    return this.#limit().files;
  }

  /** Whether any quota applies to the user now. */
  limited(): boolean {
    const limit = this.#limit();
    return limit.bytes !== null || limit.files !== null;
  }

  /** The user's usage in bytes as this worker knows it, measured afresh when stale. */
  async used(): Promise<number> {
    return (await this.#known()).bytes;
  }

  /** The user's published files as this worker knows them, measured afresh when stale. */
  async usedFiles(): Promise<number> {
    return (await this.#known()).files;
  }

  /**
   * Throws QUOTA_EXCEEDED unless an upload of this identity with `bytes` still to send (publishing the new
   * name `newName`, if any) fits; checks only (the `offset` request).
   */
  async check(bytes: number, identity: string, resume: boolean, name: string, newName: string | null = null): Promise<void> {
    if (!this.limited()) return;
    await this.#settle(bytes, identity, resume, newName);
    this.#fits(this.#extra(bytes, identity, resume, newName), name, this.#limit());
  }

  /**
   * Admits an upload that has `bytes` still to send, or throws QUOTA_EXCEEDED. What it adds counts at once,
   * so the next upload on this worker sees it; `hold` keeps what it has not yet written (and the new name
   * it will publish) counted across measurements (what it has written is measured) until the upload ends.
   * A resume replaces the attempt of its identity still in flight whose bytes it takes over (a cut
   * connection not yet closed), so what that one had still to send no longer counts.
   */
  async admit(bytes: number, name: string, hold: QuotaHold): Promise<void> {
    // Without a limit nothing is measured or counted (a limit set by a later reload measures afresh).
    if (!this.limited()) return;
    await this.#settle(bytes, hold.identity, hold.resume, hold.newName);
    // Compared and counted in one turn of the event loop: two uploads admitted at once cannot both take
    // the same room.
    const { taken, replaced } = this.#takeover(hold.identity, hold.resume);
    const extra = { bytes: Math.max(0, bytes - replaced), file: this.#addsFile(hold.newName) };
    this.#fits(extra, name, this.#limit());
    // The attempt taken over goes from `replaced` bytes to come to this one's `bytes` (fewer, even).
    this.#count({ bytes: bytes - replaced, files: extra.file ? 1 : 0 });
    let attempts = this.#holds.get(hold.identity);
    if (attempts === undefined) this.#holds.set(hold.identity, (attempts = new Set()));
    if (taken !== null) attempts.delete(taken);
    attempts.add(hold);
  }

  /**
   * An upload that was not counted as adding a file is about to publish under a free name (the name's file
   * was renamed or deleted while it ran): QUOTA_EXCEEDED unless one more file fits, judged as for a new
   * upload; else the file counts from now.
   */
  async admitFile(name: string): Promise<void> {
    if (this.maxFiles() === null) return;
    await this.#settle(0, `publish ${name}`, false, name);
    const extra = { bytes: 0, file: this.#addsFile(name) };
    this.#fits(extra, name, this.#limit());
    if (extra.file) this.#count({ bytes: 0, files: 1 });
  }

  /** This worker removed `files` published files holding `bytes` (or partial uploads: no file). */
  freed(bytes: number, files: number): void {
    if (this.#used === null) return;
    this.#used.bytes = Math.max(0, this.#used.bytes - bytes);
    this.#used.files = Math.max(0, this.#used.files - files);
  }

  /** What was just admitted counts at once, and across a measurement running now (its snapshot predates it). */
  #count(added: Measured): void {
    for (const to of this.#measuring === null ? [this.#used!] : [this.#used!, this.#admittedMeanwhile]) {
      to.bytes += added.bytes;
      to.files += added.files;
    }
  }

  async #known(): Promise<Measured> {
    if (this.#used === null || this.#now() - this.#measuredAt > this.#refreshMs) await this.#fresh();
    return this.#used!;
  }

  /**
   * What an upload of `identity` with `bytes` to send adds: all of it, unless it is a resume, which takes
   * over what the attempt it continues had still to send (`resume`; the `offset` request asks for a resume
   * when its offset is above 0); and a file when it publishes a new name.
   */
  #extra(bytes: number, identity: string, resume: boolean, newName: string | null): Extra {
    return { bytes: Math.max(0, bytes - this.#takeover(identity, resume).replaced), file: this.#addsFile(newName) };
  }

  /**
   * Whether publishing `newName` adds a file the count does not hold yet: not when another upload in
   * flight counts that name already (two uploads of one new name leave one file).
   */
  #addsFile(newName: string | null): boolean {
    if (newName === null) return false;
    for (const identity of [...this.#holds.keys()]) for (const hold of this.#live(identity)) if (hold.newName === newName) return false;
    return true;
  }

  /**
   * The attempt in flight a resume of `identity` takes over, and what it had still to write: the one with
   * the most bytes staged (the fewest to come), as the staging copies the longest partial file. The other
   * attempts keep writing their own copies, and keep counting. Nothing for an upload that is no resume.
   */
  #takeover(identity: string, resume: boolean): { taken: QuotaHold | null; replaced: number } {
    let taken: QuotaHold | null = null;
    if (resume) for (const hold of this.#live(identity)) if (taken === null || hold.remaining() < taken.remaining()) taken = hold;
    return { taken, replaced: taken === null ? 0 : Math.max(0, taken.remaining()) };
  }

  /** The attempts of `identity` in flight; ended ones are forgotten. */
  #live(identity: string): Set<QuotaHold> {
    const attempts = this.#holds.get(identity) ?? new Set<QuotaHold>();
    for (const hold of attempts) if (hold.ended()) attempts.delete(hold);
    if (attempts.size === 0) this.#holds.delete(identity);
    return attempts;
  }

  /**
   * Makes the usage current enough to decide. A refusal is never decided on a measurement that began
   * before the request: a file deleted through another worker a moment ago must not refuse the upload that
   * follows it. (A refused request therefore costs a measurement, as a long listing costs a stat per file.)
   */
  async #settle(bytes: number, identity: string, resume: boolean, newName: string | null): Promise<void> {
    const before = this.#started;
    await this.#known();
    // At most twice: a measurement already running when the request came is joined, then a new one runs.
    while (this.#over(this.#extra(bytes, identity, resume, newName), this.#limit()) !== null && this.#current <= before) await this.#fresh();
  }

  /** Measures now, or joins the measurement that is running. */
  async #fresh(): Promise<void> {
    this.#measuring ??= this.#remeasure().finally(() => (this.#measuring = null));
    await this.#measuring;
  }

  /** `limit` read again after the waits: a reload meanwhile may have changed (or lifted) it. */
  #fits(extra: Extra, name: string, limit: QuotaLimit): void {
    const over = this.#over(extra, limit);
    if (over !== null) throw over(name);
  }

  /** The refusal of a request adding `extra`, or null when it fits. */
  #over(extra: Extra, limit: QuotaLimit): ((name: string) => FtsError) | null {
    const used = this.#used!;
    // A request that adds nothing (a staged upload to publish, a takeover) is never refused.
    if (limit.bytes !== null && extra.bytes > 0 && used.bytes + extra.bytes > limit.bytes) {
      const quota = limit.bytes;
      return (name) => exceeded(name, extra.bytes, used.bytes, quota);
    }
    if (limit.files !== null && extra.file && used.files + 1 > limit.files) {
      const maxFiles = limit.files;
      return (name) => tooManyFiles(name, used.files, maxFiles);
    }
    return null;
  }

  async #remeasure(): Promise<void> {
    const number = ++this.#started;
    const at = this.#now();
    // What the uploads in flight have still to write, and the new names they will publish, taken before
    // the storage is read: what they write or publish meanwhile may be counted twice (until the next
    // measurement), never missed.
    let coming = 0;
    const names = new Set<string>();
    for (const identity of [...this.#holds.keys()]) {
      for (const hold of this.#live(identity)) {
        coming += Math.max(0, hold.remaining());
        if (hold.newName !== null) names.add(hold.newName);
      }
    }
    this.#admittedMeanwhile = { bytes: 0, files: 0 };
    const stored = await this.#measure();
    let newNames = 0;
    for (const name of names) if (stored.names?.has(name) !== true) newNames++;
    this.#used = { bytes: stored.bytes + coming + this.#admittedMeanwhile.bytes, files: stored.files + newNames + this.#admittedMeanwhile.files };
    this.#current = number;
    this.#measuredAt = at;
    this.#refreshMs = Math.max(REFRESH_MS, MEASURE_SPACING * (this.#now() - at));
  }
}

function exceeded(name: string, bytes: number, used: number, limit: number): FtsError {
  const left = Math.max(0, limit - used);
  return new FtsError('QUOTA_EXCEEDED', `${name}: ${bytes} more bytes would exceed your quota: ${used} of ${limit} bytes used, ${left} left`, { used, quota: limit });
}

function tooManyFiles(name: string, files: number, maxFiles: number): FtsError {
  return new FtsError('QUOTA_EXCEEDED', `${name}: a new file would exceed your file quota: ${files} of ${maxFiles} files`, { files, maxFiles });
}
