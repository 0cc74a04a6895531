import { randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, MAX_FILE_SIZE, nameProblem, SHA256_PATTERN, USERNAME_PATTERN, type UploadTag } from '../../protocol/index.js';
import { partialNamesDir, partialNamesRoot, stagingDir } from './paths.js';
import { inPrivateDir } from './private-dir.js';
import { keyOf } from './staging-keys.js';

/**
 * The identity behind a staging key. Staging files are named by a hash of their upload's identity (no
 * user-chosen bytes reach the file system), so the identity cannot be read back from the name: it is kept
 * in a small record, `<root>/.fts/partial-names/<user>/<key>`, for `partials` (PROTOCOL.md §6.10) to say
 * which file a partial upload is. Apart from the staging files, so that the staging directory holds
 * nothing but partial uploads. The record is only information: written without an fsync (a crash may lose
 * it, and the partial upload is then listed without a name), replaced atomically (never seen torn), and
 * ignored unless it hashes to its key, so a stale or damaged one can never name the wrong upload.
 */
export interface PartialIdentity {
  name: string;
  size: number;
  tag: UploadTag;
}

const PART_FILE = /^([0-9a-f]{64})\.[0-9a-f]{24}\.part$/;

/** The key of a staging file's name (`<key>.<random>.part`), or null for anything else. */
export function keyOfPartFile(file: string): string | null {
  return PART_FILE.exec(file)?.[1] ?? null;
}

/** A record's file name is its key; anything else in the directory (a temporary file) is not a record. */
function isRecordName(file: string): boolean {
  return SHA256_PATTERN.test(file);
}

/**
 * Writes (or rewrites, which also refreshes its time for the sweep) the identity's record. Never throws: a
 * partial upload without a name still resumes, and can still be discarded.
 */
export async function recordPartialName(root: string, user: string, identity: PartialIdentity): Promise<void> {
  const { name, size, tag } = identity;
  const dir = partialNamesDir(root, user);
  const record = path.join(dir, keyOf(name, size, tag));
  const temp = `${record}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await inPrivateDir(dir, () => writeFile(temp, JSON.stringify({ name, size, ...tag }), { flag: 'wx', mode: 0o600 }));
    await rename(temp, record);
  } catch {
    await unlink(temp).catch(() => undefined);
  }
}

/** The identity recorded for `key`, or null when there is none, or none that hashes to the key. */
export async function readPartialName(root: string, user: string, key: string): Promise<PartialIdentity | null> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path.join(partialNamesDir(root, user), key), 'utf8'));
  } catch {
    return null; // missing, unreadable or damaged: a partial upload without a name
  }
  if (typeof parsed !== 'object' || parsed === null) return null;
  const { name, size, sha256, version } = parsed as Record<string, unknown>;
  if (typeof name !== 'string' || nameProblem(name) !== null) return null;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) return null;
  let tag: UploadTag;
  if (typeof sha256 === 'string' && SHA256_PATTERN.test(sha256) && version === undefined) tag = { sha256 };
  else if (typeof version === 'string' && SHA256_PATTERN.test(version) && sha256 === undefined) tag = { version };
  else return null;
  return keyOf(name, size, tag) === key ? { name, size, tag } : null;
}

/** Removes the record of `key`; ENOENT is fine, other failures are thrown. */
export async function forgetPartialName(root: string, user: string, key: string): Promise<void> {
  await unlink(path.join(partialNamesDir(root, user), key)).catch((err: unknown) => {
    if (errnoOf(err) !== 'ENOENT') throw err;
  });
}

/** The keys that have at least one staging file in `dir` (a user's staging directory). */
async function stagedKeys(dir: string): Promise<Set<string>> {
  const files = await readdir(dir).catch((err: unknown) => {
    if (errnoOf(err) === 'ENOENT') return [];
    throw err;
  });
  const keys = new Set<string>();
  for (const f of files) {
    const key = keyOfPartFile(f);
    if (key !== null) keys.add(key);
  }
  return keys;
}

/**
 * Removes the identity's record once no staging file of it is left (its upload published, failed or was
 * discarded). A new attempt that began meanwhile may have written the record just before it went: then it
 * is written again. Never throws: a record left behind is removed by sweepPartialNames.
 */
export async function forgetPartialNameIfUnused(root: string, user: string, identity: PartialIdentity): Promise<void> {
  const key = keyOf(identity.name, identity.size, identity.tag);
  const dir = stagingDir(root, user);
  try {
    if ((await stagedKeys(dir)).has(key)) return;
    await forgetPartialName(root, user, key);
    if ((await stagedKeys(dir)).has(key)) await recordPartialName(root, user, identity);
  } catch {
    // The sweep removes it.
  }
}

/**
 * Removes the records (and leftover temporary files) not modified since `cutoffMs` whose key has no
 * staging file left: a record outlives its partial files only by mishap (a crash between the two removals,
 * a race with a new attempt). Run after the staging sweep. What cannot be read or removed goes to `problem`.
 */
export async function sweepPartialNames(root: string, cutoffMs: number, problem: (path: string, err: unknown) => void): Promise<void> {
  let users: string[];
  try {
    users = (await readdir(partialNamesRoot(root))).filter((u) => USERNAME_PATTERN.test(u));
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') problem(partialNamesRoot(root), err);
    return;
  }
  for (const user of users) {
    const dir = partialNamesDir(root, user);
    let files: string[];
    let staged: Set<string>;
    try {
      files = await readdir(dir);
      staged = await stagedKeys(stagingDir(root, user));
    } catch (err) {
      problem(dir, err);
      continue;
    }
    for (const f of files) {
      if (isRecordName(f) && staged.has(f)) continue;
      const file = path.join(dir, f);
      try {
        if ((await lstat(file)).mtimeMs >= cutoffMs) continue;
        await unlink(file);
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') problem(file, err);
      }
    }
  }
}
