#!/usr/bin/env node
/**
 * fts-admin: administers a running fts-server through the primary's admin socket (protocol/admin.ts).
 *
 *   fts-admin [--socket PATH] <command> [args]
 *
 * The socket is --socket PATH, else $FTS_ADMIN_SOCKET, else defaultAdminSocket(). Global flags may come
 * before or after the command. Results go to stdout; every error line goes to stderr as `fts-admin: ...`.
 *
 * Exit codes:
 *   0  success
 *   1  the server reported an error (ok:false) or is not ready (ready), the connection broke mid-command,
 *      the reply was not understood, no final reply came within 15 s, or connecting failed for a reason
 *      other than the ones under 3 (e.g. permission denied)
 *   2  usage error: unknown command or flag, missing, extra or invalid argument
 *   3  no fts-server is running at the socket (ENOENT, ECONNREFUSED or ENOTSOCK on connect)
 *   130  interrupted (Ctrl+C) while waiting for a drain, which goes on in the server, or at passwd's prompt
 */

import { isIP } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { argumentProblem } from '../protocol/arg-errors.js';
import { canonicalIp, defaultAdminSocket, type AdminEvent, type AdminFinal, type AdminRequest, type StatusResult } from '../protocol/index.js';
import { PACKAGE_VERSION } from '../protocol/version.js';
import { AdminClientError, adminRequest, waitForSocketGone } from './admin-client.js';
import { formatBans, formatConfig, formatDrainProgress, formatScored, formatKilled, formatPartials, formatRestarted, formatSessions, formatStatus, formatUsage, safeText } from './format.js';
import { asReloadResult, isBanList, isConfigResult, isDiscarded, isPartialList, isScoredList, isSessionList, isStatusResult, isUsageList, type ReloadResult } from './results.js';
import { asOwnerOf, checkUsername, passwd, PasswdCancelled, PasswdError, readNewPassword, sameFile } from './passwd.js';
import { EXIT_INTERRUPTED } from '../client/cli/report.js';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_NO_SERVER = 3;

/** How long a command other than drain waits for its final line (restarted by each event line). */
const REPLY_TIMEOUT_MS = 15_000;
/** After a drain's connection ends, how long to wait for the socket to stop accepting connections. */
const STOP_CONFIRM_MS = 5_000;
/** How often `ready --timeout` asks again. */
const READY_POLL_MS = 200;
/** The largest --timeout: the drain grace period the server accepts (parseAdminRequest), and so ready's wait too. */
const MAX_TIMEOUT_SECONDS = 86_400;
const SESSION_ID = /^[0-9a-f]{1,64}$/;
/** sun_path holds 108 bytes with the NUL (same limit as fts-server's config); longer paths get truncated. */
const MAX_SOCKET_PATH_BYTES = 107;

function usage(): string {
  return `Usage: fts-admin [--socket PATH] <command> [args]

Administers a running fts-server through its admin socket.

Commands:
  status [--json]        server, per-worker and total connection/session/transfer counts
  sessions [--json]      list the sessions on all workers
  config [--json]        the settings the server runs with (every flag's value, and whether it came from
                         the command line, its environment variable or the default)
  drain [--timeout S]    stop accepting connections, let transfers (and upload hook runs) finish for at most S seconds
                         (default: the server's --grace), then stop the server; waits until it is gone
  ready [--timeout S]    exit 0 once the server answers, all its workers listen, its storage answers and it is not draining
                         (prints the port); --timeout S: wait up to S seconds for that (for a service
                         manager's start-up check, or a rolling deploy's next step)
  reload                 re-read the users file, the quota, permissions, rates and networks files and the TLS certificate
                         (the old ones are all kept if a new one is bad);
                         returns once every worker uses them (a worker that has not within 5 s is named in a warning)
  kick SESSION_ID        end one session (ids as listed by 'sessions')
  kick-user USER         end every session of USER (exit 1 if there is none)
  restart-workers        replace the worker processes one at a time
  bans [--json] [--points]
                         list the addresses banned (failed logins, protocol violations), with the time left;
                         --points: also those with penalty points that are not banned yet, with their points
  unban ADDRESS          lift the ban on ADDRESS and forget its penalty points (also when it is not banned)
  usage [--json]         what every user stores (files and unfinished uploads) against their quota
  partials [--json]      every user's unfinished uploads (kept for a resume): name, bytes, times, key
  discard USER KEY       remove one of USER's unfinished uploads, by the key 'partials' shows
  passwd USER [--users FILE]
                         set USER's password as a SCRAM-SHA-256 verifier in the users file
                         (default $FTS_USERS, else ./id_passwd.txt), atomically, then reload
                         the running server; the password (8 characters or more) is read without
                         echo (or from stdin).
                         Nothing is written if the running server reads another file; a missing
                         file is created (mode 600) only if no server answers or it reads that file.
                         As root: needs --socket or FTS_ADMIN_SOCKET, and works as the owner of the
                         file's directory
  help                   show this text

Options:
  --socket PATH          admin socket; default $FTS_ADMIN_SOCKET, else
                         ${defaultAdminSocket()}
  --json                 print the server's reply as JSON (status, sessions, config, bans, usage, partials)
  --timeout S            drain grace period, or how long ready waits: whole seconds 0-${MAX_TIMEOUT_SECONDS}
  --points               bans: also list addresses with penalty points, and the points of each
  -h, --help             show this text
  --version              print fts-admin's version

Exit status:
  0  success
  1  the server reported an error or is not ready, the connection broke, or no reply within ${REPLY_TIMEOUT_MS / 1000} s
  2  usage error
  3  no fts-server is running at the socket
  130  interrupted (Ctrl+C, or Ctrl+D at passwd's prompt); an interrupted drain goes on in the server`;
}

class UsageError extends Error {}

/** A command failure: main() prints `fts-admin: message` and exits with `code`. */
class CommandFailed extends Error {
  /** @param serverCode the refusal's code, when the server gave one (AdminFinal). */
  constructor(message: string, readonly code: number = EXIT_FAILED, readonly serverCode?: string) {
    super(message);
  }
}

type Flag = 'json' | 'timeout' | 'users' | 'points';

interface Invocation {
  socket: string;
  /** The socket came from --socket or FTS_ADMIN_SOCKET, not from the per-user default. */
  socketNamed: boolean;
  args: string[];
  json: boolean;
  points: boolean;
  timeout: string | undefined;
  users: string | undefined;
}

interface Command {
  /** Positional arguments after the command name, for usage messages. */
  args: readonly string[];
  flags: readonly Flag[];
  run(inv: Invocation): Promise<void>;
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function err(line: string): void {
  process.stderr.write(`fts-admin: ${line}\n`);
}

/** Server messages are printed with control characters escaped (backslashes left alone). */
function serverMessage(s: string): string {
  return safeText(s, false);
}

/** Sends a request and returns the result of an ok reply; an ok:false reply becomes CommandFailed. */
async function call(inv: Invocation, request: AdminRequest, onEvent?: (e: AdminEvent) => void, timeoutMs = REPLY_TIMEOUT_MS): Promise<unknown> {
  const final = await adminRequest(inv.socket, request, onEvent ? { onEvent, timeoutMs } : { timeoutMs });
  return resultOf(final);
}

function resultOf(final: AdminFinal | null): unknown {
  if (final === null) throw new CommandFailed('the server closed the connection before replying');
  if (!final.ok) throw new CommandFailed(serverMessage(final.error), EXIT_FAILED, final.code);
  if (final.warning !== undefined) err(`warning: ${serverMessage(final.warning)}`);
  return final.result;
}

function unexpected(what: string): CommandFailed {
  return new CommandFailed(`unexpected ${what} reply from the server (is fts-admin the same version as fts-server?)`);
}

function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** The commands that take no argument and print one result. */
type ReportCommand = 'status' | 'sessions' | 'bans' | 'usage' | 'partials' | 'config';

/** The result of a command that takes no argument, checked for its shape before anything uses it. */
async function ask<T>(inv: Invocation, cmd: ReportCommand, isResult: (v: unknown) => v is T, timeoutMs = REPLY_TIMEOUT_MS): Promise<T> {
  const result = await call(inv, { cmd }, undefined, timeoutMs);
  if (!isResult(result)) throw unexpected(cmd);
  return result;
}

/** A command that prints one result: as JSON with --json, else as text. */
function report<T>(cmd: ReportCommand, isResult: (v: unknown) => v is T, format: (result: T) => string): Command {
  return {
    args: [],
    flags: ['json'],
    async run(inv) {
      const result = await ask(inv, cmd, isResult);
      if (inv.json) printJson(result);
      else out(format(result));
    },
  };
}

/** A USER argument, checked before anything else happens (passwd: before the password is typed twice). */
function userArgument(inv: Invocation): string {
  const user = inv.args[0] ?? '';
  try {
    checkUsername(user);
  } catch (e) {
    if (e instanceof PasswdError) throw new UsageError(safeText(e.message));
    throw e;
  }
  return user;
}

const COMMANDS: Readonly<Record<string, Command>> = {
  status: report('status', isStatusResult, formatStatus),

  sessions: report('sessions', isSessionList, formatSessions),

  config: report('config', isConfigResult, formatConfig),

  drain: {
    args: [],
    flags: ['timeout'],
    async run(inv) {
      const request: AdminRequest = { cmd: 'drain' };
      if (inv.timeout !== undefined) request.timeout = parseTimeout(inv.timeout);
      // Interrupting fts-admin does not cancel the drain; say so instead of dying silently.
      const onInterrupt = (): void => {
        err('interrupted; the server keeps draining');
        process.exit(EXIT_INTERRUPTED);
      };
      process.once('SIGINT', onInterrupt);
      try {
        // No final line for drain: the stream ends when the server exits.
        const final = await adminRequest(inv.socket, request, {
          untilClose: true,
          onEvent: (e) => {
            if (e.event === 'progress') out(formatDrainProgress(e));
          },
        });
        if (final !== null && !final.ok) throw new CommandFailed(serverMessage(final.error));
        if (!(await waitForSocketGone(inv.socket, STOP_CONFIRM_MS))) {
          throw new CommandFailed(`the drain connection ended but a server still accepts connections at ${inv.socket}`);
        }
      } finally {
        process.removeListener('SIGINT', onInterrupt);
      }
      out('server stopped');
    },
  },

  ready: {
    args: [],
    flags: ['timeout'],
    async run(inv) {
      const deadline = Date.now() + (inv.timeout === undefined ? 0 : parseTimeout(inv.timeout) * 1000);
      for (;;) {
        const notYet = await notReadyBecause(inv, deadline);
        if (notYet === null) return;
        const left = deadline - Date.now();
        if (left <= 0) throw notYet;
        await new Promise((resolve) => setTimeout(resolve, Math.min(READY_POLL_MS, left)));
      }
    },
  },

  reload: {
    args: [],
    flags: [],
    async run(inv) {
      const result = asReloadResult(await call(inv, { cmd: 'reload' }));
      if (result === null) throw unexpected('reload');
      for (const w of result.warnings) err(`warning: ${serverMessage(w)}`);
      out(`users reloaded: ${result.users} users`);
      if (result.quotaUsers !== undefined) out(`quotas reloaded: ${result.quotaUsers} users with their own quota`);
      if (result.permissionUsers !== undefined) out(`permissions reloaded: ${result.permissionUsers} users with their own permissions`);
      if (result.rateUsers !== undefined) out(`rates reloaded: ${result.rateUsers} users with their own rates`);
      if (result.networkUsers !== undefined) out(`networks reloaded: ${result.networkUsers} users with their own networks`);
      if (result.tlsReloaded) out('TLS certificate reloaded');
    },
  },

  kick: {
    args: ['SESSION_ID'],
    flags: [],
    async run(inv) {
      const raw = inv.args[0] ?? '';
      const id = raw.toLowerCase();
      if (!SESSION_ID.test(id)) throw new UsageError(`invalid session id '${safeText(raw)}' (expected hex, as listed by 'sessions')`);
      await call(inv, { cmd: 'kick', session: id });
      out(`session ${id} ended`);
    },
  },

  'kick-user': {
    args: ['USER'],
    flags: [],
    async run(inv) {
      const user = userArgument(inv);
      const theirs = (await ask(inv, 'sessions', isSessionList)).filter((s) => s.user === user);
      if (theirs.length === 0) throw new CommandFailed(`no session of user ${user}`);
      let ended = 0;
      for (const s of theirs) {
        try {
          await call(inv, { cmd: 'kick', session: s.id });
        } catch (e) {
          // Ended by itself between the listing and the kick: what was asked for. (Not when a worker that
          // did not answer may still hold it: that fails the command.)
          if (e instanceof CommandFailed && e.serverCode === 'NO_SESSION') continue;
          throw e;
        }
        out(`session ${s.id} ended`);
        ended++;
      }
      out(`${ended} ${ended === 1 ? 'session' : 'sessions'} of ${user} ended`);
    },
  },

  bans: {
    args: [],
    flags: ['json', 'points'],
    async run(inv) {
      if (!inv.points) {
        const bans = await ask(inv, 'bans', isBanList);
        return inv.json ? printJson(bans) : out(formatBans(bans));
      }
      const result = await call(inv, { cmd: 'bans', points: true });
      if (!isScoredList(result)) {
        throw isBanList(result) ? new CommandFailed('the server does not report penalty points (it is older than this fts-admin)') : unexpected('bans');
      }
      if (inv.json) printJson(result);
      else out(formatScored(result));
    },
  },

  usage: report('usage', isUsageList, formatUsage),

  partials: report('partials', isPartialList, formatPartials),

  discard: {
    args: ['USER', 'KEY'],
    flags: [],
    async run(inv) {
      const user = userArgument(inv);
      const key = inv.args[1] ?? '';
      if (!/^[0-9a-f]{64}$/.test(key)) throw new UsageError(`invalid key '${safeText(key)}' (expected 64 lowercase hex digits, as listed by 'partials')`);
      const result = await call(inv, { cmd: 'discard', user, key });
      if (!isDiscarded(result)) throw unexpected('discard');
      out(`discarded ${result.name === null ? `the unfinished upload ${key}` : safeText(result.name)} of ${user} (${result.bytes} bytes)`);
    },
  },

  unban: {
    args: ['ADDRESS'],
    flags: [],
    async run(inv) {
      const raw = inv.args[0] ?? '';
      if (isIP(raw) === 0) throw new UsageError(`invalid address '${safeText(raw)}' (expected an IPv4 or IPv6 address, as listed by 'bans')`);
      const address = canonicalIp(raw);
      const result = await call(inv, { cmd: 'unban', address });
      // An older server replies with no result: it lifts bans only.
      const lifted = typeof result === 'object' && result !== null ? (result as { banned?: unknown; points?: unknown }) : {};
      if (lifted.banned === false && typeof lifted.points === 'number') out(`${address} was not banned; forgot its ${lifted.points} penalty points`);
      else out(`unbanned ${address}`);
    },
  },

  'restart-workers': {
    args: [],
    flags: [],
    async run(inv) {
      await call(inv, { cmd: 'restart-workers' }, (e) => {
        if (e.event === 'restarted') out(formatRestarted(e.old, e.new));
        // The restart goes on; the final reply repeats it as a warning.
        else if (e.event === 'killed') err(formatKilled(e.old));
      });
      out('all workers restarted');
    },
  },

  passwd: {
    args: ['USER'],
    flags: ['users'],
    async run(inv) {
      const user = userArgument(inv);
      const usersFile = path.resolve(inv.users ?? process.env['FTS_USERS'] ?? './id_passwd.txt');
      // Root's default socket is root's own, never the service's: the check below would find "no server"
      // and write a file the service may not read.
      if (process.geteuid?.() === 0 && !inv.socketNamed) {
        throw new CommandFailed("as root, name the service's admin socket (--socket PATH or FTS_ADMIN_SOCKET): root's default socket is not the service's; nothing changed", EXIT_USAGE);
      }
      // Asked before writing (and before the password is typed): a file the running server does not read
      // must not be written, and above all not created, as ./id_passwd.txt by default would be.
      const served = await usersFileOfServer(inv);
      if (served !== null && !(await sameFile(served, usersFile))) throw notTheServersFile(served, usersFile, '; nothing was written');
      let outcome: { replaced: boolean; created: boolean };
      try {
        const password = await readNewPassword(user);
        // As root, the file is read and written as the owner of its directory: a link or a file that owner
        // planted there then gives them nothing they could not do themselves.
        outcome = await asOwnerOf(path.dirname(usersFile), () => passwd(usersFile, user, password));
      } catch (e) {
        // Paths in these messages may come from links someone else planted: escaped for the terminal.
        if (e instanceof PasswdError) throw new CommandFailed(safeText(e.message, false), e instanceof PasswdCancelled ? EXIT_INTERRUPTED : EXIT_FAILED);
        throw e;
      }
      const shown = safeText(usersFile, false);
      if (outcome.created) out(`created ${shown} with ${user} (SCRAM-SHA-256 verifier)`);
      else out(`${outcome.replaced ? 'updated' : 'added'} ${user} in ${shown} (SCRAM-SHA-256 verifier)`);
      // The socket is named so that an operator who meant another server notices.
      const noServer = `no server running at ${inv.socket}; the change applies at its next start`;
      if (served === null) return out(noServer);
      let result: ReloadResult | null;
      try {
        result = asReloadResult(await call(inv, { cmd: 'reload' }));
      } catch (e) {
        if (e instanceof AdminClientError && e.kind === 'no-server') return out(noServer); // stopped meanwhile
        throw e;
      }
      // Checked again: a server restarted on another file since it was asked would not know the change.
      if (result?.usersFile !== undefined && !(await sameFile(result.usersFile, usersFile))) {
        throw notTheServersFile(result.usersFile, usersFile, ', so it does not know this change');
      }
      for (const w of result?.warnings ?? []) err(`warning: ${serverMessage(w)}`);
      out(`server reloaded: ${result?.users ?? '?'} users`);
    },
  },
};

/**
 * The users file of the server at the socket, or null when no server answers there. Any other failure
 * refuses the command: without the answer, passwd cannot know it writes the file the server reads.
 */
async function usersFileOfServer(inv: Invocation): Promise<string | null> {
  let result: StatusResult;
  try {
    result = await ask(inv, 'status', isStatusResult);
  } catch (e) {
    if (e instanceof AdminClientError && e.kind === 'no-server') return null;
    if (e instanceof AdminClientError || e instanceof CommandFailed) {
      throw new CommandFailed(`${e.message}; cannot tell which users file the server reads, so nothing changed`);
    }
    throw e;
  }
  if (result.usersFile === undefined) {
    throw new CommandFailed(`the server at ${inv.socket} does not say which users file it reads (it is older than this fts-admin); nothing changed`);
  }
  return result.usersFile;
}

/**
 * One look for `ready`: null once the server is ready (after printing its port), else why not yet, as the
 * error to end with if time runs out. A draining server never becomes ready again, so that ends the wait.
 * No server at the socket (yet), a connection that broke (a server starting or stopping) and a server slow
 * to answer are waited out until `deadline`; any other failure (permission denied) ends it. A look waits for
 * its answer until the deadline, but at least 3 s (a status waits up to 2 s for a storage that does not
 * answer): a --timeout shorter than that can be overrun by a slow answer.
 */
async function notReadyBecause(inv: Invocation, deadline: number): Promise<CommandFailed | AdminClientError | null> {
  let status: StatusResult;
  try {
    // At least 3 s: a status waits up to 2 s for a storage that does not answer (storage-health.ts).
    status = await ask(inv, 'status', isStatusResult, Math.min(REPLY_TIMEOUT_MS, Math.max(3_000, deadline - Date.now())));
  } catch (e) {
    if (e instanceof AdminClientError && (e.kind === 'no-server' || e.kind === 'broken' || e.kind === 'timeout')) return e;
    throw e;
  }
  if (status.draining) throw new CommandFailed('not ready: the server is draining');
  // The port is announced once every worker listens (a start that fails exits instead); later, a worker
  // respawned after a crash, or replaced by restart-workers, is "starting" until it listens again.
  if (status.port === null) return new CommandFailed(`not ready: the server (pid ${status.pid}) is starting; its workers do not all listen yet`);
  if (!status.workers.some((w) => w.starting !== true)) return new CommandFailed(`not ready: no worker of the server (pid ${status.pid}) listens now`);
  if (status.storage?.ok === false) return new CommandFailed(`not ready: the storage is unavailable: ${serverMessage(status.storage.problem ?? 'unknown problem')}`);
  out(`ready: listening on port ${status.port}`);
  return null;
}

function notTheServersFile(served: string, usersFile: string, consequence: string): CommandFailed {
  return new CommandFailed(`the running server reads its users from ${safeText(served)}, not ${safeText(usersFile)}${consequence}; run again with --users ${safeText(served)}`);
}

function parseTimeout(value: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`--timeout must be a whole number of seconds, got '${safeText(value)}'`);
  const n = Number(value);
  if (n > MAX_TIMEOUT_SECONDS) throw new UsageError(`--timeout must be at most ${MAX_TIMEOUT_SECONDS} seconds`);
  return n;
}

interface Parsed {
  help: boolean;
  version: boolean;
  command: string | undefined;
  inv: Invocation;
  given: Flag[];
}

function parseCommandLine(argv: string[]): Parsed {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        json: { type: 'boolean' },
        points: { type: 'boolean' },
        timeout: { type: 'string' },
        users: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    // Our one wording of parseArgs's errors; safeText because the option is whatever was typed.
    throw new UsageError(safeText(argumentProblem(e)));
  }
  const { values, positionals } = parsed;
  if (values.socket === '') throw new UsageError('--socket needs a path');
  const env = process.env['FTS_ADMIN_SOCKET'];
  const named = values.socket ?? (env !== undefined && env !== '' ? env : undefined);
  const socket = named ?? defaultAdminSocket();
  const bytes = Buffer.byteLength(socket);
  if (bytes > MAX_SOCKET_PATH_BYTES && values.help !== true && values.version !== true) {
    throw new UsageError(`socket path is ${bytes} bytes; UNIX socket paths must be at most ${MAX_SOCKET_PATH_BYTES} bytes`);
  }
  const given: Flag[] = [];
  if (values.json !== undefined) given.push('json');
  if (values.points !== undefined) given.push('points');
  if (values.timeout !== undefined) given.push('timeout');
  if (values.users !== undefined) given.push('users');
  return {
    help: values.help === true,
    version: values.version === true,
    command: positionals[0],
    inv: { socket, socketNamed: named !== undefined, args: positionals.slice(1), json: values.json === true, points: values.points === true, timeout: values.timeout, users: values.users },
    given,
  };
}


async function main(argv: string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parseCommandLine(argv);
  } catch (e) {
    if (e instanceof UsageError) return usageFailure(e.message);
    throw e;
  }
  if (parsed.help || parsed.command === 'help') {
    out(usage());
    return EXIT_OK;
  }
  if (parsed.version) {
    out(`fts-admin ${PACKAGE_VERSION}`);
    return EXIT_OK;
  }
  const name = parsed.command;
  if (name === undefined) return usageFailure('missing command');
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) return usageFailure(`unknown command '${safeText(name)}'`);
  const { inv } = parsed;
  if (inv.args.length < command.args.length) return usageFailure(`${name}: missing ${command.args[inv.args.length] ?? 'argument'}`);
  if (inv.args.length > command.args.length) return usageFailure(`${name}: unexpected argument '${safeText(inv.args[command.args.length] ?? '')}'`);
  const stray = parsed.given.find((f) => !command.flags.includes(f));
  if (stray !== undefined) return usageFailure(`${name} does not take --${stray}`);

  try {
    await command.run(inv);
    return EXIT_OK;
  } catch (e) {
    if (e instanceof UsageError) return usageFailure(e.message);
    if (e instanceof CommandFailed) {
      err(e.message);
      return e.code;
    }
    if (e instanceof AdminClientError) {
      err(e.message);
      return e.kind === 'no-server' ? EXIT_NO_SERVER : EXIT_FAILED;
    }
    throw e;
  }
}

function usageFailure(message: string): number {
  err(`${message} (see 'fts-admin --help')`);
  return EXIT_USAGE;
}

// `fts-admin sessions | head` must not die with an EPIPE stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? EXIT_OK);
  throw e;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    err(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = EXIT_FAILED;
  },
);
