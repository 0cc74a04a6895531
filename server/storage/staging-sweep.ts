/**
 * The sweep of abandoned partial uploads (staging files nobody resumed), and how long each is kept.
 * Run by the primary at start and then periodically; safe from several processes or nodes at once.
 */
import type { Dirent } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf } from '../../protocol/index.js';
import { entriesOrNone } from './dir-entries.js';
import { sweepPartialNames } from './partial-names.js';
import { stagingRoot } from './paths.js';

/** Partials smaller than this are swept after SMALL_PARTIAL_MAX_AGE_MS already (see sweepStaging). */
export const SMALL_PARTIAL_BYTES = 1024 * 1024;
const SMALL_PARTIAL_MAX_AGE_MS = 10 * 60_000;

/** How long a staging file of `length` bytes is kept without progress, with a sweep maximum age of `maxAgeMs`. */
export function partialMaxAgeMs(length: number, maxAgeMs: number): number {
  return length < SMALL_PARTIAL_BYTES ? Math.min(maxAgeMs, SMALL_PARTIAL_MAX_AGE_MS) : maxAgeMs;
}

/**
 * Removes staging files not modified for `maxAgeMs` and returns how many it removed; those holding less
 * than SMALL_PARTIAL_BYTES go after SMALL_PARTIAL_MAX_AGE_MS (if shorter). Those are mostly the leftovers of
 * small uploads cut by a crash, which fts clients never resume (they resend), and resending what one held
 * costs less than a MiB. A live upload writes continuously, so `maxAgeMs` must be well above the
 * stalled-transfer timeout. Safe to run from several processes at once: a file that vanishes under us is
 * simply not counted. A user's staging directory (or file), or the staging root itself, that cannot be read
 * or removed is reported through `problem` and skipped: one bad directory must neither stop the server from
 * starting nor keep the other users' partial uploads for ever.
 */
export async function sweepStaging(root: string, maxAgeMs: number, problem: (path: string, err: unknown) => void = () => undefined): Promise<number> {
  const now = Date.now();
  const smallCutoff = now - partialMaxAgeMs(0, maxAgeMs);
  let removed = 0;
  let users: Dirent[];
  try {
    users = await entriesOrNone(stagingRoot(root));
  } catch (err) {
    problem(stagingRoot(root), err); // uploads may still work: not a reason to refuse to start
    return 0;
  }
  for (const userEntry of users) {
    if (!userEntry.isDirectory()) continue;
    const dir = path.join(stagingRoot(root), userEntry.name);
    let entries: Dirent[];
    try {
      entries = await entriesOrNone(dir);
    } catch (err) {
      problem(dir, err);
      continue;
    }
    for (const entry of entries) {
      const file = path.join(dir, entry.name);
      try {
        const st = await lstat(file);
        if (!st.isFile() || st.mtimeMs >= now - partialMaxAgeMs(st.size, maxAgeMs)) continue;
        await unlink(file);
        removed++;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') problem(file, err);
      }
    }
  }
  // Then the names of what is gone, once old enough that no upload is about to use them.
  await sweepPartialNames(root, smallCutoff, problem);
  return removed;
}
