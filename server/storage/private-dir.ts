import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf } from '../../protocol/index.js';

/**
 * `mkdir -p`, creating what is missing with `mode`. Not Node's `recursive: true`, which on some file
 * systems reports the wrong cause (ENOENT on a read-only mount, where EROFS is the truth) or never returns
 * (a path under /proc): a start-up error must name the real problem. Bounded by the path's depth.
 */
export async function makeDirectories(dir: string, mode = 0o700): Promise<void> {
  const missing: string[] = [];
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    try {
      await mkdir(at, { mode });
      break;
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'EEXIST') break; // a file in the way shows up as ENOTDIR below
      if (code !== 'ENOENT' || path.dirname(at) === at) throw err;
      missing.push(at);
    }
  }
  for (const at of missing.reverse()) {
    await mkdir(at, { mode }).catch((err: unknown) => {
      if (errnoOf(err) !== 'EEXIST') throw err; // created meanwhile by another worker: fine
    });
  }
}

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
    await makeDirectories(dir);
    return attempt();
  }
}
