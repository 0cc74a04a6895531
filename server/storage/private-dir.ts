import { mkdir } from 'node:fs/promises';
import { errnoOf } from './errors.js';

/**
 * Runs `attempt`, which creates something inside `dir`; if it fails because `dir` is missing (ENOENT),
 * creates `dir` (mode 0700, with its parents) and runs it once more. The server's per-user directories
 * exist after their first use, so trying first saves a thread-pool round trip on every later call.
 */
export async function inPrivateDir<T>(dir: string, attempt: () => Promise<T>): Promise<T> {
  try {
    return await attempt();
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return attempt();
  }
}
