import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

/**
 * SCRAM-SHA-256 primitives (RFC 5802, RFC 7677) shared by the server, the client and `fts-admin passwd`.
 * Verifiers use PostgreSQL's format `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
 * Passwords are used as their UTF-8 bytes (no SASLprep; identical for ASCII passwords).
 */

export const SCRAM_PREFIX = 'SCRAM-SHA-256$';
export const DEFAULT_ITERATIONS = 4096;
const MIN_ITERATIONS = 4096;
const MAX_ITERATIONS = 1_000_000;

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export const hmac = (key: Buffer, text: string): Buffer => createHmac('sha256', key).update(text, 'utf8').digest();
export const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();

export function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  // RFC 7677 asks for SASLprep of the password; we use its UTF-8 bytes as they are (documented), which is
  // what SASLprep leaves unchanged for ASCII passwords.
  return pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
}

export function deriveVerifier(password: string, salt: Buffer = randomBytes(16), iterations = DEFAULT_ITERATIONS): ScramVerifier {
  return verifierOf(saltedPassword(password, salt, iterations), salt, iterations);
}

/** deriveVerifier on the thread pool. */
export async function deriveVerifierAsync(password: string, salt: Buffer, iterations: number): Promise<ScramVerifier> {
  return verifierOf(await saltedPasswordAsync(password, salt, iterations), salt, iterations);
}

function verifierOf(salted: Buffer, salt: Buffer, iterations: number): ScramVerifier {
  return { iterations, salt, storedKey: sha256(hmac(salted, 'Client Key')), serverKey: hmac(salted, 'Server Key') };
}

export function formatVerifier(v: ScramVerifier): string {
  return `${SCRAM_PREFIX}${v.iterations}:${v.salt.toString('base64')}$${v.storedKey.toString('base64')}:${v.serverKey.toString('base64')}`;
}

/** Parses the PostgreSQL verifier format, or returns null when `text` is not one. */
export function parseVerifier(text: string): ScramVerifier | null {
  const m = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  if (!m) return null;
  const iterations = Number(m[1]);
  const salt = Buffer.from(m[2] ?? '', 'base64');
  const storedKey = Buffer.from(m[3] ?? '', 'base64');
  const serverKey = Buffer.from(m[4] ?? '', 'base64');
  if (!Number.isSafeInteger(iterations) || iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) return null;
  if (salt.length < 8 || storedKey.length !== 32 || serverKey.length !== 32) return null;
  return { iterations, salt, storedKey, serverKey };
}

/** True when `password` matches the verifier (constant-time comparison of StoredKey). */
export function checkPassword(v: ScramVerifier, password: string): boolean {
  return matchesStoredKey(v, saltedPassword(password, v.salt, v.iterations));
}

const pbkdf2Async = promisify(pbkdf2);

/** saltedPassword on the thread pool: a server must not stop its event loop for a PBKDF2 per login. */
export function saltedPasswordAsync(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  return pbkdf2Async(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
}

/** checkPassword on the thread pool. */
export async function checkPasswordAsync(v: ScramVerifier, password: string): Promise<boolean> {
  return matchesStoredKey(v, await saltedPasswordAsync(password, v.salt, v.iterations));
}

function matchesStoredKey(v: ScramVerifier, salted: Buffer): boolean {
  return timingSafeEqual(sha256(hmac(salted, 'Client Key')), v.storedKey);
}


/**
 * The client's side of one SCRAM exchange: `first` is the client-first-message; `final(serverFirst)` gives
 * the client-final-message; `verifyServer(serverFinal)` checks that the server knew the verifier too.
 */
export class ScramClient {
  readonly clientFirstBare: string;
  private authMessage = '';
  private salted: Buffer = Buffer.alloc(0);

  constructor(
    user: string,
    private readonly password: string,
    nonce: string = randomBytes(18).toString('base64'),
  ) {
    this.clientFirstBare = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${nonce}`;
  }

  get first(): string {
    return `n,,${this.clientFirstBare}`;
  }

  /**
   * Resolves to null when the server-first-message is malformed, does not extend our nonce, or asks for
   * fewer than 4096 or more than 1,000,000 iterations. The PBKDF2 runs on the thread pool: the server
   * chooses the iteration count (up to 1,000,000, about a second of CPU), and a library must not stop its
   * host application's event loop for that long.
   */
  async final(serverFirst: string): Promise<string | null> {
    const m = /^r=([^,]+),s=([A-Za-z0-9+/=]+),i=(\d+)(?:,.*)?$/.exec(serverFirst);
    const nonce = m?.[1] ?? '';
    const ours = this.clientFirstBare.slice(this.clientFirstBare.indexOf(',r=') + 3);
    const iterations = Number(m?.[3]);
    // Below 4096 (RFC 7677's floor, and fts servers' own): a man in the middle lowering the count to make
    // our proof cheap to attack offline. Above the maximum: more CPU than a login is worth.
    if (!m || !nonce.startsWith(ours) || nonce.length <= ours.length || !Number.isSafeInteger(iterations) || iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) return null;
    this.salted = await saltedPasswordAsync(this.password, Buffer.from(m[2] ?? '', 'base64'), iterations);
    const clientKey = hmac(this.salted, 'Client Key');
    const withoutProof = `c=biws,r=${nonce}`;
    this.authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(sha256(clientKey), this.authMessage);
    const proof = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) proof[i] = (clientKey[i] ?? 0) ^ (signature[i] ?? 0);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  verifyServer(serverFinal: string): boolean {
    const expected = Buffer.from(`v=${hmac(hmac(this.salted, 'Server Key'), this.authMessage).toString('base64')}`);
    const actual = Buffer.from(serverFinal);
    return actual.length === expected.length && timingSafeEqual(actual, expected);
  }
}
