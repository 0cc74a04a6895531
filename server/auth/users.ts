import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { USERNAME_PATTERN } from '../../protocol/index.js';

/**
 * The users file (id_passwd.txt): one `username:password` per line.
 *
 * - The line is split at the FIRST ':' so that passwords may contain ':' (usernames cannot).
 * - Blank lines and lines whose first non-blank character is '#' are ignored; a trailing '\r' (CRLF
 *   files) and a leading UTF-8 byte-order mark are stripped. Nothing else is trimmed: spaces in a
 *   password are part of it.
 * - A bad line is skipped and reported by its 1-based number. Problem messages never quote the line,
 *   because a malformed line may be nothing but a password.
 */

export interface UserProblem {
  line: number;
  reason: string;
}

export interface ParsedUsers {
  users: UserTable;
  problems: UserProblem[];
}

/**
 * Usernames and SHA-256 digests of their passwords. Only digests are kept after parsing, so a heap dump
 * or a stray log of the table never shows a password, and every comparison is of 32 bytes.
 */
export class UserTable {
  readonly #digests: ReadonlyMap<string, Buffer>;

  constructor(digests: ReadonlyMap<string, Buffer>) {
    this.#digests = digests;
  }

  get size(): number {
    return this.#digests.size;
  }

  has(user: string): boolean {
    return this.#digests.has(user);
  }

  /** Usernames in file order. */
  names(): string[] {
    return [...this.#digests.keys()];
  }

  /** See verifyPassword. */
  verify(user: string, password: string): boolean {
    const stored = this.#digests.get(user);
    const known = stored !== undefined;
    const equal = timingSafeEqual(digest(password), stored ?? DUMMY_DIGEST);
    // Both operands are always evaluated; the dummy is random, so no password can match it.
    return known && equal;
  }
}

/** Compared against when the user is unknown, so that case costs the same as a wrong password. */
const DUMMY_DIGEST = randomBytes(32);

function digest(password: string): Buffer {
  return createHash('sha256').update(password, 'utf8').digest();
}

/**
 * True when `user` exists and `password` is theirs. Unknown user and wrong password take the same path:
 * one SHA-256 and one constant-time comparison of 32 bytes.
 */
export function verifyPassword(table: UserTable, user: string, password: string): boolean {
  return table.verify(user, password);
}

/** Pure: parses the file's text. Duplicate usernames keep the first definition. */
export function parseUsers(text: string): ParsedUsers {
  const digests = new Map<string, Buffer>();
  const firstLine = new Map<string, number>();
  const problems: UserProblem[] = [];
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  lines.forEach((raw, index) => {
    const line = index + 1;
    const content = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = content.trimStart();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const colon = content.indexOf(':');
    if (colon < 0) {
      problems.push({ line, reason: 'no ":" separating username and password' });
      return;
    }
    const user = content.slice(0, colon);
    const password = content.slice(colon + 1);
    if (!USERNAME_PATTERN.test(user)) {
      problems.push({ line, reason: 'invalid username (1-64 of A-Z a-z 0-9 _ . -, not starting with "." or "-")' });
      return;
    }
    if (password === '') {
      problems.push({ line, reason: `empty password for user "${user}"` });
      return;
    }
    const first = firstLine.get(user);
    if (first !== undefined) {
      problems.push({ line, reason: `duplicate user "${user}" (line ${first} is used)` });
      return;
    }
    firstLine.set(user, line);
    digests.set(user, digest(password));
  });
  return { users: new UserTable(digests), problems };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads and parses the users file. An unreadable file or one that is not UTF-8 is an Error naming the
 * path (a startup failure for the operator, never a client reply). Invalid UTF-8 is refused rather than
 * decoded to U+FFFD, which would silently change a password.
 */
export async function loadUsers(path: string): Promise<ParsedUsers> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : String(err);
    throw new Error(`cannot read users file ${path}: ${code}`, { cause: err });
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new Error(`users file ${path} is not valid UTF-8`);
  }
  return parseUsers(text);
}
