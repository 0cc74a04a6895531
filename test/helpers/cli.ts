/**
 * Runs the real `fts` CLI (dist/client/cli.js) as a child process, the way a user would: stdin is a pipe
 * (never a TTY, unless `terminal` puts the whole process on one), the password comes from FTS_PASSWORD,
 * and no FTS_* variable leaks in from the test's own environment. Every run is bounded: a CLI still
 * running after `timeoutMs` is killed and reported.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { closeSync, openSync } from 'node:fs';
import { childExit, envWithoutFts } from './common.js';
import { CLIENT_CLI } from './paths.js';

export interface CliOptions {
  /** Adds `--host 127.0.0.1 --port <port>` before the arguments. */
  port?: number;
  /** Adds `--user <user>` before the arguments. */
  user?: string;
  /** Sets FTS_PASSWORD; omitted (undefined) means no FTS_PASSWORD at all. */
  password?: string;
  cwd?: string;
  /** Written to stdin, which is then closed (stdin is always a pipe, so never a TTY). */
  input?: string | Buffer;
  /** Instead of a pipe, stdin is this file, opened for reading (`fts … < FILE`). */
  stdinFile?: string;
  /** Extra environment variables (applied after the FTS_* variables were removed). */
  env?: NodeJS.ProcessEnv;
  /** Default 30 s. */
  timeoutMs?: number;
  /**
   * Runs the CLI with stdout and stderr on a pseudo-terminal (util-linux `script`), as a user at a terminal
   * sees it; the terminal's CR LF line ends are turned back into LF, and stderr is merged into stdout.
   */
  terminal?: boolean;
}

export interface CliResult {
  /** Exit code (null only if killed by a signal). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** stdout decoded as UTF-8. */
  out: string;
  /** The argument vector passed after the script path (for messages). */
  argv: readonly string[];
}

/** The runner's environment minus FTS_* variables, with FTS_PASSWORD (unless undefined), then `extra`. */
export function cliEnv(password: string | undefined, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return envWithoutFts({ ...(password === undefined ? {} : { FTS_PASSWORD: password }), ...extra });
}

export function runCli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const argv: string[] = [];
  if (options.port !== undefined) argv.push('--host', '127.0.0.1', '--port', String(options.port));
  if (options.user !== undefined) argv.push('--user', options.user);
  argv.push(...args);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const command = [process.execPath, CLIENT_CLI, ...argv];
  const [file, ...fileArgs] = options.terminal === true ? ['script', '-qfec', command.map(shellQuote).join(' '), '/dev/null'] : command;
  const stdinFd = options.stdinFile === undefined ? null : openSync(options.stdinFile, 'r');
  let child: ChildProcessByStdio<Writable | null, Readable, Readable>;
  try {
    child = spawn(file!, fileArgs, {
      cwd: options.cwd,
      env: cliEnv(options.password, options.env),
      stdio: [stdinFd ?? 'pipe', 'pipe', 'pipe'],
    }) as ChildProcessByStdio<Writable | null, Readable, Readable>;
  } finally {
    if (stdinFd !== null) closeSync(stdinFd); // the child has its own copy
  }
  const out: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => {
    stderr += c;
  });
  return childExit(child, options.input ?? '', timeoutMs, () => `fts ${argv.join(' ')} (stderr: ${stderr})`).then(({ code, signal }) => {
    const raw = Buffer.concat(out);
    const stdout = options.terminal === true ? Buffer.from(raw.toString('latin1').replace(/\r\n/g, '\n'), 'latin1') : raw;
    return { code, signal, stdout, stderr, out: stdout.toString('utf8'), argv };
  });
}

/** One word for `sh -c`: single-quoted, with embedded single quotes spliced in. */
function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A one-line description of a CLI result for assertion messages. */
export function describeRun(r: CliResult): string {
  return `fts ${r.argv.join(' ')} -> exit ${r.code ?? r.signal}; stdout: ${JSON.stringify(r.out.slice(0, 300))}; stderr: ${JSON.stringify(r.stderr.slice(0, 500))}`;
}

/** Runs `fn` over `items` with at most `limit` running at once; results in item order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, () => worker()));
  return results;
}
