import { randomBytes } from 'node:crypto';
import { constants, type BigIntStats, type Stats } from 'node:fs';
import { lstat, mkdir, open, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, errnoReason, FtsError, type Entry, type PartialEntry, type UploadTag } from '../../protocol/index.js';
import { fsyncDir, mtimeOfBig } from './durable.js';
import { forgetDigest, moveDigest, RECORD_MIN_BYTES, recordedDigest, recordVersion } from './digest-records.js';
import { fsError, notDurable } from './errors.js';
import { isServable, listUserDir, type ListEntry } from './listing.js';
import { withLock, withLocks } from './locks.js';
import { makeSpaceReserve, withSpaceForLock } from './space-reserve.js';
import { digestsRoot, internalDir, locksRoot, partialNamesRoot, resolveName, stagingRoot, userDirPath } from './paths.js';
import { saltKeyPath } from './salt-key.js';
import { discardPartials, listPartials } from './partials.js';
import { makeDirectories } from './private-dir.js';
import { measureUsage, UserQuota, type QuotaHold, type Usage } from './quota.js';
import { Permissions, type Permission, type PermissionSet } from './permissions.js';
import { QuotaLimits } from './quota-limits.js';
import { beginStagedUpload, beginUnsizedStagedUpload, checkUploadRequest, keyOf, stagedOffset, type NewFileCheck, type StagedUpload } from './staging.js';
import { REPEAT_WINDOW_MS } from './same-content.js';

// The upload and listing types are part of the store's surface; they live in their own modules for size.
export { StagedUpload } from './staging.js';
export { sweepStaging } from './staging-sweep.js';
export type { ListEntry } from './listing.js';
export type { Usage } from './quota.js';

/**
 * The most room an unsized upload takes against the quota at a time beyond the bytes it needs now. Its
 * steps double with what it already has (1, 2, 4 … MiB), so a large upload is admitted a few times a
 * second at most, not for every chunk; and what it takes beyond its final size (counted until it ends) is
 * at most this.
 */
const UNSIZED_ROOM_STEP = 16 * 1024 * 1024;

/** A rename that moved a file: its size, and whether it replaced another file (null: the name was already `to`). */
export type RenameOutcome = { size: number; replaced: boolean } | null;

/** An unsized upload begun (UserStore.beginUnsizedUpload). */
export interface UnsizedUpload {
  staged: StagedUpload;
  /** Takes room for `total` bytes against the quota; QUOTA_EXCEEDED when they do not fit. */
  room(total: number): Promise<void>;
}

/** An open published file. The handle pins this version: a later overwrite or delete does not affect it. */
export interface ReadableFile {
  handle: FileHandle;
  size: number;
  /** Integer milliseconds since the epoch. */
  mtime: number;
  /** Names this version of this file (device, inode, size, modification time in ns): a rewrite changes it. */
  version: string;
  /** The SHA-256 recorded when this very version was published (digest-records.ts), or null. */
  recordedDigest(): Promise<string | null>;
  /**
   * Idempotent, and never rejects: the descriptor is read-only, so a failing close loses nothing. That lets
   * a handler close it in the background once everything is read, without awaiting it before its reply.
   */
  close(): Promise<void>;
}

/** The storage root shared by every worker process (and later every node). */
export class Store {
  readonly root: string;
  /** What each user may store (--quota, --max-files, --quota-file); replaced at a reload. */
  #limits: QuotaLimits;
  /** What each user may do (--permissions-file); replaced at a reload. */
  #permissions = new Permissions();
  // One check per user per process: the promise is cached so concurrent first logins share it.
  readonly #users = new Map<string, Promise<UserStore>>();

  /** The largest file a user may upload (--max-file-size); null = no limit. */
  readonly #maxFileSize: number | null;

  constructor(root: string, limits: QuotaLimits = new QuotaLimits(null), maxFileSize: number | null = null) {
    if (!path.isAbsolute(root)) throw new Error(`storage root must be an absolute path, got "${root}"`);
    this.root = path.resolve(root);
    this.#limits = limits;
    this.#maxFileSize = maxFileSize;
  }

  /** New quotas, for sessions open now too (a reload). */
  setLimits(limits: QuotaLimits): void {
    this.#limits = limits;
  }

  /** New permissions, for sessions open now too, from their next request (a reload). */
  setPermissions(permissions: Permissions): void {
    this.#permissions = permissions;
  }

  /** What `user` may do now. */
  permissionsOf(user: string): PermissionSet {
    return this.#permissions.of(user);
  }

  /**
   * Creates the layout and proves the root is writable and fsync-able now, at startup, so that a bad
   * mount is one clear error instead of IO_ERROR on every upload. A full disk (or quota) is not such an
   * error: the server still serves downloads, listings and the deletes that free space, so it starts, and
   * the result says so (`full`) for the caller to warn.
   */
  async init(): Promise<{ full: boolean }> {
    const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        throw new Error(`storage root ${this.root}: ${what} failed: ${errnoReason(err)}`, { cause: err });
      }
    };
    for (const dir of [this.root, internalDir(this.root), stagingRoot(this.root), locksRoot(this.root), digestsRoot(this.root), partialNamesRoot(this.root)]) {
      await step(`creating ${dir}`, () => makeDirectories(dir));
      const st = await step(`checking ${dir}`, () => stat(dir));
      if (!st.isDirectory()) throw new Error(`storage root ${this.root}: ${dir} is not a directory`);
    }
    await makeSpaceReserve(this.root);
    const probe = path.join(internalDir(this.root), `probe-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const handle = await step('creating a probe file (is it writable?)', () =>
        open(probe, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600),
      );
      try {
        await step('writing the probe file', () => handle.write(Buffer.from('fts\n')));
        await step('fsyncing the probe file', () => handle.sync());
      } finally {
        await handle.close().catch(() => undefined);
        await unlink(probe).catch(() => undefined);
      }
      // Uploads stage under staging/ and every publish, delete and rename makes a directory under locks/:
      // a server that cannot would start, then fail each of them with IO_ERROR.
      for (const [dir, what] of [[stagingRoot(this.root), 'staging'], [locksRoot(this.root), 'lock']] as const) {
        // Starting with ".": never taken for a user of the staging or locks tree, should one be left behind.
        const probeDir = path.join(dir, `.probe-${process.pid}-${randomBytes(6).toString('hex')}`);
        await step(`creating a ${what} probe in ${dir} (is it writable?)`, () => mkdir(probeDir, { mode: 0o700 }));
        await rmdir(probeDir).catch(() => undefined);
      }
    } catch (err) {
      if (fsError((err as Error).cause, 'storage root').code === 'NO_SPACE') return { full: true };
      throw err;
    }
    return { full: false };
  }

  /**
   * The store for one (already authenticated) user; creates their directory on first use. The directory is
   * checked at every login, not only the first: one replaced by a symlink later must not be followed.
   */
  async user(user: string): Promise<UserStore> {
    // Every login looks for the storage's key first: on an unmounted storage's empty mount point, a user
    // directory would be made afresh and the session would read and write the wrong file system.
    await requireStorage(this.root);
    let pending = this.#users.get(user);
    if (pending === undefined) {
      pending = this.#openUser(user);
      this.#users.set(user, pending);
      // A failure is not cached: the next login retries (an operator may have fixed the directory).
      pending.catch(() => this.#users.delete(user));
      return pending;
    }
    const store = await pending;
    try {
      await checkUserDir(userDirPath(this.root, user));
      return store;
    } catch {
      // Gone (an operator removed it: made again) or replaced (refused): opened afresh as on first use.
      if (this.#users.get(user) === pending) this.#users.delete(user);
      return this.user(user);
    }
  }

  async #openUser(user: string): Promise<UserStore> {
    const dir = userDirPath(this.root, user);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      // The root itself is gone (an unmounted or removed storage): the server's failure, not the user's
      // "no such file", and said without the path.
      if (errnoOf(err) === 'ENOENT') throw new FtsError('IO_ERROR', 'the storage is unavailable; try again later', {}, { cause: err });
      if (errnoOf(err) !== 'EEXIST') throw fsError(err, 'user directory');
    }
    await checkUserDir(dir);
    const quota = new UserQuota(
      () => ({ bytes: this.#limits.limitFor(user), files: this.#limits.filesFor(user) }),
      async () => {
        // The names only when a file-count quota needs them (quota.ts).
        const names = this.#limits.filesFor(user) === null ? undefined : new Set<string>();
        const { used, files } = await measureUsage(this.root, user, dir, names);
        return { bytes: used, files, ...(names === undefined ? {} : { names }) };
      },
    );
    return new UserStore(this.root, user, dir, quota, () => this.permissionsOf(user), this.#maxFileSize);
  }
}

/** The storage is there: its key (salt-key.ts) exists. IO_ERROR, said without the path, when not. */
async function requireStorage(root: string): Promise<void> {
  try {
    await stat(saltKeyPath(root));
  } catch (err) {
    throw new FtsError('IO_ERROR', 'the storage is unavailable; try again later', {}, { cause: err });
  }
}

/**
 * lstat, not stat: O_NOFOLLOW only guards the last component of a path, so the user directory itself must
 * not be a symlink that leads somewhere else.
 */
async function checkUserDir(dir: string): Promise<void> {
  let st: Stats;
  try {
    st = await lstat(dir);
  } catch (err) {
    throw fsError(err, 'user directory');
  }
  if (!st.isDirectory()) throw new FtsError('IO_ERROR', 'user directory is not a directory');
}

/** lstat of a name that may not exist (null then); other failures are reported against `name`. */
async function lstatOrNull(file: string, name: string): Promise<BigIntStats | null> {
  try {
    return await lstat(file, { bigint: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    throw fsError(err, name);
  }
}

/** One user's view of the storage. Every name goes through resolveName before it touches the fs. */
export class UserStore {
  readonly user: string;
  readonly #root: string;
  readonly #dir: string;
  readonly #quota: UserQuota;
  /** What the user may do now (a reload may change it between two requests). */
  readonly #permissions: () => PermissionSet;
  readonly #maxFileSize: number | null;

  /** Use Store.user(), which checks the directory first. */
  constructor(root: string, user: string, dir: string, quota: UserQuota, permissions: () => PermissionSet, maxFileSize: number | null = null) {
    this.#root = root;
    this.user = user;
    this.#dir = dir;
    this.#quota = quota;
    this.#permissions = permissions;
    this.#maxFileSize = maxFileSize;
  }

  /**
   * FILE_TOO_LARGE when a file of `size` bytes is more than the server accepts (--max-file-size). For an
   * unsized upload `size` is only what had arrived when it passed the limit, not the stream's length.
   */
  #fitsMaxFileSize(name: string, size: number, unsized = false): void {
    const max = this.#maxFileSize;
    if (max !== null && size > max) {
      const what = unsized ? `the stream passed the largest file this server accepts (${max} bytes): stopped after ${size} bytes` : `${size} bytes is more than the largest file this server accepts (${max} bytes)`;
      throw new FtsError('FILE_TOO_LARGE', `${name}: ${what}`, { size, maxFileSize: max });
    }
  }

  /** The absolute path of the user's file `name` (a valid name; for --upload-hook). */
  pathOf(name: string): string {
    return resolveName(this.#dir, name);
  }

  /** The user's permissions now; PERMISSION_DENIED (about `name`) unless they include `needed`. */
  #allowed(needed: Permission, name?: string): PermissionSet {
    const granted = this.#permissions();
    granted.require(needed, this.user, name);
    return granted;
  }

  /**
   * Before an upload of `name` (or the offset asked before it): PERMISSION_DENIED when the user may not
   * upload, or when the name is taken and they may not replace files, unless it may hold exactly these
   * bytes (a repeat whose reply was lost): a file of the same size. Only the size, not the content, is
   * looked at here: hashing here would let any header make the server read a file, and let a user who
   * may not read files test guesses of one without sending a byte. The publish judges the content, under
   * the name's lock, with the permissions of that moment (staging.ts).
   *
   * Returns `name` when a file-count quota applies and the name is free: the upload will add a file (a
   * name taken meanwhile is then counted once too often, until the next measurement); null otherwise.
   */
  async #mayUpload(name: string, size: number | null): Promise<string | null> {
    const granted = this.#allowed('w', name);
    const counting = this.#quota.maxFiles() !== null;
    if (granted.has('o') && !counting) return null;
    const st = await lstatOrNull(resolveName(this.#dir, name), name);
    if (st === null) return counting ? name : null;
    // Taken by a file the upload replaces, or by a directory (which the upload reports as NOT_A_FILE).
    if (granted.has('o') || st.isDirectory()) return null;
    // Only a repeat of the upload that put the file there (same bytes) can still be answered ok at the
    // publish (StagedUpload's #judgePublish): an unsized one's size is not known yet, so only the file's age
    // tells that it cannot be one.
    const repeat = size === null ? Date.now() - Number(st.mtimeMs) <= REPEAT_WINDOW_MS : Number(st.size) === size;
    if (!(st.isFile() && repeat)) granted.require('o', this.user, name);
    return null;
  }

  /**
   * The file-count quota's check at the publish of an upload of `name` that was not counted as adding a
   * file (`newName` null: the name was taken, or no such quota applied, when it started).
   */
  #newFile(name: string, newName: string | null): NewFileCheck {
    return {
      needed: () => newName === null && this.#quota.maxFiles() !== null,
      check: () => this.#quota.admitFile(name),
    };
  }

  /**
   * Starts an unsized upload (§6.1 "Unsized uploads"). Its size is unknown until its trailer, so with a quota
   * its room is admitted while its bytes arrive: `room(total)` before the bytes up to `total` are staged,
   * QUOTA_EXCEEDED once they no longer fit. Room is taken in steps that double (up to UNSIZED_ROOM_STEP), so
   * that the usage is not measured for every chunk; a step that does not fit is cut to the bytes needed, so
   * an upload is refused only for bytes it has.
   */
  async beginUnsizedUpload(name: string): Promise<UnsizedUpload> {
    const newName = await this.#mayUpload(name, null);
    const staged = await beginUnsizedStagedUpload({ root: this.#root, user: this.user, name, permissions: this.#permissions, newFile: this.#newFile(name, newName) });
    // Taken with or without a limit now (admit counts nothing without one): a quota set by a reload while
    // the upload runs applies to the rest of its bytes.
    let granted = 0;
    const hold: QuotaHold = {
      identity: `unsized ${randomBytes(12).toString('hex')}`,
      resume: false,
      newName,
      remaining: () => Math.max(0, granted - staged.stored),
      ended: () => staged.settled,
    };
    const take = async (total: number): Promise<void> => {
      const needed = total - granted;
      const step = Math.max(needed, Math.min(granted, UNSIZED_ROOM_STEP));
      try {
        await this.#quota.admit(step, name, hold);
        granted += step;
      } catch (err) {
        if (!isQuotaExceeded(err) || step === needed) throw err;
        await this.#quota.admit(needed, name, hold);
        granted = total;
      }
    };
    const room = async (total: number): Promise<void> => {
      // Its size is known only at its end: refused once its bytes pass the limit, before they are staged
      // (at every chunk: the room taken ahead, in doubling steps, may reach past the limit).
      this.#fitsMaxFileSize(name, total, true);
      if (total <= granted) return;
      try {
        await take(total);
      } catch (err) {
        if (!isQuotaExceeded(err)) throw err;
        // A measurement taken while this upload's own write ran counts those bytes twice: in its staging
        // file and as still to come (quota.ts counts double rather than miss). Once its writes are done,
        // a new measurement decides.
        await staged.writesDone();
        await take(total);
      }
    };
    // The file it adds is counted from the start: an empty stream takes no room but is a file.
    if (newName !== null) {
      try {
        await this.#quota.admit(0, name, hold);
      } catch (err) {
        await staged.abort();
        throw err;
      }
    }
    return { staged, room };
  }

  /**
   * Starts (offset 0) or resumes (offset > 0) the staged upload with this identity. A resume copies the
   * staged prefix first, calling `copying` after each piece of it. With a quota, the bytes still to send
   * must fit (QUOTA_EXCEEDED otherwise), checked after the request itself (a bad name or offset is
   * reported as such).
   */
  async beginUpload(name: string, size: number, tag: UploadTag, offset = 0, copying?: () => void): Promise<StagedUpload> {
    const newName = await this.#mayUpload(name, size);
    this.#fitsMaxFileSize(name, size);
    const target = { root: this.#root, user: this.user, name, permissions: this.#permissions, newFile: this.#newFile(name, newName) };
    if (!this.#quota.limited()) return beginStagedUpload(target, size, tag, offset, copying);
    checkUploadRequest(target, size, tag, offset);
    let staged: StagedUpload | null = null;
    let failed = false;
    await this.#quota.admit(size - offset, name, {
      identity: keyOf(name, size, tag),
      resume: offset > 0,
      newName,
      remaining: () => size - (staged?.stored ?? offset),
      ended: () => failed || (staged?.settled ?? false),
    });
    try {
      staged = await beginStagedUpload(target, size, tag, offset, copying);
      return staged;
    } catch (err) {
      failed = true;
      throw err;
    }
  }

  /**
   * The durable offset a resume of this upload identity may continue from (0 when nothing is staged). With
   * a quota, the rest of the upload must fit, so that a client learns it before sending the data.
   */
  async stagedOffset(name: string, size: number, tag: UploadTag): Promise<number> {
    const newName = await this.#mayUpload(name, size);
    this.#fitsMaxFileSize(name, size);
    const offset = await stagedOffset({ root: this.#root, user: this.user, name }, size, tag);
    await this.#quota.check(size - offset, keyOf(name, size, tag), offset > 0, name, newName);
    return offset;
  }

  /**
   * Opens a published file for reading. O_NOFOLLOW makes a symlink fail with ELOOP (→ NOT_A_FILE).
   * O_NONBLOCK stops open() of a FIFO from waiting forever for a writer (and pinning a threadpool thread);
   * it has no effect on regular files, which are the only thing we then accept.
   */
  async openRead(name: string): Promise<ReadableFile> {
    this.#allowed('r', name);
    const file = resolveName(this.#dir, name);
    let handle: FileHandle;
    try {
      handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      throw fsError(err, name);
    }
    try {
      // fstat of the open descriptor: the thing we will read, not whatever the name points to now.
      const st = await handle.stat({ bigint: true });
      if (!st.isFile()) throw new FtsError('NOT_A_FILE', `${name}: not a regular file`);
      if (!isServable(st)) throw new FtsError('NOT_A_FILE', `${name}: has other hard links; not served`);
      let closed = false;
      const size = Number(st.size);
      return {
        handle,
        size,
        mtime: mtimeOfBig(st),
        version: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`,
        recordedDigest: () => recordedDigest(this.#root, this.user, name, st),
        close: async () => {
          if (closed) return;
          closed = true;
          await handle.close().catch(() => undefined);
        },
      };
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw fsError(err, name);
    }
  }

  /**
   * Removes a published file, durably, and resolves with the size it had. Under the name's lock, so it
   * waits for a concurrent publish of the same name. unlink never follows a symlink, but we refuse symlinks
   * anyway so a delete means what it says.
   */
  async delete(name: string): Promise<{ size: number }> {
    this.#allowed('d', name);
    const file = resolveName(this.#dir, name);
    // Deletes are what frees a full disk: their lock may use the space reserve (space-reserve.ts).
    return withSpaceForLock(this.#root, (inside) => withLock(this.#root, this.user, name, () => inside(async () => {
      let unlinked = false;
      try {
        const st = await lstat(file);
        if (!st.isFile()) throw new FtsError('NOT_A_FILE', `${name}: not a regular file`);
        // Planted, like a symlink (fts never makes one): refused, as download and view refuse it.
        if (!isServable(st)) throw new FtsError('NOT_A_FILE', `${name}: has other hard links; not deleted`);
        await unlink(file);
        unlinked = true;
        this.#quota.freed(st.size, 1);
        await fsyncDir(this.#dir);
        // Whatever its size now: a small file may have replaced a recorded large one.
        await forgetDigest(this.#root, this.user, name);
        return { size: st.size };
      } catch (err) {
        throw unlinked ? notDurable(err, name, 'deleted') : fsError(err, name);
      }
    })));
  }

  /**
   * Gives the published file `name` the name `to`, durably (the directory is fsynced before it resolves).
   * Under both names' locks, so it waits for concurrent publishes and deletes of either name, and the
   * check that `to` is free cannot race with an upload publishing there (every fts operation that creates
   * or removes a name takes its lock). Node has no renameat2(RENAME_NOREPLACE), and link + unlink would show
   * the file with two links for a moment (refused by downloads then): hence the check under the locks.
   * Only what fts serves is moved or replaced: a symlink, a directory or a file with more hard links,
   * on either side, is NOT_A_FILE and left alone.
   */
  async rename(name: string, to: string, overwrite: boolean): Promise<RenameOutcome> {
    const mayReplace = this.#allowed('m', name).has('o');
    const source = resolveName(this.#dir, name);
    const target = resolveName(this.#dir, to);
    // As a delete, a rename may free space (onto a taken name): its locks may use the space reserve too.
    return withSpaceForLock(this.#root, (inside) => withLocks(this.#root, this.user, [name, to], () => inside(async () => {
      let renamed = false;
      try {
        const st = await lstat(source, { bigint: true });
        if (!st.isFile()) throw new FtsError('NOT_A_FILE', `${name}: not a regular file`);
        if (!isServable(st)) throw new FtsError('NOT_A_FILE', `${name}: has other hard links; not renamed`);
        if (name === to) return null; // as rename(2): the file is already called that
        const found = await lstatOrNull(target, to);
        // The same file under another spelling (a case-insensitive file system): renamed, nothing replaced.
        const replaced = found !== null && !(found.ino === st.ino && found.dev === st.dev) ? found : null;
        if (replaced !== null) {
          // What would never be replaced is reported as such first, so that overwrite is not suggested in vain.
          if (!replaced.isFile()) throw new FtsError('NOT_A_FILE', `${name}: not renamed: ${to} is not a regular file`);
          if (!isServable(replaced)) throw new FtsError('NOT_A_FILE', `${name}: not renamed: ${to} has other hard links`);
          if (!overwrite) throw new FtsError('ALREADY_EXISTS', `${name}: not renamed: ${to} already exists`);
          if (!mayReplace) this.#allowed('o', to);
        }
        let digest = await recordedDigest(this.#root, this.user, name, st);
        // The record may only follow the very version it was checked against: one changed in place meanwhile
        // (by something other than fts) would get a fresh record, with the ctime the rename gives it.
        if (digest !== null && recordVersion(await lstat(source, { bigint: true })) !== recordVersion(st)) digest = null;
        await rename(source, target);
        renamed = true;
        if (replaced !== null) this.#quota.freed(Number(replaced.size), 1);
        await moveDigest(this.#root, this.user, name, to, target, st, digest);
        await fsyncDir(this.#dir);
        return { size: Number(st.size), replaced: replaced !== null };
      } catch (err) {
        throw renamed ? notDurable(err, name, 'renamed') : fsError(err, name);
      }
    })));
  }

  /** The user's partial uploads (PROTOCOL.md §6.10); `ttlMs` is the server's --partial-ttl. */
  async partials(ttlMs: number): Promise<PartialEntry[]> {
    return listPartials(this.#root, this.user, ttlMs);
  }

  /** Removes the partial upload of the identity `key` (PROTOCOL.md §6.10); NOT_FOUND when there is none. */
  async discard(key: string): Promise<{ bytes: number; name: string | null }> {
    const discarded = await discardPartials(this.#root, this.user, key);
    this.#quota.freed(discarded.bytes, 0);
    return discarded;
  }

  /** What the user stores now, measured afresh, and their quota. */
  async usage(): Promise<Usage> {
    return { ...(await measureUsage(this.#root, this.user, this.#dir)), quota: this.#quota.limit(), maxFiles: this.#quota.maxFiles() };
  }

  list(long: true): Promise<Entry[]>;
  list(long: boolean): Promise<ListEntry[]>;
  async list(long: boolean): Promise<ListEntry[]> {
    const granted = this.#allowed('l');
    // A digest confirms a guess of the content, so it is for users who may read the files (as `hash`).
    const digests = granted.has('r') ? { minBytes: RECORD_MIN_BYTES, lookup: (name: string, st: BigIntStats) => recordedDigest(this.#root, this.user, name, st) } : undefined;
    try {
      return await listUserDir(this.#dir, long, digests);
    } catch (err) {
      throw fsError(err, 'list');
    }
  }
}

function isQuotaExceeded(err: unknown): boolean {
  return err instanceof FtsError && err.code === 'QUOTA_EXCEEDED';
}
