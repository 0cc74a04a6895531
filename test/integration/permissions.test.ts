/**
 * Per-user permissions (--permissions-file, FTS_PERMISSIONS_FILE), end to end: real fts-server processes on
 * port 0, the `fts` CLI, the library client, raw frames and `fts-admin reload`.
 *
 *   l list · r download, view · w upload to a free name, offset · o an upload or a rename --force onto a
 *   taken name · m rename · d delete; usage, partials, discard, noop and quit need none.
 *
 * A refusal is the non-fatal PERMISSION_DENIED (the CLI exits 1): the session goes on, and a refused
 * upload's data is still read, so the next request on the connection works. An upload without "o" onto a
 * taken name is refused when it starts (`offset` before any data) and again at publish, under the name's
 * lock. The auth reply carries the user's letters. A malformed file stops the server from starting (exit 1)
 * and makes `fts-admin reload` fail (exit 1) with the old rules kept.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { runAdmin, sessionsJson } from '../helpers/admin-cli.js';
import { describeRun, runCli, type CliResult } from '../helpers/cli.js';
import { codeOf, stagingFiles } from '../helpers/common.js';
import { runServerOnce } from '../helpers/lifecycle-spawn.js';
import { exists, sha256, waitUntil } from '../helpers/lifecycle-util.js';
import { dataFrames, RawClient } from '../helpers/raw-client.js';
import { TestServer, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { encodeHeader } from '../../protocol/index.js';
import { ScramClient } from '../../protocol/scram.js';

const MIB = 1024 * 1024;

interface PermUser extends TestUser {
  /** The letters the server grants this user (the auth reply's `perms`). */
  perms: string;
}

/** One user per kind of rule; `guest` is not named and gets the `*` line. */
const U = {
  full: { user: 'full', password: 'full-pw-7Qx', perms: 'lrwomd' },
  reader: { user: 'reader', password: 'reader-pw-3Kd', perms: 'lr' },
  writer: { user: 'writer', password: 'writer-pw-9Lm', perms: 'w' },
  replacer: { user: 'replacer', password: 'replacer-pw-2Zt', perms: 'lwo' },
  mover: { user: 'mover', password: 'mover-pw-5Hc', perms: 'lm' },
  moverOver: { user: 'moverover', password: 'moverover-pw-8Vb', perms: 'lom' },
  deleter: { user: 'deleter', password: 'deleter-pw-4Jn', perms: 'ld' },
  none: { user: 'nobody', password: 'nobody-pw-6Rw', perms: '' },
  guest: { user: 'guest', password: 'guest-pw-1Sy', perms: 'r' },
} satisfies Record<string, PermUser>;

const USERS: PermUser[] = Object.values(U);

/** The rules of U, in several spellings (letters out of order, spaces, CRLF, comments). */
const PERMISSIONS_TEXT = [
  '# who may do what',
  'full:dmowrl',
  'reader: rl',
  '',
  'writer:w\r',
  '  # replacers may also replace',
  'replacer:owl',
  'mover:ml',
  'moverover:mol',
  'deleter:dl',
  'nobody:-',
  '*:r',
  '',
].join('\n');

/** The users the file names (all but the guest). */
const NAMED_USERS = USERS.length - 1;

/** `fts: ... (PERMISSION_DENIED)`, one line, on stderr. */
const DENIED = /^fts: [^\n]*\(PERMISSION_DENIED\)\n$/;

/** The auth reply of a plain login on a raw connection (which must succeed). */
async function authReply(server: TestServer, user: TestUser): Promise<Record<string, unknown>> {
  const { client } = await RawClient.open(server.port);
  try {
    return await client.auth(user.user, user.password);
  } finally {
    client.close();
  }
}

/** The final auth reply of a SCRAM-SHA-256 login (the mechanism the CLI and library use) on a raw connection. */
async function scramAuthReply(server: TestServer, user: TestUser): Promise<Record<string, unknown>> {
  const { client } = await RawClient.open(server.port);
  try {
    const scram = new ScramClient(user.user, user.password);
    await client.send({ op: 'auth', id: 1, mech: 'scram-sha-256', data: scram.first });
    const challenge = await client.nextHeader();
    expect(challenge, 'server-first-message').to.include({ status: 'continue', id: 1 });
    const clientFinal = await scram.final(String(challenge['data']));
    expect(clientFinal, 'a well-formed server-first-message').to.not.equal(null);
    await client.send({ op: 'auth', id: 1, mech: 'scram-sha-256', data: clientFinal });
    const reply = await client.nextHeader();
    expect(reply, JSON.stringify(reply)).to.include({ status: 'ok' });
    expect(scram.verifyServer(String(reply['data'])), 'the server signature').to.equal(true);
    return reply;
  } finally {
    client.close();
  }
}

/** fts_transfer_bytes_total{direction="upload"} from the server's /metrics (all workers). */
async function uploadedBytes(server: TestServer): Promise<number> {
  const line = server.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on http'));
  const res = await fetch(`http://127.0.0.1:${String(line?.['port'])}/metrics`, { signal: AbortSignal.timeout(20_000) });
  const m = /^fts_transfer_bytes_total\{direction="upload"\} (\d+)$/m.exec(await res.text());
  expect(m, 'fts_transfer_bytes_total{direction="upload"} in /metrics').to.not.equal(null);
  return Number(m![1]);
}

describe('per-user permissions (--permissions-file)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  let permissionsFile: string;
  const clients: FtsClient[] = [];
  const raws: RawClient[] = [];

  /** Runs `fts` as `user` against the server, in the local temp directory. */
  const fts = (user: TestUser, args: string[]): Promise<CliResult> => runCli(args, { port: server.port, user: user.user, password: user.password, cwd: local });

  /** A library client logged in as `user` (closed by afterEach). */
  async function login(user: TestUser): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(user.user, user.password);
    return c;
  }

  /** A raw connection logged in as `user` (closed by afterEach). */
  async function rawLogin(user: TestUser): Promise<RawClient> {
    const r = await RawClient.login(server.port, user.user, user.password);
    raws.push(r);
    return r;
  }

  /** Puts a file straight into <storage>/<user>/ (as if uploaded earlier). */
  async function seed(user: TestUser, name: string, content: string | Buffer): Promise<void> {
    await mkdir(path.join(server.storage, user.user), { recursive: true, mode: 0o700 });
    await writeFile(path.join(server.storage, user.user, name), content, { mode: 0o600 });
  }

  const stored = (user: TestUser, name: string): Promise<string> => readFile(path.join(server.storage, user.user, name), 'utf8');
  const storedNames = async (user: TestUser): Promise<string[]> => (await readdir(path.join(server.storage, user.user)).catch(() => [])).sort();

  async function localFile(name: string, content: string | Buffer): Promise<string> {
    const file = path.join(local, name);
    await writeFile(file, content);
    return file;
  }

  function expectDenied(r: CliResult, what: string): void {
    expect(r.code, `${what}: ${describeRun(r)}`).to.equal(1);
    expect(r.stderr, `${what}: ${describeRun(r)}`).to.match(DENIED);
  }

  function expectOk(r: CliResult, what: string): void {
    expect(r.code, `${what}: ${describeRun(r)}`).to.equal(0);
  }

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-perms-'));
    permissionsFile = path.join(local, 'permissions.txt');
    await writeFile(permissionsFile, PERMISSIONS_TEXT);
    server = await TestServer.start({ users: USERS, args: ['--permissions-file', permissionsFile] });
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    for (const r of raws.splice(0)) r.destroy();
    await server.stop();
    await cleanupLocal();
  });

  it('the auth reply carries the letters the user has, in canonical order ("" for none; the * line for users not named)', async function () {
    for (const u of USERS) {
      expect(await authReply(server, u), `${u.user} (plain)`).to.include({ status: 'ok', user: u.user, perms: u.perms });
      expect(await scramAuthReply(server, u), `${u.user} (scram-sha-256)`).to.include({ user: u.user, perms: u.perms });
    }
    // The library client keeps them (SessionInfo.permissions).
    for (const u of [U.full, U.reader, U.none, U.guest]) expect((await login(u)).session?.permissions, `${u.user} (library)`).to.equal(u.perms);
    // A login with the token of an earlier one: the same.
    const c = await login(U.reader);
    const token = c.session?.token;
    expect(token, 'a session token').to.be.a('string');
    const { client } = await RawClient.open(server.port);
    raws.push(client);
    await client.send({ op: 'auth', id: 1, mech: 'token', token: token! });
    expect(await client.nextHeader()).to.include({ status: 'ok', user: U.reader.user, perms: 'lr' });
  });

  it('l: list is allowed with l and refused without (CLI exit 1, PERMISSION_DENIED); the session goes on', async function () {
    await seed(U.reader, 'a.txt', 'A');
    const ok = await fts(U.reader, ['list']);
    expectOk(ok, 'reader list');
    expect(ok.out).to.equal('a.txt\n');
    await seed(U.writer, 'w.txt', 'W');
    const denied = await fts(U.writer, ['ls', '--long']);
    expectDenied(denied, 'writer list');
    expect(denied.stderr).to.include('writer may not list files (permission "l"; the server grants "w")');
    expectDenied(await fts(U.guest, ['list']), 'guest (*:r) list');
    // Over the protocol: non-fatal, the connection stays usable.
    const c = await login(U.writer);
    expect(await codeOf(c.list())).to.equal('PERMISSION_DENIED');
    expect(c.connected).to.equal(true);
    await c.noop();
    expect((await c.usage()).files, 'usage needs no permission').to.equal(1);
  });

  it('a long list shows the recorded SHA-256 of a large file only to a user who may read it (r): a digest confirms a guess of the content, as hash does', async function () {
    const big = randomBytes(9 * 1024 * 1024);
    for (const [u, shown] of [[U.replacer, false], [U.full, true]] as const) {
      const c = await login(u);
      await c.uploadBuffer('big.bin', big);
      const [entry] = (await c.list({ long: true })).filter((e) => e.name === 'big.bin');
      expect(entry, u.user).to.include({ size: big.length });
      if (shown) expect(entry?.sha256, `${u.user} (${u.perms})`).to.equal(sha256(big));
      else expect(entry?.sha256, `${u.user} (${u.perms})`).to.equal(undefined);
    }
  });

  it('r: download and view are allowed with r and refused without; a refused download leaves no local file', async function () {
    const content = randomBytes(5000);
    await seed(U.reader, 'doc.bin', content);
    expectOk(await fts(U.reader, ['download', 'doc.bin', 'got.bin']), 'reader download');
    expect((await readFile(path.join(local, 'got.bin'))).equals(content)).to.equal(true);
    const view = await fts(U.reader, ['view', 'doc.bin']);
    expectOk(view, 'reader view');
    expect(view.stdout.equals(content.subarray(0, 1024))).to.equal(true);
    await seed(U.guest, 'g.txt', 'guest file');
    const guestView = await fts(U.guest, ['view', 'g.txt']);
    expectOk(guestView, 'guest (*:r) view');
    expect(guestView.out).to.equal('guest file');

    await seed(U.writer, 'doc.bin', content);
    const denied = await fts(U.writer, ['download', 'doc.bin', 'denied.bin']);
    expectDenied(denied, 'writer download');
    expect(denied.stderr).to.include('permission "r"');
    expect((await readdir(local)).filter((n) => n.startsWith('denied')), 'no local file or .part').to.deep.equal([]);
    expectDenied(await fts(U.writer, ['view', 'doc.bin']), 'writer view');
    expectDenied(await fts(U.none, ['get', 'doc.bin']), 'nobody download');
  });

  it('w: an upload to a free name is allowed with w and refused without; nothing of a refused upload is stored or staged', async function () {
    const file = await localFile('up.txt', 'uploaded');
    expectOk(await fts(U.writer, ['upload', file, 'new.txt']), 'writer upload');
    expect(await stored(U.writer, 'new.txt')).to.equal('uploaded');
    const big = await localFile('big.bin', randomBytes(2 * MIB));
    expectOk(await fts(U.writer, ['upload', big, 'big.bin']), 'writer upload of a large (streamed) file');
    expect((await readFile(path.join(server.storage, U.writer.user, 'big.bin'))).equals(await readFile(big))).to.equal(true);

    const denied = await fts(U.reader, ['upload', file, 'new.txt']);
    expectDenied(denied, 'reader upload');
    expect(denied.stderr).to.include('reader may not upload files (permission "w"; the server grants "lr")');
    expectDenied(await fts(U.reader, ['upload', big, 'big.bin']), 'reader upload of a large file (refused at offset)');
    expectDenied(await fts(U.mover, ['upload', file]), 'mover upload');
    expect(await storedNames(U.reader)).to.deep.equal([]);
    expect(await stagingFiles(server, U.reader.user)).to.deep.equal([]);
  });

  it('partials and discard need no permission: what a user stores they may always see and free', async function () {
    for (const u of [U.writer, U.reader, U.none]) {
      expectOk(await fts(u, ['partials']), `${u.user} partials`);
      expectOk(await fts(u, ['discard', '--all']), `${u.user} discard --all (nothing to discard)`);
      const c = await login(u);
      expect(await c.partials()).to.deep.equal([]);
      expect(await codeOf(c.discard('0'.repeat(64))), `${u.user} discard of nothing: past any check`).to.equal('NOT_FOUND');
      await c.noop();
    }
  });

  it('o: an upload onto a taken name needs o as well as w (refused: the old file stays, nothing staged); with o it replaces', async function () {
    await seed(U.writer, 'taken.txt', 'old');
    const file = await localFile('new.txt', 'new content');
    const denied = await fts(U.writer, ['upload', file, 'taken.txt']);
    expectDenied(denied, 'writer upload onto a taken name');
    expect(denied.stderr).to.include('permission "o"');
    expect(await stored(U.writer, 'taken.txt')).to.equal('old');
    expect(await stagingFiles(server, U.writer.user)).to.deep.equal([]);

    await seed(U.replacer, 'taken.txt', 'old');
    expectOk(await fts(U.replacer, ['upload', file, 'taken.txt']), 'replacer upload onto a taken name');
    expect(await stored(U.replacer, 'taken.txt')).to.equal('new content');
    // o alone is not w: not even a free name.
    expectDenied(await fts(U.moverOver, ['upload', file, 'free.txt']), 'moverover (o without w) upload');
  });

  it('without o, uploading exactly what a name holds again is ok (a repeat stays harmless); other bytes of the same size are refused at publish', async function () {
    const small = await localFile('same.txt', 'same bytes');
    expectOk(await fts(U.writer, ['upload', small, 'same.txt']), 'first upload');
    const mtime = (await stat(path.join(server.storage, U.writer.user, 'same.txt'))).mtimeMs;
    expectOk(await fts(U.writer, ['upload', small, 'same.txt']), 'the same bytes again');
    expect((await stat(path.join(server.storage, U.writer.user, 'same.txt'))).mtimeMs, 'nothing was replaced').to.equal(mtime);
    // 9 MiB: judged by the digest recorded at the first publish (a streamed upload: no digest before the data).
    const big = await localFile('same.bin', randomBytes(9 * MIB));
    expectOk(await fts(U.writer, ['upload', big, 'same.bin']), 'first large upload');
    expectOk(await fts(U.writer, ['upload', big, 'same.bin']), 'the same large file again');
    const other = await localFile('other.bin', randomBytes(9 * MIB));
    const denied = await fts(U.writer, ['upload', other, 'same.bin']);
    expectDenied(denied, 'other bytes of the same size');
    expect((await readFile(path.join(server.storage, U.writer.user, 'same.bin'))).equals(await readFile(big))).to.equal(true);
    expect(await stagingFiles(server, U.writer.user), 'the refused bytes are not kept').to.deep.equal([]);
  });

  it('o: a large upload onto a taken name without o is refused by `offset`, before any data is sent', async function () {
    await seed(U.writer, 'big.bin', 'old');
    const big = await localFile('big.bin', randomBytes(2 * MIB));
    const before = await uploadedBytes(server);
    const denied = await fts(U.writer, ['upload', big, 'big.bin']);
    expectDenied(denied, 'writer large upload onto a taken name');
    expect(denied.stderr).to.include('permission "o"');
    expect(server.lines.some((l) => l['event'] === 'offset' && l['user'] === U.writer.user && l['file'] === 'big.bin' && l['code'] === 'PERMISSION_DENIED'), 'refused at `offset`').to.equal(true);
    expect(server.lines.some((l) => l['event'] === 'upload' && l['user'] === U.writer.user), 'no upload request was sent').to.equal(false);
    expect(await uploadedBytes(server), 'no upload bytes received').to.equal(before);
    expect(await stored(U.writer, 'big.bin')).to.equal('old');
    expect(await stagingFiles(server, U.writer.user)).to.deep.equal([]);
    // With o the same upload replaces the file.
    await seed(U.replacer, 'big.bin', 'old');
    expectOk(await fts(U.replacer, ['upload', big, 'big.bin']), 'replacer large upload onto a taken name');
    expect((await readFile(path.join(server.storage, U.replacer.user, 'big.bin'))).equals(await readFile(big))).to.equal(true);
  });

  it('m: rename needs m; onto a taken name without --force it is ALREADY_EXISTS; with --force it needs o too, and nothing changes without it', async function () {
    await seed(U.mover, 'a.txt', 'A');
    await seed(U.mover, 'b.txt', 'B');
    expectOk(await fts(U.mover, ['rename', 'a.txt', 'c.txt']), 'mover rename to a free name');
    expect(await storedNames(U.mover)).to.deep.equal(['b.txt', 'c.txt']);
    const exists = await fts(U.mover, ['rename', 'c.txt', 'b.txt']);
    expect(exists.code, describeRun(exists)).to.equal(1);
    expect(exists.stderr).to.include('(ALREADY_EXISTS)');
    const forced = await fts(U.mover, ['mv', 'c.txt', 'b.txt', '--force']);
    expectDenied(forced, 'mover rename --force onto a taken name');
    expect(forced.stderr).to.include('permission "o"');
    expect(await stored(U.mover, 'b.txt')).to.equal('B');
    expect(await stored(U.mover, 'c.txt')).to.equal('A');
    expectOk(await fts(U.mover, ['rename', 'c.txt', 'd.txt', '--force']), 'mover rename --force onto a free name');
    expect(await storedNames(U.mover)).to.deep.equal(['b.txt', 'd.txt']);

    await seed(U.moverOver, 'a.txt', 'A');
    await seed(U.moverOver, 'b.txt', 'B');
    const notForced = await fts(U.moverOver, ['rename', 'a.txt', 'b.txt']);
    expect(notForced.stderr, 'with o, still ALREADY_EXISTS without --force').to.include('(ALREADY_EXISTS)');
    expectOk(await fts(U.moverOver, ['rename', 'a.txt', 'b.txt', '--force']), 'moverover rename --force onto a taken name');
    expect(await storedNames(U.moverOver)).to.deep.equal(['b.txt']);
    expect(await stored(U.moverOver, 'b.txt')).to.equal('A');

    await seed(U.reader, 'a.txt', 'A');
    const denied = await fts(U.reader, ['rename', 'a.txt', 'z.txt']);
    expectDenied(denied, 'reader rename');
    expect(denied.stderr).to.include('permission "m"');
    expect(await storedNames(U.reader)).to.deep.equal(['a.txt']);
  });

  it('d: delete is allowed with d and refused without (the file stays)', async function () {
    await seed(U.deleter, 'x.txt', 'X');
    expectOk(await fts(U.deleter, ['delete', 'x.txt']), 'deleter delete');
    expect(await storedNames(U.deleter)).to.deep.equal([]);
    await seed(U.replacer, 'x.txt', 'X');
    const denied = await fts(U.replacer, ['rm', 'x.txt']);
    expectDenied(denied, 'replacer delete');
    expect(denied.stderr).to.include('permission "d"');
    expect(await stored(U.replacer, 'x.txt')).to.equal('X');
  });

  it('-: a user with no permission may still log in, ask usage, noop and quit; everything else is refused', async function () {
    await seed(U.none, 'f.txt', 'F');
    const usage = await fts(U.none, ['usage', '--json']);
    expectOk(usage, 'nobody usage');
    expect(JSON.parse(usage.out)).to.include({ used: 1, files: 1 });
    const file = await localFile('n.txt', 'n');
    for (const args of [['list'], ['download', 'f.txt', 'g.txt'], ['view', 'f.txt'], ['upload', file, 'n.txt'], ['upload', file, 'f.txt'], ['rename', 'f.txt', 'h.txt'], ['delete', 'f.txt']]) {
      expectDenied(await fts(U.none, args), `nobody ${args[0]!}`);
    }
    expect(await storedNames(U.none)).to.deep.equal(['f.txt']);
    const c = await login(U.none);
    await c.noop();
    await c.quit();
  });

  it('a refused upload still has its data read: pipelined requests behind it on the same connection work (library client)', async function () {
    await seed(U.writer, 'taken.bin', 'old');
    const c = await login(U.writer);
    const small = randomBytes(10_000); // gathered in memory by the server (buffered path)
    const large = randomBytes(300_000); // streamed into staging by the server
    const fresh = randomBytes(200_000);
    // All sent back to back, without waiting for a reply.
    const results = await Promise.all([
      codeOf(c.uploadBuffer('taken.bin', small)),
      codeOf(c.noop()),
      codeOf(c.uploadBuffer('taken.bin', large)),
      codeOf(c.uploadBuffer('fresh.bin', fresh)),
      codeOf(c.usage()),
    ]);
    expect(results).to.deep.equal(['PERMISSION_DENIED', 'OK', 'PERMISSION_DENIED', 'OK', 'OK']);
    expect(c.connected).to.equal(true);
    expect(await stored(U.writer, 'taken.bin')).to.equal('old');
    expect((await readFile(path.join(server.storage, U.writer.user, 'fresh.bin'))).equals(fresh)).to.equal(true);
    expect(await stagingFiles(server, U.writer.user)).to.deep.equal([]);
    // A streamed upload (digest in a trailer after the data), sent without asking `offset` first: its data
    // and trailer are read too.
    const bigFile = await localFile('big.bin', randomBytes(2 * MIB));
    const [streamed, after] = await Promise.all([codeOf(c.upload(bigFile, 'taken.bin', { resume: false })), codeOf(c.noop())]);
    expect([streamed, after]).to.deep.equal(['PERMISSION_DENIED', 'OK']);
    expect(server.lines.some((l) => l['event'] === 'offset' && l['user'] === U.writer.user), 'no offset asked').to.equal(false);
    expect(await stored(U.writer, 'taken.bin')).to.equal('old');
    // The reader (no w at all): the same.
    const r = await login(U.reader);
    const [refused, listed] = await Promise.all([codeOf(r.uploadBuffer('x.bin', large)), r.list()]);
    expect(refused).to.equal('PERMISSION_DENIED');
    expect(listed).to.deep.equal([]);
  });

  it('a refused upload still has its data read: raw frames, the upload then a noop in one write', async function () {
    await seed(U.writer, 'taken.bin', 'old');
    const r = await rawLogin(U.writer);
    const data = randomBytes(200_000);
    await r.write(
      encodeHeader({ op: 'upload', id: 7, name: 'taken.bin', size: data.length, sha256: sha256(data) }),
      dataFrames(data),
      encodeHeader({ op: 'noop', id: 8 }),
    );
    const refused = (await r.reply()).final;
    expect(refused).to.include({ status: 'error', id: 7, code: 'PERMISSION_DENIED' });
    expect(String(refused['message'])).to.include('permission "o"');
    expect((await r.reply()).final).to.include({ status: 'ok', id: 8 });
    const audit = await server.waitForLog((l) => l['event'] === 'upload' && l['user'] === U.writer.user && l['code'] === 'PERMISSION_DENIED');
    expect(audit['bytes'], 'every byte of the refused upload was read').to.equal(data.length);
    expect(await stored(U.writer, 'taken.bin')).to.equal('old');
  });

  it('a name taken while an upload without o is in progress: the publish fails with PERMISSION_DENIED and the other file stays (raw, paced by the test)', async function () {
    const mine = randomBytes(256 * 1024);
    const first = await rawLogin(U.writer);
    await first.send({ op: 'upload', id: 5, name: 'race.bin', size: mine.length, sha256: sha256(mine) });
    await first.sendData(mine.subarray(0, 64 * 1024));
    // The server has started it (the name was free then) and received the first frame.
    await waitUntil('the first upload to be in progress', async () =>
      (await sessionsJson(server.adminSocket)).some((s) => s.user === U.writer.user && s.op === 'upload' && s.file === 'race.bin' && s.bytes >= 64 * 1024),
    );
    const second = await login(U.writer);
    await second.uploadBuffer('race.bin', Buffer.from('theirs'));
    expect(await stored(U.writer, 'race.bin')).to.equal('theirs');
    await first.write(dataFrames(mine.subarray(64 * 1024)));
    const reply = (await first.reply(30_000)).final;
    expect(reply).to.include({ status: 'error', id: 5, code: 'PERMISSION_DENIED' });
    expect(String(reply['message'])).to.include('permission "o"');
    expect(await stored(U.writer, 'race.bin'), 'nothing replaced').to.equal('theirs');
    expect((await first.request({ op: 'noop', id: 6 }))?.['status'], 'the session goes on').to.equal('ok');
    // A retry asks `offset`, which the taken name refuses too.
    expect(await first.request({ op: 'offset', id: 9, name: 'race.bin', size: mine.length, sha256: sha256(mine) })).to.include({ status: 'error', code: 'PERMISSION_DENIED' });
    // With o, the same race replaces the file.
    const other = await rawLogin(U.replacer);
    await other.send({ op: 'upload', id: 5, name: 'race.bin', size: mine.length, sha256: sha256(mine) });
    await other.sendData(mine.subarray(0, 64 * 1024));
    await waitUntil('the replacer upload to be in progress', async () =>
      (await sessionsJson(server.adminSocket)).some((s) => s.user === U.replacer.user && s.op === 'upload' && s.bytes >= 64 * 1024),
    );
    const theirs = await login(U.replacer);
    await theirs.uploadBuffer('race.bin', Buffer.from('theirs'));
    await other.write(dataFrames(mine.subarray(64 * 1024)));
    expect((await other.reply(30_000)).final).to.include({ status: 'ok', id: 5 });
    expect((await readFile(path.join(server.storage, U.replacer.user, 'race.bin'))).equals(mine)).to.equal(true);
  });

  it('fts-admin reload applies a changed file to open sessions from their next request; the auth reply of a new login shows it', async function () {
    const guest = await login(U.guest);
    const reader = await login(U.reader);
    await seed(U.reader, 'r.txt', 'R');
    expect(await codeOf(guest.list()), 'guest before').to.equal('PERMISSION_DENIED');
    expect((await reader.downloadBuffer('r.txt')).data.toString()).to.equal('R');
    // The guest line (*) now lists; the reader loses r; the writer line goes (writer falls back to *).
    await writeFile(permissionsFile, 'reader:l\n*:lr\n');
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect(reloaded.stdout).to.include('permissions reloaded: 1 users with their own permissions\n');
    expect(await guest.list(), 'the same guest session, after the reload').to.deep.equal([]);
    expect(await codeOf(reader.downloadBuffer('r.txt')), 'the same reader session, after the reload').to.equal('PERMISSION_DENIED');
    expect((await reader.list()).map((e) => e.name)).to.deep.equal(['r.txt']);
    expect(await authReply(server, U.writer)).to.include({ perms: 'lr' });
    expect(await authReply(server, U.reader)).to.include({ perms: 'l' });
    const file = await localFile('w.txt', 'w');
    expectDenied(await fts(U.writer, ['upload', file]), 'writer upload after the reload');
  });

  it('a line for a user the users file does not have (a misspelt name) is a warning at reload and at start, and is not counted', async function () {
    await writeFile(permissionsFile, 'reader:l\nreadr:lrwomd\n*:lr\nghost:-\n');
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect(reloaded.stdout).to.include('permissions reloaded: 1 users with their own permissions\n');
    expect(reloaded.stderr.split('\n').filter((l) => !l.includes('plaintext password'))).to.deep.equal([
      `fts-admin: warning: permissions file ${permissionsFile} names 2 users not in the users file (readr, ghost): their lines apply to no one; a misspelt name leaves the user it was meant for with the defaults`,
      '',
    ]);
    expect(server.lines.filter((l) => Array.isArray(l['users']) && l['file'] === permissionsFile).map((l) => [l['level'], l['users']])).to.deep.equal([['warn', ['readr', 'ghost']]]);
    expect(await authReply(server, U.reader)).to.include({ perms: 'l' });

    // The same file at start: the server starts, and says so in its log.
    const again = await TestServer.start({ users: USERS, args: ['--permissions-file', permissionsFile] });
    try {
      expect(again.lines.filter((l) => Array.isArray(l['users']) && l['file'] === permissionsFile).map((l) => l['msg'])).to.deep.equal([
        `permissions file ${permissionsFile} names 2 users not in the users file (readr, ghost): their lines apply to no one; a misspelt name leaves the user it was meant for with the defaults`,
      ]);
    } finally {
      await again.stop();
    }
  });

  it('fts-admin reload of a malformed file: exit 1, the file and line named, and the old permissions (and user table) are kept', async function () {
    const guest = await login(U.guest);
    await seed(U.guest, 'g.txt', 'G');
    expect(await codeOf(guest.list())).to.equal('PERMISSION_DENIED');
    // A user added to the users file in the same reload must not appear either.
    await writeFile(server.usersFile, [...USERS, { user: 'late', password: 'late-pw-0Aa' }].map((u) => `${u.user}:${u.password}\n`).join(''), { mode: 0o600 });
    const cases: Array<[string, number, string]> = [
      ['*:lr\nreader:lrr\n', 2, 'PERMS must be letters of "lrwomd", each at most once, or - for none'],
      ['*:lr\nreader:lrx\n', 2, 'PERMS must be letters of "lrwomd", each at most once, or - for none'],
      ['# c\n*:lr\nreader lr\n', 3, 'expected USER:PERMS'],
      ['*:lr\nbad/name:lr\n', 2, '"bad/name" is not a valid user name (or * for everyone else)'],
      ['*:lr\nreader:l\nreader:r\n', 3, 'reader is named twice'],
      ['*:lr\n*:l\n', 2, '* is named twice'],
      ['*:lr\r\nreader:\r\n', 2, 'PERMS must be letters'],
    ];
    for (const [text, line, reason] of cases) {
      await writeFile(permissionsFile, text);
      const refused = await runAdmin(server.adminSocket, ['reload']);
      expect(refused.code, `${JSON.stringify(text)}: ${refused.stderr}`).to.equal(1);
      expect(refused.stderr, JSON.stringify(text)).to.include(`permissions file ${permissionsFile}: line ${line}: ${reason}`);
      expect(refused.stderr).to.include('the old quotas, permissions, rates, networks and user table are kept');
      expect(refused.stdout).to.not.include('permissions reloaded');
    }
    expect(await codeOf(guest.list()), 'the open session keeps the last good rules').to.equal('PERMISSION_DENIED');
    expect((await guest.downloadBuffer('g.txt')).data.toString()).to.equal('G');
    expect(await authReply(server, U.reader)).to.include({ perms: 'lr' });
    expect(await authReply(server, U.guest)).to.include({ perms: 'r' });
    const late = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(late);
    expect(await codeOf(late.auth('late', 'late-pw-0Aa')), 'the new user table was not taken either').to.equal('AUTH_FAILED');
    // A missing file is refused the same way.
    const missing = path.join(local, 'gone.txt');
    await rename(permissionsFile, missing);
    const gone = await runAdmin(server.adminSocket, ['reload']);
    expect(gone.code).to.equal(1);
    expect(gone.stderr).to.include(`permissions file ${permissionsFile}`);
    expect(gone.stderr).to.include('ENOENT');
  });
});

describe('permissions: a name taken while a rate-limited CLI upload is in progress', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  const clients: FtsClient[] = [];

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-perms-rate-'));
    const permissionsFile = path.join(local, 'permissions.txt');
    await writeFile(permissionsFile, 'writer:lw\n');
    // 64 KiB/s per session: a 1 MiB upload takes about 15 s, while another session's small one takes none.
    server = await TestServer.start({ users: [U.writer], args: ['--permissions-file', permissionsFile, '--max-upload-rate', '64K'] });
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
    await cleanupLocal();
  });

  it('the slow upload fails at publish with PERMISSION_DENIED (exit 1) and the name keeps the second upload', async function () {
    const file = path.join(local, 'slow.bin');
    await writeFile(file, randomBytes(MIB));
    const slow = runCli(['upload', file, 'race.bin'], { port: server.port, user: U.writer.user, password: U.writer.password, cwd: local, timeoutMs: 50_000 });
    try {
      await waitUntil(
        'the CLI upload to be in progress',
        async () => (await sessionsJson(server.adminSocket)).some((s) => s.op === 'upload' && s.file === 'race.bin' && s.bytes > 0),
        20_000,
      );
      const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
      clients.push(c);
      await c.auth(U.writer.user, U.writer.password);
      await c.uploadBuffer('race.bin', Buffer.from('second'));
      expect(await readFile(path.join(server.storage, U.writer.user, 'race.bin'), 'utf8')).to.equal('second');
      // The premise of the test: the first upload had not ended when the second was published.
      expect(server.lines.some((l) => l['event'] === 'upload' && l['file'] === 'race.bin' && l['code'] !== undefined), 'the first upload still running').to.equal(false);
    } finally {
      // Never leave the CLI behind (it is bounded by its own timeout).
      await slow.catch(() => undefined);
    }
    const r = await slow;
    expect(r.code, describeRun(r)).to.equal(1);
    expect(r.stderr).to.match(DENIED);
    expect(r.stderr).to.include('permission "o"');
    expect(server.lines.some((l) => l['event'] === 'upload' && l['file'] === 'race.bin' && l['code'] === 'PERMISSION_DENIED'), 'refused by the upload itself, at publish').to.equal(true);
    expect(await readFile(path.join(server.storage, U.writer.user, 'race.bin'), 'utf8'), 'nothing replaced').to.equal('second');
  });
});

describe('permissions: startup, FTS_PERMISSIONS_FILE, and a server without a permissions file', function () {
  this.timeout(60_000);

  let local: string;
  let cleanupLocal: () => Promise<void>;
  let server: TestServer | null = null;

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-perms-start-'));
  });

  afterEach(async function () {
    await server?.stop();
    server = null;
    await cleanupLocal();
  });

  /** Flags for a server that would start (users file, storage and admin socket in the temp dir). */
  async function flags(): Promise<string[]> {
    const users = path.join(local, 'users.txt');
    await writeFile(users, 'alice:alice-secret\n', { mode: 0o600 });
    return ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--workers', '1', '--users', users, '--storage', path.join(local, 'storage'), '--admin-socket', path.join(local, 'admin.sock')];
  }

  it('a malformed permissions file: the server does not start (exit 1), stderr names the file and each bad line', async function () {
    const file = path.join(local, 'permissions.txt');
    await writeFile(file, ['# rules', 'alice:lr', 'bob lr', 'carol:lrx', 'dave:ll', 'alice:w', '*:l', '*:r', '../x:l', 'erin:', ''].join('\n'));
    const r = await runServerOnce([...(await flags()), '--permissions-file', file], { timeoutMs: 20_000 });
    expect(r.timedOut, `stderr: ${r.stderr}`).to.equal(false);
    expect(r.code, `stderr: ${r.stderr}`).to.equal(1);
    const perms = 'PERMS must be letters of "lrwomd", each at most once, or - for none';
    expect(r.stderr).to.equal(
      `fts-server: permissions file ${file}: line 3: expected USER:PERMS; line 4: ${perms}; line 5: ${perms}; line 6: alice is named twice; line 8: * is named twice; line 9: "../x" is not a valid user name (or * for everyone else); line 10: ${perms}\n`,
    );
    expect(await exists(path.join(local, 'admin.sock')), 'never listened').to.equal(false);
  });

  it('the same through FTS_PERMISSIONS_FILE; and a file that cannot be read', async function () {
    const file = path.join(local, 'permissions.txt');
    await writeFile(file, 'alice:lrq\n');
    const r = await runServerOnce(await flags(), { env: { FTS_PERMISSIONS_FILE: file }, timeoutMs: 20_000 });
    expect(r.code, `stderr: ${r.stderr}`).to.equal(1);
    expect(r.stderr).to.equal(`fts-server: permissions file ${file}: line 1: PERMS must be letters of "lrwomd", each at most once, or - for none\n`);
    const missing = path.join(local, 'missing.txt');
    const m = await runServerOnce([...(await flags()), '--permissions-file', missing], { timeoutMs: 20_000 });
    expect(m.code, `stderr: ${m.stderr}`).to.equal(1);
    expect(m.stderr).to.include(`permissions file ${missing}`);
    expect(m.stderr).to.include('ENOENT');
  });

  it('FTS_PERMISSIONS_FILE applies like the flag', async function () {
    const file = path.join(local, 'permissions.txt');
    await writeFile(file, 'alice:rl\n*:-\n');
    server = await TestServer.start({ env: { FTS_PERMISSIONS_FILE: file } });
    expect(await authReply(server, { user: 'alice', password: 'alice-secret' })).to.include({ perms: 'lr' });
    expect(await authReply(server, { user: 'bob', password: 'bob:with:colons' })).to.include({ perms: '' });
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect(reloaded.stdout).to.include('permissions reloaded: 1 users with their own permissions\n');
  });

  it('without a permissions file everyone may do everything; reload says nothing of permissions', async function () {
    server = await TestServer.start({ env: { FTS_PERMISSIONS_FILE: '' } });
    expect(await authReply(server, { user: 'alice', password: 'alice-secret' })).to.include({ perms: 'lrwomd' });
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    try {
      await c.auth('alice', 'alice-secret');
      await c.uploadBuffer('a', Buffer.from('1'));
      await c.uploadBuffer('a', Buffer.from('2'));
      await c.rename('a', 'b');
      expect((await c.list()).map((e) => e.name)).to.deep.equal(['b']);
      await c.delete('b');
    } finally {
      c.close();
    }
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect(reloaded.stdout).to.not.include('permissions');
  });
});
