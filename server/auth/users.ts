import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { USERNAME_PATTERN, USERNAME_RULE } from '../../protocol/index.js';
import { checkPasswordAsync, deriveVerifierAsync, DEFAULT_ITERATIONS, parseVerifier, saltedPasswordAsync, SCRAM_PREFIX, type ScramVerifier } from './scram.js';

/**
 * The users file (id_passwd.txt): one `username:password` per line, where the password is either the
 * plaintext (the original format) or a SCRAM-SHA-256 verifier in PostgreSQL's format
 * (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, written by `fts-admin passwd`). A plaintext
 * password that itself looks like a verifier is read as a verifier.
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

/** One user's credential: a plaintext entry (the original format) or a SCRAM-SHA-256 verifier. */
type Credential = { kind: 'plain'; digest: Buffer; password: string; derived?: Promise<ScramVerifier> } | { kind: 'scram'; verifier: ScramVerifier };

/**
 * Usernames and their credentials. Plaintext entries are compared through SHA-256 digests (so every
 * comparison is of 32 bytes); their text is kept only to derive a SCRAM verifier on demand, since the
 * file itself holds it anyway. Hashed entries never reveal the password.
 */
export class UserTable {
  readonly #entries: ReadonlyMap<string, Credential>;
  /**
   * The iteration counts of the file's verifiers, in file order (empty when it has none). A name whose
   * verifier the server makes itself (an unknown user's fake one, a plaintext entry's derived one) gets one
   * of them, picked by a keyed hash of the name (iterationsFor): an unknown name then announces the counts
   * real ones do, as often as they do, and the same one every time. And where the file has verifiers,
   * checking a `plain` login costs the PBKDF2 of the count the name announces whatever the name, so that
   * the time a login takes does not tell which users exist either.
   */
  readonly #verifierCounts: readonly number[];

  constructor(entries: ReadonlyMap<string, Credential>) {
    this.#entries = entries;
    const counts: number[] = [];
    for (const c of entries.values()) if (c.kind === 'scram') counts.push(c.verifier.iterations);
    this.#verifierCounts = counts;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** How many entries are plaintext passwords (the server warns about them at start). */
  get plaintextCount(): number {
    let n = 0;
    for (const c of this.#entries.values()) if (c.kind === 'plain') n++;
    return n;
  }

  has(user: string): boolean {
    return this.#entries.has(user);
  }

  /**
   * Bytes that identify the user's entry as it is now (the password's SHA-256, or the verifier's salt,
   * iteration count and keys), or null for an unknown user. Session tokens are bound to them (tokens.ts),
   * so that a changed password ends the tokens issued before.
   */
  credentialOf(user: string): Buffer | null {
    const entry = this.#entries.get(user);
    if (entry === undefined) return null;
    if (entry.kind === 'plain') return Buffer.concat([Buffer.from('plain:'), entry.digest]);
    const { salt, iterations, storedKey, serverKey } = entry.verifier;
    return Buffer.concat([Buffer.from(`scram:${iterations}:${salt.length}:`), salt, storedKey, serverKey]);
  }

  /** Usernames in file order. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  /**
   * The iteration count SCRAM announces for `user` when the server makes its verifier (an unknown user, a
   * plaintext entry): DEFAULT_ITERATIONS when the file has no verifiers, else one of theirs (see
   * #verifierCounts), picked under `key` (the salt key, the same on every node and after restarts).
   */
  iterationsFor(user: string, key: Buffer): number {
    const counts = this.#verifierCounts;
    if (counts.length === 0) return DEFAULT_ITERATIONS;
    const pick = createHmac('sha256', key).update(`scram-iterations:${user}`).digest().readUInt32BE(0);
    return counts[pick % counts.length]!;
  }

  /** See verifyPassword. */
  async verify(user: string, password: string, key: Buffer): Promise<boolean> {
    const entry = this.#entries.get(user);
    if (entry?.kind === 'scram') return checkPasswordAsync(entry.verifier, password);
    if (this.#verifierCounts.length > 0) await saltedPasswordAsync(password, DUMMY_SALT, this.iterationsFor(user, key));
    const equal = timingSafeEqual(digest(password), entry?.digest ?? DUMMY_DIGEST);
    // Both operands are always evaluated; the dummy is random, so no password can match it.
    return entry !== undefined && equal;
  }

  /**
   * The SCRAM verifier of a user, or null for an unknown user. For a plaintext entry it is derived once,
   * with a salt that is an HMAC of the name under `saltKey` (the storage's salt key, salt-key.ts): the same
   * in every worker, on every node and after restarts, as a real verifier's salt is (a salt that changed
   * would tell an attacker the user exists; unknown users get stable fake salts under the same key).
   */
  async scramVerifier(user: string, saltKey: Buffer): Promise<ScramVerifier | null> {
    const entry = this.#entries.get(user);
    if (entry === undefined) return null;
    if (entry.kind === 'scram') return entry.verifier;
    return this.#derived(user, entry, saltKey);
  }

  /**
   * Derives the SCRAM verifiers of the plaintext entries in the background, one at a time on the thread
   * pool, so that a SCRAM login does not wait for a PBKDF2 that an unknown user's login skips (which would
   * tell that the user exists) and the pool is never flooded by a large file. A login that comes first
   * waits for (or starts) its user's derivation.
   */
  async prepareScram(saltKey: Buffer, stillCurrent: () => boolean = () => true): Promise<void> {
    for (const [user, entry] of this.#entries) {
      // A table replaced by a reload stops here: its successor derives (or adopts) its own.
      if (!stillCurrent()) return;
      if (entry.kind === 'plain') await this.#derived(user, entry, saltKey).catch(() => undefined);
    }
  }

  /**
   * Takes over the verifiers `previous` derived (or is deriving) for plaintext entries that a reload left
   * as they were (same password, same iteration count), so that a reload costs PBKDF2s only for what
   * changed.
   */
  adoptDerived(previous: UserTable): void {
    // Other verifier counts: every name's pick (iterationsFor) may have changed.
    if (previous.#verifierCounts.join(',') !== this.#verifierCounts.join(',')) return;
    for (const [user, entry] of this.#entries) {
      const old = previous.#entries.get(user);
      if (entry.kind === 'plain' && old?.kind === 'plain' && old.derived !== undefined && old.digest.equals(entry.digest)) entry.derived = old.derived;
    }
  }

  #derived(user: string, entry: Extract<Credential, { kind: 'plain' }>, saltKey: Buffer): Promise<ScramVerifier> {
    if (entry.derived !== undefined) return entry.derived;
    // With one of the file's iteration counts, so that a plaintext entry's verifier cannot be told from a
    // hashed one. PBKDF2 on the thread pool: at up to 1,000,000 iterations it would stall every session of
    // the worker.
    const derived = deriveVerifierAsync(entry.password, createHmac('sha256', saltKey).update(`scram-salt:${user}`).digest().subarray(0, 16), this.iterationsFor(user, saltKey));
    entry.derived = derived;
    // A failure is not kept: the next login (or the next reload) tries again.
    derived.catch(() => {
      if (entry.derived === derived) entry.derived = undefined;
    });
    return derived;
  }
}

/** Compared against when the user is unknown, so that case costs the same as a wrong password. */
const DUMMY_DIGEST = randomBytes(32);
const DUMMY_SALT = randomBytes(16);

function digest(password: string): Buffer {
  return createHash('sha256').update(password, 'utf8').digest();
}

/**
 * True when `user` exists and `password` is theirs. PBKDF2 runs on the thread pool, never on the event
 * loop, so that a flood of logins cannot stall a worker's other sessions. For plaintext entries, unknown
 * user and wrong password take the same path: one SHA-256 and one constant-time comparison of 32 bytes,
 * plus, where the file also has hashed entries, a dummy PBKDF2 of the count SCRAM announces for the name
 * (UserTable.iterationsFor under `key`, the salt key). A hashed entry costs a PBKDF2 of its iteration count.
 */
export function verifyPassword(table: UserTable, user: string, password: string, key: Buffer): Promise<boolean> {
  return table.verify(user, password, key);
}

/** Pure: parses the file's text. Duplicate usernames keep the first definition. */
export function parseUsers(text: string): ParsedUsers {
  const entries = new Map<string, Credential>();
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
      problems.push({ line, reason: `invalid username (${USERNAME_RULE})` });
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
    let credential: Credential;
    if (password.startsWith(SCRAM_PREFIX)) {
      const verifier = parseVerifier(password);
      if (verifier === null) {
        problems.push({ line, reason: `malformed SCRAM-SHA-256 verifier for user "${user}"` });
        return;
      }
      credential = { kind: 'scram', verifier };
    } else {
      credential = { kind: 'plain', digest: digest(password), password };
    }
    firstLine.set(user, line);
    entries.set(user, credential);
  });
  return { users: new UserTable(entries), problems };
}

