import { createHash, randomBytes, timingSafeEqual, type Hash } from 'node:crypto';
import { constants, type Dirent } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, MAX_FILE_SIZE, SHA256_PATTERN } from '../../protocol/index.js';
import { fsyncDir, mtimeOf } from './durable.js';
import { errnoOf, fsError } from './errors.js';
import { withLock } from './locks.js';
import { resolveName, stagingDir, stagingRoot, userDirPath } from './paths.js';

/**
 * Partial uploads live in <root>/.fts/staging/<user>/ under random names, so nothing partial is ever
 * visible in the user's directory. A staged file becomes public only by one rename, under the name's lock.
 */

export interface StagingTarget {
  root: string;
  user: string;
  name: string;
}

type State = 'open' | 'committing' | 'committed' | 'aborted';

export class StagedUpload {
  readonly name: string;
  readonly size: number;
  readonly #root: string;
  readonly #user: string;
  readonly #target: string;
  readonly #stagingPath: string;
  readonly #expected: Buffer;
  readonly #hash: Hash = createHash('sha256');
  #handle: FileHandle | undefined;
  #received = 0;
  #state: State = 'open';
  #writing = false;
  #aborting: Promise<void> | undefined;

  /** Use beginStagedUpload(); the constructor only assembles already-validated parts. */
  constructor(t: StagingTarget & { target: string; stagingPath: string; handle: FileHandle; size: number; sha256: string }) {
    this.name = t.name;
    this.size = t.size;
    this.#root = t.root;
    this.#user = t.user;
    this.#target = t.target;
    this.#stagingPath = t.stagingPath;
    this.#handle = t.handle;
    this.#expected = Buffer.from(t.sha256, 'hex');
  }

  /** Bytes received so far, including any beyond `size` (those are counted but never written). */
  get received(): number {
    return this.#received;
  }

  /**
   * Appends a chunk. The caller awaits each write before the next (that is how the connection applies
   * backpressure); a second write while one is outstanding is a bug and throws. A failed write aborts the
   * upload (the staging file is removed) before the error is thrown.
   */
  async write(chunk: Buffer): Promise<void> {
    if (this.#state !== 'open') throw new Error(`StagedUpload.write after ${this.#state}`);
    if (this.#writing) throw new Error('StagedUpload.write while another write is outstanding');
    const handle = this.#handle;
    if (handle === undefined) throw new Error('StagedUpload has no open file');
    const position = this.#received;
    this.#received += chunk.length;
    // Bytes beyond the declared size are a protocol violation the decoder already refuses; if any get
    // here they are counted (so commit fails) but not written, so a liar cannot fill the disk.
    if (position >= this.size) return;
    const data = position + chunk.length > this.size ? chunk.subarray(0, this.size - position) : chunk;
    this.#hash.update(data);
    this.#writing = true;
    try {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
        done += bytesWritten;
      }
    } catch (err) {
      await this.abort();
      throw fsError(err, this.name);
    } finally {
      this.#writing = false;
    }
  }

  /**
   * Publishes the file if exactly `size` bytes with the declared SHA-256 were received. Order: fsync the
   * data, close, then under the name's lock rename into place and fsync the directory, so that "ok" means
   * both data and name are on stable storage. Any failure removes the staging file.
   */
  async commit(): Promise<{ mtime: number }> {
    if (this.#state !== 'open') throw new Error(`StagedUpload.commit after ${this.#state}`);
    if (this.#writing) throw new Error('StagedUpload.commit while a write is outstanding');
    const handle = this.#handle;
    if (handle === undefined) throw new Error('StagedUpload has no open file');
    if (this.#received !== this.size) {
      await this.abort();
      throw new FtsError('CHECKSUM_MISMATCH', `${this.name}: received ${this.#received} bytes, expected ${this.size}`);
    }
    const actual = this.#hash.digest();
    if (!timingSafeEqual(actual, this.#expected)) {
      await this.abort();
      throw new FtsError('CHECKSUM_MISMATCH', `${this.name}: SHA-256 of the received bytes does not match`);
    }
    this.#state = 'committing';
    try {
      await handle.sync();
      this.#handle = undefined;
      await handle.close();
      const mtime = await withLock(this.#root, this.#user, this.name, async () => {
        await rename(this.#stagingPath, this.#target);
        await fsyncDir(path.dirname(this.#target));
        // Still under the lock, so this is the version we published, not a racing successor.
        return mtimeOf(await lstat(this.#target));
      });
      this.#state = 'committed';
      return { mtime };
    } catch (err) {
      // If the rename happened and only the directory fsync failed, the file is visible but we cannot
      // promise it is durable, so the client is told it failed; the unlink in abort() then finds nothing.
      await this.abort();
      throw fsError(err, this.name);
    }
  }

  /** Closes and removes the staging file. Idempotent, safe to call concurrently, never throws. */
  abort(): Promise<void> {
    if (this.#state === 'committed') return Promise.resolve();
    this.#aborting ??= this.#doAbort();
    return this.#aborting;
  }

  async #doAbort(): Promise<void> {
    this.#state = 'aborted';
    const handle = this.#handle;
    this.#handle = undefined;
    try {
      await handle?.close();
    } catch {
      // Closing can only fail on a bad descriptor; the unlink below is what matters.
    }
    try {
      await unlink(this.#stagingPath);
    } catch {
      // ENOENT: already gone. Anything else: the staging sweep removes it later.
    }
  }
}

/**
 * Validates the request and creates the staging file. The name is checked first so that a bad name never
 * costs a file; size and digest are re-checked here because the storage layer trusts no caller.
 */
export async function beginStagedUpload(t: StagingTarget, size: number, sha256: string): Promise<StagedUpload> {
  const target = resolveName(userDirPath(t.root, t.user), t.name);
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) throw new FtsError('BAD_REQUEST', '"size" is not a valid file size');
  if (!SHA256_PATTERN.test(sha256)) throw new FtsError('BAD_REQUEST', '"sha256" must be 64 lowercase hex digits');

  const dir = stagingDir(t.root, t.user);
  // 128 random bits: no collision with another worker or node, and O_EXCL makes sure of it anyway.
  const stagingPath = path.join(dir, `${randomBytes(16).toString('hex')}.part`);
  let handle: FileHandle;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    handle = await open(stagingPath, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw fsError(err, t.name);
  }
  return new StagedUpload({ ...t, target, stagingPath, handle, size, sha256 });
}

/**
 * Removes staging files not modified for `maxAgeMs` and returns how many it removed. A live upload writes
 * continuously, so `maxAgeMs` must be well above the stalled-transfer timeout. Safe to run from several
 * processes at once: a file that vanishes under us is simply not counted.
 */
export async function sweepStaging(root: string, maxAgeMs: number): Promise<number> {
  const cutoff = Date.now() - maxAgeMs;
  let removed = 0;
  const users = await readdirOrEmpty(stagingRoot(root));
  for (const userEntry of users) {
    if (!userEntry.isDirectory()) continue;
    const dir = path.join(stagingRoot(root), userEntry.name);
    for (const entry of await readdirOrEmpty(dir)) {
      const file = path.join(dir, entry.name);
      try {
        const st = await lstat(file);
        if (!st.isFile() || st.mtimeMs >= cutoff) continue;
        await unlink(file);
        removed++;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err;
      }
    }
  }
  return removed;
}

async function readdirOrEmpty(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw err;
  }
}
