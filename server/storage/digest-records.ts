import { readFile, stat, unlink, writeFile } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import path from 'node:path';
import { SHA256_PATTERN } from '../../protocol/index.js';
import { digestRecordPath } from './paths.js';
import { inPrivateDir } from './private-dir.js';

/**
 * The SHA-256 of a large file, recorded when it was published, so that a download can send it instead of
 * hashing the file while reading it (and a resumed download need not read the bytes it skips at all).
 *
 * The record is only a shortcut, never a source of truth for whether a file exists:
 * - It names the exact version it describes (inode, size, mtime and ctime in nanoseconds). A file that was
 *   replaced, rewritten or touched since has another version, so its record is ignored and the download
 *   hashes the file as it reads it. ctime cannot be set from user space, so even an in-place rewrite that
 *   restores mtime is noticed.
 * - A missing, torn or unreadable record (a crash during its write, a full disk) is ignored the same way.
 *   Records are therefore written without fsync: the file itself is durable before its record exists.
 * - What it buys besides speed: the client compares its own digest of the bytes it received with the digest
 *   taken when the upload was verified, so a file that rotted on disk since is reported as corrupt instead
 *   of being sent with a digest of its rotten bytes.
 *
 * Small files are not recorded: hashing them costs less than reading a record.
 */
export const RECORD_MIN_BYTES = 8 * 1024 * 1024;

const RECORD_VERSION = 1;

/** The version of a file a record describes. Not the device: on NFS it differs from client to client. */
export function recordVersion(st: BigIntStats): string {
  return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/**
 * Records the digest of the file (`file`: its fstat when it was verified) now at `target` as (user, name), if
 * it is large enough to be worth it. Call it under the name's lock, so that the record and the file it
 * describes come from the same publish (or rename); if the name holds another file by now anyway (a lock
 * broken as stale, see SCALE-OUT.md), or the file's bytes changed (size or mtime), nothing is recorded, so
 * that a digest never describes a file it was not verified for. Never throws: without a record, downloads
 * hash the file instead.
 */
export async function recordDigest(root: string, user: string, name: string, target: string, file: { ino: bigint; size: bigint; mtimeNs: bigint }, sha256: string): Promise<void> {
  if (file.size < RECORD_MIN_BYTES) return;
  try {
    const st = await stat(target, { bigint: true });
    if (st.ino !== file.ino || st.size !== file.size || st.mtimeNs !== file.mtimeNs) return;
    const record = `${JSON.stringify({ v: RECORD_VERSION, file: recordVersion(st), sha256 })}\n`;
    const where = digestRecordPath(root, user, name);
    await inPrivateDir(path.dirname(where), () => writeFile(where, record, { mode: 0o600 }));
  } catch {
    // A shortcut that could not be taken: nothing is lost.
  }
}

/** The digest recorded for exactly this version of the file (fstat of the open descriptor), or null. */
export async function recordedDigest(root: string, user: string, name: string, st: BigIntStats): Promise<string | null> {
  if (st.size < RECORD_MIN_BYTES) return null;
  let text: string;
  try {
    text = await readFile(digestRecordPath(root, user, name), 'utf8');
  } catch {
    return null;
  }
  try {
    const record = JSON.parse(text) as { v?: unknown; file?: unknown; sha256?: unknown };
    if (record.v !== RECORD_VERSION || record.file !== recordVersion(st)) return null;
    return typeof record.sha256 === 'string' && SHA256_PATTERN.test(record.sha256) ? record.sha256 : null;
  } catch {
    return null;
  }
}

/** Removes the record of a deleted file (under the name's lock). Never throws: a stale record is ignored anyway. */
export async function forgetDigest(root: string, user: string, name: string): Promise<void> {
  await unlink(digestRecordPath(root, user, name)).catch(() => undefined);
}

/**
 * After a rename of (user, from) to (user, to), under both names' locks: the record of the file that was at
 * `from` (`before`: its lstat before the rename, with `sha256` the digest recorded for exactly that version,
 * or null) now describes the file at `to`. A rename changes the file's ctime, so the record is written
 * afresh for the version now at `target` (recordDigest checks that it is still that file with those bytes).
 * Both old records go (the one of `to` described the file the rename replaced). Never throws.
 */
export async function moveDigest(root: string, user: string, from: string, to: string, target: string, before: BigIntStats, sha256: string | null): Promise<void> {
  await forgetDigest(root, user, from);
  await forgetDigest(root, user, to);
  if (sha256 !== null) await recordDigest(root, user, to, target, before, sha256);
}
