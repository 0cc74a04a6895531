import { checkTrailerFrame, FtsError, type Frame, type Header } from '../../protocol/index.js';
import type { FrameSource } from './frame-source.js';
import { workerPayloads } from './payloads.js';
import type { SessionPacing } from './session-pacing.js';
import { ConnectionGone, type DataChunk } from './session-io.js';

/**
 * The frames of the request being handled that follow its header: an upload's data and trailer (taken by
 * its handler, or skipped when it was refused), or an authentication step.
 */
export class RequestFrames {
  constructor(
    private readonly source: FrameSource,
    private readonly pacing: Pick<SessionPacing, 'pace' | 'uploaded'>,
  ) {}

  /** The next data frame of a sized upload; a header frame there is PROTOCOL_ERROR. */
  async readData(): Promise<DataChunk> {
    const frame = await this.nextUploadFrame();
    if (frame.kind !== 'data') throw new FtsError('PROTOCOL_ERROR', "header frame inside an upload's data phase");
    return frame;
  }

  /**
   * The next frame of unsized upload `id` (null: a refused one whose id was unusable): a data frame, or the
   * header frame that ends its data, which must be its trailer. Keep-alives ({op, id, "keepalive": true},
   * sent while the client's source is silent) are consumed here, calling `keptAlive` (the handler keeps its
   * staging file fresh, see StagedUpload.touch). A header frame
   * that is not a JSON object is BAD_REQUEST; one of another op or id is the fatal PROTOCOL_ERROR.
   */
  async readDataOrTrailer(id: number | null, keptAlive?: () => void): Promise<DataChunk | { trailer: Header }> {
    for (;;) {
      const frame = await this.nextUploadFrame();
      if (frame.kind === 'data') return frame;
      if (frame.kind === 'bad-header') throw new FtsError('BAD_REQUEST', frame.reason);
      checkTrailerFrame(frame.header, id);
      if (frame.header['keepalive'] !== true) return { trailer: frame.header };
      keptAlive?.();
    }
  }

  async readContinuation(): Promise<Header> {
    const event = await this.source.next();
    switch (event.kind) {
      case 'header':
        return event.header;
      case 'end':
        throw new ConnectionGone();
      case 'error':
        throw event.error;
      case 'bad-header':
        throw new FtsError('BAD_REQUEST', event.reason);
      case 'data':
        workerPayloads.release(event.payload);
        throw new FtsError('PROTOCOL_ERROR', 'data frame where a continuation header (authentication step or upload trailer) was expected');
    }
  }

  /**
   * Consumes the digest trailer of a refused streamed upload. As for an accepted one, a frame that is not
   * its trailer (a data frame, another op or id) is fatal, and a malformed header frame is consumed as it.
   */
  async skipTrailer(id: number | null): Promise<void> {
    let trailer: Header;
    try {
      trailer = await this.readContinuation();
    } catch (err) {
      if (err instanceof FtsError && err.code === 'BAD_REQUEST') return;
      throw err;
    }
    checkTrailerFrame(trailer, id);
  }

  /** Consumes the data and trailer of a refused unsized upload (a malformed trailer is consumed as it). */
  async skipToTrailer(id: number | null): Promise<void> {
    for (;;) {
      let frame: DataChunk | { trailer: Header };
      try {
        frame = await this.readDataOrTrailer(id);
      } catch (err) {
        if (err instanceof FtsError && err.code === 'BAD_REQUEST') return;
        throw err;
      }
      if ('trailer' in frame) return;
      workerPayloads.release(frame.payload);
    }
  }

  async skipData(bytes: number): Promise<void> {
    for (let left = bytes; left > 0; ) {
      // Paced like any upload's data (readData): a refused upload is no way around the rate limit.
      const chunk = await this.readData();
      workerPayloads.release(chunk.payload);
      if (chunk.payload.length > left) throw new FtsError('PROTOCOL_ERROR', 'data frame goes past the declared upload size');
      left -= chunk.payload.length;
    }
  }

  /**
   * The next frame of an upload's data phase (taken or skipped). It waits for the session's upload rate limit
   * first, so that a limited client's data waits in its own socket, not in our queue; a data frame counts
   * against that limit. The end of the connection is ConnectionGone.
   */
  private async nextUploadFrame(): Promise<Frame> {
    const wait = this.pacing.pace('upload');
    if (wait !== null) await wait;
    const event = await this.source.next();
    if (event.kind === 'end') throw new ConnectionGone();
    if (event.kind === 'error') throw event.error;
    if (event.kind === 'data') {
      const debt = this.pacing.uploaded(event.payload.length);
      if (debt !== null) await debt;
    }
    return event;
  }
}
