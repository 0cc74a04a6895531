import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf } from '../../protocol/index.js';
import { fsyncDir } from './durable.js';
import { internalDir } from './paths.js';
import { makeDirectories } from './private-dir.js';

const KEY_BYTES = 32;
const KEY_FILE = 'scram-salt-key';

/**
 * The key of the salts and iteration counts that SCRAM announces for users whose verifier the server
 * derives itself: unknown users (fake) and plaintext entries. It must outlive restarts and be the same on
 * every node: a value that changed while a real verifier's salt stays put would tell which user names
 * exist. So it lives on the storage, which every node shares (`<root>/.fts/scram-salt-key`), made once
 * from random bytes. Not the token secret: without --cluster-secret-file that one is new at every start.
 */
/**
 * Where the key lives. Written at the storage's first start (a start makes it when it is missing), never
 * by anything else (the directories beside it are made again by uploads): while the server runs, its
 * absence says the storage is not there (an unmounted volume leaves its empty mount point), and
 * storage-health.ts and Store.user look for it. A start on an empty mount point cannot tell it from a new
 * storage: the systemd unit's RequiresMountsFor= keeps it from starting there.
 */
export function saltKeyPath(root: string): string {
  return path.join(internalDir(root), KEY_FILE);
}

export async function loadSaltKey(root: string): Promise<Buffer> {
  const file = saltKeyPath(root);
  await makeDirectories(internalDir(root));
  const existing = await readKey(file);
  if (existing !== null) return existing;
  // Written whole under a temporary name, then linked into place: link() never replaces, so nodes that start
  // together agree on the first key to land, and none ever reads a partly written one.
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}`;
  const handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
  try {
    await handle.writeFile(randomBytes(KEY_BYTES));
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(temp, file);
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw err;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  await fsyncDir(internalDir(root));
  const key = await readKey(file);
  if (key === null) throw new Error(`${file} vanished while the server created it`);
  return key;
}

async function readKey(file: string): Promise<Buffer | null> {
  let st;
  try {
    st = await lstat(file);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    throw err;
  }
  if (!st.isFile() || st.size !== KEY_BYTES) throw new Error(`${file} is not a ${KEY_BYTES}-byte file; remove it and start again (a new one is made)`);
  return readFile(file, { flag: constants.O_RDONLY | constants.O_NOFOLLOW });
}
