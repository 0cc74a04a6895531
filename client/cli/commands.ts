/**
 * The commands of `fts`, shared by the one-shot CLI and the interactive shell: a table of names, aliases,
 * argument counts and options, and one function per command that prints the documented output.
 */
import { fstatSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, nameProblem } from '../../protocol/index.js';
import type { FileClient, FileHash, Usage } from '../client.js';
import { endedTheSession, isServerError, localFsError, withContext, withHint } from '../errors.js';
import { formatBytes } from '../../protocol/format-bytes.js';
import { setDirectIo } from '../../protocol/direct-io.js';
import { EXIT_INTERRUPTED, exitCodeFor, formatError, printable, report, usageError } from './report.js';
import { escapeForTerminal, exactly, formatJson, formatLong, formatPartials, formatPartialsJson, nameForTerminal, type NameShown } from './text.js';
import type { OutputMode, TransferOutput } from './transfers.js';

/** Lines of `list` output per write. */
const LIST_WRITE_LINES = 10_000;

/** Options that belong to particular commands (global options are handled by cli.ts). */
export interface CommandOptions {
  long?: boolean;
  json?: boolean;
  dir?: string;
  /** rename: replace a file already called NEWNAME. */
  force?: boolean;
  /** discard: every partial upload. */
  all?: boolean;
  /** discard: partial uploads by key (the names of some are not known). */
  key?: string[];
  /** No progress line. Accepted by every command (it is a global flag); only transfers show progress. */
  quiet?: boolean;
  /** sum: have the server read every file now, not answer the digest verified at its upload. */
  verify?: boolean;
  /** upload -: copy standard input to a temporary file first (resumable), instead of streaming it. */
  spool?: boolean;
  /** upload, download, mput, mget: leave out a file both ends already hold with the same bytes. */
  'skip-same'?: boolean;
}

/** The parseArgs descriptors of the command options, shared by cli.ts and the shell. */
export const COMMAND_OPTION_SPECS = {
  long: { type: 'boolean', short: 'l' },
  json: { type: 'boolean' },
  dir: { type: 'string' },
  force: { type: 'boolean', short: 'f' },
  all: { type: 'boolean', short: 'a' },
  key: { type: 'string', multiple: true },
  quiet: { type: 'boolean', short: 'q' },
  verify: { type: 'boolean' },
  spool: { type: 'boolean' },
  'skip-same': { type: 'boolean' },
} as const;

/** Command options that every command accepts. */
const GLOBAL_COMMAND_OPTIONS: ReadonlySet<keyof CommandOptions> = new Set(['quiet']);

/** The command options among parsed command-line values (which hold the global ones, --host and so on, too). */
export function commandOptionsOf(values: Partial<Record<keyof CommandOptions, unknown>>): CommandOptions {
  const options: Record<string, unknown> = {};
  for (const key of Object.keys(COMMAND_OPTION_SPECS) as Array<keyof CommandOptions>) if (values[key] !== undefined) options[key] = values[key];
  return options as CommandOptions;
}

/** Whether any option that not every command takes is given (the shell takes none). */
export function hasCommandOptions(options: CommandOptions): boolean {
  return (Object.keys(options) as Array<keyof CommandOptions>).some((key) => options[key] !== undefined && !GLOBAL_COMMAND_OPTIONS.has(key));
}

/** What runs a command: the one-shot command line, or the shell (whose standard input is its script). */
export type Where = 'command-line' | 'shell';

/** LOCAL `-`: standard input (upload) or output (download), on the command line only. */
const STANDARD_STREAM = '-';

function checkStandardStream(command: string, where: Where, stream: 'input' | 'output'): void {
  if (where === 'shell') throw usageError(`${command} -: standard ${stream} belongs to the shell; name a local file (./- for a file called "-")`);
}

export interface Command {
  readonly name: string;
  readonly aliases: readonly string[];
  /** Argument synopsis for help texts. */
  readonly synopsis: string;
  readonly summary: string;
  readonly minArgs: number;
  readonly maxArgs: number;
  readonly options: readonly (keyof CommandOptions)[];
  /**
   * Runs on a ResilientClient: reconnects after a dropped connection (a transfer resumes; a delete, rename
   * or discard that may have run is judged as ResilientClient says) and asks again after LOCKED. The
   * commands that only look (list, view, usage, partials) use a plain FtsClient, which keeps their
   * start-up lean.
   */
  readonly resilient: boolean;
  /**
   * Checks the arguments further, before anything is asked or sent (usage errors, exit 2). `where` says
   * whether the command line or the shell runs it (in the shell, standard input and output are the shell's).
   */
  check?(args: readonly string[], options: CommandOptions, where: Where): void;
  run(client: FileClient, args: readonly string[], options: CommandOptions, context: RunContext): Promise<void>;
}

/** What the caller gives a running command besides its arguments. */
export interface RunContext {
  /** Aborted by Ctrl+C: local work that a closed connection does not stop (reading standard input) stops. */
  readonly signal: AbortSignal;
}

/** Operations kept in flight at once by mput and mget on their one connection. */
const PIPELINE_WINDOW = 16;

/** Whether descriptor `fd` is open on a directory (false when it cannot be asked). */
function isDirectory(fd: number): boolean {
  try {
    return fstatSync(fd).isDirectory();
  } catch {
    return false;
  }
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The output of a transfer command (progress line, result lines), loaded only when one runs. */
async function transferOutput(mode: OutputMode, dataOnStdout = false): Promise<TransferOutput> {
  const { TransferOutput } = await import('./transfers.js');
  return new TransferOutput(mode, dataOnStdout);
}

/** A remote name given on the command line, checked before anything is sent. */
function remoteName(name: string): string {
  const problem = nameProblem(name);
  if (problem !== null) throw new FtsError('BAD_NAME', `${JSON.stringify(name)}: ${problem}`);
  return name;
}

/**
 * mput and mget take each remote name once: two local files with one base name would overwrite each other
 * on the server (the last upload wins, and both report success), and one name twice would fetch it twice
 * into one target. Refused before anything is sent.
 */
function refuseRepeatedNames(command: string, args: readonly string[], nameOf: (arg: string) => string): void {
  const seen = new Map<string, string>();
  for (const arg of args) {
    const name = nameOf(arg);
    const earlier = seen.get(name);
    if (earlier === undefined) {
      seen.set(name, arg);
      continue;
    }
    const what = earlier === arg ? `${printable(arg)} is given twice` : `${printable(earlier)} and ${printable(arg)} would both be stored as ${printable(name)}`;
    throw usageError(`${command}: ${what}; each remote name may appear once${command === 'mput' ? ' (fts upload LOCAL NAME stores a file under another name)' : ''}`);
  }
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
    throw isPerFile(err) ? withContext(err, name) : err;
  }
}

/** An error of one file, not of the whole session (which fails every request in flight with one error). */
function isPerFile(err: unknown): boolean {
  return err instanceof FtsError && (isServerError(err) ? !err.fatal : err.code === 'CHECKSUM_MISMATCH' || err.code === 'CHUNK_CORRUPT');
}

/**
 * Runs `start` over the items with up to PIPELINE_WINDOW in flight on the one connection, printing each
 * result in item order. After the first failure nothing new starts (the items never started are named on
 * stderr); what is already in flight still finishes and is printed. Every failure is reported as it comes,
 * an error of the whole session once however many items it failed (those items are then named in one line,
 * `fts: not <done>: …`, since its message names none); the first one is rethrown (already reported, so the
 * caller does not print it again) to set the exit status.
 */
async function pipelined<T>(
  items: readonly string[],
  start: (item: string) => Promise<T>,
  print: (result: T) => void,
  fail: (err: unknown) => void,
  done: string,
): Promise<void> {
  const running: Array<{ item: string; result: Promise<T> }> = [];
  let next = 0;
  let firstError: unknown = null;
  /** Items a session error failed, and the messages already printed for such errors. */
  const unfinished: string[] = [];
  const sessionErrors = new Set<string>();
  const fill = (): void => {
    while (firstError === null && next < items.length && running.length < PIPELINE_WINDOW) {
      const item = items[next++]!;
      const result = start(item);
      result.catch(() => undefined); // awaited below, in order
      running.push({ item, result });
    }
  };
  fill();
  for (let r = running.shift(); r !== undefined; r = running.shift()) {
    try {
      print(await r.result);
    } catch (err) {
      firstError ??= err;
      if (!endedTheSession(err)) fail(err);
      else {
        // A lost connection fails every item in flight, and a reconnecting client fails each with its own
        // error of the same words: printed once, the items named below.
        unfinished.push(r.item);
        const text = formatError(err);
        if (!sessionErrors.has(text)) fail(err);
        sessionErrors.add(text);
      }
    }
    fill();
  }
  if (firstError !== null) {
    if (unfinished.length > 0) process.stderr.write(`fts: not ${done}: ${unfinished.map((s) => printable(s)).join(', ')}\n`);
    // The user must learn which files were never tried, or a re-run of only the failed ones loses them.
    const skipped = items.slice(next);
    const why = exitCodeFor(firstError) === EXIT_INTERRUPTED ? 'not attempted' : 'stopped after the first failure; not attempted';
    if (skipped.length > 0) process.stderr.write(`fts: ${why}: ${skipped.map((s) => printable(s)).join(', ')}\n`);
    throw firstError;
  }
}

/**
 * Runs `start` over every item with up to PIPELINE_WINDOW in flight on the one connection, and hands each
 * outcome to `settle` in item order; unlike pipelined(), a failure does not stop the items after it.
 */
async function inWindows<T>(items: readonly string[], start: (item: string) => Promise<T>, settle: (item: string, outcome: { ok: true; value: T } | { ok: false; error: unknown }) => void): Promise<void> {
  const running: Array<Promise<{ ok: true; value: T } | { ok: false; error: unknown }>> = [];
  let next = 0;
  let settled = 0;
  const fill = (): void => {
    while (next < items.length && running.length < PIPELINE_WINDOW) {
      running.push(start(items[next++]!).then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })));
    }
  };
  fill();
  for (let p = running.shift(); p !== undefined; p = running.shift()) {
    settle(items[settled++]!, await p);
    fill();
  }
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
    synopsis: 'LOCAL [NAME] [--spool] [--skip-same] [--json]',
    summary: 'upload a local file (as NAME, default its base name); continues a partial upload; LOCAL - : standard input, NAME required, streamed (- NAME --spool: copied to a temporary file first, then resumable); --skip-same: send nothing if the server holds the same bytes',
    minArgs: 1,
    maxArgs: 2,
    options: ['json', 'spool', 'skip-same'],
    resilient: true,
    check([local, name], options, where) {
      if (local === STANDARD_STREAM && options['skip-same'] === true) throw usageError('upload -: --skip-same needs a local file to compare (upload LOCAL NAME --skip-same)');
      if (local !== STANDARD_STREAM) {
        if (options.spool === true) throw usageError('upload: --spool is for standard input (upload - NAME --spool)');
        remoteName(name ?? path.basename(local!));
        return;
      }
      checkStandardStream('upload', where, 'input');
      if (name === undefined) throw usageError('upload -: give the NAME to store standard input under (usage: upload - NAME)');
      remoteName(name);
      if (process.stdin.isTTY === true) throw usageError('upload -: standard input is a terminal; pipe or redirect the data to upload into fts');
      // Node reads a directory on standard input as an empty stream: it would be uploaded as an empty file.
      if (isDirectory(0)) throw new FtsError('NOT_A_FILE', 'upload -: standard input is a directory, not data to upload');
    },
    async run(client, [local, name], options, { signal }) {
      const remote = remoteName(name ?? path.basename(local!));
      const stdin = local === STANDARD_STREAM ? await import('./stdin-file.js') : null;
      if (stdin !== null && options.spool !== true && client.offers('upload-unsized') && !(await stdin.isWholeRegularFile())) {
        // Streamed as it comes: no local copy, and no resume (a pipe cannot be read again).
        const out = await transferOutput(options);
        try {
          const t = out.track(remote);
          out.uploaded(
            await about(remote, client.uploadStream(process.stdin, remote, { ...t.options, signal })).catch((err: unknown) => {
              // Left open by a failed upload (the library does not destroy its source): a silent pipe would
              // keep this process from exiting.
              process.stdin.destroy();
              throw err;
            }),
            t,
          );
        } finally {
          out.close();
        }
        return;
      }
      // The session is kept alive meanwhile: a pipe may take longer than the server's idle timeout.
      const input = stdin === null ? null : await client.keepAliveWhile(stdin.stdinFile(signal));
      // The copy was just written, so its pages are in the page cache: O_DIRECT would first force them all
      // to disk (measured: 1 GB piped in 6.3-7.2 s with it, 4.1-4.5 s without). This process uploads nothing else.
      if (input?.spooled === true) setDirectIo(false);
      const out = await transferOutput(options);
      try {
        const t = out.track(remote);
        out.uploaded(await about(remote, client.upload(input?.path ?? local!, remote, t.options)), t);
      } finally {
        out.close();
        await input?.dispose();
      }
    },
  },
  {
    name: 'download',
    aliases: ['get'],
    synopsis: 'NAME [LOCAL] [--skip-same] [--json]',
    summary: 'download a file (to LOCAL, default NAME in the current directory; LOCAL - : standard output); continues LOCAL.part; --skip-same: receive nothing if LOCAL holds the same bytes',
    minArgs: 1,
    maxArgs: 2,
    options: ['json', 'skip-same'],
    resilient: true,
    check([name, local], options, where) {
      remoteName(name!);
      if (local !== STANDARD_STREAM) return;
      if (options['skip-same'] === true) throw usageError('download NAME -: --skip-same needs a local file to compare (download NAME LOCAL --skip-same)');
      checkStandardStream('download', where, 'output');
      // The file's bytes, raw, would garble the terminal (view shows the start of a file safely).
      if (process.stdout.isTTY === true) throw usageError('download NAME -: standard output is a terminal; redirect or pipe it (fts view NAME shows the first 1024 bytes)');
    },
    async run(client, [name, local], options) {
      const remote = remoteName(name!);
      const toStdout = local === STANDARD_STREAM;
      const out = await transferOutput(options, toStdout);
      try {
        const t = out.track(remote);
        if (toStdout) out.streamed(await about(remote, client.downloadStream(remote, process.stdout, t.options)), t);
        else out.downloaded(await about(remote, client.download(remote, local, t.options)), t);
      } finally {
        out.close();
      }
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
    resilient: false,
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
    resilient: true,
    async run(client, [name]) {
      await about(name!, client.delete(remoteName(name!)));
      say(`deleted ${name!}`);
    },
  },
  {
    name: 'rename',
    aliases: ['mv'],
    synopsis: 'NAME NEWNAME [--force]',
    summary: 'rename a file (--force, -f: replace an existing NEWNAME)',
    minArgs: 2,
    maxArgs: 2,
    options: ['force'],
    resilient: true,
    async run(client, [name, to], options) {
      try {
        await about(name!, client.rename(remoteName(name!), remoteName(to!), { overwrite: options.force === true }));
      } catch (err) {
        throw err instanceof FtsError && err.code === 'ALREADY_EXISTS' ? withHint(err, 'pass --force to replace it') : err;
      }
      say(`renamed ${name!} to ${to!}`);
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
    resilient: false,
    async run(client, _args, options) {
      const long = options.long === true || options.json === true;
      const entries = await client.list({ long });
      const show = terminalNames();
      const lines = options.json === true ? formatJson(entries) : long ? formatLong(entries, show) : entries.map((e) => show(e.name));
      // In slices: one string of millions of lines would exceed V8's maximum string length.
      for (let at = 0; at < lines.length; at += LIST_WRITE_LINES) process.stdout.write(`${lines.slice(at, at + LIST_WRITE_LINES).join('\n')}\n`);
    },
  },
  {
    name: 'usage',
    aliases: ['df'],
    synopsis: '[--json]',
    summary: 'what you store on the server, and your quota (--json: one JSON object)',
    minArgs: 0,
    maxArgs: 0,
    options: ['json'],
    resilient: false,
    async run(client, _args, options) {
      const usage = await client.usage();
      say(options.json === true ? JSON.stringify(usage) : usageLines(usage).join('\n'));
    },
  },
  {
    name: 'partials',
    aliases: [],
    synopsis: '[--json]',
    summary: 'list your unfinished uploads the server keeps for a resume (--json: JSON array)',
    minArgs: 0,
    maxArgs: 0,
    options: ['json'],
    resilient: false,
    async run(client, _args, options) {
      const entries = await client.partials();
      if (options.json === true) say(formatPartialsJson(entries));
      else if (entries.length > 0) say(formatPartials(entries, terminalNames()).join('\n'));
    },
  },
  {
    name: 'discard',
    aliases: [],
    synopsis: 'NAME... | --key KEY... | --all',
    summary: 'discard unfinished uploads of NAME (--key: by key, as partials shows; --all, -a: all), freeing their space',
    minArgs: 0,
    maxArgs: Infinity,
    options: ['all', 'key'],
    resilient: true,
    check(names, options) {
      const keys = options.key ?? [];
      const ways = [names.length > 0, keys.length > 0, options.all === true].filter(Boolean).length;
      if (ways === 0) throw usageError(`discard: missing argument (usage: discard ${this.synopsis})`);
      if (ways > 1) throw usageError('discard: give NAME..., --key KEY... or --all, only one of them');
      for (const name of names) remoteName(name);
      for (const key of keys) if (!/^[0-9a-f]{64}$/.test(key)) throw usageError(`discard: ${JSON.stringify(key)} is not a key (64 lowercase hex digits, as partials shows)`);
    },
    async run(client, names, options) {
      const keys = options.key ?? [];
      const partials = await client.partials();
      const show = terminalNames();
      const chosen = options.all === true ? partials : partials.filter((p) => (p.name !== undefined && names.includes(p.name)) || keys.includes(p.key));
      const missing = [
        ...names.filter((name) => !partials.some((p) => p.name === name)).map((name) => `${show(name)}: no unfinished upload of that name`),
        ...keys.filter((key) => !partials.some((p) => p.key === key)).map((key) => `${key}: no unfinished upload with that key`),
      ];
      /** The first failure of a discard, which sets the exit status before any "not found". */
      let failed: unknown = null;
      for (const p of chosen) {
        const label = p.name === undefined ? `the unfinished upload ${p.key}` : show(p.name);
        try {
          const { bytes } = await client.discard(p.key);
          say(`discarded ${label} (${bytes ?? p.bytes} bytes)`);
        } catch (err) {
          // Published, resumed or swept since the listing: there is nothing left to discard.
          if (err instanceof FtsError && isServerError(err) && err.code === 'NOT_FOUND') say(`${label}: ended meanwhile, nothing to discard`);
          else {
            const error = withContext(err, label);
            report(error);
            failed ??= error;
          }
        }
      }
      const notFound = missing.map((message) => new FtsError('NOT_FOUND', message));
      for (const err of notFound) report(err);
      if (failed !== null || notFound.length > 0) throw failed ?? notFound[0];
    },
  },
  {
    name: 'sum',
    aliases: [],
    synopsis: 'NAME... [--verify] [--json]',
    summary: 'print the SHA-256 of server files as sha256sum does (--verify: the server reads each file now and reports damage)',
    minArgs: 1,
    maxArgs: Infinity,
    options: ['verify', 'json'],
    // Hashing many large files can take as long as a transfer: a dropped connection is retried the same way.
    resilient: true,
    check(names) {
      for (const name of names) remoteName(name);
    },
    async run(client, names, options) {
      const show = terminalNames();
      const found: FileHash[] = [];
      const hashOptions = options.verify === true ? { read: true } : {};
      /** Damage on the server, else the first failure other than a missing file sets the exit status; else the first missing file's. */
      let failed: unknown = null;
      let missing: unknown = null;
      let damaged: unknown = null;
      /** Names that failed with an error of the whole session (one report for all), which must each be named. */
      const unhashed: string[] = [];
      await inWindows(names, (name) => about(name, client.hash(name, hashOptions)), (name, result) => {
        if (result.ok) {
          const h = result.value;
          if (options.json === true) found.push(h);
          else say(`${h.sha256}  ${show(h.name)}`);
          if (h.damaged) {
            const err = new FtsError('IO_ERROR', `${show(h.name)}: damaged on the server: its bytes no longer match the SHA-256 verified when it was uploaded (the digest printed is of the bytes it holds now)`);
            report(err);
            damaged ??= err;
          }
          return;
        }
        report(result.error);
        if (result.error instanceof FtsError && result.error.code === 'NOT_FOUND') missing ??= result.error;
        else {
          failed ??= result.error;
          if (endedTheSession(result.error)) unhashed.push(name);
        }
      });
      if (options.json === true) {
        say(JSON.stringify(found.map((h) => ({ name: h.name, size: h.size, mtime: new Date(h.mtime).toISOString(), sha256: h.sha256, read: h.read, damaged: h.damaged }))));
      }
      if (unhashed.length > 0) process.stderr.write(`fts: not hashed: ${unhashed.map((n) => printable(n)).join(', ')}\n`);
      if (damaged !== null || failed !== null || missing !== null) throw damaged ?? failed ?? missing;
    },
  },
  {
    name: 'mput',
    aliases: [],
    synopsis: 'LOCAL... [--skip-same] [--json]',
    summary: 'upload several files under their base names, pipelined (--skip-same: not those the server holds with the same bytes)',
    minArgs: 1,
    maxArgs: Infinity,
    options: ['json', 'skip-same'],
    resilient: true,
    check(locals) {
      for (const local of locals) remoteName(path.basename(local));
      refuseRepeatedNames('mput', locals, (local) => path.basename(local));
    },
    async run(client, locals, options) {
      const out = await transferOutput(options);
      const { uploadUnlessSame } = await import('../skip-same.js');
      try {
        await pipelined(
          locals,
          (local) => {
            const t = out.track(path.basename(local));
            // The skip checks of the batch are pipelined (the files' order does not matter here).
            return about(path.basename(local), uploadUnlessSame(client, local, path.basename(local), t.options)).then((r) => ({ r, t }));
          },
          ({ r, t }) => out.uploaded(r, t),
          (err) => out.failed(err),
          'uploaded',
        );
      } finally {
        out.close();
      }
    },
  },
  {
    name: 'mget',
    aliases: [],
    synopsis: 'NAME... [--dir DIR] [--skip-same] [--json]',
    summary: 'download several files into DIR (default the current directory), pipelined (--skip-same: not those DIR holds with the same bytes)',
    minArgs: 1,
    maxArgs: Infinity,
    options: ['dir', 'json', 'skip-same'],
    resilient: true,
    check(names) {
      for (const name of names) remoteName(name);
      refuseRepeatedNames('mget', names, (name) => name);
    },
    async run(client, names, options) {
      const dir = options.dir ?? '.';
      await requireDirectory(dir);
      const out = await transferOutput(options);
      const { downloadUnlessSame } = await import('../skip-same.js');
      try {
        await pipelined(
          names,
          (name) => {
            const t = out.track(name);
            return about(name, downloadUnlessSame(client, name, path.join(dir, name), t.options)).then((r) => ({ r, t }));
          },
          ({ r, t }) => out.downloaded(r, t),
          (err) => out.failed(err),
          'downloaded',
        );
      } finally {
        out.close();
      }
    },
  },
];

/** Exact names for pipes and files (scripts); on a terminal, names cannot rearrange the display. */
function terminalNames(): NameShown {
  return process.stdout.isTTY === true ? nameForTerminal : exactly;
}

/** `fts usage`: one line per figure, bytes exactly and for people. */
function usageLines(u: Usage): string[] {
  const bytes = (n: number): string => `${n} bytes (${formatBytes(n)})`;
  const quota =
    u.quota === null
      ? 'none'
      : `${bytes(u.quota)}, ${((100 * u.used) / u.quota).toFixed(1)} % used, ${bytes(Math.max(0, u.quota - u.used))} left`; // a quota is at least 1 byte
  // A file-count quota is at least 1 file.
  const files = u.maxFiles === null ? `${u.files}` : `${u.files} of ${u.maxFiles}, ${((100 * u.files) / u.maxFiles).toFixed(1)} % used, ${Math.max(0, u.maxFiles - u.files)} left`;
  return [`used     ${bytes(u.used)}`, `quota    ${quota}`, `files    ${files}`, `partial  ${bytes(u.partial)} in unfinished uploads, kept for a resume`];
}

export function findCommand(word: string): Command | undefined {
  return COMMANDS.find((c) => c.name === word || c.aliases.includes(word));
}

/** Checks argument count and options against the command's table entry; throws usage errors. */
export function checkInvocation(command: Command, args: readonly string[], options: CommandOptions, where: Where = 'command-line'): void {
  for (const key of Object.keys(options) as Array<keyof CommandOptions>) {
    if (options[key] === undefined || GLOBAL_COMMAND_OPTIONS.has(key)) continue;
    if (!command.options.includes(key)) throw usageError(`${command.name} does not take --${key}`);
  }
  const usage = `usage: ${command.name} ${command.synopsis}`.trimEnd();
  if (args.length < command.minArgs) throw usageError(`${command.name}: missing argument (${usage})`);
  if (args.length > command.maxArgs) throw usageError(`${command.name}: too many arguments (${usage})`);
  command.check?.(args, options, where);
}

/** One line per command, for --help and the shell's help. */
export function commandHelp(): string[] {
  return COMMANDS.map((c) => {
    const names = [c.name, ...c.aliases].join(', ');
    return `  ${`${names} ${c.synopsis}`.padEnd(37)}  ${c.summary}`;
  });
}
