/**
 * A little space kept in reserve on the storage, so that the operations that free space still work on a
 * full file system. A delete or a rename takes the name's lock first, and a lock is a new directory: it
 * needs an inode and, on ext4, a block. On a file system full to the last block or inode (for an account
 * without root's reserved blocks), the delete meant to make room failed with NO_SPACE. The reserve is a
 * small file under .fts/; when taking a lock fails for want of space, it is removed (an inode and its
 * blocks free again), the operation tries once more, and the reserve is made again afterwards when there
 * is room. Shared by every process and node on the storage; each step tolerates the others.
 */
import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, FtsError } from '../../protocol/index.js';
import { internalDir } from './paths.js';

/** Enough for a few lock directories' blocks (4 KiB each on ext4). */
const RESERVE_BYTES = 64 * 1024;

export function reservePath(root: string): string {
  return path.join(internalDir(root), 'space-reserve');
}

/** Makes the reserve if it is missing and there is room. Never throws: without room it is made later. */
export async function makeSpaceReserve(root: string): Promise<void> {
  const file = reservePath(root);
  let handle;
  try {
    handle = await open(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
  } catch {
    return; // there already, or no room for even its inode
  }
  try {
    await handle.write(Buffer.alloc(RESERVE_BYTES));
    await handle.sync();
    await handle.close();
  } catch {
    await handle.close().catch(() => undefined);
    await unlink(file).catch(() => undefined); // a partial reserve would read as a whole one
  }
}

/** Frees the reserve; false if there was none to free (another process took it first, or it was never made). */
async function freeSpaceReserve(root: string): Promise<boolean> {
  try {
    await unlink(reservePath(root));
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
}

/** ENOSPC or EDQUOT, as it comes or as withLock reports it (NO_SPACE). */
function isNoSpace(err: unknown): boolean {
  if (err instanceof FtsError) return err.code === 'NO_SPACE';
  const code = errnoOf(err);
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * Runs `locked`, which takes a lock and calls the function it is given inside it. If taking the lock fails
 * for want of space (before that function ran), the reserve is freed and `locked` runs once more; the
 * reserve is made again afterwards.
 */
export async function withSpaceForLock<T>(root: string, locked: (inside: <R>(fn: () => Promise<R>) => Promise<R>) => Promise<T>): Promise<T> {
  let entered = false;
  const inside = <R>(fn: () => Promise<R>): Promise<R> => {
    entered = true;
    return fn();
  };
  try {
    return await locked(inside);
  } catch (err) {
    if (entered || !isNoSpace(err) || !(await freeSpaceReserve(root).catch(() => false))) throw err;
  }
  try {
    return await locked(inside);
  } finally {
    await makeSpaceReserve(root);
  }
}
