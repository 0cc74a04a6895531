/**
 * The main-thread side of the RSS sampler (rss-sampler.ts runs in a worker thread). Windows measure
 * the peak of the summed VmRSS of the server's primary and workers, and their CPU time, between
 * begin() and end().
 */
import { Worker } from 'node:worker_threads';

export interface RssWindow {
  /** Peak of the summed VmRSS over the window, bytes. */
  peakBytes: number;
  /** The last sample's sum, bytes. */
  lastBytes: number;
  /**
   * The same for RssAnon (private anonymous memory). VmRSS also counts the node binary's shared,
   * file-backed pages (~43 MiB) once per process, so the sum over N processes overstates real use.
   */
  peakAnonBytes: number;
  lastAnonBytes: number;
  samples: number;
  /** CPU time (user + system) of the server processes during the window, seconds. */
  cpuSeconds: number;
  /** Read- and write-type system calls of the server processes during the window (/proc/<pid>/io). */
  syscalls: { read: number; write: number };
  /** Voluntary context switches of the server processes' threads during the window. */
  contextSwitches: number;
  /** Most server processes seen at once. */
  processes: number;
}

interface Reply {
  id: number;
  peakKiB: number;
  lastKiB: number;
  peakAnonKiB: number;
  lastAnonKiB: number;
  samples: number;
  cpuTicks: number;
  syscr: number;
  syscw: number;
  ctxsw: number;
  processes: number;
}

/** Linux USER_HZ; /proc reports CPU time in these ticks. */
const CLOCK_TICKS_PER_SECOND = 100;

export class RssSampler {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, (r: Reply) => void>();

  constructor() {
    this.worker = new Worker(new URL('./rss-sampler.js', import.meta.url));
    this.worker.on('message', (r: Reply) => {
      const resolve = this.pending.get(r.id);
      this.pending.delete(r.id);
      resolve?.(r);
    });
    this.worker.unref();
  }

  watch(pid: number | null): void {
    this.worker.postMessage({ type: 'watch', pid });
  }

  /** Opens a window; the returned function closes it and yields its numbers. */
  begin(): () => Promise<RssWindow> {
    const id = this.nextId++;
    this.worker.postMessage({ type: 'begin', id });
    return () => this.ask({ type: 'end', id }, id);
  }

  /** One immediate sample (summed RSS now). */
  now(): Promise<RssWindow> {
    const id = this.nextId++;
    return this.ask({ type: 'now', id }, id);
  }

  async stop(): Promise<void> {
    this.worker.postMessage({ type: 'stop' });
    await this.worker.terminate();
  }

  private ask(msg: object, id: number): Promise<RssWindow> {
    return new Promise((resolve) => {
      this.pending.set(id, (r) =>
        resolve({
          peakBytes: r.peakKiB * 1024,
          lastBytes: r.lastKiB * 1024,
          peakAnonBytes: r.peakAnonKiB * 1024,
          lastAnonBytes: r.lastAnonKiB * 1024,
          samples: r.samples,
          cpuSeconds: r.cpuTicks / CLOCK_TICKS_PER_SECOND,
          syscalls: { read: r.syscr, write: r.syscw },
          contextSwitches: r.ctxsw,
          processes: r.processes,
        }),
      );
      this.worker.postMessage(msg);
    });
  }
}
