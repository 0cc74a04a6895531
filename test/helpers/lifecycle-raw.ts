/**
 * A raw fts connection for lifecycle tests: frames in, frames out, nothing hidden. Unlike FtsClient it lets
 * a test see exactly what the server sent (a `bye` instead of the greeting, an error reply's `fatal`, the
 * moment the connection closed) and send data frames at the pace the test chooses.
 */
import net from 'node:net';
import { encodeData, encodeHeader, FrameDecoder, HARD_MAX_HEADER_BYTES, type Frame, type Header } from '../../protocol/index.js';

export type RawEvent = Frame | { readonly kind: 'closed'; readonly error: string | null };

/** What a connection attempt got first. */
export type FirstContact =
  | { kind: 'refused'; code: string }
  | { kind: 'header'; header: Header; conn: RawConnection }
  | { kind: 'closed'; error: string | null }
  | { kind: 'timeout' };

export class RawConnection {
  /** Every frame received, in order (the queue below is what next() has not consumed yet). */
  readonly received: Frame[] = [];
  private readonly queue: RawEvent[] = [];
  private waiter: ((e: RawEvent) => void) | null = null;
  private readonly decoder = new FrameDecoder({ maxHeaderBytes: HARD_MAX_HEADER_BYTES });
  private closedEvent: { kind: 'closed'; error: string | null } | null = null;
  private socketError: string | null = null;
  /** Resolves when the socket has closed (for whatever reason). */
  readonly closed: Promise<void>;
  private nextId = 1;

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        this.socketError = `undecodable bytes from the server: ${(err as Error).message}`;
        socket.destroy();
        return;
      }
      for (const f of frames) {
        this.received.push(f);
        this.deliver(f);
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.socketError ??= err.code ?? err.message;
    });
    socket.on('close', () => {
      this.closedEvent = { kind: 'closed', error: this.socketError };
      this.deliver(this.closedEvent);
    });
  }

  /** Connects; rejects with the socket error (its `code`, e.g. ECONNREFUSED) if the TCP connect fails. */
  static connect(port: number, timeoutMs = 5_000): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TCP connect to 127.0.0.1:${port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new RawConnection(socket));
      });
    });
  }

  /**
   * Connects and reads the first frame, reporting whatever happens: refused, a header (hello or bye),
   * a close without any frame, or nothing at all within `timeoutMs`. The connection is left open only
   * when a header arrived (the caller then owns it).
   */
  static async firstContact(port: number, timeoutMs = 5_000): Promise<FirstContact> {
    const started = Date.now();
    let conn: RawConnection;
    try {
      conn = await RawConnection.connect(port, timeoutMs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === 'string') return { kind: 'refused', code };
      return { kind: 'timeout' };
    }
    const event = await conn.next(Math.max(1, timeoutMs - (Date.now() - started))).catch(() => null);
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

  /** Connects, checks the greeting, and logs in with `plain`. Throws if any step does not succeed. */
  static async login(port: number, user: string, password: string, timeoutMs = 5_000): Promise<RawConnection> {
    const conn = await RawConnection.connect(port, timeoutMs);
    try {
      const hello = await conn.nextHeader(timeoutMs);
      if (hello?.['status'] !== 'hello') throw new Error(`expected a greeting, got ${JSON.stringify(hello)}`);
      const reply = await conn.request({ op: 'auth', mech: 'plain', user, password }, timeoutMs);
      if (reply?.['status'] !== 'ok') throw new Error(`auth as ${user} failed: ${JSON.stringify(reply)}`);
      return conn;
    } catch (err) {
      conn.destroy();
      throw err;
    }
  }

  get localPort(): number {
    return this.socket.localPort ?? 0;
  }

  get isClosed(): boolean {
    return this.closedEvent !== null;
  }

  /** The next event (frame or close). Rejects if nothing arrives within `timeoutMs` (0: wait as long as it takes). */
  next(timeoutMs = 5_000): Promise<RawEvent> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closedEvent !== null) return Promise.resolve(this.closedEvent);
    if (this.waiter !== null) return Promise.reject(new Error('RawConnection.next() called while another next() is pending'));
    return new Promise((resolve, reject) => {
      const timer = timeoutMs <= 0 ? undefined : setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no frame from the server within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (e) => {
        clearTimeout(timer);
        resolve(e);
      };
    });
  }

  /** The next header frame, or null once the connection is closed. A data frame here throws. */
  async nextHeader(timeoutMs = 5_000): Promise<Header | null> {
    const e = await this.next(timeoutMs);
    if (e.kind === 'closed') return null;
    if (e.kind !== 'header') throw new Error(`expected a header frame, got ${e.kind}`);
    return e.header;
  }

  /** Writes bytes; resolves once they are handed to the kernel, or when the socket closes first. */
  write(bytes: Buffer): Promise<void> {
    if (this.closedEvent !== null || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      let settled = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        this.socket.off('close', finish);
        resolve();
      };
      this.socket.once('close', finish);
      this.socket.write(bytes, () => finish());
    });
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
    return this.nextHeader(timeoutMs);
  }

  /** Waits for the socket to close; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 5_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.closed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private deliver(e: RawEvent): void {
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w(e);
      return;
    }
    if (e.kind !== 'closed') this.queue.push(e);
  }
}
