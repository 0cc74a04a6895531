import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { lstat, mkdir, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { DirectWriter } from '../../protocol/direct-writer.js';
import { errnoOf, FtsError, MAX_FILE_SIZE, SHA256_PATTERN, type UploadTag } from '../../protocol/index.js';
import { fsyncDir, fsyncFile, mtimeOfBig } from './durable.js';
import { recordDigest, recordedDigest } from './digest-records.js';
import { fsError, notDurable } from './errors.js';
import { withLock } from './locks.js';
import { stagingDir } from './paths.js';
import { forgetPartialNameIfUnused, recordPartialName } from './partial-names.js';
import type { PermissionSet } from './permissions.js';
import { holdsContent } from './same-content.js';
import { openStagingFile, stagedOffset, type StagingFile, type StagingTarget } from './staging-begin.js';
import { keyOf } from './staging-keys.js';
import { SMALL_PARTIAL_BYTES } from './staging-sweep.js';
import { StagedWrites } from './staging-writes.js';

export { checkUploadRequest, stagedOffset, type StagingTarget } from './staging-begin.js';
export { keyOf, stagingKey, streamedStagingKey } from './staging-keys.js';
export { spareWriteBatchBytes } from './staging-writes.js';

/**
 * Partial uploads live in <root>/.fts/staging/<user>/, so nothing partial is ever visible in the user's
 * directory. A staged file becomes public only by one rename, under the name's lock.
 *
 * Every upload attempt writes its own staging file, `<key>.<random>.part`, where the key is derived from
 * the upload's identity (name, size, SHA-256 of the whole file). No two writers ever share a file, so a
 * stale writer on a half-open connection, or a client that sends other bytes than it declared, can only
 * spoil its own file. A resume finds the identity's partial files by key (on any connection, worker,
 * restart or node sharing the storage), copies the durable prefix into its own new file while hashing it,
 * and removes the old one; a file that changed locally has another identity, so old and new bytes are
 * never spliced. The whole-file digest is checked before publishing either way.
 *
 * A streamed upload (its digest arrives in a trailer after the data) is identified by the client's
 * version tag of its local file instead of the digest: a rerun of the same local file has the same tag and
 * continues, a changed local file has another and starts from 0. The digest in the trailer is checked
 * against everything staged, copied prefix included, exactly as for the other uploads.
 */

/** How often a long upload checks that its staging file is still there (#checkStillStaged). */
const STAGED_CHECK_MS = 1000;

/** touch() sets the times at most this often: far below the sweep's shortest age (10 minutes). */
const TOUCH_MS = 1000;

/** An upload's target, with what its user may do now (judged again at the publish). */
export interface UploadTarget extends StagingTarget {
  permissions: () => PermissionSet;
  /** The file-count quota's say at the publish (store.ts); none when no such quota can apply. */
  newFile?: NewFileCheck;
}

/**
 * An upload that was not counted as adding a file when it started (its name was taken then) adds one all the
 * same if the name is free when it publishes (the file was renamed or deleted meanwhile): judged then, under
 * the name's lock, so that no sequence of uploads and renames gets past the file-count quota.
 */
export interface NewFileCheck {
  /** Whether the publish must judge: a file-count quota applies now, and the upload was not counted. */
  needed(): boolean;
  /** QUOTA_EXCEEDED when one more file does not fit. */
  check(): Promise<void>;
}

/**
 * Whether a lookup of the staging path (`named`, as #lookUpStaged gives it) may still name the file `file`:
 * only a name that is gone (null), or that names another file, says no; a lookup that failed otherwise
 * (undefined) says nothing. Both the writes' check and the commit's judge "taken over" by this one rule: a
 * looser one published a short file (session 24).
 */
function mayStillName(named: BigIntStats | null | undefined, file: BigIntStats): boolean {
  return named === undefined || (named !== null && named.ino === file.ino && named.dev === file.dev);
}

type State = 'open' | 'committing' | 'committed' | 'released' | 'aborted';

export class StagedUpload {
  readonly name: string;
  /** The declared size; for an unsized upload MAX_FILE_SIZE until its trailer says (expect). */
  #size: number;
  /** An unsized upload (§6.1 "Unsized uploads"): no identity a client could resume, so nothing is kept. */
  readonly #unsized: boolean;
  readonly #root: string;
  readonly #user: string;
  readonly #target: string;
  readonly #stagingPath: string;
  /** The declared SHA-256; null until a streamed upload's trailer brings it. */
  #expected: Buffer | null;
  /** The upload's identity (with name and size), to find where a resume of it stands. */
  readonly #tag: UploadTag;
  #handle: FileHandle | undefined;
  /** Writes the batches (through #handle, and with O_DIRECT where it can). */
  readonly #writer: DirectWriter;
  /** What was received: counted, hashed, and gathered into the writes of #writer. */
  readonly #writes: StagedWrites;
  #state: State = 'open';
  #aborting: Promise<void> | undefined;
  /** Set once the staging file is found gone: later bytes are hashed and counted, not written. */
  #orphaned = false;
  /** When touch() last set the staging file's times (from the upload's start, when it was created). */
  #touchedAt = Date.now();
  /** When this upload began (#publishedWith). */
  readonly #startedAt = Date.now();
  /** When #checkStillStaged last looked (it starts counting from the upload's start). */
  #stagedCheckedAt = this.#startedAt;
  /** A name record (partial-names.ts) may exist for this identity: one to remove once no partial is left. */
  readonly #named: boolean;
  /** What the user may do now: a reload during the upload applies to its publish. */
  readonly #permissions: () => PermissionSet;
  readonly #newFile: NewFileCheck | undefined;

  /** Use beginStagedUpload(); the constructor only assembles already-validated parts. */
  constructor(t: UploadTarget & StagingFile & { size: number; tag: UploadTag; offset: number; unsized: boolean }) {
    this.name = t.name;
    this.#size = t.size;
    this.#unsized = t.unsized;
    this.#root = t.root;
    this.#user = t.user;
    this.#target = t.target;
    this.#stagingPath = t.stagingPath;
    this.#handle = t.handle;
    this.#writer = t.writer;
    this.#expected = 'sha256' in t.tag ? Buffer.from(t.tag.sha256, 'hex') : null;
    this.#tag = t.tag;
    this.#named = !t.unsized && (t.size >= SMALL_PARTIAL_BYTES || t.offset > 0);
    this.#permissions = t.permissions;
    this.#newFile = t.newFile;
    this.#writes = new StagedWrites(
      {
        name: this.name,
        size: () => this.#size,
        open: () => this.#state === 'open',
        orphaned: () => this.#orphaned,
        checkStillStaged: () => this.#checkStillStaged(),
        release: () => this.release(),
      },
      t.writer,
      t.hash,
      t.offset,
    );
  }

  get size(): number {
    return this.#size;
  }

  /**
   * Sets the staging file's times to now, at most once per TOUCH_MS: an upload whose client says it is alive
   * while its source is silent (an unsized upload's keep-alives) is not taken by the sweep for one abandoned
   * (sweepStaging judges by the file's mtime). Never throws; nothing to do once the upload has ended.
   */
  touch(): void {
    const now = Date.now();
    if (now - this.#touchedAt < TOUCH_MS || this.#state !== 'open' || this.#handle === undefined) return;
    this.#touchedAt = now;
    const when = new Date(now);
    void this.#handle.utimes(when, when).catch(() => undefined);
  }

  /**
   * Sets the digest of a streamed upload, from its trailer (before commit), and an unsized upload's size:
   * the commit then checks that exactly that many bytes arrived.
   */
  expect(sha256: string, size?: number): void {
    if (!SHA256_PATTERN.test(sha256)) throw new FtsError('BAD_REQUEST', '"sha256" must be 64 lowercase hex digits');
    if (this.#unsized !== (size !== undefined)) throw new Error('StagedUpload.expect: a size comes with an unsized upload, and only with one');
    if (size !== undefined) this.#size = size;
    const digest = Buffer.from(sha256, 'hex');
    if (this.#expected !== null && !this.#expected.equals(digest)) throw new Error('StagedUpload.expect: the digest is already set');
    this.#expected = digest;
  }

  /**
   * Whether the upload has ended (published, kept for a resume, or discarded) and holds nothing in memory
   * any more: what it gathered is written (or dropped), so its staging file shows all it will ever hold.
   */
  get settled(): boolean {
    return this.#state !== 'open' && this.#state !== 'committing' && this.#writes.idle;
  }

  /** Bytes from offset 0 that are in the staging file (their write has completed). */
  get stored(): number {
    return this.#writes.stored;
  }

  /** Bytes received so far (from offset 0), including any beyond `size` (counted but never written). */
  get received(): number {
    return this.#writes.received;
  }

  /**
   * Appends a chunk (StagedWrites.write says how chunks are gathered and written, and when the returned
   * promise waits: the connection's backpressure). `written` is called once the chunk's memory is no
   * longer needed (written, or dropped because the upload failed). The caller must not reuse `chunk`'s
   * memory before `written` is called, and must not call write() again before the previous call resolved.
   * A failed write releases the upload (the bytes staged so far stay, for a resume) and its error is thrown
   * by this or a later call.
   */
  write(chunk: Buffer, written: () => void = () => {}): Promise<void> {
    if (this.#state !== 'open' || this.#handle === undefined) return this.#refuseWrite(written);
    // Its own promise, not awaited: a write() that need not wait for the disk settles as soon as it did
    // (store.test.ts counts the turns).
    return this.#writes.write(chunk, written);
  }

  /** write() once the upload has ended: async, so that it fails by rejecting, whatever `written` does. */
  async #refuseWrite(written: () => void): Promise<void> {
    written();
    throw new Error(`StagedUpload.write after ${this.#state}`);
  }

  /**
   * At most once per STAGED_CHECK_MS of writing: notices that the staging file is gone from its name (the
   * user discarded it, a resume took it over, the sweep removed it; looked up by path, since an NFS client
   * keeps a file open on the same node linked under another name). Later bytes are then not written: they
   * would go, up to the upload's whole size, into a file no one can see, which neither the quota nor the
   * disk-usage figures count. The data is still read and hashed, and the commit answers as for any upload
   * whose file was taken over (OFFSET_MISMATCH with where the identity stands then, or ok when the upload
   * that took it over published this very file).
   */
  async #checkStillStaged(): Promise<void> {
    const now = Date.now();
    if (now - this.#stagedCheckedAt < STAGED_CHECK_MS || this.#handle === undefined || this.#orphaned) return;
    this.#stagedCheckedAt = now;
    // Only a name that is gone (or names another file) says the file was taken: any other failure of the
    // lookup (a directory briefly unsearchable, EIO or a timeout on NFS) says nothing, and is looked at again
    // later. Taken as "gone", it stopped the writes of an upload whose file was still there.
    const [open, named] = await Promise.all([this.#handle.stat({ bigint: true }), this.#lookUpStaged()]);
    if (!mayStillName(named, open)) this.#orphaned = true;
  }

  /**
   * Waits until no write runs (what is gathered for the next one stays gathered): the staging file then
   * holds exactly `stored` bytes. Never throws (a failed write is reported by the next write or commit).
   */
  writesDone(): Promise<void> {
    return this.#writes.writesDone();
  }

  /**
   * fsyncs what has been written and returns the offset a resume may continue from. Only offsets that
   * are on stable storage are ever reported to a client.
   */
  async durableOffset(): Promise<number> {
    const handle = this.#handle;
    if (handle === undefined) throw new Error('StagedUpload.durableOffset needs an open upload');
    await this.#writes.flush();
    try {
      await this.#writer.settle();
      await handle.sync();
      // The file's own name too: a crash must not lose a staging file whose offset we reported.
      await fsyncDir(path.dirname(this.#stagingPath));
    } catch (err) {
      throw fsError(err, this.name);
    }
    // Once orphaned, what arrived is no longer what the file holds.
    return Math.min(this.#orphaned ? this.#writes.stored : this.#writes.received, this.size);
  }

  /**
   * Publishes the file if exactly `size` bytes with the declared SHA-256 were received. Order: fsync the
   * data, close, then under the name's lock rename into place and fsync the directory, so that "ok" means
   * both data and name are on stable storage. Any failure removes the staging file. `published`: this
   * upload put its file under the name (not one already there, nor another upload's of the same bytes).
   */
  async commit(): Promise<{ mtime: number; published: boolean }> {
    if (this.#state !== 'open') throw new Error(`StagedUpload.commit after ${this.#state}`);
    const handle = this.#handle;
    if (handle === undefined) throw new Error('StagedUpload has no open file');
    await this.#writes.flush();
    if (this.#writes.received !== this.size) {
      await this.abort();
      throw new FtsError('CHECKSUM_MISMATCH', `${this.name}: received ${this.#writes.received} bytes, expected ${this.size}`);
    }
    const expected = this.#expected;
    if (expected === null) throw new Error('StagedUpload.commit before the digest is known');
    const actual = this.#writes.digest();
    if (!timingSafeEqual(actual, expected)) {
      await this.abort();
      throw new FtsError('CHECKSUM_MISMATCH', `${this.name}: SHA-256 of the received bytes does not match`);
    }
    this.#state = 'committing';
    /** The staged bytes are verified and on stable storage, and the file is closed. */
    let durable = false;
    let renamed = false;
    /** The file holds fewer bytes than were received (see below). */
    let short = false;
    try {
      // The mtime the reply reports is this file's own (fstat of our descriptor: no racing successor's),
      // read while the fsync runs; the fsync does not change it and nothing writes to the file any more.
      await this.#writer.settle();
      const [, stats] = await Promise.all([handle.sync(), handle.stat({ bigint: true }), this.#writer.closeDirect()]);
      this.#handle = undefined;
      await handle.close();
      durable = true;
      // The digest covers the bytes received, not the bytes stored: our file must hold all of them (an
      // upload that took its file for taken over stopped writing it). A short file is never renamed into
      // place. Still under its name, it holds a true prefix, kept for a resume from where it ends; gone (or
      // another file under its name), it was taken over indeed, answered as such under the lock below.
      const whole = stats.size === BigInt(this.size);
      if (!whole && (await this.#mayStillBeStaged(stats))) {
        short = true;
        const stored = `${this.name}: only ${stats.size} of the ${this.size} bytes received were stored`;
        // An unsized upload cannot be continued (its source may be a pipe): nothing of it is kept.
        if (this.#unsized) throw new FtsError('IO_ERROR', `${stored}; upload it again`);
        throw new FtsError('OFFSET_MISMATCH', `${stored}; continue from offset ${stats.size}`, { offset: Number(stats.size) });
      }
      /** Set when the upload that took our file over has already published this very file (see below). */
      let publishedByOther: BigIntStats | null = null;
      /** Set when the name already holds exactly these bytes, for a user who may not replace files. */
      let alreadyThere: BigIntStats | null = null;
      await withLock(this.#root, this.#user, this.name, async () => {
        if (!whole) {
          publishedByOther = await this.#takenOver(expected);
          return;
        }
        // Under the lock, so no publish or rename can take the name between this look and our rename.
        alreadyThere = await this.#judgePublish(expected.toString('hex'));
        if (alreadyThere !== null) {
          // "ok" means on stable storage (§6.1), also for the file an earlier attempt published.
          await fsyncFile(this.#target);
          await fsyncDir(path.dirname(this.#target));
          return;
        }
        try {
          await rename(this.#stagingPath, this.#target);
        } catch (err) {
          if (errnoOf(err) !== 'ENOENT') throw err;
          if (!(await exists(this.#stagingPath))) {
            publishedByOther = await this.#takenOver(expected);
            return;
          }
          // The user's directory is gone (an operator removed it while the server ran): made again, as
          // at a first login.
          await mkdir(path.dirname(this.#target), { mode: 0o700 }).catch((mkdirErr: unknown) => {
            if (errnoOf(mkdirErr) !== 'EEXIST') throw mkdirErr;
          });
          await rename(this.#stagingPath, this.#target);
        }
        renamed = true;
        await fsyncDir(path.dirname(this.#target));
        await recordDigest(this.#root, this.#user, this.name, this.#target, stats, expected.toString('hex'));
      });
      if (alreadyThere !== null) {
        // Nothing to publish: the staged copy goes, and the answer is the file in place (§3.2 rule 4).
        await this.abort();
        await this.#forgetName(await this.#removeOtherAttempts());
        return { mtime: mtimeOfBig(alreadyThere), published: false };
      }
      this.#state = 'committed';
      await this.#forgetName(await this.#removeOtherAttempts());
      return { mtime: mtimeOfBig(publishedByOther ?? stats), published: publishedByOther === null };
    } catch (err) {
      // Refused because the name was taken meanwhile (or, by the file-count quota, freed meanwhile), or
      // because something that is not a file holds it: no retry could publish these bytes as they stand,
      // so nothing is kept.
      const code = err instanceof FtsError ? err.code : fsError(err, this.name).code;
      const refused = code === 'PERMISSION_DENIED' || code === 'QUOTA_EXCEEDED' || code === 'NOT_A_FILE';
      // On a full disk a small file's bytes are not worth the inode they hold (fts sends small files again
      // rather than resume them), and each retry would keep one more: as for a small upload's write error.
      const notWorthKeeping = code === 'NO_SPACE' && this.size < SMALL_PARTIAL_BYTES;
      if (durable && !renamed && !refused && !notWorthKeeping && !this.#unsized) {
        // Verified, durable bytes that could not be published (LOCKED after waiting for the name's lock, a
        // failed rename): kept like a cut upload, so a retry resumes at offset = size instead of resending.
        this.#state = 'released';
        await this.#recordName();
      } else if (durable && !renamed && !refused && !short && !notWorthKeeping && (await this.#keepAsOrdinary(expected.toString('hex')))) {
        // An unsized upload's, kept too: its source may not be readable again (a pipe). The error says so.
        const failed = fsError(err, this.name);
        throw new FtsError(failed.code, `${failed.message}; its bytes are kept: publish them with an upload of this size and sha256 at offset ${this.#size}`, { ...failed.details, offset: this.#size }, { cause: err });
      } else {
        // Not known to be durable, or already renamed (the unlink in abort() then finds nothing).
        await this.abort();
      }
      // Renamed, and then the directory fsync failed: the file is in place but we cannot promise it is
      // durable. The client gets an error, whose message says the file was published.
      throw renamed ? notDurable(err, this.name, 'published') : fsError(err, this.name);
    }
  }

  /**
   * Our staging file is no longer under its name: a resume of this identity took it over (copied its
   * prefix and removed it), the same file uploaded again meanwhile on another connection; or the user
   * discarded it, or the sweep removed it. If that upload has published it already (its digest record,
   * written after the rename and the directory fsync, names our digest for the very file under the name),
   * the name durably holds what we were asked to publish: that is our answer (its stats), without the
   * client sending it again. Otherwise OFFSET_MISMATCH with where that upload now stands (0 once it is
   * published), so that the client sends the rest from there (or the whole file again) rather than fail.
   * An unsized upload, which no resume can take over, was discarded or swept: IO_ERROR.
   */
  async #takenOver(expected: Buffer): Promise<BigIntStats> {
    if (this.#unsized) throw new FtsError('IO_ERROR', `${this.name}: this upload's staged bytes were discarded while it ran; upload it again`);
    const published = await this.#publishedWith(expected);
    if (published !== null) return published;
    const offset = await stagedOffset({ root: this.#root, user: this.#user, name: this.name }, this.size, this.#tag).catch(() => 0);
    throw new FtsError('OFFSET_MISMATCH', `${this.name}: this upload's staged bytes were taken over by another upload of the same file; continue from offset ${offset}`, { offset });
  }

  /**
   * Whether the staging path may still name the file this upload wrote (`stats`): only a name that is gone,
   * or that names another file, says no.
   */
  async #mayStillBeStaged(stats: BigIntStats): Promise<boolean> {
    return mayStillName(await this.#lookUpStaged(), stats);
  }

  /** What the staging path names now: null once the name is gone; undefined if the lookup failed otherwise. */
  #lookUpStaged(): Promise<BigIntStats | null | undefined> {
    return lstat(this.#stagingPath, { bigint: true }).catch((err: unknown) => (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ESTALE' ? null : undefined));
  }

  /**
   * An unsized upload's verified, durable bytes that could not be published: kept as the partial upload of
   * an ordinary upload of them (name, and the size and sha256 of its trailer; §6.1 "Unsized uploads"), which
   * its client can publish without sending them again. False, with nothing kept, if they could not be moved.
   */
  async #keepAsOrdinary(sha256: string): Promise<boolean> {
    this.#state = 'released';
    const tag: UploadTag = { sha256 };
    const dir = path.dirname(this.#stagingPath);
    const kept = path.join(dir, `${keyOf(this.name, this.#size, tag)}.${randomBytes(12).toString('hex')}.part`);
    try {
      await rename(this.#stagingPath, kept);
    } catch {
      return false; // the caller's abort() removes it
    }
    try {
      await fsyncDir(dir);
      await recordPartialName(this.#root, this.#user, { name: this.name, size: this.#size, tag });
      return true;
    } catch {
      // Not known to be durable under its new name: offered to nobody.
      await unlink(kept).catch(() => undefined);
      return false;
    }
  }

  /**
   * The user's permissions at the publish (a reload may have narrowed them since the upload began):
   * PERMISSION_DENIED without "w", or when the name is taken and they may not replace files ("o"), unless
   * it already holds exactly these bytes: then that file (nothing to publish). A directory under the name is
   * left to the rename, which reports NOT_A_FILE. A free name may still be refused by the file-count quota
   * (NewFileCheck).
   */
  async #judgePublish(sha256: string): Promise<BigIntStats | null> {
    const granted = this.#permissions();
    granted.require('w', this.#user, this.name);
    const counting = this.#newFile?.needed() ?? false;
    if (granted.has('o') && !counting) return null;
    let st: BigIntStats;
    try {
      st = await lstat(this.#target, { bigint: true });
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err; // not known to be free: nothing is replaced
      if (counting) await this.#newFile!.check();
      return null;
    }
    if (granted.has('o') || st.isDirectory()) return null;
    if (await holdsContent(this.#root, this.#user, this.name, this.#target, st, this.size, sha256)) return st;
    granted.require('o', this.#user, this.name);
    return null;
  }

  /**
   * The file under the name, when the attempt that took this upload over published `digest`'s bytes there:
   * by its recorded digest, or (a small, recent file) hashed. Only a file written since this upload began
   * can be that attempt's (it began after this one): an older file holding the same bytes would otherwise
   * answer a user who may not read files whether a guess of its content is right (they can discard their
   * own upload mid-way to get here). A second of slack covers the file system's coarser clock.
   */
  async #publishedWith(digest: Buffer): Promise<BigIntStats | null> {
    const st = await lstat(this.#target, { bigint: true }).catch(() => null);
    if (st === null || !st.isFile()) return null;
    if (Number(st.mtimeMs) < this.#startedAt - 1000) return null;
    const hex = digest.toString('hex');
    if ((await recordedDigest(this.#root, this.#user, this.name, st)) === hex) return st;
    // A small file has no record: read and hashed (a large one without a record is not, as holdsContent says).
    // A file that cannot be read is not known to hold them: the upload is answered as taken over.
    const same = await holdsContent(this.#root, this.#user, this.name, this.#target, st, this.size, hex).catch(() => false);
    return same ? st : null;
  }

  /**
   * Closes the staging file but keeps it, so the upload can be resumed (dropped connection, kick, drain
   * deadline). The partial-upload TTL sweep removes it if nobody comes back. An unsized upload, which cannot
 * be resumed, is removed instead. Idempotent, never throws.
   */
  async release(): Promise<void> {
    if (this.#state !== 'open' && this.#state !== 'committing') return;
    if (this.#unsized) return this.abort();
    this.#state = 'released';
    // What was received is written before the file is kept for a resume (and writes in flight must end
    // before their descriptor is closed under them).
    await this.#writes.writesDone();
    if (!this.#writes.failed) this.#writes.dispatch();
    else this.#writes.discard();
    await this.#writes.writesDone();
    await this.#writer.closeDirect();
    // A failed background sync: the bytes may not be on disk, so they cannot be offered for a resume.
    if (this.#writer.failed) return this.abort();
    // A failed write (a full disk, mostly): what made it to the file is kept only if it is worth a resume.
    // Less than SMALL_PARTIAL_BYTES costs little to send again, and on a full disk every kept partial (empty
    // ones included: the write that failed may have been the first) holds space other uploads need.
    if (this.#writes.failed && (await this.#fileSize()) < SMALL_PARTIAL_BYTES) return this.abort();
    // Not a byte to continue from (cut before any of a non-empty file's data arrived): a resume starts at
    // 0 anyway, and keeping the empty file would only hold an inode until the sweep.
    if (this.#writes.received === 0 && this.size > 0) return this.abort();
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close().catch(() => undefined);
    // Kept: named, so that the user can tell which upload it is (partials) and discard it.
    await this.#recordName();
  }

  /**
   * Notes the identity of the kept staging file (partial-names.ts), unless it is gone: discarded, or taken
   * over by a resume, meanwhile (a record without a partial file is only swept, later).
   */
  async #recordName(): Promise<void> {
    if (await exists(this.#stagingPath)) await recordPartialName(this.#root, this.#user, { name: this.name, size: this.size, tag: this.#tag });
  }

  /** Removes the identity's name record if this was its last partial file (`others`: other attempts' files were removed). */
  async #forgetName(others = false): Promise<void> {
    if (this.#named || others) await forgetPartialNameIfUnused(this.#root, this.#user, { name: this.name, size: this.size, tag: this.#tag });
  }

  /**
   * Once this identity is published (or found in place), removes the partial files other attempts at it
   * left: a client that began again from offset 0 instead of resuming, an attempt cut on another
   * connection. They can no longer be of use, and until the sweep they would count against the user's
   * quota and show in `partials` (PROTOCOL.md §6.10). An attempt still writing one notices and ends as a
   * taken-over upload, whose commit finds the file published. Not fsynced: one that a crash brings back
   * is swept. An unsized upload has no identity an attempt could share. Returns whether any was removed.
   */
  async #removeOtherAttempts(): Promise<boolean> {
    if (this.#unsized) return false;
    const dir = stagingDir(this.#root, this.#user);
    const prefix = `${keyOf(this.name, this.size, this.#tag)}.`;
    const names = await readdir(dir).catch(() => [] as string[]);
    let removed = false;
    for (const n of names) {
      if (!n.startsWith(prefix) || !n.endsWith('.part')) continue;
      try {
        await unlink(path.join(dir, n));
        removed = true;
      } catch {
        // Removed meanwhile (by another publish, a discard or the sweep).
      }
    }
    return removed;
  }

  /** The staging file's size now; 0 if it cannot be read. */
  async #fileSize(): Promise<number> {
    try {
      return (await this.#handle?.stat())?.size ?? 0;
    } catch {
      return 0;
    }
  }

  /** Closes and removes the staging file (its content is known bad). Idempotent, never throws. */
  abort(): Promise<void> {
    if (this.#state === 'committed') return Promise.resolve();
    this.#aborting ??= this.#doAbort();
    return this.#aborting;
  }

  async #doAbort(): Promise<void> {
    this.#state = 'aborted';
    this.#writes.discard();
    await this.#writes.writesDone();
    await this.#writer.closeDirect();
    const handle = this.#handle;
    this.#handle = undefined;
    try {
      await handle?.close();
    } catch {
      // Closing can only fail on a bad descriptor; the unlink below is what matters.
    }
    try {
      await unlink(this.#stagingPath);
    } catch {
      // ENOENT: already gone. Anything else: the staging sweep removes it later.
    }
    await this.#forgetName();
  }
}

/**
 * Starts an upload attempt: validates the request and creates the attempt's own staging file, continuing
 * the identity's partial upload when `offset` > 0 (openStagingFile says how, and what `copying` may do).
 */
export async function beginStagedUpload(t: UploadTarget, size: number, tag: UploadTag, offset = 0, copying: () => void = () => {}, unsized = false): Promise<StagedUpload> {
  const staged = await openStagingFile(t, size, tag, offset, copying, unsized);
  return new StagedUpload({ ...t, ...staged, size, tag, offset, unsized });
}

/**
 * Creates the staging file of an unsized upload (§6.1 "Unsized uploads"): an identity of its own, which no
 * client knows (so none can resume it or be taken over by it), and no name record; its size comes with its
 * trailer (StagedUpload.expect). What it stages is removed unless it is published.
 */
export function beginUnsizedStagedUpload(t: UploadTarget): Promise<StagedUpload> {
  return beginStagedUpload(t, MAX_FILE_SIZE, { version: randomBytes(32).toString('hex') }, 0, undefined, true);
}

async function exists(file: string): Promise<boolean> {
  return lstat(file).then(
    () => true,
    () => false,
  );
}
