import type { Stats } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, FtsError, SHA256_PATTERN, type PartialEntry } from '../../protocol/index.js';
import { fsyncDir } from './durable.js';
import { entriesOrNone } from './dir-entries.js';
import { fsError, notDurable } from './errors.js';
import { mapBounded, STAT_CONCURRENCY } from './listing.js';
import { forgetPartialName, forgetPartialNameIfUnused, keyOfPartFile, readPartialName, type PartialIdentity } from './partial-names.js';
import { stagingDir } from './paths.js';
import { partialMaxAgeMs } from './staging-sweep.js';

/**
 * What a user can see and do about their partial uploads (PROTOCOL.md §6.10): the staging files are theirs
 * (they count against the quota) but hidden, and named by hashes. One entry per upload identity (key),
 * which may have several files: an attempt in progress besides the bytes of a cut one.
 */

interface PartFile {
  file: string;
  key: string;
  st: Stats;
}

/** The user's staging files, by key. A file that vanishes while we look (published, swept) is skipped. */
async function partFiles(dir: string): Promise<Map<string, PartFile[]>> {
  const named = (await entriesOrNone(dir)).flatMap((e) => {
    const key = e.isFile() ? keyOfPartFile(e.name) : null;
    return key === null ? [] : [{ file: path.join(dir, e.name), key }];
  });
  const found = await mapBounded(named, STAT_CONCURRENCY, async ({ file, key }) => {
    try {
      const st = await lstat(file);
      return st.isFile() ? { file, key, st } : null;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    }
  });
  const byKey = new Map<string, PartFile[]>();
  for (const f of found) {
    if (f === null) continue;
    const files = byKey.get(f.key);
    if (files === undefined) byKey.set(f.key, [f]);
    else files.push(f);
  }
  return byKey;
}

/**
 * The user's partial uploads, by name (ascending UTF-8 bytes; those whose name is not known last, by key).
 * `ttlMs` is the server's --partial-ttl, to say when each may be swept.
 */
export async function listPartials(root: string, user: string, ttlMs: number): Promise<PartialEntry[]> {
  const dir = stagingDir(root, user);
  try {
    const byKey = await partFiles(dir);
    const entries = await mapBounded([...byKey], STAT_CONCURRENCY, async ([key, files]) => {
      const identity = await readPartialName(root, user, key);
      // What a resume continues from is the longest file (staging-begin.ts), so that is the one whose age counts.
      const longest = files.reduce((a, b) => (b.st.size > a.st.size ? b : a));
      const entry: PartialEntry = {
        key,
        staged: identity === null ? longest.st.size : Math.min(longest.st.size, identity.size),
        bytes: files.reduce((sum, f) => sum + f.st.size, 0),
        mtime: Math.floor(Math.max(...files.map((f) => f.st.mtimeMs))),
        expires: Math.floor(longest.st.mtimeMs + partialMaxAgeMs(longest.st.size, ttlMs)),
      };
      if (identity !== null) Object.assign(entry, { name: identity.name, size: identity.size, ...identity.tag });
      return entry;
    });
    return entries.sort(byName);
  } catch (err) {
    throw fsError(err, 'partials');
  }
}

function byName(a: PartialEntry, b: PartialEntry): number {
  if (a.name !== undefined && b.name !== undefined && a.name !== b.name) return Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));
  if ((a.name === undefined) !== (b.name === undefined)) return a.name === undefined ? 1 : -1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/**
 * Removes every staging file of the identity `key`, and its name record; durable (the staging directory is
 * fsynced) before it resolves. NOT_FOUND when there is none. An upload of that identity in progress loses
 * the bytes it staged (its file is gone): it is answered as one that was taken over (OFFSET_MISMATCH).
 */
export async function discardPartials(root: string, user: string, key: string): Promise<{ bytes: number; name: string | null }> {
  if (!SHA256_PATTERN.test(key)) throw new FtsError('BAD_REQUEST', '"key" must be 64 lowercase hex digits');
  const dir = stagingDir(root, user);
  let removed = 0;
  let bytes = 0;
  let identity: PartialIdentity | null = null;
  try {
    const files = (await partFiles(dir)).get(key) ?? [];
    identity = await readPartialName(root, user, key);
    for (const { file, st } of files) {
      try {
        await unlink(file);
        removed++;
        bytes += st.size;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err; // published or swept meanwhile: not ours to count
      }
    }
    if (removed > 0) await (identity === null ? forgetPartialName(root, user, key) : forgetPartialNameIfUnused(root, user, identity));
  } catch (err) {
    // What was removed before the failure stays removed (the next discard finds the rest).
    throw fsError(err, 'partial upload');
  }
  if (removed === 0) throw new FtsError('NOT_FOUND', 'no partial upload with that key');
  try {
    await fsyncDir(dir);
  } catch (err) {
    throw notDurable(err, 'partial upload', 'discarded');
  }
  return { bytes, name: identity?.name ?? null };
}
