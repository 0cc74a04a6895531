/**
 * The local half of `download` and `view` (§6.3, §6.4): checking the data phase against what the server
 * announced, and putting the bytes somewhere.
 *
 * A file download is written to LOCAL.part (with the sidecar LOCAL.part.json naming the server version,
 * see part-file.ts) and renamed over LOCAL only after the byte count and the SHA-256 of the whole file
 * match the final reply, and after an fsync. So LOCAL only ever holds a complete, verified file (or
 * whatever it held before). When the transfer is cut (connection lost, Ctrl+C) the .part and its sidecar
 * stay, and the next download of the same name to the same target continues from there.
 */
import { createHash, type Hash } from 'node:crypto';
import { lstat, open, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, SHA256_PATTERN, VIEW_BYTES, type Header } from '../protocol/index.js';
import { DirectWriter } from '../protocol/direct-writer.js';
import { GroupCommit } from '../protocol/group-commit.js';
import { localFsError } from './errors.js';
import { clientPayloads } from './payloads.js';
import { isDirectoryTarget, KEEP_PART_MIN_BYTES, openPart, partPaths, readSidecar, removeIfSame, removeQuietly, writeSidecar, type FileId, type PartPaths, type RemoteVersion } from './part-file.js';
import { hashInto, type ProgressCallback } from './upload.js';

/** The connection's read throttle, used to stop the network from outrunning the disk. */
export interface ReadThrottle {
  pauseReading(): void;
  resumeReading(): void;
}

/**
 * Pause the socket when this many received bytes wait for the disk; resume below the low mark. What waits
 * is written in one go when the running write ends, so the high mark is also the largest write: measured in
 * session 13, 16 MiB instead of 8 took a 1 GiB download from ~450 to ~490 MiB/s on the reference VM (each
 * direct write pays a fixed hand-off and device round trip).
 */
const WRITE_HIGH_WATER_BYTES = 16 * 1024 * 1024;
const WRITE_LOW_WATER_BYTES = 4 * 1024 * 1024;

function bad(message: string): FtsError {
  return new FtsError('PROTOCOL_ERROR', message);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Checks one data phase: the 'data' reply, the byte count, the SHA-256 of the whole file. `kind` says what
 * the request asked for: a download (whole, or continued at an offset after resumeAt()), or a view (the
 * first VIEW_BYTES bytes, no hash).
 */
export class DataPhase {
  size = -1;
  length = -1;
  /** The offset the server actually used (0 when it sent the whole file). */
  offset = 0;
  mtime = 0;
  received = 0;
  private hash: Hash | null;
  private resume: { offset: number; prefix: Hash } | null = null;

  constructor(
    private readonly kind: 'download' | 'view',
    private readonly onProgress?: ProgressCallback,
  ) {
    this.hash = kind === 'download' ? createHash('sha256') : null;
  }

  /**
   * Declares that the request asked for `offset` > 0; `prefix` already holds the SHA-256 state of the
   * local bytes 0 … offset−1. The server may still answer with offset 0 (the file changed).
   */
  resumeAt(offset: number, prefix: Hash): void {
    if (this.kind !== 'download') throw new FtsError('INTERNAL', 'a view cannot resume');
    this.resume = { offset, prefix };
  }

  /** Hashes into `hash` (fresh) instead of a hash of its own, for a caller that carries it on (stream-download.ts). */
  useHash(hash: Hash): void {
    if (this.kind !== 'download') throw new FtsError('INTERNAL', 'a view has no hash');
    this.hash = hash;
  }

  /** Validates the interim reply. Anything but 'data' is out of protocol for these operations. */
  begin(reply: Header): void {
    if (reply['status'] !== 'data') throw bad(`unexpected ${JSON.stringify(reply['status'])} reply`);
    if (this.length >= 0) throw bad('second data reply for one request');
    const { size, length, mtime } = reply;
    const offset = reply['offset'] ?? 0;
    if (!isSize(size) || !isSize(length) || !isSize(offset)) throw bad('data reply with an invalid size, length or offset');
    if (offset !== 0 && offset !== this.resume?.offset) throw bad(`data reply at offset ${offset}, which was not asked for`);
    if (offset > size) throw bad('data reply with an offset past the end of the file');
    if (this.kind === 'download' && (typeof mtime !== 'number' || !Number.isSafeInteger(mtime))) throw bad('data reply without a valid mtime');
    const expected = this.kind === 'view' ? Math.min(size, VIEW_BYTES) : size - offset;
    if (length !== expected) throw bad(`data reply announces ${length} bytes where ${expected} were expected`);
    if (offset > 0 && this.resume !== null) this.hash = this.resume.prefix;
    this.size = size;
    this.length = length;
    this.offset = offset;
    this.mtime = typeof mtime === 'number' ? mtime : 0;
  }

  add(payload: Buffer): void {
    this.received += payload.length;
    this.hash?.update(payload);
    this.onProgress?.(this.offset + this.received, this.kind === 'view' ? this.length : this.size);
  }

  /** Checks the final 'ok' against what arrived; returns the verified SHA-256 for downloads, '' for views. */
  finish(reply: Header): string {
    if (this.length < 0) throw bad('final reply without a data phase');
    // The connection already refuses a final 'ok' that cuts a data phase short; this is the end-to-end check.
    if (this.received !== this.length) throw bad(`received ${this.received} of ${this.length} bytes`);
    if (reply['size'] !== this.size || (reply['length'] !== undefined && reply['length'] !== this.length)) {
      throw bad('final reply disagrees with the data reply about the size');
    }
    if (this.hash === null) return '';
    const expected = reply['sha256'];
    if (typeof expected !== 'string' || !SHA256_PATTERN.test(expected)) throw bad('final reply without a valid sha256');
    const actual = this.hash.digest('hex');
    if (actual !== expected) {
      const what = this.offset > 0 ? `the kept ${this.offset} bytes plus the received bytes hash` : 'received bytes hash';
      throw new FtsError('CHECKSUM_MISMATCH', `${what} to ${actual}, the server announced ${expected}`);
    }
    return actual;
  }
}

/** Collects a data phase in memory (downloadBuffer, view). */
export class MemoryDownload {
  readonly phase: DataPhase;
  private readonly chunks: Buffer[] = [];

  constructor(kind: 'download' | 'view', onProgress?: ProgressCallback) {
    this.phase = new DataPhase(kind, onProgress);
  }

  onInterim(reply: Header): void {
    this.phase.begin(reply);
  }

  onData(payload: Buffer): void {
    this.phase.add(payload);
    this.chunks.push(payload);
  }

  finish(reply: Header): { data: Buffer; size: number; sha256: string } {
    try {
      const sha256 = this.phase.finish(reply);
      return { data: Buffer.concat(this.chunks, this.phase.received), size: this.phase.size, sha256 };
    } finally {
      this.dispose(); // Buffer.concat copied them
    }
  }

  /** Gives the payloads' memory back to the pool; call it however the request ended. Idempotent. */
  dispose(): void {
    for (const chunk of this.chunks.splice(0)) clientPayloads.release(chunk);
  }
}

export interface FileDownloadOptions {
  /** Continue from LOCAL.part when its sidecar names this remote file. False: always start afresh. */
  resume: boolean;
  /** Called once the data phase starts, with the offset the server sends from and the file size. */
  onStart?: (offset: number, size: number) => void;
  onProgress?: ProgressCallback;
}

/** Where a download of `name` to `localPath` goes: the name in the current directory by default, inside `localPath` when it is a directory. */
export async function downloadTarget(name: string, localPath: string | undefined): Promise<string> {
  const target = localPath ?? name;
  return target.endsWith('/') || target.endsWith(path.sep) || (await isDirectoryTarget(target)) ? path.join(target, name) : target;
}

/** The claim of the download begun last (FileDownload.openPart): the next one claims after it. */
let claiming: Promise<unknown> = Promise.resolve();

/**
 * The paths (target, .part, sidecar) of downloads running in this process. A download whose paths meet
 * another's is refused: two downloads to one target would write one .part at once, and `mget x.part x`
 * would have one download's target be the other's .part.
 */
const claimedPaths = new Set<string>();

function claimsOf(target: string, paths: PartPaths): string[] {
  return [target, paths.part, paths.sidecar].map((p) => path.resolve(p));
}

/** Streams a data phase into LOCAL.part and publishes it under LOCAL once verified. */
export class FileDownload {
  readonly phase: DataPhase;
  /** Where the file ends up; known after prepare(). */
  target = '';
  private paths: PartPaths | null = null;
  private fh: FileHandle | null = null;
  /** Writes into fh, large downloads with O_DIRECT where possible; set at the data reply. */
  private writer: DirectWriter | null = null;
  /** The offset asked for: the length of the kept prefix, 0 when starting afresh. */
  private requested = 0;
  /** The version the sidecar on disk names, when it describes what LOCAL.part holds; else null. */
  private kept: RemoteVersion | null = null;
  /**
   * Which files under the .part and sidecar names are ours (null: none, or not known): only those are
   * removed by name. Null for the sidecar also saves an unlink per small download.
   */
  private partId: FileId | null = null;
  private sidecarId: FileId | null = null;
  /** Disk writes (and sidecar updates) run one after another, in order; `queued` bytes are waiting. */
  private writes: Promise<void> = Promise.resolve();
  private queued = 0;
  /** Payloads received and not yet taken by a write, and the file position of the first. */
  private batch: Buffer[] = [];
  private batchAt = 0;
  private position = 0;
  private writeError: FtsError | null = null;
  private paused = false;
  /** prepare() in progress or done; abandon() waits for it, or a late .part would escape clean-up. */
  private preparing: Promise<void> | null = null;
  /** abandon() was called: a prepare() still hashing the kept LOCAL.part stops. */
  private abandoned = false;

  constructor(
    private readonly throttle: ReadThrottle,
    private readonly name: string,
    private readonly localPath: string | undefined,
    private readonly options: FileDownloadOptions,
  ) {
    this.phase = new DataPhase('download', options.onProgress);
  }

  /**
   * Resolves the target (the remote name in the current directory by default; inside the directory when
   * localPath names one) and opens LOCAL.part next to it, so that the final rename stays on one file
   * system and is atomic. When a kept prefix can be continued, hashes it (the final check covers the
   * whole file) and remembers the offset to ask for.
   */
  prepare(): Promise<void> {
    this.preparing ??= this.openPart();
    return this.preparing;
  }

  private async openPart(): Promise<void> {
    // Claimed one download after another, in the order the downloads began: which of two clashing
    // downloads of a pipelined batch (mget x.part x) is refused must not depend on which stat returns first.
    const claimed = claiming.then(async () => {
      const target = await downloadTarget(this.name, this.localPath);
      const paths = partPaths(target);
      const claims = claimsOf(target, paths);
      if (claims.some((p) => claimedPaths.has(p))) throw new FtsError('IO_ERROR', `${target}: another download in progress writes to this file or its ${path.basename(paths.part)}`);
      for (const p of claims) claimedPaths.add(p);
      return { target, paths };
    });
    claiming = claimed.catch(() => undefined);
    const { target, paths } = await claimed;
    this.target = target;
    this.paths = paths;
    try {
      const sidecar = this.options.resume ? await readSidecar(paths.sidecar) : null;
      if (sidecar !== null && sidecar !== 'missing' && (await this.openKept(paths, sidecar.version))) {
        this.sidecarId = sidecar.id;
        return;
      }
      this.fh = await openPart(paths.part, true);
      if (sidecar !== 'missing') await removeQuietly(paths.sidecar); // it described bytes that are gone now
    } catch (err) {
      if (err instanceof Abandoned) {
        this.release(); // nothing of ours was touched: abandon() must not remove anything
        throw new FtsError('IO_ERROR', `${target}: download abandoned`);
      }
      throw localFsError(err, path.dirname(target) === '.' ? paths.part : path.dirname(target), 'IO_ERROR');
    }
  }

  /** Opens a kept LOCAL.part that its sidecar (`version`) ties to this remote name, and hashes it. False: none usable. */
  private async openKept(paths: PartPaths, version: RemoteVersion): Promise<boolean> {
    if (version.name !== this.name) return false;
    let fh: FileHandle;
    try {
      fh = await openPart(paths.part, false);
    } catch {
      return false; // missing (or a symbolic link): nothing to continue
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size === 0 || st.size > version.size) {
        await fh.close();
        return false;
      }
      const prefix = createHash('sha256');
      // Abandoned while hashing: LOCAL.part and its sidecar stay as they are, for the next run.
      const read = await hashInto(fh, prefix, st.size, paths.part, () => this.abandoned).catch((err: unknown) => {
        throw this.abandoned ? new Abandoned() : err;
      });
      if (read !== st.size) {
        await fh.close();
        return false;
      }
      this.fh = fh;
      this.requested = st.size;
      this.kept = version;
      this.phase.resumeAt(st.size, prefix);
      return true;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** The download request: conditional on the kept version when continuing (§6.3 ifSize/ifMtime). */
  request(): Header {
    if (this.requested === 0 || this.kept === null) return { op: 'download', name: this.name, offset: 0 };
    return { op: 'download', name: this.name, offset: this.requested, ifSize: this.kept.size, ifMtime: this.kept.mtime };
  }

  /** The offset this download continued from (0 when it started afresh); valid after the data reply. */
  get resumedFrom(): number {
    return this.phase.offset;
  }

  onInterim(reply: Header): void {
    this.phase.begin(reply);
    const { offset, size, mtime } = this.phase;
    this.position = offset;
    if (offset === 0) {
      // Starting afresh (nothing kept, or the server's file changed since): the sidecar must name the new
      // version before any of its bytes reach the .part, or a crash could leave new bytes under an old name.
      const version: RemoteVersion = { name: this.name, size, mtime };
      const restart = this.requested > 0;
      const keepable = size >= KEEP_PART_MIN_BYTES;
      this.kept = null;
      if (restart || keepable) {
        this.chain(async () => {
          const paths = this.requirePaths();
          if (restart) {
            await removeIfSame(paths.sidecar, this.sidecarId);
            this.sidecarId = null;
            // A new file, not the kept one truncated: another fts resuming the same LOCAL.part may be writing
            // into that one, or may have renamed it to LOCAL by now.
            const kept = this.fh;
            this.fh = null;
            await kept?.close();
            this.fh = await openPart(paths.part, true);
          }
          if (keepable) {
            // A sidecar that cannot be written (someone else's file or FIFO under its name) only costs the
            // resumability of this download, not the download.
            this.sidecarId = await writeSidecar(paths.sidecar, version).catch(() => null);
            if (this.sidecarId !== null) this.kept = version;
          }
        });
      }
    }
    this.chain(async () => {
      if (this.fh !== null) this.writer = await DirectWriter.forFile(this.fh, size - offset);
    });
    this.options.onStart?.(offset, size);
  }

  onData(payload: Buffer): void {
    this.phase.add(payload);
    if (this.writeError !== null) {
      clientPayloads.release(payload);
      return; // keep consuming the stream; the error is reported at the end
    }
    // Payloads that arrive while a write runs join one batch: the next write takes them all (one writev,
    // and with O_DIRECT one device round trip for several MiB instead of one per frame).
    if (this.batch.length === 0) {
      this.batchAt = this.position;
      this.chain(() => this.writeBatch(), () => this.written(this.batch.splice(0)));
    }
    this.batch.push(payload);
    this.position += payload.length;
    this.queued += payload.length;
    if (!this.paused && this.queued > WRITE_HIGH_WATER_BYTES) {
      this.paused = true;
      this.throttle.pauseReading();
    }
  }

  /**
   * Appends a disk job to the in-order chain; its failure becomes the download's error. `skipped` runs
   * instead of the job once an earlier job has failed.
   */
  private chain(job: () => Promise<void>, skipped?: () => void): void {
    this.writes = this.writes.then(async () => {
      if (this.writeError !== null) return skipped?.();
      try {
        await job();
      } catch (err) {
        this.writeError ??= localFsError(err, this.target);
      }
    });
  }

  /** Writes the gathered batch; its payloads' memory goes back to the pool once written (or failed). */
  private async writeBatch(): Promise<void> {
    const payloads = this.batch.splice(0);
    try {
      await this.writer?.writeAt(payloads, this.batchAt);
    } finally {
      this.written(payloads);
    }
  }

  private written(payloads: Buffer[]): void {
    for (const p of payloads) {
      clientPayloads.release(p);
      this.queued -= p.length;
    }
    if (this.paused && (this.queued <= WRITE_LOW_WATER_BYTES || this.writeError !== null)) this.unpause();
  }

  private unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    this.throttle.resumeReading();
  }

  private requirePaths(): PartPaths {
    if (this.paths === null) throw new FtsError('INTERNAL', 'download used before it was prepared');
    return this.paths;
  }

  /** Verifies the final reply, makes the file durable, renames it into place and removes the sidecar. */
  async commit(reply: Header): Promise<{ size: number; sha256: string; localPath: string }> {
    const sha256 = this.phase.finish(reply);
    await this.writes;
    if (this.writeError !== null) throw this.writeError;
    const fh = this.fh;
    const paths = this.requirePaths();
    if (fh === null) throw new FtsError('INTERNAL', 'download committed before it was prepared');
    try {
      await this.writer?.settle();
      const [, ours] = await Promise.all([fh.sync(), fh.stat(), this.closeWriter()]);
      this.partId = { dev: ours.dev, ino: ours.ino };
      this.fh = null;
      await fh.close();
      // The rename goes by name: it must still name the file we wrote and verified, not one another
      // process has put there meanwhile (a second fts downloading to the same LOCAL).
      const now = await lstat(paths.part);
      if (now.ino !== ours.ino || now.dev !== ours.dev) {
        throw new FtsError('IO_ERROR', `${paths.part} was replaced by another process during the download; ${this.target} was not written`);
      }
      await rename(paths.part, this.target);
    } catch (err) {
      throw localFsError(err, this.target, 'IO_ERROR');
    }
    this.kept = null;
    await removeIfSame(paths.sidecar, this.sidecarId);
    await syncDirectory(path.dirname(this.target));
    this.release();
    return { size: this.phase.size, sha256, localPath: this.target };
  }

  /**
   * Cleans up after a failure. With `keep` (the transfer was cut, not refused) LOCAL.part and its sidecar
   * stay for a later resume, provided they hold a usable prefix; otherwise both are removed. Never throws:
   * it runs on error paths.
   */
  async abandon(keep: boolean): Promise<void> {
    this.abandoned = true;
    // Kept: let the queued writes land, the prefix is good. Dropped: skip them.
    if (!keep) this.writeError ??= new FtsError('IO_ERROR', 'download abandoned');
    this.unpause();
    await this.preparing?.catch(() => undefined);
    await this.writes.catch(() => undefined);
    try {
      await this.writer?.settle();
    } catch (err) {
      // A failed background sync: the bytes may not be on disk, so LOCAL.part is not kept for a resume.
      this.writeError ??= localFsError(err, this.target);
    }
    await this.closeWriter();
    const fh = this.fh;
    this.fh = null;
    let length = 0;
    if (fh !== null) {
      const st = await fh.stat().catch(() => null);
      length = st?.size ?? 0;
      if (st !== null) this.partId = { dev: st.dev, ino: st.ino };
      await fh.close().catch(() => undefined);
    }
    const paths = this.paths;
    const usable = keep && this.writeError === null && this.kept !== null && length > 0;
    if (paths !== null && !usable) {
      // By identity: after a failed commit, or a .part another process replaced, the names may be theirs.
      await removeIfSame(paths.part, this.partId);
      await removeIfSame(paths.sidecar, this.sidecarId);
    }
    this.release();
  }

  private async closeWriter(): Promise<void> {
    const writer = this.writer;
    this.writer = null;
    await writer?.closeDirect();
  }

  private release(): void {
    if (this.paths !== null) for (const p of claimsOf(this.target, this.paths)) claimedPaths.delete(p);
    this.paths = null;
  }
}

/** prepare() stopped because the download was abandoned meanwhile. */
class Abandoned extends Error {}


/**
 * fsync of the directory makes the rename itself durable. Best effort: some file systems refuse it. Many
 * downloads into one directory (mget) share fsyncs: any fsync that starts after a rename covers it.
 */
const directorySyncs = new GroupCommit(async (dir) => {
  let fh: FileHandle | null = null;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Not fatal: the file's data is already synced, only the directory entry may be lost in a crash.
  } finally {
    await fh?.close().catch(() => undefined);
  }
});

function syncDirectory(dir: string): Promise<void> {
  return directorySyncs.commit(path.resolve(dir));
}
