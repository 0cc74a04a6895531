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

/** What a rules file's parser gives back: the users it names, and its malformed lines. */
type RulesParser = (text: string) => { perUser: ReadonlyMap<string, unknown>; problems: ReadonlyArray<{ line: number; reason: string }> };

/** Reads `file`, or null when it is not configured; RulesFileRefused (naming `kind`) when it is bad. */
async function readRulesFile(kind: string, file: string | null, parse: RulesParser): Promise<RulesFile | null> {
  if (file === null) return null;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new RulesFileRefused(`${kind} ${file}: ${errnoReason(err)}`);
  }
  const decoded = decodeStrictUtf8(bytes);
  if ('badLine' in decoded) throw new RulesFileRefused(`${kind} ${file}: line ${decoded.badLine} is not valid UTF-8`);
  const { perUser, problems } = parse(decoded.text);
  if (problems.length > 0) {
    throw new RulesFileRefused(`${kind} ${file}: ${problems.map((p) => `line ${p.line}: ${p.reason}`).join('; ')}`);
  }
  return { text: decoded.text, users: perUser.size };
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
  const quotas = await readRulesFile('quota file', config.quotaFile, parseQuotaFile);
  const permissions = await readRulesFile('permissions file', config.permissionsFile, parsePermissionsFile);
  const rates = await readRulesFile('rates file', config.ratesFile, parseRatesFile);
  const networks = await readRulesFile('networks file', config.networksFile, parseNetworksFile);
  return { quotas, permissions, rates, networks };
}
