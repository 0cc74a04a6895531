/**
 * Where the CLI gets the password: the first line of --password-file, else FTS_PASSWORD, else a prompt
 * without echo when stdin is a terminal. The flag comes first, as every flag beats its variable: a stale
 * exported FTS_PASSWORD must not silently override the file the user just named. There is deliberately
 * no command-line flag for the password itself: arguments are visible to every user through ps and /proc.
 */
import { readFile } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { errnoWords, type FtsError } from '../../protocol/index.js';
import { interruptedError, usageError } from './report.js';

export const NO_PASSWORD_HELP =
  'no password: set FTS_PASSWORD, pass --password-file FILE (first line is the password), or run on a terminal to be prompted';

export async function obtainPassword(passwordFile: string | undefined, user: string): Promise<string> {
  if (passwordFile !== undefined) return readPasswordFile(passwordFile);
  const fromEnv = process.env['FTS_PASSWORD'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (process.stdin.isTTY === true) {
    const typed = await promptHidden(`Password for ${user}: `);
    // No account has an empty password: sending one would only count as a failed login against this address.
    if (typed === '') throw usageError('no password entered');
    return typed;
  }
  throw usageError(NO_PASSWORD_HELP);
}

async function readPasswordFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw usageError(`cannot read password file ${file}: ${errnoWords(err)}`);
  }
  const newline = text.indexOf('\n');
  let line = newline === -1 ? text : text.slice(0, newline);
  if (line.endsWith('\r')) line = line.slice(0, -1); // a file written on Windows
  if (line === '') throw usageError(`password file ${file}: its first line is empty (it must hold the password)`);
  return line;
}

/**
 * Reads one line from the terminal in raw mode, so nothing is echoed, and prompts on stderr so that stdout
 * stays clean for the command's output. Handles backspace, Ctrl+U (erase), Ctrl+C (cancel) and Ctrl+D.
 */
export function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    const decoder = new StringDecoder('utf8');
    let chars: string[] = [];
    const finish = (err: FtsError | null): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause(); // let the process exit, or the shell's readline take stdin over
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(chars.join(''));
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of decoder.write(chunk)) {
        if (ch === '\r' || ch === '\n') return finish(null);
        if (ch === '\u0003') return finish(interruptedError('password entry cancelled'));
        if (ch === '\u0004') {
          if (chars.length === 0) return finish(interruptedError('password entry cancelled'));
          return finish(null);
        }
        if (ch === '\u007f' || ch === '\b') chars.pop();
        else if (ch === '\u0015') chars = [];
        else if (ch >= ' ') chars.push(ch); // other control characters (arrow-key escapes) are ignored
      }
    };
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
  });
}
