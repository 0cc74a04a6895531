/**
 * Runs `fts-admin` (dist/admin/cli.js) as a child process, the way an operator would, and parses its JSON
 * output for the tests. Every child is bounded: it is killed (by its own pid) if it outlives its timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { expect } from 'chai';
import { onOutput } from './common.js';
import { ADMIN_CLI } from './paths.js';
import type { SessionInfo } from '../../protocol/index.js';

export interface AdminResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running fts-admin, for long commands (drain) whose output the test watches while it runs. */
export class AdminRun {
  stdout = '';
  stderr = '';
  readonly done: Promise<AdminResult>;
  private timer: NodeJS.Timeout;

  constructor(
    readonly proc: ChildProcess,
    timeoutMs: number,
  ) {
    onOutput(
      proc,
      (c) => (this.stdout += c),
      (c) => (this.stderr += c),
    );
    this.timer = setTimeout(() => this.kill(), timeoutMs);
    this.done = new Promise((resolve) => {
      proc.once('close', (code, signal) => {
        clearTimeout(this.timer);
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      });
    });
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

/** Starts `fts-admin --socket <socket> ...args`. */
export function startAdmin(socket: string | null, args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = {}, as?: { uid: number; gid: number }): AdminRun {
  const argv = socket === null ? [ADMIN_CLI, ...args] : [ADMIN_CLI, '--socket', socket, ...args];
  const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, ...as });
  return new AdminRun(proc, timeoutMs);
}

/** Runs fts-admin to completion. */
export function runAdmin(socket: string | null, args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = {}, as?: { uid: number; gid: number }): Promise<AdminResult> {
  return startAdmin(socket, args, timeoutMs, env, as).done;
}

export interface WorkerStatusJson {
  pid: number;
  connections: number;
  sessions: number;
  transfers: number;
  responding: boolean;
  starting?: boolean;
}

export interface StatusJson {
  pid: number;
  port: number | null;
  metricsPort: number | null;
  draining: boolean;
  uptimeSeconds: number;
  workers: WorkerStatusJson[];
  connections: number;
  sessions: number;
  transfers: number;
  storage?: { ok: boolean; problem?: string };
  [extra: string]: unknown;
}

/** One entry of `fts-admin sessions --json`: the admin protocol's SessionInfo. */
export type SessionJson = SessionInfo;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJsonOutput(r: AdminResult, what: string): unknown {
  expect(r.code, `fts-admin ${what} exit code (stderr: ${r.stderr})`).to.equal(0);
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    throw new Error(`fts-admin ${what} --json printed something that is not JSON: ${r.stdout}`);
  }
}

/** `fts-admin status --json`, with the shape checked field by field. */
export async function statusJson(socket: string): Promise<StatusJson> {
  const v = parseJsonOutput(await runAdmin(socket, ['status', '--json']), 'status');
  if (!isRecord(v)) throw new Error(`status --json is not an object: ${JSON.stringify(v)}`);
  expect(v['pid'], 'status.pid').to.be.a('number');
  expect(v['port'] === null || typeof v['port'] === 'number', 'status.port is a number or null').to.equal(true);
  expect(v['metricsPort'] === null || typeof v['metricsPort'] === 'number', 'status.metricsPort is a number or null').to.equal(true);
  expect(v['draining'], 'status.draining').to.be.a('boolean');
  expect(v['uptimeSeconds'], 'status.uptimeSeconds').to.be.a('number');
  expect(v['workers'], 'status.workers').to.be.an('array');
  for (const w of v['workers'] as unknown[]) {
    if (!isRecord(w)) throw new Error(`status.workers entry is not an object: ${JSON.stringify(w)}`);
    for (const k of ['pid', 'connections', 'sessions', 'transfers']) expect(w[k], `status.workers[].${k}`).to.be.a('number');
  }
  for (const k of ['connections', 'sessions', 'transfers']) expect(v[k], `status.${k}`).to.be.a('number');
  return v as unknown as StatusJson;
}

/** `fts-admin sessions --json`, with the shape checked field by field. */
export async function sessionsJson(socket: string): Promise<SessionJson[]> {
  const v = parseJsonOutput(await runAdmin(socket, ['sessions', '--json']), 'sessions');
  if (!Array.isArray(v)) throw new Error(`sessions --json is not an array: ${JSON.stringify(v)}`);
  for (const s of v as unknown[]) {
    if (!isRecord(s)) throw new Error(`sessions entry is not an object: ${JSON.stringify(s)}`);
    expect(s['id'], 'session.id').to.be.a('string');
    expect(s['user'] === null || typeof s['user'] === 'string', 'session.user is a string or null').to.equal(true);
    expect(s['remote'], 'session.remote').to.be.a('string');
    expect(s['worker'], 'session.worker').to.be.a('number');
    expect(s['op'] === null || typeof s['op'] === 'string', 'session.op is a string or null').to.equal(true);
    expect(s['file'] === null || typeof s['file'] === 'string', 'session.file is a string or null').to.equal(true);
    expect(s['bytes'], 'session.bytes').to.be.a('number');
    expect(s['since'], 'session.since').to.be.a('string');
  }
  return v as SessionJson[];
}

/**
 * Waits until `fts-admin status` shows exactly `workers` workers, all answering. TestServer.start returns
 * once the first worker listens; on a loaded machine the others may still be starting.
 */
export async function waitWorkersReady(socket: string, workers: number, timeoutMs = 20_000): Promise<StatusJson> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no status yet';
  for (;;) {
    try {
      const st = await statusJson(socket);
      if (st.workers.length === workers && st.workers.every((w) => w.responding)) return st;
      last = JSON.stringify(st.workers);
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) throw new Error(`${workers} responding workers not seen within ${timeoutMs} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * A stand-in for a server's admin socket (an older or a misbehaving fts-server): answers every request
 * line with `reply(request)` and records the requests, so a test can also see that nothing was asked.
 */
export class FakeAdminSocket {
  readonly requests: unknown[] = [];
  connections = 0;
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly server: net.Server) {}

  static async listen(socketPath: string, reply: (request: unknown) => unknown): Promise<FakeAdminSocket> {
    const fake: FakeAdminSocket = new FakeAdminSocket(net.createServer((socket) => {
      fake.connections++;
      fake.sockets.add(socket);
      socket.on('close', () => fake.sockets.delete(socket));
      socket.on('error', () => undefined);
      let buffered = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        buffered += chunk;
        for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
          const request = JSON.parse(buffered.slice(0, nl)) as unknown;
          buffered = buffered.slice(nl + 1);
          fake.requests.push(request);
          socket.write(`${JSON.stringify(reply(request))}\n`);
        }
      });
    }));
    await new Promise<void>((resolve, reject) => {
      fake.server.once('error', reject);
      fake.server.listen(socketPath, () => resolve());
    });
    return fake;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
