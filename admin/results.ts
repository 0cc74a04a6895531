/**
 * Shape checks for the `result` of ok replies: the server is trusted to be honest but not to be the same
 * version as this tool, so a reply is checked before it is formatted rather than cast blindly.
 */

import type { BanInfo, ConfigResult, ConfigSetting, DiscardedPartial, ScoredAddress, SessionInfo, StatusResult, UserPartial, UserUsage, WorkerStatus } from '../protocol/index.js';

type Rec = Record<string, unknown>;

function isRecord(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

function isNumOrNull(v: unknown): v is number | null {
  return v === null || isNum(v);
}

function isStrOrNull(v: unknown): v is string | null {
  return v === null || typeof v === 'string';
}

function isWorkerStatus(v: unknown): v is WorkerStatus {
  return isRecord(v) && isNum(v['pid']) && isNum(v['connections']) && isNum(v['sessions']) && isNum(v['transfers'])
    && typeof v['responding'] === 'boolean';
}

export function isStatusResult(v: unknown): v is StatusResult {
  return isRecord(v) && isNum(v['pid']) && isNumOrNull(v['port']) && isNumOrNull(v['metricsPort'])
    && typeof v['draining'] === 'boolean' && isNum(v['uptimeSeconds']) && typeof v['version'] === 'string'
    && Array.isArray(v['workers']) && v['workers'].every(isWorkerStatus)
    && isNum(v['connections']) && isNum(v['sessions']) && isNum(v['transfers']) && isNum(v['workerRestarts'])
    && (v['usersFile'] === undefined || typeof v['usersFile'] === 'string')
    && (v['storage'] === undefined || (isRecord(v['storage']) && typeof v['storage']['ok'] === 'boolean' && (v['storage']['problem'] === undefined || typeof v['storage']['problem'] === 'string')));
}

function isSessionInfo(v: unknown): v is SessionInfo {
  return isRecord(v) && typeof v['id'] === 'string' && isStrOrNull(v['user']) && typeof v['remote'] === 'string'
    && isNum(v['worker']) && isStrOrNull(v['op']) && isStrOrNull(v['file']) && isNum(v['bytes'])
    && typeof v['since'] === 'string';
}

export function isSessionList(v: unknown): v is SessionInfo[] {
  return Array.isArray(v) && v.every(isSessionInfo);
}

export function isUsageList(v: unknown): v is UserUsage[] {
  return Array.isArray(v) && v.every((u) => isRecord(u) && typeof u['user'] === 'string' && isNum(u['used']) && isNum(u['files']) && isNum(u['partial']) && isNumOrNull(u['quota']) && (u['maxFiles'] === undefined || isNumOrNull(u['maxFiles'])));
}

const HEX64 = /^[0-9a-f]{64}$/;

export function isPartialList(v: unknown): v is UserPartial[] {
  return Array.isArray(v) && v.every((p) => isRecord(p) && typeof p['user'] === 'string' && typeof p['key'] === 'string' && HEX64.test(p['key'])
    && (p['name'] === undefined || typeof p['name'] === 'string') && (p['size'] === undefined || isNum(p['size']))
    && isNum(p['staged']) && isNum(p['bytes']) && isNum(p['mtime']) && isNum(p['expires']));
}

export function isDiscarded(v: unknown): v is DiscardedPartial {
  return isRecord(v) && isNum(v['bytes']) && isStrOrNull(v['name']);
}

export function isBanList(v: unknown): v is BanInfo[] {
  return Array.isArray(v) && v.every((b) => isRecord(b) && typeof b['address'] === 'string' && isNum(b['secondsLeft']));
}

/** A `bans --points` result; false also for a server that ignores `points` (it lists no points). */
export function isScoredList(v: unknown): v is ScoredAddress[] {
  return Array.isArray(v) && v.every((b) => isRecord(b) && typeof b['address'] === 'string' && isNum(b['secondsLeft']) && isNum(b['points']));
}

export interface ReloadResult {
  users: number;
  warnings: string[];
  tlsReloaded: boolean;
  /** The users file the server reads (absent from older servers). */
  usersFile?: string;
  /** Users the quota file names (present only when the server has --quota-file). */
  quotaUsers?: number;
  /** Users the permissions file names (present only when the server has --permissions-file). */
  permissionUsers?: number;
  /** Users the rates file names (present only when the server has --rates-file). */
  rateUsers?: number;
  /** Users the networks file names (present only when the server has --networks-file). */
  networkUsers?: number;
  /** Workers that confirmed the new files are in force (absent from an older server, which did not wait). */
  workersConfirmed?: number;
}

/** The `reload` result: `{ users, tlsReloaded?, usersFile?, quotaUsers?, permissionUsers?, rateUsers?, networkUsers?, workersConfirmed?, warnings? }`. */
export function asReloadResult(v: unknown): ReloadResult | null {
  if (!isRecord(v) || !isNum(v['users'])) return null;
  const w = v['warnings'];
  if (w !== undefined && w !== null && !Array.isArray(w)) return null;
  const warnings = Array.isArray(w) ? w.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))) : [];
  const usersFile = typeof v['usersFile'] === 'string' ? { usersFile: v['usersFile'] } : {};
  const quotaUsers = isNum(v['quotaUsers']) ? { quotaUsers: v['quotaUsers'] } : {};
  const permissionUsers = isNum(v['permissionUsers']) ? { permissionUsers: v['permissionUsers'] } : {};
  const rateUsers = isNum(v['rateUsers']) ? { rateUsers: v['rateUsers'] } : {};
  const networkUsers = isNum(v['networkUsers']) ? { networkUsers: v['networkUsers'] } : {};
  const workersConfirmed = isNum(v['workersConfirmed']) ? { workersConfirmed: v['workersConfirmed'] } : {};
  return { users: v['users'], warnings, tlsReloaded: v['tlsReloaded'] === true, ...usersFile, ...quotaUsers, ...permissionUsers, ...rateUsers, ...networkUsers, ...workersConfirmed };
}

function isConfigSetting(v: unknown): v is ConfigSetting {
  return isRecord(v) && typeof v['name'] === 'string' && typeof v['env'] === 'string' && typeof v['value'] === 'string'
    && (v['from'] === 'flag' || v['from'] === 'env' || v['from'] === 'default');
}

export function isConfigResult(v: unknown): v is ConfigResult {
  return isRecord(v) && Array.isArray(v['settings']) && v['settings'].every(isConfigSetting)
    && isNum(v['filesAppliedAt']) && typeof v['lastReloadSuccessful'] === 'boolean';
}
