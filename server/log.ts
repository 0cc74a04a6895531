import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * The descriptor a worker logs to: the server's standard output, which the primary hands each worker as
 * this descriptor rather than as the worker's own standard output (see primary/worker-output.ts for why).
 */
export const WORKER_LOG_FD = 4;

/**
 * JSON lines on the server's standard output. The destination is synchronous: each line leaves in one
 * write(2), so lines from several processes never interleave, and nothing is lost when a process exits
 * right after logging. Audit lines stay far below PIPE_BUF (4096 bytes) because names are at most 255 bytes.
 *
 * Never pass a password, or an object that may hold one, to a log call.
 */
export function createLogger(level: LogLevel, role: 'primary' | 'worker'): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, role },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ['password', '*.password'], censor: '[redacted]' },
    },
    logOutput(role === 'primary' ? 1 : WORKER_LOG_FD),
  );
}

let output: { write(text: string): void } | null = null;

/**
 * This process's log output on descriptor `fd` (standard output in the primary, WORKER_LOG_FD in a
 * worker), made once: createLogger and relayLogLines share it.
 */
function logOutput(fd: number): { write(text: string): void } {
  output ??= outputUntilLost(fd);
  return output;
}

/**
 * Writes complete lines (each ending in a newline) that another process produced through this process's
 * log output: the primary relays what a worker writes to its own standard output this way (a dependency's
 * console output, say). Dropped once the output is lost.
 */
export function relayLogLines(text: string): void {
  logOutput(1).write(text);
}

let outputLost: ((err: unknown) => void) | null = null;
/** The error that ended the log output, once it has failed. */
let lostWith: { err: unknown } | null = null;

/**
 * Calls `listener` once if this process's log output fails (a closed terminal: EIO; a log reader that
 * exited: EPIPE), or at once if it already has (a line logged before the listener existed). The server
 * then drains and exits with status 1: it cannot keep an audit trail, and a supervisor restarts it with a
 * working output. Lines written after the failure are dropped. The listener runs on its own turn of the
 * event loop, never inside the log call that failed (which may be in the middle of a drain's own steps).
 */
export function whenLogOutputLost(listener: (err: unknown) => void): void {
  outputLost = listener;
  if (lostWith !== null) {
    const { err } = lostWith;
    setImmediate(() => listener(err));
  }
}

/**
 * How long standard output may accept nothing (a full pipe: a log reader that stopped reading without
 * closing, a terminal stopped with Ctrl+S) before it counts as lost. The process sleeps meanwhile (the
 * write is synchronous), so this bounds how long a stuck reader can freeze the server.
 */
const STALL_LIMIT_MS = 10_000;

/**
 * The log output (`fd`), written synchronously, until a write fails. Left to itself, the destination emits the
 * error as an unhandled 'error' event, which kills the process on the spot (no drain), and it would keep
 * every later line buffered for a retry that cannot succeed. A full pipe (stdout is non-blocking: EAGAIN)
 * is retried every 100 ms, forever by default, with the whole process asleep; here only for STALL_LIMIT_MS
 * without a byte written.
 */
function outputUntilLost(fd: number): { write(line: string): void } {
  const stall = new StallClock(STALL_LIMIT_MS);
  const destination = pino.destination({
    fd,
    sync: true,
    retryEAGAIN: (_err: Error, unwritten: number) => stall.mayRetry(unwritten),
  });
  destination.on('error', (cause: unknown) => {
    if (lostWith !== null) return;
    const code = (cause as NodeJS.ErrnoException | null)?.code;
    const err = code === 'EAGAIN' || code === 'EBUSY' ? new Error(`it accepted nothing for ${STALL_LIMIT_MS / 1000} s (its reader stopped reading)`, { cause }) : cause;
    lostWith = { err };
    const listener = outputLost;
    if (listener !== null) setImmediate(() => listener(err));
  });
  return {
    write(text: string): void {
      if (lostWith === null) {
        stall.lineStarted();
        destination.write(text);
      }
    },
  };
}

/**
 * Decides whether a write that found the output full (EAGAIN) is retried: yes until the output has taken
 * no byte for `limitMs`. Progress is seen by sonic-boom's own accounting: each retry reports the bytes of
 * the write still unwritten, which shrink when the reader takes some (a partial write between two EAGAINs
 * emits nothing else), and each new line starts afresh, so a slow reader that keeps reading is never lost.
 */
export class StallClock {
  #since: number | null = null;
  #unwritten = Infinity;

  constructor(private readonly limitMs: number) {}

  lineStarted(): void {
    this.#since = null;
    this.#unwritten = Infinity;
  }

  mayRetry(unwritten: number, now = Date.now()): boolean {
    if (unwritten < this.#unwritten) {
      this.#unwritten = unwritten;
      this.#since = now;
    }
    this.#since ??= now;
    return now - this.#since < this.limitMs;
  }
}
