/**
 * Starts a real fts-server (primary + workers) for one workload, with its own storage, users file and
 * admin socket under the benchmark's temporary directory, and stops it again.
 *
 * The server's JSON log goes to a file, not to a pipe we read: its logger writes synchronously, so a pipe
 * that the (busy) benchmark process drains late would stall the server and distort the numbers.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { spawnTracked, trackIndirect, untrackIndirect } from './procs.js';
import { sleep } from './util.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVER_MAIN = path.join(REPO_ROOT, 'dist', 'server', 'main.js');
export const CLIENT_CLI = path.join(REPO_ROOT, 'dist', 'client', 'cli.js');

export interface BenchUser {
  user: string;
  password: string;
}

const START_TIMEOUT_MS = 20_000;

/**
 * Admission limits raised for the benchmark: every benchmark client connects from 127.0.0.1, so the
 * server's per-address defaults (50 connections per IP, MaxStartups 10:30:100) would refuse the 64-client
 * and 1000-session workloads. Passed only when this server version has the flag.
 */
const LIMIT_FLAGS: ReadonlyArray<[string, string]> = [
  ['--max-connections', '5000'],
  ['--max-connections-per-ip', '5000'],
  ['--max-startups', '2000:30:4000'],
];

let knownFlags: Set<string> | null = null;

/** The flags `fts-server --help` lists (read once). */
function serverFlags(): Set<string> {
  if (knownFlags === null) {
    const help = execFileSync(process.execPath, [SERVER_MAIN, '--help'], { encoding: 'utf8', timeout: 15_000, stdio: ['ignore', 'pipe', 'ignore'] });
    knownFlags = new Set(help.match(/--[a-z][a-z0-9-]*/g) ?? []);
  }
  return knownFlags;
}

/** The extra server arguments the benchmark uses (for the report). */
export function benchServerArgs(): string[] {
  const flags = serverFlags();
  return LIMIT_FLAGS.filter(([flag]) => flags.has(flag)).flat();
}
const STOP_TIMEOUT_MS = 10_000;

export class BenchServer {
  port = 0;
  private exited = false;
  private readonly exitPromise: Promise<void>;

  private constructor(
    readonly proc: ChildProcess,
    readonly dir: string,
    readonly storage: string,
    readonly logFile: string,
  ) {
    this.exitPromise = new Promise((resolve) =>
      proc.once('exit', () => {
        this.exited = true;
        resolve();
      }),
    );
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** Directory holding `user`'s published files. */
  userDir(user: string): string {
    return path.join(this.storage, user);
  }

  /**
   * `nodeArgs` go before the script (e.g. --cpu-prof --cpu-prof-dir D: cluster workers inherit the
   * primary's execArgv, so every server process writes a profile when it exits).
   */
  static async start(
    dir: string,
    users: readonly BenchUser[],
    workers: number,
    options: { extraArgs?: readonly string[]; nodeArgs?: readonly string[] } = {},
  ): Promise<BenchServer> {
    await mkdir(dir, { recursive: true });
    const storage = path.join(dir, 'storage');
    const usersFile = path.join(dir, 'users.txt');
    const logFile = path.join(dir, 'server.log');
    await mkdir(storage, { recursive: true });
    await writeFile(usersFile, users.map((u) => `${u.user}:${u.password}\n`).join(''), { mode: 0o600 });
    await chmod(usersFile, 0o600);
    const logFd = openSync(logFile, 'w', 0o600);
    let proc: ChildProcess;
    try {
      proc = spawnTracked(
        process.execPath,
        [
          ...(options.nodeArgs ?? []),
          SERVER_MAIN,
          '--host', '127.0.0.1',
          '--port', '0',
          '--storage', storage,
          '--users', usersFile,
          '--workers', String(workers),
          '--admin-socket', path.join(dir, 'admin.sock'),
          '--metrics-port', 'off',
          '--grace', '2',
          ...benchServerArgs(),
          ...(options.extraArgs ?? []),
        ],
        { stdio: ['ignore', logFd, logFd] },
      );
    } finally {
      closeSync(logFd);
    }
    const server = new BenchServer(proc, dir, storage, logFile);
    try {
      await server.waitListening();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  private async waitListening(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`fts-server exited during start-up: ${await this.logTail()}`);
      for (const line of await this.logLines()) {
        if (typeof line['msg'] === 'string' && line['msg'].startsWith('listening on')) {
          this.port = Number(line['port']);
          for (const pid of await this.workerPids()) trackIndirect(pid, isServerProcess);
          return;
        }
      }
      await sleep(25);
    }
    throw new Error(`fts-server did not report 'listening on' within ${START_TIMEOUT_MS / 1000} s: ${await this.logTail()}`);
  }

  async logLines(): Promise<Array<Record<string, unknown>>> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '');
    const out: Array<Record<string, unknown>> = [];
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a partial last line
      }
    }
    return out;
  }

  /** Worker PIDs from the 'worker started' log lines, minus those that exited. */
  async workerPids(): Promise<number[]> {
    const pids = new Set<number>();
    const lines = await this.logLines();
    for (const l of lines) if (l['msg'] === 'worker started') pids.add(Number(l['workerPid']));
    for (const l of lines) if (l['msg'] === 'worker exited' || l['msg'] === 'worker died; restarting') pids.delete(Number(l['workerPid']));
    return [...pids];
  }

  /** Log lines at level warn or worse after start-up (a benchmark run should produce none). */
  async problems(): Promise<string[]> {
    const lines = await this.logLines();
    const listening = lines.findIndex((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('listening on'));
    return lines
      .slice(listening + 1)
      .filter((l) => l['level'] === 'warn' || l['level'] === 'error' || l['level'] === 'fatal')
      .map((l) => `${String(l['level'])}: ${String(l['msg'])}${l['code'] !== undefined ? ` (${String(l['code'])})` : ''}`);
  }

  private async logTail(): Promise<string> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '');
    return text.slice(-2000);
  }

  /**
   * SIGINT (a drain with a 2 s grace), then SIGKILL of the primary and its workers by PID if it lingers.
   * Removes the server's directory (storage included).
   */
  async stop(): Promise<void> {
    const workers = await this.workerPids().catch(() => []);
    if (!this.exited) {
      try {
        process.kill(this.pid, 'SIGINT');
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        for (const pid of [this.pid, ...workers]) {
          if (!alive(pid)) continue;
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }, STOP_TIMEOUT_MS);
      await this.exitPromise;
      clearTimeout(timer);
    }
    // Workers exit on their own once the primary is gone; give them a moment, then make sure.
    for (const pid of workers) {
      for (let i = 0; i < 40 && alive(pid); i++) await sleep(50);
      if (alive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      untrackIndirect(pid);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** True while `pid` is still an fts-server process (guards against a recycled PID). */
function alive(pid: number): boolean {
  return isServerProcess(pid);
}

export function isServerProcess(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(SERVER_MAIN);
  } catch {
    return false;
  }
}
