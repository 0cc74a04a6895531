/**
 * Client side of the admin protocol: one request per connection over the primary's UNIX socket.
 * Knows nothing about commands beyond the framing rules in protocol/admin.ts; the CLI interprets results.
 */

import { lstatSync, statSync } from 'node:fs';
import net from 'node:net';
import { AdminLineDecoder, encodeAdminLine, errnoOf, type AdminEvent, type AdminFinal, type AdminRequest } from '../protocol/index.js';

/**
 * Why a request failed without a server reply:
 * - `no-server`: nothing is listening at the socket (ENOENT, ECONNREFUSED, ENOTSOCK on connect);
 * - `connect`: connecting failed for another reason (permissions, path too long, ...);
 * - `broken`: the connection failed or closed before the final line;
 * - `timeout`: no final line in time;
 * - `protocol`: the server sent something that is not an admin protocol line.
 */
export type AdminFailureKind = 'no-server' | 'connect' | 'broken' | 'timeout' | 'protocol';

export class AdminClientError extends Error {
  constructor(
    readonly kind: AdminFailureKind,
    message: string,
    /** The errno code of the underlying socket error, when there was one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = 'AdminClientError';
  }
}

const NO_SERVER_CODES: Readonly<Record<string, string>> = {
  ENOENT: 'no such socket',
  ECONNREFUSED: 'connection refused',
  ENOTSOCK: 'not a socket',
};

/**
 * Linux answers a connect to a path that is not a socket (a file, a directory) with ECONNREFUSED, which
 * reads as a server that died: say what the path is instead.
 */
function notASocket(socketPath: string): string | undefined {
  try {
    const st = statSync(socketPath); // through a link, as connect goes
    if (st.isSocket()) return undefined;
    return `${st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'a special file'}, not a socket`;
  } catch {
    return undefined;
  }
}

function connectFailure(socketPath: string, err: unknown): AdminClientError {
  const code = errnoOf(err);
  const reason = code === undefined ? undefined : code === 'ECONNREFUSED' ? (notASocket(socketPath) ?? NO_SERVER_CODES[code]) : NO_SERVER_CODES[code];
  if (reason !== undefined) {
    return new AdminClientError('no-server', `no fts-server is running at ${socketPath} (${reason})`, code);
  }
  const detail = code === 'EACCES' || code === 'EPERM'
    ? 'permission denied (the socket only accepts the server\'s own user)'
    : err instanceof Error ? err.message : String(err);
  return new AdminClientError('connect', `cannot connect to ${socketPath}: ${detail}`, code);
}

export interface AdminRequestOptions {
  /** Called for each event line, in order, before the final line. */
  onEvent?: (event: AdminEvent) => void;
  /**
   * Milliseconds to wait for the final line, restarted by each event line (so a long restart-workers
   * that keeps reporting progress is not cut off). 0 or absent: wait forever.
   */
  timeoutMs?: number;
  /**
   * For requests without a final ok line (drain): resolve with null when the server closes the
   * connection, however it closes, instead of treating the close as a broken connection.
   */
  untilClose?: boolean;
}

function isEvent(line: Record<string, unknown>): line is Record<string, unknown> & AdminEvent {
  switch (line['event']) {
    case 'progress':
      return ['sessions', 'transfers', 'workers', 'secondsLeft'].every((k) => typeof line[k] === 'number')
        && (line['notAnswering'] === undefined || typeof line['notAnswering'] === 'number');
    case 'replacing':
    case 'killed':
    case 'restarted':
      return typeof line['old'] === 'number' && typeof line['new'] === 'number';
    case 'exited':
      return true;
    default:
      return false;
  }
}

function asFinal(line: Record<string, unknown>): AdminFinal | null {
  if (line['ok'] === true) return typeof line['warning'] === 'string' ? { ok: true, result: line['result'], warning: line['warning'] } : { ok: true, result: line['result'] };
  if (line['ok'] === false) {
    const error = typeof line['error'] === 'string' ? line['error'] : 'the server reported an unspecified error';
    const code = line['code'];
    return typeof code === 'string' ? { ok: false, error, code } : { ok: false, error };
  }
  return null;
}

/**
 * The server creates its socket as its own user, with mode 0600, so for anyone but root a socket owned by
 * another user is not their server's: someone who could rename a directory on the path may have put it
 * there to answer reload or kick with a false "ok". Nothing is sent to it. Root names the service's socket
 * explicitly (admin/cli.ts) and talks to it whoever owns it.
 */
function foreignOwner(socketPath: string): AdminClientError | null {
  const euid = process.geteuid?.();
  if (euid === undefined || euid === 0) return null;
  let uid: number;
  try {
    uid = lstatSync(socketPath).uid;
  } catch {
    return null; // connecting reports what is wrong with the path
  }
  return uid === euid ? null : new AdminClientError('connect', `cannot connect to ${socketPath}: it belongs to uid ${uid}, not to you (uid ${euid}), so it is not your fts-server's socket; nothing was sent`);
}

/**
 * Sends one request and collects the reply. Resolves with the final line (ok true or false; an
 * ok:false reply is not an exception), or with null when `untilClose` is set and the connection ended.
 * Rejects with AdminClientError when there is no usable reply.
 */
export function adminRequest(socketPath: string, request: AdminRequest, options: AdminRequestOptions = {}): Promise<AdminFinal | null> {
  const foreign = foreignOwner(socketPath);
  if (foreign !== null) return Promise.reject(foreign);
  return new Promise((resolve, reject) => {
    const decoder = new AdminLineDecoder();
    const socket = net.createConnection({ path: socketPath });
    socket.setEncoding('utf8');
    let connected = false;
    let settled = false;
    let final: AdminFinal | null = null;
    let timer: NodeJS.Timeout | undefined;

    const finish = (err: AdminClientError | null, value: AdminFinal | null = null): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      socket.destroy();
      if (err !== null) reject(err);
      else resolve(value);
    };

    const armTimer = (): void => {
      if (!options.timeoutMs) return;
      if (timer !== undefined) clearTimeout(timer);
      const seconds = Math.round(options.timeoutMs / 1000);
      timer = setTimeout(() => {
        finish(new AdminClientError('timeout', `no reply from the server within ${seconds} s`));
      }, options.timeoutMs);
    };

    socket.on('connect', () => {
      connected = true;
      armTimer();
      socket.write(encodeAdminLine(request));
    });

    socket.on('data', (chunk: string) => {
      if (settled) return;
      let lines: unknown[];
      try {
        lines = decoder.push(chunk);
      } catch (err) {
        finish(new AdminClientError('protocol', `bad reply from the server: ${err instanceof Error ? err.message : String(err)}`));
        return;
      }
      for (const line of lines) {
        if (typeof line !== 'object' || line === null || Array.isArray(line)) {
          finish(new AdminClientError('protocol', 'bad reply from the server: a line is not a JSON object'));
          return;
        }
        const record = line as Record<string, unknown>;
        if ('event' in record) {
          // Unknown or malformed events are skipped: a newer server may send events this client predates.
          if (isEvent(record)) {
            armTimer();
            options.onEvent?.(record);
            if (settled) return;
          }
          continue;
        }
        const f = asFinal(record);
        if (f === null) {
          finish(new AdminClientError('protocol', 'bad reply from the server: a line is neither an event nor a final reply'));
          return;
        }
        if (options.untilClose && f.ok) {
          // Not expected for drain, but harmless: keep following the stream until the server goes.
          final = f;
          continue;
        }
        finish(null, f);
        return;
      }
    });

    socket.on('error', (err) => {
      if (!connected) {
        finish(connectFailure(socketPath, err));
        return;
      }
      if (options.untilClose) {
        // The server exiting may reset the connection rather than close it cleanly.
        finish(null, final);
        return;
      }
      finish(new AdminClientError('broken', `connection to the server failed: ${err.message}`, errnoOf(err)));
    });

    socket.on('close', () => {
      if (options.untilClose) finish(null, final);
      else finish(new AdminClientError('broken', 'the server closed the connection before replying'));
    });
  });
}

/** Whether something accepts connections at the socket right now (true), or nothing is there (false). */
export function probeSocket(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ path: socketPath });
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', (err) => {
      socket.destroy();
      const code = errnoOf(err);
      // Anything other than "nothing there" (say EAGAIN, a full backlog) still means a live listener.
      resolve(!(code !== undefined && code in NO_SERVER_CODES));
    });
  });
}

/** Polls until nothing accepts connections at the socket. Resolves false if still up after timeoutMs. */
export async function waitForSocketGone(socketPath: string, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await probeSocket(socketPath))) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
