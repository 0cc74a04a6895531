/**
 * readConfigFile: the users and rules files are read only when they are regular files of bounded size,
 * without blocking on a FIFO (real files in a temp directory).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigFileUnusable, MAX_CONFIG_FILE_BYTES, readConfigFile } from '../../server/config-file.js';
import { tempDir } from '../helpers/temp.js';

async function problemOf(file: string): Promise<string | null> {
  try {
    await readConfigFile(file);
    return null;
  } catch (err) {
    if (err instanceof ConfigFileUnusable) return err.message;
    throw err;
  }
}

describe('readConfigFile', function () {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;

  before(async function () {
    ({ dir, cleanup } = await tempDir('fts-config-file-'));
  });
  after(() => cleanup());

  it('reads a regular file whole, with its mode; an empty one is empty', async function () {
    const file = path.join(dir, 'users.txt');
    const text = Array.from({ length: 5000 }, (_, i) => `user${i}:password-${i}\n`).join('');
    await writeFile(file, text, { mode: 0o640 });
    const { bytes, mode } = await readConfigFile(file);
    expect(bytes.toString()).to.equal(text);
    expect(mode).to.equal(0o640);
    await writeFile(path.join(dir, 'empty.txt'), '');
    expect((await readConfigFile(path.join(dir, 'empty.txt'))).bytes.length).to.equal(0);
  });

  it('refuses a FIFO at once, a device, a directory (EISDIR) and a file over the limit', async function () {
    const fifo = path.join(dir, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status, 'mkfifo').to.equal(0);
    const started = Date.now();
    expect(await problemOf(fifo)).to.equal('is not a regular file (a FIFO, socket or device)');
    expect(Date.now() - started, 'not blocked waiting for a writer').to.be.below(2_000);
    expect(await problemOf('/dev/zero')).to.equal('is not a regular file (a FIFO, socket or device)');
    const sub = path.join(dir, 'sub');
    await mkdir(sub);
    expect(await problemOf(sub)).to.equal('is a directory (EISDIR)');
    expect(await problemOf(path.join(dir, 'missing'))).to.match(/\(ENOENT\)$/);
    const huge = path.join(dir, 'huge');
    await writeFile(huge, '');
    await truncate(huge, MAX_CONFIG_FILE_BYTES + 1); // sparse: nothing is written
    expect(await problemOf(huge)).to.equal(`is larger than ${MAX_CONFIG_FILE_BYTES / 2 ** 20} MiB`);
  });
});
