/**
 * The files of a resumable download, next to its target LOCAL: `LOCAL.part` holds a prefix of one version
 * of the remote file, and the sidecar `LOCAL.part.json` says which version: `{name, size, mtime}` from the
 * server's `data` reply. A later download of the same name to the same target continues from the prefix
 * when the server still has that version (ifSize/ifMtime, docs/PROTOCOL.md §6.3); otherwise both start
 * afresh, so two versions are never spliced. The whole-file SHA-256 check at the end is the final gate.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, open, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, MAX_FILE_SIZE } from '../protocol/index.js';

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

/** Which file a name pointed to when we looked: removal by name checks it still points there. */
export interface FileId {
  dev: number;
  ino: number;
}

/** A sidecar that was read: the version it names, and which file it was. */
export interface KeptSidecar {
  version: RemoteVersion;
  id: FileId;
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
export async function readSidecar(file: string): Promise<KeptSidecar | null | 'missing'> {
  let text: string;
  let id: FileId;
  let fh: FileHandle | null = null;
  try {
    // Not readFile: in a shared directory someone else may have planted a symbolic link (to /dev/zero),
    // a FIFO (which would block the open for ever) or a huge file under this predictable name.
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = await fh.stat();
    if (!(await isOurs(st, path.dirname(file))) || st.size > SIDECAR_MAX_BYTES) return null;
    id = { dev: st.dev, ino: st.ino };
    const buf = Buffer.alloc(SIDECAR_MAX_BYTES + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead > SIDECAR_MAX_BYTES) return null;
    text = buf.toString('utf8', 0, bytesRead);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : null;
  } finally {
    await fh?.close().catch(() => undefined);
  }
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null) return null;
    const { name, size, mtime } = v as Record<string, unknown>;
    if (typeof name !== 'string' || !isSize(size) || typeof mtime !== 'number' || !Number.isSafeInteger(mtime)) return null;
    return { version: { name, size, mtime }, id };
  } catch {
    return null; // torn by a crash mid-write, or edited: not trustworthy
  }
}

/**
 * Writes the sidecar and returns which file it is (for removeIfSame). O_NOFOLLOW: the name is predictable,
 * so something planted under it must not redirect the write to another file.
 */
export async function writeSidecar(file: string, version: RemoteVersion): Promise<FileId> {
  // A fresh file of ours (O_EXCL): never one planted under this name, and never a FIFO, whose open would
  // block until a reader came.
  await removeQuietly(file);
  const fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o666);
  try {
    await fh.writeFile(`${JSON.stringify({ name: version.name, size: version.size, mtime: version.mtime })}\n`);
    const st = await fh.stat();
    return { dev: st.dev, ino: st.ino };
  } catch (err) {
    await unlink(file).catch(() => undefined); // ours, created just now, and not trustworthy half-written
    throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * A file this process may trust as its own earlier work: a regular file of our user with a single link,
 * in `dir`. In a directory shared with other users, a LOCAL.part or sidecar planted by one of them must
 * neither receive the download (they could read it, or change it between our check and our rename) nor
 * steer a resume.
 */
export async function isOurs(st: { isFile(): boolean; uid: number; nlink: number }, dir: string): Promise<boolean> {
  return st.isFile() && st.nlink === 1 && (await ownedByUs(st.uid, dir));
}

/**
 * An owner this process trusts for a file in `dir`: its own user (or root, with `orRoot`), everyone where
 * there are no uids, and otherwise the owner a file it creates in `dir` gets. The last is for mounts that
 * map owners (NFS root_squash or all_squash, CIFS uid=, bindfs --force-user): there our own files carry
 * another uid, and comparing with ours alone would never resume a download. On such a mount every user's
 * files may map to that one owner, so it cannot tell them apart; SECURITY.md says so.
 */
async function ownedByUs(owner: number, dir: string, orRoot = false): Promise<boolean> {
  const uid = process.getuid?.();
  if (uid === undefined || owner === uid || (orRoot && owner === 0)) return true;
  return owner === (await freshOwner(dir));
}

/** The owner each directory gives the files this process creates in it (probed at most once each). */
const freshOwners = new Map<string, Promise<number | undefined>>();
const FRESH_OWNERS_MAX = 64;

/** The uid of a file this process creates in `dir`, found by creating one; undefined when it cannot. */
function freshOwner(dir: string): Promise<number | undefined> {
  const key = path.resolve(dir);
  let known = freshOwners.get(key);
  if (known === undefined) {
    if (freshOwners.size >= FRESH_OWNERS_MAX) freshOwners.clear();
    known = probeOwner(key);
    freshOwners.set(key, known);
  }
  return known;
}

async function probeOwner(dir: string): Promise<number | undefined> {
  const probe = path.join(dir, `.fts-owner-probe.${process.pid}.${randomBytes(6).toString('hex')}`);
  let fh: FileHandle;
  try {
    fh = await open(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch {
    return undefined; // not writable: nothing will be downloaded here either
  }
  try {
    return (await fh.stat()).uid;
  } catch {
    return undefined;
  } finally {
    await fh.close().catch(() => undefined);
    await unlink(probe).catch(() => undefined);
  }
}

/**
 * Opens LOCAL.part for reading and writing without following a symbolic link. `fresh` creates a new file:
 * exclusively (a file already there, perhaps someone else's, is removed first, and if it cannot be, the
 * open fails). Without `fresh` the kept file is opened only if it is ours (isOurs); a missing or foreign one
 * is an error, which the caller treats as "nothing kept".
 */
export async function openPart(file: string, fresh: boolean): Promise<FileHandle> {
  if (!fresh) {
    const fh = await open(file, constants.O_RDWR | constants.O_NOFOLLOW);
    if (await isOurs(await fh.stat().catch(() => ({ isFile: () => false, uid: -1, nlink: 0 })), path.dirname(file))) return fh;
    await fh.close().catch(() => undefined);
    throw Object.assign(new Error(`${file} is not a regular file of ours`), { code: 'EPERM' });
  }
  const create = (): Promise<FileHandle> => open(file, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_CREAT | constants.O_EXCL, 0o666);
  try {
    return await create();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    await removeQuietly(file);
    return create().catch((again: unknown) => {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
      throw new FtsError('IO_ERROR', `${file} exists and cannot be replaced (another user's file?); remove it or download elsewhere`);
    });
  }
}

/**
 * Whether `target` names a directory to download into. Only one that belongs to us (or root) counts: a
 * symbolic link another user planted in a shared directory must not redirect the download into a directory
 * of their choosing (it is then an ordinary target, which the final rename replaces), and another user's
 * directory is refused outright (they could swap our file inside it), unless the caller named it with a
 * trailing `/`, which never reaches here.
 */
export async function isDirectoryTarget(target: string): Promise<boolean> {
  let st: Stats;
  try {
    st = await lstat(target);
    if (!st.isDirectory() && !st.isSymbolicLink()) return false;
  } catch {
    return false; // missing or unreadable: treat it as a file path; opening the .part reports problems
  }
  // A directory is compared with the owner a file created in it gets (the mount point of an owner-mapping
  // mount is on that mount, its parent is not); a link with the owner of files next to it.
  const trusted = await ownedByUs(st.uid, st.isDirectory() ? target : path.dirname(target), true);
  if (st.isDirectory()) {
    // Someone else's directory: they could swap our file inside it before or after the rename.
    if (!trusted) throw new FtsError('IO_ERROR', `${target} is another user's directory; download into it only by naming it with a trailing /`);
    return true;
  }
  if (!trusted) return false;
  return (await stat(target).catch(() => null))?.isDirectory() === true;
}

/** Removes a file if it exists. Never throws: it runs on cleanup paths. */
export async function removeQuietly(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

/**
 * Removes `file` only if the name still points to the file `id` (nothing when `id` is null): another
 * process may have put its own file under the name since (a second download to the same LOCAL), and
 * that one is not ours to remove. Never throws.
 */
export async function removeIfSame(file: string, id: FileId | null): Promise<void> {
  if (id === null) return;
  const now = await lstat(file).catch(() => null);
  if (now !== null && now.dev === id.dev && now.ino === id.ino) await removeQuietly(file);
}
