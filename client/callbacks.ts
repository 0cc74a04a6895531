/**
 * A transfer's callbacks (onProgress, onStart), guarded: one that throws aborts its transfer instead of
 * breaking the library's internals mid-frame. Nothing else can stop a transfer already under way (its bytes
 * are in flight; a sized upload cannot end early on the wire), so the connection is reset as close() does:
 * what the server received of an upload stays staged for a resume, and a download keeps LOCAL.part. The call
 * rejects with the callback's error, marked local so that a ResilientClient does not repeat it; the other
 * requests on that connection fail as a lost connection (a ResilientClient reconnects for them).
 */
import { FtsError } from '../protocol/index.js';
import { markLocal } from './errors.js';
import type { ProgressCallback } from './upload.js';

interface Callbacks {
  onProgress?: ProgressCallback;
  onStart?: (offset: number, size: number) => void;
}

export class CallbackGuard {
  /** The first callback that threw, and what it threw. */
  private threw: { what: string; cause: unknown } | null = null;

  constructor(private readonly reset: (reason: FtsError) => void) {}

  /** `options` with their callbacks guarded. */
  wrap<O extends Callbacks>(options: O): O {
    const out: O = { ...options };
    if (options.onProgress !== undefined) out.onProgress = this.guard('onProgress', options.onProgress);
    if (options.onStart !== undefined) out.onStart = this.guard('onStart', options.onStart);
    return out;
  }

  /**
   * `call`, failing with the callback's error when one threw; also when the transfer was done by then (the
   * last progress call comes with the server's answer), saying so: the connection was reset all the same.
   */
  async around<T>(call: Promise<T>): Promise<T> {
    let value: T;
    try {
      value = await call;
    } catch (err) {
      throw this.failure('; the transfer was aborted') ?? err;
    }
    const failure = this.failure(' after the transfer was done: an upload is published, a download in place');
    if (failure !== null) throw failure;
    return value;
  }

  /** What the call fails with when a callback threw (marked local: a ResilientClient does not repeat it); else null. */
  private failure(outcome: string): FtsError | null {
    if (this.threw === null) return null;
    const { what, cause } = this.threw;
    const message = cause instanceof Error ? cause.message : String(cause);
    return markLocal(new FtsError('IO_ERROR', `the transfer's ${what} callback threw (${message})${outcome}`, {}, { cause }));
  }

  private guard<A extends unknown[]>(what: string, callback: (...args: A) => void): (...args: A) => void {
    return (...args) => {
      if (this.threw !== null) return;
      try {
        callback(...args);
      } catch (err) {
        this.threw = { what, cause: err };
        this.reset(new FtsError('IO_ERROR', 'connection reset: a transfer on it was aborted by its callback'));
      }
    };
  }
}
