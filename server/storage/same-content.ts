import { createHash } from 'node:crypto';
import { constants, type BigIntStats } from 'node:fs';
import { open } from 'node:fs/promises';
import { RECORD_MIN_BYTES, recordedDigest } from './digest-records.js';

/**
 * How recent a file must be for an upload of its very bytes to count as a repeat of the one that published
 * it. A client repeats an upload whose reply was lost within seconds or minutes; the limit keeps a user who
 * may not read files from testing guesses of an older file's content by uploading them (each guess costs an
 * upload, and the answer says whether the bytes were the same).
 */
export const REPEAT_WINDOW_MS = 10 * 60_000;

/**
 * Whether the published file `st` (lstat of `file`, the name `name`) was modified within REPEAT_WINDOW_MS
 * and holds exactly `size` bytes whose SHA-256 is `sha256`: an upload of it would change nothing. A user
 * who may not replace files (no "o", permissions.ts) may then still repeat an upload whose reply was lost,
 * so that a repeat stays harmless (PROTOCOL.md §3.2 rule 4). Large files are judged by the digest recorded
 * at their publish; one without a record is not hashed (seconds under the name's lock) and counts as
 * different. Small files are hashed.
 */
export async function holdsContent(root: string, user: string, name: string, file: string, st: BigIntStats, size: number, sha256: string): Promise<boolean> {
  if (!st.isFile() || st.nlink !== 1n || st.size !== BigInt(size)) return false;
  if (Date.now() - Number(st.mtimeMs) > REPEAT_WINDOW_MS) return false;
  if (size >= RECORD_MIN_BYTES) return (await recordedDigest(root, user, name, st)) === sha256;
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const now = await handle.stat({ bigint: true });
    // Another file than the one looked at, or one changed since (by something outside fts): not the same.
    if (now.ino !== st.ino || now.dev !== st.dev || now.size !== st.size || now.mtimeNs !== st.mtimeNs) return false;
    const data = Buffer.alloc(size);
    const { bytesRead } = await handle.read(data, 0, size, 0);
    return bytesRead === size && createHash('sha256').update(data).digest('hex') === sha256;
  } finally {
    await handle.close().catch(() => undefined);
  }
}
