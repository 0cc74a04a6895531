import cluster, { type Worker } from 'node:cluster';
import type { Config } from '../config.js';
import type { PrimaryToWorker } from '../ipc.js';
import type { Logger } from '../log.js';
import { ThrottledLines } from '../throttled-lines.js';
import { guardHandoffs } from './handoff-guard.js';
import { workerEnv, workerExecArgv } from './worker-flags.js';
import { relayWorkerOutput, WORKER_STDIO } from './worker-output.js';

/** Lines about connections that could not be handed to a worker: at most one per this long. */
const UNDELIVERED_LINE_INTERVAL_MS = 60_000;
/** A worker that lived less than this counts as a crash-loop failure for the backoff. */
const HEALTHY_UPTIME_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 30_000;
/** How often a rolling restart says it is still waiting for an old worker to drain. */
const RESTART_HEARTBEAT_MS = 5_000;
/** A replacement worker must be listening within this long during a rolling restart. */
const REPLACEMENT_READY_MS = 15_000;
/** How long a worker killed with SIGKILL during a rolling restart may take to be reaped. */
const KILLED_EXIT_MS = 5_000;

/** What a rolling restart tells the admin client as it goes (old and new worker pids). */
export interface RestartReport {
  /** The replacement is starting, or the old worker draining; repeated every few seconds. */
  replacing: (oldPid: number, newPid: number) => void;
  /** The old worker did not exit after draining and was killed. */
  killed: (oldPid: number, newPid: number) => void;
  /** The old worker is gone; the new one serves in its place. */
  replaced: (oldPid: number, newPid: number) => void;
}

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
  /**
   * Replacements of a rolling restart that are not listening yet. If one exits, the restart reports it and
   * stops; respawning it as a crash would only repeat the failure (and leave one worker too many).
   */
  private readonly unready = new Set<number>();
  /** Workers whose listener is up: only these have their IPC handler and answer queries. */
  private readonly listening = new Set<number>();
  /** The port each worker was told to listen on (portFor). */
  private readonly requestedPorts = new Map<number, number>();
  /** Old workers told to drain by a rolling restart: their listener is closed, they left the shared handle. */
  private readonly drained = new Set<number>();
  private quickFailures = 0;
  private port: number;
  private respawnTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  restarts = 0;
  /** Called when the last worker has exited after stop(). */
  onAllExited: () => void = () => {};
  /** Called for every unexpected worker exit; `listened`: the worker had started listening. */
  onCrash: (worker: Worker, code: number | null, signal: string | null, listened: boolean) => void = () => {};
  /** A connection could not be handed to a worker (it had no free file descriptor) and was closed. */
  onUndelivered: () => void = () => {};
  private readonly undeliveredLines = new ThrottledLines<{ workerPid: number }>(UNDELIVERED_LINE_INTERVAL_MS, ({ workerPid }, connections) =>
    this.log.error(
      { workerPid, connections },
      'a connection could not be handed to a worker: it has no free file descriptor (EMFILE); closed it. Raise the open-file limit (LimitNOFILE) or lower --max-connections',
    ),
  );

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.port = config.port;
    cluster.on('exit', (worker, code, signal) => this.exited(worker, code, signal));
  }

  start(): void {
    cluster.setupPrimary({ stdio: [...WORKER_STDIO], execArgv: workerExecArgv(process.execArgv, process.env['NODE_OPTIONS']) });
    for (let i = 0; i < this.config.workers; i++) this.fork();
  }

  get workers(): Worker[] {
    return [...this.live.values()];
  }

  /** Live workers that have started listening. A worker still starting does not answer queries yet. */
  get listeningWorkers(): Worker[] {
    return this.workers.filter((w) => this.listening.has(w.id));
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
   *
   * A worker that died before its turn has already been respawned as a crash and is skipped. A replacement
   * that exits (or is not listening within REPLACEMENT_READY_MS, and is then killed) before it listens stops
   * the restart with an error: the code on disk cannot start a worker, so the next would fail as well; the
   * old worker keeps serving. An old worker that does not exit after draining (hung, stopped) is killed,
   * reported, and the restart goes on; the pids of such workers are returned.
   */
  async rollingRestart(graceMs: number, report: RestartReport): Promise<{ killed: number[] }> {
    const killed: number[] = [];
    // Every worker died and their respawns wait out the crash backoff: there is nothing to replace, and
    // "all workers restarted" would be untrue.
    if (this.workers.length === 0) throw new Error('no worker is running now (respawns after crashes are pending); try again shortly');
    for (const old of this.workers) {
      if (this.stopping) throw new Error('the server is draining');
      if (!this.live.has(old.id) || this.retiring.has(old.id)) continue;
      const oldPid = old.process.pid ?? 0;
      // Retired before the replacement listens: an old worker that dies meanwhile is replaced by it,
      // not respawned as well (which would leave one worker too many).
      this.retiring.add(old.id);
      const replacement = this.fork();
      const pids = [oldPid, replacement.process.pid ?? 0] as const;
      this.unready.add(replacement.id);
      // Sent from the start, also while the replacement starts: fts-admin gives up after 15 s without a line.
      report.replacing(...pids);
      const heartbeat = setInterval(() => report.replacing(...pids), RESTART_HEARTBEAT_MS);
      try {
        const started = await whenListening(replacement, REPLACEMENT_READY_MS);
        if (started !== 'listening') {
          // A drain that began meanwhile aborts starting workers: that is not the replacement's fault.
          if (this.stopping) throw new Error('the server is draining');
          throw this.replacementFailed(old, replacement, started);
        }
        this.unready.delete(replacement.id);
        if (!this.live.has(old.id)) {
          // The old worker died while its replacement started: the replacement has taken its place.
          report.replaced(...pids);
          continue;
        }
        const exited = waitForExit(old, graceMs + 10_000);
        this.drained.add(old.id);
        if (old.isConnected()) old.send({ type: 'fts:drain', deadline: Date.now() + graceMs } satisfies PrimaryToWorker);
        if (!(await exited)) {
          old.process.kill('SIGKILL');
          // SIGKILL also ends a stopped process; only a process stuck in the kernel outlives this.
          if (!(await waitForExit(old, KILLED_EXIT_MS))) throw new Error(`worker ${oldPid} did not exit after draining, nor ${KILLED_EXIT_MS / 1000} s after SIGKILL`);
          this.log.error({ workerPid: oldPid, graceMs }, 'worker did not exit after draining; killed');
          killed.push(oldPid);
          report.killed(...pids);
        }
      } finally {
        clearInterval(heartbeat);
      }
      report.replaced(...pids);
    }
    return { killed };
  }

  /** The port actually bound, once known (it differs from the configured one with --port 0). */
  setPort(port: number): void {
    this.port = port;
  }

  /**
   * The port `worker` must ask for when it listens, decided when it is about to (fts:init), not when it
   * was forked. node:cluster shares one listening handle per requested (address, port): a worker must ask
   * for the port the listening workers asked for to join their handle (with --port 0 that is 0, and asking
   * for the bound port would then fail with EADDRINUSE). Once no worker listens the handle is gone, and a
   * fresh listen(0) would move the service to another port, so the bound port is asked for instead.
   */
  portFor(worker: Worker): number {
    let port = this.port;
    for (const id of this.listening) {
      if (this.drained.has(id)) continue; // closed its listener: it holds no handle open
      const asked = this.requestedPorts.get(id);
      if (asked !== undefined) {
        port = asked;
        break;
      }
    }
    this.requestedPorts.set(worker.id, port);
    return port;
  }

  private fork(): Worker {
    const worker = cluster.fork({
      // No secret here: a process's initial environment stays readable in /proc/PID/environ for its
      // lifetime. The token secret comes over IPC (fts:init), and so does the port to listen on (portFor).
      FTS_WORKER_CONFIG: JSON.stringify(this.config),
      ...workerEnv(process.env),
    });
    relayWorkerOutput(worker);
    this.started.set(worker.id, Date.now());
    this.live.set(worker.id, worker);
    worker.once('listening', () => {
      if (this.live.has(worker.id)) this.listening.add(worker.id);
    });
    const workerPid = worker.process.pid;
    // A send to a worker that has just died but whose channel end has not been read yet fails with EPIPE,
    // emitted as 'error' on the worker: without a listener that would crash the primary. The exit that
    // follows is handled as usual.
    worker.on('error', (err) => this.log.warn({ err, workerPid }, 'message to a worker failed'));
    guardHandoffs(worker, {
      died: (count) => this.log.warn({ workerPid, connections: count }, 'closed connections handed to a worker that died before taking them'),
      undelivered: () => this.undelivered(workerPid ?? 0),
    });
    this.log.info({ workerPid }, 'worker started');
    return worker;
  }

  /** A worker out of file descriptors: counted, and logged throttled (a flood of connections must not flood the log). */
  private undelivered(workerPid: number): void {
    this.onUndelivered();
    this.undeliveredLines.note({ workerPid });
  }

  private exited(worker: Worker, code: number | null, signal: string | null): void {
    const lived = Date.now() - (this.started.get(worker.id) ?? Date.now());
    const listened = this.listening.has(worker.id);
    this.started.delete(worker.id);
    this.live.delete(worker.id);
    this.listening.delete(worker.id);
    this.requestedPorts.delete(worker.id);
    this.drained.delete(worker.id);
    if (this.unready.delete(worker.id)) {
      // rollingRestart reports it; the worker it was to replace keeps serving.
      this.log.warn({ workerPid: worker.process.pid, code, signal }, 'replacement worker exited before listening; not respawned');
      if (this.stopping && this.workers.length === 0) this.onAllExited();
      return;
    }
    if (this.stopping || this.retiring.delete(worker.id)) {
      this.log.info({ workerPid: worker.process.pid, code, signal }, 'worker exited');
      if (this.stopping && this.workers.length === 0) this.onAllExited();
      return;
    }
    this.onCrash(worker, code, signal, listened);
    this.quickFailures = lived < HEALTHY_UPTIME_MS ? this.quickFailures + 1 : 0;
    const delay = this.quickFailures === 0 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.quickFailures - 1));
    const fields = { workerPid: worker.process.pid, code, signal, livedMs: lived, restartInMs: delay };
    if (this.quickFailures >= 5) this.log.error({ ...fields, quickFailures: this.quickFailures }, 'worker crash loop: restarts are being delayed');
    else this.log.warn(fields, 'worker died; restarting');
    this.respawn(delay);
  }

  private respawn(delayMs: number): void {
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = null;
      if (this.stopping) return;
      this.restarts++;
      this.fork();
    }, delayMs);
  }

  /**
   * The replacement exited, or did not listen in time (it is killed; its exit is not respawned either).
   * The old worker is no longer retiring: it keeps serving, and is respawned as usual if it dies later.
   */
  private replacementFailed(old: Worker, replacement: Worker, outcome: 'timeout' | { code: number | null; signal: string | null }): Error {
    const oldPid = old.process.pid ?? 0;
    const newPid = replacement.process.pid ?? 0;
    let what: string;
    if (outcome === 'timeout') {
      replacement.process.kill('SIGKILL');
      what = `replacement worker ${newPid} did not start listening within ${REPLACEMENT_READY_MS / 1000} s and was killed`;
    } else {
      what = `replacement worker ${newPid} exited before it was listening (${outcome.signal ? `signal ${outcome.signal}` : `exit code ${outcome.code}`})`;
    }
    this.retiring.delete(old.id);
    let fate = `worker ${oldPid} keeps serving`;
    if (!this.live.has(old.id)) {
      // It died while its replacement was starting, and was not respawned because the replacement was
      // to take its place: start one now.
      this.log.warn({ workerPid: oldPid }, 'worker exited while its replacement was starting, and the replacement failed; restarting');
      this.respawn(0);
      fate = `worker ${oldPid} exited meanwhile and is being respawned`;
    }
    this.log.error({ workerPid: oldPid, replacementPid: newPid }, `rolling restart stopped: ${what}`);
    return new Error(`${what}; ${fate}; the rolling restart stopped (see the server log)`);
  }
}

/** Resolves once the worker listens, exits, or `timeoutMs` has passed, whichever comes first. */
function whenListening(worker: Worker, timeoutMs: number): Promise<'listening' | 'timeout' | { code: number | null; signal: string | null }> {
  return new Promise((resolve) => {
    const settle = (outcome: 'listening' | 'timeout' | { code: number | null; signal: string | null }): void => {
      clearTimeout(timer);
      worker.off('listening', onListening);
      worker.off('exit', onExit);
      resolve(outcome);
    };
    const onListening = (): void => settle('listening');
    const onExit = (code: number | null, signal: string | null): void => settle({ code, signal });
    const timer = setTimeout(() => settle('timeout'), timeoutMs);
    worker.once('listening', onListening);
    worker.once('exit', onExit);
    if (worker.isDead()) settle({ code: worker.process.exitCode, signal: worker.process.signalCode });
  });
}

/** True once the worker has exited, false if it is still running after `timeoutMs`. */
function waitForExit(worker: Worker, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (worker.isDead()) {
      resolve(true);
      return;
    }
    const done = (exited: boolean): void => {
      clearTimeout(timer);
      worker.off('exit', onExit);
      resolve(exited);
    };
    const onExit = (): void => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    worker.once('exit', onExit);
  });
}
