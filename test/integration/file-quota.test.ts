/**
 * The file-count quota (--max-files, and FILES in --quota-file lines), end to end: a real fts-server, the
 * `fts` and `fts-admin` CLIs, the library and raw protocol requests. An upload of a free name is refused
 * with QUOTA_EXCEEDED (carrying `files` and `maxFiles`) when the user already has that many published
 * files; replacing a file, renaming one and deleting one are never refused, and a delete makes room at
 * once; `offset` answers the refusal before any data; `usage` reports the limit.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { FtsClient } from '../../client/index.js';
import { codeOf, loginClient, stagingFiles } from '../helpers/common.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { runAdmin } from '../helpers/admin-cli.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { waitUntil } from '../helpers/lifecycle-util.js';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;

describe('file-count quota (--max-files)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  const clients: FtsClient[] = [];

  const connect = (user = ALICE): Promise<FtsClient> => loginClient(server, clients, user);

  const published = async (user: string): Promise<string[]> => (await readdir(path.join(server.storage, user))).sort();
  const opts = (): { port: number; user: string; password: string } => ({ port: server.port, user: ALICE.user, password: ALICE.password });

  async function localFiles(names: string[]): Promise<string[]> {
    const files = names.map((n) => path.join(local, n));
    for (const f of files) await writeFile(f, randomBytes(1000));
    return files;
  }

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-file-quota-'));
    // Two workers: a delete on one must make room for an upload on the other at once.
    server = await TestServer.start({ workers: 2, args: ['--max-files', '3'] });
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
    await cleanupLocal();
  });

  it('the CLI uploads new names up to the limit; the next new name exits 1 with QUOTA_EXCEEDED naming the count, nothing kept; replacing a file still works', async function () {
    const [a, b, c, d] = await localFiles(['a', 'b', 'c', 'd']);
    for (const file of [a!, b!, c!]) {
      const run = await runCli(['upload', file], opts());
      expect(run.code, describeRun(run)).to.equal(0);
    }
    const refused = await runCli(['upload', d!], opts());
    expect(refused.code, describeRun(refused)).to.equal(1);
    expect(refused.stderr).to.equal('fts: d: a new file would exceed your file quota: 3 of 3 files (QUOTA_EXCEEDED)\n');
    const replaced = await runCli(['upload', d!, 'a'], opts());
    expect(replaced.code, `replacing a: ${describeRun(replaced)}`).to.equal(0);
    expect(await published(ALICE.user)).to.deep.equal(['a', 'b', 'c']);
    expect(await stagingFiles(server, ALICE.user), 'nothing staged by the refused upload').to.deep.equal([]);
    // Another user has their own count.
    const bob = await connect(BOB);
    for (const name of ['x', 'y', 'z']) await bob.uploadBuffer(name, Buffer.from(name));
  });

  it('fts usage shows the count against the limit; --json carries maxFiles', async function () {
    const c = await connect();
    await c.uploadBuffer('one', Buffer.from('1'));
    const text = await runCli(['usage'], opts());
    expect(text.code, describeRun(text)).to.equal(0);
    expect(text.out).to.include('\nfiles    1 of 3, 33.3 % used, 2 left\n');
    expect(text.out).to.include('\nquota    none\n');
    const json = await runCli(['usage', '--json'], opts());
    expect(JSON.parse(json.out)).to.deep.equal({ used: 1, files: 1, partial: 0, quota: null, maxFiles: 3 });
    expect(await c.usage()).to.deep.include({ files: 1, maxFiles: 3 });
  });

  it('a delete makes room at once, whichever worker the next upload lands on', async function () {
    const [a, b, c, d] = await localFiles(['a', 'b', 'c', 'd']);
    for (const file of [a!, b!, c!]) expect((await runCli(['upload', file], opts())).code).to.equal(0);
    for (let i = 0; i < 4; i++) {
      // Separate processes land on both workers; each delete is followed at once by an upload of a new name.
      const gone = i === 0 ? 'a' : `d${i - 1}`;
      expect((await runCli(['delete', gone], opts())).code, `delete ${i}`).to.equal(0);
      const again = await runCli(['upload', d!, `d${i}`], opts());
      expect(again.code, `upload ${i}: ${describeRun(again)}`).to.equal(0);
    }
    expect(await published(ALICE.user)).to.deep.equal(['b', 'c', 'd3']);
    // Connections alternate between the workers: deletes and the uploads after them ran on both.
    const workers = new Set(server.lines.filter((l) => l['event'] === 'delete' || l['event'] === 'upload').map((l) => l['worker']));
    expect(workers.size, 'both workers took part').to.equal(2);
  });

  /** An upload of `name` held open until `release` is called: its data has come, its trailer not yet. */
  function heldUpload(c: FtsClient, name: string, data: Buffer): { release: () => void; done: Promise<string> } {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const source = (async function* () {
      yield data;
      await gate;
    })();
    return { release, done: codeOf(c.uploadStream(source, name)) };
  }

  it('an upload onto a taken name cannot add a file past the limit by having the name renamed away meanwhile: its publish is refused', async function () {
    await server.stop();
    server = await TestServer.start({ workers: 2, args: ['--max-files', '1'] });
    const c = await connect();
    await c.uploadBuffer('a', Buffer.from('first'));
    // Not counted when it starts: it would replace a.
    const held = heldUpload(c, 'a', randomBytes(10_000));
    const begun = (): Promise<boolean> => waitUntil('the upload has begun on the server', async () => (await stagingFiles(server, ALICE.user)).length > 0, 10_000);
    await begun();
    const other = await connect();
    await other.rename('a', 'b');
    held.release();
    expect(await held.done).to.equal('QUOTA_EXCEEDED');
    expect(await published(ALICE.user)).to.deep.equal(['b']);
    expect(await stagingFiles(server, ALICE.user), 'nothing kept').to.deep.equal([]);
    // With the name deleted instead, the publish fits (1 of 1 after the delete) and goes through.
    const again = heldUpload(c, 'b', Buffer.from('third'));
    await begun();
    await other.delete('b');
    again.release();
    expect(await again.done).to.equal('OK');
    expect(await published(ALICE.user)).to.deep.equal(['b']);
  });

  it('pipelined uploads of new names in one session: exactly the limit is published, the rest refused (mput stops at the first refusal)', async function () {
    await server.stop();
    server = await TestServer.start({ workers: 1, args: ['--max-files', '3'] });
    const c = await connect();
    const results = await Promise.all(['p1', 'p2', 'p3', 'p4', 'p5'].map((n) => codeOf(c.uploadBuffer(n, Buffer.from(n)))));
    expect(results.filter((r) => r === 'OK')).to.have.length(3);
    expect(results.filter((r) => r === 'QUOTA_EXCEEDED')).to.have.length(2);
    expect(await published(ALICE.user)).to.have.length(3);
    const files = await localFiles(['m1', 'm2']);
    const mput = await runCli(['mput', ...files], opts());
    expect(mput.code, describeRun(mput)).to.equal(1);
    expect(mput.stderr).to.include('a new file would exceed your file quota: 3 of 3 files (QUOTA_EXCEEDED)');
    expect(await published(ALICE.user)).to.have.length(3);
  });

  it('over the protocol: `offset` answers QUOTA_EXCEEDED with files and maxFiles before any data; for a name that exists it answers ok', async function () {
    const c = await connect();
    for (const name of ['a', 'b', 'c']) await c.uploadBuffer(name, Buffer.from(name));
    const raw = await RawClient.login(server.port, ALICE.user, ALICE.password);
    try {
      const sha256 = createHash('sha256').update('x').digest('hex');
      const refused = await raw.request({ op: 'offset', name: 'new', size: 1, sha256 });
      expect(refused).to.include({ status: 'error', code: 'QUOTA_EXCEEDED', files: 3, maxFiles: 3 });
      expect(refused!['message']).to.equal('new: a new file would exceed your file quota: 3 of 3 files');
      expect(await raw.request({ op: 'offset', name: 'a', size: 1, sha256 })).to.include({ status: 'ok', offset: 0 });
    } finally {
      raw.close();
    }
  });

  it('renaming is never refused (it adds no file); rename --force onto a taken name frees one', async function () {
    const c = await connect();
    for (const name of ['a', 'b', 'c']) await c.uploadBuffer(name, Buffer.from(name));
    await c.rename('a', 'a2');
    expect(await codeOf(c.uploadBuffer('d', Buffer.from('d')))).to.equal('QUOTA_EXCEEDED');
    const mv = await runCli(['mv', '--force', 'a2', 'b'], opts());
    expect(mv.code, describeRun(mv)).to.equal(0);
    await c.uploadBuffer('d', Buffer.from('d'));
    expect(await published(ALICE.user)).to.deep.equal(['b', 'c', 'd']);
  });

  it('an unsized upload (fts upload - NAME) of a new name is refused at once, even an empty one; replacing a file by one works', async function () {
    const c = await connect();
    for (const name of ['a', 'b', 'c']) await c.uploadBuffer(name, Buffer.from(name));
    const piped = await runCli(['upload', '-', 'new'], { ...opts(), input: randomBytes(100_000) });
    expect(piped.code, describeRun(piped)).to.equal(1);
    expect(piped.stderr).to.include('new: a new file would exceed your file quota: 3 of 3 files (QUOTA_EXCEEDED)');
    expect(await codeOf(c.uploadStream(Readable.from([]), 'empty')), 'an empty stream is a file too').to.equal('QUOTA_EXCEEDED');
    const over = await runCli(['upload', '-', 'b'], { ...opts(), input: 'new b' });
    expect(over.code, describeRun(over)).to.equal(0);
    expect(await published(ALICE.user)).to.deep.equal(['a', 'b', 'c']);
    expect((await c.downloadBuffer('b')).data.toString()).to.equal('new b');
    expect(await stagingFiles(server, ALICE.user)).to.deep.equal([]);
  });
});

describe('file-count quotas per user (USER:SIZE/FILES in --quota-file), and their reload', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  let quotaFile: string;

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-file-quota-file-'));
    quotaFile = path.join(local, 'quotas.txt');
    // alice: 1 file and no byte limit; bob: his own 1 MiB, and --max-files.
    await writeFile(quotaFile, 'alice:off/1\nbob:1M\n');
    server = await TestServer.start({ workers: 2, args: ['--max-files', '2', '--quota-file', quotaFile] });
  });

  afterEach(async function () {
    await server.stop();
    await cleanupLocal();
  });

  it('a line with FILES gives that user their own limit, a line without it keeps --max-files; fts-admin usage shows them; reload changes them', async function () {
    const alice = { port: server.port, user: ALICE.user, password: ALICE.password };
    const bob = { port: server.port, user: BOB.user, password: BOB.password };
    expect((await runCli(['upload', '-', 'a1'], { ...alice, input: 'a' })).code).to.equal(0);
    const refused = await runCli(['upload', '-', 'a2'], { ...alice, input: 'a' });
    expect(refused.code, describeRun(refused)).to.equal(1);
    expect(refused.stderr).to.include('1 of 1 files (QUOTA_EXCEEDED)');
    for (const name of ['b1', 'b2']) expect((await runCli(['upload', '-', name], { ...bob, input: 'b' })).code).to.equal(0);
    expect((await runCli(['upload', '-', 'b3'], { ...bob, input: 'b' })).stderr).to.include('2 of 2 files (QUOTA_EXCEEDED)');
    const table = await runAdmin(server.adminSocket, ['usage']);
    expect(table.code, table.stderr).to.equal(0);
    expect(table.stdout).to.equal(
      [
        'USER   USED    QUOTA  USE%  FILES  MAX FILES  PARTIAL',
        'alice   1 B     none     -      1          1      0 B',
        'bob     2 B  1.0 MiB  0.0%      2          2      0 B',
        '',
      ].join('\n'),
    );
    const json = await runAdmin(server.adminSocket, ['usage', '--json']);
    expect(JSON.parse(json.stdout)).to.deep.equal([
      { user: 'alice', used: 1, files: 1, partial: 0, quota: null, maxFiles: 1 },
      { user: 'bob', used: 2, files: 2, partial: 0, quota: 1024 * 1024, maxFiles: 2 },
    ]);
    await writeFile(quotaFile, 'alice:off/off\nbob:1M/2/3\n');
    const bad = await runAdmin(server.adminSocket, ['reload']);
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.include(`quota file ${quotaFile}: line 2: SIZE must be`);
    await writeFile(quotaFile, 'alice:off/off\n');
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect((await runCli(['upload', '-', 'a2'], { ...alice, input: 'a' })).code, 'alice: no file limit now').to.equal(0);
    expect((await runCli(['upload', '-', 'b3'], { ...bob, input: 'b' })).code, 'bob: still --max-files').to.equal(1);
  });

  it('fts-admin usage lists the users it can read and names, on stderr, one whose directory it cannot (not a directory here)', async function () {
    const alice = { port: server.port, user: ALICE.user, password: ALICE.password };
    expect((await runCli(['upload', '-', 'a1'], { ...alice, input: 'a' })).code).to.equal(0);
    const bobDir = path.join(server.storage, BOB.user);
    await rm(bobDir, { recursive: true, force: true });
    await writeFile(bobDir, 'not a directory');
    const table = await runAdmin(server.adminSocket, ['usage', '--json']);
    expect(table.code, table.stderr).to.equal(0);
    expect((JSON.parse(table.stdout) as Array<{ user: string }>).map((u) => u.user)).to.deep.equal([ALICE.user]);
    expect(table.stderr).to.match(/^fts-admin: warning: not listed, could not be read: bob: usage: .*\n$/);
  });
});
