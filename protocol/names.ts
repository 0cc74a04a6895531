import { MAX_NAME_BYTES } from './limits.js';

/**
 * The one definition of a legal file name, checked by both the client and the server.
 *
 * A name is a single path component: well-formed Unicode encoded as UTF-8, 1..255 bytes, none of
 * U+0000–U+001F, U+007F–U+009F, '/' or '\', and not "." or "..". Names are compared and stored as their
 * exact UTF-8 bytes: no case folding and no Unicode normalisation (NFC and NFD spellings are different
 * names, as on Linux filesystems).
 *
 * Returns null when legal, else a short reason suitable for an error message.
 */
export function nameProblem(name: unknown): string | null {
  if (typeof name !== 'string') return 'name must be a string';
  if (name.length === 0) return 'name is empty';
  if (!name.isWellFormed()) return 'name is not well-formed Unicode';
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) return `name is longer than ${MAX_NAME_BYTES} bytes`;
  if (name === '.' || name === '..') return 'name may not be "." or ".."';
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return 'name contains a control character';
    if (c === 0x2f) return 'name contains "/"';
    if (c === 0x5c) return 'name contains "\\"';
  }
  return null;
}

export function isValidName(name: unknown): name is string {
  return nameProblem(name) === null;
}

/** Usernames become directory names, so they use a deliberately small character set. */
export const USERNAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/** USERNAME_PATTERN in words, for the messages that refuse a name (users file, fts, fts-admin passwd). */
export const USERNAME_RULE = '1-64 of A-Z a-z 0-9 _ . -, not starting with "." or "-"';

export function isValidUsername(user: unknown): user is string {
  return typeof user === 'string' && USERNAME_PATTERN.test(user);
}
