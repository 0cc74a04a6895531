/**
 * One TCP connection to an fts server, at the level of frames and requests (docs/PROTOCOL.md §1–§4):
 * connecting, the greeting, writing requests, and ending the connection. Replies are matched to requests
 * by ReplyRouter (replies.ts).
 *
 * Pipelining: any number of requests may be outstanding. The write queue runs one request at a time, in
 * call order. A request's header may be produced asynchronously (an upload must hash its file first) and an
 * upload's data frames are written right after its header, so nothing else can slip between them on the
 * wire. A request joins the router's FIFO when its header is written, so FIFO order is wire order.
 * Operation semantics (what a 'data' reply means for a download, etc.) live in the callers.
 */
import net from 'node:net';
import tls from 'node:tls';
import {
  declaredUploadBytes,
  declaresUnsized,
  DEFAULT_MAX_HEADER_BYTES,
  DEFAULT_PORT,
  encodeDataPrefix,
  encodeHeader,
  errnoWords,
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  FtsError,
  HARD_MAX_HEADER_BYTES,
  hostPort,
  MAX_CHUNK_BYTES,
  MAX_REQUEST_ID,
  MIN_MAX_HEADER_BYTES,
  PROTOCOL,
  type Frame,
  type Header,
} from '../protocol/index.js';
import { asFtsError, isServerError, lostAfterConnect, markSessionEnded, serverError, withCliHint } from './errors.js';
import { clientPayloads } from './payloads.js';
import { ReplyRouter, type DataWriter, type InFlight, type RequestSpec } from './replies.js';

export type { DataWriter, RequestSpec } from './replies.js';

/**
 * The right to write, held by one job at a time (FtsConnection.turn). A job uses it when a request's
 * content depends on the reply to an earlier one, and nothing else may be sent in between: an upload asks
 * `offset` and then sends `upload` from the returned offset.
 */
export interface WriteTurn {
  /**
   * Writes one request now (its header, and an upload's data) and resolves once it is written, with the
   * promise of its final reply. Awaiting that reply inside the turn costs a round trip during which this
   * connection sends nothing else.
   */
  send(spec: RequestSpec): Promise<{ reply: Promise<Header> }>;
  /**
   * Writes one header frame as it is, id included: the continuation of a multi-step request (a SCRAM
   * client-final-message), which belongs to a request already sent and gets no reply of its own.
   */
  continueWith(header: Header): void;
  /**
   * Waits for local work that must finish before the next request can be written (hashing a large file),
   * sending `noop` at intervals meanwhile, so that the server does not close the session as idle. Rejects
   * with the connection's failure if it fails first.
   */
  keepAlive<T>(work: Promise<T>): Promise<T>;
}

export interface ConnectOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 5421 (DEFAULT_PORT). */
  port?: number;
  /** Limit for the TCP connect plus the greeting, in milliseconds. Default 10 000. */
  connectTimeoutMs?: number;
  /**
   * Speak TLS. The certificate is verified against the system CAs (or `ca`) and the host name against
   * `servername` (default: `host`).
   */
  tls?: boolean | { ca?: string | Buffer; servername?: string };
  /**
   * auth(): log in with `plain` over an unencrypted connection when the server offers no SCRAM. Default
   * false: a man in the middle could have removed SCRAM from the greeting to read the password.
   */
  allowPlainPassword?: boolean;
  /**
   * Give up on the connection (IO_ERROR) when a request waits for its reply and no byte has moved in
   * either direction for this long. Default 10 minutes: long enough for the server's own silent work
   * (hashing the skipped part of a resumed download, copying a resumed upload's prefix), short enough that
   * a server that stopped answering cannot hang a client for ever.
   */
  replyTimeoutMs?: number;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_REPLY_TIMEOUT_MS = 10 * 60 * 1000;

/** How long quit() waits for the server to close the connection after its 'ok' before closing it itself. */
const QUIT_CLOSE_WAIT_MS = 2_000;
/**
 * How often a connection busy with local work sends `noop` (WriteTurn.keepAlive): a third of the idle
 * timeout the server announces, so that a late one (a busy event loop) is not fatal; the server's default
 * when it announces none. Never more often than KEEPALIVE_MIN_MS.
 */
const KEEPALIVE_FRACTION = 1 / 3;
const KEEPALIVE_DEFAULT_IDLE_SECONDS = 300;
/** A day: longer idle timeouts are treated as this (setInterval takes at most 2^31 − 1 ms). */
const KEEPALIVE_MAX_IDLE_SECONDS = 86_400;
const KEEPALIVE_MIN_MS = 250;
/** Idle time before TCP keep-alive probes start. */
const TCP_KEEPALIVE_IDLE_MS = 30_000;
/** One socket read's worth: large enough that a fast transfer takes few reads, small enough to keep per connection. */
const SOCKET_READ_BYTES = 256 * 1024;

type Phase = 'greeting' | 'open' | 'closed';

export class FtsConnection {
  readonly host: string;
  readonly port: number;
  private hello: Readonly<Header> = {};
  private maxHeader = DEFAULT_MAX_HEADER_BYTES;
  private maxChunk = MAX_CHUNK_BYTES;

  private readonly socket: net.Socket;
  /** The TCP socket under `socket` (the same object without TLS): what an abort resets. */
  private readonly tcp: net.Socket;
  private readonly decoder: FrameDecoder;
  private phase: Phase = 'greeting';
  private failure: FtsError | null = null;
  /** quit() in progress or done: a second call waits for the same. */
  private quitCall: Promise<void> | null = null;
  private socketError: unknown = null;
  private lastId = 0;
  private writeQueue: Promise<void> = Promise.resolve();
  private readonly replies = new ReplyRouter();
  private readonly drainWaiters: Array<{ resolve: () => void; reject: (err: FtsError) => void }> = [];
  private pauseCount = 0;
  private readonly closed: Promise<void>;
  private greetingDone: { resolve: () => void; reject: (err: FtsError) => void } | null = null;
  /** Rejects with the failure once the connection fails (never resolves). */
  private readonly failed: Promise<never>;
  private signalFailure: (err: FtsError) => void = () => undefined;
  private readonly ready: Promise<void>;
  private quitting = false;
  /** The TCP handshake completed (tells 'cannot connect' apart from 'closed before the greeting'). */
  private tcpConnected = false;

  private constructor(host: string, port: number, tlsOptions: ConnectOptions['tls']) {
    this.host = host;
    this.port = port;
    this.ready = new Promise((resolve, reject) => {
      this.greetingDone = { resolve, reject };
    });
    this.failed = new Promise<never>((_resolve, reject) => {
      this.signalFailure = reject;
    });
    this.failed.catch(() => undefined);
    if (tlsOptions) {
      const extra = tlsOptions === true ? {} : tlsOptions;
      const servername = extra.servername ?? (net.isIP(host) ? undefined : host);
      // TLS over a TCP socket of our own: an abort resets that socket (resetAndDestroy throws on a TLS socket).
      this.tcp = net.connect({ host, port });
      this.socket = tls.connect({ socket: this.tcp, host, ...(servername ? { servername } : {}), ...(extra.ca ? { ca: extra.ca } : {}), minVersion: 'TLSv1.2' });
      this.socket.once('secureConnect', () => {
        this.tcpConnected = true;
      });
    } else {
      // Plain TCP reads into one buffer reused for every read: Node would otherwise allocate a fresh 64 KiB
      // buffer per read, and a transfer would keep faulting in new memory until a GC freed the old ones
      // (~15 µs per page on a VM, a third of a short-lived CLI's CPU). The decoder copies everything out of
      // it. TLS sockets decrypt in JavaScript and cannot do this.
      const readBuffer = Buffer.allocUnsafeSlow(SOCKET_READ_BYTES);
      this.socket = net.connect({
        host,
        port,
        onread: {
          buffer: readBuffer,
          callback: (n: number) => {
            this.onBytes(readBuffer.subarray(0, n));
            return true;
          },
        },
      });
      this.tcp = this.socket;
      this.socket.once('connect', () => {
        this.tcpConnected = true;
      });
    }
    this.tcp.setNoDelay(true); // small replies must not wait for Nagle + delayed ACK (~40 ms each)
    // A peer that vanishes without a FIN (host down, NAT state dropped) would leave a client that only
    // reads waiting forever; TCP keep-alive probes an idle link, so the connection fails after the
    // probes (libuv sends 10, 1 s apart, after the idle time: about 40 s in all) and a ResilientClient
    // reconnects.
    this.tcp.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
    const reusedChunks = !tlsOptions;
    // Replies are small; the hard ceiling only bounds what a hostile server can make us buffer.
    // Payloads land in recycled memory (a file download gives them back once written): a fresh 1 MiB buffer
    // per frame costs page faults and GC work on every frame.
    this.decoder = new FrameDecoder({ maxHeaderBytes: HARD_MAX_HEADER_BYTES, payloadBuffer: (n) => clientPayloads.take(n), reusedChunks });
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    if (!reusedChunks) this.socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    this.socket.on('error', (err) => {
      this.socketError ??= err;
    });
    this.socket.on('close', () => this.onClose());
    this.socket.on('drain', () => {
      for (const w of this.drainWaiters.splice(0)) w.resolve();
    });
  }

  /** Connects, reads the greeting and checks it. Rejects with a message that names the address. */
  static async open(options: ConnectOptions = {}): Promise<FtsConnection> {
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? DEFAULT_PORT;
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const conn = new FtsConnection(host, port, options.tls);
    conn.watchReplies(options.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS);
    // One timer covers both the TCP connect and the greeting: the caller cares about "usable in time".
    const timer = setTimeout(() => {
      // Not marked lostAfterConnect: a silent peer is more often a wrong port (a service that waits for us
      // to speak) than a hung worker, and retrying it would make that mistake cost a minute.
      const what = !conn.tcpConnected ? `cannot connect to ${conn.address}` : `no greeting from ${conn.address}`;
      conn.fail(new FtsError('IO_ERROR', `${what}: timed out after ${formatSeconds(timeoutMs)}`));
    }, timeoutMs);
    try {
      await conn.ready;
    } finally {
      clearTimeout(timer);
    }
    return conn;
  }

  /**
   * Fails the connection when a request has waited `timeoutMs` with no byte moving either way. Time spent
   * idle (nothing awaited), with reading paused by us (a slow local disk), or before the first reply to a
   * resumed transfer or to a hash (the server may copy or hash gigabytes first, in silence) does not count. A timeout
   * that is not a positive number turns the watch off.
   */
  private watchReplies(timeoutMs: number): void {
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) return;
    let moved = -1;
    let since = performance.now(); // monotonic: a clock step or a suspend must not fail a request
    const timer = setInterval(() => {
      const now = performance.now();
      const bytes = this.socket.bytesRead + this.socket.bytesWritten;
      if (bytes !== moved || !this.replies.waiting || this.pauseCount > 0 || this.replies.quietHead) {
        moved = bytes;
        since = now;
      } else if (now - since >= timeoutMs) {
        this.fail(new FtsError('IO_ERROR', `no reply from ${this.address} in ${Math.round((now - since) / 1000)} s: giving up on the connection`));
      }
    }, Math.max(10, Math.min(timeoutMs / 4, 15_000)));
    timer.unref();
    this.failed.catch(() => clearInterval(timer));
  }

  /** The server's greeting (frozen). Its maxHeader and maxChunk bound what this connection sends. */
  get greeting(): Readonly<Header> {
    return this.hello;
  }

  /** Whether the greeting lists the capability (PROTOCOL.md §4): older servers lack the newer ones. */
  offers(capability: string): boolean {
    const caps = this.hello['caps'];
    return Array.isArray(caps) && caps.includes(capability);
  }

  /** host:port, with brackets around an IPv6 address. */
  get address(): string {
    return hostPort(this.host, this.port);
  }

  /** False once the connection failed, was closed, or the server closed it. */
  get isOpen(): boolean {
    return this.phase === 'open' && this.failure === null;
  }

  /** The server's reason when it ended the connection (a `bye`, or a fatal error reply); else null. */
  get endedBy(): FtsError | null {
    return this.failure !== null && isServerError(this.failure) ? this.failure : null;
  }

  /** Starts a request. Requests are written in call order; the promise settles with the final 'ok' reply. */
  request(spec: RequestSpec): Promise<Header> {
    return new Promise<Header>((resolve, reject) => {
      this.writeQueue = this.writeQueue.then(() => this.send(spec, resolve, reject));
    });
  }

  /**
   * Runs `job` with the exclusive right to write, in call order with request() and other turns. The turn
   * ends when the job settles; replies to what it sent may still be pending then (they are in the promises
   * that WriteTurn.send returned). A connection failure ends the turn at once.
   */
  turn<T>(job: (w: WriteTurn) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.writeQueue = this.writeQueue.then(async () => {
        if (this.failure) return reject(this.failure);
        let active = true;
        const w: WriteTurn = {
          send: async (spec) => {
            if (!active) throw new FtsError('INTERNAL', 'WriteTurn.send after the turn ended');
            let written: Promise<void> = Promise.resolve();
            const reply = new Promise<Header>((res, rej) => {
              written = this.send(spec, res, rej);
            });
            reply.catch(() => undefined); // the job may never await it (it failed first); not unhandled
            await written;
            return { reply };
          },
          continueWith: (header) => {
            if (!active) throw new FtsError('INTERNAL', 'WriteTurn.continueWith after the turn ended');
            this.socket.write(encodeHeader(header));
          },
          keepAlive: (work) => {
            if (!active) {
              // The turn ended (its connection failed meanwhile): `work` is given up on, not left unhandled.
              work.catch(() => undefined);
              throw new FtsError('INTERNAL', 'WriteTurn.keepAlive after the turn ended');
            }
            return this.keepAliveWhile(work);
          },
        };
        try {
          const running = job(w);
          running.catch(() => undefined);
          resolve(await Promise.race([running, this.failed]));
        } catch (err) {
          reject(asFtsError(err));
        } finally {
          active = false;
        }
      });
    });
  }

  /**
   * Sends quit (after the requests queued before it), waits for its 'ok' and for the server to close the
   * connection. Resolves too when the connection is already closed or ends meanwhile (a drain's `bye`, a
   * reset): what quit is for, a closed connection, is then reached. Calling it again gives the same promise.
   */
  quit(): Promise<void> {
    this.quitCall ??= this.sendQuit();
    return this.quitCall;
  }

  private async sendQuit(): Promise<void> {
    try {
      await this.request({ header: { op: 'quit' } });
    } catch (err) {
      if (this.phase !== 'open' || this.failure !== null) {
        this.socket.destroy();
        return;
      }
      throw err;
    }
    const timer = setTimeout(() => this.socket.destroy(), QUIT_CLOSE_WAIT_MS);
    await this.closed;
    clearTimeout(timer);
  }

  /**
   * Destroys the socket at once; every outstanding request fails, with `reason` when given. With requests in
   * flight this is an abort and the connection is reset, not closed: a FIN would come after everything the
   * kernel still holds to send, and an upload written ahead in full (data and trailer, as a rate-limited
   * server reads it) would then be read and published after the user stopped it. A reset drops those bytes;
   * what the server has already received it may still act on.
   */
  close(reason: FtsError = new FtsError('IO_ERROR', 'connection closed by client')): void {
    this.fail(reason, this.replies.waiting);
  }

  /**
   * Stops reading from the socket until a matching resumeReading(); used while a download's disk writes
   * catch up. Counted, so several sinks can hold the connection paused independently.
   */
  pauseReading(): void {
    if (this.pauseCount++ === 0) this.socket.pause();
  }

  resumeReading(): void {
    if (this.pauseCount > 0 && --this.pauseCount === 0) this.socket.resume();
  }

  // ---- writing ------------------------------------------------------------------------------------------

  /** One write-queue job: never rejects; failures settle the request instead. */
  private async send(spec: RequestSpec, resolve: (h: Header) => void, reject: (e: FtsError) => void): Promise<void> {
    if (this.failure) return reject(this.failure);
    if (this.quitting) return reject(new FtsError('IO_ERROR', 'connection is closing (quit was sent)'));
    let fields: Header;
    try {
      if (typeof spec.header === 'function') {
        // Preparing can take long (hashing a big file): the session is kept alive meanwhile, and a
        // connection failure ends the wait.
        fields = await this.keepAliveWhile(spec.header());
      } else {
        fields = spec.header;
      }
    } catch (err) {
      return reject(asFtsError(err));
    }
    if (this.failure) return reject(this.failure);
    const id = this.nextId();
    const header: Header = { op: fields['op'], id };
    Object.assign(header, fields);
    header['id'] = id;
    const frame = encodeHeader(header);
    const bodyBytes = frame.length - FRAME_PREFIX_BYTES;
    if (bodyBytes > this.maxHeader) {
      return reject(new FtsError('FRAME_TOO_LARGE', `request header of ${bodyBytes} bytes exceeds the server's limit of ${this.maxHeader}`));
    }
    let declared = 0;
    if (spec.body && declaresUnsized(header)) declared = Infinity; // its data runs to its trailer
    else if (spec.body) {
      const n = declaredUploadBytes(header);
      if (n === null) return reject(new FtsError('INTERNAL', 'upload request without a valid size'));
      declared = n;
    }
    const offset = header['offset'];
    // The server may legitimately be silent for long before answering: a resumed transfer's kept prefix is
    // copied or hashed first, and a hash reads a whole file.
    const quietStart = header['op'] === 'hash' || ((header['op'] === 'upload' || header['op'] === 'download') && typeof offset === 'number' && offset > 0);
    const entry: InFlight = { id, op: header['op'], spec, resolve, reject, localError: null, quietStart };
    this.replies.add(entry);
    // The server closes the connection after answering quit: later requests would never be answered.
    if (header['op'] === 'quit') this.quitting = true;
    try {
      if (!spec.body) {
        if (!this.socket.write(frame)) await this.drained();
        return;
      }
      // Cork so that a small upload's header and its first data frame leave in one segment. writeData
      // uncorks before it ever waits for 'drain' (a corked socket would never drain).
      this.socket.cork();
      let corked = true;
      const uncork = (): void => {
        if (corked) this.socket.uncork();
        corked = false;
      };
      try {
        this.socket.write(frame);
        let written = 0;
        const writer: DataWriter = {
          maxChunk: this.maxChunk,
          write: async (payload, corruptCrc = false, sent) => {
            written += payload.length;
            if (written > declared) {
              sent?.();
              throw new FtsError('INTERNAL', `upload body wrote more than the declared ${declared} bytes`);
            }
            await this.writeData(payload, corruptCrc, uncork, sent);
          },
          keepAlive: async () => {
            if (this.failure) throw this.failure;
            const ok = this.socket.write(encodeHeader({ op: header['op'], id, keepalive: true }));
            uncork();
            if (!ok) await this.drained();
          },
        };
        const problem = await spec.body(writer);
        if (written !== declared && declared !== Infinity) throw new FtsError('INTERNAL', `upload body wrote ${written} of the declared ${declared} bytes`);
        if (spec.trailer) {
          if (this.failure) throw this.failure;
          this.socket.write(encodeHeader({ ...spec.trailer(), op: header['op'], id }));
        }
        if (problem !== null) entry.localError ??= problem;
      } finally {
        uncork();
      }
    } catch (err) {
      // Either the connection already failed (this request was rejected with it), or the body broke its
      // promise to send exactly `declared` bytes: the server can no longer find frame boundaries in step
      // with us, so the connection is unusable.
      this.fail(this.failure ?? asFtsError(err));
    }
  }

  /**
   * Waits for `work` while this caller holds the right to write, sending a noop whenever the wait reaches
   * the keep-alive interval. Nothing of another request can be half written meanwhile (the holder writes
   * nothing else while it waits), so a whole noop fits in; its reply is matched in order like any other.
   */
  private async keepAliveWhile<T>(work: Promise<T>): Promise<T> {
    work.catch(() => undefined); // a connection failure may win the race; not unhandled then
    const timer = setInterval(() => this.sendNoop(), this.keepAliveIntervalMs());
    try {
      return await Promise.race([work, this.failed]);
    } finally {
      clearInterval(timer);
    }
  }

  /** How often a session busy with local work sends `noop`: a third of the idle timeout the server announced. */
  keepAliveIntervalMs(): number {
    const announced = this.hello['idleTimeout'];
    // Clamped: a huge value would overflow the timer (which then fires every millisecond).
    const idleSeconds = typeof announced === 'number' && announced > 0 ? Math.min(announced, KEEPALIVE_MAX_IDLE_SECONDS) : KEEPALIVE_DEFAULT_IDLE_SECONDS;
    return Math.max(KEEPALIVE_MIN_MS, idleSeconds * 1000 * KEEPALIVE_FRACTION);
  }

  private sendNoop(): void {
    if (this.failure || this.quitting) return;
    const id = this.nextId();
    const ignore = (): void => undefined; // its reply (or a failure, which reaches the waiting request anyway)
    this.replies.add({ id, op: 'noop', spec: { header: { op: 'noop' } }, resolve: ignore, reject: ignore, localError: null });
    this.socket.write(encodeHeader({ op: 'noop', id }));
  }

  private async writeData(payload: Uint8Array, corruptCrc: boolean, uncork: () => void, sent?: () => void): Promise<void> {
    if (this.failure) {
      sent?.();
      throw this.failure;
    }
    const prefix = encodeDataPrefix(payload);
    if (corruptCrc) prefix.writeUInt32BE(~prefix.readUInt32BE(FRAME_PREFIX_BYTES) >>> 0, FRAME_PREFIX_BYTES);
    // Prefix and payload go as two buffers of one corked write (writev): the payload is never copied.
    this.socket.cork();
    this.socket.write(prefix);
    // The stream calls back once the kernel has the bytes, or with an error when it drops them on destroy.
    const ok = sent === undefined ? this.socket.write(payload) : this.socket.write(payload, () => sent());
    this.socket.uncork();
    uncork();
    if (!ok) await this.drained();
  }

  private drained(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  private nextId(): number {
    this.lastId = this.lastId >= MAX_REQUEST_ID ? 1 : this.lastId + 1;
    return this.lastId;
  }

  // ---- reading ------------------------------------------------------------------------------------------

  private onBytes(chunk: Buffer): void {
    if (this.failure) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.failFraming(err);
      return;
    }
    for (const [i, frame] of frames.entries()) {
      if (this.failure) {
        // Nobody will read the rest: their payloads go back to the pool.
        for (const rest of frames.slice(i)) if (rest.kind === 'data') clientPayloads.release(rest.payload);
        return;
      }
      try {
        if (this.phase === 'greeting') this.onGreeting(frame);
        else {
          const end = this.replies.route(frame);
          if (end !== null) this.fail(end);
        }
      } catch (err) {
        this.fail(asFtsError(err, 'PROTOCOL_ERROR'));
      }
    }
    // The decoder hands out the good frames before a framing error and keeps the error for the next push;
    // there may be no next push (the server closes), so act on it now.
    if (this.decoder.failure !== null) this.failFraming(this.decoder.failure);
  }

  private failFraming(err: unknown): void {
    const e = asFtsError(err, 'PROTOCOL_ERROR');
    // Before any greeting, bytes that are not a frame mean another kind of server (HTTP, SSH, SMTP…).
    const what = this.phase === 'greeting' ? `${this.address} is not an fts server (what it sent first is not an fts frame: ${e.message})` : `${this.address} sent a malformed frame: ${e.message}`;
    this.fail(new FtsError(e.code, what, {}, { cause: e }));
  }

  private onGreeting(frame: Frame): void {
    if (frame.kind !== 'header') {
      if (frame.kind === 'data') clientPayloads.release(frame.payload); // arena memory is never freed otherwise
      throw new FtsError('PROTOCOL_ERROR', `${this.address} is not an fts server (no greeting)`);
    }
    const h = frame.header;
    if (h['status'] === 'bye') {
      this.fail(serverError(h));
      return;
    }
    if (h['status'] !== 'hello') throw new FtsError('PROTOCOL_ERROR', `${this.address} is not an fts server (no greeting)`);
    if (h['protocol'] !== PROTOCOL) {
      throw new FtsError('PROTOCOL_ERROR', `${this.address} speaks ${JSON.stringify(h['protocol'])}; this client implements ${PROTOCOL}`);
    }
    this.hello = Object.freeze({ ...h });
    const maxHeader = h['maxHeader'];
    if (Number.isSafeInteger(maxHeader) && (maxHeader as number) >= MIN_MAX_HEADER_BYTES) this.maxHeader = maxHeader as number;
    const maxChunk = h['maxChunk'];
    if (Number.isSafeInteger(maxChunk) && (maxChunk as number) >= 1) this.maxChunk = Math.min(maxChunk as number, MAX_CHUNK_BYTES);
    this.phase = 'open';
    this.greetingDone?.resolve();
    this.greetingDone = null;
  }

  // ---- failure and close --------------------------------------------------------------------------------

  /** Ends the connection: every request not yet answered fails with `err`, later ones fail at once. */
  private fail(err: FtsError, reset = false): void {
    if (this.failure) return;
    this.failure = markSessionEnded(err);
    this.signalFailure(err);
    const wasGreeting = this.phase === 'greeting';
    this.phase = 'closed';
    this.replies.failAll(err);
    const unfinished = this.decoder.takeUnfinishedPayload();
    if (unfinished !== null) clientPayloads.release(unfinished);
    for (const w of this.drainWaiters.splice(0)) w.reject(err);
    if (wasGreeting) this.greetingDone?.reject(err);
    this.greetingDone = null;
    // Only once open: the greeting came, so a TLS handshake is long over (Node 20 crashes when a TLS
    // socket's TCP socket is destroyed first from within the handshake's own callbacks).
    if (reset && !wasGreeting && !this.tcp.connecting && !this.tcp.destroyed) this.tcp.resetAndDestroy();
    this.socket.destroy();
  }

  private onClose(): void {
    if (this.failure) return;
    const cause = this.socketError;
    let err: FtsError;
    if (this.phase === 'greeting') {
      if (this.tcpConnected) err = new FtsError('IO_ERROR', `${this.address} closed the connection before its greeting`, {}, { cause });
      else {
        const why = cause === null ? { text: 'connection closed' } : describeTlsAware(cause);
        err = new FtsError('IO_ERROR', `cannot connect to ${this.address}: ${why.text}`, {}, { cause });
        if (why.cliHint !== undefined) withCliHint(err, why.cliHint);
      }
    } else if (cause !== null) {
      err = new FtsError('IO_ERROR', `connection lost: ${errnoWords(cause)}`, {}, { cause });
    } else {
      err = new FtsError('IO_ERROR', this.quitting ? 'connection closed (quit)' : 'connection closed by server');
    }
    // Established (TCP, and TLS), then lost, and not by our own quit: see isLostAfterConnect.
    this.fail(this.tcpConnected && !this.quitting ? lostAfterConnect(err) : err);
  }
}

/**
 * TLS failures get a hint, in the library's terms in the text and in the CLI's as a CLI hint; a plain server
 * answering a TLS client shows up as a bad record.
 */
function describeTlsAware(cause: unknown): { text: string; cliHint?: string } {
  const code = typeof cause === 'object' && cause !== null && 'code' in cause ? String((cause as { code: unknown }).code) : '';
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') return { text: 'the server does not speak TLS (connect without tls)', cliHint: 'drop --tls' };
  if (code.startsWith('ERR_SSL') || code.includes('CERT') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return { text: `TLS handshake failed: ${(cause as Error).message} (check the CA, tls.ca, and the host name, tls.servername)`, cliHint: 'check --ca and --host' };
  }
  return { text: errnoWords(cause) };
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
