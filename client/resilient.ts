/**
 * ResilientClient: the file operations of FtsClient over a connection that is replaced when it drops.
 *
 *   const client = await ResilientClient.connect({ host, port, user, password, reconnect: { retries: 5 } });
 *   await client.upload('big.iso');   // survives resets, server restarts and drains
 *
 * When a transfer fails because the connection went away (reset, closed before the final reply, the
 * server draining or timing out: reconnect.ts), it waits (exponential backoff), connects again, logs in
 * with the session token (mechanism `token`; with the password if the token is refused, for example by a
 * restarted server) and calls the operation again, which continues where the data stopped: an upload asks
 * the server's `offset`, a download continues LOCAL.part. Failures that a new connection would not change
 * (AUTH_FAILED, NOT_FOUND, CHECKSUM_MISMATCH, NO_SPACE...) are reported at once. An operation refused with
 * LOCKED (another one held the name's lock for longer than the server waits) is asked again after a backoff,
 * on the same connection, as many times as a dropped connection is retried.
 *
 * Operations are repeated after a drop (a dropped connection is replaced before any later call); a delete
 * or rename whose earlier attempt may have run looks at what it finds first (see delete and rename). A
 * session that an administrator ended (bye KICKED) is never replaced: that call and every later one fail
 * with KICKED. The password is kept in memory for the fallback login.
 */
import { setMaxListeners } from 'node:events';
import { checkConnectOptions, requireString } from './arguments.js';
import { FtsError } from '../protocol/index.js';
import { isAnswer, isLocalFailure, isLostAfterConnect, isServerError, markLocal, markSessionEnded, reconnectFailed } from './errors.js';
import type { Writable } from 'node:stream';
import { StreamPosition } from './stream-download.js';
import { keptUpload, noteKept } from './stream-upload.js';
import { FtsClient, type ConnectOptions, type DiscardResult, type DownloadResult, type FileClient, type FileHash, type HashOptions, type ListEntry, type ListOptions, type PartialUpload, type RenameOptions, type SessionInfo, type StreamDownloadOptions, type StreamUploadOptions, type StreamDownloadResult, type TransferOptions, type UploadResult, type Usage } from './client.js';
import { backoffMs, isTransportFailure, reconnectPolicy, sleep, type ReconnectOptions, type ReconnectPolicy } from './reconnect.js';

export type { ReconnectOptions } from './reconnect.js';

export interface ResilientConnectOptions extends ConnectOptions {
  user: string;
  password: string;
  reconnect?: ReconnectOptions;
  /** Told before each wait for a reconnection (for a "connection lost; reconnecting" notice). */
  onRetry?: (info: RetryInfo) => void;
}

export interface RetryInfo {
  /** 1 for the first retry in a row, up to `retries`. */
  attempt: number;
  retries: number;
  delayMs: number;
  /** Why: the failure of the connection (or of the last reconnection), or the LOCKED refusal. */
  error: unknown;
  /**
   * True after a drop (a new connection follows); false while the first connection is retried (the server
   * turned it away for now) and before a request refused with LOCKED is asked again.
   */
  reconnecting: boolean;
}

/** Refusals of a new connection that a later attempt may not meet. */
const TURNED_AWAY: ReadonlySet<string> = new Set(['TOO_MANY_CONNECTIONS', 'SHUTTING_DOWN']);

/** A token this close to its expiry is not worth a round trip: log in with the password instead. */
const TOKEN_MARGIN_MS = 5_000;

export class ResilientClient implements FileClient {
  private current: FtsClient;
  private pending: Promise<FtsClient> | null = null;
  private closedByUser = false;
  /** The reason close() was given, which calls in progress or waiting to reconnect end with. */
  private closedWith: FtsError | null = null;
  /** Aborted by close() and quit(): a backoff in progress ends at once. */
  private readonly closing = abortWithoutListenerLimit();
  private lastSession: SessionInfo | null;
  private readonly policy: ReconnectPolicy;
  private count = 0;
  /** The KICKED that ended one of our connections: from then on, every call fails with it. */
  private kickedBy: FtsError | null = null;

  private constructor(
    first: FtsClient,
    private readonly options: ResilientConnectOptions,
  ) {
    this.current = first;
    this.lastSession = first.session;
    this.policy = reconnectPolicy(options.reconnect);
  }

  /**
   * Connects and logs in with the password. The first connection is retried (with the reconnect policy)
   * only when the server turned it away for now: TOO_MANY_CONNECTIONS (a burst of logins over
   * --max-startups, or the user's sessions at --max-sessions-per-user) or SHUTTING_DOWN (a draining node; behind a proxy the next one lands elsewhere); or
   * accepted it and lost it before the login completed (closed or reset before a reply: the worker holding
   * it died, and another takes the next connection). Any other failure, a refused connect, a silent peer
   * (more often a wrong port than a hung worker), a wrong password or a TLS certificate included, comes at
   * once.
   */
  static async connect(options: ResilientConnectOptions): Promise<ResilientClient> {
    checkConnectOptions(options);
    requireString(options.user, 'user');
    requireString(options.password, 'password');
    const policy = reconnectPolicy(options.reconnect);
    for (let attempt = 1; ; attempt++) {
      try {
        const client = await FtsClient.connect(options);
        try {
          await client.auth(options.user, options.password);
        } catch (err) {
          client.close();
          throw err;
        }
        return new ResilientClient(client, options);
      } catch (err) {
        // Turned away for now, or accepted and then lost before the login completed (a worker died).
        const busy = (isServerError(err) && TURNED_AWAY.has((err as FtsError).code)) || isLostAfterConnect(err);
        if (!busy || attempt > policy.retries) throw err;
        const delayMs = backoffMs(attempt, policy);
        tellRetry(options.onRetry, { attempt, retries: policy.retries, delayMs, error: err, reconnecting: false });
        await sleep(delayMs);
      }
    }
  }

  /** The current connection is open (a dropped one is replaced by the next operation). */
  get connected(): boolean {
    return !this.closedByUser && this.current.connected;
  }

  /** How many times a new connection replaced a dropped one. */
  get reconnects(): number {
    return this.count;
  }

  /** The login of the current connection (its token is what a reconnection uses). */
  get session(): SessionInfo | null {
    return this.current.session ?? this.lastSession;
  }

  /** FtsClient.upload, continued on a new connection after a drop. resumedFrom is the first attempt's. */
  upload(localPath: string, name?: string, options: TransferOptions = {}): Promise<UploadResult> {
    return this.transfer(options, (c, o) => c.upload(localPath, name, o));
  }

  /** FtsClient.download, continued (from LOCAL.part) on a new connection after a drop. */
  download(name: string, localPath?: string, options: TransferOptions = {}): Promise<DownloadResult> {
    return this.transfer(options, (c, o) => c.download(name, localPath, o));
  }

  /**
   * FtsClient.downloadStream, continued on a new connection after a drop from where the stream stands, if
   * the server's file is still the same version (what was written cannot be taken back).
   */
  downloadStream(name: string, out: Writable, options: StreamDownloadOptions = {}): Promise<StreamDownloadResult> {
    const position = options.position ?? new StreamPosition();
    return this.transfer(options, (c, o) => c.downloadStream(name, out, { ...o, position }));
  }

  /**
   * FtsClient.uploadStream. A stream is read once, so it is never repeated: a connection found dead before
   * it starts is replaced first, and any failure after that is final.
   */
  async uploadStream(source: AsyncIterable<Uint8Array>, name: string, options: StreamUploadOptions = {}): Promise<UploadResult> {
    try {
      return await this.retrying((c) => c.uploadStream(source, name, options), { repeat: false });
    } catch (err) {
      const kept = keptUpload(err);
      if (kept === null || !isLocked(err)) throw err;
      // The server kept the verified bytes (PROTOCOL.md §6.1 "Unsized uploads"): only their publish is
      // asked again, as for any upload refused LOCKED. After an attempt that may have run (its reply lost),
      // bytes no longer kept may be the ones it published: the name then holds exactly them.
      const attempts = new Attempts();
      try {
        return await this.retrying(
          async (c) => {
            try {
              return await attempts.run(c.publishKept(name, kept));
            } catch (failure) {
              if (!(attempts.uncertain && failure instanceof FtsError && isAnswer(failure) && failure.code === 'OFFSET_MISMATCH')) throw failure;
              const there = await c.hash(name).catch(() => null);
              if (there === null || there.size !== kept.size || there.sha256 !== kept.sha256) throw failure;
              return { name, size: kept.size, sha256: kept.sha256, mtime: there.mtime, resumedFrom: 0 };
            }
          },
          { lockedBy: err },
        );
      } catch (failure) {
        // Still kept on the server unless it said otherwise: keptUpload() names them on this error too.
        if (!(failure instanceof FtsError && failure.code === 'OFFSET_MISMATCH')) noteKept(failure, kept);
        throw failure;
      }
    }
  }

  /** Whether the server's greeting lists the capability (that of the current connection). */
  offers(cap: string): boolean {
    return this.current.offers(cap);
  }

  view(name: string): Promise<Buffer> {
    return this.retrying((c) => c.view(name));
  }

  list(options: ListOptions = {}): Promise<ListEntry[]> {
    return this.retrying((c) => c.list(options));
  }

  usage(): Promise<Usage> {
    return this.retrying((c) => c.usage());
  }

  /**
   * Repeated after a drop or a SHUTTING_DOWN refusal like the others. When an earlier attempt may have run
   * (its connection was lost, or a `bye` came, before its reply), NOT_FOUND on the repeat means that one
   * deleted the file; after a refusal (the server's reply to that attempt) it means what it says.
   */
  delete(name: string): Promise<void> {
    const attempts = new Attempts();
    return this.retrying(async (c) => {
      try {
        await attempts.run(c.delete(name));
      } catch (err) {
        if (attempts.uncertain && err instanceof FtsError && err.code === 'NOT_FOUND') return;
        throw err;
      }
    });
  }

  /**
   * Repeated after a drop or a SHUTTING_DOWN refusal like the others. When an earlier attempt may have run,
   * the names are looked at first (with `view`), since repeating a rename that happened could move another
   * file: NAME gone and NEWNAME there means it happened; both there cannot be told apart from a file
   * uploaded as NAME since, so that fails (IO_ERROR, nothing moved); otherwise the rename is repeated.
   */
  rename(name: string, to: string, options: RenameOptions = {}): Promise<void> {
    const attempts = new Attempts();
    return this.retrying(async (c) => {
      if (attempts.uncertain && name !== to) {
        const [from, dest] = await present(c, [name, to]);
        if (!from && dest) return;
        if (from && dest) {
          throw new FtsError('IO_ERROR', `${name}: the connection was lost during its rename to ${to}, and both names exist now, so whether it was renamed cannot be told; nothing more was done (check with list)`);
        }
      }
      await attempts.run(c.rename(name, to, options));
    });
  }

  partials(): Promise<PartialUpload[]> {
    return this.retrying((c) => c.partials());
  }

  hash(name: string, options?: HashOptions): Promise<FileHash> {
    return this.retrying((c) => c.hash(name, options));
  }

  /** Repeated like delete: NOT_FOUND after an attempt that may have run means that one discarded it. */
  discard(key: string): Promise<DiscardResult> {
    const attempts = new Attempts();
    return this.retrying(async (c) => {
      try {
        return await attempts.run(c.discard(key));
      } catch (err) {
        if (attempts.uncertain && err instanceof FtsError && err.code === 'NOT_FOUND') return { bytes: null };
        throw err;
      }
    });
  }

  /**
   * FtsClient.keepAliveWhile on the current connection (a connection lost meanwhile is replaced by the next
   * operation, as always).
   */
  keepAliveWhile<T>(work: Promise<T>): Promise<T> {
    return this.current.connected ? this.current.keepAliveWhile(work) : work;
  }

  /** Ends the session politely; a connection that is already gone is just closed. */
  async quit(): Promise<void> {
    this.closedByUser = true;
    this.closing.abort();
    // A connection already gone is just closed (quit() settles whatever its state).
    await this.current.quit();
  }

  /** Closes the connection at once and reconnects no more; operations in progress fail (with `reason`). */
  close(reason?: FtsError): void {
    this.closedByUser = true;
    // What every call in progress ends with, on this connection or waiting for the next one (in a backoff,
    // whose wait ends now).
    this.closedWith = markSessionEnded(reason ?? new FtsError('IO_ERROR', 'connection closed by client'));
    this.closing.abort();
    this.current.close(this.closedWith);
  }

  /** What a call ends with once the user closed: the close's reason, if it gave one. */
  private stopped(otherwise: unknown): unknown {
    return this.closedWith ?? otherwise;
  }

  /**
   * Runs a transfer with retries. Progress callbacks are passed through, and also tell whether an attempt
   * moved the transfer forward (which resets the retry count).
   */
  private async transfer<T extends { resumedFrom: number }>(options: TransferOptions, run: (c: FtsClient, o: TransferOptions) => Promise<T>): Promise<T> {
    /**
     * What the call continued of an earlier run's bytes: the first start's offset, lowered by any later
     * start below it (a restart from 0 after CHECKSUM_MISMATCH, a resend from where the server stands),
     * never raised by a reconnect that continues this call's own bytes.
     */
    let firstOffset: number | null = null;
    let reached = 0;
    const watched: TransferOptions = {
      ...options,
      onStart: (offset, size) => {
        firstOffset = firstOffset === null ? offset : Math.min(firstOffset, offset);
        reached = Math.max(reached, offset);
        options.onStart?.(offset, size);
      },
      onProgress: (done, total) => {
        reached = Math.max(reached, done);
        options.onProgress?.(done, total);
      },
    };
    // Once data has moved, a repeat must not report the transfer as skipped: the bytes the two ends now share
    // may be the ones this call sent (an upload whose reply was lost).
    const result = await this.retrying((c) => run(c, firstOffset === null ? watched : { ...watched, skipSame: false }), { progress: () => reached });
    return { ...result, resumedFrom: firstOffset ?? result.resumedFrom };
  }

  /**
   * Runs `op` on the current connection and, after a transport failure, on new ones: at most
   * policy.retries reconnections in a row without progress. The first attempt starts synchronously when
   * the connection is open, so calls keep their order on the wire (FtsClient pipelines them).
   */
  private async retrying<T>(op: (c: FtsClient) => Promise<T>, how: { repeat?: boolean; progress?: () => number; lockedBy?: unknown } = {}): Promise<T> {
    const repeat = how.repeat ?? true;
    const progress = how.progress ?? (() => 0);
    let client: FtsClient | null = this.current.connected && !this.closedByUser ? this.current : null;
    // An administrator ended the session (fts-admin kick): that is final, also for the calls after it.
    this.throwIfKicked();
    // The drain's bye that ended the connection being replaced (an idle session gets it at once): if no new
    // connection can be had either, the error reports that the server is shutting down, with the
    // reconnection's failure added, rather than only "connection refused".
    let drained = client === null && !this.closedByUser ? drainBye(this.current) : null;
    let lastError: unknown = drained ?? new FtsError('IO_ERROR', 'not connected');
    // How the operation's own connection was lost (no bye): reported with the reconnections' failure too,
    // or a transfer cut mid-way by a stopping server would read as a bare "connection refused".
    let lost: FtsError | null = null;
    const giveUp = (): unknown => {
      if (this.closedByUser) return this.stopped(lastError);
      if (isServerError(lastError)) return lastError;
      const reason = drained ?? lost;
      return reason === null || reason === lastError ? lastError : reconnectFailed(reason, lastError);
    };
    let failures = 0;
    let locked = 0;
    let reached = progress();
    // `lockedBy`: this operation continues one refused LOCKED, whose refusal counts as this one's first:
    // waited out as any LOCKED is (connected or not), or reported as it is when no retry is left.
    if (how.lockedBy !== undefined) {
      if (this.closedByUser) throw this.stopped(how.lockedBy);
      if (!repeat || locked >= this.policy.retries) throw how.lockedBy;
      const delayMs = backoffMs(++locked, this.policy);
      tellRetry(this.options.onRetry, { attempt: locked, retries: this.policy.retries, delayMs, error: how.lockedBy, reconnecting: false });
      await sleep(delayMs, this.closing.signal);
      if (this.closedByUser) throw this.stopped(how.lockedBy);
      client = this.current.connected ? this.current : null;
    }
    for (;;) {
      if (client !== null) {
        try {
          return await op(client);
        } catch (err) {
          // LOCKED: the server waited --lock-timeout for another operation on the name and did nothing (an
          // upload's verified bytes stay staged, so the repeat only publishes them). Asked again later, on
          // the same connection, up to policy.retries times.
          if (repeat && isLocked(err) && client.connected && !this.closedByUser && locked < this.policy.retries) {
            const delayMs = backoffMs(++locked, this.policy);
            tellRetry(this.options.onRetry, { attempt: locked, retries: this.policy.retries, delayMs, error: err, reconnecting: false });
            await sleep(delayMs, this.closing.signal);
            if (this.closedByUser) throw this.stopped(err);
            continue;
          }
          if (!repeat || !this.mayRetry(err, client)) throw err;
          // The kick's bye may come behind reply data, so the call fails as a lost connection: still final.
          this.throwIfKicked(client);
          lastError = err;
          drained = drainBye(client);
          if (err instanceof FtsError) lost = err;
        }
        if (progress() > reached) {
          reached = progress();
          failures = 0;
        }
      }
      if (this.closedByUser) throw this.stopped(lastError);
      if (++failures > this.policy.retries) throw giveUp();
      // A connection found dead before anything was sent (dropped while idle) is replaced at once.
      const delayMs = client !== null || failures > 1 ? backoffMs(failures, this.policy) : 0;
      tellRetry(this.options.onRetry, { attempt: failures, retries: this.policy.retries, delayMs, error: lastError, reconnecting: true });
      if (delayMs > 0) await sleep(delayMs, this.closing.signal);
      if (this.closedByUser) throw this.stopped(lastError);
      try {
        client = await this.replace(client);
        drained = null; // a new connection: whatever ends it next has its own reason
      } catch (err) {
        if (err === this.kickedBy) throw err;
        lastError = err;
        if (!this.mayRetry(err, null)) throw giveUp();
        client = null;
      }
    }
  }

  /** Throws the KICKED that ended `client`, the current connection, or any earlier one. */
  private throwIfKicked(client?: FtsClient): void {
    this.kickedBy ??= (client === undefined ? null : kickBye(client)) ?? kickBye(this.current);
    if (this.kickedBy !== null) throw this.kickedBy;
  }

  /** A failure worth another connection: the transport's, on a connection now gone, not closed by us. */
  private mayRetry(err: unknown, client: FtsClient | null): boolean {
    return !this.closedByUser && isTransportFailure(err) && !isLocalFailure(err) && (client === null || !client.connected);
  }

  /** The connection to use after `failed` dropped: one reconnection shared by every operation that saw it. */
  private replace(failed: FtsClient | null): Promise<FtsClient> {
    if (this.current !== failed && this.current.connected) return Promise.resolve(this.current);
    this.pending ??= this.reconnect().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  private async reconnect(): Promise<FtsClient> {
    // Also for a call that slept in its backoff while another call's new connection was kicked.
    this.throwIfKicked();
    this.current.close(); // it may be half-open: make sure nothing more goes out on it
    const session = this.session;
    let client = await FtsClient.connect(this.options);
    try {
      if (session !== null && session.tokenExpires > Date.now() + TOKEN_MARGIN_MS) {
        try {
          await client.authToken(session.token);
          return this.adopt(client);
        } catch (err) {
          if (!(err instanceof FtsError) || (err.code !== 'AUTH_FAILED' && err.code !== 'UNSUPPORTED_MECHANISM')) throw err;
          // AUTH_FAILED is fatal: the server closed that connection (a restart without a cluster secret
          // invalidates tokens). The password still works.
          if (!client.connected) client = await FtsClient.connect(this.options);
        }
      }
      await client.auth(this.options.user, this.options.password);
      return this.adopt(client);
    } catch (err) {
      client.close();
      throw err;
    }
  }

  private adopt(client: FtsClient): FtsClient {
    if (this.closedByUser) {
      client.close();
      throw this.stopped(new FtsError('IO_ERROR', 'connection closed by client'));
    }
    this.current = client;
    this.lastSession = client.session ?? this.lastSession;
    this.count++;
    return client;
  }
}

/** The server's KICKED that ended this connection, if that is what ended it. */
function kickBye(client: FtsClient): FtsError | null {
  const reason = client.endedBy;
  return reason?.code === 'KICKED' ? reason : null;
}

/** The server's SHUTTING_DOWN that ended this connection, if that is what ended it. */
function drainBye(client: FtsClient): FtsError | null {
  const reason = client.endedBy;
  return reason?.code === 'SHUTTING_DOWN' ? reason : null;
}

/** A refusal because another operation held the name's lock past the server's --lock-timeout. */
function isLocked(err: unknown): boolean {
  return err instanceof FtsError && isServerError(err) && err.code === 'LOCKED';
}

/** The attempts of one operation that is not safe to repeat blindly: whether one of them may have run. */
class Attempts {
  uncertain = false;

  async run<T>(attempt: Promise<T>): Promise<T> {
    try {
      return await attempt;
    } catch (err) {
      // A reply refused it (it did nothing); anything else may have come after the server did it.
      if (!isAnswer(err)) this.uncertain = true;
      throw err;
    }
  }
}

/**
 * Whether the user has something called each of `names` (a file, or something the server will not serve):
 * by `view`, or by one `list` for a user who may list but not read (PROTOCOL.md §5.4; a reload may have
 * taken `r` away since the login); IO_ERROR for a user who may do neither.
 */
async function present(c: FtsClient, names: readonly string[]): Promise<boolean[]> {
  const denied = (err: unknown): boolean => err instanceof FtsError && isAnswer(err) && err.code === 'PERMISSION_DENIED';
  const perms = c.session?.permissions;
  if (perms === undefined || perms.includes('r')) {
    try {
      return await Promise.all(names.map((name) => viewable(c, name)));
    } catch (err) {
      if (!denied(err)) throw err;
    }
  }
  try {
    const listed = new Set((await c.list()).map((e) => e.name));
    return names.map((name) => listed.has(name));
  } catch (err) {
    if (!denied(err)) throw err;
    throw new FtsError('IO_ERROR', `${names[0] ?? ''}: the connection was lost during its rename, and this user may neither read nor list files, so whether it was renamed cannot be told; nothing more was done`);
  }
}

/** Whether `view` finds something called `name` (NOT_A_FILE: something the server will not serve). */
async function viewable(c: FtsClient, name: string): Promise<boolean> {
  try {
    await c.view(name);
    return true;
  } catch (err) {
    if (err instanceof FtsError && isAnswer(err) && err.code === 'NOT_FOUND') return false;
    if (err instanceof FtsError && isAnswer(err) && err.code === 'NOT_A_FILE') return true;
    throw err;
  }
}

/**
 * Calls onRetry. One that throws ends the retries: the call fails with IO_ERROR caused by its error, marked
 * local so that nothing repeats it (every error the library gives is an FtsError).
 */
function tellRetry(onRetry: ((info: RetryInfo) => void) | undefined, info: RetryInfo): void {
  try {
    onRetry?.(info);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw markLocal(new FtsError('IO_ERROR', `the onRetry callback threw (${message}); not retried`, {}, { cause: err }));
  }
}

/**
 * An AbortController whose signal takes any number of listeners: every call waiting out a backoff listens
 * (mput keeps 16 in flight), and Node warns of a leak past 10.
 */
function abortWithoutListenerLimit(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}
