/**
 * Runs `node dist/server/main.js` once with the given arguments and collects its exit status and output,
 * for tests where the server is expected to refuse to start. If it outlives `timeoutMs` it is stopped by
 * its own pid (SIGINT, then SIGKILL), so a server that unexpectedly started never outlives the test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { envWithoutFts, onOutput } from './common.js';
import { SERVER_MAIN } from './paths.js';

export interface ServerRunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
  /** True when the test had to kill the server because it did not exit in time. */
  timedOut: boolean;
}

export { envWithoutFts };

/** `env` is added to the runner's environment minus its FTS_* variables. */
export function runServerOnce(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<ServerRunResult> {
  const started = Date.now();
  const proc = spawn(process.execPath, [SERVER_MAIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: envWithoutFts(options.env),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  let stdout = '';
  let stderr = '';
  onOutput(
    proc,
    (c) => (stdout += c),
    (c) => (stderr += c),
  );
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    // SIGINT first so a server that did start drains and takes its workers with it; SIGKILL if it lingers.
    proc.kill('SIGINT');
    setTimeout(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }, 10_000).unref();
  }, options.timeoutMs ?? 10_000);
  return new Promise((resolve) => {
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, elapsedMs: Date.now() - started, timedOut });
    });
  });
}

/** A server process the test watches while it runs (for moments TestServer.start cannot wait through). */
export class ServerProcess {
  stdout = '';
  stderr = '';
  private readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly proc: ChildProcess) {
    onOutput(
      proc,
      (c) => (this.stdout += c),
      (c) => (this.stderr += c),
    );
    this.exit = new Promise((resolve) => proc.once('close', (code, signal) => resolve({ code, signal })));
  }

  /** Parsed JSON log lines so far. */
  get lines(): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const l of this.stdout.split('\n')) {
      try {
        const v: unknown = JSON.parse(l);
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) out.push(v as Record<string, unknown>);
      } catch {
        // partial or non-JSON line
      }
    }
    return out;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the exit status, or null if the process is still running after `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    try {
      return await Promise.race([this.exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops it if still running: SIGINT, then (it may be draining) a second SIGINT, then SIGKILL. */
  async stop(): Promise<void> {
    for (const sig of ['SIGINT', 'SIGINT', 'SIGKILL'] as const) {
      if (!this.running) break;
      this.proc.kill(sig);
      if ((await this.waitForExit(sig === 'SIGKILL' ? 30_000 : 8_000)) !== null) break;
    }
  }
}

export function startServerProcess(args: string[], env: NodeJS.ProcessEnv = {}): ServerProcess {
  return new ServerProcess(spawn(process.execPath, [SERVER_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: envWithoutFts(env) }));
}
