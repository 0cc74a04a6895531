/**
 * The admin protocol, spoken over the primary's UNIX-domain socket (mode 0600, so only the server's own
 * user can reach it). Newline-delimited JSON: the client sends one request line; the server answers with
 * zero or more `event` lines and then exactly one final line with `ok` true or false, except for `drain`,
 * whose connection ends when the server exits (after an `{"event":"exited"}` line when it gets the chance).
 */

import { isIP } from 'node:net';
import { canonicalIp } from './ip-address.js';
import { SHA256_PATTERN, type PartialEntry, type StorageUsage } from './messages.js';
import { USERNAME_PATTERN } from './names.js';
import os from 'node:os';
import path from 'node:path';

/**
 * Default admin socket, shared by fts-server and fts-admin: a per-user private directory under
 * $XDG_RUNTIME_DIR (or the temp dir), so other local users cannot squat the path.
 */
export function defaultAdminSocket(): string {
  const runtime = process.env['XDG_RUNTIME_DIR'];
  const base = runtime && runtime.trim() !== '' ? runtime : os.tmpdir();
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(base, `fts-${uid}`, 'admin.sock');
}

export const ADMIN_MAX_LINE_BYTES = 64 * 1024;

export type AdminRequest =
  | { cmd: 'status' }
  | { cmd: 'sessions' }
  /** timeout: grace seconds for this drain (defaults to the server's --grace). */
  | { cmd: 'drain'; timeout?: number }
  | { cmd: 'reload' }
  | { cmd: 'kick'; session: string }
  | { cmd: 'restart-workers' }
  /**
   * The source addresses banned now (result: BanInfo[]); with `points`, also those with penalty points that
   * are not banned, each with its points (result: ScoredAddress[]).
   */
  | { cmd: 'bans'; points?: true }
  /** Lifts a ban (`address`: an IPv4 or IPv6 address; IPv4-mapped IPv6 is its IPv4 form). */
  | { cmd: 'unban'; address: string }
  /** What every user stores, and their quota (result: UserUsage[]). */
  | { cmd: 'usage' }
  /** Every user's partial uploads (result: UserPartial[]). */
  | { cmd: 'partials' }
  /** Removes one user's partial upload by key, as `discard` does for the user (result: DiscardedPartial). */
  | { cmd: 'discard'; user: string; key: string }
  /** The settings the server runs with, and where each came from (result: ConfigResult). */
  | { cmd: 'config' };

export const ADMIN_COMMANDS = ['status', 'sessions', 'drain', 'reload', 'kick', 'restart-workers', 'bans', 'unban', 'usage', 'partials', 'discard', 'config'] as const satisfies readonly AdminRequest['cmd'][];

/** Where a setting of the server came from. */
export type SettingSource = 'flag' | 'env' | 'default';

/** One setting of the running server (one fts-server flag). */
export interface ConfigSetting {
  /** The flag without its dashes (`port`). */
  name: string;
  /** The environment variable that may set it (`FTS_PORT`). */
  env: string;
  /** The value in force as text: as given (sizes keep their suffix), paths made absolute; '' = none. */
  value: string;
  from: SettingSource;
}

/** What `config` reports. */
export interface ConfigResult {
  settings: ConfigSetting[];
  /**
   * When the users file and the rules files (and TLS certificate) in force were read, epoch ms: the start,
   * or the last reload that was applied.
   */
  filesAppliedAt: number;
  /** False when the last reload was refused, so older files than the ones on disk may be in force. */
  lastReloadSuccessful: boolean;
}

/** One partial upload of one user, as `partials` reports it to the user (PROTOCOL.md §6.10). */
export interface UserPartial extends PartialEntry {
  user: string;
}

/** What an admin `discard` removed. */
export interface DiscardedPartial {
  bytes: number;
  name: string | null;
}

/** What one user stores (bytes), as the `usage` request reports it to the user; quota null = none. */
export interface UserUsage extends StorageUsage {
  user: string;
}

/** A banned source address, and how long its ban has left. */
export interface BanInfo {
  address: string;
  secondsLeft: number;
}

/**
 * A source address that is banned (`secondsLeft` > 0) or has penalty points within the ban window
 * (`secondsLeft` 0). A ban resets the points, so a banned address has the points it earned since.
 */
export interface ScoredAddress extends BanInfo {
  points: number;
}


export interface WorkerStatus {
  pid: number;
  /** Open TCP connections, authenticated or not. */
  connections: number;
  /** Authenticated sessions. */
  sessions: number;
  /** Uploads and downloads in flight. */
  transfers: number;
  /** Upload hook runs running and waiting (--upload-hook); absent without one. */
  hooks?: number;
  /** False when the worker did not answer in time (stopped or hung); its counts are then 0. */
  responding: boolean;
  /** Present (true) for a worker still starting: it does not listen or answer yet (responding is false). */
  starting?: boolean;
}

export interface StatusResult {
  pid: number;
  port: number | null;
  metricsPort: number | null;
  draining: boolean;
  uptimeSeconds: number;
  version: string;
  workers: WorkerStatus[];
  connections: number;
  sessions: number;
  transfers: number;
  workerRestarts: number;
  /**
   * The users file the server reads (absolute), so that `fts-admin passwd` can refuse to write another one
   * before writing anything. Added later: absent from older servers.
   */
  usersFile?: string;
  /**
   * Whether the storage is there and answers (its root holds `.fts/scram-salt-key`, statfs answers within 2 s); `problem`
   * says what is wrong when not. Added later: absent from older servers.
   */
  storage?: { ok: boolean; problem?: string };
}

export interface SessionInfo {
  id: string;
  user: string | null;
  remote: string;
  /** Pid of the worker holding the session. */
  worker: number;
  /** Current operation, or null when idle. */
  op: string | null;
  file: string | null;
  /** Bytes moved so far in the current operation. */
  bytes: number;
  /** When the session started (ISO 8601). */
  since: string;
}

export interface DrainProgress {
  event: 'progress';
  sessions: number;
  transfers: number;
  workers: number;
  /**
   * Of `workers`, how many did not answer in time (hung or stopped; their sessions and transfers are not
   * in the counts). Added later: absent from older servers.
   */
  notAnswering?: number;
  /** Upload hook runs the workers still wait for (running and queued); absent when there are none. */
  hooks?: number;
  secondsLeft: number;
}

/**
 * Rolling restart events, with the old and the new worker's pids. `replacing`: the new worker is starting,
 * or listens while the old one drains (repeated every few seconds until the old one has exited); `killed`:
 * the old one did not exit after draining and was killed (added later; the restart goes on); `restarted`:
 * the old one has exited.
 */
export type AdminEvent = DrainProgress | { event: 'exited' } | { event: 'replacing' | 'killed' | 'restarted'; old: number; new: number };

export type AdminFinal =
  /** `warning`: the result is incomplete (a worker did not answer); fts-admin prints it on stderr. */
  | { ok: true; result?: unknown; warning?: string }
  /**
   * `code`, where a client must tell one refusal from another without reading the words: `NO_SESSION`
   * (kick: every worker answered and none holds the session), `NOT_FOUND` (discard: no partial upload with
   * that key). Clients ignore codes they do not know.
   */
  | { ok: false; error: string; code?: string };

export type AdminLine = AdminEvent | AdminFinal;

export function encodeAdminLine(value: AdminRequest | AdminLine): string {
  return `${JSON.stringify(value)}\n`;
}

/** Pure splitter for newline-delimited JSON with a bounded line length. */
export class AdminLineDecoder {
  private buffered = '';

  push(chunk: string): unknown[] {
    this.buffered += chunk;
    const out: unknown[] = [];
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      if (line.trim() === '') continue;
      out.push(JSON.parse(line));
    }
    if (Buffer.byteLength(this.buffered) > ADMIN_MAX_LINE_BYTES) throw new Error('admin line too long');
    return out;
  }
}

/** Validates a request line received by the server. */
export function parseAdminRequest(value: unknown): AdminRequest {
  if (typeof value !== 'object' || value === null) throw new Error('request must be a JSON object');
  const v = value as Record<string, unknown>;
  switch (v['cmd']) {
    case 'status':
    case 'sessions':
    case 'reload':
    case 'restart-workers':
    case 'usage':
    case 'partials':
    case 'config':
      return { cmd: v['cmd'] };
    case 'bans': {
      const p = v['points'];
      if (p === undefined || p === false) return { cmd: 'bans' };
      if (p !== true) throw new Error('points must be true or false');
      return { cmd: 'bans', points: true };
    }
    case 'discard': {
      const { user, key } = v;
      if (typeof user !== 'string' || !USERNAME_PATTERN.test(user)) throw new Error('user must be a user name');
      if (typeof key !== 'string' || !SHA256_PATTERN.test(key)) throw new Error('key must be 64 lowercase hex digits');
      return { cmd: 'discard', user, key };
    }
    case 'unban': {
      const a = v['address'];
      if (typeof a !== 'string' || isIP(a) === 0) throw new Error('address must be an IPv4 or IPv6 address');
      return { cmd: 'unban', address: canonicalIp(a) };
    }
    case 'drain': {
      const t = v['timeout'];
      if (t === undefined) return { cmd: 'drain' };
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 86_400) throw new Error('timeout must be an integer from 0 to 86400');
      return { cmd: 'drain', timeout: t };
    }
    case 'kick': {
      const s = v['session'];
      if (typeof s !== 'string' || !/^[0-9a-f]{1,64}$/.test(s)) throw new Error('session must be a session id (hex)');
      return { cmd: 'kick', session: s };
    }
    default:
      throw new Error(`unknown command ${JSON.stringify(v['cmd'])}`);
  }
}
