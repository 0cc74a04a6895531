import { DATA_CRC_BYTES, FRAME_PREFIX_BYTES } from '../../protocol/index.js';
import type { Direction, WorkerMetrics } from '../metrics/worker-metrics.js';
import type { FrameSource } from './frame-source.js';
import { Pacer, pacedFrameBytes, pacedReadAheadBytes } from './pacer.js';
import { ConnectionGone } from './session-io.js';

/** A rate limit's wait is cut into slices this long (see paced): well below the shortest --stall-timeout, 1 s. */
const PACE_SLICE_MS = 250;
/** The debt a data frame may leave to the session's next frame (pacer.ts sizes frames to about this). */
const QUARTER_SECOND_MS = 250;

/** What the pacing of one session needs from it. */
export interface PacingDeps {
  /** The session's rate limit in `direction` now (its user's, else the server's); null: none. */
  rateFor(direction: Direction): number | null;
  /** Where the session's upload is read ahead. */
  source: Pick<FrameSource, 'setHighWater'>;
  /** The connection is gone: a wait ends with ConnectionGone. */
  socketGone(): boolean;
  /** The session is busy, not stalled: its stall timer starts over. */
  progressed(): void;
  metrics: Pick<WorkerMetrics, 'throttled'>;
}

/** One session's rate limits (--max-upload-rate, --max-download-rate, --rates-file) applied to its data frames. */
export class SessionPacing {
  /** The rate limits' buckets (see pacer()); null: no limit. */
  private readonly pacers: Record<Direction, Pacer | null> = { upload: null, download: null };

  constructor(private readonly deps: PacingDeps) {}

  /**
   * What to await before the next data frame of `direction` moves (readData, a paced sendData), or null
   * (no limit, or within it). Waiting before a frame, not after, leaves the last frame's debt to the
   * session's next transfer: a reply or a publish is never held back for data that has already moved.
   */
  pace(direction: Direction): Promise<void> | null {
    const pacer = this.pacer(direction);
    return pacer === null || pacer.delay() === 0 ? null : this.paced(direction, pacer);
  }

  /**
   * Counts a data frame of `payloadBytes` against the rate limit, with its prefix and CRC: a client sending
   * tiny frames moves more than their payload over the wire, and is paced for all of it.
   */
  moved(direction: Direction, payloadBytes: number): void {
    this.pacer(direction)?.moved(payloadBytes + FRAME_PREFIX_BYTES + DATA_CRC_BYTES);
  }

  /**
   * Counts an upload's data frame of `payloadBytes` (as moved), and returns what to await before the
   * upload reads on, or null.
   */
  uploaded(payloadBytes: number): Promise<void> | null {
    this.moved('upload', payloadBytes);
    // A frame of more than a quarter second of the rate: the greeting's maxChunk follows
    // --max-upload-rate, and a user's own rate may be lower. Its debt beyond a quarter second is paid now,
    // or every new session's first such frame would go unpaid (a client reconnecting for each upload
    // would beat the rate many times over).
    const pacer = this.pacers.upload;
    if (pacer !== null && payloadBytes > pacedFrameBytes(pacer.rate) && pacer.delay() > QUARTER_SECOND_MS) return this.paced('upload', pacer, QUARTER_SECOND_MS);
    return null;
  }

  /**
   * The session's rate limit in `direction` now: its user's (--rates-file), else --max-*-rate. Looked up at
   * every frame, so that the login and a reload apply at once, to a transfer running too; a new rate gets
   * a new bucket, which starts empty as a new session's does.
   */
  private pacer(direction: Direction): Pacer | null {
    const rate = this.deps.rateFor(direction);
    const current = this.pacers[direction];
    if ((current?.rate ?? null) === rate) return current;
    const next = rate === null ? null : new Pacer(rate);
    this.pacers[direction] = next;
    // A limited upload is read less far ahead: its data waits in the client's socket, not in our memory.
    if (direction === 'upload') this.deps.source.setHighWater(pacedReadAheadBytes(rate));
    return next;
  }

  /**
   * Waits until the rate limit lets data move again, in slices: the session is busy, not stalled, meanwhile
   * (the stall timer starts over at each slice), and a connection that ends meanwhile ends the wait within a
   * slice. The time actually waited is counted, also when the wait is cut. `leftMs`: stop once only that
   * much of the debt is left.
   */
  private async paced(direction: Direction, pacer: Pacer, leftMs = 0): Promise<void> {
    const started = performance.now();
    try {
      for (let left = pacer.delay() - leftMs; left > 0; left = pacer.delay() - leftMs) {
        if (this.deps.socketGone()) throw new ConnectionGone();
        this.deps.progressed();
        await new Promise((resolve) => setTimeout(resolve, Math.min(left, PACE_SLICE_MS)));
      }
      if (this.deps.socketGone()) throw new ConnectionGone();
      this.deps.progressed();
    } finally {
      this.deps.metrics.throttled(direction, (performance.now() - started) / 1000);
    }
  }
}
