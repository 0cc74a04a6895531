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
 * and the shell's readline only for `fts shell`.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_PORT } from '../protocol/index.js';
import type { FtsClient } from './client.js';
import { checkInvocation, COMMAND_OPTION_SPECS, commandHelp, findCommand, type Command } from './cli/commands.js';
import { obtainPassword } from './cli/password.js';
import { EXIT_INTERRUPTED, EXIT_OK, interruptedError, report, usageError } from './cli/report.js';
import { localFsError } from './errors.js';

const DEFAULT_HOST = '127.0.0.1';

const OPTION_SPECS = {
  host: { type: 'string' },
  port: { type: 'string' },
  user: { type: 'string' },
  'password-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...COMMAND_OPTION_SPECS,
} as const;

function usage(): string {
  return [
    'usage: fts [--host H] [--port P] [--user U] [--password-file FILE] <command> [args]',
    '',
    'commands:',
    ...commandHelp(),
    `  ${'shell'.padEnd(34)} interactive session (a batch script when stdin is not a terminal)`,
    '',
    'options (before or after the command):',
    `  --host H              server host (env FTS_HOST, default ${DEFAULT_HOST})`,
    `  --port P              server port (env FTS_PORT, default ${DEFAULT_PORT})`,
    '  --user U              user name (env FTS_USER; required)',
    '  --password-file FILE  read the password from the first line of FILE',
    '  -h, --help            show this help',
    '',
    'The password is taken from FTS_PASSWORD, else --password-file, else asked for on the terminal.',
    'Exit status: 0 ok, 1 error, 2 usage error, 3 authentication failed, 4 not found.',
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

function parseCommandLine(argv: string[]): Invocation | 'help' {
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
    throw usageError(`${err instanceof Error ? err.message : String(err)}; try "fts --help"`);
  }
  const { values, positionals } = parsed;
  const [verb, ...args] = positionals;
  if (values.help === true || verb === 'help') return 'help';
  if (verb === undefined) throw usageError('missing command; try "fts --help"');
  const { long, json, dir } = values;
  if (verb === 'shell') {
    if (args.length > 0) throw usageError('shell takes no arguments');
    if (long !== undefined || json !== undefined || dir !== undefined) throw usageError('shell takes no command options');
    return { command: 'shell', args, values };
  }
  const command = findCommand(verb);
  if (command === undefined) throw usageError(`unknown command ${JSON.stringify(verb)}; try "fts --help"`);
  checkInvocation(command, args, { long, json, dir });
  return { command, args, values };
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
  const { command, args, values } = invocation;
  const host = values.host ?? (process.env['FTS_HOST'] || DEFAULT_HOST);
  if (host === '') throw usageError('--host must not be empty');
  const port = resolvePort(values.port);
  const user = values.user ?? process.env['FTS_USER'];
  if (user === undefined || user === '') throw usageError('no user: pass --user U or set FTS_USER');
  const password = await obtainPassword(values['password-file'], user);

  const { FtsClient } = await import('./client.js');
  let client: FtsClient | null = null;
  let interrupted = false;
  // Ctrl+C outside the interactive shell: drop the connection so that a download removes its temporary
  // file, then exit 130. A second Ctrl+C exits at once.
  const onInterrupt = (): void => {
    if (client === null || interrupted) process.exit(EXIT_INTERRUPTED);
    interrupted = true;
    client.close();
  };
  process.on('SIGINT', onInterrupt);
  try {
    client = await FtsClient.connect({ host, port });
    await client.auth(user, password);
    if (command === 'shell') {
      const { runShell } = await import('./cli/shell.js');
      return await runShell(client);
    }
    await command.run(client, args, values);
    await client.quit();
    return EXIT_OK;
  } catch (err) {
    if (interrupted) throw interruptedError();
    throw err;
  } finally {
    process.off('SIGINT', onInterrupt);
    client?.close();
  }
}

// A reader that goes away (`fts ls | head -1`) is not an error worth a stack trace; other output errors
// (a full disk under a redirection) end the command with status 1.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK);
  process.exit(report(localFsError(err, 'stdout')));
});

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (err: unknown) => {
    process.exitCode = report(err);
  },
);
