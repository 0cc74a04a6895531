/**
 * Partial uploads a user can see and discard (PROTOCOL.md §6.10), end to end: a real fts-server (two
 * workers, --partial-ttl 7200), raw sockets for the wire format, the client library, and the real `fts`
 * CLI (`fts partials [--json]`, `fts discard NAME... | --all`).
 *
 * A cut upload is made deterministically: a raw connection sends an upload header and part of its data, the
 * test waits until the server has staged exactly those bytes, then destroys the socket and waits for the
 * upload's audit line (written once the staged bytes were kept). An upload in progress is held at a known
 * point by a small gate proxy that stops forwarding the client's bytes until the test opens it.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { FtsClient, FtsError, ResilientClient, type PartialUpload } from '../../client/index.js';
import { encodeHeader, type Header } from '../../protocol/index.js';
import { stagingKey } from '../../server/storage/staging-keys.js';
import { runAdmin } from '../helpers/admin-cli.js';
import { describeRun, runCli, type CliResult } from '../helpers/cli.js';
import { metricsPortOf, sampleValue, scrape } from '../helpers/hardening-proc.js';
import { sha256, waitUntil } from '../helpers/lifecycle-util.js';
import { dataFrames, RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;
const KiB = 1024;
const MiB = 1024 * KiB;
const TTL_SECONDS = 7200;
const TTL_MS = TTL_SECONDS * 1000;

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * A TCP relay that can hold a connection at a chosen point: the client's bytes past `holdUpAfter` (of the
 * connections `plan` gives one) wait in the relay until openUp(); holdDown() keeps the server's bytes from
 * the client from then on (they are dropped); dropAll() destroys every connection.
 */
class GateProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly #openers = new Set<() => void>();
  readonly #downHolders = new Set<() => void>();
  #connections = 0;
  port = 0;
  /** Resolves once a connection had bytes to hold (it reached its limit). */
  readonly reached: Promise<void>;
  #reached!: () => void;

  private constructor(target: number, plan: (index: number) => { holdUpAfter?: number }) {
    this.reached = new Promise((resolve) => {
      this.#reached = resolve;
    });
    this.#server = net.createServer((client) => {
      const { holdUpAfter } = plan(this.#connections++);
      const upstream = net.connect({ host: '127.0.0.1', port: target });
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      let open = holdUpAfter === undefined;
      let forwarded = 0;
      const held: Buffer[] = [];
      const opener = (): void => {
        open = true;
        for (const chunk of held.splice(0)) upstream.write(chunk);
      };
      this.#openers.add(opener);
      client.on('data', (chunk: Buffer) => {
        if (open) {
          upstream.write(chunk);
          return;
        }
        const room = Math.max(0, holdUpAfter! - forwarded);
        if (room > 0) {
          const part = chunk.subarray(0, room);
          upstream.write(part);
          forwarded += part.length;
        }
        if (chunk.length > room) {
          held.push(chunk.subarray(room));
          this.#reached();
        }
      });
      let downHeld = false;
      this.#downHolders.add(() => {
        downHeld = true;
      });
      upstream.on('data', (chunk: Buffer) => {
        if (!downHeld) client.write(chunk);
      });
    });
  }

  static async start(target: number, plan: (index: number) => { holdUpAfter?: number }): Promise<GateProxy> {
    const proxy = new GateProxy(target, plan);
    await new Promise<void>((resolve) => proxy.#server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    proxy.port = (proxy.#server.address() as net.AddressInfo).port;
    return proxy;
  }

  /** Forwards what was held, and everything from now on. */
  openUp(): void {
    for (const open of this.#openers) open();
  }

  /** From now on, nothing the server sends on the current connections reaches the client. */
  holdDown(): void {
    for (const hold of this.#downHolders) hold();
  }

  dropAll(): void {
    for (const s of this.#sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

describe('partial uploads: partials and discard (end to end)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let dir = '';
  let cleanDir: () => Promise<void> = async () => undefined;
  const raws: RawClient[] = [];
  const clients: Array<{ close(): void }> = [];
  const proxies: GateProxy[] = [];

  before(async function () {
    server = await TestServer.start({ workers: 2, args: ['--partial-ttl', String(TTL_SECONDS)] });
    ({ dir, cleanup: cleanDir } = await tempDir('fts-partials-'));
  });

  after(async function () {
    await server?.stop();
    await cleanDir();
  });

  afterEach(async function () {
    for (const r of raws.splice(0)) r.destroy();
    for (const c of clients.splice(0)) c.close();
    for (const p of proxies.splice(0)) await p.close();
    // Every test starts without partial uploads: what one left is discarded (and checked gone).
    for (const user of [ALICE, BOB]) {
      const c = await login(user);
      for (const p of await c.partials()) await c.discard(p.key).catch(() => undefined);
      expect(await c.partials(), `${user.user}'s partials after the test`).to.deep.equal([]);
    }
  });

  async function login(user: TestUser = ALICE): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(user.user, user.password);
    return c;
  }

  async function rawLogin(user: TestUser = ALICE): Promise<RawClient> {
    const r = await RawClient.login(server.port, user.user, user.password);
    raws.push(r);
    return r;
  }

  const cli = (args: string[], user: TestUser = ALICE): Promise<CliResult> => runCli(args, { port: server.port, user: user.user, password: user.password, cwd: dir });

  const stagingDir = (user: TestUser): string => path.join(server.storage, '.fts', 'staging', user.user);

  /** Audit lines of `event` on `file` so far. */
  const audits = (event: string, file: string): number => server.lines.filter((l) => l['event'] === event && l['file'] === file).length;

  /**
   * Uploads the first `keep` bytes of `data` as `name` over a raw connection, waits until the server has
   * staged exactly those, cuts the connection and waits for the upload's end (its audit line). Returns the
   * identity's key, as PROTOCOL.md §6.10 computes it.
   */
  async function cutUpload(name: string, data: Buffer, keep: number, user: TestUser = ALICE): Promise<string> {
    const key = stagingKey(name, data.length, sha256(data));
    const watcher = await login(user);
    const before = (await watcher.partials()).find((p) => p.key === key)?.bytes ?? 0;
    const endedBefore = audits('upload', name);
    const r = await RawClient.login(server.port, user.user, user.password);
    try {
      void r.write(encodeHeader({ op: 'upload', id: 2, name, size: data.length, sha256: sha256(data) }), dataFrames(data.subarray(0, keep)));
      await waitUntil(`${keep} bytes of ${name} staged`, async () => (await watcher.partials()).find((p) => p.key === key)?.bytes === before + keep, 20_000);
    } finally {
      r.destroy();
    }
    await waitUntil(`the end of the cut upload of ${name}`, () => audits('upload', name) > endedBefore, 20_000);
    return key;
  }

  /** The one staging file of `key` for `user`, with its stat. */
  async function partFile(user: TestUser, key: string): Promise<{ file: string; mtimeMs: number; size: number }> {
    const parts = (await readdir(stagingDir(user))).filter((f) => f.startsWith(`${key}.`) && f.endsWith('.part'));
    expect(parts, `staging files of ${key}`).to.have.length(1);
    const file = path.join(stagingDir(user), parts[0]!);
    const st = await lstat(file);
    return { file, mtimeMs: st.mtimeMs, size: st.size };
  }

  /** The human line of `fts partials` for one entry. */
  function humanLine(p: PartialUpload): string {
    const what = p.name === undefined ? `(name unknown, key ${p.key}): ${p.staged} bytes` : `${p.name}: ${p.staged} of ${p.size} bytes (${Math.floor((100 * p.staged) / p.size!)} %)`;
    const extra = p.bytes !== p.staged ? `, ${p.bytes} bytes on disk` : '';
    return `${what}${extra}, last written ${iso(p.mtime)}, kept until ${iso(p.expires)}`;
  }

  it('the greeting lists the "partials" capability', async () => {
    const { client, greeting } = await RawClient.open(server.port);
    raws.push(client);
    expect(greeting['caps']).to.be.an('array').that.includes('partials');
    expect((await login()).greeting['caps']).to.include('partials');
  });

  it('a cut upload is listed over the wire with the documented fields, by the library, and by `fts partials` / `fts partials --json`', async () => {
    const data = randomBytes(4 * MiB);
    const keep = MiB + 512 * KiB + 17;
    const key = await cutUpload('big.bin', data, keep);
    const part = await partFile(ALICE, key);
    expect(part.size).to.equal(keep);
    const mtime = Math.floor(part.mtimeMs);

    const r = await rawLogin();
    const id = await r.send({ op: 'partials' });
    const reply = await r.reply();
    expect(reply.interim).to.deep.equal([
      { id, status: 'entry', key, staged: keep, bytes: keep, mtime, expires: mtime + TTL_MS, name: 'big.bin', size: data.length, sha256: sha256(data) },
    ]);
    expect(reply.final).to.deep.equal({ id, status: 'ok', count: 1 });

    const entry: PartialUpload = { key, staged: keep, bytes: keep, mtime, expires: mtime + TTL_MS, name: 'big.bin', size: data.length, sha256: sha256(data) };
    expect(await (await login()).partials()).to.deep.equal([entry]);

    const human = await cli(['partials']);
    expect(human.code, describeRun(human)).to.equal(0);
    expect(human.stderr).to.equal('');
    expect(human.out).to.equal(`big.bin: ${keep} of ${data.length} bytes (37 %), last written ${iso(mtime)}, kept until ${iso(mtime + TTL_MS)}\n`);

    const json = await cli(['partials', '--json']);
    expect(json.code, describeRun(json)).to.equal(0);
    const items = JSON.parse(json.out) as Array<Record<string, unknown>>;
    expect(items).to.deep.equal([{ key, name: 'big.bin', size: data.length, sha256: sha256(data), staged: keep, bytes: keep, mtime: iso(mtime), expires: iso(mtime + TTL_MS) }]);
    expect(Object.keys(items[0]!)).to.deep.equal(['key', 'name', 'size', 'sha256', 'staged', 'bytes', 'mtime', 'expires']);

    const usage = await cli(['usage', '--json']);
    expect(usage.code, describeRun(usage)).to.equal(0);
    expect(JSON.parse(usage.out)).to.include({ partial: keep });
  });

  it('`fts partials` shows nothing when there are none (`--json`: []); more arguments are a usage error', async () => {
    const none = await cli(['partials']);
    expect({ code: none.code, out: none.out, err: none.stderr }).to.deep.equal({ code: 0, out: '', err: '' });
    const json = await cli(['partials', '--json']);
    expect(json.code, describeRun(json)).to.equal(0);
    expect(JSON.parse(json.out)).to.deep.equal([]);
    const extra = await cli(['partials', 'big.bin']);
    expect(extra.code, describeRun(extra)).to.equal(2);
  });

  it('`fts partials` names what it can: several attempts of one file (bytes on disk), an unnamed one after the named ones', async () => {
    const data = randomBytes(4 * MiB);
    const key = await cutUpload('twice.bin', data, 2 * MiB);
    await cutUpload('twice.bin', data, MiB + 5);
    const lostData = randomBytes(2 * MiB);
    const lost = await cutUpload('a-lost-name.bin', lostData, MiB + 3);
    await unlink(path.join(server.storage, '.fts', 'partial-names', ALICE.user, lost));

    const list = await (await login()).partials();
    expect(list.map((p) => [p.key, p.name ?? null, p.staged, p.bytes])).to.deep.equal([
      [key, 'twice.bin', 2 * MiB, 3 * MiB + 5],
      [lost, null, MiB + 3, MiB + 3],
    ]);
    expect(Object.keys(list[1]!).sort(), 'nothing but what is known').to.deep.equal(['bytes', 'expires', 'key', 'mtime', 'staged']);

    const human = await cli(['partials']);
    expect(human.code, describeRun(human)).to.equal(0);
    expect(human.out).to.equal(`${list.map(humanLine).join('\n')}\n`);
    expect(human.out.split('\n')[0]).to.match(/^twice\.bin: 2097152 of 4194304 bytes \(50 %\), 3145733 bytes on disk, last written \S+, kept until \S+$/);
    expect(human.out.split('\n')[1]).to.match(new RegExp(`^\\(name unknown, key ${lost}\\): ${MiB + 3} bytes, last written \\S+, kept until \\S+$`));

    const json = await cli(['partials', '--json']);
    const items = JSON.parse(json.out) as Array<Record<string, unknown>>;
    expect(items[1]).to.deep.equal({ key: lost, name: null, size: null, staged: MiB + 3, bytes: MiB + 3, mtime: iso(list[1]!.mtime), expires: iso(list[1]!.expires) });
    expect(Object.keys(items[1]!)).to.deep.equal(['key', 'name', 'size', 'staged', 'bytes', 'mtime', 'expires']);
  });

  it('a publish removes the partial files other attempts at the same file left (one begun again from 0, not resumed): partials is empty, usage shows partial 0', async () => {
    const data = randomBytes(3 * MiB);
    await cutUpload('again.bin', data, 2 * MiB);
    await cutUpload('again.bin', data, MiB + 7);
    const small = randomBytes(120 * KiB);
    await cutUpload('small.bin', small, 100 * KiB);
    const c = await login();
    expect((await c.partials()).map((p) => p.name).sort()).to.deep.equal(['again.bin', 'small.bin']);
    // Sent whole, without asking where the partial upload stands.
    await c.uploadBuffer('again.bin', data);
    await c.uploadBuffer('small.bin', small);
    expect(await c.partials()).to.deep.equal([]);
    expect(await c.usage()).to.include({ partial: 0, used: data.length + small.length });
    expect((await readdir(stagingDir(ALICE))).filter((f) => f.endsWith('.part')), 'staging files').to.deep.equal([]);
    const names = await readdir(path.join(server.storage, '.fts', 'partial-names', ALICE.user)).catch(() => [] as string[]);
    expect(names, 'name records of the published identities').to.deep.equal([]);
  });

  it('an upload onto a directory is NOT_A_FILE and keeps nothing (sized or unsized): no partial upload, nothing counted', async () => {
    const dirName = 'a-directory';
    await mkdir(path.join(server.storage, ALICE.user, dirName));
    try {
      const data = randomBytes(200 * KiB);
      const r = await rawLogin();
      await r.write(encodeHeader({ op: 'upload', id: 5, name: dirName, size: data.length, sha256: sha256(data) }), dataFrames(data));
      expect((await r.reply()).final).to.include({ id: 5, status: 'error', code: 'NOT_A_FILE' });
      await r.write(encodeHeader({ op: 'upload', id: 6, name: dirName, unsized: true, trailer: true }), dataFrames(data), encodeHeader({ op: 'upload', id: 6, size: data.length, sha256: sha256(data) }));
      const unsized = (await r.reply()).final;
      expect(unsized).to.include({ id: 6, status: 'error', code: 'NOT_A_FILE' });
      expect(unsized, 'no offset to publish kept bytes from').to.not.have.property('offset');
      const c = await login();
      expect(await c.partials()).to.deep.equal([]);
      expect(await c.usage()).to.include({ partial: 0 });
    } finally {
      await rm(path.join(server.storage, ALICE.user, dirName), { recursive: true, force: true });
    }
  });

  it('`fts discard NAME` removes it (every attempt of it) and says so; then partials is empty and usage shows partial 0', async () => {
    const data = randomBytes(3 * MiB);
    const key = await cutUpload('gone.bin', data, 2 * MiB);
    await cutUpload('gone.bin', data, MiB);
    const discardsBefore = audits('discard', 'gone.bin');
    const r = await cli(['discard', 'gone.bin']);
    expect({ code: r.code, out: r.out, err: r.stderr }, describeRun(r)).to.deep.equal({ code: 0, out: `discarded gone.bin (${3 * MiB} bytes)\n`, err: '' });
    expect((await readdir(stagingDir(ALICE))).filter((f) => f.startsWith(key)), 'no staging file nor record of the key').to.deep.equal([]);
    const list = await cli(['partials']);
    expect({ code: list.code, out: list.out }).to.deep.equal({ code: 0, out: '' });
    const usage = await cli(['usage', '--json']);
    expect(JSON.parse(usage.out)).to.include({ partial: 0 });
    // Audited with the file's name and the bytes it freed.
    const audit = await waitUntil('the discard\'s audit line', () => server.lines.filter((l) => l['event'] === 'discard' && l['file'] === 'gone.bin')[discardsBefore]);
    expect(audit).to.include({ user: ALICE.user, result: 'ok', bytes: 3 * MiB });
  });

  it('`fts discard NAME` discards every identity of that name (two sizes: two lines, in the listing\'s order)', async () => {
    const data = randomBytes(3 * MiB);
    const keys = [await cutUpload('dup.bin', data, MiB + 1), await cutUpload('dup.bin', data.subarray(0, 2 * MiB), MiB + 2)];
    const other = await cutUpload('dup.bin.other', data, MiB);
    const bytesOf = new Map([[keys[0], MiB + 1], [keys[1], MiB + 2]]);
    const r = await cli(['discard', 'dup.bin']);
    expect({ code: r.code, err: r.stderr }, describeRun(r)).to.deep.equal({ code: 0, err: '' });
    expect(r.out).to.equal([...keys].sort().map((k) => `discarded dup.bin (${bytesOf.get(k)} bytes)\n`).join(''));
    expect((await (await login()).partials()).map((p) => p.key), 'only the name given').to.deep.equal([other]);
  });

  it('`fts discard` of a name with no partial exits 4 (the others named are still discarded)', async () => {
    const missing = await cli(['discard', 'missing']);
    expect({ code: missing.code, out: missing.out, err: missing.stderr }, describeRun(missing)).to.deep.equal({ code: 4, out: '', err: 'fts: missing: no unfinished upload of that name\n' });

    const data = randomBytes(2 * MiB);
    await cutUpload('present.bin', data, MiB);
    const both = await cli(['discard', 'missing', 'present.bin']);
    expect({ code: both.code, out: both.out, err: both.stderr }, describeRun(both)).to.deep.equal({
      code: 4,
      out: `discarded present.bin (${MiB} bytes)\n`,
      err: 'fts: missing: no unfinished upload of that name\n',
    });
    expect(await (await login()).partials()).to.deep.equal([]);
  });

  it('`fts discard` with NAME and --all, with neither, or with a bad name is a usage error (exit 2) and discards nothing', async () => {
    const data = randomBytes(2 * MiB);
    const key = await cutUpload('kept.bin', data, MiB);
    for (const args of [['discard', 'kept.bin', '--all'], ['discard', '-a', 'kept.bin'], ['discard'], ['discard', '../kept.bin'], ['discard', 'kept.bin', '--json']]) {
      const r = await cli(args);
      expect(r.code, describeRun(r)).to.equal(2);
      expect(r.out, describeRun(r)).to.equal('');
    }
    expect((await (await login()).partials()).map((p) => p.key)).to.deep.equal([key]);
  });

  it('`fts discard --all` (and -a) discards every partial upload, named or not', async () => {
    const one = randomBytes(2 * MiB);
    const two = randomBytes(3 * MiB);
    await cutUpload('one.bin', one, MiB + 1);
    const unnamed = await cutUpload('two.bin', two, 2 * MiB + 2);
    await unlink(path.join(server.storage, '.fts', 'partial-names', ALICE.user, unnamed));
    const r = await cli(['discard', '--all']);
    expect({ code: r.code, out: r.out, err: r.stderr }, describeRun(r)).to.deep.equal({
      code: 0,
      out: `discarded one.bin (${MiB + 1} bytes)\ndiscarded the unfinished upload ${unnamed} (${2 * MiB + 2} bytes)\n`,
      err: '',
    });
    expect(await (await login()).partials()).to.deep.equal([]);

    await cutUpload('three.bin', one, MiB);
    const short = await cli(['discard', '-a']);
    expect({ code: short.code, out: short.out }, describeRun(short)).to.deep.equal({ code: 0, out: `discarded three.bin (${MiB} bytes)\n` });
    const nothing = await cli(['discard', '--all']);
    expect({ code: nothing.code, out: nothing.out, err: nothing.stderr }, 'nothing to discard').to.deep.equal({ code: 0, out: '', err: '' });
  });

  it('`fts discard --key KEY` discards one by key (one without a name too); an unknown key exits 4; a malformed one exits 2 before connecting', async () => {
    const named = await cutUpload('keyed.bin', randomBytes(2 * MiB), MiB + 4);
    const unnamed = await cutUpload('lost.bin', randomBytes(2 * MiB), MiB + 6);
    await unlink(path.join(server.storage, '.fts', 'partial-names', ALICE.user, unnamed));
    const r = await cli(['discard', '--key', unnamed]);
    expect({ code: r.code, out: r.out, err: r.stderr }, describeRun(r)).to.deep.equal({ code: 0, out: `discarded the unfinished upload ${unnamed} (${MiB + 6} bytes)\n`, err: '' });
    expect((await (await login()).partials()).map((p) => p.key)).to.deep.equal([named]);
    const unknown = 'f'.repeat(64);
    const both = await cli(['discard', '--key', named, '--key', unknown]);
    expect({ code: both.code, out: both.out, err: both.stderr }, describeRun(both)).to.deep.equal({
      code: 4,
      out: `discarded keyed.bin (${MiB + 4} bytes)\n`,
      err: `fts: ${unknown}: no unfinished upload with that key\n`,
    });
    const malformed = await runCli(['discard', '--key', 'abc'], { port: 1, user: 'nobody', password: 'x' });
    expect({ code: malformed.code, err: malformed.stderr }).to.deep.equal({ code: 2, err: 'fts: discard: "abc" is not a key (64 lowercase hex digits, as partials shows)\n' });
    const mixed = await runCli(['discard', 'a.bin', '--all'], { port: 1, user: 'nobody', password: 'x' });
    expect(mixed.code, 'NAME with --all: exit 2, not a connection error').to.equal(2);
  });

  it('fts-admin partials lists every user\'s unfinished uploads; fts-admin discard USER KEY removes one (unknown key: exit 1, malformed: exit 2)', async () => {
    const none = await runAdmin(server.adminSocket, ['partials']);
    expect({ code: none.code, out: none.stdout }).to.deep.equal({ code: 0, out: 'no unfinished upload\n' });
    const aliceData = randomBytes(2 * MiB);
    const aliceKey = await cutUpload('admin-a.bin', aliceData, MiB + 7);
    const bobKey = await cutUpload('admin-b.bin', randomBytes(3 * MiB), MiB + 8, BOB);
    const json = await runAdmin(server.adminSocket, ['partials', '--json']);
    expect(json.code, json.stderr).to.equal(0);
    const listed = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(listed.map((p) => [p['user'], p['name'], p['key'], p['staged']])).to.deep.equal([
      [ALICE.user, 'admin-a.bin', aliceKey, MiB + 7],
      [BOB.user, 'admin-b.bin', bobKey, MiB + 8],
    ]);
    const table = await runAdmin(server.adminSocket, ['partials']);
    expect(table.stdout.split('\n')[0]).to.match(/^USER +NAME +STAGED +SIZE +WRITTEN +KEPT UNTIL +KEY$/);
    expect(table.stdout).to.include(bobKey);

    const done = await runAdmin(server.adminSocket, ['discard', BOB.user, bobKey]);
    expect({ code: done.code, out: done.stdout }).to.deep.equal({ code: 0, out: `discarded admin-b.bin of ${BOB.user} (${MiB + 8} bytes)\n` });
    expect(server.lines.some((l) => l['event'] === 'discard' && l['user'] === BOB.user && l['key'] === bobKey && l['bytes'] === MiB + 8), 'logged').to.equal(true);
    const again = await runAdmin(server.adminSocket, ['discard', BOB.user, bobKey]);
    expect({ code: again.code, err: again.stderr }).to.deep.equal({ code: 1, err: `fts-admin: ${BOB.user}: no partial upload with that key\n` });
    const wrongUser = await runAdmin(server.adminSocket, ['discard', BOB.user, aliceKey]);
    expect(wrongUser.code, 'alice\'s key under bob').to.equal(1);
    expect((await runAdmin(server.adminSocket, ['discard', BOB.user, 'abc'])).code).to.equal(2);
    expect((await runAdmin(server.adminSocket, ['discard', '../x', aliceKey])).code).to.equal(2);
    expect((await (await login()).partials()).map((p) => p.key), 'alice\'s is still there').to.deep.equal([aliceKey]);
  });

  it('partials and discard before logging in are AUTH_REQUIRED (not fatal)', async () => {
    const { client: r } = await RawClient.open(server.port);
    raws.push(r);
    const partials = await r.request({ op: 'partials', id: 3 });
    expect(partials).to.include({ id: 3, status: 'error', code: 'AUTH_REQUIRED', fatal: false });
    const discard = await r.request({ op: 'discard', id: 4, key: sha256(Buffer.from('x')) });
    expect(discard).to.include({ id: 4, status: 'error', code: 'AUTH_REQUIRED', fatal: false });
    expect(await r.request({ op: 'noop', id: 5 })).to.deep.equal({ id: 5, status: 'ok' });
  });

  it('discard over the wire: a bad key is BAD_REQUEST, an unknown one NOT_FOUND, both not fatal; the reply names what was removed', async () => {
    const data = randomBytes(2 * MiB);
    const key = await cutUpload('wire.bin', data, MiB + 9);
    const r = await rawLogin();
    for (const [n, bad] of [[10, 'abc'], [11, key.toUpperCase()], [12, `${key}0`], [13, 42], [14, null]] as Array<[number, unknown]>) {
      const reply = await r.request({ op: 'discard', id: n, key: bad } as Header);
      expect(reply, JSON.stringify(bad)).to.include({ id: n, status: 'error', code: 'BAD_REQUEST', fatal: false });
    }
    expect(await r.request({ op: 'discard', id: 15 })).to.include({ id: 15, status: 'error', code: 'BAD_REQUEST', fatal: false });
    expect(await r.request({ op: 'discard', id: 16, key: sha256(Buffer.from('nothing staged')) })).to.include({ id: 16, status: 'error', code: 'NOT_FOUND', fatal: false });
    expect(await r.request({ op: 'noop', id: 17 })).to.deep.equal({ id: 17, status: 'ok' });
    expect((await (await login()).partials()).map((p) => p.key), 'still there').to.deep.equal([key]);
    expect(await r.request({ op: 'discard', id: 18, key })).to.deep.equal({ id: 18, status: 'ok', key, bytes: MiB + 9, name: 'wire.bin' });
    expect(await r.request({ op: 'discard', id: 19, key })).to.include({ id: 19, status: 'error', code: 'NOT_FOUND', fatal: false });
    // The library refuses a bad key before sending it.
    expect(await (await login()).discard('ABC').then(() => 'OK', (err: unknown) => (err instanceof FtsError ? err.code : err))).to.equal('BAD_REQUEST');
  });

  it('a user can neither see nor discard another user\'s partial uploads, even of the same identity (same key)', async () => {
    const data = randomBytes(2 * MiB);
    const aliceKey = await cutUpload('shared-name.bin', data, MiB + 100);
    const bob = await login(BOB);
    expect(await bob.partials()).to.deep.equal([]);
    expect(await bob.discard(aliceKey).then(() => 'OK', (err: unknown) => (err instanceof FtsError ? err.code : err))).to.equal('NOT_FOUND');
    const alice = await login(ALICE);
    expect((await alice.partials()).map((p) => [p.key, p.bytes])).to.deep.equal([[aliceKey, MiB + 100]]);

    // Bob's upload of the very same file under the same name has the same key, in his own staging area.
    const bobKey = await cutUpload('shared-name.bin', data, MiB, BOB);
    expect(bobKey).to.equal(aliceKey);
    expect(await bob.discard(bobKey)).to.deep.equal({ bytes: MiB });
    expect((await alice.partials()).map((p) => [p.key, p.bytes]), 'alice\'s is untouched').to.deep.equal([[aliceKey, MiB + 100]]);
    expect(await bob.partials()).to.deep.equal([]);
  });

  it('an upload in progress whose partial is discarded is answered OFFSET_MISMATCH (offset 0) at its end; the session goes on', async () => {
    const data = randomBytes(3 * MiB);
    const key = stagingKey('live.bin', data.length, sha256(data));
    const watcher = await login();
    const r = await rawLogin();
    const first = 2 * MiB;
    void r.write(encodeHeader({ op: 'upload', id: 20, name: 'live.bin', size: data.length, sha256: sha256(data) }), dataFrames(data.subarray(0, first)));
    await waitUntil('the first 2 MiB staged', async () => (await watcher.partials()).find((p) => p.key === key)?.staged === first, 20_000);
    expect(await watcher.discard(key)).to.deep.equal({ bytes: first });
    void r.write(dataFrames(data.subarray(first)));
    const reply = await r.reply(30_000);
    expect(reply.final).to.include({ id: 20, status: 'error', code: 'OFFSET_MISMATCH', fatal: false, offset: 0 });
    expect(await r.request({ op: 'noop', id: 21 })).to.deep.equal({ id: 21, status: 'ok' });
    expect((await watcher.list()).map((e) => e.name), 'nothing published').to.not.include('live.bin');
    expect(await watcher.partials()).to.deep.equal([]);
  });

  it('an `fts upload` whose partial is discarded while it runs still completes, correctly, by sending the file again', async () => {
    const data = randomBytes(4 * MiB);
    const local = path.join(dir, 'gated.bin');
    await writeFile(local, data);
    // The first connection's bytes past 2 MiB wait in the gate until the partial is discarded.
    const gate = await GateProxy.start(server.port, (index) => (index === 0 ? { holdUpAfter: 2 * MiB } : {}));
    proxies.push(gate);
    const running = runCli(['--json', 'upload', local, 'gated.bin'], { port: gate.port, user: ALICE.user, password: ALICE.password, cwd: dir });
    await Promise.race([
      gate.reached,
      running.then((r) => {
        throw new Error(`the upload ended before the gate held it: ${describeRun(r)}`);
      }),
    ]);
    const watcher = await login();
    const entry = await waitUntil('a MiB of gated.bin staged', async () => (await watcher.partials()).find((p) => p.name === 'gated.bin' && p.staged >= MiB), 20_000);
    // What the server received before the gate is still being written (batches, an idle flush): at least what
    // the listing saw, at most the 2 MiB the gate let through.
    const { bytes } = await watcher.discard(entry.key);
    expect(bytes).to.be.a('number').within(entry.bytes, 2 * MiB);
    expect(await watcher.partials(), 'nothing left of it while it is held').to.deep.equal([]);
    gate.openUp();
    const r = await running;
    expect(r.code, describeRun(r)).to.equal(0);
    const result = JSON.parse(r.out) as Record<string, unknown>;
    expect(result).to.include({ name: 'gated.bin', bytes: data.length, sha256: sha256(data) });
    expect(sha256(await readFile(path.join(server.storage, ALICE.user, 'gated.bin')))).to.equal(sha256(data));
    expect(await watcher.partials()).to.deep.equal([]);
    // The server answered the attempt whose bytes were discarded OFFSET_MISMATCH, and the client sent it again.
    const uploads = await waitUntil('both attempts\' audit lines', () => {
      const lines = server.lines.filter((l) => l['event'] === 'upload' && l['file'] === 'gated.bin');
      return lines.length >= 2 && lines;
    });
    expect(uploads.map((l) => [l['result'], l['code'] ?? null])).to.deep.equal([
      ['error', 'OFFSET_MISMATCH'],
      ['ok', null],
    ]);
  });

  it('ResilientClient.discard: a repeat after a connection lost during the first attempt that finds nothing is { bytes: null }', async () => {
    const data = randomBytes(2 * MiB);
    const key = await cutUpload('resilient.bin', data, MiB);
    const gate = await GateProxy.start(server.port, () => ({}));
    proxies.push(gate);
    const rc = await ResilientClient.connect({ host: '127.0.0.1', port: gate.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 3 } });
    clients.push(rc);
    expect((await rc.partials()).map((p) => p.key)).to.deep.equal([key]);
    // The server's replies stop reaching the client: the discard runs, its answer is lost with the connection.
    gate.holdDown();
    const discarding = rc.discard(key);
    const watcher = await login();
    await waitUntil('the discard to run on the server', async () => (await watcher.partials()).length === 0, 20_000);
    gate.dropAll();
    expect(await discarding).to.deep.equal({ bytes: null });
    expect(rc.reconnects).to.equal(1);
    // A discard whose answer arrives is not uncertain: NOT_FOUND is an error.
    expect(await rc.discard(key).then(() => 'OK', (err: unknown) => (err instanceof FtsError ? err.code : err))).to.equal('NOT_FOUND');
  });

  it('metrics: fts_operations_total{op="discard"} counts each discard, ok or error', async () => {
    const port = await metricsPortOf(server);
    const count = async (result: 'ok' | 'error'): Promise<number> => {
      const v = sampleValue(await scrape(port), 'fts_operations_total', { op: 'discard', result });
      expect(v, `fts_operations_total{op="discard",result="${result}"}`).to.be.a('number');
      return v!;
    };
    const data = randomBytes(2 * MiB);
    const key = await cutUpload('counted.bin', data, MiB);
    const [ok, error] = [await count('ok'), await count('error')];
    const c = await login();
    expect(await c.discard(key)).to.deep.equal({ bytes: MiB });
    expect(await count('ok')).to.equal(ok + 1);
    expect(await count('error')).to.equal(error);
    await c.discard(key).catch(() => undefined); // NOT_FOUND
    const r = await rawLogin();
    expect(await r.request({ op: 'discard', id: 30, key: 'not-a-key' })).to.include({ code: 'BAD_REQUEST' });
    expect(await count('ok')).to.equal(ok + 1);
    expect(await count('error')).to.equal(error + 2);
  });
});
