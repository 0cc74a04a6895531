/**
 * Reading and judging the per-user rules files (--quota-file, --permissions-file, --rates-file, --networks-file), the same way at start-up
 * and at reload. Unlike the users file, a malformed line refuses the whole file: skipping it would leave
 * that user with the default quota or permissions without anyone noticing.
 */
import { decodeStrictUtf8 } from '../../protocol/strict-utf8.js';
import type { Config } from '../config.js';
import { parsePermissionsFile } from '../storage/permissions.js';
import { parseQuotaFile } from '../storage/quota-limits.js';
import { parseRatesFile } from '../rate-limits.js';
import { parseNetworksFile } from '../auth/networks.js';
import { ConfigFileUnusable, readConfigFile } from '../config-file.js';

export class RulesFileRefused extends Error {
  override name = 'RulesFileRefused';
}

/** A validated rules file: its text (what workers parse) and the users it names (`*` aside). */
export interface RulesFile {
  kind: string;
  file: string;
  text: string;
  names: readonly string[];
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
    ({ bytes } = await readConfigFile(file));
  } catch (err) {
    if (!(err instanceof ConfigFileUnusable)) throw err;
    throw new RulesFileRefused(`${kind} ${file}: ${err.message}`);
  }
  const decoded = decodeStrictUtf8(bytes);
  if ('badLine' in decoded) throw new RulesFileRefused(`${kind} ${file}: line ${decoded.badLine} is not valid UTF-8`);
  const { perUser, problems } = parse(decoded.text);
  if (problems.length > 0) {
    throw new RulesFileRefused(`${kind} ${file}: ${problems.map((p) => `line ${p.line}: ${p.reason}`).join('; ')}`);
  }
  return { kind, file, text: decoded.text, names: [...perUser.keys()] };
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

/** A rules file's lines for users the users file does not have: they apply to no one. */
export interface StrangerWarning {
  message: string;
  fields: { file: string; users: string[] };
}

/**
 * One warning per rules file that names users the users file does not define. Such a line is not an
 * error (a user removed from the users file may keep their line), but a misspelt name leaves the user it
 * was meant for with the defaults, which for permissions means every right: this must not pass unnoticed.
 */
export function strangersIn(rules: RulesFiles, isUser: (name: string) => boolean): StrangerWarning[] {
  const warnings: StrangerWarning[] = [];
  for (const f of [rules.quotas, rules.permissions, rules.rates, rules.networks]) {
    const strangers = f === null ? [] : f.names.filter((n) => !isUser(n));
    if (f === null || strangers.length === 0) continue;
    const shown = strangers.slice(0, 10).join(', ') + (strangers.length > 10 ? ` and ${strangers.length - 10} more` : '');
    warnings.push({
      message: `${f.kind} ${f.file} names ${strangers.length === 1 ? 'a user' : `${strangers.length} users`} not in the users file (${shown}): ${strangers.length === 1 ? 'its line applies' : 'their lines apply'} to no one; a misspelt name leaves the user it was meant for with the defaults`,
      fields: { file: f.file, users: strangers.slice(0, 100) },
    });
  }
  return warnings;
}

/** How many users of the users file have a line of their own in `f` (the reload's summary). */
export function knownUsersIn(f: RulesFile, isUser: (name: string) => boolean): number {
  return f.names.filter(isUser).length;
}
