/**
 * A deliberately dumb fts client for protocol tests: a TCP socket, the codec's FrameDecoder, and methods
 * to send arbitrary bytes and read frames one at a time. It never validates anything it sends, so tests can
 * put on the wire exactly what they want, including malformed frames. Every wait is bounded.
 */
import { createHash } from 'node:crypto';
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

export const DEFAULT_WAIT_MS = 10_000;

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The final (or bye) reply to one request, with the interim replies and data payloads before it. */
export interface Reply {
  interim: Header[];
  data: Buffer[];
  final: Header;
}

export class RawClient {
  private readonly decoder = new FrameDecoder({ maxHeaderBytes: HARD_MAX_HEADER_BYTES });
  private readonly queue: Frame[] = [];
  private waiter: (() => void) | null = null;
  private readonly chunks: Buffer[] = [];
  private ended = false;
  /** A framing error in what the server sent (should never happen). */
  decodeError: Error | null = null;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      try {
        this.queue.push(...this.decoder.push(chunk));
      } catch (err) {
        this.decodeError = err instanceof Error ? err : new Error(String(err));
      }
      this.wake();
    });
    socket.on('error', () => undefined); // surfaces as 'close'
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  /** Connects; does NOT read the greeting (use next()/nextHeader()). */
  static connect(port: number, timeoutMs = DEFAULT_WAIT_MS): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to 127.0.0.1:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new RawClient(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      });
    });
  }

  /** Connects and reads the greeting (which must be `hello`). */
  static async open(port: number): Promise<{ client: RawClient; greeting: Header }> {
    const client = await RawClient.connect(port);
    try {
      const greeting = await client.nextHeader();
      if (greeting['status'] !== 'hello') throw new Error(`expected a greeting, got ${JSON.stringify(greeting)}`);
      return { client, greeting };
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** Connects, reads the greeting and logs in (id 1); fails unless the auth reply is ok. */
  static async login(port: number, user: string, password: string): Promise<RawClient> {
    const { client } = await RawClient.open(port);
    try {
      client.sendHeader({ op: 'auth', id: 1, mech: 'plain', user, password });
      const reply = await client.nextHeader();
      if (reply['status'] !== 'ok') throw new Error(`login failed: ${JSON.stringify(reply)}`);
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** True once the server closed (or the socket failed) and every received frame has been read. */
  get isClosed(): boolean {
    return this.ended;
  }

  /** Frames received but not read yet. */
  get pending(): number {
    return this.queue.length;
  }

  /** Everything the server sent so far, raw. */
  receivedBytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  write(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  sendHeader(header: Header): void {
    this.write(encodeHeader(header));
  }

  /** The next frame, or null when the connection closed with no frame left. Throws after timeoutMs. */
  async next(timeoutMs = DEFAULT_WAIT_MS): Promise<Frame | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.queue.shift();
      if (frame !== undefined) return frame;
      if (this.decodeError) throw this.decodeError;
      if (this.ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame from the server within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
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

  /** The next frame, which must be a header frame. */
  async nextHeader(timeoutMs = DEFAULT_WAIT_MS): Promise<Header> {
    const frame = await this.next(timeoutMs);
    if (frame === null) throw new Error('connection closed while a header frame was expected');
    if (frame.kind !== 'header') throw new Error(`expected a header frame, got ${frame.kind}`);
    return frame.header;
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

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    this.waiter?.();
  }
}

/** An upload request followed by its data frames (payloads of at most `chunk` bytes). */
export function uploadBytes(id: number, name: string, data: Buffer, chunk = 64 * 1024, sha = sha256(data)): Buffer {
  const parts: Buffer[] = [encodeHeader({ op: 'upload', id, name, size: data.length, sha256: sha })];
  for (let at = 0; at < data.length; at += chunk) parts.push(encodeData(data.subarray(at, at + chunk)));
  return Buffer.concat(parts);
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
