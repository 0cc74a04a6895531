/**
 * `fts shell`: many commands over one login.
 *
 * On a terminal it is interactive: a `fts> ` prompt with line editing and history; a failing command
 * prints its error and the shell goes on, unless the connection itself is gone. Ctrl+C clears the line at
 * the prompt and abandons a running command (which ends the session, because a half-done transfer cannot
 * be taken back off the shared connection).
 *
 * Otherwise stdin is a batch script, like `sftp -b`: no prompt, blank lines and `#` comments skipped, and
 * the first failing command stops the script with its exit status.
 */
import { parseArgs } from 'node:util';
import { argumentProblem } from '../../protocol/arg-errors.js';
import readline from 'node:readline';
import type { FileClient } from '../client.js';
import { checkInvocation, COMMAND_OPTION_SPECS, commandHelp, findCommand } from './commands.js';
import { EXIT_INTERRUPTED, EXIT_OK, report, usageError } from './report.js';
import { splitWords } from './text.js';

const SHELL_HELP = [
  'commands:',
  ...commandHelp(),
  `  ${'help'.padEnd(38)} show this help`,
  `  ${'quit, exit'.padEnd(38)} end the session`,
  'Quote names with spaces: get "my file.txt" or get my\\ file.txt',
].join('\n');

const NEVER_ABORTED = new AbortController().signal;

/** Parses and runs one command line (already split into words). Throws FtsErrors, usage errors included. */
async function runWords(client: FileClient, words: readonly string[]): Promise<void> {
  const [verb, ...rest] = words;
  const command = findCommand(verb ?? '');
  if (command === undefined) throw usageError(`unknown command ${JSON.stringify(verb)} (type "help" for a list)`);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: COMMAND_OPTION_SPECS, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(argumentProblem(err));
  }
  checkInvocation(command, parsed.positionals, parsed.values, 'shell');
  // `-` (standard input) is refused in the shell, so nothing it runs reads past a closed connection.
  await command.run(client, parsed.positionals, parsed.values, { signal: NEVER_ABORTED });
}

/** Runs the shell until quit, end of input, a fatal error or (in batch mode) the first failure. */
export async function runShell(client: FileClient): Promise<number> {
  const interactive = process.stdin.isTTY === true;
  const rl = readline.createInterface({
    input: process.stdin,
    output: interactive ? process.stdout : undefined,
    terminal: interactive,
    prompt: 'fts> ',
  });
  let running = false;
  let interrupted = false;
  // In raw mode Ctrl+C arrives as a key, not a signal; readline reports it here.
  rl.on('SIGINT', () => {
    if (running) {
      interrupted = true;
      process.stdout.write('^C\n');
      client.close();
      return;
    }
    rl.write('', { ctrl: true, name: 'e' });
    rl.write('', { ctrl: true, name: 'u' });
    process.stdout.write('^C\n');
    rl.prompt();
  });

  let status = EXIT_OK;
  try {
    if (interactive) rl.prompt();
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) {
        if (interactive) rl.prompt();
        continue;
      }
      let words: string[];
      try {
        words = splitWords(line);
      } catch (err) {
        const code = report(err);
        if (!interactive) {
          status = code;
          break;
        }
        rl.prompt();
        continue;
      }
      const verb = words[0];
      if (verb === 'quit' || verb === 'exit') break;
      if (verb === 'help' || verb === '?') {
        process.stdout.write(`${SHELL_HELP}\n`);
      } else {
        running = true;
        try {
          await runWords(client, words);
        } catch (err) {
          const code = interrupted ? EXIT_INTERRUPTED : report(err);
          if (!interactive || !client.connected) {
            status = code;
            break;
          }
        } finally {
          running = false;
        }
      }
      if (interactive) rl.prompt();
    }
  } finally {
    rl.close();
  }
  if (client.connected) await client.quit().catch(() => undefined);
  return status;
}
