/**
 * `--skip-same` (fts upload, download, mput, mget), end to end with the real CLI against a real server: a
 * file whose two ends hold the same bytes is left out (nothing sent or published: the server file keeps
 * its mtime and no upload is audited), and said so on stdout and in --json; a file that differs in size or
 * in content, or is missing at the other end, is transferred as without the flag.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { describeRun, runCli, type CliResult } from '../helpers/cli.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { waitUntil } from '../helpers/lifecycle-util.js';

const ALICE = DEFAULT_USERS[0]!;
const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

describe('--skip-same (fts upload, download, mput, mget)', function () {
  this.timeout(60_000);
  let server: TestServer;
  let dir: string;
  let cleanup: () => Promise<void>;

  before(async function () {
    server = await TestServer.start({ workers: 1 });
  });

  after(async function () {
    await server?.stop();
  });

  beforeEach(async function () {
    ({ dir, cleanup } = await tempDir('fts-skip-'));
  });

  afterEach(async function () {
    await cleanup();
  });

  const fts = (args: string[]): Promise<CliResult> => runCli(args, { port: server.port, user: ALICE.user, password: ALICE.password, cwd: dir });
  const onServer = (name: string): string => path.join(server.storage, ALICE.user, name);
  /** Upload audit lines of `file` so far (one per upload that ran, whatever its result). */
  const uploadsOf = (file: string): number => server.lines.filter((l) => l['event'] === 'upload' && l['file'] === file).length;
  /** Hash audit lines of `file` so far (the comparison asks the server for its digest). */
  const hashesOf = (file: string): number => server.lines.filter((l) => l['event'] === 'hash' && l['file'] === file).length;

  async function ok(args: string[]): Promise<CliResult> {
    const r = await fts(args);
    expect(r.code, describeRun(r)).to.equal(0);
    return r;
  }

  it('upload: the same bytes on the server are left out (no upload, mtime kept); other content, another size or no file there is uploaded', async function () {
    const data = randomBytes(70_000);
    await writeFile(path.join(dir, 'a.bin'), data);
    expect((await ok(['upload', 'a.bin', '--skip-same'])).out).to.equal(`uploaded a.bin (70000 bytes, sha256 ${sha(data)})\n`);
    const published = await stat(onServer('a.bin'));
    const audited = uploadsOf('a.bin');

    expect((await ok(['upload', 'a.bin', '--skip-same'])).out).to.equal(`skipped a.bin (70000 bytes, sha256 ${sha(data)}): the server holds the same bytes\n`);
    expect((await stat(onServer('a.bin'))).mtimeMs, 'the server file was not published again').to.equal(published.mtimeMs);
    expect(uploadsOf('a.bin'), 'no upload ran').to.equal(audited);

    // Without the flag it is uploaded again, as before.
    expect((await ok(['upload', 'a.bin'])).out).to.match(/^uploaded a\.bin /);

    const sameSize = Buffer.from(data);
    sameSize[12_345]! ^= 1;
    await writeFile(path.join(dir, 'a.bin'), sameSize);
    expect((await ok(['upload', 'a.bin', '--skip-same'])).out).to.equal(`uploaded a.bin (70000 bytes, sha256 ${sha(sameSize)})\n`);
    const longer = Buffer.concat([sameSize, Buffer.from('x')]);
    await writeFile(path.join(dir, 'a.bin'), longer);
    expect((await ok(['upload', 'a.bin', '--skip-same'])).out).to.match(/^uploaded a\.bin \(70001 bytes, /);
    expect(await readFile(onServer('a.bin'))).to.deep.equal(longer);
  });

  it('mput --skip-same --json: one object per file, in order, each with skipped; only the changed and new files are sent', async function () {
    const same = randomBytes(3000);
    const changed = randomBytes(3000);
    await writeFile(path.join(dir, 'same.txt'), same);
    await writeFile(path.join(dir, 'changed.txt'), changed);
    await ok(['mput', 'same.txt', 'changed.txt']);
    const changedNow = randomBytes(3000);
    await writeFile(path.join(dir, 'changed.txt'), changedNow);
    const fresh = randomBytes(10);
    await writeFile(path.join(dir, 'new.txt'), fresh);
    const r = await ok(['mput', 'same.txt', 'changed.txt', 'new.txt', '--skip-same', '--json']);
    const objects = r.out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objects.map((o) => [o['name'], o['bytes'], o['sha256'], o['skipped']])).to.deep.equal([
      ['same.txt', 3000, sha(same), true],
      ['changed.txt', 3000, sha(changedNow), false],
      ['new.txt', 10, sha(fresh), false],
    ]);
    expect(Object.keys(objects[0]!)).to.deep.equal(['name', 'bytes', 'sha256', 'resumedFrom', 'seconds', 'skipped']);
    expect(await readFile(onServer('changed.txt'))).to.deep.equal(changedNow);
    // Without --skip-same the objects keep their documented shape.
    const plain = await ok(['mput', 'new.txt', '--json']);
    expect(Object.keys(JSON.parse(plain.out) as object)).to.deep.equal(['name', 'bytes', 'sha256', 'resumedFrom', 'seconds']);
  });

  it('download and mget: a local file with the same bytes is left out; a missing or different one is downloaded', async function () {
    const data = randomBytes(50_000);
    await writeFile(path.join(dir, 'up.bin'), data);
    await ok(['upload', 'up.bin', 'd.bin']);
    await ok(['upload', 'up.bin', 'e.bin']);
    const hashed = hashesOf('d.bin');
    expect((await ok(['download', 'd.bin', '--skip-same'])).out).to.equal(`downloaded d.bin -> d.bin (50000 bytes, sha256 ${sha(data)})\n`);
    expect(hashesOf('d.bin'), 'no local file: the server is not asked for its digest').to.equal(hashed);
    expect((await ok(['download', 'd.bin', '--skip-same'])).out).to.equal(`skipped d.bin -> d.bin (50000 bytes, sha256 ${sha(data)}): d.bin holds the same bytes\n`);
    await waitUntil('the hash audit line', () => hashesOf('d.bin') === hashed + 1, 5_000);
    await writeFile(path.join(dir, 'd.bin'), randomBytes(50_000));
    expect((await ok(['download', 'd.bin', '--skip-same'])).out).to.match(/^downloaded d\.bin -> d\.bin /);
    expect(await readFile(path.join(dir, 'd.bin'))).to.deep.equal(data);

    const r = await ok(['mget', 'd.bin', 'e.bin', '--dir', '.', '--skip-same']);
    expect(r.out.split('\n').slice(0, 2)).to.deep.equal([
      `skipped d.bin -> d.bin (50000 bytes, sha256 ${sha(data)}): d.bin holds the same bytes`,
      `downloaded e.bin -> e.bin (50000 bytes, sha256 ${sha(data)})`,
    ]);
  });

  it('library: skipSame keeps the transfer\'s place in the request order (a download right after a skipSame upload gets the new bytes; a delete right after a skipSame download waits for it)', async function () {
    const client = await FtsClient.connect({ port: server.port });
    try {
      await client.auth(ALICE.user, ALICE.password);
      await client.uploadBuffer('ord.txt', Buffer.from('OLD'));
      await writeFile(path.join(dir, 'ord.txt'), 'NEW');
      const [up, down] = await Promise.all([client.upload(path.join(dir, 'ord.txt'), 'ord.txt', { skipSame: true }), client.downloadBuffer('ord.txt')]);
      expect(up.skipped).to.equal(undefined);
      expect(down.data.toString(), 'the download queued after the upload').to.equal('NEW');

      const [same] = await Promise.all([client.upload(path.join(dir, 'ord.txt'), 'ord.txt', { skipSame: true }), client.delete('ord.txt')]);
      expect(same.skipped, 'compared before the delete ran').to.equal(true);
      await client.uploadBuffer('ord2.txt', Buffer.from('SERVER'));
      const [got, deleted] = await Promise.allSettled([client.download('ord2.txt', path.join(dir, 'ord2.txt'), { skipSame: true }), client.delete('ord2.txt')]);
      expect(got.status, JSON.stringify(got)).to.equal('fulfilled');
      expect(deleted.status).to.equal('fulfilled');
      expect(await readFile(path.join(dir, 'ord2.txt'), 'utf8')).to.equal('SERVER');
      expect((await client.list()).map((e) => e.name)).to.not.include.members(['ord.txt', 'ord2.txt']);
    } finally {
      client.close();
    }
  });

  it('with standard input or output as LOCAL it is a usage error (exit 2), before connecting', async function () {
    const up = await runCli(['upload', '-', 'x.txt', '--skip-same'], { port: server.port, user: ALICE.user, password: ALICE.password, cwd: dir, input: 'data' });
    expect(up.code, describeRun(up)).to.equal(2);
    expect(up.stderr).to.include('--skip-same needs a local file to compare');
    const down = await fts(['download', 'x.txt', '-', '--skip-same']);
    expect(down.code, describeRun(down)).to.equal(2);
    expect(down.stderr).to.include('--skip-same needs a local file to compare');
    const list = await fts(['list', '--skip-same']);
    expect(list.code, describeRun(list)).to.equal(2);
  });
});
