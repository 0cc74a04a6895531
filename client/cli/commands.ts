/**
 * The commands of `fts`, shared by the one-shot CLI and the interactive shell: a table of names, aliases,
 * argument counts and options, and one function per command that prints the documented output.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, nameProblem } from '../../protocol/index.js';
import type { FtsClient } from '../client.js';
import { isServerError, localFsError, withContext } from '../errors.js';
import { report, usageError } from './report.js';
import { escapeForTerminal, formatJson, formatLong } from './text.js';

/** Options that belong to particular commands (global options are handled by cli.ts). */
export interface CommandOptions {
  long?: boolean;
  json?: boolean;
  dir?: string;
}

/** The parseArgs descriptors of the command options, shared by cli.ts and the shell. */
export const COMMAND_OPTION_SPECS = {
  long: { type: 'boolean', short: 'l' },
  json: { type: 'boolean' },
  dir: { type: 'string' },
} as const;

export interface Command {
  readonly name: string;
  readonly aliases: readonly string[];
  /** Argument synopsis for help texts. */
  readonly synopsis: string;
  readonly summary: string;
  readonly minArgs: number;
  readonly maxArgs: number;
  readonly options: readonly (keyof CommandOptions)[];
  run(client: FtsClient, args: readonly string[], options: CommandOptions): Promise<void>;
}

/** Operations kept in flight at once by mput and mget on their one connection. */
const PIPELINE_WINDOW = 16;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function uploadedLine(r: { name: string; size: number; sha256: string }): string {
  return `uploaded ${r.name} (${r.size} bytes, sha256 ${r.sha256})`;
}

function downloadedLine(r: { name: string; size: number; sha256: string; localPath: string }): string {
  return `downloaded ${r.name} -> ${r.localPath} (${r.size} bytes, sha256 ${r.sha256})`;
}

/** A remote name given on the command line, checked before anything is sent. */
function remoteName(name: string): string {
  const problem = nameProblem(name);
  if (problem !== null) throw new FtsError('BAD_NAME', `${JSON.stringify(name)}: ${problem}`);
  return name;
}

/**
 * Puts the remote name in front of an error that is about that one file (the server's messages are
 * generic: "no such file"). Fatal and connection-level errors are left alone: they are about the session,
 * and mput/mget print one shared error only once.
 */
async function about<T>(name: string, op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    const perFile = err instanceof FtsError && (isServerError(err) ? !err.fatal : err.code === 'CHECKSUM_MISMATCH' || err.code === 'CHUNK_CORRUPT');
    throw perFile ? withContext(err, name) : err;
  }
}

/**
 * Runs `start` over the items with up to PIPELINE_WINDOW in flight on the one connection, printing each
 * result in item order. After the first failure nothing new starts; what is already in flight still
 * finishes and is printed. Every failure is reported as it comes; the first one is rethrown (already
 * reported, so the caller does not print it again) to set the exit status.
 */
async function pipelined<T>(items: readonly string[], start: (item: string) => Promise<T>, print: (result: T) => void): Promise<void> {
  const running: Array<Promise<T>> = [];
  let next = 0;
  let firstError: unknown = null;
  const fill = (): void => {
    while (firstError === null && next < items.length && running.length < PIPELINE_WINDOW) {
      const p = start(items[next++]!);
      p.catch(() => undefined); // awaited below, in order
      running.push(p);
    }
  };
  fill();
  for (let p = running.shift(); p !== undefined; p = running.shift()) {
    try {
      print(await p);
    } catch (err) {
      firstError ??= err;
      report(err); // prints each distinct error once (a lost connection fails all in-flight with one error)
    }
    fill();
  }
  if (firstError !== null) throw firstError;
}

async function requireDirectory(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    throw localFsError(err, dir, 'IO_ERROR');
  }
  if (!isDir) throw new FtsError('IO_ERROR', `${dir}: not a directory`);
}

export const COMMANDS: readonly Command[] = [
  {
    name: 'upload',
    aliases: ['put'],
    synopsis: 'LOCAL [NAME]',
    summary: 'upload a local file (as NAME, default its base name)',
    minArgs: 1,
    maxArgs: 2,
    options: [],
    async run(client, [local, name]) {
      const remote = name ?? path.basename(local!);
      say(uploadedLine(await about(remote, client.upload(local!, remoteName(remote)))));
    },
  },
  {
    name: 'download',
    aliases: ['get'],
    synopsis: 'NAME [LOCAL]',
    summary: 'download a file (to LOCAL, default NAME in the current directory)',
    minArgs: 1,
    maxArgs: 2,
    options: [],
    async run(client, [name, local]) {
      say(downloadedLine(await about(name!, client.download(remoteName(name!), local))));
    },
  },
  {
    name: 'view',
    aliases: ['cat'],
    synopsis: 'NAME',
    summary: 'print the first 1024 bytes of a file',
    minArgs: 1,
    maxArgs: 1,
    options: [],
    async run(client, [name]) {
      const data = await about(name!, client.view(remoteName(name!)));
      if (!process.stdout.isTTY) {
        process.stdout.write(data); // exact bytes for pipes and files
        return;
      }
      const text = escapeForTerminal(data);
      process.stdout.write(text === '' || text.endsWith('\n') ? text : `${text}\n`);
    },
  },
  {
    name: 'delete',
    aliases: ['rm'],
    synopsis: 'NAME',
    summary: 'delete a file',
    minArgs: 1,
    maxArgs: 1,
    options: [],
    async run(client, [name]) {
      await about(name!, client.delete(remoteName(name!)));
      say(`deleted ${name!}`);
    },
  },
  {
    name: 'list',
    aliases: ['ls'],
    synopsis: '[--long] [--json]',
    summary: 'list your files (--long: size and time; --json: JSON array)',
    minArgs: 0,
    maxArgs: 0,
    options: ['long', 'json'],
    async run(client, _args, options) {
      const long = options.long === true || options.json === true;
      const entries = await client.list({ long });
      const lines = options.json === true ? [formatJson(entries)] : long ? formatLong(entries) : entries.map((e) => e.name);
      if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
    },
  },
  {
    name: 'mput',
    aliases: [],
    synopsis: 'LOCAL...',
    summary: 'upload several files under their base names, pipelined',
    minArgs: 1,
    maxArgs: Infinity,
    options: [],
    async run(client, locals) {
      for (const local of locals) remoteName(path.basename(local)); // refuse bad names before sending anything
      await pipelined(locals, (local) => about(path.basename(local), client.upload(local)), (r) => say(uploadedLine(r)));
    },
  },
  {
    name: 'mget',
    aliases: [],
    synopsis: 'NAME... [--dir DIR]',
    summary: 'download several files into DIR (default the current directory), pipelined',
    minArgs: 1,
    maxArgs: Infinity,
    options: ['dir'],
    async run(client, names, options) {
      for (const name of names) remoteName(name);
      const dir = options.dir ?? '.';
      await requireDirectory(dir);
      await pipelined(names, (name) => about(name, client.download(name, path.join(dir, name))), (r) => say(downloadedLine(r)));
    },
  },
];

export function findCommand(word: string): Command | undefined {
  return COMMANDS.find((c) => c.name === word || c.aliases.includes(word));
}

/** Checks argument count and options against the command's table entry; throws usage errors. */
export function checkInvocation(command: Command, args: readonly string[], options: CommandOptions): void {
  for (const key of Object.keys(options) as Array<keyof CommandOptions>) {
    if (options[key] !== undefined && !command.options.includes(key)) throw usageError(`${command.name} does not take --${key}`);
  }
  const usage = `usage: ${command.name} ${command.synopsis}`.trimEnd();
  if (args.length < command.minArgs) throw usageError(`${command.name}: missing argument (${usage})`);
  if (args.length > command.maxArgs) throw usageError(`${command.name}: too many arguments (${usage})`);
}

/** One line per command, for --help and the shell's help. */
export function commandHelp(): string[] {
  return COMMANDS.map((c) => {
    const names = [c.name, ...c.aliases].join(', ');
    return `  ${`${names} ${c.synopsis}`.padEnd(34)} ${c.summary}`;
  });
}
