import type { Dirent } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { errnoOf } from '../../protocol/index.js';

/**
 * A directory's entries, none when it does not exist (yet, or any more): the storage's directories are
 * made on first use and removed by sweeps, so absence is a normal state, not an error.
 */
export async function entriesOrNone(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw err;
  }
}
