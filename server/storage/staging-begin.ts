/**
 * The start of an upload attempt: the request's checks, where a resume of its identity may continue from,
 * and the attempt's own staging file, holding a copy of the durable prefix when it resumes (staging.ts says
 * why every attempt has a file of its own).
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ChunkReader, FileShrank } from '../../protocol/chunk-reader.js';
import { DirectWriter } from '../../protocol/direct-writer.js';
import { framePayloadPool, type PayloadPool } from '../../protocol/payload-pool.js';
import { errnoOf, FtsError, MAX_FILE_SIZE, SHA256_PATTERN, type UploadTag } from '../../protocol/index.js';
import { fsyncDir } from './durable.js';
import { entriesOrNone } from './dir-entries.js';
import { fsError } from './errors.js';
import { resolveName, stagingDir, userDirPath } from './paths.js';
import { inPrivateDir } from './private-dir.js';
import { keyOfPartFile, recordPartialName } from './partial-names.js';
import { keyOf } from './staging-keys.js';
import { SMALL_PARTIAL_BYTES } from './staging-sweep.js';

export interface StagingTarget {
  root: string;
  user: string;
  name: string;
}

/** An attempt's staging file, open, with the path it publishes to and the hash of what it holds already. */
export interface StagingFile {
  target: string;
  stagingPath: string;
  handle: FileHandle;
  writer: DirectWriter;
  hash: Hash;
}

/** The partial files of one identity, each with its current length. */
async function partialsOf(t: StagingTarget, size: number, tag: UploadTag): Promise<Array<{ file: string; length: number }>> {
  const dir = stagingDir(t.root, t.user);
  const key = keyOf(t.name, size, tag);
  const found: Array<{ file: string; length: number }> = [];
  for (const entry of await entriesOrNone(dir)) {
    if (!entry.isFile() || keyOfPartFile(entry.name) !== key) continue;
    const file = path.join(dir, entry.name);
    try {
      found.push({ file, length: (await lstat(file)).size });
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
  }
  return found.sort((a, b) => b.length - a.length);
}

function checkIdentity(size: number, tag: UploadTag): void {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) throw new FtsError('BAD_REQUEST', '"size" is not a valid file size');
  const [field, value] = 'sha256' in tag ? ['sha256', tag.sha256] : ['version', tag.version];
  if (!SHA256_PATTERN.test(value)) throw new FtsError('BAD_REQUEST', `"${field}" must be 64 lowercase hex digits`);
}

/**
 * The durable offset of the partial upload with this identity: the longest of its partial files, after an
 * fsync (the length is read first, so every byte it counts was written before the fsync began). 0 when
 * there is none.
 */
export async function stagedOffset(t: StagingTarget, size: number, tag: UploadTag): Promise<number> {
  resolveName(userDirPath(t.root, t.user), t.name);
  checkIdentity(size, tag);
  // A file-system failure (an unreadable staging directory) is IO_ERROR & co., not a server bug (INTERNAL).
  const partials = await partialsOf(t, size, tag).catch((err: unknown) => {
    throw fsError(err, t.name);
  });
  for (const { file } of partials) {
    let handle: FileHandle;
    try {
      handle = await open(file, constants.O_RDWR | constants.O_NOFOLLOW);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') continue; // taken over or swept meanwhile
      throw fsError(err, t.name);
    }
    try {
      const { size: staged } = await handle.stat();
      await handle.sync();
      await fsyncDir(path.dirname(file));
      return Math.min(staged, size);
    } catch (err) {
      throw fsError(err, t.name);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }
  return 0;
}

/** Validates an upload request's name, identity and offset; returns the path it would publish to. */
export function checkUploadRequest(t: StagingTarget, size: number, tag: UploadTag, offset: number): string {
  const target = resolveName(userDirPath(t.root, t.user), t.name);
  checkIdentity(size, tag);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) throw new FtsError('BAD_REQUEST', '"offset" is not valid for this size');
  return target;
}

/**
 * Validates the request and creates this attempt's own staging file, for beginStagedUpload. With
 * `offset` > 0 the upload continues a partial one: the first `offset` bytes of the identity's longest
 * partial file are copied into the new file and hashed on the way, so the digest checked at commit covers
 * exactly what the new file holds; the old file is then removed. An offset beyond what is staged is refused with OFFSET_MISMATCH
 * carrying the offset to continue from. `copying` is called after each piece of the copy; an error it
 * throws stops the copy (the partial file stays as it was) and is passed through as it is.
 */
export async function openStagingFile(t: StagingTarget, size: number, tag: UploadTag, offset: number, copying: () => void, unsized: boolean): Promise<StagingFile> {
  const target = checkUploadRequest(t, size, tag, offset);

  let source: string | null = null;
  if (offset > 0) {
    const partials = await partialsOf(t, size, tag).catch((err: unknown) => {
      throw fsError(err, t.name);
    });
    source = partials.find((p) => p.length >= offset)?.file ?? null;
    if (source === null) {
      const durable = await stagedOffset(t, size, tag);
      throw new FtsError('OFFSET_MISMATCH', `${t.name}: only ${durable} bytes are staged; resume from there`, { offset: durable });
    }
  }

  const dir = stagingDir(t.root, t.user);
  // 96 random bits: unique across workers and nodes, and O_EXCL makes sure of it anyway.
  const stagingPath = path.join(dir, `${keyOf(t.name, size, tag)}.${randomBytes(12).toString('hex')}.part`);
  let handle: FileHandle;
  const create = () => open(stagingPath, constants.O_CREAT | constants.O_EXCL | constants.O_RDWR | constants.O_NOFOLLOW, 0o600);
  try {
    handle = await inPrivateDir(dir, create);
  } catch (err) {
    throw fsError(err, t.name);
  }
  const hash = createHash('sha256');
  let stoppedBy: unknown = null;
  const copied = (): void => {
    try {
      copying();
    } catch (err) {
      stoppedBy = err;
      throw err;
    }
  };
  try {
    if (source !== null) await copyPrefix(source, handle, offset, hash, copied);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(stagingPath).catch(() => undefined);
    if (err === stoppedBy) throw err;
    // ESTALE: on NFS, a partial file removed by another node while we copied it.
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ESTALE' || (err instanceof FtsError && err.code === 'OFFSET_MISMATCH')) {
      // Another resume took the partial file first: tell the client where it may continue now.
      throw new FtsError('OFFSET_MISMATCH', `${t.name}: the partial upload was taken over; ask for the offset again`, { offset: await stagedOffset(t, size, tag) });
    }
    throw fsError(err, t.name);
  }
  if (source !== null) {
    // The copy must be as durable as the partial file it replaces before that file goes: a crash in
    // between must leave at least one of them whole.
    try {
      await handle.datasync();
      await fsyncDir(dir);
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlink(stagingPath).catch(() => undefined);
      throw fsError(err, t.name);
    }
    await unlink(source).catch(() => undefined);
  }
  // Named from the start, not only when kept: a worker killed or a machine crashed mid-upload never gets to
  // release() it. Small uploads only when kept: one more file per small upload would cost more than the
  // name is worth (they are swept after 10 minutes, SMALL_PARTIAL_MAX_AGE_MS).
  if (size >= SMALL_PARTIAL_BYTES && !unsized) await recordPartialName(t.root, t.user, { name: t.name, size, tag });
  const writer = await DirectWriter.forFile(handle, unsized ? null : size - offset);
  return { target, stagingPath, handle, writer, hash };
}

/**
 * Memory for prefix copies: eight aligned slabs (16 MiB of address space, resident only as far as copies
 * have used it; the lowest slabs are reused first). One copy holds up to two (the piece being written and
 * the one read ahead), so about four copies at once in a worker are read and written with O_DIRECT; pieces
 * of further ones get ordinary memory and go through the page cache, correctly.
 */
let copyPool: PayloadPool | null = null;

/** Read size when copying and hashing the staged prefix of a resumed upload. */
const COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * Copies the first `length` bytes of `source` into `dest`, hashing them; calls `copied` after
 * each piece. A large prefix is read and written with O_DIRECT where the file system allows (chunk-reader.ts,
 * direct-writer.ts): the partial file was itself written with O_DIRECT and is not in the page cache, and
 * filling the cache on both sides is the costliest part of a copy on a VM. The writer's background syncs
 * keep the copy flushed as it goes (a prefix left dirty would make the caller's fsync take as long as the
 * whole copy); the caller makes it durable.
 */
async function copyPrefix(source: string, dest: FileHandle, length: number, hash: Hash, copied: () => void): Promise<void> {
  const from = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW);
  copyPool ??= framePayloadPool(8);
  const pool = copyPool;
  const shrank = (err: unknown): Error => (err instanceof FileShrank ? new FtsError('OFFSET_MISMATCH', 'the staged file shrank', { offset: 0 }) : (err as Error));
  let reader: ChunkReader | null = null;
  let writer: DirectWriter | null = null;
  try {
    reader = await ChunkReader.open(from, length, length, pool, shrank);
    writer = await DirectWriter.forFile(dest, length);
    let position = 0;
    // The next piece is read while the current one is hashed and written.
    for await (const { data, memory } of reader.chunks(0, length, COPY_CHUNK_BYTES)) {
      try {
        hash.update(data);
        await writer.writeAt([data], position);
      } finally {
        pool.release(memory);
      }
      position += data.length;
      copied();
    }
    await writer.settle();
  } finally {
    await writer?.closeDirect();
    await reader?.close();
    await from.close().catch(() => undefined);
  }
}
