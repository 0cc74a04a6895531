import type { Worker } from 'node:cluster';
import { relayLogLines, WORKER_LOG_FD } from '../log.js';

/**
 * What a worker gets as its descriptors: no standard input; standard output and error are pipes the primary
 * relays (they carry only what a dependency prints, or a crash's stack trace); the IPC channel; and the
 * server's standard output as WORKER_LOG_FD, which the worker logs to directly.
 *
 * Why not as the worker's own standard output? Every process then shares one open file description, and
 * with it its O_NONBLOCK flag, which Node and libuv change for descriptors 0-2 only: a fork makes a child's
 * standard descriptors blocking (libuv, before exec), and a worker's exit restores what that worker found at
 * its start (blocking). The log output's stall limit (log.ts) relies on the flag: with the output blocking,
 * a log reader that stopped reading froze every process in write(2) for good, after the first rolling
 * restart or worker crash. A descriptor above 2 is left alone by both. (Standard error is not shared
 * either: `2>&1` makes it the same description.)
 */
export const WORKER_STDIO = ['ignore', 'pipe', 'pipe', 'ipc', 1] as const;
if (WORKER_STDIO.length !== WORKER_LOG_FD + 1) throw new Error('WORKER_STDIO must put the log output at WORKER_LOG_FD');

/** A worker line longer than this (no newline yet) is relayed as it is, so a runaway line cannot grow memory. */
const MAX_PENDING_CHARS = 64 * 1024;

/**
 * Relays what `worker` writes to its standard output through the primary's log output, in whole lines (so
 * it cannot split a log line), and its standard error to the primary's as it comes. A worker's last
 * unfinished line is relayed, with a newline, when its output ends.
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
