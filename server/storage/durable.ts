import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { GroupCommit } from '../../protocol/group-commit.js';
import { errnoOf } from '../../protocol/index.js';

const dirSyncs = new GroupCommit(fsyncDirNow);

/**
 * fsyncs a directory so that a rename or unlink inside it is on stable storage before we say "ok".
 * Concurrent publishes into one directory share fsyncs (group commit: see protocol/group-commit.ts).
 */
export function fsyncDir(dir: string): Promise<void> {
  return dirSyncs.commit(dir);
}

/**
 * A filesystem that cannot fsync directories (EINVAL, ENOTSUP: some FUSE and network filesystems) gives no
 * stronger guarantee we could ask for, so that is not an error.
 */
async function fsyncDirNow(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== 'EINVAL' && errno !== 'ENOTSUP' && errno !== 'EOPNOTSUPP') throw err;
  } finally {
    await handle.close();
  }
}

/** fsyncs a file by path (read-only descriptor, no symlink followed): its data and size on stable storage. */
export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * File times as the protocol carries them: integer milliseconds since the epoch, floored (also before 1970,
 * where bigint division would round up). From nanoseconds: a double's mtimeMs can round up to the next
 * millisecond, and every place that reports a file's mtime must agree (listing, download, upload reply).
 */
export function mtimeOfBig(stats: { mtimeNs: bigint }): number {
  const ms = stats.mtimeNs / 1_000_000n;
  return Number(stats.mtimeNs < 0n && ms * 1_000_000n !== stats.mtimeNs ? ms - 1n : ms);
}
