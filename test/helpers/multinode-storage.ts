/**
 * Direct inspection of a shared fts storage root after a multi-node run (layout: docs/ARCHITECTURE.md):
 *
 *   <storage>/<user>/<name>                          published files
 *   <storage>/.fts/staging/<user>/<key>.<rand>.part  one file per upload attempt (key = stagingKey(identity))
 *   <storage>/.fts/locks/<user>/<hash>.lock          proper-lockfile lock directories
 */
import { createHash } from 'node:crypto';
import { createReadStream, type Dirent } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';

async function entries(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export function fileSha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => hash.update(c))
      .once('error', reject)
      .once('end', () => resolve(hash.digest('hex')));
  });
}

export interface PublishedFile {
  user: string;
  name: string;
  size: number;
  sha256: string;
}

/** Every entry in the user directories: regular files with their digest; anything else is reported in `odd`. */
export async function scanPublished(storage: string): Promise<{ files: PublishedFile[]; odd: string[] }> {
  const files: PublishedFile[] = [];
  const odd: string[] = [];
  for (const u of await entries(storage)) {
    if (u.name === '.fts') continue;
    if (!u.isDirectory()) {
      odd.push(u.name);
      continue;
    }
    for (const f of await entries(path.join(storage, u.name))) {
      const p = path.join(storage, u.name, f.name);
      if (!f.isFile()) {
        odd.push(`${u.name}/${f.name}`);
        continue;
      }
      files.push({ user: u.name, name: f.name, size: (await lstat(p)).size, sha256: await fileSha256(p) });
    }
  }
  return { files, odd };
}

export interface StagedPart {
  user: string;
  file: string;
  /** The identity key (file name up to the first dot), or null for a name not in the staging format. */
  key: string | null;
  size: number;
}

export async function stagingParts(storage: string): Promise<StagedPart[]> {
  const root = path.join(storage, '.fts', 'staging');
  const out: StagedPart[] = [];
  for (const u of await entries(root)) {
    if (!u.isDirectory()) {
      out.push({ user: '', file: u.name, key: null, size: -1 });
      continue;
    }
    for (const f of await entries(path.join(root, u.name))) {
      const m = /^([0-9a-f]{64})\.[0-9a-f]+\.part$/.exec(f.name);
      out.push({ user: u.name, file: f.name, key: m?.[1] ?? null, size: (await lstat(path.join(root, u.name, f.name))).size });
    }
  }
  return out;
}

/** Lock directories (and anything else) left under <storage>/.fts/locks/<user>/. */
export async function lockLeftovers(storage: string): Promise<string[]> {
  const root = path.join(storage, '.fts', 'locks');
  const out: string[] = [];
  for (const u of await entries(root)) {
    if (!u.isDirectory()) {
      out.push(u.name);
      continue;
    }
    for (const f of await entries(path.join(root, u.name))) out.push(`${u.name}/${f.name}`);
  }
  return out;
}
