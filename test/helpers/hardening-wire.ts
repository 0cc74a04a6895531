/**
 * A raw fts client for the hardening tests that can connect FROM a chosen loopback address
 * (127.0.0.2, 127.0.0.3, ...), so per-IP limits and bans hit the attacker's address and never the honest
 * client on 127.0.0.1. Like test/helpers/raw-client.ts it validates nothing it sends; every wait is bounded.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { encodeData, encodeHeader, FrameDecoder, HARD_MAX_HEADER_BYTES, type Frame, type Header } from '../../protocol/index.js';

export const WIRE_WAIT_MS = 10_000;

export function sha256hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns something other than undefined/false; throws after `timeoutMs`. */
export async function pollUntil<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
      last = null;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last === null ? '' : ` (last error: ${last instanceof Error ? last.message : String(last)})`}`);
    }
    await sleep(intervalMs);
  }
}

export interface WireOptions {
  port: number;
  /** Source address of the connection (default: the kernel's choice, 127.0.0.1 on loopback). */
  localAddress?: string;
  timeoutMs?: number;
}

/** Final (ok/error) or bye reply, with the interim replies and data payloads before it. */
export interface WireReply {
  interim: Header[];
  data: Buffer[];
  final: Header;
}

export class WireClient {
  private readonly decoder = new FrameDecoder({ maxHeaderBytes: HARD_MAX_HEADER_BYTES });
  private readonly queue: Frame[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  /** Bytes received from the server in total. */
  receivedBytes = 0;
  /** A framing error in what the server sent (a server bug). */
  decodeError: Error | null = null;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.receivedBytes += chunk.length;
      if (this.decodeError === null) {
        try {
          this.queue.push(...this.decoder.push(chunk));
        } catch (err) {
          this.decodeError = err instanceof Error ? err : new Error(String(err));
        }
      }
      this.waiter?.();
    });
    socket.on('error', () => undefined); // surfaces as 'close'
    socket.on('close', () => {
      this.ended = true;
      this.waiter?.();
    });
  }

  static connect(opts: WireOptions): Promise<WireClient> {
    const timeoutMs = opts.timeoutMs ?? WIRE_WAIT_MS;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: opts.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to 127.0.0.1:${opts.port} from ${opts.localAddress ?? 'default'} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new WireClient(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      });
    });
  }

  /** Connects and reads the first frame: the greeting (`hello`) or a refusal (`bye`). */
  static async greet(opts: WireOptions): Promise<{ client: WireClient; first: Header }> {
    const client = await WireClient.connect(opts);
    try {
      return { client, first: await client.nextHeader(opts.timeoutMs ?? WIRE_WAIT_MS) };
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** Connects, expects `hello`, logs in with plain (id 1) and expects `ok`. */
  static async login(opts: WireOptions, user: string, password: string): Promise<WireClient> {
    const { client, first } = await WireClient.greet(opts);
    try {
      if (first['status'] !== 'hello') throw new Error(`expected hello, got ${JSON.stringify(first)}`);
      client.sendHeader({ op: 'auth', id: 1, mech: 'plain', user, password });
      const r = await client.reply(opts.timeoutMs ?? WIRE_WAIT_MS);
      if (r.final['status'] !== 'ok') throw new Error(`login failed: ${JSON.stringify(r.final)}`);
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  get isClosed(): boolean {
    return this.ended;
  }

  write(...parts: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }

  sendHeader(header: Header): void {
    this.write(encodeHeader(header));
  }

  /** The next frame, or null once the connection closed with nothing left. Throws after timeoutMs. */
  async next(timeoutMs = WIRE_WAIT_MS): Promise<Frame | null> {
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

  async nextHeader(timeoutMs = WIRE_WAIT_MS): Promise<Header> {
    const frame = await this.next(timeoutMs);
    if (frame === null) throw new Error('connection closed while a header frame was expected');
    if (frame.kind !== 'header') throw new Error(`expected a header frame, got ${frame.kind}`);
    return frame.header;
  }

  /** Reads frames up to and including the next ok/error/bye header. */
  async reply(timeoutMs = WIRE_WAIT_MS): Promise<WireReply> {
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

  /** Resolves true if the connection closes within timeoutMs. */
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

  /** Half-closes our side (the server sees end of stream). */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** An upload request followed by its data frames (payloads of at most `chunk` bytes). */
export function uploadFrames(id: number, name: string, data: Buffer, chunk = 64 * 1024): Buffer {
  const parts: Buffer[] = [encodeHeader({ op: 'upload', id, name, size: data.length, sha256: sha256hex(data) })];
  for (let at = 0; at < data.length; at += chunk) parts.push(encodeData(data.subarray(at, at + chunk)));
  return Buffer.concat(parts);
}

/** Uploads `data` as `name` on a logged-in client and returns the final reply header. */
export async function wireUpload(c: WireClient, id: number, name: string, data: Buffer, timeoutMs = 30_000): Promise<Header> {
  c.write(uploadFrames(id, name, data));
  return (await c.reply(timeoutMs)).final;
}

/** Downloads `name`; returns the final header and the payload bytes. */
export async function wireDownload(c: WireClient, id: number, name: string, timeoutMs = 30_000): Promise<{ final: Header; interim: Header[]; bytes: Buffer }> {
  c.sendHeader({ op: 'download', id, name });
  const r = await c.reply(timeoutMs);
  return { final: r.final, interim: r.interim, bytes: Buffer.concat(r.data) };
}

/** Lists (long) and returns the entry names and the final header. */
export async function wireList(c: WireClient, id: number, timeoutMs = 10_000): Promise<{ final: Header; names: string[] }> {
  c.sendHeader({ op: 'list', id, long: true });
  const r = await c.reply(timeoutMs);
  return { final: r.final, names: r.interim.filter((h) => h['status'] === 'entry').map((h) => String(h['name'])) };
}

/** A noop round trip; true when the session answered ok. */
export async function wireAlive(c: WireClient, id = 4242, timeoutMs = 10_000): Promise<boolean> {
  c.sendHeader({ op: 'noop', id });
  const r = await c.reply(timeoutMs);
  return r.final['status'] === 'ok' && r.final['id'] === id;
}
