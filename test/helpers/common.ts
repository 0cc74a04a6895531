/**
 * Small helpers shared by several integration test files.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient, FtsError } from '../../client/index.js';
import type { TestServer, TestUser } from './server.js';

const MiB = 1024 * 1024;

/** The FtsError code `p` rejects with, or 'OK' if it resolves (any other error is rethrown). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FtsError) return err.code;
    throw err;
  }
  return 'OK';
}

/** The entries of <storage>/.fts/staging/<user>/ (none when the directory does not exist). */
export async function stagingFiles(server: TestServer, user: string): Promise<string[]> {
  try {
    return await readdir(path.join(server.storage, '.fts', 'staging', user));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** The test runner's environment without any FTS_* variable, plus `extra`, so that only what a test sets reaches the child. */
export function envWithoutFts(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FTS_')) env[k] = v;
  return { ...env, ...extra };
}

/** Decodes a child's stdout and stderr as UTF-8 and hands every chunk to `onStdout` / `onStderr`. */
export function onOutput(child: ChildProcess, onStdout: (chunk: string) => void, onStderr: (chunk: string) => void): void {
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', onStdout);
  child.stderr?.on('data', onStderr);
}

/** What a test may hold when it ends; see releaseAll(). */
export interface Held {
  uploaders?: Array<{ close(): Promise<void> }>;
  raws?: Array<{ destroy(): void }>;
  clients?: Array<{ close(): void }>;
  servers?: Array<{ stop(): Promise<void> }>;
  admins?: Array<{ kill(): void; readonly done: Promise<unknown> }>;
  cleanups?: Array<() => Promise<void>>;
}

/**
 * Empties and releases everything in `held`, in a fixed order: connections first (uploaders, raw
 * connections, clients), so that a server left draining by a failed test stops at once; then the servers,
 * newest first (a restarted server may be using an older one's storage); then admin runs; then the
 * cleanups, newest first.
 */
export async function releaseAll(held: Held): Promise<void> {
  for (const u of (held.uploaders ?? []).splice(0)) await u.close();
  for (const r of (held.raws ?? []).splice(0)) r.destroy();
  for (const c of (held.clients ?? []).splice(0)) c.close();
  for (const s of (held.servers ?? []).splice(0).reverse()) await s.stop();
  for (const a of (held.admins ?? []).splice(0)) {
    a.kill();
    await a.done;
  }
  for (const c of (held.cleanups ?? []).splice(0).reverse()) await c();
}

/** Writes `size` bytes of random data (1 MiB blocks, so `size` is a multiple of 1 MiB) to <storage>/<user>/<name>. */
export async function writeRandomFile(storage: string, user: string, name: string, size: number): Promise<void> {
  const dir = path.join(storage, user);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const fh = await open(path.join(dir, name), 'w', 0o600);
  try {
    const block = randomBytes(MiB);
    for (let i = 0; i < size / MiB; i++) await fh.write(block);
  } finally {
    await fh.close();
  }
}

/**
 * Feeds `input` to a child's stdin and resolves with its exit once it closes. A child still running after
 * `timeoutMs` is killed with SIGKILL and the promise rejects with `describe()` (called then, so it can
 * include the output gathered so far).
 */
export function childExit(
  child: ChildProcess,
  input: string | Buffer,
  timeoutMs: number,
  describe: () => string,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    child.stdin?.on('error', () => undefined); // the child may exit before reading its input
    child.stdin?.end(input);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(`${describe()} did not finish within ${timeoutMs} ms`));
      else resolve({ code, signal });
    });
  });
}

/** Sends SIGCONT to the worker pids a test stopped (SIGSTOP) and forgets them: before their server is stopped. */
export function continueStopped(stopped: Set<number>): void {
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // already gone
    }
  }
  stopped.clear();
}

/** A library client logged in as `user`, kept in `clients` for the test's clean-up. */
export async function loginClient(server: TestServer, clients: FtsClient[], user: TestUser): Promise<FtsClient> {
  const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
  clients.push(c);
  await c.auth(user.user, user.password);
  return c;
}

/**
 * Takes `user`'s lock on `name` under `root` in this process and keeps it until the returned function is
 * called. Resolves only once the lock is ours, so that whatever the caller does next meets a held lock.
 */
export async function holdLock(root: string, user: string, name: string): Promise<() => Promise<void>> {
  const { withLock } = await import('../../server/storage/locks.js');
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let entered!: () => void;
  const taken = new Promise<void>((resolve) => (entered = resolve));
  const holding = withLock(root, user, name, async () => {
    entered();
    await gate;
  });
  // A failure to take the lock rejects `holding`, which must not wait for a callback that never runs.
  await Promise.race([taken, holding]);
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    open();
    await holding;
  };
}

/**
 * Runs `fn` while this process holds `user`'s lock on `name` under `root`, with the lock wait cut to 1 s,
 * so that a publish of that name inside `fn` fails with LOCKED (a publish that could not happen, whose
 * verified bytes are kept). The lock wait goes back to its default afterwards.
 */
export async function whileLocked<T>(root: string, user: string, name: string, fn: () => Promise<T>): Promise<T> {
  return withLockWait(1, async () => {
    const release = await holdLock(root, user, name);
    try {
      return await fn();
    } finally {
      await release();
    }
  });
}

/** Runs `fn` with this process's lock wait (--lock-timeout) cut to `seconds`, then puts the default back. */
export async function withLockWait<T>(seconds: number, fn: () => Promise<T>): Promise<T> {
  const { DEFAULT_LOCK_WAIT_SECONDS, setLockWaitSeconds } = await import('../../server/storage/locks.js');
  setLockWaitSeconds(seconds);
  try {
    return await fn();
  } finally {
    setLockWaitSeconds(DEFAULT_LOCK_WAIT_SECONDS);
  }
}
