import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SERVER_MAIN } from './paths.js';
import { tempDir } from './temp.js';

export interface TestUser {
  user: string;
  password: string;
}

export const DEFAULT_USERS: TestUser[] = [
  { user: 'alice', password: 'alice-secret' },
  { user: 'bob', password: 'bob:with:colons' },
];

export interface ServerOptions {
  workers?: number;
  users?: TestUser[];
  /** Extra command-line flags. */
  args?: string[];
  /** Reuse an existing storage directory (for restart tests). */
  storage?: string;
  /** Start in a new process group, so a test can signal the whole group as Ctrl+C does. */
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Called once the process is spawned, before it listens (to act on it while it starts). */
  whileStarting?: (server: TestServer) => void;
  /** The open-file limit (soft and hard) of the server and its workers, as `ulimit -n` sets it. */
  openFiles?: number;
}

export interface LogLine {
  [key: string]: unknown;
  msg?: string;
  level?: string;
}

/**
 * A real fts-server process on port 0 with its own temporary storage, users file and admin socket.
 * `stop()` ends it (SIGINT, then SIGKILL if it lingers) and removes every file it created.
 */
export class TestServer {
  readonly lines: LogLine[] = [];
  stdout = '';
  stderr = '';
  port = 0;
  private exitPromise: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly proc: ChildProcess,
    readonly dir: string,
    readonly storage: string,
    readonly usersFile: string,
    readonly adminSocket: string,
    private readonly cleanupDir: () => Promise<void>,
  ) {
    this.exitPromise = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    proc.stdout?.setEncoding('utf8');
    proc.stderr?.setEncoding('utf8');
    let partial = '';
    proc.stdout?.on('data', (chunk: string) => {
      this.stdout += chunk;
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          // not a JSON line (should not happen; tests on log hygiene check stdout as text)
        }
      }
    });
    proc.stderr?.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  static async start(options: ServerOptions = {}): Promise<TestServer> {
    const { dir, cleanup } = await tempDir('fts-srv-');
    const storage = options.storage ?? path.join(dir, 'storage');
    const usersFile = path.join(dir, 'id_passwd.txt');
    const adminSocket = path.join(dir, 'admin.sock');
    const users = options.users ?? DEFAULT_USERS;
    await writeFile(usersFile, users.map((u) => `${u.user}:${u.password}\n`).join(''));
    await chmod(usersFile, 0o600);
    await mkdir(storage, { recursive: true });
    const args = [
      SERVER_MAIN,
      '--port', '0',
      '--host', '127.0.0.1',
      '--storage', storage,
      '--users', usersFile,
      '--workers', String(options.workers ?? 2),
      '--admin-socket', adminSocket,
      '--metrics-port', '0',
      ...(options.args ?? []),
    ];
    // Through sh's ulimit then exec, so that the process (and its pid) is still node's.
    const [command, argv] = options.openFiles === undefined ? [process.execPath, args] : ['/bin/sh', ['-c', 'ulimit -n "$0" && exec "$@"', String(options.openFiles), process.execPath, ...args]];
    const proc = spawn(command, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: options.detached ?? false,
      env: { ...process.env, ...options.env },
    });
    const server = new TestServer(proc, dir, storage, usersFile, adminSocket, cleanup);
    TestServer.live.add(server);
    reapOnExit();
    options.whileStarting?.(server);
    try {
      await server.waitForLog((l) => l.msg?.startsWith('listening on') === true, 15_000);
    } catch (err) {
      // A server that never listened is still ours to end, and its directory ours to remove.
      await server.stop().catch(() => undefined);
      throw err;
    }
    const listening = server.lines.find((l) => l.msg?.startsWith('listening on'));
    server.port = Number(listening?.['port']);
    return server;
  }

  /** Resolves with the first log line matching `predicate` (already seen or future). */
  async waitForLog(predicate: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(predicate);
      if (hit) return hit;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`server exited (${this.proc.exitCode ?? this.proc.signalCode}) before the expected log line; stderr: ${this.stderr}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for a log line; stderr: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  workerPids(): number[] {
    const pids = new Set<number>();
    for (const l of this.lines) if (l.msg === 'worker started') pids.add(Number(l['workerPid']));
    for (const l of this.lines) if (l.msg === 'worker exited' || l.msg === 'worker died; restarting') pids.delete(Number(l['workerPid']));
    return [...pids];
  }

  signal(sig: NodeJS.Signals): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig);
  }

  waitForExit(timeoutMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return Promise.race([
      this.exitPromise,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('server did not exit in time')), timeoutMs).unref()),
    ]);
  }

  /** Stops the server if still running (without deleting files), returning its exit status. */
  async halt(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.signal('SIGINT');
    try {
      return await this.waitForExit(15_000);
    } catch {
      this.signal('SIGKILL');
      return this.exitPromise;
    }
  }

  /** Stops the server and removes its temporary directory. */
  async stop(): Promise<void> {
    await this.halt();
    await this.cleanupDir();
    TestServer.live.delete(this);
  }

  /** Servers started and not yet stopped: what reapOnExit ends if the test process goes first. */
  static readonly live = new Set<TestServer>();

  /** Synchronous last resort (process 'exit'): SIGKILL the server's processes, remove its directory. */
  reapNow(): void {
    // Only while the primary runs: a halted server's pids may belong to other processes by now (its workers
    // exit with it).
    const running = this.proc.exitCode === null && this.proc.signalCode === null;
    for (const pid of running ? [this.proc.pid, ...this.workerPids()] : []) {
      try {
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

let reaping = false;

/**
 * A test run that ends abnormally (mocha killed by a CI timeout's SIGTERM, an uncaught error, a bail) must
 * not leave servers and their directories behind: the servers are our children, and outlive us otherwise.
 */
function reapOnExit(): void {
  if (reaping) return;
  reaping = true;
  const reap = (): void => {
    for (const s of TestServer.live) s.reapNow();
    TestServer.live.clear();
  };
  process.once('exit', reap);
  process.once('SIGTERM', () => {
    reap();
    process.exit(143);
  });
}
