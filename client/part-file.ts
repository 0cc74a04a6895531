/**
 * The files of a resumable download, next to its target LOCAL: `LOCAL.part` holds a prefix of one version
 * of the remote file, and the sidecar `LOCAL.part.json` says which version: `{name, size, mtime}` from the
 * server's `data` reply. A later download of the same name to the same target continues from the prefix
 * when the server still has that version (ifSize/ifMtime, docs/PROTOCOL.md §6.3); otherwise both start
 * afresh, so two versions are never spliced. The whole-file SHA-256 check at the end is the final gate.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { MAX_FILE_SIZE } from '../protocol/index.js';

/** The server version a partial download belongs to. */
export interface RemoteVersion {
  name: string;
  size: number;
  mtime: number;
}

export interface PartPaths {
  part: string;
  sidecar: string;
}

/**
 * Downloads smaller than this keep no sidecar, so a cut one is not kept for a resume: fetching it again
 * costs less than the bookkeeping (a pipelined mget of many small files would pay it for each).
 */
export const KEEP_PART_MIN_BYTES = 1024 * 1024;

const PART_SUFFIX = '.part';
const SIDECAR_SUFFIX = '.part.json';
/** NAME_MAX of the common Linux file systems, in bytes. */
const NAME_MAX_BYTES = 255;
/** A sidecar is a few dozen bytes plus a name of at most 255 bytes; anything much larger is not ours. */
const SIDECAR_MAX_BYTES = 4096;

/**
 * LOCAL.part and LOCAL.part.json. The sidecar name must fit NAME_MAX as well, so a target name too long for
 * that gets a shortened stem plus a digest of the full name: still one fixed pair of names per target,
 * which is what lets a later run find them.
 */
export function partPaths(target: string): PartPaths {
  const dir = path.dirname(target);
  const base = path.basename(target);
  let stem = base;
  if (Buffer.byteLength(base) + SIDECAR_SUFFIX.length > NAME_MAX_BYTES) {
    stem = `${truncateUtf8(base, 200)}.${createHash('sha256').update(base).digest('hex').slice(0, 16)}`;
  }
  const part = path.join(dir, stem + PART_SUFFIX);
  return { part, sidecar: path.join(dir, stem + SIDECAR_SUFFIX) };
}

/** The longest prefix of `text` (whole code points) whose UTF-8 encoding fits in `maxBytes`. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let out = '';
  for (const ch of text) {
    if (Buffer.byteLength(out + ch) > maxBytes) break;
    out += ch;
  }
  return out;
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= MAX_FILE_SIZE;
}

/**
 * The sidecar's version, or null when it is unreadable or not one of ours (start afresh then), or
 * 'missing' when there is none (so there is nothing to remove either).
 */
export async function readSidecar(file: string): Promise<RemoteVersion | null | 'missing'> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : null;
  }
  if (text.length > SIDECAR_MAX_BYTES) return null;
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null) return null;
    const { name, size, mtime } = v as Record<string, unknown>;
    if (typeof name !== 'string' || !isSize(size) || typeof mtime !== 'number' || !Number.isSafeInteger(mtime)) return null;
    return { name, size, mtime };
  } catch {
    return null; // torn by a crash mid-write, or edited: not trustworthy
  }
}

/**
 * Writes the sidecar. O_NOFOLLOW: the name is predictable, so something planted under it must not redirect
 * the write to another file.
 */
export async function writeSidecar(file: string, version: RemoteVersion): Promise<void> {
  const fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o666);
  try {
    await fh.writeFile(`${JSON.stringify({ name: version.name, size: version.size, mtime: version.mtime })}\n`);
  } finally {
    await fh.close();
  }
}

/**
 * Opens LOCAL.part for reading and writing without following a symbolic link; `fresh` truncates it (or
 * creates it). Without `fresh` a missing file is an ENOENT error, which the caller treats as "nothing kept".
 */
export function openPart(file: string, fresh: boolean): Promise<FileHandle> {
  const flags = constants.O_RDWR | constants.O_NOFOLLOW | (fresh ? constants.O_CREAT | constants.O_TRUNC : 0);
  return open(file, flags, 0o666);
}

/** Removes a file if it exists. Never throws: it runs on cleanup paths. */
export async function removeQuietly(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}
