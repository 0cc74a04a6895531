import { createHash } from 'node:crypto';
import { constants, type BigIntStats } from 'node:fs';
import { open } from 'node:fs/promises';
import { RECORD_MIN_BYTES, recordedDigest } from './digest-records.js';

/**
 * Whether the published file `st` (lstat of `file`, the name `name`) holds exactly `size` bytes whose
 * SHA-256 is `sha256`: an upload of it would change nothing. A user who may not replace files (no "o",
 * permissions.ts) may still repeat an upload whose reply was lost, so that a repeat stays harmless
 * (PROTOCOL.md §3.2 rule 4). Large files are judged by the digest recorded at their publish; one without a
 * record is not hashed (seconds under the name's lock) and counts as different. Small files are hashed.
 */
export async function holdsContent(root: string, user: string, name: string, file: string, st: BigIntStats, size: number, sha256: string): Promise<boolean> {
  if (!st.isFile() || st.nlink !== 1n || st.size !== BigInt(size)) return false;
  if (size >= RECORD_MIN_BYTES) return (await recordedDigest(root, user, name, st)) === sha256;
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const now = await handle.stat({ bigint: true });
    // Another file than the one looked at (replaced by something outside fts meanwhile): not the same.
    if (now.ino !== st.ino || now.dev !== st.dev) return false;
    const hash = createHash('sha256');
    hash.update(await handle.readFile());
    return hash.digest('hex') === sha256;
  } finally {
    await handle.close().catch(() => undefined);
  }
}
