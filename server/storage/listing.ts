import type { BigIntStats } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, nameProblem, type Entry } from '../../protocol/index.js';
import { mtimeOfBig } from './durable.js';

/** A listing entry; `size` and `mtime` are present only in a long listing. */
export interface ListEntry {
  name: string;
  size?: number;
  mtime?: number;
  sha256?: string;
}

/**
 * For a long listing: the digest recorded for exactly the version `st` describes, or null; consulted only
 * for files of at least `minBytes` (smaller ones never have one, and a listing of many small files must not
 * pay an extra stat for each).
 */
export interface RecordedDigests {
  minBytes: number;
  lookup(name: string, st: BigIntStats): Promise<string | null>;
}

/** lstat calls in flight at once: enough to hide latency on NFS, few enough not to starve the threadpool. */
export const STAT_CONCURRENCY = 64;

// fatal: a name that is not valid UTF-8 would decode to U+FFFD and list a name that addresses nothing.
// ignoreBOM: a leading U+FEFF is part of a legal name; stripping it would list the wrong name (or another
// file's name twice).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

interface RawName {
  bytes: Buffer;
  name: string;
}

/**
 * The regular files directly in `userDir` whose names are legal protocol names, in ascending order of
 * their UTF-8 bytes (the protocol's order, which differs from JavaScript's UTF-16 string order).
 * Symlinks, directories, FIFOs, sockets and devices are never listed. Readdir's d_type is the first
 * filter; a long listing lstats each file and drops any that vanished or changed type meanwhile.
 */
export async function listUserDir(userDir: string, long: true, digests?: RecordedDigests): Promise<Entry[]>;
export async function listUserDir(userDir: string, long: boolean, digests?: RecordedDigests): Promise<ListEntry[]>;
export async function listUserDir(userDir: string, long: boolean, digests?: RecordedDigests): Promise<ListEntry[]> {
  const dirents = await readdir(userDir, { withFileTypes: true, encoding: 'buffer' });
  const names: RawName[] = [];
  for (const d of dirents) {
    if (!d.isFile()) continue;
    let name: string;
    try {
      name = utf8.decode(d.name);
    } catch {
      continue;
    }
    if (nameProblem(name) !== null) continue;
    names.push({ bytes: d.name, name });
  }
  names.sort((a, b) => Buffer.compare(a.bytes, b.bytes));

  // Every entry is lstat'ed, even for a short listing, so that a name is listed only if it would also be
  // served: a regular file with one link (see isServable).
  const entries = await mapBounded(names, STAT_CONCURRENCY, async ({ name }): Promise<ListEntry | null> => {
    try {
      if (!long) return isServable(await lstat(path.join(userDir, name))) ? { name } : null;
      // Nanosecond times, as a download's mtime (mtimeOfBig), and what a digest record names.
      const st = await lstat(path.join(userDir, name), { bigint: true });
      if (!isServable(st)) return null;
      const entry: ListEntry = { name, size: Number(st.size), mtime: mtimeOfBig(st) };
      const sha256 = digests !== undefined && st.size >= digests.minBytes ? await digests.lookup(name, st) : null;
      if (sha256 !== null) entry.sha256 = sha256;
      return entry;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null; // deleted since readdir
      throw err;
    }
  });
  return entries.filter((e): e is ListEntry => e !== null);
}

/**
 * What fts serves: a regular file with at most one link. Files fts publishes always have one link (a
 * renamed staging file); a second link means someone else linked the inode in from elsewhere, possibly
 * from outside the user's directory, so it is neither listed nor served. Zero links is fine: an open file
 * that an upload replaced (or a delete removed) a moment ago, which we still serve whole.
 */
export function isServable(st: { isFile(): boolean; nlink: number | bigint }): boolean {
  return st.isFile() && st.nlink <= 1;
}

/** Like Promise.all(items.map(fn)) but with at most `limit` calls in flight; keeps the input order. */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  async function lane(): Promise<void> {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
