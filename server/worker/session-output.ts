import type { Socket } from 'node:net';
import { encodeDataPrefix, encodeHeader, type Header } from '../../protocol/index.js';
import type { SessionPacing } from './session-pacing.js';
import { ConnectionGone } from './session-io.js';

/** What a session writes to its socket: replies and data frames, with backpressure. */
export class SessionOutput {
  /** The socket is corked until the current tick ends (see corkTick). */
  private corked = false;

  constructor(
    private readonly socket: Socket,
    private readonly pacing: Pick<SessionPacing, 'pace' | 'moved'>,
    /** Bytes moved: the session's stall timer starts over. */
    private readonly progressed: () => void,
  ) {}

  reply(reply: Header): void {
    this.sendFrame(encodeHeader(reply));
  }

  sendFrame(frame: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) {
      this.corkTick();
      this.socket.write(frame);
    }
  }

  /** See SessionIo.sendData. */
  async sendData(payload: Buffer, sent?: () => void, paced = false): Promise<void> {
    const wait = paced ? this.pacing.pace('download') : null;
    if (wait !== null) {
      try {
        await wait;
      } catch (err) {
        sent?.();
        throw err;
      }
    }
    if (this.socket.destroyed) {
      sent?.();
      throw new ConnectionGone();
    }
    this.corkTick();
    this.socket.write(encodeDataPrefix(payload));
    const flushed = this.socket.write(payload, sent === undefined ? undefined : () => sent());
    if (paced) this.pacing.moved('download', payload.length);
    this.progressed();
    if (!flushed) {
      await this.drained();
      this.progressed();
    }
  }

  /** Resolves once the socket can take more; ConnectionGone if it closes first. */
  drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(new ConnectionGone());
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  /**
   * Everything sent within one tick leaves in one socket write: a small download's data reply, data frame
   * and final reply, or the replies of several publishes that finish together. Each write costs a system
   * call here and a wake-up in the client. The uncork runs once the current microtasks have run, so it
   * never waits for I/O; the session's end() (socket.end) uncorks by itself.
   */
  private corkTick(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(() => {
      this.corked = false;
      this.socket.uncork();
    });
  }
}
