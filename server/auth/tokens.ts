import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Session tokens let a client that lost its connection log in again without the password (mech "token").
 * A token is `v1.<payload>.<mac>`: base64url JSON {u: user, e: expiry ms, n: nonce} and its HMAC-SHA256
 * under the server secret. Every worker holds the secret, and so does every node configured with the same
 * --cluster-secret-file, so a token works wherever the reconnect lands. Tokens are not revocable one by
 * one: removing the user from the users file, or changing the secret, ends them.
 */

export interface IssuedToken {
  token: string;
  /** Expiry, milliseconds since the epoch. */
  expires: number;
}

const VERSION = 'v1';

function mac(secret: Buffer, payload: string): Buffer {
  return createHmac('sha256', secret).update(`${VERSION}.${payload}`).digest();
}

export function issueToken(secret: Buffer, user: string, ttlMs: number, now = Date.now()): IssuedToken {
  const expires = now + ttlMs;
  const payload = Buffer.from(JSON.stringify({ u: user, e: expires, n: randomBytes(9).toString('base64url') })).toString('base64url');
  return { token: `${VERSION}.${payload}.${mac(secret, payload).toString('base64url')}`, expires };
}

/** The user a valid, unexpired token names, or null. The MAC comparison is constant-time. */
export function verifyToken(secret: Buffer, token: string, now = Date.now()): string | null {
  if (token.length > 1024) return null;
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== VERSION) return null;
  const [, payload = '', given = ''] = parts;
  const expected = mac(secret, payload);
  const actual = Buffer.from(given, 'base64url');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) return null;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { u?: unknown; e?: unknown };
    if (typeof claims.u !== 'string' || typeof claims.e !== 'number' || claims.e <= now) return null;
    return claims.u;
  } catch {
    return null;
  }
}
