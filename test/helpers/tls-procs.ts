/**
 * Child processes and files for the TLS / SCRAM / passwd tests: `fts-admin` with a password on stdin
 * (runAdmin in admin-cli.ts gives it no stdin), users files with an exact mode, and a few small waits.
 * Every child is bounded and killed by its own pid if it outlives its timeout.
 */
import { spawn } from 'node:child_process';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { childExit, envWithoutFts, onOutput } from './common.js';
import { sleep } from './lifecycle-util.js';
import { ADMIN_CLI } from './paths.js';
import type { LogLine } from './server.js';

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

/** The test runner's environment without FTS_* variables. */
export const cleanEnv = envWithoutFts;

/** Runs `node <script> ...args` with `input` written to its stdin (a pipe, so never a TTY), in `cwd` if given. */
export function runNode(script: string, args: readonly string[], input: string | Buffer, timeoutMs = 30_000, env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<ProcResult> {
  const started = Date.now();
  const child = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv(env), ...(cwd === undefined ? {} : { cwd }) });
  let stdout = '';
  let stderr = '';
  onOutput(
    child,
    (c) => (stdout += c),
    (c) => (stderr += c),
  );
  return childExit(child, input, timeoutMs, () => `node ${script} ${args.join(' ')} (stderr: ${stderr})`).then(({ code, signal }) => ({
    code,
    signal,
    stdout,
    stderr,
    elapsedMs: Date.now() - started,
  }));
}

/**
 * `fts-admin passwd USER --users FILE --socket SOCKET` with `input` on stdin. `socket` is always given so
 * that a test never talks to some other server at the default socket path.
 */
export function runPasswd(user: string, usersFile: string, socket: string, input: string): Promise<ProcResult> {
  return runNode(ADMIN_CLI, ['passwd', user, '--users', usersFile, '--socket', socket], input);
}

/**
 * `fts-admin ...args` with `input` on stdin, run in `cwd` without any FTS_* variable but those in `env`:
 * for passwd runs that rely on the defaults (./id_passwd.txt, $FTS_ADMIN_SOCKET).
 */
export function runAdminIn(cwd: string, args: readonly string[], input: string, env: NodeJS.ProcessEnv = {}): Promise<ProcResult> {
  return runNode(ADMIN_CLI, args, input, 30_000, env, cwd);
}

export function describeProc(what: string, r: ProcResult): string {
  return `${what} -> exit ${r.code ?? r.signal}; stdout: ${JSON.stringify(r.stdout.slice(0, 400))}; stderr: ${JSON.stringify(r.stderr.slice(0, 600))}`;
}

/** Writes `text` to `file` and sets its mode exactly (writeFile's mode is subject to the umask). */
export async function writeWithMode(file: string, text: string | Buffer, mode: number): Promise<void> {
  await writeFile(file, text);
  await chmod(file, mode);
}

export async function modeOf(file: string): Promise<number> {
  return (await stat(file)).mode & 0o777;
}

export async function snapshot(file: string): Promise<{ bytes: Buffer; mode: number; ino: number; mtimeMs: number }> {
  const st = await stat(file);
  return { bytes: await readFile(file), mode: st.mode & 0o777, ino: st.ino, mtimeMs: st.mtimeMs };
}

export { sleep };

/** Waits (bounded) until `predicate` holds for one of `lines` from index `from` on; returns that line. */
export async function waitForLine(lines: readonly LogLine[], predicate: (l: LogLine) => boolean, from = 0, timeoutMs = 5_000): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = lines.slice(from).find(predicate);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no matching log line within ${timeoutMs} ms; lines since ${from}: ${JSON.stringify(lines.slice(from)).slice(0, 2000)}`);
    await sleep(20);
  }
}

/** The server's audit lines for authentication attempts, from index `from` on. */
export function authLines(lines: readonly LogLine[], from = 0): LogLine[] {
  return lines.slice(from).filter((l) => l['event'] === 'auth');
}
