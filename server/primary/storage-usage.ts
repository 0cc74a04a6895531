/**
 * `fts-admin usage`: what every user stores, measured from the storage by the primary (the same
 * measurement a worker makes for the quota and for the `usage` request).
 */
import { readdir } from 'node:fs/promises';
import { errnoOf, errnoReason, USERNAME_PATTERN, type UserPartial, type UserUsage } from '../../protocol/index.js';
import { parseUsers } from '../auth/users.js';
import { stagingRoot, userDirPath } from '../storage/paths.js';
import { listPartials } from '../storage/partials.js';
import { measureUsage } from '../storage/quota.js';
import { QuotaLimits } from '../storage/quota-limits.js';
import type { PolicyTexts } from './rules-files.js';

/**
 * The users of the users file and every user directory on the storage (a user removed from the file still
 * holds their files), in name order. `texts` are the validated users and quota files the workers use.
 */
export async function usageOfUsers(storage: string, quotaBytes: number | null, maxFiles: number | null, texts: Pick<PolicyTexts, 'users' | 'quotas'>): Promise<PerUser<UserUsage>> {
  const names = new Set(parseUsers(texts.users).users.names());
  let entries;
  try {
    entries = await readdir(storage, { withFileTypes: true });
  } catch (err) {
    throw new Error(`storage root ${storage}: ${errnoReason(err)}`);
  }
  // Internal directories (.fts) cannot be user names; neither can anything else that fails the pattern.
  for (const e of entries) if (e.isDirectory() && USERNAME_PATTERN.test(e.name)) names.add(e.name);
  const limits = QuotaLimits.fromFile(quotaBytes, maxFiles, texts.quotas);
  const result: UserUsage[] = [];
  const failed: string[] = [];
  for (const user of [...names].sort()) {
    try {
      const measured = await measureUsage(storage, user, userDirPath(storage, user));
      result.push({ user, ...measured, quota: limits.limitFor(user), maxFiles: limits.filesFor(user) });
    } catch (err) {
      failed.push(`${user}: ${(err as Error).message}`);
    }
  }
  return { result, failed };
}

/**
 * A report over every user, and the users it could not cover (`user: reason`): one unreadable directory
 * must not hide everyone else's figures.
 */
export interface PerUser<T> {
  result: T[];
  failed: string[];
}

/**
 * Every user's partial uploads (fts-admin partials), by user name: whoever has a staging directory, in
 * the users file or not. `ttlMs` is the server's --partial-ttl, to say when each may be swept.
 */
export async function partialsOfUsers(storage: string, ttlMs: number): Promise<PerUser<UserPartial>> {
  let entries;
  try {
    entries = await readdir(stagingRoot(storage), { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { result: [], failed: [] };
    throw new Error(`staging directory ${stagingRoot(storage)}: ${errnoReason(err)}`);
  }
  const users = entries.filter((e) => e.isDirectory() && USERNAME_PATTERN.test(e.name)).map((e) => e.name).sort();
  const result: UserPartial[] = [];
  const failed: string[] = [];
  for (const user of users) {
    try {
      for (const p of await listPartials(storage, user, ttlMs)) result.push({ user, ...p });
    } catch (err) {
      failed.push(`${user}: ${(err as Error).message}`);
    }
  }
  return { result, failed };
}
