import { randomBytes, timingSafeEqual } from 'node:crypto';
import { DEFAULT_ITERATIONS, hmac, sha256, type ScramVerifier } from '../../protocol/index.js';

export { checkPasswordAsync, DEFAULT_ITERATIONS, deriveVerifier, deriveVerifierAsync, formatVerifier, parseVerifier, saltedPasswordAsync, SCRAM_PREFIX, type ScramVerifier } from '../../protocol/index.js';

/**
 * The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677): a login in which the password never crosses the
 * wire. Channel binding is not offered (gs2 header "n,,"); over TLS the plain mechanism is equally safe,
 * and SCRAM protects the password without TLS. Primitives live in protocol/scram.ts.
 */

/** The server's half-way state between the two client messages. */
export interface ScramExchange {
  user: string;
  verifier: ScramVerifier;
  /** False for an unknown user: the exchange runs to the end on a fake verifier and then fails. */
  known: boolean;
  clientFirstBare: string;
  /** `c=` of the client-final-message must be base64 of the gs2 header the client-first-message began with. */
  binding: string;
  serverFirst: string;
  nonce: string;
}

const NONCE_PATTERN = /^[\x21-\x2b\x2d-\x7e]+$/; // printable ASCII except ','

/** `=2C` and `=3D` are the only escapes in a SCRAM username. */
function decodeSaslName(name: string): string | null {
  if (/=(?!2C|3D)/.test(name)) return null;
  return name.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

/**
 * Handles client-first-message (`n,,n=user,r=cnonce`). An unknown user gets a fake but stable salt (an HMAC
 * of the name under `saltKey`, the storage's salt key) and the iteration count `fakeIterations` gives for
 * the name, so that the reply does not reveal whether the user exists.
 */
export async function scramFirst(
  clientFirst: string,
  lookup: (user: string) => Promise<ScramVerifier | null>,
  saltKey: Buffer,
  fakeIterations: (user: string) => number = () => DEFAULT_ITERATIONS,
): Promise<ScramExchange | null> {
  const m = /^([ny],,)(n=([^,]*),r=([^,]*)(?:,.*)?)$/.exec(clientFirst);
  if (!m) return null;
  const user = decodeSaslName(m[3] ?? '');
  const clientNonce = m[4] ?? '';
  if (user === null || user === '' || !NONCE_PATTERN.test(clientNonce) || clientNonce.length > 256) return null;
  const real = await lookup(user);
  const verifier = real ?? {
    iterations: fakeIterations(user),
    salt: hmac(saltKey, `scram-fake-salt:${user}`).subarray(0, 16),
    storedKey: randomBytes(32),
    serverKey: randomBytes(32),
  };
  const nonce = clientNonce + randomBytes(18).toString('base64');
  const serverFirst = `r=${nonce},s=${verifier.salt.toString('base64')},i=${verifier.iterations}`;
  const binding = Buffer.from(m[1] ?? '').toString('base64');
  return { user, verifier, known: real !== null, clientFirstBare: m[2] ?? '', binding, serverFirst, nonce };
}

/**
 * Handles client-final-message (`c=biws,r=nonce[,extensions],p=proof`). Returns the server-final-message (`v=...`) on
 * success, or null when the proof is wrong (or anything else is off).
 */
export function scramFinal(x: ScramExchange, clientFinal: string): string | null {
  // client-final-message-without-proof is everything before `,p=`, extensions included (RFC 5802 §3).
  const m = /^(c=([^,]*),r=([^,]*)(?:,[^p][^,]*)*),p=([A-Za-z0-9+/=]+)$/.exec(clientFinal);
  if (!m) return null;
  const [, withoutProof = '', binding = '', nonce = '', proofB64 = ''] = m;
  // RFC 5802 §5.1: c= repeats the gs2 header, base64("n,,") = "biws" or base64("y,,") = "eSws"; a
  // mismatch means something between client and server changed the first message (a downgrade).
  if (binding !== x.binding || nonce !== x.nonce) return null;
  const proof = Buffer.from(proofB64, 'base64');
  if (proof.length !== 32) return null;
  const authMessage = `${x.clientFirstBare},${x.serverFirst},${withoutProof}`;
  const clientSignature = hmac(x.verifier.storedKey, authMessage);
  const clientKey = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) clientKey[i] = (proof[i] ?? 0) ^ (clientSignature[i] ?? 0);
  const ok = timingSafeEqual(sha256(clientKey), x.verifier.storedKey);
  if (!ok || !x.known) return null;
  return `v=${hmac(x.verifier.serverKey, authMessage).toString('base64')}`;
}
