import { parseRate } from './rate-limits.js';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { argumentProblem } from '../protocol/arg-errors.js';
import { badSwitchMessage, parseSwitch } from '../protocol/env-switch.js';
import { defaultAdminSocket, DEFAULT_MAX_HEADER_BYTES, type ConfigSetting, DEFAULT_PORT, HARD_MAX_HEADER_BYTES, MIN_MAX_HEADER_BYTES } from '../protocol/index.js';
import { parseNetworks } from './auth/networks.js';
import { DEFAULT_LOCK_WAIT_SECONDS, MAX_LOCK_WAIT_SECONDS } from './storage/locks.js';
import { parseFileCount, parseQuotaSize } from './storage/quota-limits.js';
import { parseDirectIoSetting } from '../protocol/direct-io.js';
import { PENALTY } from './worker/gate-client.js';
import { HOOK_EVENTS, type HookEvent } from './worker/upload-hooks.js';

/**
 * One frozen, validated configuration. Every flag can also come from an `FTS_*` environment variable
 * (flag wins over env, env over default). Validation returns the normalised value or throws a ConfigError
 * whose message names the flag and the bad value.
 */
export interface Config {
  readonly host: string;
  readonly port: number;
  readonly storage: string;
  readonly users: string;
  readonly workers: number;
  readonly adminSocket: string;
  readonly logLevel: LogLevel;
  /** Seconds in-flight transfers may take to finish once a drain starts. */
  readonly graceSeconds: number;
  /** Partial uploads older than this are removed by the staging sweep. */
  readonly partialTtlSeconds: number;
  readonly loginTimeoutSeconds: number;
  readonly idleTimeoutSeconds: number;
  readonly stallTimeoutSeconds: number;
  /** Seconds a publish or delete waits for its name's lock, held by another operation, before LOCKED. */
  readonly lockTimeoutSeconds: number;
  /** Bytes each user may store, published files and partial uploads together; null = no limit. */
  readonly quotaBytes: number | null;
  /** A program to run after each published upload (--upload-hook); null = none. */
  readonly uploadHook: string | null;
  readonly uploadHookTimeoutSeconds: number;
  /** The changes the upload hook runs after (--hook-events). */
  readonly hookEvents: readonly HookEvent[];
  /** The largest file a user may upload (--max-file-size); null = no limit. */
  readonly maxFileSize: number | null;
  /** The most published files a user may have (--max-files); null = no limit. */
  readonly maxFiles: number | null;
  /** Per-user quotas (USER:SIZE[/FILES] lines) that replace quotaBytes and maxFiles for the users they name; null = none. */
  readonly quotaFile: string | null;
  /** USER:PERMS lines (server/storage/permissions.ts); null: every user may do everything. */
  readonly permissionsFile: string | null;
  /** Per-user transfer rates (--rates-file), or null. */
  readonly ratesFile: string | null;
  /** Where each user may log in from (USER:NETWORKS lines); null = no file, anywhere. */
  readonly networksFile: string | null;
  /** Bytes per second each session may upload (data frames' payloads); null = no limit. */
  readonly maxUploadRate: number | null;
  /** Bytes per second each session may download; null = no limit. */
  readonly maxDownloadRate: number | null;
  /** Large files bypass the page cache where the file system allows it (protocol/direct-io.ts). */
  readonly directIo: boolean;
  readonly maxHeaderBytes: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  /** Sessions one user may have at once, across all workers (per node); 0 = no limit. */
  readonly maxSessionsPerUser: number;
  /** OpenSSH MaxStartups for unauthenticated connections: start:rate:full. */
  readonly maxStartups: { start: number; rate: number; full: number };
  /** Score at which a source address is banned (0 = never). */
  readonly banThreshold: number;
  readonly banWindowSeconds: number;
  readonly banSeconds: number;
  /** --ban-exempt: addresses that earn no penalty points, as networks text; null = none. */
  readonly banExempt: string | null;
  /** PEM certificate chain and key; both set = the service port speaks TLS only. */
  readonly tlsCert: string | null;
  readonly tlsKey: string | null;
  readonly metricsHost: string;
  /** null = no metrics endpoint; 0 = an ephemeral port. */
  readonly metricsPort: number | null;
  /** Lifetime of the session tokens issued at login, for password-less reconnects. */
  readonly tokenTtlSeconds: number;
  /** Every connection starts with a PROXY protocol v2 header (behind HAProxy `send-proxy-v2`). */
  readonly proxyProtocol: boolean;
  /** --proxy-from: the peers that may send PROXY headers, as networks text; null = any. */
  readonly proxyFrom: string | null;
  /** Every flag's value in force and where it came from (fts-admin config). */
  readonly settings: readonly ConfigSetting[];
  /** Accept a users file that group or others may read (refused by default, as rsync refuses secrets files). */
  readonly allowInsecureUsersFile: boolean;
  /** File holding the secret that signs session tokens; null = a random secret per server start. */
  readonly clusterSecretFile: string | null;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Default port of the Prometheus endpoint: beside the service port, and unassigned. */
export const DEFAULT_METRICS_PORT = 9421;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

interface FlagSpec {
  env: string;
  help: string;
  default: () => string;
  parse: (raw: string, flag: string) => unknown;
}

/** `orWord`: a word the flag also takes (parsed by the caller), named in the error so that nobody must guess it. */
function integer(min: number, max: number, orWord?: string) {
  const parse = (raw: string, flag: string): number => {
    // Digits only: Number() would also take 0x4e20, 1e4, 0b101 and surrounding spaces.
    const n = /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(`--${flag}: must be an integer from ${min} to ${max}${orWord ? ` or ${orWord}` : ''} (got "${raw}")`);
    }
    return n;
  };
  // Shown by --help, so that the limits are known before a value is refused.
  return Object.assign(parse, { range: `${min}-${max}${orWord ? ` or ${orWord}` : ''}` });
}

/** The accepted range of a flag's value, when its parser has one (integer()). */
function rangeOf(spec: FlagSpec): string | undefined {
  const range = (spec.parse as { range?: unknown }).range;
  return typeof range === 'string' ? range : undefined;
}

function nonEmpty(raw: string, flag: string): string {
  if (raw.trim() === '') throw new ConfigError(`--${flag}: must not be empty`);
  return raw;
}

function absolutePath(raw: string, flag: string): string {
  return path.resolve(nonEmpty(raw, flag));
}

function optionalPath(raw: string, flag: string): string | null {
  return raw.trim() === '' ? null : absolutePath(raw, flag);
}

/** The kernel limit for sun_path is 108 bytes including the NUL; Node 20 truncates silently beyond it. */
export const MAX_SOCKET_PATH_BYTES = 107;

function socketPath(raw: string, flag: string): string {
  const resolved = absolutePath(raw, flag);
  if (Buffer.byteLength(resolved) > MAX_SOCKET_PATH_BYTES) {
    throw new ConfigError(`--${flag}: path is ${Buffer.byteLength(resolved)} bytes; UNIX socket paths must be at most ${MAX_SOCKET_PATH_BYTES} bytes (got "${raw}")`);
  }
  return resolved;
}

/** A byte count: digits with an optional K, M, G or T (powers of 1024), or `off`. */
function quotaBytes(raw: string, flag: string): number | null {
  const bytes = parseQuotaSize(raw);
  if (bytes === undefined) {
    throw new ConfigError(`--${flag}: must be a number of bytes of at least 1, optionally with K, M, G or T (powers of 1024), or off (got "${raw}")`);
  }
  return bytes;
}

/** A number of files of at least 1, or `off`. */
function fileCount(raw: string, flag: string): number | null {
  const count = parseFileCount(raw);
  if (count === undefined) throw new ConfigError(`--${flag}: must be a number of files of at least 1, or off (got "${raw}")`);
  return count;
}

/** A rate: bytes per second as for quotaBytes, at least MIN_RATE_BYTES (rate-limits.ts), or `off`. */
function rateBytes(raw: string, flag: string): number | null {
  const bytes = parseRate(raw);
  if (bytes === undefined) {
    throw new ConfigError(`--${flag}: must be bytes per second of at least 64K, optionally with K, M, G or T (powers of 1024), or off (got "${raw}")`);
  }
  return bytes;
}

function hookEvents(raw: string, flag: string): HookEvent[] {
  const words = raw.split(',').map((w) => w.trim());
  const events = words.filter((w): w is HookEvent => (HOOK_EVENTS as readonly string[]).includes(w));
  if (events.length !== words.length) throw new ConfigError(`--${flag}: must be a comma-separated list of ${HOOK_EVENTS.join(', ')} (got "${raw}")`);
  return [...new Set(events)];
}

/** A --host only this machine can reach: the addresses 127.0.0.0/8 and ::1, or `localhost`. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return net.isIPv4(host) && host.startsWith('127.');
}

export const DEFAULT_HOOK_TIMEOUT_SECONDS = 60;
export const DEFAULT_METRICS_HOST = '127.0.0.1';

/**
 * A flag whose value is `word` (null) or a list of networks, kept as its text (workers and the primary build
 * the list from it): --proxy-from (`any`), --ban-exempt (`none`).
 */
function networkList(word: 'any' | 'none') {
  return (raw: string, flag: string): string | null => {
    const text = raw.trim().toLowerCase();
    if (text === word) return null;
    // `any` for --ban-exempt would exempt everyone: that is --ban-threshold 0, said plainly, not a list that
    // reads like a safelist.
    if (word === 'none' && text === 'any') throw new ConfigError(`--${flag}: any would exempt every address; use --ban-threshold 0 to never ban`);
    if (parseNetworks(raw) === undefined) throw new ConfigError(`--${flag}: must be ${word}, or IPv4/IPv6 addresses and CIDR prefixes separated by commas (got "${raw}")`);
    return raw;
  };
}

/** --metrics-port: a port, or `off` (parsed by the flag itself). */
const METRICS_PORT = integer(0, 65535, 'off');

export const FLAGS = {
  host: { env: 'FTS_HOST', help: 'address to listen on', default: () => '127.0.0.1', parse: nonEmpty },
  port: { env: 'FTS_PORT', help: 'TCP port (0 = ephemeral)', default: () => String(DEFAULT_PORT), parse: integer(0, 65535) },
  storage: { env: 'FTS_STORAGE', help: 'storage root directory', default: () => './server_storage', parse: absolutePath },
  users: { env: 'FTS_USERS', help: 'users file (username:password per line)', default: () => './id_passwd.txt', parse: absolutePath },
  workers: { env: 'FTS_WORKERS', help: 'worker processes', default: () => String(os.availableParallelism()), parse: integer(1, 256) },
  'admin-socket': { env: 'FTS_ADMIN_SOCKET', help: 'admin UNIX socket path', default: defaultAdminSocket, parse: socketPath },
  'log-level': {
    env: 'FTS_LOG_LEVEL',
    help: LOG_LEVELS.join('|'),
    default: () => 'info',
    parse: (raw: string, flag: string) => {
      if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new ConfigError(`--${flag}: must be one of ${LOG_LEVELS.join(', ')} (got "${raw}")`);
      return raw;
    },
  },
  grace: { env: 'FTS_GRACE', help: 'seconds transfers may finish during a drain', default: () => '30', parse: integer(0, 86_400) },
  'partial-ttl': { env: 'FTS_PARTIAL_TTL', help: 'seconds a partial upload is kept', default: () => '86400', parse: integer(1, 365 * 86_400) },
  'login-timeout': { env: 'FTS_LOGIN_TIMEOUT', help: 'seconds to authenticate', default: () => '30', parse: integer(1, 3600) },
  'idle-timeout': { env: 'FTS_IDLE_TIMEOUT', help: 'seconds an idle session is kept', default: () => '300', parse: integer(1, 86_400) },
  'stall-timeout': { env: 'FTS_STALL_TIMEOUT', help: 'seconds a transfer may make no progress', default: () => '60', parse: integer(1, 86_400) },
  'lock-timeout': {
    env: 'FTS_LOCK_TIMEOUT',
    help: "seconds an upload's publish, a delete or a rename waits for the file's lock before LOCKED",
    default: () => String(DEFAULT_LOCK_WAIT_SECONDS),
    parse: integer(1, MAX_LOCK_WAIT_SECONDS),
  },
  quota: {
    env: 'FTS_QUOTA',
    help: "bytes each user may store, published files and partial uploads together (K, M, G, T = powers of 1024; off = no limit); checked when an upload starts",
    default: () => 'off',
    parse: quotaBytes,
  },
  'max-file-size': {
    env: 'FTS_MAX_FILE_SIZE',
    help: 'largest file a user may upload (K, M, G, T = powers of 1024; off = no limit); refused with FILE_TOO_LARGE, and announced in the greeting so that clients refuse it before sending',
    default: () => 'off',
    parse: quotaBytes,
  },
  'max-files': {
    env: 'FTS_MAX_FILES',
    help: 'published files each user may have (off = no limit); checked when an upload of a new name starts',
    default: () => 'off',
    parse: fileCount,
  },
  'quota-file': {
    env: 'FTS_QUOTA_FILE',
    help: 'file of USER:SIZE or USER:SIZE/FILES lines: per-user quotas (as --quota and --max-files, or off) that replace --quota (and --max-files, when the line gives /FILES) for those users; re-read on reload',
    default: () => '',
    parse: optionalPath,
  },
  'permissions-file': {
    env: 'FTS_PERMISSIONS_FILE',
    help: 'file of USER:PERMS lines: what each user may do (l list, r read, w write, o overwrite, m rename, d delete; - none; *:PERMS for users not named; default all); re-read on reload',
    default: () => '',
    parse: optionalPath,
  },
  'networks-file': {
    env: 'FTS_NETWORKS_FILE',
    help: 'file of USER:NETWORKS lines: where each user may log in from (addresses and CIDR networks separated by commas, or any; *:… for users not named; default anywhere); re-read on reload',
    default: () => '',
    parse: optionalPath,
  },
  'rates-file': {
    env: 'FTS_RATES_FILE',
    help: 'file of USER:UPLOAD/DOWNLOAD lines (or USER:RATE for both): per-user transfer rates per session (as --max-upload-rate, or off) that replace the --max-*-rate flags for those users (*:… for users not named); re-read on reload',
    default: () => '',
    parse: optionalPath,
  },
  'upload-hook': {
    env: 'FTS_UPLOAD_HOOK',
    help: 'program to run after each published upload (and delete, rename and download, with --hook-events), with the file\'s path as its argument and FTS_EVENT, FTS_USER, FTS_NAME, FTS_PATH, FTS_SIZE, FTS_REMOTE set, and as the event has them FTS_SHA256, FTS_MTIME, FTS_OFFSET, FTS_LENGTH, FTS_FROM_NAME, FTS_FROM_PATH, FTS_REPLACED; it does not delay the reply',
    default: () => '',
    parse: optionalPath,
  },
  'hook-events': {
    env: 'FTS_HOOK_EVENTS',
    help: 'the operations --upload-hook runs after, a comma-separated list of upload, delete, rename and download (FTS_EVENT tells the program which)',
    default: () => 'upload',
    parse: hookEvents,
  },
  'upload-hook-timeout': { env: 'FTS_UPLOAD_HOOK_TIMEOUT', help: 'seconds an upload hook may run before it is killed', default: () => String(DEFAULT_HOOK_TIMEOUT_SECONDS), parse: integer(1, 86_400) },
  'max-upload-rate': {
    env: 'FTS_MAX_UPLOAD_RATE',
    help: 'bytes per second each session may upload (K, M, G, T = powers of 1024; at least 64K; off = no limit)',
    default: () => 'off',
    parse: rateBytes,
  },
  'max-download-rate': {
    env: 'FTS_MAX_DOWNLOAD_RATE',
    help: 'bytes per second each session may download (as --max-upload-rate)',
    default: () => 'off',
    parse: rateBytes,
  },
  'direct-io': {
    env: 'FTS_DIRECT_IO',
    help: 'on|off: read and write transfers of 8 MiB or more with O_DIRECT (ext4, xfs, btrfs), bypassing the page cache (a file sent again within 30 min is read through it)',
    default: () => 'on',
    parse: (raw: string, flag: string) => {
      const on = parseDirectIoSetting(raw);
      if (on === null) throw new ConfigError(`--${flag}: must be on or off (got "${raw}")`);
      return on;
    },
  },
  'max-header-bytes': {
    env: 'FTS_MAX_HEADER_BYTES',
    help: 'largest header frame accepted',
    default: () => String(DEFAULT_MAX_HEADER_BYTES),
    parse: integer(MIN_MAX_HEADER_BYTES, HARD_MAX_HEADER_BYTES),
  },
  'max-connections': { env: 'FTS_MAX_CONNECTIONS', help: 'connections in total, across all workers', default: () => '2000', parse: integer(1, 1_000_000) },
  'max-connections-per-ip': { env: 'FTS_MAX_CONNECTIONS_PER_IP', help: 'connections from one address', default: () => '50', parse: integer(1, 1_000_000) },
  'max-sessions-per-user': {
    env: 'FTS_MAX_SESSIONS_PER_USER',
    help: 'sessions one user may have at once (0 = no limit); a login over it gets TOO_MANY_CONNECTIONS',
    default: () => '0',
    parse: integer(0, 1_000_000),
  },
  'max-startups': {
    env: 'FTS_MAX_STARTUPS',
    help: 'unauthenticated connections start:rate:full (random early drop)',
    default: () => '10:30:100',
    parse: (raw: string, flag: string) => {
      const m = /^(\d+):(\d+):(\d+)$/.exec(raw.trim());
      const [start, rate, full] = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [NaN, NaN, NaN];
      if (!m || start < 1 || rate > 100 || full < start) throw new ConfigError(`--${flag}: must be start:rate:full with 1 <= start <= full and rate <= 100 (got "${raw}")`);
      return { start, rate, full };
    },
  },
  'ban-threshold': {
    env: 'FTS_BAN_THRESHOLD',
    help: `penalty score that bans an address (failed login ${PENALTY.authFailure}, illegal name ${PENALTY.badName}, unknown authentication mechanism ${PENALTY.unknownMechanism}, protocol violation ${PENALTY.protocolViolation}; 0 = never)`,
    default: () => '20',
    parse: integer(0, 1_000_000),
  },
  'ban-window': { env: 'FTS_BAN_WINDOW', help: 'seconds penalty points count', default: () => '600', parse: integer(1, 86_400) },
  'ban-duration': { env: 'FTS_BAN_DURATION', help: 'seconds a ban lasts', default: () => '900', parse: integer(1, 30 * 86_400) },
  'ban-exempt': {
    env: 'FTS_BAN_EXEMPT',
    help: 'addresses and CIDR prefixes, separated by commas, that earn no penalty points and so are never banned (monitoring, a trusted NAT); none = no exemption',
    default: () => 'none',
    parse: networkList('none'),
  },
  'proxy-from': {
    env: 'FTS_PROXY_FROM',
    help: 'with --proxy-protocol: the peers that may send PROXY headers, addresses and CIDR prefixes separated by commas (any = every peer); others are closed at once',
    default: () => 'any',
    parse: networkList('any'),
  },
  'tls-cert': { env: 'FTS_TLS_CERT', help: 'PEM certificate chain: serve TLS (with --tls-key)', default: () => '', parse: optionalPath },
  'tls-key': { env: 'FTS_TLS_KEY', help: 'PEM private key for --tls-cert', default: () => '', parse: optionalPath },
  'metrics-host': { env: 'FTS_METRICS_HOST', help: 'address of the Prometheus /metrics endpoint', default: () => DEFAULT_METRICS_HOST, parse: nonEmpty },
  'metrics-port': {
    env: 'FTS_METRICS_PORT',
    help: 'port of the /metrics endpoint (0 = ephemeral, off = disabled)',
    default: () => String(DEFAULT_METRICS_PORT),
    parse: Object.assign((raw: string, flag: string) => (raw.trim().toLowerCase() === 'off' ? null : METRICS_PORT(raw, flag)), { range: METRICS_PORT.range }),
  },
  'token-ttl': { env: 'FTS_TOKEN_TTL', help: 'seconds a session token stays valid for reconnects', default: () => '3600', parse: integer(1, 30 * 86_400) },
  'cluster-secret-file': {
    env: 'FTS_CLUSTER_SECRET_FILE',
    help: 'file with the secret shared by all nodes (signs session tokens; at least 32 bytes, mode 0600); empty = random per start',
    default: () => '',
    parse: (raw: string, flag: string) => (raw.trim() === '' ? null : absolutePath(raw, flag)),
  },
} as const satisfies Record<string, FlagSpec>;

type FlagName = keyof typeof FLAGS;

/** The settings in --help's order: the valued flags, then the on/off switches. */
const HELP_ORDER: readonly string[] = [...Object.keys(FLAGS), 'proxy-protocol', 'allow-insecure-users-file'];

export function usage(): string {
  const rows: Array<[string, string]> = (Object.entries(FLAGS) as Array<[FlagName, FlagSpec]>).map(([name, spec]) => {
    const range = rangeOf(spec);
    return [name, `${spec.help} [${spec.env}, default ${spec.default() || 'none'}${range === undefined ? '' : `, ${range}`}]`];
  });
  rows.push(
    ['proxy-protocol', 'expect a PROXY protocol v2 header on every connection (behind HAProxy) [FTS_PROXY_PROTOCOL=1]'],
    ['allow-insecure-users-file', 'accept a users file readable by group or others [FTS_ALLOW_INSECURE_USERS_FILE=1]'],
    ['help', 'show this help'],
    ['version', "print fts-server's version"],
  );
  const width = Math.max(...rows.map(([name]) => name.length));
  return ['Usage: fts-server [options]', '', 'Options (each also read from the environment variable shown):', ...rows.map(([name, text]) => `  --${name.padEnd(width)}  ${text}`)].join('\n');
}

/** A setting's place in --help's order (the on/off switches, read first, go where --help shows them). */
function settingOrder(name: string): number {
  const i = HELP_ORDER.indexOf(name);
  return i < 0 ? HELP_ORDER.length : i;
}

/** What to print instead of running the server. */
export type InfoRequest = 'help' | 'version';

/**
 * Parses argv and env into a frozen Config. Throws ConfigError for anything wrong. Returns 'help' or
 * 'version' for those flags, before anything else is judged: they must work on a host with no users file.
 */
export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Config | InfoRequest {
  const options = Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }]));
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { ...options, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' }, 'allow-insecure-users-file': { type: 'boolean' }, 'proxy-protocol': { type: 'boolean' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError(argumentProblem(err));
  }
  if (values['help']) return 'help';
  if (values['version']) return 'version';
  // An on/off variable with any other value is an error, like every other bad value: FTS_PROXY_PROTOCOL=yes
  // silently meaning "off" would leave a node behind HAProxy reading PROXY headers as requests.
  const onOff = (name: string): boolean => {
    const on = parseSwitch(env[name]);
    if (on === null) throw new ConfigError(badSwitchMessage(name, env[name] ?? ''));
    return on;
  };
  const settings: ConfigSetting[] = [];
  const onOffFlag = (name: 'proxy-protocol' | 'allow-insecure-users-file', variable: string): boolean => {
    const fromFlag = values[name] === true;
    const on = fromFlag || onOff(variable);
    const fromEnv = !fromFlag && env[variable] !== undefined && env[variable] !== '';
    settings.push({ name, env: variable, value: on ? 'on' : 'off', from: fromFlag ? 'flag' : fromEnv ? 'env' : 'default' });
    return on;
  };
  const proxyProtocol = onOffFlag('proxy-protocol', 'FTS_PROXY_PROTOCOL');
  const allowInsecureUsersFile = onOffFlag('allow-insecure-users-file', 'FTS_ALLOW_INSECURE_USERS_FILE');
  const pick = (name: FlagName): unknown => {
    const spec: FlagSpec = FLAGS[name];
    const fromFlag = values[name] as string | boolean | undefined;
    // An empty variable is an unset one, as fts and fts-admin read theirs (`FTS_PORT= fts-server`, or an
    // empty line in a unit's EnvironmentFile, means the default, not an error).
    const fromEnv = env[spec.env] === '' ? undefined : env[spec.env];
    const raw = typeof fromFlag === 'string' ? fromFlag : (fromEnv ?? spec.default());
    try {
      const parsed = spec.parse(raw, name);
      // A path is shown as the absolute one in force; anything else as given (`10M`, `off`, a network list).
      const value = typeof parsed === 'string' ? parsed : raw.trim();
      settings.push({ name, env: spec.env, value, from: typeof fromFlag === 'string' ? 'flag' : fromEnv !== undefined ? 'env' : 'default' });
      return parsed;
    } catch (err) {
      if (typeof fromFlag !== 'string' && fromEnv !== undefined && err instanceof ConfigError) {
        throw new ConfigError(`${spec.env}: ${err.message.replace(/^--[a-z-]+: /, '')}`);
      }
      throw err;
    }
  };
  const config = Object.freeze({
    host: pick('host') as string,
    port: pick('port') as number,
    storage: pick('storage') as string,
    users: pick('users') as string,
    workers: pick('workers') as number,
    adminSocket: pick('admin-socket') as string,
    logLevel: pick('log-level') as LogLevel,
    graceSeconds: pick('grace') as number,
    partialTtlSeconds: pick('partial-ttl') as number,
    loginTimeoutSeconds: pick('login-timeout') as number,
    idleTimeoutSeconds: pick('idle-timeout') as number,
    stallTimeoutSeconds: pick('stall-timeout') as number,
    lockTimeoutSeconds: pick('lock-timeout') as number,
    quotaBytes: pick('quota') as number | null,
    maxFiles: pick('max-files') as number | null,
    maxFileSize: pick('max-file-size') as number | null,
    quotaFile: pick('quota-file') as string | null,
    permissionsFile: pick('permissions-file') as string | null,
    ratesFile: pick('rates-file') as string | null,
    networksFile: pick('networks-file') as string | null,
    uploadHook: pick('upload-hook') as string | null,
    uploadHookTimeoutSeconds: pick('upload-hook-timeout') as number,
    hookEvents: pick('hook-events') as HookEvent[],
    maxUploadRate: pick('max-upload-rate') as number | null,
    maxDownloadRate: pick('max-download-rate') as number | null,
    directIo: pick('direct-io') as boolean,
    maxHeaderBytes: pick('max-header-bytes') as number,
    maxConnections: pick('max-connections') as number,
    maxConnectionsPerIp: pick('max-connections-per-ip') as number,
    maxSessionsPerUser: pick('max-sessions-per-user') as number,
    maxStartups: pick('max-startups') as { start: number; rate: number; full: number },
    banThreshold: pick('ban-threshold') as number,
    banWindowSeconds: pick('ban-window') as number,
    banSeconds: pick('ban-duration') as number,
    banExempt: pick('ban-exempt') as string | null,
    tlsCert: pick('tls-cert') as string | null,
    tlsKey: pick('tls-key') as string | null,
    metricsHost: pick('metrics-host') as string,
    metricsPort: pick('metrics-port') as number | null,
    tokenTtlSeconds: pick('token-ttl') as number,
    clusterSecretFile: pick('cluster-secret-file') as string | null,
    allowInsecureUsersFile,
    proxyProtocol,
    proxyFrom: pick('proxy-from') as string | null,
    settings: Object.freeze(settings.sort((a, b) => settingOrder(a.name) - settingOrder(b.name))),
  });
  if ((config.tlsCert === null) !== (config.tlsKey === null)) throw new ConfigError('--tls-cert and --tls-key must be given together');
  return config;
}
