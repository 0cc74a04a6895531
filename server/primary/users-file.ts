/**
 * Reading and judging the users file, the same way at start-up and at `fts-admin reload`: a reload that
 * accepted what a start refuses would leave a server that the next restart cannot bring back.
 */
import { decodeStrictUtf8 } from '../../protocol/strict-utf8.js';
import { parseUsers, type ParsedUsers } from '../auth/users.js';
import { ConfigFileUnusable, exposedMode, readConfigFile } from '../config-file.js';

export interface UsersFile extends ParsedUsers {
  text: string;
  /** Problems that do not stop the table from being used, with fields for the log line. */
  warnings: UsersFileWarning[];
}

export interface UsersFileWarning {
  message: string;
  fields: Record<string, string | number>;
}

/** The file cannot be used at all: unreadable, or readable by group or others without the override. */
export class UsersFileRefused extends Error {
  override name = 'UsersFileRefused';
}

export async function readUsersFile(file: string, allowInsecure: boolean): Promise<UsersFile> {
  let bytes: Buffer;
  let mode: number;
  // One open file for both: `fts-admin passwd` replaces the file by rename, and the mode judged must be
  // that of the text read.
  try {
    ({ bytes, mode } = await readConfigFile(file));
  } catch (err) {
    if (!(err instanceof ConfigFileUnusable)) throw err;
    throw new UsersFileRefused(`users file ${file}: ${err.message}`);
  }
  const decoded = decodeStrictUtf8(bytes);
  if ('badLine' in decoded) throw new UsersFileRefused(`users file ${file}: line ${decoded.badLine} is not valid UTF-8 (passwords are read as UTF-8; re-save the file as UTF-8)`);
  const { text } = decoded;
  const warnings: UsersFileWarning[] = [];
  const exposed = exposedMode(mode);
  if (exposed !== null) {
    const problem = `users file ${file} is ${exposed}; run chmod 600 on it`;
    if (!allowInsecure) throw new UsersFileRefused(`${problem}, or start with --allow-insecure-users-file`);
    warnings.push({ message: problem, fields: { users: file, mode: mode.toString(8) } });
  }
  const parsed = parseUsers(text);
  const plaintext = parsed.users.plaintextCount;
  if (plaintext > 0) {
    warnings.push({ message: `the users file holds ${plaintext} plaintext password(s); replace them with hashed entries (fts-admin passwd USER)`, fields: { plaintext } });
  }
  if (parsed.users.size === 0) warnings.push({ message: `the users file ${file} defines no valid user: nobody can log in`, fields: { users: file } });
  return { ...parsed, text, warnings };
}
