/**
 * --upload-hook: a program the server runs after each upload it publishes, as pure-ftpd's uploadscript and
 * SFTPGo's upload actions do (a virus scan, a thumbnail, handing the file to an ingest pipeline).
 *
 * The hook never delays the upload: the client has its reply (and the file is durable) before it starts.
 * Each worker runs a few at a time and queues the rest, taking the users in turn so that one user's flood
 * of uploads cannot push the others' files out. Every run's end is logged (`"event":"upload-hook"`) and
 * counted, and so is every run that never happened (a full queue; a stop that came first) and every run a
 * stop cut short, with the file named, so that an operator can run it by hand. It is at most once: a
 * crashed or killed worker's queue is lost without a line (the audit log's upload lines are complete).
 *
 * The program gets the published file's path as its only argument and the details in FTS_* variables, never
 * through a shell: a file name cannot inject anything. Each run is its own process group, which ends with
 * it: what the program leaves running in the background is killed when it exits (or times out), so neither
 * the timeout nor the limit of runs at once can be escaped by accident; a Ctrl+C at the server's terminal
 * does not reach it.
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

/** A file an upload published, as the hook is told of it. */
export interface PublishedFile {
  user: string;
  /** Its name in the user's directory. */
  name: string;
  /** Its absolute path on the storage. */
  path: string;
  size: number;
  sha256: string;
  /** Milliseconds since the epoch. */
  mtime: number;
  /** The client's address. */
  remote: string;
}

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
  /** Waiting runs by user; the users in the order they are served (one run each in turn). */
  readonly #queues = new Map<string, PublishedFile[]>();
  readonly #running = new Set<Run>();
  #stopped = false;
  /** Set while finish() waits: resolves it early (all done, or a nearer deadline reached). */
  #wake: (() => void) | null = null;
  #deadline = Infinity;
  #deadlineTimer: NodeJS.Timeout | undefined;

  constructor(program: string, timeoutMs: number, log: Logger, metrics: WorkerMetrics, limits: UploadHookLimits = DEFAULT_HOOK_LIMITS) {
    this.#program = program;
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

  /** An upload published `file`: its hook runs now, or when its turn comes. */
  published(file: PublishedFile): void {
    if (this.#stopped) return this.#end(file, 'unrun', { reason: 'the worker is stopping' });
    let queue = this.#queues.get(file.user);
    if (queue === undefined) this.#queues.set(file.user, (queue = []));
    if (queue.length >= this.#limits.queuedPerUser) {
      return this.#end(file, 'dropped', { reason: `${this.#limits.queuedPerUser} runs of this user already waiting in this worker` });
    }
    queue.push(file);
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
    for (const queue of this.#queues.values()) for (const file of queue.splice(0)) this.#end(file, 'unrun', { reason: 'the worker stopped first' });
    this.#queues.clear();
  }

  #next(): void {
    while (this.#running.size < this.#limits.concurrency && !this.#stopped) {
      const file = this.#take();
      if (file === null) break;
      void this.#run(file).finally(() => {
        this.#next();
        if (this.pending === 0) this.#wake?.();
      });
    }
  }

  /** The next file, from the user served longest ago (who then goes to the back). */
  #take(): PublishedFile | null {
    for (const [user, queue] of this.#queues) {
      this.#queues.delete(user);
      const file = queue.shift();
      if (queue.length > 0) this.#queues.set(user, queue);
      if (file !== undefined) return file;
    }
    return null;
  }

  async #run(file: PublishedFile): Promise<void> {
    const started = performance.now();
    const env: NodeJS.ProcessEnv = {};
    for (const key of PASSED_ENV) if (process.env[key] !== undefined) env[key] = process.env[key];
    Object.assign(env, {
      FTS_EVENT: 'upload',
      FTS_USER: file.user,
      FTS_NAME: file.name,
      FTS_PATH: file.path,
      FTS_SIZE: String(file.size),
      FTS_SHA256: file.sha256,
      FTS_MTIME: String(file.mtime),
      FTS_REMOTE: file.remote,
    });
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
        child = spawn(this.#program, [file.path], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
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
    this.#end(file, outcome.result, fields);
    logged();
  }

  #end(file: PublishedFile, result: HookResult, fields: Record<string, unknown>): void {
    this.#metrics.uploadHook(result);
    const line = { event: 'upload-hook', result, user: file.user, file: file.name, size: file.size, sha256: file.sha256, ...fields };
    const messages: Record<HookResult, string> = {
      ok: 'upload hook ran',
      failed: 'upload hook failed',
      timeout: `upload hook killed after ${this.#timeoutMs / 1000} s`,
      killed: 'upload hook killed: the worker stopped',
      dropped: 'upload hook not run: too many waiting',
      unrun: 'upload hook not run: the worker stopped first',
    };
    if (result === 'ok') this.#log.info(line, messages[result]);
    else this.#log.warn(line, messages[result]);
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
