import { createHash } from 'node:crypto';
import path from 'node:path';
import { FtsError, isValidUsername, nameProblem } from '../../protocol/index.js';

/**
 * The only route from a client-supplied name to a filesystem path. Nothing else in the server may build a
 * path from a name.
 *
 * Layout under the storage root:
 *   <root>/<user>/<name>                          published files only
 *   <root>/.fts/staging/<user>/<random>           partial uploads
 *   <root>/.fts/locks/<user>/<sha256(name)>.lock  proper-lockfile lock directories
 *   <root>/.fts/digests/<user>/<sha256(name)>     SHA-256 recorded when a large file was published
 *   <root>/.fts/partial-names/<user>/<key>        the identity behind a staging key (partial-names.ts)
 * USERNAME_PATTERN cannot start with '.', so `.fts` is never a user directory.
 */

/** The server's private area under the storage root. */
export const INTERNAL_DIR = '.fts';

export function internalDir(root: string): string {
  return path.join(root, INTERNAL_DIR);
}

export function stagingRoot(root: string): string {
  return path.join(root, INTERNAL_DIR, 'staging');
}

export function locksRoot(root: string): string {
  return path.join(root, INTERNAL_DIR, 'locks');
}

export function digestsRoot(root: string): string {
  return path.join(root, INTERNAL_DIR, 'digests');
}

export function partialNamesRoot(root: string): string {
  return path.join(root, INTERNAL_DIR, 'partial-names');
}

export function partialNamesDir(root: string, user: string): string {
  checkUser(user);
  return path.join(partialNamesRoot(root), user);
}

/**
 * Usernames come from the users table, which already refuses illegal ones, so an illegal one here is a
 * server bug: a plain Error (reported as INTERNAL), not a client error.
 */
function checkUser(user: string): void {
  if (!isValidUsername(user)) throw new Error('storage: invalid username reached the storage layer');
}

export function userDirPath(root: string, user: string): string {
  checkUser(user);
  return path.join(root, user);
}

export function stagingDir(root: string, user: string): string {
  checkUser(user);
  return path.join(stagingRoot(root), user);
}

/** Throws FtsError BAD_NAME unless `name` is legal (protocol/names.ts is the one definition). */
export function checkName(name: string): void {
  const problem = nameProblem(name);
  if (problem !== null) throw new FtsError('BAD_NAME', problem);
}

/**
 * The path of `name` inside `userDir`. Validation is the real guard; the dirname/basename check is defence
 * in depth against a future change to the name rules. It compares whole components, never a string
 * prefix: "/srv/bob2" starts with "/srv/bob" (CVE-2014-6394 in `send`).
 */
export function resolveName(userDir: string, name: string): string {
  checkName(name);
  const dir = path.resolve(userDir);
  const result = path.join(dir, name);
  if (path.dirname(result) !== dir || path.basename(result) !== name) {
    throw new FtsError('BAD_NAME', 'name is not a single path component');
  }
  return result;
}

/**
 * The lock path for (user, name), without the '.lock' suffix. The name is hashed so that lock directories
 * never share a namespace with user files (a user file "x.lock" cannot collide with anything) and so that
 * every legal name gives a short, fixed-length, filesystem-safe component.
 */
export function lockTarget(root: string, user: string, name: string): string {
  return path.join(locksRoot(root), user, hashedName(user, name));
}

/** Where the digest recorded for (user, name) is kept; hashed for the same reasons as lockTarget. */
export function digestRecordPath(root: string, user: string, name: string): string {
  return path.join(digestsRoot(root), user, hashedName(user, name));
}

function hashedName(user: string, name: string): string {
  checkUser(user);
  checkName(name);
  return createHash('sha256').update(name, 'utf8').digest('hex');
}
