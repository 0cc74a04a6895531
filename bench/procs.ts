/**
 * Every child process the benchmark starts goes through here, so that cleanup (normal end, failure or
 * Ctrl+C) can end exactly those processes, by PID, and nothing else.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { now } from './util.js';

const live = new Map<number, ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  const pid = child.pid;
  if (pid !== undefined) {
    live.set(pid, child);
    child.once('exit', () => live.delete(pid));
  }
  return child;
}

export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  return track(spawn(command, args, options));
}

/**
 * Extra PIDs started indirectly (server workers) that cleanup may kill if their parent is gone, each
 * with a check that the PID still belongs to that process (PIDs are recycled).
 */
const indirect = new Map<number, (pid: number) => boolean>();

export function trackIndirect(pid: number, stillOurs: (pid: number) => boolean): void {
  indirect.set(pid, stillOurs);
}

export function untrackIndirect(pid: number): void {
  indirect.delete(pid);
}

/** SIGKILLs every tracked process that is still running. Synchronous, so it works in an exit handler. */
export function killAll(): void {
  for (const [pid, child] of live) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const [pid, stillOurs] of indirect) {
    if (!stillOurs(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  indirect.clear();
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

/**
 * Runs a command to completion with a hard time limit (the child is SIGKILLed by PID when it is
 * exceeded). Output is collected, capped at `maxOutput` characters each.
 */
export function runCommand(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number; maxOutput?: number },
): Promise<RunResult> {
  const cap = options.maxOutput ?? 1_000_000;
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawnTracked(command, args, { env: options.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      if (stdout.length < cap) stdout += s;
    });
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < cap) stderr += s;
    });
    const timer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }, options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: now() - t0 });
    });
  });
}
