/**
 * Unsized uploads (PROTOCOL.md §6.1 "Unsized uploads", capability `upload-unsized`), end to end on the wire
 * and through the library: a real fts-server, a raw client that speaks the frames as the document says, and
 * FtsClient.uploadStream. What is promised: data frames up to a trailer with `size` and `sha256`, published
 * only if both match; keep-alive frames among the data; every failure leaves nothing staged; a refused
 * header is skipped to its trailer; the quota is applied as the bytes arrive.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { FtsClient, FtsError } from '../../client/index.js';
import { encodeData, encodeHeader, MAX_CHUNK_BYTES } from '../../protocol/index.js';
import { codeOf, stagingFiles } from '../helpers/common.js';
import { publishedSha256, sha256, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { runAdmin, sessionsJson, startAdmin, type SessionJson } from '../helpers/admin-cli.js';
import { sweepStaging } from '../../server/storage/staging-sweep.js';
import { dataFrames, RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const KEEPER: TestUser = { user: 'keeper', password: 'keeper-pass' };
const MiB = 1024 * 1024;

describe('unsized uploads (upload-unsized): data until a trailer with size and sha256', function () {
  this.timeout(60_000);

  let server: TestServer;
  let dir = '';
  let cleanDir: () => Promise<void> = async () => undefined;
  const raws: RawClient[] = [];
  const clients: FtsClient[] = [];

  before(async function () {
    this.timeout(30_000);
    ({ dir, cleanup: cleanDir } = await tempDir('fts-unsized-'));
    const permissions = path.join(dir, 'permissions');
    await writeFile(permissions, 'keeper:lrw\n');
    server = await TestServer.start({ workers: 2, users: [ALICE, KEEPER], args: ['--permissions-file', permissions, '--stall-timeout', '2'] });
  });

  after(async function () {
    this.timeout(30_000);
    await server.stop();
    await cleanDir();
  });

  afterEach(() => {
    for (const r of raws.splice(0)) r.close();
    for (const c of clients.splice(0)) c.close();
  });

  async function raw(user: TestUser = ALICE): Promise<RawClient> {
    const r = await RawClient.login(server.port, user.user, user.password);
    raws.push(r);
    return r;
  }

  async function login(user: TestUser = ALICE, port = server.port): Promise<FtsClient> {
    const c = await FtsClient.connect({ port });
    clients.push(c);
    await c.auth(user.user, user.password);
    return c;
  }

  async function nothingStaged(user: TestUser = ALICE): Promise<void> {
    // The staging file goes while the reply is on its way: give it a moment.
    for (let i = 0; i < 50 && (await stagingFiles(server, user.user)).length > 0; i++) await sleep(50);
    expect(await stagingFiles(server, user.user), 'nothing left staged').to.deep.equal([]);
  }

  it('the greeting lists upload-unsized', async () => {
    const { client, greeting } = await RawClient.open(server.port);
    raws.push(client);
    expect(greeting['caps']).to.include('upload-unsized');
  });

  it('raw: header, data frames with a keep-alive among them, trailer {size, sha256} → ok, published; the session goes on', async () => {
    const r = await raw();
    const data = randomBytes(2 * MiB + 123);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw.bin', trailer: true, unsized: true }), dataFrames(data.subarray(0, MiB), MAX_CHUNK_BYTES));
    await r.write(encodeHeader({ op: 'upload', id: 2, keepalive: true }));
    await r.write(dataFrames(data.subarray(MiB), MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) }));
    const reply = await r.reply();
    expect(reply.final).to.include({ id: 2, status: 'ok', name: 'raw.bin', size: data.length, sha256: sha256(data) });
    expect(reply.final['mtime']).to.be.a('number');
    expect(await publishedSha256(server.storage, ALICE.user, 'raw.bin')).to.equal(sha256(data));
    expect(await r.request({ op: 'noop', id: 3 })).to.include({ id: 3, status: 'ok' });
    await nothingStaged();
  });

  it('raw: an empty upload (header, then the trailer at once)', async () => {
    const r = await raw();
    const empty = Buffer.alloc(0);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-empty.bin', trailer: true, unsized: true }), encodeHeader({ op: 'upload', id: 2, size: 0, sha256: sha256(empty) }));
    expect((await r.reply()).final).to.include({ id: 2, status: 'ok', size: 0 });
    expect(await publishedSha256(server.storage, ALICE.user, 'raw-empty.bin')).to.equal(sha256(empty));
  });

  it('raw: a trailer whose size or digest does not match what arrived → CHECKSUM_MISMATCH (non-fatal), nothing published or kept', async () => {
    const r = await raw();
    const data = randomBytes(300_000);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-bad.bin', trailer: true, unsized: true }), dataFrames(data, MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 2, size: data.length + 1, sha256: sha256(data) }));
    expect((await r.reply()).final).to.include({ id: 2, status: 'error', code: 'CHECKSUM_MISMATCH', fatal: false });
    await r.write(encodeHeader({ op: 'upload', id: 3, name: 'raw-bad.bin', trailer: true, unsized: true }), dataFrames(data, MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 3, size: data.length, sha256: sha256(randomBytes(8)) }));
    expect((await r.reply()).final).to.include({ id: 3, status: 'error', code: 'CHECKSUM_MISMATCH', fatal: false });
    expect(await publishedSha256(server.storage, ALICE.user, 'raw-bad.bin')).to.equal(null);
    expect(await r.request({ op: 'noop', id: 4 })).to.include({ id: 4, status: 'ok' });
    await nothingStaged();
  });

  it('raw: a header refused for its own fields (bad name, a size) gets its error after its data and trailer were skipped; the session goes on', async () => {
    const r = await raw();
    const data = randomBytes(100_000);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: '../escape', trailer: true, unsized: true }), dataFrames(data, MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 2, keepalive: true }), encodeHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) }));
    expect((await r.reply()).final).to.include({ id: 2, status: 'error', code: 'BAD_NAME', fatal: false });
    await r.write(encodeHeader({ op: 'upload', id: 3, name: 'x', trailer: true, unsized: true, size: 5 }), dataFrames(data, MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 3, size: data.length, sha256: sha256(data) }));
    expect((await r.reply()).final).to.include({ id: 3, status: 'error', code: 'BAD_REQUEST', fatal: false });
    expect(await r.request({ op: 'noop', id: 4 })).to.include({ id: 4, status: 'ok' });
  });

  it('raw: "stoppable": true — a refused header and a corrupt frame are told at once by an interim `stop` (before the trailer); the final reply after the trailer is that error', async () => {
    const r = await raw();
    const data = randomBytes(100_000);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: '../escape', trailer: true, unsized: true, stoppable: true }), dataFrames(data, MAX_CHUNK_BYTES));
    expect(await r.nextHeader(), 'stop for a refused header, trailer not sent yet').to.deep.include({ id: 2, status: 'stop', code: 'BAD_NAME' });
    await r.sendHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) });
    const refused = await r.reply();
    expect(refused.interim).to.deep.equal([]);
    expect(refused.final).to.include({ id: 2, status: 'error', code: 'BAD_NAME', fatal: false });

    const frames = [encodeData(data.subarray(0, 50_000)), encodeData(data.subarray(50_000))];
    frames[0]![frames[0]!.length - 1]! ^= 0xff;
    await r.write(encodeHeader({ op: 'upload', id: 3, name: 'raw-stopped.bin', trailer: true, unsized: true, stoppable: true }), frames[0]!);
    const stop = await r.nextHeader();
    expect(stop, 'stop for a corrupt frame').to.deep.include({ id: 3, status: 'stop', code: 'CHUNK_CORRUPT' });
    expect(stop).to.not.have.property('fatal');
    // Frames already on their way are still read and dropped; then the trailer ends it.
    await r.write(frames[1]!, encodeHeader({ op: 'upload', id: 3, size: 50_000, sha256: sha256(data.subarray(0, 50_000)) }));
    expect((await r.reply()).final).to.include({ id: 3, status: 'error', code: 'CHUNK_CORRUPT', fatal: false });
    expect(await publishedSha256(server.storage, ALICE.user, 'raw-stopped.bin')).to.equal(null);
    expect(await r.request({ op: 'noop', id: 4 })).to.include({ id: 4, status: 'ok' });
    await nothingStaged();
  });

  it('raw: without "stoppable" no `stop` comes; "stoppable" on a sized upload, or not a boolean, is BAD_REQUEST', async () => {
    const r = await raw();
    const data = randomBytes(10_000);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: '../escape', trailer: true, unsized: true }), dataFrames(data, MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) }));
    const plain = await r.reply();
    expect(plain.interim, 'no stop without stoppable').to.deep.equal([]);
    expect(plain.final).to.include({ id: 2, code: 'BAD_NAME' });
    await r.write(encodeHeader({ op: 'upload', id: 3, name: 'x', size: data.length, sha256: sha256(data), stoppable: true }), dataFrames(data, MAX_CHUNK_BYTES));
    expect((await r.reply()).final).to.include({ id: 3, status: 'error', code: 'BAD_REQUEST', fatal: false });
    await r.write(encodeHeader({ op: 'upload', id: 4, name: 'x', trailer: true, unsized: true, stoppable: 'yes' }), encodeHeader({ op: 'upload', id: 4, size: 0, sha256: sha256(Buffer.alloc(0)) }));
    const odd = await r.reply();
    expect(odd.interim, 'no stop for a stoppable that is not true').to.deep.equal([]);
    expect(odd.final).to.include({ id: 4, status: 'error', code: 'BAD_REQUEST', fatal: false });
    expect(await r.request({ op: 'noop', id: 5 })).to.include({ id: 5, status: 'ok' });
  });

  it('raw: a data frame failing its CRC32C → CHUNK_CORRUPT after the trailer, nothing kept (an unsized upload cannot be continued)', async () => {
    const r = await raw();
    const data = randomBytes(3 * MiB);
    const frames = [0, 1, 2].map((i) => encodeData(data.subarray(i * MiB, (i + 1) * MiB)));
    frames[1]![frames[1]!.length - 1]! ^= 0xff; // a payload byte of the second frame
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-corrupt.bin', trailer: true, unsized: true }), ...frames, encodeHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) }));
    const final = (await r.reply()).final;
    expect(final).to.include({ id: 2, status: 'error', code: 'CHUNK_CORRUPT', fatal: false });
    expect(final['message']).to.include('cannot be continued');
    expect(await publishedSha256(server.storage, ALICE.user, 'raw-corrupt.bin')).to.equal(null);
    await nothingStaged();
  });

  it('raw: another request where the trailer belongs is the fatal PROTOCOL_ERROR, and nothing is kept', async () => {
    const r = await raw();
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-cut.bin', trailer: true, unsized: true }), dataFrames(randomBytes(1000)), encodeHeader({ op: 'list', id: 3 }));
    const final = (await r.reply()).final;
    expect(final).to.include({ status: 'error', code: 'PROTOCOL_ERROR', fatal: true });
    expect(await r.waitClosed()).to.equal(true);
    await nothingStaged();
  });

  it('raw: a connection that ends in the middle leaves nothing staged', async () => {
    const r = await raw();
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-dropped.bin', trailer: true, unsized: true }), dataFrames(randomBytes(2 * MiB), MAX_CHUNK_BYTES));
    await sleep(200);
    r.destroy();
    await nothingStaged();
    expect(await publishedSha256(server.storage, ALICE.user, 'raw-dropped.bin')).to.equal(null);
  });

  it('raw: keep-alive frames hold a silent upload open past the stall timeout (2 s here); without them the session ends TRANSFER_STALLED', async () => {
    const r = await raw();
    const data = randomBytes(1000);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-slow.bin', trailer: true, unsized: true }), encodeData(data));
    for (let i = 0; i < 6; i++) {
      await sleep(500);
      await r.sendHeader({ op: 'upload', id: 2, keepalive: true });
    }
    await r.sendHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) });
    expect((await r.reply()).final).to.include({ id: 2, status: 'ok' });

    const silent = await raw();
    await silent.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-silent.bin', trailer: true, unsized: true }), encodeData(data));
    const bye = await silent.nextHeader(10_000);
    expect(bye).to.include({ status: 'bye', code: 'TRANSFER_STALLED' });
    await nothingStaged();
  });

  it('raw: keep-alives keep the staging file fresh, so the sweep does not take a live upload whose source is silent', async () => {
    const r = await raw();
    const data = randomBytes(1000);
    await r.write(encodeHeader({ op: 'upload', id: 2, name: 'raw-swept.bin', trailer: true, unsized: true }), encodeData(data));
    for (let i = 0; i < 16; i++) {
      await sleep(250);
      await r.sendHeader({ op: 'upload', id: 2, keepalive: true });
      // Files not written for 2 s count as abandoned; this upload's has had no byte for longer by now.
      if (i === 12) expect(await sweepStaging(server.storage, 2000), 'files the sweep removed').to.equal(0);
    }
    await r.sendHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) });
    expect((await r.reply()).final).to.include({ id: 2, status: 'ok' });
    expect(await publishedSha256(server.storage, ALICE.user, 'raw-swept.bin')).to.equal(sha256(data));
  });

  it('library: uploadStream sends a stream of unknown length, with progress totals Infinity', async () => {
    const client = await login();
    const parts = [randomBytes(700_000), randomBytes(5), randomBytes(2 * MiB)];
    const seen: Array<[number, number]> = [];
    const result = await client.uploadStream(Readable.from(parts), 'lib.bin', { onProgress: (done, total) => seen.push([done, total]) });
    const all = Buffer.concat(parts);
    expect(result).to.include({ name: 'lib.bin', size: all.length, sha256: sha256(all), resumedFrom: 0 });
    expect(await publishedSha256(server.storage, ALICE.user, 'lib.bin')).to.equal(sha256(all));
    expect(seen.at(-1)).to.deep.equal([all.length, Infinity]);
  });

  it('library: a stream of strings uploads their UTF-8 bytes', async () => {
    const client = await login();
    const result = await client.uploadStream(Readable.from(['héllo ', 'wörld']), 'lib-text.txt');
    expect(result.size).to.equal(Buffer.byteLength('héllo wörld'));
    expect(await publishedSha256(server.storage, ALICE.user, 'lib-text.txt')).to.equal(sha256(Buffer.from('héllo wörld')));
  });

  it('library: a source that fails midway fails the upload with its own error; nothing is published, and the session goes on', async () => {
    const client = await login();
    async function* failing(): AsyncGenerator<Buffer> {
      yield randomBytes(100_000);
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', syscall: 'read' });
    }
    const err = await client.uploadStream(failing(), 'lib-failed.bin').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('IO_ERROR');
    expect((err as FtsError).message).to.include('the input');
    expect(await publishedSha256(server.storage, ALICE.user, 'lib-failed.bin')).to.equal(null);
    expect(client.connected).to.equal(true);
    expect(await client.list()).to.be.an('array');
    await nothingStaged();
  });

  it('library: a source that gives something other than bytes (an object-mode stream) fails BAD_REQUEST with nothing published; one that is not iterable is refused before anything is sent; the session goes on', async () => {
    const client = await login();
    for (const [i, source] of [Readable.from([1, 2, 3]), Readable.from([{ a: 1 }]), new PassThrough({ objectMode: true }).end({ b: 2 })].entries()) {
      const err = await client.uploadStream(source as Readable, `lib-objects-${i}.bin`).then(() => null, (e: unknown) => e);
      expect(err, `source ${i}`).to.be.instanceOf(FtsError);
      expect((err as FtsError).code).to.equal('BAD_REQUEST');
      expect((err as FtsError).message).to.match(/not bytes/);
      expect(await publishedSha256(server.storage, ALICE.user, `lib-objects-${i}.bin`)).to.equal(null);
    }
    const notIterable = await client.uploadStream([Buffer.from('x')] as unknown as AsyncIterable<Uint8Array>, 'lib-array.bin').then(() => null, (e: unknown) => e);
    expect((notIterable as FtsError).code).to.equal('BAD_REQUEST');
    expect(client.connected).to.equal(true);
    const ok = await client.uploadStream(Readable.from([Buffer.from('after')]), 'lib-after.bin');
    expect(ok.size).to.equal(5);
    await nothingStaged();
  });

  it('a user who may not replace files (no "o") is refused PERMISSION_DENIED onto a name taken by an older file, before anything is staged', async () => {
    const owner = await login(KEEPER);
    await writeFile(path.join(server.storage, KEEPER.user, 'old.txt'), 'old');
    const old = new Date(Date.now() - 3600_000);
    const { utimes } = await import('node:fs/promises');
    await utimes(path.join(server.storage, KEEPER.user, 'old.txt'), old, old);
    expect(await codeOf(owner.uploadStream(Readable.from([Buffer.from('new')]), 'old.txt'))).to.equal('PERMISSION_DENIED');
    const fresh = await owner.uploadStream(Readable.from([Buffer.from('fresh')]), 'fresh.txt');
    expect(fresh.size).to.equal(5);
    await nothingStaged(KEEPER);
  });

  /**
   * A library upload of a stream this test feeds by hand: `feed` writes, `end` ends it. Resolves `started`
   * once the server's session shows the upload with bytes received.
   */
  async function feedingUpload(client: FtsClient, name: string, first: Buffer, on: TestServer = server): Promise<{ source: PassThrough; outcome: Promise<unknown>; session: SessionJson }> {
    const source = new PassThrough();
    const outcome = client.uploadStream(source, name).then((r) => r, (e: unknown) => e);
    source.write(first);
    const session = await waitUntil(`the upload of ${name} to run`, async () => (await sessionsJson(on.adminSocket)).find((x) => x.op === 'upload' && x.file === name && x.bytes >= first.length), 15_000);
    return { source, outcome, session };
  }

  it('fts-admin kick during an unsized upload ends it with KICKED; nothing is published or kept', async () => {
    const client = await login();
    const { source, outcome, session } = await feedingUpload(client, 'kicked-stream.bin', randomBytes(2 * MiB));
    const r = await runAdmin(server.adminSocket, ['kick', session.id]);
    expect(r.code, r.stderr).to.equal(0);
    const err = await outcome;
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('KICKED');
    source.destroy();
    expect(await publishedSha256(server.storage, ALICE.user, 'kicked-stream.bin')).to.equal(null);
    await waitUntil('nothing staged after the kick', async () => (await stagingFiles(server, ALICE.user)).length === 0, 10_000);
  });

  it('discard of a running unsized upload\'s key (listed without a name) fails it at its trailer; nothing is published', async () => {
    const client = await login();
    const watcher = await login();
    const { source, outcome } = await feedingUpload(client, 'discarded-stream.bin', randomBytes(2 * MiB));
    const running = (await watcher.partials()).filter((p) => p.name === undefined);
    expect(running, 'the running upload, listed under a key of its own, with no name').to.have.length(1);
    expect((await watcher.discard(running[0]!.key)).bytes).to.be.at.least(0);
    source.end(randomBytes(MiB));
    const err = await outcome;
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).message).to.include('discarded while it ran');
    expect(client.connected, 'the session goes on').to.equal(true);
    expect(await publishedSha256(server.storage, ALICE.user, 'discarded-stream.bin')).to.equal(null);
    expect(await stagingFiles(server, ALICE.user)).to.deep.equal([]);
  });

  it('a drain lets a running unsized upload finish: it is published, then the server exits 0', async () => {
    const draining = await TestServer.start({ workers: 1 });
    try {
      const client = await login(ALICE, draining.port);
      const first = randomBytes(2 * MiB);
      const rest = randomBytes(MiB + 5);
      const { source, outcome } = await feedingUpload(client, 'drained-stream.bin', first, draining);
      const admin = startAdmin(draining.adminSocket, ['drain'], 50_000);
      try {
        await waitUntil('a drain progress line', () => /^draining: /m.test(admin.stdout), 10_000);
        source.end(rest);
        const done = await outcome;
        expect(done, String(done)).to.not.be.instanceOf(Error);
        expect(await publishedSha256(draining.storage, ALICE.user, 'drained-stream.bin')).to.equal(sha256(Buffer.concat([first, rest])));
        expect((await admin.done).code).to.equal(0);
        expect(await draining.waitForExit(10_000)).to.deep.equal({ code: 0, signal: null });
      } finally {
        admin.kill();
      }
    } finally {
      await draining.stop();
    }
  });

  describe('with --quota', function () {
    let quoted: TestServer;

    before(async function () {
      this.timeout(30_000);
      quoted = await TestServer.start({ workers: 1, args: ['--quota', String(6 * MiB)] });
    });

    after(async function () {
      this.timeout(30_000);
      await quoted.stop();
    });

    it('room is taken as the bytes arrive: an upload that outgrows the quota gets QUOTA_EXCEEDED after its trailer, keeps nothing, and one that fits is published', async () => {
      const client = await login(ALICE, quoted.port);
      const big = randomBytes(8 * MiB);
      expect(await codeOf(client.uploadStream(Readable.from([big]), 'too-big.bin'))).to.equal('QUOTA_EXCEEDED');
      expect(client.connected, 'the session goes on').to.equal(true);
      expect(await stagingFiles(quoted, ALICE.user)).to.deep.equal([]);
      const fits = randomBytes(5 * MiB);
      expect((await client.uploadStream(Readable.from([fits]), 'fits.bin')).size).to.equal(fits.length);
      expect(await publishedSha256(quoted.storage, ALICE.user, 'fits.bin')).to.equal(sha256(fits));
      // 1 MiB left: a small upload still fits exactly (a step that does not fit is cut to what is needed).
      expect((await client.uploadStream(Readable.from([randomBytes(MiB)]), 'last.bin')).size).to.equal(MiB);
      expect(await codeOf(client.uploadStream(Readable.from([randomBytes(10)]), 'over.bin'))).to.equal('QUOTA_EXCEEDED');
      for (const name of ['fits.bin', 'last.bin']) await client.delete(name);
    });

    it('library: an upload that outgrew the quota stops reading its source at the server\'s `stop`, instead of sending it all', async () => {
      const client = await login(ALICE, quoted.port);
      let produced = 0;
      let destroyed = false;
      const source = new Readable({
        read() {
          if (produced >= 512 * MiB) return void this.push(null);
          produced += MiB;
          this.push(randomBytes(MiB));
        },
        destroy(err, done) {
          destroyed = true;
          done(err);
        },
      });
      expect(await codeOf(client.uploadStream(source, 'endless.bin'))).to.equal('QUOTA_EXCEEDED');
      expect(destroyed, 'the source is the caller\'s: let go unread, not destroyed').to.equal(false);
      expect(source.destroyed).to.equal(false);
      const read = produced;
      await sleep(200);
      expect(read, 'far less than the source holds was read (6 MiB of quota)').to.be.below(128 * MiB);
      expect(produced, 'and nothing more afterwards').to.equal(read);
      expect(client.connected, 'the session goes on').to.equal(true);
      expect(await stagingFiles(quoted, ALICE.user)).to.deep.equal([]);
      expect(await publishedSha256(quoted.storage, ALICE.user, 'endless.bin')).to.equal(null);
    });

    it('an upload that outgrew the quota frees what it staged and the room it took at once, before its trailer', async () => {
      const r = await RawClient.login(quoted.port, ALICE.user, ALICE.password);
      raws.push(r);
      const big = randomBytes(8 * MiB);
      await r.write(encodeHeader({ op: 'upload', id: 2, name: 'outgrown.bin', trailer: true, unsized: true }), dataFrames(big, MAX_CHUNK_BYTES));
      // No trailer yet: the upload is refused, and waits only for it.
      const uploading = async (): Promise<boolean> => (await sessionsJson(quoted.adminSocket)).some((s) => s.op === 'upload' && s.bytes > 0);
      await waitUntil('the upload to fail and free its staging file', async () => (await uploading()) && (await stagingFiles(quoted, ALICE.user)).length === 0, 15_000);
      const other = await login(ALICE, quoted.port);
      const small = randomBytes(100_000);
      expect((await other.uploadBuffer('meanwhile.bin', small)).size, 'room for another upload meanwhile').to.equal(small.length);
      await r.sendHeader({ op: 'upload', id: 2, size: big.length, sha256: sha256(big) });
      expect((await r.reply()).final).to.include({ id: 2, status: 'error', code: 'QUOTA_EXCEEDED' });
      await other.delete('meanwhile.bin');
    });
  });

  describe('with --quota-file, reloaded during an upload', function () {
    let reloaded: TestServer;
    let quotaFile = '';

    before(async function () {
      this.timeout(30_000);
      quotaFile = path.join(dir, 'quotas');
      await writeFile(quotaFile, '');
      reloaded = await TestServer.start({ workers: 1, args: ['--quota-file', quotaFile] });
    });

    after(async function () {
      this.timeout(30_000);
      await reloaded.stop();
    });

    it('a quota set while an unsized upload runs applies to the rest of its bytes', async () => {
      const r = await RawClient.login(reloaded.port, ALICE.user, ALICE.password);
      raws.push(r);
      const data = randomBytes(6 * MiB);
      await r.write(encodeHeader({ op: 'upload', id: 2, name: 'reloaded.bin', trailer: true, unsized: true }), dataFrames(data.subarray(0, MiB), MAX_CHUNK_BYTES));
      await writeFile(quotaFile, 'alice:3M\n');
      const reload = await runAdmin(reloaded.adminSocket, ['reload']);
      expect(reload.code, reload.stderr).to.equal(0);
      await r.write(dataFrames(data.subarray(MiB), MAX_CHUNK_BYTES), encodeHeader({ op: 'upload', id: 2, size: data.length, sha256: sha256(data) }));
      expect((await r.reply()).final).to.include({ id: 2, status: 'error', code: 'QUOTA_EXCEEDED' });
      expect(await publishedSha256(reloaded.storage, ALICE.user, 'reloaded.bin')).to.equal(null);
    });
  });
});
