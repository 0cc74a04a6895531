/**
 * FtsClient: the library API over one fts connection. Every method may be called without waiting for the
 * previous one: requests go out in call order and are pipelined (docs/PROTOCOL.md §3.2), so a batch of
 * small operations costs about one round trip. Every error is an FtsError.
 *
 * Each method reserves its place in the request order synchronously, before its first await, so that for
 * example `upload(x)` followed by `download(x)` downloads the new file even though the upload must first
 * hash its file.
 *
 * Transfers resume: a large upload continues what the server kept of the same file (upload-resume.ts), a
 * download continues LOCAL.part (download.ts), and both resend after a corrupted frame. A dropped
 * connection is final for an FtsClient; ResilientClient (resilient.ts) reconnects and calls again.
 */
import path from 'node:path';
import type { Writable } from 'node:stream';
import { FtsError, MAX_FILE_SIZE, MAX_TOKEN_CHARS, nameProblem, ScramClient, SHA256_PATTERN, type Header, type PartialEntry, type StorageUsage } from '../protocol/index.js';
import { CallbackGuard } from './callbacks.js';
import { badArgument, checkConnectOptions, requireBytes, requireString, requireWritable } from './arguments.js';
import { FtsConnection, type ConnectOptions, type WriteTurn } from './connection.js';
import type { RequestSpec } from './replies.js';
import { FileDownload, MemoryDownload } from './download.js';
import { localHoldsSame, serverDigest, skippedDownload, skippedUpload, type ServerDigest } from './skip-same.js';
import { isServerError, markLocal, withCliHint } from './errors.js';
import { StreamDownload, StreamPosition } from './stream-download.js';
import { sendStream, type KeptUpload, type StreamUploadOptions } from './stream-upload.js';
import { BufferSource, FileSource, Limiter, type ProgressCallback } from './upload.js';
import { MAX_RESENDS, runUpload, type UploadOutcome } from './upload-resume.js';

export type { ConnectOptions } from './connection.js';
export type { ProgressCallback } from './upload.js';
export { StreamPosition } from './stream-download.js';

export interface TransferOptions {
  /**
   * Called with the bytes of the file moved so far (from offset 0) and the total: a download after each data
   * frame; an upload as the server reports what it has received (about four times a second, then once with
   * the total when it answers), or, from a server without `upload-progress`, after each data frame sent.
   * A callback (this one or onStart) that throws aborts its transfer: the connection is reset as close()
   * does (what was sent stays for a resume), and the call rejects with IO_ERROR caused by that error.
   */
  onProgress?: ProgressCallback;
  /**
   * Called whenever data starts to move, with the offset it starts from and the file size: once per
   * attempt, so again after a resend. Lets a progress display measure its rate from the right baseline.
   */
  onStart?: (offset: number, size: number) => void;
  /**
   * Continue a partial transfer: an upload asks the server where a partial upload of the same file stands
   * (files of 1 MiB or more), a download continues from LOCAL.part. Default true.
   */
  resume?: boolean;
  /**
   * Send nothing when both ends already hold the same bytes (the same size and SHA-256; the server's as
   * `hash` answers it): an upload whose name on the server holds the local file's bytes, a download whose
   * local target holds the server file's. The result then says `skipped: true`. Default false. The check
   * keeps the transfer's place in the request order: it runs at the transfer's turn and holds the
   * connection for its round trip (and the local file's hashing), during which nothing else is sent.
   */
  skipSame?: boolean;
}

export interface UploadResult {
  name: string;
  size: number;
  sha256: string;
  /** Modification time of the published file, milliseconds since the UNIX epoch. */
  mtime: number;
  /**
   * The bytes of a partial upload this call continued and kept: > 0 when it continued one, 0 when it started
   * from the beginning or those bytes proved wrong and the file was sent again in full.
   */
  resumedFrom: number;
  /** With `skipSame`: true when the server already held these bytes and nothing was sent (`mtime` is that file's). */
  skipped?: boolean;
}

export interface DownloadResult {
  name: string;
  size: number;
  sha256: string;
  /** Where the file was written. */
  localPath: string;
  /**
   * The bytes of LOCAL.part this call continued and kept: > 0 when it continued one, 0 when it started from
   * the beginning or those bytes proved wrong and the file was fetched again in full.
   */
  resumedFrom: number;
  /** With `skipSame`: true when the local file already held these bytes and nothing was received. */
  skipped?: boolean;
}

export interface StreamDownloadOptions extends Pick<TransferOptions, 'onProgress' | 'onStart'> {
  /**
   * Where an earlier call's download into the same stream stopped (it failed with the connection): this
   * call continues from there, if the server's file is still the same version. Updated as bytes are written.
   */
  position?: StreamPosition;
}

export interface StreamDownloadResult {
  name: string;
  size: number;
  /** The SHA-256 of the whole file, checked against every byte written to the stream (also earlier calls'). */
  sha256: string;
  /** The offset this call's data started at: > 0 when it continued a position, else 0. */
  resumedFrom: number;
}

/** What `hash` answers: one version of a server file and its SHA-256. */
export interface FileHash {
  name: string;
  size: number;
  /** Modification time, milliseconds since the UNIX epoch. */
  mtime: number;
  sha256: string;
  /** The server read the file to answer (else it answered the digest verified when this version was uploaded). */
  read: boolean;
  /**
   * The server read the file, and its bytes no longer match the digest verified when this very version was
   * uploaded (bit rot on the server's storage): `sha256` is that of the bytes it holds now.
   */
  damaged: boolean;
}

export type { StreamUploadOptions } from './stream-upload.js';

/** Options of `hash`. */
export interface HashOptions {
  /** Have the server read and hash the file even when it holds the digest verified at its upload. */
  read?: boolean;
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
  /** With `long: true`, when the server has the digest recorded at upload (files of 8 MiB or more). */
  sha256?: string;
}

export interface ListOptions {
  /** Ask for sizes and modification times as well as names. Default false. */
  long?: boolean;
}

export interface RenameOptions {
  /** Replace a file already called `to` (default false: ALREADY_EXISTS). */
  overwrite?: boolean;
}

/** What the user stores on the server (the `usage` request). */
export type Usage = StorageUsage;

/** One of the user's partial uploads (the `partials` request, PROTOCOL.md §6.10). */
export type PartialUpload = PartialEntry;

/** What `discard` removed. */
export interface DiscardResult {
  /**
   * Bytes removed from the server's storage. null when a ResilientClient's repeat, after a connection lost
   * during the first attempt, found the partial upload gone: that attempt removed it (or its upload ended).
   */
  bytes: number | null;
}

/** The login of a connection: a session token lets a new connection log in without the password. */
export interface SessionInfo {
  user: string;
  /** For auth mechanism `token` (authToken()); opaque. */
  token: string;
  /** Expiry of the token, milliseconds since the UNIX epoch. */
  tokenExpires: number;
  /**
   * What the user may do, as the login's reply said (PROTOCOL.md §5.4: letters of "lrwomd"); absent when the
   * server did not say (everything, then). The server judges each request by the permissions of the moment.
   */
  permissions?: string;
}

/**
 * The file operations shared by FtsClient (one connection) and ResilientClient (reconnects); the CLI's
 * commands are written against this.
 */
export interface FileClient {
  readonly connected: boolean;
  upload(localPath: string, name?: string, options?: TransferOptions): Promise<UploadResult>;
  download(name: string, localPath?: string, options?: TransferOptions): Promise<DownloadResult>;
  downloadStream(name: string, out: Writable, options?: StreamDownloadOptions): Promise<StreamDownloadResult>;
  uploadStream(source: AsyncIterable<Uint8Array>, name: string, options?: StreamUploadOptions): Promise<UploadResult>;
  /** Whether the server's greeting lists the capability `cap` (PROTOCOL.md §4). */
  offers(cap: string): boolean;
  view(name: string): Promise<Buffer>;
  delete(name: string): Promise<void>;
  rename(name: string, to: string, options?: RenameOptions): Promise<void>;
  list(options?: ListOptions): Promise<ListEntry[]>;
  usage(): Promise<Usage>;
  partials(): Promise<PartialUpload[]>;
  discard(key: string): Promise<DiscardResult>;
  hash(name: string, options?: HashOptions): Promise<FileHash>;
  keepAliveWhile<T>(work: Promise<T>): Promise<T>;
  quit(): Promise<void>;
  /** Closes at once; what is in progress fails with `reason` (the CLI's Ctrl+C), by default IO_ERROR. */
  close(reason?: FtsError): void;
}

/** Files hashed at the same time at most, however many uploads are pipelined. */
const HASH_CONCURRENCY = 2;

function checkName(name: string): void {
  requireString(name, 'a file name');
  const problem = nameProblem(name);
  if (problem !== null) throw new FtsError('BAD_NAME', `${JSON.stringify(name)}: ${problem}`);
}

function bad(message: string): FtsError {
  return new FtsError('PROTOCOL_ERROR', message);
}

function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export class FtsClient implements FileClient {
  private readonly hashing = new Limiter(HASH_CONCURRENCY);
  private login: SessionInfo | null = null;

  private constructor(
    private readonly conn: FtsConnection,
    /** auth() may fall back to `plain`: the connection is TLS, or the caller allowed it. */
    private readonly plainAllowed: boolean,
  ) {}

  /** Connects and reads the greeting. Default 127.0.0.1:5421, 10 s timeout. */
  static async connect(options: ConnectOptions = {}): Promise<FtsClient> {
    checkConnectOptions(options);
    return new FtsClient(await FtsConnection.open(options), Boolean(options.tls) || options.allowPlainPassword === true);
  }

  /** The server's greeting (protocol, server, mechs, caps, maxHeader, maxChunk). */
  get greeting(): Record<string, unknown> {
    return this.conn.greeting;
  }

  /** False once the connection is closed or failed; every later call then fails at once. */
  get connected(): boolean {
    return this.conn.isOpen;
  }

  /** Why the server ended this connection (its `bye` or fatal error reply), or null. */
  get endedBy(): FtsError | null {
    return this.conn.endedBy;
  }

  /**
   * The user and session token of the last successful login, or null (not logged in, or a server that
   * issues no tokens). Another connection can log in with the token: authToken().
   */
  get session(): SessionInfo | null {
    return this.login === null ? null : { ...this.login };
  }

  /**
   * Logs in with the best mechanism the server offers: `scram-sha-256` (the password never crosses the
   * wire, and the server proves it knows the verifier), else `plain`, but `plain` without TLS only when
   * ConnectOptions.allowPlainPassword says so (UNSUPPORTED_MECHANISM otherwise: every fts server offers
   * SCRAM, so its absence on a plaintext connection may be a man in the middle after the password). A
   * wrong user or password is the fatal AUTH_FAILED. Do not pipeline other requests behind a login.
   */
  async auth(user: string, password: string): Promise<void> {
    const mechs = this.conn.greeting['mechs'];
    if (Array.isArray(mechs) && mechs.includes('scram-sha-256')) return this.authScram(user, password);
    if (!this.plainAllowed) {
      const why = 'the server does not offer scram-sha-256, and the password is not sent in plaintext without TLS (something on the way may have removed SCRAM)';
      throw withCliHint(new FtsError('UNSUPPORTED_MECHANISM', `${why}; connect with tls, or set allowPlainPassword on a network you trust`), 'use --tls, or --allow-plain on a network you trust');
    }
    return this.authPlain(user, password);
  }

  /**
   * Logs in with mechanism `plain`: the password crosses the wire as written, so only on a TLS connection or
   * with ConnectOptions.allowPlainPassword (UNSUPPORTED_MECHANISM otherwise, before anything is sent).
   */
  async authPlain(user: string, password: string): Promise<void> {
    this.requireMechanism('plain');
    if (!this.plainAllowed) {
      throw withCliHint(new FtsError('UNSUPPORTED_MECHANISM', 'plain sends the password as written: only over tls, or with allowPlainPassword on a network you trust'), 'use --tls, or --allow-plain on a network you trust');
    }
    this.remember(await this.conn.request({ header: { op: 'auth', mech: 'plain', user, password } }));
  }

  /** Logs in with SCRAM-SHA-256 (RFC 5802/7677), and checks the server's signature. */
  async authScram(user: string, password: string): Promise<void> {
    this.requireMechanism('scram-sha-256');
    const scram = new ScramClient(user, password);
    const reply = await this.conn.turn(async (w) => {
      let challenged: (h: Header) => void = () => undefined;
      const challenge = new Promise<Header>((resolve) => {
        challenged = resolve;
      });
      const sent = await w.send({
        header: { op: 'auth', mech: 'scram-sha-256', data: scram.first },
        onInterim: (h) => {
          if (h['status'] !== 'continue') throw new FtsError('PROTOCOL_ERROR', `unexpected ${JSON.stringify(h['status'])} reply during SCRAM`);
          challenged(h);
        },
      });
      // An early final reply (AUTH_FAILED on a malformed message) settles the race by rejecting.
      const first = await Promise.race([challenge, sent.reply]);
      const clientFinal = typeof first['data'] === 'string' ? await scram.final(first['data']) : null;
      if (clientFinal === null) throw new FtsError('PROTOCOL_ERROR', 'malformed SCRAM server-first-message');
      w.continueWith({ op: 'auth', id: first['id'], mech: 'scram-sha-256', data: clientFinal });
      return sent.reply;
    });
    if (typeof reply['data'] !== 'string' || !scram.verifyServer(reply['data'])) {
      this.close();
      throw new FtsError('AUTH_FAILED', 'the server could not prove it knows the password (bad SCRAM server signature)');
    }
    this.remember(reply);
  }

  /**
   * Logs in with mechanism `token`, using the token of an earlier login (session.token) on any
   * connection, without the password. An invalid or expired token is the fatal AUTH_FAILED: log in with
   * the password on a new connection then.
   */
  async authToken(token: string): Promise<void> {
    this.requireMechanism('token');
    this.remember(await this.conn.request({ header: { op: 'auth', mech: 'token', token } }));
  }

  private requireMechanism(mech: string): void {
    const mechs = this.conn.greeting['mechs'];
    if (Array.isArray(mechs) && !mechs.includes(mech)) {
      throw new FtsError('UNSUPPORTED_MECHANISM', `the server does not offer the ${JSON.stringify(mech)} mechanism`);
    }
  }

  private remember(reply: Header): void {
    const { user, token, tokenExpires } = reply;
    // A token that breaks PROTOCOL.md §5.3 (over MAX_TOKEN_CHARS) could never be sent back: a reconnection
    // then logs in with the password instead.
    if (typeof user === 'string' && typeof token === 'string' && token.length <= MAX_TOKEN_CHARS && typeof tokenExpires === 'number' && Number.isSafeInteger(tokenExpires)) {
      const perms = reply['perms'];
      this.login = { user, token, tokenExpires, ...(typeof perms === 'string' && /^l?r?w?o?m?d?$/.test(perms) ? { permissions: perms } : {}) };
    }
  }

  /**
   * Uploads a local file, by default under its base name, in DEFAULT_CHUNK_BYTES frames; memory use does
   * not depend on its size. A file of 1 MiB or more is hashed while it is sent (a streamed upload, where
   * the server offers it; otherwise it is hashed first) and continues a partial upload of the same,
   * unchanged local file (same name, size and version tag; or same SHA-256 when hashed first) that the
   * server kept from an earlier, interrupted attempt; a corrupted frame makes it resend from the server's
   * offset.
   */
  async upload(localPath: string, name?: string, options: TransferOptions = {}): Promise<UploadResult> {
    return this.guarded(options, (o) => this.uploadGuarded(localPath, name, o));
  }

  private async uploadGuarded(localPath: string, name: string | undefined, options: TransferOptions): Promise<UploadResult> {
    requireString(localPath, 'the local path');
    const remote = name ?? path.basename(localPath);
    checkName(remote);
    // A server without `hash` cannot say what it holds: the file is sent, as without skipSame. The check runs
    // at the upload's turn, so that it keeps its place in the request order.
    const source = new FileSource(localPath, this.hashing);
    const skipIf = options.skipSame === true && this.offers('hash') ? (w: WriteTurn) => sameOnServer(w, source, remote) : undefined;
    try {
      const outcome = await runUpload(this.conn, { name: remote, source, resume: options.resume ?? true, ...progress(options), ...(skipIf ? { skipIf } : {}) });
      return 'skipped' in outcome ? skippedUpload(remote, outcome.skipped) : uploadResult(outcome, remote);
    } finally {
      // The request can fail (connection lost) while a send still reads; close only once it stopped.
      await source.close();
    }
  }

  /**
   * Uploads a stream whose length is not known in advance (a pipe, standard input) as `name`, sending its
   * bytes as they come (PROTOCOL.md §6.1 "Unsized uploads"; the server must offer `upload-unsized`). The
   * stream is read once: a dropped connection or any other failure fails the upload and leaves nothing on
   * the server (no resume). Progress totals are Infinity. Needs nothing of the local disk. A chunk that is
   * not bytes (an object-mode stream) fails it with BAD_REQUEST, nothing published. A source that is still
   * open when the upload ends (refused, failed) is left unread, not destroyed: it is the caller's.
   */
  async uploadStream(source: AsyncIterable<Uint8Array>, name: string, options: StreamUploadOptions = {}): Promise<UploadResult> {
    return this.guarded(options, (o) => this.uploadStreamGuarded(source, name, o));
  }

  private async uploadStreamGuarded(source: AsyncIterable<Uint8Array>, name: string, options: StreamUploadOptions): Promise<UploadResult> {
    checkName(name);
    if (typeof (source as Partial<AsyncIterable<Uint8Array>> | null)?.[Symbol.asyncIterator] !== 'function') {
      throw badArgument('uploadStream: the source must be a Readable or an async iterable of bytes');
    }
    this.requireCap('upload-unsized', 'does not take uploads of unknown size');
    const { reply, size, sha256 } = await sendStream(this.conn, name, source, options);
    return uploadResult({ reply, digest: { size, sha256 }, resumedFrom: 0 }, name);
  }

  /**
   * Publishes the bytes the server kept for an unsized upload it could not publish (`keptUpload(err)` of
   * its error, LOCKED mostly): an upload of that size and sha256 at offset = size, with no data (PROTOCOL.md
   * §6.1 "Unsized uploads"). OFFSET_MISMATCH when they are no longer kept (discarded, swept, published).
   */
  async publishKept(name: string, kept: KeptUpload): Promise<UploadResult> {
    checkName(name);
    const { size, sha256 } = kept;
    const reply = await this.conn.request({ header: { op: 'upload', name, size, sha256, offset: size } });
    return uploadResult({ reply, digest: { size, sha256 }, resumedFrom: 0 }, name);
  }

  /** Uploads bytes held in memory (sent whole; resends after a corrupted frame as upload() does). */
  async uploadBuffer(name: string, data: Uint8Array): Promise<UploadResult> {
    checkName(name);
    requireBytes(data, 'uploadBuffer: the data');
    return uploadResult(await runUpload(this.conn, { name, source: new BufferSource(data), resume: false }), name);
  }

  /**
   * Downloads a file to localPath (default: the name, in the current directory; a directory means the name
   * inside it). The data goes to LOCAL.part, which replaces LOCAL only after it has been verified and
   * synced, so LOCAL is never left truncated. A cut transfer (connection lost) keeps LOCAL.part and its
   * sidecar LOCAL.part.json, and the next download of the name to LOCAL continues from there, if the
   * server's file is still the same version. A failed verification of a continued download starts over
   * from 0 once; a frame that arrives corrupted makes it continue from the bytes before it.
   */
  async download(name: string, localPath?: string, options: TransferOptions = {}): Promise<DownloadResult> {
    return this.guarded(options, (o) => this.downloadGuarded(name, localPath, o));
  }

  private async downloadGuarded(name: string, localPath: string | undefined, options: TransferOptions): Promise<DownloadResult> {
    checkName(name);
    if (localPath !== undefined && localPath !== null) requireString(localPath, 'the local path');
    // The comparison runs at the download's turn, so that it keeps its place in the request order.
    const skipCheck = options.skipSame === true && this.offers('hash');
    const resume = (options.resume ?? true) && this.offers('download-offset');
    let resumedFrom: number | null = null;
    let resends = 0;
    let restarted = false;
    for (let attempt = 0; ; attempt++) {
      // A resend continues what this call itself wrote, whatever `resume` said about earlier calls' leftovers.
      const again = attempt > 0 && this.offers('download-offset');
      const sink = new FileDownload(this.conn, name, localPath, { resume: resume || again, ...progress(options) });
      const spec: RequestSpec = {
        header: async () => {
          await sink.prepare();
          return sink.request();
        },
        onInterim: (h) => {
          sink.onInterim(h);
          resumedFrom ??= sink.resumedFrom;
        },
        onData: (p) => sink.onData(p),
      };
      try {
        let reply: Header;
        if (attempt === 0 && skipCheck) {
          // Nothing of the sink is prepared before the comparison: a skipped download touches no local file.
          // Queued before any await, as below; a turn that fails is abandoned below like any failed attempt.
          const first = await this.conn.turn(async (w) => {
            const same = await sameLocally(w, name, localPath);
            return same !== null ? { same } : { sent: await w.send(spec) };
          });
          if (first.same !== undefined) return skippedDownload(name, first.same);
          reply = await first.sent.reply;
        } else {
          // Preparing (target checks, opening LOCAL.part) starts now rather than at the request's turn in the
          // write queue: a pipelined batch of downloads then prepares its files concurrently instead of making
          // every request wait for the file-system round trips of its own preparation.
          sink.prepare().catch(() => undefined); // reported through the header callback
          // The first request is queued before any await, so the download keeps its place in request order.
          reply = await this.conn.request(spec);
        }
        const done = await sink.commit(reply);
        return { name, ...done, resumedFrom: resumedFrom ?? 0 };
      } catch (err) {
        // Kept for a later call when the connection was cut, or for the resend below after a frame arrived
        // corrupted (what came before it is good); dropped when the content is wrong or the file is gone.
        const corrupt = err instanceof FtsError && err.code === 'CHUNK_CORRUPT' && !isServerError(err) && this.connected && resends < MAX_RESENDS;
        const checksum = err instanceof FtsError && err.code === 'CHECKSUM_MISMATCH' && sink.resumedFrom > 0 && !restarted;
        // A server error that says nothing about the bytes (IO_ERROR, LOCKED, SHUTTING_DOWN...) keeps them too:
        // the next run continues, and the whole-file digest still checks them.
        await sink.abandon(corrupt || !this.connected || !disowns(err));
        if (corrupt) resends++;
        else if (checksum) {
          // Sent again from byte 0: nothing an earlier run left was used after all.
          restarted = true;
          resumedFrom = null;
        } else throw err;
      }
    }
  }

  /**
   * Downloads a file into `out` (standard output, a socket, any Writable) as its bytes arrive, and resolves
   * once `out` has taken them all and the SHA-256 of the whole file matched. Unlike download(), the bytes
   * are written before they are verified: a rejection (CHECKSUM_MISMATCH, a lost connection) means that
   * what `out` received must not be used. A frame that arrives corrupted is asked for again, from where
   * the stream stands; so is the rest after a dropped connection, by a later call given the same
   * `position` (ResilientClient does that), provided the server's file is still the same version. An
   * error of `out`, or a file changed since the stream began, closes this connection (the rest of the data
   * would otherwise have to be received and thrown away) and rejects with that error.
   */
  async downloadStream(name: string, out: Writable, options: StreamDownloadOptions = {}): Promise<StreamDownloadResult> {
    return this.guarded(options, (o) => this.downloadStreamGuarded(name, out, o));
  }

  private async downloadStreamGuarded(name: string, out: Writable, options: StreamDownloadOptions): Promise<StreamDownloadResult> {
    checkName(name);
    requireWritable(out, 'downloadStream: the output');
    const position = options.position ?? new StreamPosition();
    const resumedFrom = position.written;
    for (let resends = 0; ; resends++) {
      if (position.written > 0 && !this.offers('download-offset')) {
        throw markLocal(new FtsError('IO_ERROR', `${name}: the server cannot continue a download at an offset (no download-offset capability); the output is incomplete`));
      }
      const unusable = StreamDownload.unusable(out);
      if (unusable !== null) throw unusable;
      // The rest of this download's data cannot be skipped on the wire: the connection goes, and what else was
      // in flight on it fails with a reason that says why, not "closed by client".
      const sink = new StreamDownload(this.conn, name, out, position, progress(options), (failure) =>
        this.conn.close(new FtsError('IO_ERROR', `connection reset: a download on it could not write its output (${failure.message})`)),
      );
      try {
        const reply = await this.conn.request({ header: sink.request(), onInterim: (h) => sink.onInterim(h), onData: (p) => sink.onData(p) });
        return { name, ...(await sink.finish(reply)), resumedFrom };
      } catch (err) {
        if (sink.failure !== null) throw sink.failure;
        const corrupt = err instanceof FtsError && err.code === 'CHUNK_CORRUPT' && !isServerError(err) && this.connected && resends < MAX_RESENDS;
        if (!corrupt) throw err;
      } finally {
        sink.dispose();
      }
    }
  }

  /** Whether the server's greeting lists the capability (PROTOCOL.md §4). */
  offers(capability: string): boolean {
    return this.conn.offers(capability);
  }

  /** Downloads a whole file into memory, verified like download(). */
  async downloadBuffer(name: string): Promise<DownloadBufferResult> {
    checkName(name);
    const sink = new MemoryDownload('download');
    try {
      const reply = await this.conn.request({
        header: { op: 'download', name, offset: 0 },
        onInterim: (h) => sink.onInterim(h),
        onData: (p) => sink.onData(p),
      });
      return sink.finish(reply);
    } finally {
      sink.dispose();
    }
  }

  /** The first 1024 bytes (VIEW_BYTES) of a file, or the whole file if it is shorter. */
  async view(name: string): Promise<Buffer> {
    checkName(name);
    const sink = new MemoryDownload('view');
    try {
      const reply = await this.conn.request({
        header: { op: 'view', name },
        onInterim: (h) => sink.onInterim(h),
        onData: (p) => sink.onData(p),
      });
      return sink.finish(reply).data; // at most VIEW_BYTES: DataPhase refuses a longer announced length
    } finally {
      sink.dispose();
    }
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    await this.conn.request({ header: { op: 'delete', name } });
  }

  /**
   * Gives the file `name` the name `to` (§6.9). A file already called `to` is replaced only with
   * `overwrite`; otherwise ALREADY_EXISTS. Servers that do not offer it (no `rename` capability): UNKNOWN_OP.
   */
  async rename(name: string, to: string, options: RenameOptions = {}): Promise<void> {
    checkName(name);
    checkName(to);
    this.requireCap('rename', 'does not rename files');
    await this.conn.request({ header: { op: 'rename', name, to, overwrite: options.overwrite ?? false } });
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

  /** What the user stores and their quota. Servers that do not offer it (no `usage` capability): UNKNOWN_OP. */
  async usage(): Promise<Usage> {
    this.requireCap('usage', 'does not report usage');
    const reply = await this.conn.request({ header: { op: 'usage' } });
    const count = (key: string): number => {
      const v = reply[key];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`usage reply without a valid "${key}"`);
      return v;
    };
    // maxFiles came later (§6.8): a server that does not send it sets no file-count quota.
    const maxFiles = reply['maxFiles'] === undefined || reply['maxFiles'] === null ? null : count('maxFiles');
    return { used: count('used'), files: count('files'), partial: count('partial'), quota: reply['quota'] === null ? null : count('quota'), maxFiles };
  }

  /**
   * The user's partial uploads (by name; those the server cannot name last). Servers that do not offer it
   * (no `partials` capability): UNKNOWN_OP.
   */
  async partials(): Promise<PartialUpload[]> {
    this.requireCap('partials', 'does not list partial uploads');
    const entries: PartialUpload[] = [];
    const reply = await this.conn.request({ header: { op: 'partials' }, onInterim: (h) => entries.push(partialEntry(h)) });
    if (reply['count'] !== entries.length) throw bad(`partials announced ${String(reply['count'])} entries but sent ${entries.length}`);
    return entries;
  }

  /**
   * Removes the partial upload whose key (from partials(), or stagingKey) is `key`: every staging file of
   * that upload identity. NOT_FOUND when there is none.
   */
  async discard(key: string): Promise<DiscardResult> {
    if (typeof key !== 'string' || !SHA256_PATTERN.test(key)) throw new FtsError('BAD_REQUEST', `${JSON.stringify(key)}: a partial upload's key is 64 lowercase hex digits`);
    this.requireCap('partials', 'does not discard partial uploads');
    const reply = await this.conn.request({ header: { op: 'discard', key } });
    if (!isCount(reply['bytes'])) throw bad('discard reply without a valid "bytes"');
    return { bytes: reply['bytes'] };
  }

  /**
   * The SHA-256 of the server's file `name` (PROTOCOL.md §6.11), without downloading it: the digest recorded
   * when that version was uploaded, or one the server computes by reading it. Compare it with a local
   * file's to know whether they are the same bytes.
   */
  async hash(name: string, options: HashOptions = {}): Promise<FileHash> {
    checkName(name);
    this.requireCap('hash', 'does not hash files');
    const reply = await this.conn.request({ header: { op: 'hash', name, ...(options.read === true ? { read: true } : {}) } });
    return fileHashOf(reply, name, options.read === true);
  }

  /**
   * Runs a transfer with its callbacks guarded (callbacks.ts): one that throws resets this connection, and
   * the transfer fails with what it threw. `run` is called at once, so the transfer keeps its place.
   */
  private guarded<O extends TransferOptions | StreamUploadOptions | StreamDownloadOptions, T>(options: O, run: (guardedOptions: O) => Promise<T>): Promise<T> {
    const guard = new CallbackGuard((reason) => this.conn.close(reason));
    return guard.around(run(guard.wrap(options)));
  }

  /** UNKNOWN_OP before anything is sent when the server's greeting does not list `cap`. */
  private requireCap(cap: string, what: string): void {
    if (!this.conn.offers(cap)) throw new FtsError('UNKNOWN_OP', `this server ${what} (no "${cap}" capability)`);
  }

  /**
   * Resolves (or rejects) as `work` does, sending `noop` meanwhile at a third of the idle timeout the server
   * announced, so that the session outlives local work that comes before its next request (reading
   * standard input, say). A failed noop is ignored: the next request reports the connection's state.
   */
  async keepAliveWhile<T>(work: Promise<T>): Promise<T> {
    const timer = setInterval(() => this.noop().catch(() => undefined), this.conn.keepAliveIntervalMs());
    try {
      return await work;
    } finally {
      clearInterval(timer);
    }
  }

  async noop(): Promise<void> {
    await this.conn.request({ header: { op: 'noop' } });
  }

  /**
   * Sends quit, waits for its 'ok' and for the server to close the connection. Resolves also when the
   * connection is already closed or closing; a second call waits for the first.
   */
  async quit(): Promise<void> {
    await this.conn.quit();
  }

  /** Closes the connection at once; outstanding requests fail with `reason`, by default IO_ERROR. */
  close(reason?: FtsError): void {
    this.conn.close(reason);
  }
}

/** The callbacks of TransferOptions, without the keys that are absent. */
function progress(options: TransferOptions): Pick<TransferOptions, 'onProgress' | 'onStart'> {
  const out: Pick<TransferOptions, 'onProgress' | 'onStart'> = {};
  if (options.onProgress) out.onProgress = options.onProgress;
  if (options.onStart) out.onStart = options.onStart;
  return out;
}

/** A `hash` reply for `name`, checked (`readAsked`: the request had `read`). */
function fileHashOf(reply: Header, name: string, readAsked: boolean): FileHash {
  const { size, mtime, sha256, read, damaged = false } = reply;
  if (reply['name'] !== name) throw bad(`hash reply names ${JSON.stringify(reply['name'])}, not ${JSON.stringify(name)}`);
  if (!isCount(size) || size > MAX_FILE_SIZE || !isTime(mtime) || typeof sha256 !== 'string' || !SHA256_PATTERN.test(sha256)) {
    throw bad(`hash reply for ${JSON.stringify(name)} without a valid size, mtime and sha256`);
  }
  if (typeof read !== 'boolean' || typeof damaged !== 'boolean' || (damaged && !read)) throw bad(`hash reply for ${JSON.stringify(name)} without a valid "read" and "damaged"`);
  if (readAsked && !read) throw bad(`hash reply for ${JSON.stringify(name)} did not read the file as asked`);
  return { name, size, mtime, sha256, read, damaged };
}

/** `hash` of `name` sent within a write turn: the turn waits for its reply (one round trip). */
async function hashInTurn(w: WriteTurn, name: string): Promise<FileHash> {
  const { reply } = await w.send({ header: { op: 'hash', name } });
  return fileHashOf(await reply, name, false);
}

/**
 * skipSame of an upload, at its turn: the server's file `name` when it holds the bytes of `source`, else
 * null. The source's own digest is compared, so the file is read once whether it is then sent or not.
 */
async function sameOnServer(w: WriteTurn, source: FileSource, name: string): Promise<ServerDigest | null> {
  const there = await serverDigest((n) => hashInTurn(w, n), name);
  if (there === null || (await source.size()) !== there.size) return null;
  return (await w.keepAlive(source.digest())).sha256 === there.sha256 ? there : null;
}

/** skipSame of a download, at its turn: the server's file and the local target when the target holds its bytes, else null. */
function sameLocally(w: WriteTurn, name: string, localPath: string | undefined): Promise<{ there: ServerDigest; target: string } | null> {
  return localHoldsSame((n) => hashInTurn(w, n), name, localPath, (work) => w.keepAlive(work));
}

/** A reply saying the kept part of a download is of no use: its bytes are wrong, or the file is gone. */
function disowns(err: unknown): boolean {
  return err instanceof FtsError && (err.code === 'CHECKSUM_MISMATCH' || err.code === 'NOT_FOUND' || err.code === 'NOT_A_FILE');
}

function uploadResult({ reply, digest, resumedFrom }: UploadOutcome, name: string): UploadResult {
  const { size, sha256, mtime } = reply;
  if (size !== digest.size || sha256 !== digest.sha256) throw bad('upload reply disagrees with the size or sha256 sent');
  if (!isTime(mtime)) throw bad('upload reply without a valid mtime');
  // The name is ours: a reply naming another file is out of protocol (and must not reach the terminal).
  if (reply['name'] !== undefined && reply['name'] !== name) throw bad('upload reply names another file');
  return { name, size: digest.size, sha256: digest.sha256, mtime, resumedFrom };
}

/** One 'entry' reply to `partials`, checked like a listing's (a name must be a legal name). */
function partialEntry(h: Header): PartialUpload {
  if (h['status'] !== 'entry') throw bad(`unexpected ${JSON.stringify(h['status'])} reply to partials`);
  const { key, staged, bytes, mtime, expires, name, size, sha256, version } = h;
  if (typeof key !== 'string' || !SHA256_PATTERN.test(key)) throw bad('partials entry without a valid key');
  if (!isCount(staged) || !isCount(bytes) || !isTime(mtime) || !isTime(expires)) throw bad(`partials entry ${key} without valid staged, bytes, mtime and expires`);
  const entry: PartialUpload = { key, staged, bytes, mtime, expires };
  if (name === undefined) return entry;
  if (typeof name !== 'string' || nameProblem(name) !== null) throw bad(`partials entry ${key} with an invalid name`);
  if (!isCount(size) || size > MAX_FILE_SIZE) throw bad(`partials entry ${key} without a valid size`);
  const tag = typeof sha256 === 'string' && SHA256_PATTERN.test(sha256) ? { sha256 } : typeof version === 'string' && SHA256_PATTERN.test(version) ? { version } : null;
  if (tag === null) throw bad(`partials entry ${key} without a valid sha256 or version`);
  return { ...entry, name, size, ...tag };
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
  const sha256 = h['sha256'];
  if (sha256 === undefined) return { name, size, mtime };
  if (typeof sha256 !== 'string' || !SHA256_PATTERN.test(sha256)) throw bad(`list entry ${JSON.stringify(name)} with an invalid sha256`);
  return { name, size, mtime, sha256 };
}
