/**
 * A download into a writable stream (`fts download NAME -`: standard output). A file download can keep its
 * bytes back until the whole-file digest is checked; a stream cannot: the bytes go out as they arrive, and
 * whether they were right is known only when the download resolves (CHECKSUM_MISMATCH otherwise), as with
 * `curl … | tar x`. A consumer that must not act on unverified bytes downloads to a file instead.
 *
 * A continuation (after a dropped connection, or a frame that arrived corrupted) asks for the bytes from
 * where the stream stands, on the condition that the file is still the version the stream began with
 * (§6.3 ifSize/ifMtime): what was written cannot be taken back, so a file replaced meanwhile ends the
 * download with an error instead of splicing two versions.
 */
import { createHash, type Hash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { errnoWords, FtsError, type Header } from '../protocol/index.js';
import { DataPhase, type ReadThrottle } from './download.js';
import { markLocal } from './errors.js';
import { clientPayloads } from './payloads.js';
import type { ProgressCallback } from './upload.js';

/**
 * Where a stream download stands, carried from one attempt to the next: the bytes handed to the stream,
 * the SHA-256 state of exactly those bytes, and the version (size, mtime) they belong to.
 */
export class StreamPosition {
  written = 0;
  hash: Hash = createHash('sha256');
  version: { size: number; mtime: number } | null = null;
}

export interface StreamDownloadOptions {
  onStart?: (offset: number, size: number) => void;
  onProgress?: ProgressCallback;
}

/**
 * One attempt of a stream download. `abort` is called with the failure when the attempt must end at once
 * (the stream failed, or the file changed): the caller closes the connection, since the rest of the data
 * phase would otherwise have to be received and thrown away.
 */
export class StreamDownload {
  readonly phase: DataPhase;
  /** The local failure that ended this attempt (the stream's, or a changed file), or null. */
  failure: FtsError | null = null;
  private pending = 0;
  private paused = false;
  private idle: (() => void) | null = null;
  private readonly onError = (err: Error): void => this.fail(streamError(err));
  private readonly onDrain = (): void => this.unpause();
  /** Closed (destroyed, say an HTTP response whose client went away) before the download ended. */
  private readonly onClose = (): void => this.fail(closedError());
  /**
   * Whether a payload's memory can go to `out` as it is and back to the pool at its write callback:
   * process.stdout calls back once the bytes are in the kernel's hands; a Writable in general may keep
   * the chunk after calling back (a collector, a PassThrough's buffer), so it gets a copy.
   */
  private readonly lends: boolean;

  constructor(
    private readonly throttle: ReadThrottle,
    private readonly name: string,
    private readonly out: Writable,
    private readonly position: StreamPosition,
    private readonly options: StreamDownloadOptions,
    private readonly abort: (failure: FtsError) => void,
  ) {
    this.phase = new DataPhase('download', options.onProgress);
    // The phase hashes into the position itself, so that a next attempt continues from its state.
    if (position.written > 0) this.phase.resumeAt(position.written, position.hash);
    else this.phase.useHash(position.hash);
    this.lends = out === process.stdout;
    out.on('error', this.onError);
    out.on('drain', this.onDrain);
    out.on('close', this.onClose);
  }

  /** The stream cannot take bytes any more: a local failure to report before anything is asked. */
  static unusable(out: Writable): FtsError | null {
    return out.destroyed || out.writableEnded ? closedError() : null;
  }

  /** The request: from where the stream stands, on the condition that the file is the same version. */
  request(): Header {
    const { written, version } = this.position;
    if (written === 0 || version === null) return { op: 'download', name: this.name, offset: 0 };
    return { op: 'download', name: this.name, offset: written, ifSize: version.size, ifMtime: version.mtime };
  }

  onInterim(reply: Header): void {
    this.phase.begin(reply);
    const { offset, size, mtime } = this.phase;
    const { written, version } = this.position;
    if (written > 0 && offset !== written) {
      // The server sends the whole file again: it changed since the stream began.
      const was = version === null ? '' : ` (it was ${version.size} bytes, modified ${new Date(version.mtime).toISOString()})`;
      this.fail(markLocal(new FtsError('IO_ERROR', `${this.name} changed on the server during the download${was}; the ${written} bytes already written are of the old version, and the download cannot continue`)));
      throw this.failure;
    }
    this.position.version = { size, mtime };
    this.options.onStart?.(offset, size);
  }

  onData(payload: Buffer): void {
    if (this.failure !== null) {
      clientPayloads.release(payload);
      return;
    }
    this.phase.add(payload);
    this.position.written += payload.length;
    this.pending++;
    let chunk = payload;
    if (!this.lends) {
      chunk = Buffer.from(payload);
      clientPayloads.release(payload);
    }
    const more = this.out.write(chunk, (err) => {
      if (this.lends) clientPayloads.release(payload);
      if (err) this.fail(streamError(err));
      if (--this.pending === 0) this.idle?.();
    });
    if (!more && !this.paused) {
      this.paused = true;
      this.throttle.pauseReading();
    }
  }

  /** Verifies the final reply and waits until the stream has taken every byte; returns the digest. */
  async finish(reply: Header): Promise<{ size: number; sha256: string }> {
    const sha256 = this.phase.finish(reply);
    await this.flushed();
    if (this.failure !== null) throw this.failure;
    return { size: this.phase.size, sha256 };
  }

  /** Stops listening to the stream; call once, however the attempt ended. */
  dispose(): void {
    this.out.off('error', this.onError);
    this.out.off('drain', this.onDrain);
    this.out.off('close', this.onClose);
    this.unpause();
  }

  private flushed(): Promise<void> {
    if (this.pending === 0 || this.failure !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle = resolve;
    });
  }

  private fail(failure: FtsError): void {
    if (this.failure !== null) return;
    this.failure = failure;
    this.idle?.();
    this.unpause();
    this.abort(failure);
  }

  private unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    this.throttle.resumeReading();
  }
}

function closedError(): FtsError {
  return markLocal(new FtsError('IO_ERROR', 'output: closed before the download ended; the download was stopped'));
}

function streamError(err: Error): FtsError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'EPIPE' ? 'the reader went away (broken pipe)' : errnoWords(err);
  return markLocal(new FtsError(code === 'ENOSPC' || code === 'EDQUOT' ? 'NO_SPACE' : 'IO_ERROR', `output: ${why}; the download was stopped`, {}, { cause: err }));
}
