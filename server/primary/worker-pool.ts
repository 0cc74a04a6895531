import cluster, { type Worker } from 'node:cluster';
import type { Config } from '../config.js';
import type { PrimaryToWorker } from '../ipc.js';
import type { Logger } from '../log.js';

/** A worker that lived less than this counts as a crash-loop failure for the backoff. */
const HEALTHY_UPTIME_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 30_000;

/**
 * Forks the workers and keeps their number up: a worker that dies (even by SIGKILL) is replaced, with
 * exponential backoff while workers keep dying young, so a crash loop cannot spin the CPU.
 */
export class WorkerPool {
  private readonly started = new Map<number, number>();
  private quickFailures = 0;
  private respawnTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  restarts = 0;
  /** Called when the last worker has exited after stop(). */
  onAllExited: () => void = () => {};
  /** Called for every worker exit that was not asked for while no worker ever listened. */
  onExit: (worker: Worker, code: number | null, signal: string | null) => void = () => {};

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    cluster.on('exit', (worker, code, signal) => this.exited(worker, code, signal));
  }

  start(): void {
    for (let i = 0; i < this.config.workers; i++) this.fork();
  }

  get workers(): Worker[] {
    return Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
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

  private fork(): void {
    const worker = cluster.fork({ FTS_WORKER_CONFIG: JSON.stringify(this.config) });
    this.started.set(worker.id, Date.now());
    this.log.info({ workerPid: worker.process.pid }, 'worker started');
  }

  private exited(worker: Worker, code: number | null, signal: string | null): void {
    const lived = Date.now() - (this.started.get(worker.id) ?? Date.now());
    this.started.delete(worker.id);
    if (this.stopping) {
      this.log.info({ workerPid: worker.process.pid, code, signal }, 'worker exited');
      if (this.workers.length === 0) this.onAllExited();
      return;
    }
    this.onExit(worker, code, signal);
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
