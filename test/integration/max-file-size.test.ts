/**
 * --max-file-size, end to end: a real fts-server, the `fts` CLI, the library and raw requests. A file larger
 * than the limit is refused with FILE_TOO_LARGE (carrying `size` and `maxFileSize`): at `offset` before any
 * data for a large file, after its data for a small one, and as soon as an unsized upload's bytes pass it;
 * nothing of a refused upload is published or kept; the greeting announces the limit.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { codeOf, loginClient, stagingFiles } from '../helpers/common.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const MIB = 1024 * 1024;

describe('largest file a user may upload (--max-file-size)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  const clients: FtsClient[] = [];
  const opts = (): { port: number; user: string; password: string } => ({ port: server.port, user: ALICE.user, password: ALICE.password });
  const published = async (): Promise<string[]> => (await readdir(path.join(server.storage, ALICE.user))).sort();

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-max-size-'));
    server = await TestServer.start({ args: ['--max-file-size', '2M'] });
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
    await cleanupLocal();
  });

  it('the CLI uploads a file of exactly the limit; one byte more exits 1 with FILE_TOO_LARGE, refused by the client from the greeting, before any request', async function () {
    const exact = path.join(local, 'exact.bin');
    const over = path.join(local, 'over.bin');
    await writeFile(exact, randomBytes(2 * MIB));
    await writeFile(over, randomBytes(2 * MIB + 1));
    const ok = await runCli(['upload', exact], opts());
    expect(ok.code, describeRun(ok)).to.equal(0);
    const refused = await runCli(['upload', over], opts());
    expect(refused.code, describeRun(refused)).to.equal(1);
    expect(refused.stderr).to.equal(`fts: over.bin: ${2 * MIB + 1} bytes is more than the largest file this server accepts (${2 * MIB} bytes) (FILE_TOO_LARGE)\n`);
    expect(server.lines.some((l) => l['file'] === 'over.bin'), 'no request about it reached the server').to.equal(false);
    expect(await published()).to.deep.equal(['exact.bin']);
    expect(await stagingFiles(server, ALICE.user)).to.deep.equal([]);
  });

  it('over the protocol: the greeting announces maxFileSize; offset and upload answer FILE_TOO_LARGE (non-fatal) with size and maxFileSize', async function () {
    const { client: raw, greeting } = await RawClient.open(server.port);
    try {
      expect(greeting['maxFileSize']).to.equal(2 * MIB);
      await raw.auth(ALICE.user, ALICE.password);
      const sha256 = createHash('sha256').update('x').digest('hex');
      expect(await raw.request({ op: 'offset', name: 'big', size: 3 * MIB, sha256 })).to.include({ status: 'error', code: 'FILE_TOO_LARGE', size: 3 * MIB, maxFileSize: 2 * MIB });
    } finally {
      raw.close();
    }
    // A client that ignores the greeting: its upload is refused after its data, and the session goes on.
    const raw2 = await RawClient.login(server.port, ALICE.user, ALICE.password);
    try {
      const data = randomBytes(2 * MIB + 10);
      await raw2.send({ op: 'upload', name: 'big', size: data.length, sha256: createHash('sha256').update(data).digest('hex') });
      for (let at = 0; at < data.length; at += MIB) await raw2.sendData(data.subarray(at, Math.min(at + MIB, data.length)));
      expect(await raw2.nextHeader()).to.include({ status: 'error', code: 'FILE_TOO_LARGE', size: data.length, maxFileSize: 2 * MIB });
    } finally {
      raw2.close();
    }
    const c = await loginClient(server, clients, ALICE);
    expect(await codeOf(c.uploadBuffer('big', randomBytes(2 * MIB + 10))), 'the library refuses it itself').to.equal('FILE_TOO_LARGE');
    await c.uploadBuffer('small', Buffer.from('still works'));
    expect(await published()).to.deep.equal(['small']);
  });

  it('an unsized upload is refused once its bytes pass the limit: nothing published or kept', async function () {
    const piped = await runCli(['upload', '-', 'piped.bin'], { ...opts(), input: randomBytes(3 * MIB) });
    expect(piped.code, describeRun(piped)).to.equal(1);
    // What had arrived when it passed the limit, named as such: not the stream's length, which nobody knows.
    expect(piped.stderr).to.match(/^fts: piped\.bin: the stream passed the largest file this server accepts \(2097152 bytes\): stopped after \d+ bytes \(FILE_TOO_LARGE\)\n$/);
    expect(piped.stderr).to.include('(FILE_TOO_LARGE)');
    // A limit that is no power of two: the quota room an unsized upload takes ahead (1, 2, 4 MiB…) passes
    // it before its bytes do, and every chunk is still judged.
    await server.stop();
    server = await TestServer.start({ args: ['--max-file-size', '3M'] });
    const odd = await runCli(['upload', '-', 'odd.bin'], { ...opts(), input: randomBytes(4 * MIB) });
    expect(odd.code, describeRun(odd)).to.equal(1);
    expect(odd.stderr).to.include('(FILE_TOO_LARGE)');
    const fits = await runCli(['upload', '-', 'fits.bin'], { ...opts(), input: randomBytes(3 * MIB) });
    expect(fits.code, describeRun(fits)).to.equal(0);
    expect(await published()).to.deep.equal(['fits.bin']);
    expect(await stagingFiles(server, ALICE.user)).to.deep.equal([]);
  });

  it('without the flag the greeting has no maxFileSize', async function () {
    await server.stop();
    server = await TestServer.start();
    const { client: raw, greeting } = await RawClient.open(server.port);
    raw.close();
    expect(greeting).to.not.have.property('maxFileSize');
  });
});
