/**
 * `skipSame` (fts upload, download, mput, mget --skip-same): a transfer left out because both ends already
 * hold the same bytes, as rsync --checksum and lftp's mirror do for repeated runs (a nightly upload of a
 * directory sends only what changed). "The same" is the same size and the same SHA-256: the server's side
 * is what `hash` (PROTOCOL.md §6.11) answers, the digest verified when that version was uploaded; the local
 * side is read and hashed, but only when the sizes agree.
 */
import { constants } from 'node:fs';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { errnoOf, FtsError } from '../protocol/index.js';
import { isServerError, localFsError } from './errors.js';
import { digestFile } from './upload.js';
import type { DownloadResult, FileClient, TransferOptions, UploadResult } from './client.js';
import { downloadTarget } from './download.js';

/** What `hash` tells of a server file, as far as a comparison needs it. */
export interface ServerDigest {
  size: number;
  sha256: string;
  mtime: number;
}

/**
 * The server's file `name`, or null when there is none this user may compare with (no such file, not a
 * file, or no permission to read it): then nothing can be skipped and the transfer runs, to fail or not on
 * its own terms. Any other failure is the caller's.
 */
export async function serverDigest(hash: (name: string) => Promise<ServerDigest>, name: string): Promise<ServerDigest | null> {
  try {
    return await hash(name);
  } catch (err) {
    if (err instanceof FtsError && isServerError(err) && (err.code === 'NOT_FOUND' || err.code === 'NOT_A_FILE' || err.code === 'PERMISSION_DENIED')) return null;
    throw err;
  }
}

/** Whether `file` is a regular file (or a link to one): something a download could be compared with. */
export async function isRegularFile(file: string): Promise<boolean> {
  const st = await lstat(file).catch(() => null);
  if (st === null) return false;
  return st.isFile() || st.isSymbolicLink();
}

/** Whether the local regular file `file` holds exactly the bytes `there` describes; false when it does not exist. */
export async function holdsSame(file: string, there: ServerDigest): Promise<boolean> {
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw localFsError(err, file);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== there.size) return false;
    const local = await digestFile(fh, file);
    return local.size === there.size && local.sha256 === there.sha256;
  } finally {
    await fh.close();
  }
}

/** How a comparison waits for local hashing (a write turn keeps its session alive meanwhile). */
type Wait = <T>(work: Promise<T>) => Promise<T>;

/** The result of an upload left out: what the server holds. */
export function skippedUpload(name: string, there: ServerDigest): UploadResult {
  return { name, size: there.size, sha256: there.sha256, mtime: there.mtime, resumedFrom: 0, skipped: true };
}

/** The result of a download left out: the local target holds the server file's bytes. */
export function skippedDownload(name: string, same: { there: ServerDigest; target: string }): DownloadResult {
  return { name, size: same.there.size, sha256: same.there.sha256, localPath: same.target, resumedFrom: 0, skipped: true };
}

/**
 * The server's `name` and the local target of its download, when that target holds exactly its bytes; else
 * null. Without a local file there is nothing to compare: the server is not asked (a hash can mean reading
 * the whole file there).
 */
export async function localHoldsSame(hash: (name: string) => Promise<ServerDigest>, name: string, localPath: string | undefined, wait: Wait = (w) => w): Promise<{ there: ServerDigest; target: string } | null> {
  const target = await downloadTarget(name, localPath);
  if (!(await isRegularFile(target))) return null;
  const there = await serverDigest(hash, name);
  return there !== null && (await wait(holdsSame(target, there))) ? { there, target } : null;
}

/**
 * skipSame checked ahead of the upload instead of at its turn (FtsClient's): the `hash` requests of a batch
 * go out pipelined and each upload is queued once its check is done, so an upload does not keep its place
 * in the request order. For batches of distinct names (mput), where nothing queued behind depends on one.
 */
export async function uploadUnlessSame(client: FileClient, localPath: string, name: string, options: TransferOptions): Promise<UploadResult> {
  if (options.skipSame !== true || !client.offers('hash')) return client.upload(localPath, name, options);
  const there = await serverDigest((n) => client.hash(n), name);
  if (there !== null && (await holdsSame(localPath, there))) return skippedUpload(name, there);
  return client.upload(localPath, name, { ...options, skipSame: false });
}

/** uploadUnlessSame's counterpart for downloads (mget). */
export async function downloadUnlessSame(client: FileClient, name: string, localPath: string, options: TransferOptions): Promise<DownloadResult> {
  if (options.skipSame !== true || !client.offers('hash')) return client.download(name, localPath, options);
  const same = await localHoldsSame((n) => client.hash(n), name, localPath);
  if (same !== null) return skippedDownload(name, same);
  return client.download(name, localPath, { ...options, skipSame: false });
}
