import { expect } from 'chai';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadSaltKey } from '../../server/storage/salt-key.js';
import { tempDir } from '../helpers/temp.js';

describe('SCRAM salt key (kept on the storage, so the same after restarts and on every node)', function () {
  let root: string;
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    ({ dir: root, cleanup } = await tempDir('fts-saltkey-'));
  });
  afterEach(async () => {
    await cleanup();
  });

  it('is made once: 32 bytes, mode 0600, read back the same by later and concurrent loads; no temporary file left', async () => {
    const loads = await Promise.all(Array.from({ length: 8 }, () => loadSaltKey(root)));
    const first = loads[0]!;
    expect(first.length).to.equal(32);
    for (const k of loads) expect(k.equals(first), 'concurrent loads agree').to.equal(true);
    expect((await loadSaltKey(root)).equals(first), 'a later load').to.equal(true);
    expect(await readdir(path.join(root, '.fts'))).to.deep.equal(['scram-salt-key']);
    expect((await stat(path.join(root, '.fts', 'scram-salt-key'))).mode & 0o777).to.equal(0o600);
  });

  it('refuses a key file of another size, naming it', async () => {
    await mkdir(path.join(root, '.fts'));
    await writeFile(path.join(root, '.fts', 'scram-salt-key'), 'short');
    let error: unknown;
    try {
      await loadSaltKey(root);
    } catch (err) {
      error = err;
    }
    expect((error as Error | undefined)?.message).to.include('scram-salt-key');
  });
});
