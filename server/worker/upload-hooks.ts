/**
 * --upload-hook: a program the server runs after each upload it publishes, as pure-ftpd's uploadscript and
 * SFTPGo's upload actions do (a virus scan, a thumbnail, handing the file to an ingest pipeline), and, with
 * --hook-events, after each delete, rename and download too (SFTPGo's actions of those names: keeping a
 * mirror or an index in step, archiving a file once it was fetched).
 *
 * The hook never delays the operation: the client has its reply (and a change is durable) before it
 * starts. Each worker runs a few at a time and queues the rest, taking the users in turn so that one user's
 * flood cannot push the others' files out. Runs that name the same file (for a rename, either name) run one
 * after another in the order of the changes, so that a mirror sees an upload before the delete that
 * follows it. Every run's end is logged (`"event":"upload-hook"`) and counted, and so is every run that
 * never happened (a full queue; a stop that came first) and every run a stop cut short, with the file named,
 * so that an operator can run it by hand. It is at most once: a crashed or killed worker's queue is lost
 * without a line (the audit log's lines are complete).
 *
 * The program gets the file's path as its only argument and the details in FTS_* variables, never through a
 * shell: a file name cannot inject anything. Each run is its own process group, which ends with it: what
 * the program leaves running in the background is killed when it exits (or times out), so neither the
 * timeout nor the limit of runs at once can be escaped by accident; a Ctrl+C at the server's terminal does
 * not reach it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../log.js';
import type { WorkerMetrics } from '../metrics/worker-metrics.js';

/** Of each run's output (stdout and stderr together), kept for the log line. */
const OUTPUT_LIMIT = 4096;
/** How long the output of a run that has exited may take to drain from its pipes. */
const OUTPUT_DRAIN_MS = 500;
/** How long runs killed at a stop may take to be reaped, so that their lines are written before the exit. */
const KILLED_REAP_MS = 1000;
/** Variables of the server's environment a hook also gets (no others: the server's may hold secrets). */
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

export interface UploadHookLimits {
  /** Runs of one worker at the same time: enough for a slow scanner not to hold up the next files. */
  concurrency: number;
  /** Runs waiting in one worker for one user; a published file past this is logged as dropped. */
  queuedPerUser: number;
}

export const DEFAULT_HOOK_LIMITS: UploadHookLimits = { concurrency: 4, queuedPerUser: 1000 };

/** The operations a hook can run after (--hook-events). */
export type HookEvent = 'upload' | 'delete' | 'rename' | 'download';
export const HOOK_EVENTS: readonly HookEvent[] = ['upload', 'delete', 'rename', 'download'];

/** What an operation did to a user's file, as its handler reports it. */
export type FileEvent =
  /** An upload put this file under its name. */
  | { event: 'upload'; name: string; size: number; sha256: string; mtime: number }
  /** A download sent the file from `offset` to its end (`length` bytes); `sha256` is the whole file's. */
  | { event: 'download'; name: string; size: number; sha256: string; mtime: number; offset: number; length: number }
  /** A delete removed the file `name`, of `size` bytes. */
  | { event: 'delete'; name: string; size: number }
  /** A rename gave the file `from` the name `name`, replacing a file that had it when `replaced`. */
  | { event: 'rename'; name: string; from: string; size: number; replaced: boolean };

/** An event as the hook is told of it. */
export type HookJob = FileEvent & {
  user: string;
  /** The absolute path of `name` on the storage (for a delete, where the file was). */
  path: string;
  /** For a rename, the absolute path of `from`. */
  fromPath?: string;
  /** The client's address. */
  remote: string;
};

export type HookResult = 'ok' | 'failed' | 'timeout' | 'killed' | 'dropped' | 'unrun';
export const HOOK_RESULTS: readonly HookResult[] = ['ok', 'failed', 'timeout', 'killed', 'dropped', 'unrun'];

/** A run in progress. */
interface Run {
  child: ChildProcess;
  /** Set when a stop kills it: its end is logged as `killed`. */
  stopped: boolean;
  /** Resolves once its end is logged. */
  logged: Promise<void>;
}

export class UploadHooks {
  readonly #program: string;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly #metrics: WorkerMetrics;
  readonly #limits: UploadHookLimits;
  readonly #events: ReadonlySet<HookEvent>;
  /** Waiting runs by user; the users in the order they are served (one run each in turn). */
  readonly #queues = new Map<string, HookJob[]>();
  readonly #running = new Set<Run>();
  /** The files (user NUL name) that runs in progress name: another run naming one of them waits. */
  readonly #busy = new Set<string>();
  #stopped = false;
  /** Set while finish() waits: resolves it early (all done, or a nearer deadline reached). */
  #wake: (() => void) | null = null;
  #deadline = Infinity;
  #deadlineTimer: NodeJS.Timeout | undefined;

  constructor(program: string, timeoutMs: number, log: Logger, metrics: WorkerMetrics, events: readonly HookEvent[] = ['upload'], limits: UploadHookLimits = DEFAULT_HOOK_LIMITS) {
    this.#program = program;
    this.#events = new Set(events);
    this.#timeoutMs = timeoutMs;
    this.#log = log;
    this.#metrics = metrics;
    this.#limits = limits;
  }

  /** Runs and queued runs now. */
  get pending(): number {
    let queued = 0;
    for (const q of this.#queues.values()) queued += q.length;
    return this.#running.size + queued;
  }

  /** An operation is done: its hook runs now, or when its turn comes (nothing for an event not hooked). */
  happened(job: HookJob): void {
    if (!this.#events.has(job.event)) return;
    if (this.#stopped) return this.#end(job, 'unrun', { reason: 'the worker is stopping' });
    let queue = this.#queues.get(job.user);
    if (queue === undefined) this.#queues.set(job.user, (queue = []));
    if (queue.length >= this.#limits.queuedPerUser) {
      return this.#end(job, 'dropped', { reason: `${this.#limits.queuedPerUser} runs of this user already waiting in this worker` });
    }
    queue.push(job);
    this.#next();
  }

  /**
   * Waits for the runs queued and running until `deadline` (ms since the epoch; hasten() may bring it
   * forward); then runs nothing more: queued files are logged as not run, runs still going are killed
   * (with what they started) and logged as killed.
   */
  async finish(deadline: number): Promise<void> {
    this.hasten(deadline);
    if (this.pending > 0 && Date.now() < this.#deadline) await new Promise<void>((resolve) => (this.#wake = resolve));
    this.#wake = null;
    clearTimeout(this.#deadlineTimer);
    this.stop();
    if (this.#running.size === 0) return;
    const reaped = [...this.#running].map((run) => run.logged);
    for (const run of this.#running) {
      run.stopped = true;
      killGroup(run.child);
    }
    await Promise.race([Promise.all(reaped), new Promise<void>((resolve) => setTimeout(resolve, KILLED_REAP_MS).unref())]);
  }

  /** Brings finish()'s deadline forward (a shorter drain, a forced stop). */
  hasten(deadline: number): void {
    if (deadline >= this.#deadline) return;
    this.#deadline = deadline;
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = setTimeout(() => this.#wake?.(), Math.max(0, deadline - Date.now()));
  }

  /** Starts no more runs: what is queued (and published from now on) is logged as not run. */
  stop(): void {
    this.#stopped = true;
    for (const queue of this.#queues.values()) for (const job of queue.splice(0)) this.#end(job, 'unrun', { reason: 'the worker stopped first' });
    this.#queues.clear();
  }

  #next(): void {
    while (this.#running.size < this.#limits.concurrency && !this.#stopped) {
      const job = this.#take();
      if (job === null) break;
      const files = filesOf(job);
      for (const f of files) this.#busy.add(f);
      void this.#run(job).finally(() => {
        for (const f of files) this.#busy.delete(f);
        this.#next();
        if (this.pending === 0) this.#wake?.();
      });
    }
  }

  /**
   * The next run, from the user served longest ago that has one ready (who then goes to the back): the
   * first of the user's waiting runs whose files neither a run in progress nor an earlier waiting run names.
   */
  #take(): HookJob | null {
    for (const [user, queue] of this.#queues) {
      const at = this.#firstReady(queue);
      if (at === -1) continue;
      const [job] = queue.splice(at, 1);
      this.#queues.delete(user);
      if (queue.length > 0) this.#queues.set(user, queue);
      return job!;
    }
    return null;
  }

  #firstReady(queue: readonly HookJob[]): number {
    const earlier = new Set<string>();
    for (let i = 0; i < queue.length; i++) {
      const files = filesOf(queue[i]!);
      if (files.every((f) => !this.#busy.has(f) && !earlier.has(f))) return i;
      for (const f of files) earlier.add(f);
    }
    return -1;
  }

  async #run(job: HookJob): Promise<void> {
    const started = performance.now();
    const env: NodeJS.ProcessEnv = {};
    for (const key of PASSED_ENV) if (process.env[key] !== undefined) env[key] = process.env[key];
    Object.assign(env, variablesOf(job));
    let output = '';
    let outputBytes = 0;
    const keep = (chunk: Buffer): void => {
      if (outputBytes < OUTPUT_LIMIT) output += chunk.subarray(0, OUTPUT_LIMIT - outputBytes).toString('utf8');
      outputBytes += chunk.length;
    };
    let run: Run | null = null;
    let logged!: () => void;
    const loggedPromise = new Promise<void>((resolve) => (logged = resolve));
    const outcome = await new Promise<{ result: HookResult; code?: number | null; signal?: string | null; error?: string }>((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn(this.#program, [job.path], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      } catch (err) {
        resolve({ result: 'failed', error: (err as Error).message });
        return;
      }
      const current: Run = { child, stopped: false, logged: loggedPromise };
      run = current;
      this.#running.add(current);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup(child);
      }, this.#timeoutMs);
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      child.once('error', (err) => {
        clearTimeout(timer);
        resolve({ result: 'failed', error: err.message });
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        // The run's group ends with it: what it left in the background would escape every limit.
        killGroup(child);
        const result: HookResult = current.stopped ? 'killed' : timedOut ? 'timeout' : code === 0 ? 'ok' : 'failed';
        // Its output may still sit in the pipes: read to their end, within bounds (a process of another
        // group could hold them open).
        const drained = setTimeout(() => {
          child.stdout!.destroy();
          child.stderr!.destroy();
        }, OUTPUT_DRAIN_MS);
        child.once('close', () => {
          clearTimeout(drained);
          resolve({ result, code, signal });
        });
      });
    });
    if (run !== null) this.#running.delete(run);
    const fields: Record<string, unknown> = { ms: Math.round(performance.now() - started), code: outcome.code, signal: outcome.signal ?? undefined };
    if (outcome.error !== undefined) fields['error'] = outcome.error;
    if (output !== '') fields['output'] = outputBytes > OUTPUT_LIMIT ? `${output}…` : output;
    this.#end(job, outcome.result, fields);
    logged();
  }

  #end(job: HookJob, result: HookResult, fields: Record<string, unknown>): void {
    this.#metrics.uploadHook(job.event, result);
    const details = detailsOf(job);
    const line = { event: 'upload-hook', trigger: job.event, result, user: job.user, file: job.name, size: job.size, ...details, ...fields };
    const hook = `${job.event} hook`;
    const messages: Record<HookResult, string> = {
      ok: `${hook} ran`,
      failed: `${hook} failed`,
      timeout: `${hook} killed after ${this.#timeoutMs / 1000} s`,
      killed: `${hook} killed: the worker stopped`,
      dropped: `${hook} not run: too many waiting`,
      unrun: `${hook} not run: the worker stopped first`,
    };
    if (result === 'ok') this.#log.info(line, messages[result]);
    else this.#log.warn(line, messages[result]);
  }
}

/** The files a run names, as keys of UploadHooks' busy set. */
function filesOf(job: HookJob): string[] {
  const key = (name: string): string => `${job.user}\0${name}`;
  return job.event === 'rename' ? [key(job.from), key(job.name)] : [key(job.name)];
}

/** The FTS_* variables of a run (OPERATIONS.md "Upload hook" lists them for operators). */
function variablesOf(job: HookJob): Record<string, string> {
  const common = { FTS_EVENT: job.event, FTS_USER: job.user, FTS_NAME: job.name, FTS_PATH: job.path, FTS_SIZE: String(job.size), FTS_REMOTE: job.remote };
  switch (job.event) {
    case 'upload':
      return { ...common, FTS_SHA256: job.sha256, FTS_MTIME: String(job.mtime) };
    case 'download':
      return { ...common, FTS_SHA256: job.sha256, FTS_MTIME: String(job.mtime), FTS_OFFSET: String(job.offset), FTS_LENGTH: String(job.length) };
    case 'delete':
      return common;
    case 'rename':
      return { ...common, FTS_FROM_NAME: job.from, FTS_FROM_PATH: job.fromPath ?? '', FTS_REPLACED: job.replaced ? '1' : '0' };
  }
}

/** What a run's log line says of its event besides the user, name and size. */
function detailsOf(job: HookJob): Record<string, unknown> {
  switch (job.event) {
    case 'upload':
      return { sha256: job.sha256 };
    case 'download':
      return { sha256: job.sha256, offset: job.offset, length: job.length };
    case 'delete':
      return {};
    case 'rename':
      return { from: job.from, replaced: job.replaced };
  }
}

/** SIGKILL to the run's whole process group (it is the group's leader: spawned detached). */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
}
