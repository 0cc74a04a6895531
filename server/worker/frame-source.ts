import type { Socket } from 'node:net';
import { FrameDecoder, FtsError, parseHeaderBody, type Frame, type UndecodedFrame } from '../../protocol/index.js';
import { noteBufferChurn } from './buffer-gc.js';
import { workerPayloads } from './payloads.js';

/** Above this many undelivered bytes the socket is paused, so a fast sender cannot grow our memory. */
export const HIGH_WATER_BYTES = 2 * 1024 * 1024;
/**
 * Above this many undelivered headers the socket is paused too: requests are read ahead 32 at a time at
 * most, which is as many uploads as a session publishes at once.
 */
const HIGH_WATER_HEADERS = 32;

export type SourceEvent = Frame | { kind: 'end' } | { kind: 'error'; error: FtsError };

/**
 * What waits in the queue. A header waits as its bytes (counted against HIGH_WATER_BYTES) and is decoded
 * when the session pulls it: decoded, a 16 KiB header can take ~30 times its size (nested `[`), so 32
 * decoded headers could hold ~14 MiB where their bytes hold at most 512 KiB.
 */
type Queued = UndecodedFrame | { kind: 'end' } | { kind: 'error'; error: FtsError };

function decoded(event: Queued): SourceEvent {
  return event.kind === 'header-body' ? parseHeaderBody(event.body) : event;
}

function bytesOf(event: Queued): number {
  if (event.kind === 'data') return event.payload.length;
  return event.kind === 'header-body' ? event.body.length : 0;
}

/**
 * Turns the socket's byte stream into a pull-based stream of frames. The session asks for the next frame
 * when it is ready for it; an upload handler pulls its own data frames the same way. Pulling, rather than
 * pushing, is what gives backpressure: frames nobody asked for pile up only to HIGH_WATER_BYTES, then the
 * socket stops being read.
 */
export class FrameSource {
  private readonly decoder: FrameDecoder;
  private readonly queue: Queued[] = [];
  private queuedBytes = 0;
  private queuedHeaders = 0;
  private waiter: ((event: SourceEvent) => void) | null = null;
  private finished = false;
  private paused = false;
  /** Called whenever bytes arrive, before decoding: lets the connection refresh its timers. */
  onBytes: (n: number) => void = () => {};

  /** Undelivered bytes above which the socket is paused (HIGH_WATER_BYTES, or less for a rate-limited session). */
  private highWaterBytes: number;

  constructor(
    private readonly socket: Socket,
    limits: { maxHeaderBytes: number; maxDataBytes: number; highWaterBytes: number },
  ) {
    this.highWaterBytes = limits.highWaterBytes;
    this.decoder = new FrameDecoder({ maxHeaderBytes: limits.maxHeaderBytes, maxDataBytes: limits.maxDataBytes, payloadBuffer: (length) => workerPayloads.take(length) });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // The socket may arrive paused (a PROXY header or a TLS sniff read ahead and pushed bytes back).
    socket.resume();
    socket.on('end', () => this.finish({ kind: 'end' }));
    socket.on('close', () => this.finish({ kind: 'end' }));
  }

  /** A new read-ahead (the session's upload rate changed: its user's own, at the login or a reload). */
  setHighWater(bytes: number): void {
    this.highWaterBytes = bytes;
    if (this.paused && this.queuedBytes < bytes / 2 && this.queuedHeaders < HIGH_WATER_HEADERS / 2) {
      this.paused = false;
      this.socket.resume();
    }
  }

  next(): Promise<SourceEvent> {
    const event = this.queue.shift();
    if (event !== undefined) {
      this.queuedBytes -= bytesOf(event);
      if (event.kind === 'header-body') this.queuedHeaders--;
      if (this.paused && this.queuedBytes < this.highWaterBytes / 2 && this.queuedHeaders < HIGH_WATER_HEADERS / 2) {
        this.paused = false;
        this.socket.resume();
      }
      return Promise.resolve(decoded(event));
    }
    if (this.finished) return Promise.resolve({ kind: 'end' });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    this.onBytes(chunk.length);
    noteBufferChurn(chunk.length);
    let frames: UndecodedFrame[];
    try {
      frames = this.decoder.pushUndecoded(chunk);
    } catch (err) {
      this.finish({ kind: 'error', error: err instanceof FtsError ? err : new FtsError('PROTOCOL_ERROR') });
      return;
    }
    for (const frame of frames) this.deliver(frame);
    const failure = this.decoder.failure;
    if (failure) {
      this.finish({ kind: 'error', error: failure });
      return;
    }
    if (!this.paused && (this.queuedBytes >= this.highWaterBytes || this.queuedHeaders >= HIGH_WATER_HEADERS)) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private deliver(event: Queued): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = null;
      waiter(decoded(event));
      return;
    }
    this.queuedBytes += bytesOf(event);
    if (event.kind === 'header-body') this.queuedHeaders++;
    this.queue.push(event);
  }

  /**
   * Called once nobody will pull again (the session is over): frames still queued are dropped, their
   * payloads given back to the pool, and whatever arrives later is ignored. Without this, each payload
   * left in the queue of a connection that ended mid-stream would keep its pool slab from being reused.
   */
  dispose(): void {
    this.finished = true;
    this.waiter = null;
    for (const event of this.queue.splice(0)) if (event.kind === 'data') workerPayloads.release(event.payload);
    this.queuedBytes = 0;
    this.queuedHeaders = 0;
  }

  /** Ends the stream: pending frames are still delivered, then the terminal event. */
  private finish(event: Queued): void {
    if (this.finished) return;
    this.finished = true;
    this.deliver(event);
  }
}
