/**
 * The one raw fts client of the tests: a TCP socket, the codec's FrameDecoder, and methods to send arbitrary
 * bytes and read frames one at a time. It never validates anything it sends, so tests can put on the wire
 * exactly what they want, including malformed frames. Every wait is bounded.
 *
 * It can connect FROM a chosen loopback address (127.0.0.2, 127.0.0.3, ...), so per-IP limits and bans hit
 * an attacker's address and never the honest client on 127.0.0.1. Besides the frame-level reads (next,
 * nextHeader, reply) it offers an event-level view (nextEvent, nextHeaderOrNull, request, expectClosed) that
 * reports the moment the connection closed, and lets a test send data frames at the pace it chooses.
 */
import net from 'node:net';
import {
  encodeData,
  encodeHeader,
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  HARD_MAX_HEADER_BYTES,
  type Frame,
  type Header,
} from '../../protocol/index.js';
import { sha256 } from './lifecycle-util.js';

export const DEFAULT_WAIT_MS = 10_000;

export { sha256, sleep as delay } from './lifecycle-util.js';

/** The final (or bye) reply to one request, with the interim replies and data payloads before it. */
export interface Reply {
  interim: Header[];
  data: Buffer[];
  final: Header;
}

export interface ConnectOptions {
  port: number;
  /** Source address of the connection (default: the kernel's choice, 127.0.0.1 on loopback). */
  localAddress?: string;
  /** Bound on the connect (and, for greet/login, on reading the replies). */
  timeoutMs?: number;
  /** Keep every byte received for receivedBytes() (default true; false for bulk transfers). */
  keepReceived?: boolean;
  /** Bytes written as soon as the connection is up, before anything is read (e.g. a PROXY protocol header). */
  preamble?: Buffer;
}

/** A frame, or the close of the connection (with the socket error, if any). */
export type RawEvent = Frame | { readonly kind: 'closed'; readonly error: string | null };

/** What a connection attempt got first. */
export type FirstContact =
  | { kind: 'refused'; code: string }
  | { kind: 'header'; header: Header; conn: RawClient }
  | { kind: 'closed'; error: string | null }
  | { kind: 'timeout' };

function connectOptions(target: number | ConnectOptions): ConnectOptions {
  return typeof target === 'number' ? { port: target } : target;
}

export class RawClient {
  private readonly decoder = new FrameDecoder({ maxHeaderBytes: HARD_MAX_HEADER_BYTES });
  private readonly queue: Frame[] = [];
  private waiter: (() => void) | null = null;
  private readonly chunks: Buffer[] | null;
  private ended = false;
  private socketError: string | null = null;
  private nextId = 1;
  /** Bytes received from the server in total. */
  receivedByteCount = 0;
  /** A framing error in what the server sent (should never happen). */
  decodeError: Error | null = null;
  /** Resolves when the socket has closed (for whatever reason). */
  readonly closed: Promise<void>;

  private constructor(
    readonly socket: net.Socket,
    keepReceived: boolean,
  ) {
    this.chunks = keepReceived ? [] : null;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.receivedByteCount += chunk.length;
      this.chunks?.push(chunk);
      if (this.decodeError === null) {
        try {
          this.queue.push(...this.decoder.push(chunk));
        } catch (err) {
          this.decodeError = err instanceof Error ? err : new Error(String(err));
          this.socketError ??= `undecodable bytes from the server: ${this.decodeError.message}`;
        }
      }
      this.wake();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.socketError ??= err.code ?? err.message; // and surfaces as 'close'
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  /** Connects (to 127.0.0.1, optionally from opts.localAddress); does NOT read the greeting. */
  static connect(target: number | ConnectOptions, timeoutMs?: number): Promise<RawClient> {
    const opts = connectOptions(target);
    const bound = timeoutMs ?? opts.timeoutMs ?? DEFAULT_WAIT_MS;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: opts.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to 127.0.0.1:${opts.port}${opts.localAddress ? ` from ${opts.localAddress}` : ''} timed out`));
      }, bound);
      socket.once('connect', () => {
        clearTimeout(timer);
        const client = new RawClient(socket, opts.keepReceived ?? true);
        if (opts.preamble !== undefined) void client.write(opts.preamble);
        resolve(client);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      });
    });
  }

  /** Connects and reads the first frame: the greeting (`hello`) or a refusal (`bye`). */
  static async greet(target: number | ConnectOptions): Promise<{ client: RawClient; first: Header }> {
    const opts = connectOptions(target);
    const client = await RawClient.connect(opts);
    try {
      return { client, first: await client.nextHeader(opts.timeoutMs ?? DEFAULT_WAIT_MS) };
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** Connects and reads the greeting (which must be `hello`). */
  static async open(target: number | ConnectOptions): Promise<{ client: RawClient; greeting: Header }> {
    const { client, first } = await RawClient.greet(target);
    if (first['status'] !== 'hello') {
      client.close();
      throw new Error(`expected a greeting, got ${JSON.stringify(first)}`);
    }
    return { client, greeting: first };
  }

  /** Connects, reads the greeting and logs in (plain, id 1); fails unless the auth reply is ok. */
  static async login(target: number | ConnectOptions, user: string, password: string): Promise<RawClient> {
    const opts = connectOptions(target);
    const { client } = await RawClient.open(opts);
    try {
      await client.auth(user, password, opts.timeoutMs);
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /**
   * Connects and reads the first frame, reporting whatever happens: refused, a header (hello or bye),
   * a close without any frame, or nothing at all within `timeoutMs`. The connection is left open only
   * when a header arrived (the caller then owns it).
   */
  static async firstContact(port: number, timeoutMs = 5_000): Promise<FirstContact> {
    const started = Date.now();
    let conn: RawClient;
    try {
      conn = await RawClient.connect(port, timeoutMs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === 'string') return { kind: 'refused', code };
      return { kind: 'timeout' };
    }
    const event = await conn.nextEvent(Math.max(1, timeoutMs - (Date.now() - started))).catch(() => null);
    if (event === null) {
      conn.destroy();
      return { kind: 'timeout' };
    }
    if (event.kind === 'closed') return { kind: 'closed', error: event.error };
    if (event.kind !== 'header') {
      conn.destroy();
      return { kind: 'closed', error: `unexpected first frame ${event.kind}` };
    }
    return { kind: 'header', header: event.header, conn };
  }

  /** True once the server closed (or the socket failed). */
  get isClosed(): boolean {
    return this.ended;
  }

  /** Frames received but not read yet. */
  get pending(): number {
    return this.queue.length;
  }

  get localPort(): number {
    return this.socket.localPort ?? 0;
  }

  /** Everything the server sent so far, raw (empty when connected with keepReceived: false). */
  receivedBytes(): Buffer {
    return Buffer.concat(this.chunks ?? []);
  }

  /** Writes bytes; resolves once they are handed to the kernel, or when the socket closes first. */
  write(...parts: Buffer[]): Promise<void> {
    if (this.ended || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      let settled = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        this.socket.off('close', finish);
        resolve();
      };
      this.socket.once('close', finish);
      this.socket.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts), () => finish());
    });
  }

  sendHeader(header: Header): Promise<void> {
    return this.write(encodeHeader(header));
  }

  /** Logs in (plain, id 1) on a greeted connection; returns the auth reply, or throws unless it is ok. */
  async auth(user: string, password: string, timeoutMs = DEFAULT_WAIT_MS): Promise<Header> {
    void this.sendHeader({ op: 'auth', id: 1, mech: 'plain', user, password });
    this.nextId = Math.max(this.nextId, 2);
    const reply = await this.nextHeader(timeoutMs);
    if (reply['status'] !== 'ok') throw new Error(`login failed: ${JSON.stringify(reply)}`);
    return reply;
  }

  /** Sends a request header with a fresh id (unless one is given) and returns the id used. */
  async send(fields: Header): Promise<number> {
    const id = typeof fields['id'] === 'number' ? fields['id'] : this.nextId++;
    await this.write(encodeHeader({ ...fields, id }));
    return id;
  }

  /** Sends a data frame carrying `payload`. */
  sendData(payload: Uint8Array): Promise<void> {
    return this.write(encodeData(payload));
  }

  /** Sends a request and returns the next header frame (its reply, or a bye), or null if the connection closed. */
  async request(fields: Header, timeoutMs = 5_000): Promise<Header | null> {
    await this.send(fields);
    return this.nextHeaderOrNull(timeoutMs);
  }

  /** The next frame, or null when the connection closed with no frame left. Throws after timeoutMs. */
  async next(timeoutMs = DEFAULT_WAIT_MS): Promise<Frame | null> {
    return this.take(Date.now() + timeoutMs, timeoutMs);
  }

  /** The next header frame, which must be a header frame. */
  async nextHeader(timeoutMs = DEFAULT_WAIT_MS): Promise<Header> {
    const frame = await this.next(timeoutMs);
    if (frame === null) throw new Error('connection closed while a header frame was expected');
    if (frame.kind !== 'header') throw new Error(`expected a header frame, got ${frame.kind}`);
    return frame.header;
  }

  /** The next event (frame or close). Rejects if nothing arrives within `timeoutMs` (0: wait as long as it takes). */
  async nextEvent(timeoutMs = 5_000): Promise<RawEvent> {
    if (this.waiter !== null) throw new Error('RawClient.nextEvent() called while another read is pending');
    let frame: Frame | null;
    try {
      frame = await this.take(timeoutMs <= 0 ? null : Date.now() + timeoutMs, timeoutMs);
    } catch (err) {
      if (err !== this.decodeError) throw err;
      this.socket.destroy();
      await this.closed;
      frame = null;
    }
    return frame ?? { kind: 'closed', error: this.socketError };
  }

  /** The next header frame, or null once the connection is closed. A data frame here throws. */
  async nextHeaderOrNull(timeoutMs = 5_000): Promise<Header | null> {
    const e = await this.nextEvent(timeoutMs);
    if (e.kind === 'closed') return null;
    if (e.kind !== 'header') throw new Error(`expected a header frame, got ${e.kind}`);
    return e.header;
  }

  /** Reads frames up to and including the next ok/error/bye header. */
  async reply(timeoutMs = DEFAULT_WAIT_MS): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    const interim: Header[] = [];
    const data: Buffer[] = [];
    for (;;) {
      const frame = await this.next(Math.max(1, deadline - Date.now()));
      if (frame === null) throw new Error(`connection closed before a final reply (interim: ${JSON.stringify(interim)})`);
      if (frame.kind === 'bad-header') throw new Error(`server sent a malformed header: ${frame.reason}`);
      if (frame.kind === 'data') {
        if (!frame.crcOk) throw new Error('server sent a data frame with a bad CRC32C');
        data.push(frame.payload);
        continue;
      }
      const status = frame.header['status'];
      if (status === 'ok' || status === 'error' || status === 'bye') return { interim, data, final: frame.header };
      interim.push(frame.header);
    }
  }

  /** Resolves true if the server closes the connection within timeoutMs (frames may still be queued). */
  async waitClosed(timeoutMs = 5_000): Promise<boolean> {
    if (this.ended) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.closed.then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits for the socket to close; rejects after `timeoutMs`. */
  async expectClosed(timeoutMs = 5_000): Promise<void> {
    if (!(await this.waitClosed(timeoutMs))) throw new Error(`connection still open after ${timeoutMs} ms`);
  }

  /** Half-closes our side (the server sees end of stream). */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  close(): void {
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The next queued frame, waiting until `deadline` (null: no bound); null once closed with nothing left. */
  private async take(deadline: number | null, timeoutMs: number): Promise<Frame | null> {
    for (;;) {
      const frame = this.queue.shift();
      if (frame !== undefined) return frame;
      if (this.decodeError) throw this.decodeError;
      if (this.ended) return null;
      const left = deadline === null ? null : deadline - Date.now();
      if (left !== null && left <= 0) throw new Error(`no frame from the server within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = left === null ? undefined : setTimeout(() => {
          this.waiter = null;
          resolve();
        }, left);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = null;
          resolve();
        };
      });
    }
  }

  private wake(): void {
    this.waiter?.();
  }
}

/** Data frames for `data` (payloads of at most `chunk` bytes). */
export function dataFrames(data: Buffer, chunk = 64 * 1024): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += chunk) parts.push(encodeData(data.subarray(at, at + chunk)));
  return Buffer.concat(parts);
}

/** An upload request followed by its data frames (payloads of at most `chunk` bytes). */
export function uploadBytes(id: number, name: string, data: Buffer, chunk = 64 * 1024, sha = sha256(data)): Buffer {
  return Buffer.concat([encodeHeader({ op: 'upload', id, name, size: data.length, sha256: sha }), dataFrames(data, chunk)]);
}

/** Splits a byte stream into whole frames (raw bytes, prefix included); a trailing partial frame is dropped. */
export function splitFrames(bytes: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  let at = 0;
  while (at + FRAME_PREFIX_BYTES <= bytes.length) {
    const end = at + FRAME_PREFIX_BYTES + bytes.readUInt32BE(at + 1);
    if (end > bytes.length) break;
    frames.push(bytes.subarray(at, end));
    at = end;
  }
  return frames;
}

/** Uploads `data` as `name` on a logged-in client and returns the final reply header. */
export async function rawUpload(c: RawClient, id: number, name: string, data: Buffer, timeoutMs = 30_000): Promise<Header> {
  void c.write(uploadBytes(id, name, data));
  return (await c.reply(timeoutMs)).final;
}

/** Downloads `name`; returns the final header and the payload bytes. */
export async function rawDownload(c: RawClient, id: number, name: string, timeoutMs = 30_000): Promise<{ final: Header; interim: Header[]; bytes: Buffer }> {
  void c.sendHeader({ op: 'download', id, name });
  const r = await c.reply(timeoutMs);
  return { final: r.final, interim: r.interim, bytes: Buffer.concat(r.data) };
}

/** Lists (long) and returns the entry names and the final header. */
export async function rawList(c: RawClient, id: number, timeoutMs = 10_000): Promise<{ final: Header; names: string[] }> {
  void c.sendHeader({ op: 'list', id, long: true });
  const r = await c.reply(timeoutMs);
  return { final: r.final, names: r.interim.filter((h) => h['status'] === 'entry').map((h) => String(h['name'])) };
}

/** A noop round trip; true when the session answered ok. */
export async function rawAlive(c: RawClient, id = 4242, timeoutMs = 10_000): Promise<boolean> {
  void c.sendHeader({ op: 'noop', id });
  const r = await c.reply(timeoutMs);
  return r.final['status'] === 'ok' && r.final['id'] === id;
}

/** One unauthenticated session: connect, read the greeting, `quit` (id 1), read the reply, wait (bounded) for the close. */
export async function greetAndQuit(port: number): Promise<void> {
  const { client } = await RawClient.open(port);
  try {
    void client.sendHeader({ op: 'quit', id: 1 });
    await client.reply();
    await client.waitClosed(5_000);
  } finally {
    client.close();
  }
}

/** One `download` of `name` from `offset` on a fresh, authenticated connection: its final reply and data payloads. */
export async function downloadOnce(port: number, user: { user: string; password: string }, name: string, offset: number): Promise<Reply> {
  const { client } = await RawClient.open(port);
  try {
    await client.auth(user.user, user.password);
    void client.sendHeader({ op: 'download', id: 1, name, offset });
    return await client.reply(30_000);
  } finally {
    client.close();
  }
}
