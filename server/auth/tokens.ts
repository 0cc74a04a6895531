import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { MAX_TOKEN_CHARS } from '../../protocol/limits.js';

/**
 * Session tokens let a client that lost its connection log in again without the password (mech "token").
 * A token is `v2.<payload>.<mac>`: base64url JSON {u: user, e: expiry ms, n: nonce, c: credential tag} and
 * its HMAC-SHA256 under the server secret. Every worker holds the secret, and so does every node configured
 * with the same --cluster-secret-file, so a token works wherever the reconnect lands.
 *
 * The credential tag binds the token to the user's entry in the users file as it was at login. It is an
 * HMAC of the entry under the secret: without the secret it tells nothing about the password; with it, a
 * plaintext entry's tag allows offline guesses, but whoever holds the secret holds the users file too.
 * Tokens are not revocable one by one, but changing the user's password (any change to their entry),
 * removing the user, or changing the secret ends them: the tag no longer matches, and no state needs to be
 * shared between workers or nodes.
 */

export interface IssuedToken {
  token: string;
  /** Expiry, milliseconds since the epoch. */
  expires: number;
}

/** The user's current credential (UserTable.credentialOf), or null for a user who does not exist. */
export type CredentialLookup = (user: string) => Buffer | null;

const VERSION = 'v2';
const TAG_BYTES = 16;

function mac(secret: Buffer, payload: string): Buffer {
  return createHmac('sha256', secret).update(`${VERSION}.${payload}`).digest();
}

function credentialTag(secret: Buffer, user: string, credential: Buffer): Buffer {
  return createHmac('sha256', secret).update(`fts-token-credential\0${user}\0`).update(credential).digest().subarray(0, TAG_BYTES);
}

/** A token for `user`, valid for `ttlMs` and for as long as their credential is `credential`. */
export function issueToken(secret: Buffer, user: string, credential: Buffer, ttlMs: number, now = Date.now()): IssuedToken {
  const expires = now + ttlMs;
  const claims = { u: user, e: expires, n: randomBytes(9).toString('base64url'), c: credentialTag(secret, user, credential).toString('base64url') };
  const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return { token: `${VERSION}.${payload}.${mac(secret, payload).toString('base64url')}`, expires };
}

/**
 * `user` is the user of a valid, unexpired token whose credential is still the one it was issued for;
 * otherwise null. `issuedTo` is the user a token signed with our secret names, even if it has expired or its
 * credential has changed (a stale token of a known user, worth naming in the audit line of the failure),
 * and null when the token is not ours. The comparisons are constant-time.
 */
export function verifyToken(secret: Buffer, token: string, credentialOf: CredentialLookup, now = Date.now()): { user: string | null; issuedTo: string | null } {
  const refused = { user: null, issuedTo: null };
  if (token.length > MAX_TOKEN_CHARS) return refused;
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== VERSION) return refused;
  const [, payload = '', given = ''] = parts;
  const expected = mac(secret, payload);
  const actual = Buffer.from(given, 'base64url');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) return refused;
  // Node's decoder skips padding and stray characters: only the canonical spelling of the MAC is the token.
  if (actual.toString('base64url') !== given) return refused;
  let claims: { u?: unknown; e?: unknown; c?: unknown };
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof claims;
  } catch {
    return refused;
  }
  if (typeof claims.u !== 'string') return refused;
  const issuedTo = claims.u;
  if (typeof claims.e !== 'number' || claims.e <= now || typeof claims.c !== 'string') return { user: null, issuedTo };
  const credential = credentialOf(issuedTo);
  if (credential === null) return { user: null, issuedTo };
  const tag = Buffer.from(claims.c, 'base64url');
  const current = credentialTag(secret, issuedTo, credential);
  return { user: tag.length === current.length && timingSafeEqual(tag, current) ? issuedTo : null, issuedTo };
}
