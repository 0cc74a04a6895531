import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, realpath, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { deriveVerifier, errnoOf, errnoReason, formatVerifier, isValidUsername, USERNAME_RULE } from '../protocol/index.js';
import { decodeStrictUtf8 } from '../protocol/strict-utf8.js';
import lockfile from 'proper-lockfile';
import { promptHidden } from '../client/cli/password.js';
import { EXIT_INTERRUPTED, exitCodeFor } from '../client/cli/report.js';

/**
 * `fts-admin passwd USER`: writes a SCRAM-SHA-256 verifier for USER into the users file, replacing the
 * user's line or appending one. The file is rewritten atomically (temp file, fsync, rename, fsync of the
 * directory), so a crash leaves either the old file or the new one, and it keeps mode 0600. A missing file
 * is created (mode 0600); whether it may be is the caller's decision (see the passwd command in cli.ts).
 */

export class PasswdError extends Error {
  override name = 'PasswdError';
}

/** Ctrl+C or Ctrl+D at the password prompt: abandoned, not failed (exit 130). */
export class PasswdCancelled extends PasswdError {
  override name = 'PasswdCancelled';
}

async function askHidden(prompt: string): Promise<string> {
  try {
    return await promptHidden(prompt);
  } catch (e) {
    if (exitCodeFor(e) === EXIT_INTERRUPTED) throw new PasswdCancelled('password entry cancelled; nothing changed');
    throw e;
  }
}

/** The new password: asked twice without echo on a terminal, else the first line of stdin (for scripts). */
export async function readNewPassword(user: string): Promise<string> {
  let password: string;
  if (process.stdin.isTTY === true) {
    password = await askHidden(`New password for ${user}: `);
    const again = await askHidden('Repeat it: ');
    if (again !== password) throw new PasswdError('the passwords do not match; nothing changed');
  } else {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    password = Buffer.concat(chunks).toString('utf8').split('\n')[0]?.replace(/\r$/, '') ?? '';
  }
  if (password === '') throw new PasswdError('empty password; nothing changed');
  // NIST SP 800-63B's floor for a password a person chooses; counted in characters, not bytes.
  if ([...password].length < MIN_PASSWORD_CHARS) throw new PasswdError(`the password has fewer than ${MIN_PASSWORD_CHARS} characters; nothing changed`);
  return password;
}

/** The shortest password passwd sets (a users file edited by hand is not held to it). */
export const MIN_PASSWORD_CHARS = 8;

/** Returns the new file text with USER's entry set to `secret`, and whether the user already existed. */
export function setEntry(text: string, user: string, secret: string): { text: string; replaced: boolean } {
  // The server ignores a leading byte-order mark; keep it, but never let it hide the first user's name.
  const bom = text.startsWith('\uFEFF') ? '\uFEFF' : '';
  const body = text.slice(bom.length);
  const lines = body === '' ? [] : body.replace(/\n$/, '').split('\n');
  const entry = `${user}:${secret}`;
  const at = lines.findIndex((l) => !l.trimStart().startsWith('#') && l.startsWith(`${user}:`));
  if (at >= 0) lines[at] = entry;
  else lines.push(entry);
  return { text: `${bom}${lines.join('\n')}\n`, replaced: at >= 0 };
}

/**
 * Runs `fn` with the effective user and group of `dir`'s owner when called as root and that owner is not
 * root, then becomes root again. The users file normally lives in the service account's directory, and
 * that account could plant a link there (to /etc/shadow, say): root following it would overwrite a file
 * the account cannot touch, or copy one it cannot read into the users file. As the owner, following the
 * link gains nothing. The effective ids only (and the supplementary groups), so that root can still talk
 * to a server's socket afterwards; glibc applies them to every thread, the file-system pool's included.
 */
export async function asOwnerOf<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  if (process.geteuid?.() !== 0 || !process.seteuid || !process.setegid || !process.setgroups || !process.getgroups) return fn();
  let owner: { uid: number; gid: number };
  try {
    const st = await stat(dir);
    owner = { uid: st.uid, gid: st.gid };
  } catch (err) {
    throw new PasswdError(`cannot use the directory ${dir}: ${errnoReason(err)}`);
  }
  if (owner.uid === 0) return fn();
  const groups = process.getgroups();
  const egid = process.getegid?.() ?? 0;
  process.setgroups([owner.gid]);
  process.setegid(owner.gid);
  process.seteuid(owner.uid);
  try {
    return await fn();
  } finally {
    process.seteuid(0);
    process.setegid(egid);
    process.setgroups(groups);
  }
}

export function checkUsername(user: string): void {
  if (!isValidUsername(user)) throw new PasswdError(`invalid username '${user}' (${USERNAME_RULE})`);
}

/** Whether two paths name one file, through symbolic links and relative paths, whether or not it exists yet. */
export async function sameFile(a: string, b: string): Promise<boolean> {
  return (await canonical(a)) === (await canonical(b));
}

async function canonical(file: string): Promise<string> {
  const abs = path.resolve(file);
  try {
    return await realpath(abs);
  } catch {
    // Not created yet: its directory may still be reached through a link.
    return realpath(path.dirname(abs)).then((dir) => path.join(dir, path.basename(abs)), () => abs);
  }
}

/**
 * The file to rewrite: the one a symbolic link names. Renaming over the link would replace the link itself
 * and leave the file it names, which the server may read under that other name, unchanged.
 */
async function throughLinks(usersFile: string): Promise<string> {
  try {
    return await realpath(usersFile);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw new PasswdError(`cannot resolve ${usersFile}: ${errnoReason(err)}`);
  }
  // Creating the file would replace a dangling link rather than create what it names.
  if (await lstat(usersFile).then((st) => st.isSymbolicLink(), () => false)) {
    throw new PasswdError(`${usersFile} is a symbolic link to a missing file; nothing changed`);
  }
  return usersFile;
}

/**
 * Two `passwd` runs at once must not lose an update (read–modify–rename): they take a lock beside the
 * file (a proper-lockfile directory `<file>.lock`, beside the file a link names, so that runs through
 * different names share it) for the read-modify-rename.
 */
export async function passwd(usersFile: string, user: string, password: string): Promise<{ replaced: boolean; created: boolean }> {
  checkUsername(user);
  const file = await throughLinks(usersFile);
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(file, {
      lockfilePath: `${file}.lock`,
      realpath: false,
      stale: 10_000,
      update: 2_000,
      retries: { retries: 100, factor: 1.2, minTimeout: 20, maxTimeout: 200 },
      onCompromised: () => undefined,
    });
  } catch (err) {
    throw new PasswdError(`cannot lock ${file}: ${errnoReason(err)}`);
  }
  try {
    return await rewrite(file, user, password);
  } finally {
    await release().catch(() => undefined);
  }
}

async function rewrite(usersFile: string, user: string, password: string): Promise<{ replaced: boolean; created: boolean }> {
  let bytes = Buffer.alloc(0);
  let owner: { uid: number; gid: number } | null = null;
  try {
    // One open file for the owner, the type and the bytes: two lookups of the name could see two files.
    const handle = await open(usersFile, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new PasswdError(`${usersFile} is not a regular file; nothing changed`);
      owner = { uid: st.uid, gid: st.gid };
      bytes = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof PasswdError) throw err;
    if (errnoOf(err) !== 'ENOENT') throw new PasswdError(`cannot read ${usersFile}: ${errnoReason(err)}`);
  }
  const decoded = decodeStrictUtf8(bytes);
  // Rewriting would turn the bad bytes into U+FFFD for good: another user's password would change.
  if ('badLine' in decoded) throw new PasswdError(`${usersFile}: line ${decoded.badLine} is not valid UTF-8; nothing was written (re-save the file as UTF-8)`);
  const { text } = decoded;
  const { text: updated, replaced } = setEntry(text, user, formatVerifier(deriveVerifier(password)));
  const dir = path.dirname(usersFile);
  const temp = path.join(dir, `.${path.basename(usersFile)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
    try {
      await handle.writeFile(updated, 'utf8');
      // Run as root, keep the file owned by whoever owned it (the service account must still read it).
      if (owner !== null && process.geteuid?.() === 0) await handle.chown(owner.uid, owner.gid);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, usersFile);
    const dirHandle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    await dirHandle.sync().finally(() => dirHandle.close());
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw new PasswdError(`cannot write ${usersFile}: ${errnoReason(err)}`);
  }
  const mode = (await stat(usersFile)).mode & 0o777;
  if ((mode & 0o077) !== 0) throw new PasswdError(`${usersFile} has mode ${mode.toString(8)}; expected 600`);
  return { replaced, created: owner === null };
}
