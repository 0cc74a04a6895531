/**
 * --upload-hook: a program the server runs after each upload it publishes, as pure-ftpd's uploadscript and
 * SFTPGo's upload actions do (a virus scan, a thumbnail, handing the file to an ingest pipeline).
 *
 * The hook never delays the upload: the client has its reply (and the file is durable) before it starts.
 * Each worker runs a few at a time and queues the rest; every run's end is logged (`"event":"upload-hook"`)
 * and counted, and so is every run that never happened (a full queue; a stop that came first), with the
 * file named, so that an operator can run it by hand. It is at most once: a crashed or killed worker's queue
 * is lost without a line (the audit log's upload lines are the complete record).
 *
 * The program gets the published file's path as its only argument and the details in FTS_* variables, never
 * through a shell: a file name cannot inject anything. It runs in its own process group, so a Ctrl+C at the
 * server's terminal does not cut it (the drain waits for it, up to its deadline), and a timeout kills it with
 * whatever it started.
 */
import { spawn } from 'node:child_process';
import type { Logger } from '../log.js';
import type { WorkerMetrics } from '../metrics/worker-metrics.js';

/** Runs of one worker at the same time: enough for a slow scanner not to hold up the next files. */
export const HOOK_CONCURRENCY = 4;
/** Runs a worker keeps waiting beyond those; a published file past this is logged as not run. */
export const HOOK_QUEUE_LIMIT = 10_000;
/** Of each run's output (stdout and stderr together), kept for the log line. */
const OUTPUT_LIMIT = 4096;
/** Variables of the server's environment a hook also gets (no others: the server's may hold secrets). */
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

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

export type HookResult = 'ok' | 'failed' | 'timeout' | 'dropped' | 'unrun';

export class UploadHooks {
  readonly #program: string;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly #metrics: WorkerMetrics;
  readonly #queue: PublishedFile[] = [];
  #running = 0;
  #stopped = false;
  /** Resolves when nothing is queued or running. */
  #idle: (() => void) | null = null;

  constructor(program: string, timeoutMs: number, log: Logger, metrics: WorkerMetrics) {
    this.#program = program;
    this.#timeoutMs = timeoutMs;
    this.#log = log;
    this.#metrics = metrics;
  }

  /** Runs and queued runs now. */
  get pending(): number {
    return this.#running + this.#queue.length;
  }

  /** An upload published `file`: its hook runs now, or when a run ends. */
  published(file: PublishedFile): void {
    if (this.#stopped) return this.#end(file, 'unrun', { reason: 'the worker is stopping' });
    if (this.#queue.length >= HOOK_QUEUE_LIMIT) return this.#end(file, 'dropped', { reason: `more than ${HOOK_QUEUE_LIMIT} runs waiting in this worker` });
    this.#queue.push(file);
    this.#next();
  }

  /**
   * Waits for the runs queued and running, until `deadline` (ms since the epoch); then runs nothing more, and
   * logs each queued file as not run. Runs still going then continue on their own, unwatched.
   */
  async finish(deadline: number): Promise<void> {
    if (this.pending > 0) {
      const idle = new Promise<void>((resolve) => (this.#idle = resolve));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))));
      await Promise.race([idle, late]);
      clearTimeout(timer);
    }
    this.#stopped = true;
    for (const file of this.#queue.splice(0)) this.#end(file, 'unrun', { reason: 'the worker stopped first' });
    if (this.#running > 0) this.#log.warn({ event: 'upload-hook', running: this.#running }, `${this.#running} upload hook runs still going as the worker stops; their ends are not logged`);
  }

  #next(): void {
    while (this.#running < HOOK_CONCURRENCY && this.#queue.length > 0 && !this.#stopped) {
      const file = this.#queue.shift()!;
      this.#running++;
      void this.#run(file).finally(() => {
        this.#running--;
        this.#next();
        if (this.pending === 0) this.#idle?.();
      });
    }
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
    const outcome = await new Promise<{ result: HookResult; code?: number | null; signal?: string | null; error?: string }>((resolve) => {
      let child;
      try {
        child = spawn(this.#program, [file.path], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      } catch (err) {
        resolve({ result: 'failed', error: (err as Error).message });
        return;
      }
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        // The whole group: what the hook started goes with it.
        if (child.pid !== undefined) {
          try {
            process.kill(-child.pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      }, this.#timeoutMs);
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      child.once('error', (err) => {
        clearTimeout(timer);
        resolve({ result: 'failed', error: err.message });
      });
      // 'exit', not 'close': a background process the hook left running may hold its output open.
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        child.stdout.destroy();
        child.stderr.destroy();
        if (timedOut) resolve({ result: 'timeout', code, signal });
        else resolve({ result: code === 0 ? 'ok' : 'failed', code, signal });
      });
    });
    const fields: Record<string, unknown> = { ms: Math.round(performance.now() - started), code: outcome.code, signal: outcome.signal ?? undefined };
    if (outcome.error !== undefined) fields['error'] = outcome.error;
    if (output !== '') fields['output'] = outputBytes > OUTPUT_LIMIT ? `${output}…` : output;
    this.#end(file, outcome.result, fields);
  }

  #end(file: PublishedFile, result: HookResult, fields: Record<string, unknown>): void {
    this.#metrics.uploadHook(result);
    const line = { event: 'upload-hook', result, user: file.user, file: file.name, size: file.size, sha256: file.sha256, ...fields };
    if (result === 'ok') this.#log.info(line, 'upload hook ran');
    else this.#log.warn(line, result === 'timeout' ? `upload hook killed after ${this.#timeoutMs / 1000} s` : result === 'failed' ? 'upload hook failed' : 'upload hook not run');
  }
}
