import cluster, { type Worker } from 'node:cluster';
import type { Config } from '../config.js';
import type { PrimaryToWorker } from '../ipc.js';
import type { Logger } from '../log.js';
import { guardHandoffs } from './handoff-guard.js';

/**
 * libuv's thread pool runs every file operation, fsync included. Its default of 4 threads caps a worker at
 * 4 fsyncs in flight, which is what limits parallel publishes of small files; fsync threads mostly sleep
 * in the kernel, so more of them cost little. An operator's UV_THREADPOOL_SIZE wins.
 */
const WORKER_THREADPOOL_SIZE = '16';

/**
 * glibc gives freed memory at the top of its heap back to the system as soon as 128 KiB are free there, and
 * takes it back on the next allocations, one page fault per page. A worker frees its socket reads (64 KiB
 * each, Node's own) in bursts at every collection, so a transfer kept faulting the same memory back in:
 * 0.4–0.5 s of system time per GiB uploaded, and each fault is expensive on a VM. Keeping 8 MiB of padding
 * at the top of the heap stops that (4 MiB gave half the gain, 16 MiB no more than 8), at the cost of at
 * most 8 MiB per worker that stays resident after a burst. Setting it also fixes glibc's mmap threshold at
 * 128 KiB (no dynamic adjustment), which suits a worker: its large buffers are the payload pool's slabs,
 * allocated once and reused. An operator's MALLOC_TOP_PAD_ wins.
 */
const WORKER_MALLOC_TOP_PAD = String(8 * 1024 * 1024);

/** A worker that lived less than this counts as a crash-loop failure for the backoff. */
const HEALTHY_UPTIME_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 30_000;
/** How often a rolling restart says it is still waiting for an old worker to drain. */
const RESTART_HEARTBEAT_MS = 5_000;
/** A replacement worker must be listening within this long during a rolling restart. */
const REPLACEMENT_READY_MS = 15_000;

/**
 * Forks the workers and keeps their number up: a worker that dies (even by SIGKILL) is replaced, with
 * exponential backoff while workers keep dying young, so a crash loop cannot spin the CPU.
 */
export class WorkerPool {
  /** Live workers by cluster id. Our own map: cluster.workers keeps a worker until it has also disconnected. */
  private readonly live = new Map<number, Worker>();
  private readonly started = new Map<number, number>();
  /** Workers being replaced by a rolling restart: their exit is expected and not respawned. */
  private readonly retiring = new Set<number>();
  private quickFailures = 0;
  private port: number;
  private respawnTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  restarts = 0;
  /** Called when the last worker has exited after stop(). */
  onAllExited: () => void = () => {};
  /** Called for every unexpected worker exit. */
  onCrash: (worker: Worker, code: number | null, signal: string | null) => void = () => {};

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    /** Signs session tokens; handed to each worker through its environment, never logged. */
    private readonly secret: Buffer,
  ) {
    this.port = config.port;
    cluster.on('exit', (worker, code, signal) => this.exited(worker, code, signal));
  }

  start(): void {
    for (let i = 0; i < this.config.workers; i++) this.fork();
  }

  get workers(): Worker[] {
    return [...this.live.values()];
  }

  broadcast(msg: PrimaryToWorker): void {
    for (const w of this.workers) if (w.isConnected()) w.send(msg);
  }

  /** No more respawns from now on. */
  stop(): void {
    this.stopping = true;
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    if (this.workers.length === 0) this.onAllExited();
  }

  /** Hard stop for workers that ignore the drain: worker.kill() may wait forever, a signal does not. */
  killAll(signal: NodeJS.Signals): void {
    for (const w of this.workers) w.process.kill(signal);
  }

  /**
   * Replaces the workers one at a time: the new worker listens on the shared socket before the old one
   * starts draining, so the service never stops accepting connections.
   */
  async rollingRestart(graceMs: number, report: { replacing: (oldPid: number, newPid: number) => void; replaced: (oldPid: number, newPid: number) => void }): Promise<void> {
    for (const old of this.workers) {
      if (this.stopping) throw new Error('the server is draining');
      if (this.retiring.has(old.id)) continue;
      this.retiring.add(old.id);
      const replacement = this.fork();
      await waitFor(replacement, 'listening', REPLACEMENT_READY_MS, `replacement worker ${replacement.process.pid} did not start listening`);
      const exited = waitFor(old, 'exit', graceMs + 10_000, `worker ${old.process.pid} did not exit after draining`);
      if (old.isConnected()) old.send({ type: 'fts:drain', deadline: Date.now() + graceMs } satisfies PrimaryToWorker);
      const pids = [old.process.pid ?? 0, replacement.process.pid ?? 0] as const;
      report.replacing(...pids);
      const heartbeat = setInterval(() => report.replacing(...pids), RESTART_HEARTBEAT_MS);
      try {
        await exited.catch((err: Error) => {
          old.process.kill('SIGKILL');
          throw err;
        });
      } finally {
        clearInterval(heartbeat);
      }
      report.replaced(...pids);
    }
  }

  /** The port actually bound, once known (it differs from the configured one with --port 0). */
  setPort(port: number): void {
    this.port = port;
  }

  private fork(): Worker {
    // The cluster shares one listening handle per (address, port) key. While a worker is alive, a new one
    // must ask for the configured port to join that handle; once none is left the handle is gone, and with
    // --port 0 a fresh listen(0) would move to another port, so the bound port is asked for instead.
    const port = this.live.size > 0 ? this.config.port : this.port;
    const worker = cluster.fork({
      FTS_WORKER_CONFIG: JSON.stringify({ ...this.config, port }),
      FTS_SESSION_SECRET: this.secret.toString('hex'),
      UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? WORKER_THREADPOOL_SIZE,
      MALLOC_TOP_PAD_: process.env['MALLOC_TOP_PAD_'] ?? WORKER_MALLOC_TOP_PAD,
    });
    this.started.set(worker.id, Date.now());
    this.live.set(worker.id, worker);
    const workerPid = worker.process.pid;
    guardHandoffs(worker, (count) => this.log.warn({ workerPid, connections: count }, 'closed connections handed to a worker that died before taking them'));
    this.log.info({ workerPid }, 'worker started');
    return worker;
  }

  private exited(worker: Worker, code: number | null, signal: string | null): void {
    const lived = Date.now() - (this.started.get(worker.id) ?? Date.now());
    this.started.delete(worker.id);
    this.live.delete(worker.id);
    if (this.stopping || this.retiring.delete(worker.id)) {
      this.log.info({ workerPid: worker.process.pid, code, signal }, 'worker exited');
      if (this.stopping && this.workers.length === 0) this.onAllExited();
      return;
    }
    this.onCrash(worker, code, signal);
    this.quickFailures = lived < HEALTHY_UPTIME_MS ? this.quickFailures + 1 : 0;
    const delay = this.quickFailures === 0 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.quickFailures - 1));
    const fields = { workerPid: worker.process.pid, code, signal, livedMs: lived, restartInMs: delay };
    if (this.quickFailures >= 5) this.log.error({ ...fields, quickFailures: this.quickFailures }, 'worker crash loop: restarts are being delayed');
    else this.log.warn(fields, 'worker died; restarting');
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = null;
      if (this.stopping) return;
      this.restarts++;
      this.fork();
    }, delay);
  }
}

function waitFor(worker: Worker, event: 'listening' | 'exit', timeoutMs: number, message: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      worker.off(event, done);
      reject(new Error(message));
    }, timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    worker.once(event, done);
  });
}
