import { readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, MAX_FILE_SIZE, nameProblem, SHA256_PATTERN, type UploadTag } from '../../protocol/index.js';
import { keyOf } from './staging-keys.js';

/**
 * The identity behind a staging key. Staging files are named by a hash of their upload's identity (no
 * user-chosen bytes reach the file system), so the identity cannot be read back from the name: it is kept
 * in a small record beside them, `<key>.name`, for `partials` (PROTOCOL.md §6.10) to say which file a
 * partial upload is. The record is only information. It is written without an fsync (a crash may lose it:
 * the partial upload is then listed without a name), and a record that does not hash to its key is
 * ignored, so a torn or stale one can never name the wrong upload.
 */
export interface PartialIdentity {
  name: string;
  size: number;
  tag: UploadTag;
}

export const PART_SUFFIX = '.part';
export const NAME_SUFFIX = '.name';

const PART_FILE = /^([0-9a-f]{64})\.[0-9a-f]{24}\.part$/;
const NAME_FILE = /^([0-9a-f]{64})\.name$/;

/** The key of a staging file's name (`<key>.<random>.part`), or null for anything else. */
export function keyOfPartFile(file: string): string | null {
  return PART_FILE.exec(file)?.[1] ?? null;
}

/** The key of a name record's file name (`<key>.name`), or null for anything else. */
export function keyOfNameRecord(file: string): string | null {
  return NAME_FILE.exec(file)?.[1] ?? null;
}

function recordPath(dir: string, key: string): string {
  return path.join(dir, `${key}${NAME_SUFFIX}`);
}

/**
 * Writes the identity's record unless there is one (every upload of one identity writes the same bytes).
 * Never throws: a partial upload without a name still resumes, and can still be discarded.
 */
export async function recordPartialName(dir: string, identity: PartialIdentity): Promise<void> {
  const { name, size, tag } = identity;
  const body = JSON.stringify({ name, size, ...tag });
  await writeFile(recordPath(dir, keyOf(name, size, tag)), body, { flag: 'wx', mode: 0o600 }).catch(() => undefined);
}

/** The identity recorded for `key`, or null when there is none, or none that hashes to the key. */
export async function readPartialName(dir: string, key: string): Promise<PartialIdentity | null> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(recordPath(dir, key), 'utf8'));
  } catch {
    return null; // missing, unreadable or torn: a partial upload without a name
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
export async function forgetPartialName(dir: string, key: string): Promise<void> {
  await unlink(recordPath(dir, key)).catch((err: unknown) => {
    if (errnoOf(err) !== 'ENOENT') throw err;
  });
}

/**
 * Removes the record of `key` once no staging file of that key is left (its upload published or failed).
 * Never throws: a record left behind is removed by the sweep (sweepStaging).
 */
export async function forgetPartialNameIfUnused(dir: string, key: string): Promise<void> {
  try {
    const prefix = `${key}.`;
    if ((await readdir(dir)).some((f) => f.startsWith(prefix) && f.endsWith(PART_SUFFIX))) return;
    await forgetPartialName(dir, key);
  } catch {
    // The sweep removes it.
  }
}
