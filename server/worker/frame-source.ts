import type { Socket } from 'node:net';
import { FrameDecoder, FtsError, type Frame } from '../../protocol/index.js';
import { noteBufferChurn } from './buffer-gc.js';
import { workerPayloads } from './payloads.js';

/** Above this many undelivered bytes the socket is paused, so a fast sender cannot grow our memory. */
const HIGH_WATER_BYTES = 2 * 1024 * 1024;

export type SourceEvent = Frame | { kind: 'end' } | { kind: 'error'; error: FtsError };

/**
 * What a queued header counts against the high-water mark: 32 of them pause the socket. A decoded header
 * can take far more memory than its bytes (a 16 KiB body of nested `{}` parses to ~300 KiB of objects), so
 * it is charged as if it were large; requests are read ahead 32 at a time at most, which is as many
 * uploads as a session publishes at once.
 */
const HEADER_CHARGE_BYTES = 64 * 1024;

function charge(event: SourceEvent): number {
  return event.kind === 'data' ? event.payload.length : HEADER_CHARGE_BYTES;
}

/**
 * Turns the socket's byte stream into a pull-based stream of frames. The session asks for the next frame
 * when it is ready for it; an upload handler pulls its own data frames the same way. Pulling, rather than
 * pushing, is what gives backpressure: frames nobody asked for pile up only to HIGH_WATER_BYTES, then the
 * socket stops being read.
 */
export class FrameSource {
  private readonly decoder: FrameDecoder;
  private readonly queue: SourceEvent[] = [];
  private queuedBytes = 0;
  private waiter: ((event: SourceEvent) => void) | null = null;
  private finished = false;
  private paused = false;
  /** Called whenever bytes arrive, before decoding: lets the connection refresh its timers. */
  onBytes: (n: number) => void = () => {};

  constructor(private readonly socket: Socket, maxHeaderBytes: number) {
    this.decoder = new FrameDecoder({ maxHeaderBytes, payloadBuffer: (length) => workerPayloads.take(length) });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // The socket may arrive paused (a PROXY header or a TLS sniff read ahead and pushed bytes back).
    socket.resume();
    socket.on('end', () => this.finish({ kind: 'end' }));
    socket.on('close', () => this.finish({ kind: 'end' }));
  }

  next(): Promise<SourceEvent> {
    const event = this.queue.shift();
    if (event !== undefined) {
      this.queuedBytes -= charge(event);
      if (this.paused && this.queuedBytes < HIGH_WATER_BYTES / 2) {
        this.paused = false;
        this.socket.resume();
      }
      return Promise.resolve(event);
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
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
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
    if (!this.paused && this.queuedBytes >= HIGH_WATER_BYTES) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private deliver(event: SourceEvent): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = null;
      waiter(event);
      return;
    }
    this.queuedBytes += charge(event);
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
  }

  /** Ends the stream: pending frames are still delivered, then the terminal event. */
  private finish(event: SourceEvent): void {
    if (this.finished) return;
    this.finished = true;
    this.deliver(event);
  }
}
