/**
 * Large files with direct I/O on (the default: uploads are written and downloads read with O_DIRECT where
 * the file system allows it) and off (--direct-io off: the page cache only). Real server, real files.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { digestRecordPath } from '../../server/storage/paths.js';
import { sha256 as sha } from '../helpers/lifecycle-util.js';
import { downloadOnce } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const MiB = 1024 * 1024;
/** Above the 8 MiB direct-I/O threshold, with a tail that is not a multiple of 4 KiB. */
const SIZE = 9 * MiB + 12_345;

for (const mode of ['on', 'off'] as const) {
  describe(`large files with --direct-io ${mode}`, function () {
    this.timeout(60_000);
    let server: TestServer;
    let dir: string;
    let cleanDir: () => Promise<void>;
    let client: FtsClient;
    let data: Buffer;

    before(async function () {
      server = await TestServer.start({ workers: 1, args: ['--direct-io', mode] });
      ({ dir, cleanup: cleanDir } = await tempDir('fts-direct-io-'));
      client = await FtsClient.connect({ port: server.port });
      await client.auth(ALICE.user, ALICE.password);
      data = randomBytes(SIZE);
      await writeFile(path.join(dir, 'src'), data);
      expect((await client.upload(path.join(dir, 'src'), 'big.bin')).sha256).to.equal(sha(data));
    });

    after(async function () {
      client.close();
      await server.stop();
      await cleanDir();
    });

    it('the stored file and a download are byte-identical to the upload', async function () {
      expect((await readFile(path.join(server.storage, ALICE.user, 'big.bin'))).equals(data)).to.equal(true);
      const out = path.join(dir, 'out');
      expect((await client.download('big.bin', out)).sha256).to.equal(sha(data));
      expect((await readFile(out)).equals(data)).to.equal(true);
    });

    it('a download resumed at an unaligned offset, without a recorded digest, hashes the prefix and sends the rest intact', async function () {
      // Without the record the server reads the skipped prefix too, to hash the whole file.
      await rm(digestRecordPath(server.storage, ALICE.user, 'big.bin'));
      const offset = 4 * MiB + 1234;
      const r = await downloadOnce(server.port, ALICE, 'big.bin', offset);
      expect(r.final['status']).to.equal('ok');
      expect(r.final['sha256']).to.equal(sha(data));
      expect(Buffer.concat(r.data).equals(data.subarray(offset))).to.equal(true);
    });
  });
}
