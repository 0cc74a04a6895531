/**
 * Reading and judging the per-user rules files (--quota-file, --permissions-file, --rates-file, --networks-file), the same way at start-up
 * and at reload. Unlike the users file, a malformed line refuses the whole file: skipping it would leave
 * that user with the default quota or permissions without anyone noticing.
 */
import { readFile } from 'node:fs/promises';
import { errnoReason } from '../../protocol/index.js';
import { decodeStrictUtf8 } from '../../protocol/strict-utf8.js';
import type { Config } from '../config.js';
import { parsePermissionsFile } from '../storage/permissions.js';
import { parseQuotaFile } from '../storage/quota-limits.js';
import { parseRatesFile } from '../rate-limits.js';
import { parseNetworksFile } from '../auth/networks.js';

export class RulesFileRefused extends Error {
  override name = 'RulesFileRefused';
}

/** A validated rules file: its text (what workers parse) and the number of users it names. */
export interface RulesFile {
  text: string;
  users: number;
}

/** The validated texts the workers use: the users file, and the rules files (null when not configured). */
export interface PolicyTexts {
  users: string;
  quotas: string | null;
  permissions: string | null;
  rates: string | null;
  networks: string | null;
}

async function readRulesFile(kind: string, file: string, parse: (text: string) => { users: number; problems: Array<{ line: number; reason: string }> }): Promise<RulesFile> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new RulesFileRefused(`${kind} ${file}: ${errnoReason(err)}`);
  }
  const decoded = decodeStrictUtf8(bytes);
  if ('badLine' in decoded) throw new RulesFileRefused(`${kind} ${file}: line ${decoded.badLine} is not valid UTF-8`);
  const { users, problems } = parse(decoded.text);
  if (problems.length > 0) {
    throw new RulesFileRefused(`${kind} ${file}: ${problems.map((p) => `line ${p.line}: ${p.reason}`).join('; ')}`);
  }
  return { text: decoded.text, users };
}

export function readQuotaFile(file: string): Promise<RulesFile> {
  return readRulesFile('quota file', file, (text) => {
    const { perUser, problems } = parseQuotaFile(text);
    return { users: perUser.size, problems };
  });
}

export function readPermissionsFile(file: string): Promise<RulesFile> {
  return readRulesFile('permissions file', file, (text) => {
    const { perUser, problems } = parsePermissionsFile(text);
    return { users: perUser.size, problems };
  });
}

export function readRatesFile(file: string): Promise<RulesFile> {
  return readRulesFile('rates file', file, (text) => {
    const { perUser, problems } = parseRatesFile(text);
    return { users: perUser.size, problems };
  });
}

export function readNetworksFile(file: string): Promise<RulesFile> {
  return readRulesFile('networks file', file, (text) => {
    const { perUser, problems } = parseNetworksFile(text);
    return { users: perUser.size, problems };
  });
}

/** The configured rules files, validated. */
export interface RulesFiles {
  quotas: RulesFile | null;
  permissions: RulesFile | null;
  rates: RulesFile | null;
  networks: RulesFile | null;
}

/** The configured rules files, read and validated (RulesFileRefused names the first bad one). */
export async function readRulesFiles(config: Pick<Config, 'quotaFile' | 'permissionsFile' | 'ratesFile' | 'networksFile'>): Promise<RulesFiles> {
  const quotas = config.quotaFile === null ? null : await readQuotaFile(config.quotaFile);
  const permissions = config.permissionsFile === null ? null : await readPermissionsFile(config.permissionsFile);
  const rates = config.ratesFile === null ? null : await readRatesFile(config.ratesFile);
  const networks = config.networksFile === null ? null : await readNetworksFile(config.networksFile);
  return { quotas, permissions, rates, networks };
}
