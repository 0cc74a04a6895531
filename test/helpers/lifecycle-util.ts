/**
 * Small shared utilities for the lifecycle and admin integration tests: bounded polling, hashing, and
 * inspection of the server's storage layout (<root>/<user>/<name>, <root>/.fts/staging/<user>/*).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { access, readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Polls `probe` until it returns a value other than undefined/false, or throws after `timeoutMs`
 * (naming `what`). The loop is bounded by the deadline; `probe` may be async.
 */
export async function waitUntil<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
      lastError = null;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const suffix = lastError === null ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${suffix}`);
    }
    await sleep(intervalMs);
  }
}

async function readdirOrEmpty(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Every entry under <storage>/.fts/staging/<user>/, as paths relative to the staging root. */
export async function stagingLeftovers(storage: string): Promise<string[]> {
  const root = path.join(storage, '.fts', 'staging');
  const out: string[] = [];
  for (const user of await readdirOrEmpty(root)) {
    if (!user.isDirectory()) {
      out.push(user.name);
      continue;
    }
    for (const entry of await readdirOrEmpty(path.join(root, user.name))) out.push(path.join(user.name, entry.name));
  }
  return out.sort();
}

/** The published files of one user (names in the user's directory). */
export async function publishedNames(storage: string, user: string): Promise<string[]> {
  return (await readdirOrEmpty(path.join(storage, user))).map((e) => e.name).sort();
}

export async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** SHA-256 of a published file, or null if it does not exist. */
export async function publishedSha256(storage: string, user: string, name: string): Promise<string | null> {
  try {
    return sha256(await readFile(path.join(storage, user, name)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** True while a process with this pid exists (signal 0 probe). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Has a child process listen on `socketPath`, then SIGKILLs it: the socket file stays behind, stale. */
export async function leaveStaleSocket(socketPath: string): Promise<void> {
  const code = `const s = require('node:net').createServer(); s.listen(${JSON.stringify(socketPath)}, () => process.stdout.write('ready\\n'));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const gone = new Promise((resolve) => child.once('close', resolve));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('socket holder did not start')), 10_000);
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (c: string) => {
        if (c.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        reject(new Error('socket holder exited early'));
      });
    });
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await gone;
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
