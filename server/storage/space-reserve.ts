/**
 * A little space kept in reserve on the storage, so that the operations that free space still work on a
 * full file system. A delete or a rename takes the name's lock first, and a lock is a new directory: it
 * needs an inode and, on ext4, a block (a rename takes two; a user's first lock also makes their lock
 * directory). On a file system full to the last block or inode (for an account without root's reserved
 * blocks), the delete meant to make room failed with NO_SPACE. The reserve is a few small files under
 * .fts/; when taking a lock fails for want of space, one is removed (an inode and its blocks free again)
 * and the operation tries again, up to one per file; the files are made again when there is room. Shared
 * by every process and node on the storage; each step tolerates the others.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf } from '../../protocol/index.js';
import { fsError } from './errors.js';
import { internalDir } from './paths.js';

/** Files of the reserve: each freed one gives back an inode and its blocks. */
const RESERVE_FILES = 4;
/** Bytes of each (a few ext4 directory blocks). Random, so that a compressing file system stores them. */
const RESERVE_FILE_BYTES = 16 * 1024;

function reservePaths(root: string): string[] {
  return Array.from({ length: RESERVE_FILES }, (_, i) => path.join(internalDir(root), `space-reserve.${i}`));
}

/** Roots whose reserve this process last found whole (and has not freed since): not looked at again. */
const whole = new Set<string>();

/** One reserve file, written whole under a temporary name, then renamed into place. Never throws. */
async function makeReserveFile(file: string): Promise<boolean> {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  let handle;
  try {
    handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
  } catch {
    return false; // no room for even its inode
  }
  try {
    const data = randomBytes(RESERVE_FILE_BYTES);
    // Short writes happen on a nearly full disk: written to the end, or not at all.
    for (let at = 0; at < data.length; ) at += (await handle.write(data, at, data.length - at, at)).bytesWritten;
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(temp, file);
    return true;
  } catch {
    await handle?.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    return false;
  }
}

/**
 * Makes whatever part of the reserve is missing or short, when there is room. Never throws: without room it
 * is made at a later call (after each delete and rename, and at start).
 */
export async function makeSpaceReserve(root: string): Promise<void> {
  if (whole.has(root)) return;
  let all = true;
  for (const file of reservePaths(root)) {
    const st = await lstat(file).catch(() => null);
    if (st !== null && st.isFile() && st.size === RESERVE_FILE_BYTES) continue;
    if (!(await makeReserveFile(file))) all = false;
  }
  if (all) whole.add(root);
}

/** Frees one reserve file; false if none was left to free. */
async function freeOneReserveFile(root: string): Promise<boolean> {
  whole.delete(root);
  for (const file of reservePaths(root)) {
    try {
      await unlink(file);
      return true;
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') return false;
    }
  }
  return false;
}

/**
 * Runs `locked`, which takes its locks and calls the function it is given inside them. While taking the
 * locks fails for want of space (before that function ran), a reserve file is freed and `locked` runs
 * again, for as long as there is one to free; with none left at the first failure it still runs once more,
 * in case another process freed room meanwhile. The reserve is made again afterwards, in the background.
 */
export async function withSpaceForLock<T>(root: string, locked: (inside: <R>(fn: () => Promise<R>) => Promise<R>) => Promise<T>): Promise<T> {
  let entered = false;
  const inside = <R>(fn: () => Promise<R>): Promise<R> => {
    entered = true;
    return fn();
  };
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        return await locked(inside);
      } catch (err) {
        // NO_SPACE as withLock reports it, or ENOSPC/EDQUOT as the file system does (errors.ts maps both).
        if (entered || fsError(err, 'lock').code !== 'NO_SPACE' || attempt > RESERVE_FILES) throw err;
        if (!(await freeOneReserveFile(root)) && attempt > 0) throw err;
      }
    }
  } finally {
    void makeSpaceReserve(root);
  }
}
