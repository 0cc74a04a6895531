#!/usr/bin/env node
/**
 * fts: the command-line client (package bin). See usage() below, or `fts --help`.
 *
 * Exit status:
 *   0    success
 *   1    any other error (server errors map through protocol ERROR_CODES[code].exit; connection problems)
 *   2    usage error: bad or unknown flags, missing or extra arguments, unknown command, a name that is not
 *        a legal remote name (checked before sending), no way to obtain the password
 *   3    authentication failed (AUTH_FAILED, AUTH_REQUIRED, UNSUPPORTED_MECHANISM)
 *   4    not found: the remote file does not exist (NOT_FOUND), or the local file to upload does not exist
 *   130  interrupted with Ctrl+C
 * Errors go to stderr as `fts: <message> (<CODE>)` when the server sent them, `fts: <message>` otherwise.
 *
 * Start-up is kept lean: the network client is loaded only once the command line is known to be valid,
 * the reconnecting client only for transfers, the commands that change files and the shell, the progress
 * display only for transfers, and the shell's readline only for `fts shell`.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_PORT, errnoWords, isValidUsername, USERNAME_RULE } from '../protocol/index.js';
import { parseDirectIoSetting, setDirectIo } from '../protocol/direct-io.js';
import { argumentProblem } from '../protocol/arg-errors.js';
import { badSwitchMessage, parseSwitch } from '../protocol/env-switch.js';
import type { FileClient } from './client.js';
import type { RetryInfo } from './resilient.js';
import { checkInvocation, COMMAND_OPTION_SPECS, commandHelp, commandOptionsOf, findCommand, hasCommandOptions, type Command } from './cli/commands.js';
import { obtainPassword } from './cli/password.js';
import { EXIT_INTERRUPTED, EXIT_OK, interruptedError, printable, report, usageError } from './cli/report.js';
import { localFsError } from './errors.js';

const DEFAULT_HOST = '127.0.0.1';
/** Reconnections in a row after a dropped connection (resilient commands and the shell); --retries overrides. */
const DEFAULT_RETRIES = 5;
const MAX_RETRIES = 100;

const OPTION_SPECS = {
  host: { type: 'string' },
  port: { type: 'string' },
  user: { type: 'string' },
  'password-file': { type: 'string' },
  retries: { type: 'string' },
  tls: { type: 'boolean' },
  ca: { type: 'string' },
  'allow-plain': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  ...COMMAND_OPTION_SPECS,
} as const;

function usage(): string {
  return [
    'usage: fts [--host H] [--port P] [--user U] [--password-file FILE] [--tls [--ca FILE]] [--allow-plain] [--quiet] [--json] [--retries N] <command> [args]',
    '       fts --help | --version',
    '',
    'commands:',
    ...commandHelp(),
    `  ${'shell'.padEnd(38)} interactive session (a batch script when stdin is not a terminal)`,
    '',
    'options (before or after the command):',
    `  --host H              server host (env FTS_HOST, default ${DEFAULT_HOST})`,
    `  --port P              server port (env FTS_PORT, default ${DEFAULT_PORT})`,
    '  --user U              user name (env FTS_USER; required)',
    '  --password-file FILE  read the password from the first line of FILE',
    '  --tls                 connect with TLS (env FTS_TLS=1); the certificate and host name are verified',
    '  --ca FILE             trust the CA certificate(s) in FILE (PEM) instead of the system CAs (env FTS_CA)',
    '  --allow-plain         without TLS, send the password in plaintext if the server offers no SCRAM',
    '                        (refused by default: it may mean someone on the way removed SCRAM)',
    '  -q, --quiet           no progress line (it is shown only when stderr is a terminal)',
    '  --json                upload, download, mput, mget: print one JSON object per file on stdout',
    '                        (stderr for download NAME -),',
    '                        {"name","bytes","sha256","resumedFrom","seconds"} (and "skipped" with --skip-same),',
    '                        instead of the result line',
    '                        (no progress line); list, partials, sum: a JSON array; usage: one JSON object',
    `  --retries N           transfers, sum, rm, mv, discard: reconnect up to N times in a row after a`,
    `                        dropped connection (default ${DEFAULT_RETRIES}; 0 = never), then continue where the`,
    '                        data stopped; also ask again after LOCKED (a name locked past the server\'s',
    '                        --lock-timeout)',
    '  -h, --help            show this help',
    '  --version             print the version',
    '',
    'Transfers are resumable: an interrupted upload of the same file continues from what the server kept,',
    'and an interrupted download continues from LOCAL.part (its version is recorded in LOCAL.part.json).',
    'The password is taken from --password-file, else FTS_PASSWORD, else asked for on the terminal.',
    'Transfers of 8 MiB or more (and a resume\'s kept prefix of 8 MiB or more, when it is hashed) read and',
    'write local files with O_DIRECT on ext4, xfs and btrfs (no page-cache fills); FTS_DIRECT_IO=off keeps',
    'them in the page cache.',
    'Exit status: 0 ok, 1 error, 2 usage error, 3 authentication failed, 4 not found (the remote file, the',
    'local file to upload, or for discard the unfinished upload), 130 interrupted (Ctrl+C).',
  ].join('\n');
}

interface Invocation {
  command: Command | 'shell';
  args: string[];
  values: ReturnType<typeof parse>['values'];
}

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: OPTION_SPECS, allowPositionals: true, strict: true });
}

function parseCommandLine(argv: string[]): Invocation | 'help' | 'version' {
  const end = argv.indexOf('--');
  for (const arg of end === -1 ? argv : argv.slice(0, end)) {
    if (arg === '--password' || arg.startsWith('--password=')) {
      throw usageError('a password is never accepted on the command line (others can read it); use FTS_PASSWORD or --password-file FILE');
    }
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    throw usageError(`${argumentProblem(err)}; try "fts --help"`);
  }
  const { values, positionals } = parsed;
  const [verb, ...args] = positionals;
  if (values.help === true || verb === 'help') return 'help';
  if (values.version === true) return 'version';
  if (verb === undefined) throw usageError('missing command; try "fts --help"');
  const options = commandOptionsOf(values);
  if (verb === 'shell') {
    if (args.length > 0) throw usageError('shell takes no arguments');
    if (hasCommandOptions(options)) throw usageError('shell takes no command options');
    return { command: 'shell', args, values };
  }
  const command = findCommand(verb);
  if (command === undefined) throw usageError(`unknown command ${JSON.stringify(verb)}; try "fts --help"`);
  checkInvocation(command, args, options);
  return { command, args, values };
}

/**
 * FTS_DIRECT_IO: `off` keeps large local files in the page cache (by default transfers of 8 MiB or more
 * bypass it with O_DIRECT where the file system allows, protocol/direct-io.ts). Anything else is a usage
 * error rather than a silent default.
 */
function resolveDirectIo(): boolean {
  const raw = process.env['FTS_DIRECT_IO'];
  if (raw === undefined || raw === '') return true;
  const on = parseDirectIoSetting(raw);
  if (on === null) throw usageError(`invalid FTS_DIRECT_IO ${JSON.stringify(raw.slice(0, 40))}: expected on or off`);
  return on;
}

function resolveRetries(flag: string | undefined): number {
  if (flag === undefined) return DEFAULT_RETRIES;
  const n = /^\d{1,3}$/.test(flag) ? Number(flag) : NaN;
  if (!(n >= 0 && n <= MAX_RETRIES)) throw usageError(`invalid --retries ${JSON.stringify(flag)}: expected 0 to ${MAX_RETRIES}`);
  return n;
}

/**
 * The "connection lost; reconnecting" notice, for a person at a terminal only (like the progress line,
 * which it replaces on the current line; the next progress update draws that again).
 */
function retryNotice(quiet: boolean): ((info: RetryInfo) => void) | undefined {
  if (quiet || process.stderr.isTTY !== true) return undefined;
  return ({ attempt, retries, delayMs, error, reconnecting }) => {
    const why = error instanceof Error ? error.message : errnoWords(error);
    process.stderr.write(`\r\u001b[Kfts: ${printable(why)}; ${reconnecting ? 'reconnecting' : 'trying again'} in ${(delayMs / 1000).toFixed(1)} s (${attempt}/${retries})\n`);
  };
}

/**
 * Transfers, the commands that change files, and the shell get a ResilientClient (reconnects, resumes,
 * asks again after LOCKED); the commands that only look a plain FtsClient, so that `fts list` loads no
 * retry or progress code.
 */
async function openClient(resilient: boolean, target: Target, user: string, password: string, retries: number, quiet: boolean): Promise<FileClient> {
  if (resilient) {
    const { ResilientClient } = await import('./resilient.js');
    const onRetry = retryNotice(quiet);
    return ResilientClient.connect({ ...target, user, password, reconnect: { retries }, ...(onRetry ? { onRetry } : {}) });
  }
  const { FtsClient } = await import('./client.js');
  const client = await FtsClient.connect(target);
  try {
    await client.auth(user, password);
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

interface Target {
  host: string;
  port: number;
  tls?: { ca?: Buffer };
}

/** --tls / FTS_TLS, with --ca / FTS_CA read here so that a missing file is a usage error. */
async function resolveTls(flag: boolean | undefined, caFlag: string | undefined): Promise<Target['tls']> {
  const caFile = caFlag ?? (process.env['FTS_CA'] || undefined);
  const fromEnv = parseSwitch(process.env['FTS_TLS']);
  if (fromEnv === null) throw usageError(badSwitchMessage('FTS_TLS', process.env['FTS_TLS'] ?? ''));
  const on = flag === true || fromEnv || caFile !== undefined;
  if (!on) return undefined;
  if (caFile === undefined) return {};
  let ca: Buffer;
  try {
    const { readFile } = await import('node:fs/promises');
    ca = await readFile(caFile);
  } catch (err) {
    throw usageError(`cannot read CA file ${caFile}: ${errnoWords(err)}`);
  }
  // A key or an empty file would only fail later as "self-signed certificate", which points elsewhere.
  if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw usageError(`CA file ${caFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return { ca };
}

function resolvePort(flag: string | undefined): number {
  const text = flag ?? process.env['FTS_PORT'];
  if (text === undefined || text === '') return DEFAULT_PORT;
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw usageError(`invalid port ${JSON.stringify(text)}${flag === undefined ? ' (from FTS_PORT)' : ''}: expected 1 to 65535`);
  }
  return port;
}

async function main(argv: string[]): Promise<number> {
  const invocation = parseCommandLine(argv);
  if (invocation === 'help') {
    process.stdout.write(`${usage()}\n`);
    return EXIT_OK;
  }
  if (invocation === 'version') {
    const { PACKAGE_VERSION } = await import('../protocol/version.js');
    process.stdout.write(`fts ${PACKAGE_VERSION}\n`);
    return EXIT_OK;
  }
  const { command, args, values } = invocation;
  const host = values.host ?? (process.env['FTS_HOST'] || DEFAULT_HOST);
  if (host === '') throw usageError('--host must not be empty');
  const port = resolvePort(values.port);
  const retries = resolveRetries(values.retries);
  setDirectIo(resolveDirectIo());
  const user = values.user ?? process.env['FTS_USER'];
  if (user === undefined || user === '') throw usageError('no user: pass --user U or set FTS_USER');
  // Checked here, as remote names are: a name no server accepts would only count as a failed login.
  if (!isValidUsername(user)) throw usageError(`invalid user name ${printable(user)} (${USERNAME_RULE})`);
  // Before the password: a bad TLS setting must not cost the user a prompt first.
  const tlsOptions = await resolveTls(values.tls, values.ca);
  const password = await obtainPassword(values['password-file'], user);

  let client: FileClient | null = null;
  let interrupted = false;
  // Ctrl+C outside the interactive shell: drop the connection (an interrupted download keeps LOCAL.part
  // and its sidecar for the next run; LOCAL itself is untouched), then exit 130. A second Ctrl+C exits at
  // once.
  const interruption = new AbortController();
  // What the operations in progress fail with, so that mput, mget and sum report the Ctrl+C (once), not a
  // connection closed under them.
  const stop = interruptedError();
  const onInterrupt = (): void => {
    if (client === null || interrupted) process.exit(EXIT_INTERRUPTED);
    interrupted = true;
    interruption.abort();
    client.close(stop);
  };
  process.on('SIGINT', onInterrupt);
  try {
    const resilient = command === 'shell' || command.resilient;
    const quiet = values.quiet === true || values.json === true;
    const allowPlain = values['allow-plain'] === true ? { allowPlainPassword: true } : {};
    client = await openClient(resilient, { host, port, ...(tlsOptions ? { tls: tlsOptions } : {}), ...allowPlain }, user, password, retries, quiet);
    if (command === 'shell') {
      const { runShell } = await import('./cli/shell.js');
      const status = await runShell(client);
      // Without a terminal, Ctrl+C reaches us, not the shell's line reader: the shell saw a closed client.
      if (interrupted) throw stop;
      return status;
    }
    await command.run(client, args, values, { signal: interruption.signal });
    // The command is done; a server that is draining (or gone) refusing the goodbye changes nothing.
    await client.quit().catch(() => undefined);
    return EXIT_OK;
  } catch (err) {
    if (interrupted) throw stop;
    throw err;
  } finally {
    process.off('SIGINT', onInterrupt);
    client?.close();
  }
}

// A reader that goes away (`fts mget … | head -1`) is not an error: the command goes on without printing
// (a transfer is finished, not left half done) and exits with its own status. Other output errors (a full
// disk under a redirection) end the command with status 1.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') process.exit(report(localFsError(err, 'stdout')));
  process.stdout.write = (_chunk: unknown, ...rest: unknown[]): boolean => {
    const done = rest.find((a) => typeof a === 'function') as (() => void) | undefined;
    done?.();
    return true;
  };
});

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (err: unknown) => {
    process.exitCode = report(err);
  },
);
