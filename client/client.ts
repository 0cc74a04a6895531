/**
 * FtsClient: the library API over one fts connection. Every method may be called without waiting for the
 * previous one: requests go out in call order and are pipelined (docs/PROTOCOL.md §3.2), so a batch of
 * small operations costs about one round trip. Every error is an FtsError.
 *
 * Each method reserves its place in the request order synchronously, before its first await, so that for
 * example `upload(x)` followed by `download(x)` downloads the new file even though the upload must first
 * hash its file.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, MAX_FILE_SIZE, nameProblem, type Header } from '../protocol/index.js';
import { FtsConnection, type ConnectOptions } from './connection.js';
import { FileDownload, MemoryDownload } from './download.js';
import { localFsError } from './errors.js';
import { digestBuffer, digestFile, Limiter, sendBuffer, sendFile, type Digest, type ProgressCallback } from './upload.js';

export type { ConnectOptions } from './connection.js';
export type { ProgressCallback } from './upload.js';

export interface TransferOptions {
  /** Called after each data frame with the bytes moved so far and the total. */
  onProgress?: ProgressCallback;
}

export interface UploadResult {
  name: string;
  size: number;
  sha256: string;
  /** Modification time of the published file, milliseconds since the UNIX epoch. */
  mtime: number;
}

export interface DownloadResult {
  name: string;
  size: number;
  sha256: string;
  /** Where the file was written. */
  localPath: string;
}

export interface DownloadBufferResult {
  data: Buffer;
  size: number;
  sha256: string;
}

export interface ListEntry {
  name: string;
  /** Present with `long: true`. */
  size?: number;
  /** Present with `long: true`; milliseconds since the UNIX epoch. */
  mtime?: number;
}

export interface ListOptions {
  /** Ask for sizes and modification times as well as names. Default false. */
  long?: boolean;
}

/** Files hashed at the same time at most, however many uploads are pipelined. */
const HASH_CONCURRENCY = 2;

function checkName(name: string): void {
  const problem = nameProblem(name);
  if (problem !== null) throw new FtsError('BAD_NAME', `${JSON.stringify(name)}: ${problem}`);
}

function bad(message: string): FtsError {
  return new FtsError('PROTOCOL_ERROR', message);
}

function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

export class FtsClient {
  private readonly hashing = new Limiter(HASH_CONCURRENCY);

  private constructor(private readonly conn: FtsConnection) {}

  /** Connects and reads the greeting. Default 127.0.0.1:5421, 10 s timeout. */
  static async connect(options: ConnectOptions = {}): Promise<FtsClient> {
    return new FtsClient(await FtsConnection.open(options));
  }

  /** The server's greeting (protocol, server, mechs, caps, maxHeader, maxChunk). */
  get greeting(): Record<string, unknown> {
    return this.conn.greeting;
  }

  /** False once the connection is closed or failed; every later call then fails at once. */
  get connected(): boolean {
    return this.conn.isOpen;
  }

  /** Logs in with mechanism `plain`. A wrong user or password is the fatal AUTH_FAILED. */
  async auth(user: string, password: string): Promise<void> {
    const mechs = this.conn.greeting['mechs'];
    if (Array.isArray(mechs) && !mechs.includes('plain')) {
      throw new FtsError('UNSUPPORTED_MECHANISM', 'the server does not offer the "plain" mechanism');
    }
    await this.conn.request({ header: { op: 'auth', mech: 'plain', user, password } });
  }

  /**
   * Uploads a local file, by default under its base name. The file is hashed first, then streamed in
   * DEFAULT_CHUNK_BYTES frames; memory use does not depend on its size.
   */
  async upload(localPath: string, name?: string, options: TransferOptions = {}): Promise<UploadResult> {
    const remote = name ?? path.basename(localPath);
    checkName(remote);
    // Opening and hashing start now, so that they overlap with earlier requests still being sent.
    const file = openRegularFile(localPath);
    const prepared = file.then((fh) => this.hashing.run(() => digestFile(fh, localPath)));
    prepared.catch(() => undefined); // reported through the request below
    let body: Promise<unknown> = Promise.resolve();
    try {
      const reply = await this.conn.request({
        header: async () => {
          const d = await prepared;
          return { op: 'upload', name: remote, size: d.size, sha256: d.sha256, offset: 0 };
        },
        // Only called once the header was produced, so both promises are already fulfilled.
        body: (out) => {
          const run = Promise.all([file, prepared]).then(([fh, d]) => sendFile(fh, d.size, out, localPath, options.onProgress));
          body = run.catch(() => undefined);
          return run;
        },
      });
      return uploadResult(reply, remote, await prepared);
    } finally {
      // The request can fail (connection lost) while the body still reads; close only once it stopped.
      await body;
      const fh = await file.catch(() => null);
      await fh?.close().catch(() => undefined);
    }
  }

  /** Uploads bytes held in memory. */
  async uploadBuffer(name: string, data: Uint8Array): Promise<UploadResult> {
    checkName(name);
    const digest = digestBuffer(data);
    const reply = await this.conn.request({
      header: { op: 'upload', name, size: digest.size, sha256: digest.sha256, offset: 0 },
      body: (out) => sendBuffer(data, out),
    });
    return uploadResult(reply, name, digest);
  }

  /**
   * Downloads a file to localPath (default: the name, in the current directory; a directory means the name
   * inside it). The data goes to a temporary file that replaces the target only after it has been
   * verified and synced; on any failure the temporary file is removed and the target left untouched.
   */
  async download(name: string, localPath?: string, options: TransferOptions = {}): Promise<DownloadResult> {
    checkName(name);
    const sink = new FileDownload(this.conn, name, localPath, options.onProgress);
    try {
      const reply = await this.conn.request({
        header: async () => {
          await sink.prepare();
          return { op: 'download', name, offset: 0 };
        },
        onInterim: (h) => sink.onInterim(h),
        onData: (p) => sink.onData(p),
      });
      const done = await sink.commit(reply);
      return { name, ...done };
    } catch (err) {
      await sink.discard();
      throw err;
    }
  }

  /** Downloads a whole file into memory, verified like download(). */
  async downloadBuffer(name: string): Promise<DownloadBufferResult> {
    checkName(name);
    const sink = new MemoryDownload('download');
    const reply = await this.conn.request({
      header: { op: 'download', name, offset: 0 },
      onInterim: (h) => sink.onInterim(h),
      onData: (p) => sink.onData(p),
    });
    return sink.finish(reply);
  }

  /** The first 1024 bytes (VIEW_BYTES) of a file, or the whole file if it is shorter. */
  async view(name: string): Promise<Buffer> {
    checkName(name);
    const sink = new MemoryDownload('view');
    const reply = await this.conn.request({
      header: { op: 'view', name },
      onInterim: (h) => sink.onInterim(h),
      onData: (p) => sink.onData(p),
    });
    return sink.finish(reply).data; // at most VIEW_BYTES: DataPhase refuses a longer announced length
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    await this.conn.request({ header: { op: 'delete', name } });
  }

  /** The user's files in the server's order (ascending UTF-8 bytes of the names). */
  async list(options: ListOptions = {}): Promise<ListEntry[]> {
    const long = options.long ?? false;
    const entries: ListEntry[] = [];
    const reply = await this.conn.request({
      header: { op: 'list', long },
      onInterim: (h) => entries.push(listEntry(h, long)),
    });
    if (reply['count'] !== undefined && reply['count'] !== entries.length) {
      throw bad(`list announced ${String(reply['count'])} entries but sent ${entries.length}`);
    }
    return entries;
  }

  async noop(): Promise<void> {
    await this.conn.request({ header: { op: 'noop' } });
  }

  /** Sends quit, waits for its 'ok' and for the server to close the connection. */
  async quit(): Promise<void> {
    await this.conn.quit();
  }

  /** Closes the connection at once; outstanding requests fail with IO_ERROR. */
  close(): void {
    this.conn.close();
  }
}

function uploadResult(reply: Header, name: string, sent: Digest): UploadResult {
  const { size, sha256, mtime } = reply;
  if (size !== sent.size || sha256 !== sent.sha256) throw bad('upload reply disagrees with the size or sha256 sent');
  if (!isTime(mtime)) throw bad('upload reply without a valid mtime');
  return { name: typeof reply['name'] === 'string' ? reply['name'] : name, size: sent.size, sha256: sent.sha256, mtime };
}

/**
 * One 'entry' reply. Names are checked like any other name: a server (or something posing as one) must
 * not be able to put control characters or path separators into our output or our file system.
 */
function listEntry(h: Header, long: boolean): ListEntry {
  if (h['status'] !== 'entry') throw bad(`unexpected ${JSON.stringify(h['status'])} reply to list`);
  const name = h['name'];
  if (typeof name !== 'string' || nameProblem(name) !== null) throw bad('list entry with an invalid name');
  if (!long) return { name };
  const { size, mtime } = h;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE || !isTime(mtime)) {
    throw bad(`list entry ${JSON.stringify(name)} without a valid size and mtime`);
  }
  return { name, size, mtime };
}

async function openRegularFile(localPath: string): Promise<FileHandle> {
  let fh: FileHandle | null = null;
  try {
    // stat before open: opening a FIFO for reading would block until someone writes to it.
    if (!(await stat(localPath)).isFile()) throw new FtsError('NOT_A_FILE', `${localPath}: not a regular file`);
    fh = await open(localPath, 'r');
    if (!(await fh.stat()).isFile()) throw new FtsError('NOT_A_FILE', `${localPath}: not a regular file`);
    return fh;
  } catch (err) {
    await fh?.close().catch(() => undefined);
    throw localFsError(err, localPath);
  }
}
