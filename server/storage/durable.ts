import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { errnoOf } from './errors.js';

/** Per directory: the fsync running now, and the one that will start after it (shared by its waiters). */
const dirSyncs = new Map<string, { running: Promise<void>; next: Promise<void> | null }>();

/**
 * fsyncs a directory so that a rename or unlink inside it is on stable storage before we say "ok".
 *
 * Group commit: any fsync of the directory that *starts* after our rename covers it. So a caller that
 * finds one already running (which may have started before its rename) waits for it and then shares the
 * single next fsync with everyone else who arrived meanwhile: N concurrent publishes into one directory
 * cost about two directory fsyncs, not N.
 */
export function fsyncDir(dir: string): Promise<void> {
  const current = dirSyncs.get(dir);
  if (current === undefined) return startDirSync(dir);
  current.next ??= current.running.then(
    () => startDirSync(dir),
    () => startDirSync(dir),
  );
  return current.next;
}

function startDirSync(dir: string): Promise<void> {
  const running = fsyncDirNow(dir).finally(() => {
    if (dirSyncs.get(dir)?.running === running) dirSyncs.delete(dir);
  });
  dirSyncs.set(dir, { running, next: null });
  return running;
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

/** File times as the protocol carries them: integer milliseconds since the epoch. */
export function mtimeOf(stats: { mtimeMs: number }): number {
  return Math.floor(stats.mtimeMs);
}
