import fs, { type Dirent } from 'node:fs';
import { lstat, mkdir, rmdir } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { errnoOf, FtsError } from '../../protocol/index.js';
import { entriesOrNone } from './dir-entries.js';
import { fsError } from './errors.js';
import { inPrivateDir } from './private-dir.js';
import { locksRoot, lockTarget, resolveName, userDirPath } from './paths.js';

/**
 * The one wrapper around proper-lockfile (no release since 2021, so nothing else imports it).
 *
 * Every process, and later every node sharing the storage over NFS, must use the same `stale` and
 * `update`: a process with a shorter `stale` would break a lock that its holder is still refreshing.
 */

/**
 * A lock whose mtime has not been refreshed for this long was left by a holder that died (or stalled that
 * long): the next waiter breaks it. Holders refresh every UPDATE_MS. The same in every process and node.
 */
export const STALE_MS = 10_000;
const UPDATE_MS = 2_000;
/**
 * What proper-lockfile is told: never to judge a lock stale itself. Its takeover is stat, rmdir, mkdir with
 * nothing in between, so two waiters that both saw the same abandoned lock could both break it, the second
 * removing the lock the first had just taken, and both would go on "holding" it (found by a chaos run: two
 * renames onto one free name both answered ok, and one file was lost). breakIfAbandoned does it instead,
 * one waiter per abandoned lock. (proper-lockfile also uses `stale` for a holder whose refreshes keep
 * failing: such a holder now reports its lock compromised only once a refresh finds it gone or changed.)
 */
const NEVER_STALE = Number.MAX_SAFE_INTEGER;

const RETRY_FACTOR = 1.2;
const RETRY_MIN_MS = 20;
const RETRY_MAX_MS = 500;
/** How long an operation waits for a busy lock before answering LOCKED, unless configured (--lock-timeout). */
export const DEFAULT_LOCK_WAIT_SECONDS = 30;
/** The largest --lock-timeout: a wait longer than an hour is a hang, not a wait. */
export const MAX_LOCK_WAIT_SECONDS = 3_600;

/**
 * This process's wait budget. Unlike `stale` and `update` it may differ between processes and nodes: it
 * only decides how long this process's own callers wait before LOCKED, never whether someone else's lock
 * is still valid. A worker sets it once at start from --lock-timeout (setLockWaitSeconds); any other
 * process (the primary, tests, tools) keeps the default.
 */
let lockWaitBudgetMs = DEFAULT_LOCK_WAIT_SECONDS * 1000;

/** Sets how long withLock waits for a held lock before it fails with LOCKED (whole seconds, 1 to 3600). */
export function setLockWaitSeconds(seconds: number): void {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_LOCK_WAIT_SECONDS) {
    throw new RangeError(`lock wait must be an integer from 1 to ${MAX_LOCK_WAIT_SECONDS} seconds (got ${seconds})`);
  }
  lockWaitBudgetMs = seconds * 1000;
}

/** What a compromised lock looks like to whoever listens (the worker logs it and counts it). */
export interface LockCompromise {
  /** Absolute path of the lock directory: for server logs only, never for a client. */
  lockfile: string | undefined;
  error: Error;
}

type CompromiseListener = (event: LockCompromise) => void;
const compromiseListeners = new Set<CompromiseListener>();
let compromisedTotal = 0;

/** Subscribes to lock compromises; returns the unsubscribe function. */
export function onLockCompromised(listener: CompromiseListener): () => void {
  compromiseListeners.add(listener);
  return () => {
    compromiseListeners.delete(listener);
  };
}

/** How many locks this process has seen compromised since it started. */
export function lockCompromisedCount(): number {
  return compromisedTotal;
}

/**
 * proper-lockfile calls onCompromised from a timer; its default rethrows there, which kills the worker.
 * This one only records. A compromise means our lock directory was removed or refreshed by someone else
 * (clock skew across nodes, a process stalled for longer than `stale`): the operation under the lock has
 * already done its rename or unlink, which is atomic, so there is nothing to undo, only to report.
 */
function reportCompromised(error: Error, lockfile?: string): void {
  compromisedTotal++;
  const event: LockCompromise = { lockfile, error };
  if (compromiseListeners.size === 0) {
    try {
      process.emitWarning(`fts: lock compromised: ${error.message}`, 'FtsLockWarning');
    } catch {
      // Never let reporting crash the process.
    }
  }
  for (const listener of compromiseListeners) {
    try {
      listener(event);
    } catch {
      // A faulty listener must not turn a logged incident into a crash.
    }
  }
}

/**
 * proper-lockfile releases a lock with a plain rmdir of its path. A holder that stalled for more than
 * STALE_MS (SIGSTOP, a paused VM, swap), or whose clock is behind another node's, may have had its lock
 * broken and taken by another process meanwhile; if its operation ended before its refresh timer noticed,
 * that rmdir removed the successor's lock, silently, and a third operation could then run beside the
 * successor (found by a chaos run). So each acquisition hands proper-lockfile a file system of its own
 * (lockFs): node's calls, but it remembers which directory its mkdir made (the inode, from the stat that
 * follows) and the mtimes it has set on it since (each refresh's), and its rmdir removes the directory
 * only if it is still that one with such an mtime; a refresh checks the same before it stamps anything. A
 * successor's directory carries its own mtime even when the file system hands it the same inode (ext4
 * reuses a freed one at once). The cost is one lstat per release and per refresh. What remains is the
 * window between such an lstat and the call it guards.
 */
interface OwnLock {
  /** Whether this acquisition's mkdir made the directory (a failed one leaves someone else's). */
  made: boolean;
  /** When its mkdir was issued (monotonic ms). */
  started: number;
  /** The directory's inode; NaN when it cannot be known to be ours (it matches nothing). */
  ino: number | null;
  /**
   * Every mtime (ms, as proper-lockfile compares them) this acquisition saw on its directory or set on it:
   * one per refresh, so a refresh that overlaps the release is still recognised. A successor's are at
   * least STALE_MS later.
   */
  mtimes: Set<number>;
  released: boolean;
}

type Callback<T = void> = (err: NodeJS.ErrnoException | null, value?: T) => void;

/**
 * Whether `st` is this acquisition's directory. Plain Stats, whose mtime is the Date that proper-lockfile
 * sets and compares (BigIntStats' Date truncates where utimes rounded, and would not match half the time).
 */
function ownedBy(own: OwnLock, st: fs.Stats): boolean {
  return st.ino === own.ino && own.mtimes.has(st.mtime.getTime());
}

function lockError(lockPath: string, why: string, code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${lockPath}: ${why}`), { code });
}

function notOurs(lockPath: string, why: string): NodeJS.ErrnoException {
  return lockError(lockPath, `${why} while this process held it (it stalled for ${STALE_MS / 1000} s or more, or its clock is behind, and another process broke the lock as abandoned); left as it is`, 'ENOTOURS');
}

/**
 * The prototype of every lockFs. proper-lockfile caches the file system's mtime precision as a property of
 * its `fs` object; adoptCache moves it here so that later acquisitions find it and skip the probe's utimes.
 */
const BASE_FS: Record<string | symbol, unknown> = { realpath: fs.realpath };

function adoptCache(own: object): void {
  for (const key of Object.getOwnPropertySymbols(own)) {
    if (!(key in BASE_FS)) Object.defineProperty(BASE_FS, key, { value: (own as Record<symbol, unknown>)[key] });
  }
}

/** The file system one acquisition of a lock gives proper-lockfile (its `fs` option). */
function lockFs(): object {
  const own: OwnLock = { made: false, started: 0, ino: null, mtimes: new Set(), released: false };
  const guarded = Object.create(BASE_FS) as Record<string, unknown>;
  Object.assign(guarded, {
    mkdir(lockPath: string, callback: Callback): void {
      own.started = performance.now();
      fs.mkdir(lockPath, (err) => {
        if (err === null) own.made = true;
        callback(err);
      });
    },
    stat(lockPath: string, callback: Callback<fs.Stats>): void {
      fs.stat(lockPath, (err, st) => {
        if (err === null && own.made && own.ino === null) {
          // The stat right after our mkdir names our directory, unless we stalled so long in between that
          // it may have been broken and made anew by someone else: then it is not taken as ours, and the
          // attempt counts as finding the lock held (acquire waits, and breaks it once it is abandoned).
          if (performance.now() - own.started >= STALE_MS / 2) {
            own.ino = Number.NaN;
            callback(lockError(lockPath, 'stalled while taking the lock', 'ELOCKED'));
            return;
          }
          own.ino = st.ino;
          own.mtimes.add(st.mtime.getTime());
        }
        callback(err, st);
      });
    },
    utimes(lockPath: string, atime: Date, mtime: Date, callback: Callback): void {
      if (own.released) {
        callback(null); // a refresh that was under way when the lock was released: nothing to refresh
        return;
      }
      if (own.ino === null) {
        // The probe's, on the directory just made.
        own.mtimes.add(mtime.getTime());
        fs.utimes(lockPath, atime, mtime, callback);
        return;
      }
      // A refresh, issued after a stat that may be long past: never stamp a successor's directory.
      fs.lstat(lockPath, (err, st) => {
        if (err) callback(err);
        else if (!ownedBy(own, st)) callback(lockError(lockPath, "the lock was replaced by another holder's", 'ENOENT')); // proper-lockfile: compromised
        else {
          own.mtimes.add(mtime.getTime());
          fs.utimes(lockPath, atime, mtime, callback);
        }
      });
    },
    rmdir(lockPath: string, callback: Callback): void {
      // A directory made whose probe failed is removed as it is: nothing was recorded of it yet.
      if (own.ino === null) {
        fs.rmdir(lockPath, callback);
        return;
      }
      own.released = true;
      fs.lstat(lockPath, (err, st) => {
        if (err) callback(err.code === 'ENOENT' ? notOurs(lockPath, 'the lock was removed') : err);
        else if (!ownedBy(own, st)) callback(notOurs(lockPath, "the lock was replaced by another holder's"));
        else fs.rmdir(lockPath, callback);
      });
    },
    /** proper-lockfile's exit handler removes the locks still held when the process exits. */
    rmdirSync(lockPath: string): void {
      if (own.ino !== null) {
        const st = fs.lstatSync(lockPath, { throwIfNoEntry: false });
        if (st === undefined || !ownedBy(own, st)) return;
      }
      fs.rmdirSync(lockPath);
    },
  });
  return guarded;
}

/** Each acquisition's key in proper-lockfile's table of held locks, which is per target path otherwise. */
let acquisitions = 0;

/**
 * The shared options. Each acquisition adds its `lockfilePath` (it depends on the target), its own `fs`
 * (lockFs), and an onCompromised of its own only so the report can say which lock it was.
 * realpath:false because the target often does not exist yet (a new upload). retries:0 because
 * proper-lockfile would retry every error (EROFS, ENOSPC, EACCES…) for the whole budget; withLock retries
 * only a lock that is held (ELOCKED) and fails fast on anything else.
 */
export const LOCK_OPTIONS = Object.freeze({
  stale: NEVER_STALE,
  update: UPDATE_MS,
  realpath: false,
  retries: 0,
  onCompromised: (err: Error): void => reportCompromised(err),
});

/**
 * Acquires the lock, waiting with capped exponential backoff while another holder has it, until `deadline`;
 * a lock its holder abandoned is broken (breakIfAbandoned) and taken at once.
 */
async function acquire(target: string, lockfilePath: string, deadline: number): Promise<() => Promise<void>> {
  let again = false;
  for (let attempt = 0; ; attempt++) {
    try {
      // proper-lockfile keys its table of held locks by this path (realpath is off, so it is only a key):
      // one of its own per acquisition, so that a release after a compromise can never find, and end, a
      // later acquisition of the same lock in this process.
      const guarded = lockFs();
      const release = await lockfile.lock(`${target}\0${++acquisitions}`, { ...LOCK_OPTIONS, lockfilePath, fs: guarded, onCompromised: (err: Error) => reportCompromised(err, lockfilePath) });
      adoptCache(guarded);
      return release;
    } catch (err) {
      if (errnoOf(err) !== 'ELOCKED' || Date.now() >= deadline) throw err;
      // At once after a break, but not twice in a row: a file system that keeps disagreeing with itself (an
      // attribute cache) must not turn the wait into a busy loop.
      again = !again && (await breakIfAbandoned(lockfilePath));
      if (again) continue;
      const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * RETRY_FACTOR ** attempt);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/**
 * Removes the lock directory `lockDir` if its holder abandoned it (not refreshed for STALE_MS), and says
 * whether the lock is free to try again now. Only one waiter breaks a given abandoned lock: it must first
 * take the right to (takeRight), named after that very lock (its inode and mtime); it then looks again, and
 * removes the lock only if it is still that very one, so a lock taken anew meanwhile (a new directory, or a
 * fresh mtime) is never removed.
 */
async function breakIfAbandoned(lockDir: string): Promise<boolean> {
  const seen = await lstat(lockDir, { bigint: true }).catch((err: unknown) => (errnoOf(err) === 'ENOENT' ? null : undefined));
  if (seen === null) return true; // released meanwhile
  if (seen === undefined || Number(seen.mtimeMs) >= Date.now() - STALE_MS) return false;
  const right = await takeRight(`${lockDir}.${seen.ino}-${seen.mtimeNs}.breaking`);
  if (right === null) return false; // another waiter is breaking it: wait as for a held lock
  try {
    const now = await lstat(lockDir, { bigint: true }).catch(() => null);
    if (now === null) return true;
    if (now.ino !== seen.ino || now.mtimeNs !== seen.mtimeNs) return false;
    await rmdir(lockDir);
    abandonedBroken++;
    return true;
  } catch {
    return false;
  } finally {
    await rmdir(right).catch(() => undefined);
  }
}

/**
 * The right to break one abandoned lock: the first of `base`.0, `base`.1, … that mkdir creates, which it
 * gives to exactly one waiter. A right older than STALE_MS belongs to a waiter that died while breaking (a
 * break takes a few system calls): it is passed over, not removed (two waiters removing it at once could
 * each take the next one), and stays behind as an empty directory that blocks nothing. Null while a live
 * waiter holds the current right, or when no right can be made here.
 */
async function takeRight(base: string): Promise<string | null> {
  for (let n = 0; n < MAX_RIGHTS; n++) {
    const right = `${base}.${n}`;
    try {
      await mkdir(right);
      return right;
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') return null;
      const held = await lstat(right).catch(() => null);
      if (held === null || held.mtimeMs >= Date.now() - STALE_MS) return null;
    }
  }
  return null;
}

/** Rights passed over before a waiter gives up breaking one lock (each is a waiter that died mid-break). */
const MAX_RIGHTS = 16;

let abandonedBroken = 0;

/** How many abandoned locks this process has broken since it started. */
export function abandonedLocksBroken(): number {
  return abandonedBroken;
}

/** A right to break one lock (takeRight): `<lock dir>.<ino>-<mtimeNs>.breaking.<n>`. */
const RIGHT_NAME = /^(.+\.lock)\.(\d+)-(\d+)\.breaking\.\d+$/;

/**
 * Removes what dead processes left under the locks root: locks abandoned for STALE_MS or more (broken as a
 * waiter breaks them, so a lock taken meanwhile is never removed) and rights to break a lock that no longer
 * exists as it was (a waiter that died while breaking it; nobody can ask for that right again, since a
 * right is named after the very directory and mtime it breaks). Run by the primary at start and with the
 * staging sweep: without it, a lock left by a crash stays on disk until an operation on the same name
 * comes. Safe beside live processes and other nodes whose clocks agree with ours (as every waiter's breaking
 * is: SCALE-OUT.md asks for synchronised clocks; a node whose clock runs more than STALE_MS ahead takes live
 * locks for abandoned, and with this sweep it does so every 10 minutes, not only when it waits for a name).
 * Returns how many it removed; what it cannot read or remove goes to `problem`.
 */
export async function sweepAbandonedLocks(root: string, problem: (path: string, err: unknown) => void = () => undefined): Promise<number> {
  let removed = 0;
  const users = await entriesOf(locksRoot(root), problem);
  for (const user of users) {
    if (!user.isDirectory()) continue;
    const dir = path.join(locksRoot(root), user.name);
    const entries = (await entriesOf(dir, problem)).filter((e) => e.isDirectory());
    // Locks first: breaking one passes over an old right to break it, which is then dead and goes below.
    for (const entry of entries.filter((e) => e.name.endsWith('.lock'))) {
      const where = path.join(dir, entry.name);
      try {
        const st = await lstat(where);
        if (st.mtimeMs >= Date.now() - STALE_MS) continue;
        const before = abandonedBroken;
        await breakIfAbandoned(where);
        if (abandonedBroken > before) removed++;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') problem(where, err);
      }
    }
    for (const entry of entries) {
      const right = RIGHT_NAME.exec(entry.name);
      if (right === null) continue;
      const where = path.join(dir, entry.name);
      try {
        const st = await lstat(where);
        if (st.mtimeMs >= Date.now() - STALE_MS) continue;
        const lock = await lstat(path.join(dir, right[1]!), { bigint: true }).catch((err: unknown) => {
          if (errnoOf(err) === 'ENOENT') return null;
          throw err;
        });
        if (lock !== null && String(lock.ino) === right[2] && String(lock.mtimeNs) === right[3]) continue; // still that lock
        await rmdir(where);
        removed++;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') problem(where, err);
      }
    }
  }
  return removed;
}

/** A directory's entries; one that cannot be read is reported and counts as empty (the sweep goes on). */
async function entriesOf(dir: string, problem: (path: string, err: unknown) => void): Promise<Dirent[]> {
  return entriesOrNone(dir).catch((err: unknown) => {
    problem(dir, err);
    return [];
  });
}

/**
 * Runs `fn` while holding the cluster-wide lock for (user, name). Every operation that changes a name
 * (publish, delete, rename) takes it, so they happen one after another.
 *
 * The lock directory lives at lockTarget(...)+'.lock' under <root>/.fts/locks, outside the user's
 * namespace; proper-lockfile is told the real target path only as its in-process bookkeeping key.
 */
export function withLock<T>(root: string, user: string, name: string, fn: () => Promise<T>): Promise<T> {
  return withLocks(root, user, [name], fn);
}

/** withLock, with the lock wait ending at `deadline` (Date.now() ms). */
async function lockedUntil<T>(root: string, user: string, name: string, deadline: number, fn: () => Promise<T>): Promise<T> {
  const target = resolveName(userDirPath(root, user), name);
  const lockfilePath = `${lockTarget(root, user, name)}.lock`;

  let release: () => Promise<void>;
  try {
    // acquire fails fast on ENOENT (it retries only ELOCKED), so a missing parent directory surfaces here.
    release = await inPrivateDir(path.dirname(lockfilePath), () => acquire(target, lockfilePath, deadline));
  } catch (err) {
    if (errnoOf(err) === 'ELOCKED') {
      throw new FtsError('LOCKED', `${name}: the file is busy with another operation; retry later`, {}, { cause: err });
    }
    throw fsError(err, name);
  }

  try {
    return await fn();
  } finally {
    try {
      await release();
    } catch (err) {
      // ERELEASED: it was compromised and already reported. ENOTOURS: it was broken meanwhile, and what is
      // there now is not ours (lockFs). Anything else leaves a lock directory that goes stale after
      // STALE_MS; not worth failing an operation that has already succeeded.
      if (errnoOf(err) !== 'ERELEASED') reportCompromised(err instanceof Error ? err : new Error(String(err)), lockfilePath);
    }
  }
}

/**
 * withLock over several names of one user (a rename holds its source and its target). The locks are taken
 * in ascending order of the names' UTF-8 bytes, the same order in every process and on every node, so that
 * two operations needing the same pair (a rename of a to b and one of b to a) cannot each hold one lock and
 * wait for the other. A name given twice is locked once. All of them share one wait budget (--lock-timeout):
 * an operation waits at most that long in all before LOCKED, so LOCKED still comes before the stall timeout.
 */
export function withLocks<T>(root: string, user: string, names: readonly string[], fn: () => Promise<T>): Promise<T> {
  // Read per call, so a budget set at worker start applies to every later operation.
  const deadline = Date.now() + lockWaitBudgetMs;
  const ordered = [...new Set(names)].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
  const hold = (at: number): Promise<T> => (at === ordered.length ? fn() : lockedUntil(root, user, ordered[at]!, deadline, () => hold(at + 1)));
  return hold(0);
}
