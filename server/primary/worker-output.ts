import type { Worker } from 'node:cluster';
import { relayLogLines } from '../log.js';

/**
 * Workers' standard output and error, as the primary forks them: pipes of their own that the primary
 * relays (no standard input).
 *
 * Why not let workers inherit the server's standard output? Then every process shares one open file
 * description, and with it its O_NONBLOCK flag, which Node and libuv change behind our back: a fork clears
 * it (libuv makes a child's inherited stdio blocking before exec) and a worker's exit restores what that
 * worker found at its start (blocking). The log output's stall limit (log.ts) relies on the flag: with the
 * output blocking, a log reader that stops reading froze every process in write(2) for good, after the
 * first rolling restart or worker crash.
 */
export const WORKER_STDIO = ['ignore', 'pipe', 'pipe', 'ipc'] as const;

/** A worker line longer than this (no newline yet) is relayed as it is, so a runaway line cannot grow memory. */
const MAX_PENDING_CHARS = 64 * 1024;

/**
 * Relays what `worker` writes: whole log lines through the primary's own log output (each batch in one
 * write, so lines of several workers never interleave), its standard error to the primary's as it comes.
 * A worker's last unfinished line is relayed, with a newline, when its output ends.
 */
export function relayWorkerOutput(worker: Worker): void {
  const stdout = worker.process.stdout;
  if (stdout) {
    let pending = '';
    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => {
      const text = pending + chunk;
      const end = text.lastIndexOf('\n') + 1;
      if (end === 0 && text.length < MAX_PENDING_CHARS) {
        pending = text;
        return;
      }
      const complete = end === 0 ? `${text}\n` : text.slice(0, end);
      pending = end === 0 ? '' : text.slice(end);
      relayLogLines(complete);
    });
    stdout.on('end', () => {
      if (pending !== '') relayLogLines(`${pending}\n`);
      pending = '';
    });
    stdout.on('error', () => undefined); // the worker is gone; its exit is handled elsewhere
  }
  const stderr = worker.process.stderr;
  if (stderr) {
    stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    stderr.on('error', () => undefined);
  }
}
