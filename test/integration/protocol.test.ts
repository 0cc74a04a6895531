/**
 * The wire protocol against a real fts-server, byte by byte: a raw TCP client built on the codec sends
 * exactly the frames each case needs (including malformed ones) and checks every reply against
 * docs/PROTOCOL.md.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import { encodeData, encodeHeader, type Header } from '../../protocol/index.js';
import { stagingFiles } from '../helpers/common.js';
import { dataFrames, delay, RawClient, sha256, splitFrames, uploadBytes, type Reply } from '../helpers/raw-client.js';
import { sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { rawHeaderFrame, corruptCrcData, prefix } from '../helpers/vectors.js';

/**
 * These tests misbehave on purpose (bad names, protocol violations, failed logins) from one address, which
 * the server's abuse defences would score, delay and eventually ban. They test the protocol, not those
 * defences, so bans are off and scores are forgotten after a second.
 */
const NO_BANS = ['--ban-threshold', '0', '--ban-window', '1'];

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

function isReply(r: Reply | Header): r is Reply {
  return Array.isArray(r['interim']) && Array.isArray(r['data']);
}

/** `id` may list several acceptable ids (an error inside an upload may blame the upload or no request). */
function expectError(reply: Reply | Header, code: string, fatal: boolean, id: number | null | Array<number | null>): void {
  const h: Header = isReply(reply) ? reply.final : reply;
  expect(h, JSON.stringify(h)).to.include({ status: 'error', code, fatal });
  expect(h['id'], JSON.stringify(h)).to.be.oneOf(Array.isArray(id) ? id : [id]);
  expect(h['message']).to.be.a('string');
}

/** The connection must answer a noop with the given id (the session survived). */
async function expectAlive(c: RawClient, id = 4242): Promise<void> {
  c.sendHeader({ op: 'noop', id });
  const r = await c.reply();
  expect(r.final).to.deep.equal({ id, status: 'ok' });
}

/** After a fatal error: the server closes promptly and sends nothing more. */
async function expectClosed(c: RawClient): Promise<void> {
  expect(await c.waitClosed(5_000), 'server closes the connection promptly').to.equal(true);
  expect(await c.next(1_000), 'no frame after the fatal reply').to.equal(null);
}


/** An upload of `data` (more than 20 000 bytes) in three frames, the second (bytes 10 000–19 999) with a wrong CRC32C. */
function uploadCorruptingSecondFrame(id: number, name: string, data: Buffer): Buffer {
  return Buffer.concat([
    encodeHeader({ op: 'upload', id, name, size: data.length, sha256: sha256(data) }),
    encodeData(data.subarray(0, 10_000)),
    corruptCrcData(data.subarray(10_000, 20_000)),
    encodeData(data.subarray(20_000)),
  ]);
}

describe('protocol (raw TCP against a real server)', function () {
  let server: TestServer;
  const clients: RawClient[] = [];

  async function login(user = ALICE): Promise<RawClient> {
    const c = await RawClient.login(server.port, user.user, user.password);
    clients.push(c);
    return c;
  }

  /** Each named file is stored with exactly these bytes; then it is deleted (request ids from `firstId`). */
  async function expectStoredThenDelete(c: RawClient, firstId: number, files: Record<string, Buffer>): Promise<void> {
    let id = firstId;
    for (const [name, data] of Object.entries(files)) {
      expect((await readFile(path.join(server.storage, 'alice', name))).equals(data), name).to.equal(true);
      c.sendHeader({ op: 'delete', id: id++, name });
      expect((await c.reply()).final['status']).to.equal('ok');
    }
  }

  async function open(): Promise<{ client: RawClient; greeting: Header }> {
    const o = await RawClient.open(server.port);
    clients.push(o.client);
    return o;
  }

  before(async function () {
    server = await TestServer.start({ workers: 2, args: NO_BANS });
  });

  afterEach(function () {
    for (const c of clients.splice(0)) c.close();
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
  });

  it('greets first with hello, fts/1, plain, caps, maxHeader, maxChunk and idleTimeout', async function () {
    const { greeting } = await open();
    expect(greeting['status']).to.equal('hello');
    expect(greeting['protocol']).to.equal('fts/1');
    expect(greeting['server']).to.be.a('string');
    expect(greeting['mechs']).to.be.an('array').that.includes('plain');
    expect(greeting['caps']).to.be.an('array');
    for (const cap of greeting['caps'] as unknown[]) expect(cap).to.be.a('string');
    expect(greeting['maxHeader']).to.equal(16384);
    expect(greeting['maxChunk']).to.equal(1048576);
    expect(greeting['idleTimeout']).to.equal(300);
    expect(greeting).to.not.have.property('id');
  });

  it('pipelining: auth plus 20 requests in one write get replies in order with matching ids', async function () {
    const { client } = await open();
    const content = randomBytes(300_000);
    const small = Buffer.from('pipelined small file\n');
    const ids = Array.from({ length: 21 }, (_, i) => 900_000 - i * 7919); // unique, decreasing, not 1..n
    const reqs: Array<{ bytes: Buffer; check: (r: Reply) => void }> = [];
    const hdr = (h: Header, check: (r: Reply) => void): void => {
      reqs.push({ bytes: encodeHeader(h), check });
    };
    const ok = (r: Reply): void => {
      expect(r.final['status'], JSON.stringify(r.final)).to.equal('ok');
    };
    let n = 0;
    const id = (): number => ids[n++]!;
    hdr({ op: 'auth', id: id(), mech: 'plain', user: ALICE.user, password: ALICE.password }, (r) => expect(r.final['user']).to.equal('alice'));
    hdr({ op: 'noop', id: id() }, ok);
    reqs.push({ bytes: uploadBytes(id(), 'pipe-big.bin', content, 100_000), check: (r) => expect(r.final).to.include({ status: 'ok', name: 'pipe-big.bin', size: content.length, sha256: sha256(content) }) });
    reqs.push({ bytes: uploadBytes(id(), 'pipe-small.txt', small), check: ok });
    hdr({ op: 'list', id: id(), long: true }, (r) => {
      expect(r.interim.map((h) => h['name'])).to.deep.equal(['pipe-big.bin', 'pipe-small.txt']);
      expect(r.final['count']).to.equal(2);
    });
    hdr({ op: 'download', id: id(), name: 'pipe-big.bin' }, (r) => {
      expect(Buffer.concat(r.data).equals(content)).to.equal(true);
      expect(r.final['sha256']).to.equal(sha256(content));
    });
    hdr({ op: 'view', id: id(), name: 'pipe-big.bin' }, (r) => expect(Buffer.concat(r.data).equals(content.subarray(0, 1024))).to.equal(true));
    hdr({ op: 'view', id: id(), name: 'pipe-small.txt' }, (r) => expect(Buffer.concat(r.data).equals(small)).to.equal(true));
    hdr({ op: 'download', id: id(), name: 'missing' }, (r) => expectError(r, 'NOT_FOUND', false, r.final['id'] as number));
    hdr({ op: 'frobnicate', id: id() }, (r) => expectError(r, 'UNKNOWN_OP', false, r.final['id'] as number));
    hdr({ op: 'delete', id: id(), name: 'pipe-small.txt' }, (r) => expect(r.final).to.include({ status: 'ok', name: 'pipe-small.txt' }));
    hdr({ op: 'delete', id: id(), name: 'pipe-small.txt' }, (r) => expectError(r, 'NOT_FOUND', false, r.final['id'] as number));
    hdr({ op: 'list', id: id(), long: false }, (r) => {
      expect(r.interim).to.deep.equal([{ id: r.final['id'], status: 'entry', name: 'pipe-big.bin' }]);
    });
    hdr({ op: 'download', id: id(), name: 'pipe-big.bin', offset: 299_990 }, (r) => {
      expect(Buffer.concat(r.data).equals(content.subarray(299_990))).to.equal(true);
      expect(r.final['sha256']).to.equal(sha256(content));
    });
    hdr({ op: 'view', id: id(), name: 'a/b' }, (r) => expectError(r, 'BAD_NAME', false, r.final['id'] as number));
    hdr({ op: 'auth', id: id(), mech: 'plain', user: ALICE.user, password: ALICE.password }, (r) => expectError(r, 'ALREADY_AUTHENTICATED', false, r.final['id'] as number));
    // Whatever the fields of an auth after login: not judged as a login attempt (no UNSUPPORTED_MECHANISM).
    hdr({ op: 'auth', id: id(), mech: 'nope' }, (r) => expectError(r, 'ALREADY_AUTHENTICATED', false, r.final['id'] as number));
    for (let i = 0; i < 3; i++) hdr({ op: 'noop', id: id() }, ok);
    hdr({ op: 'delete', id: id(), name: 'pipe-big.bin' }, ok);
    expect(reqs).to.have.length(21);
    client.write(...reqs.map((r) => r.bytes));
    for (const [i, req] of reqs.entries()) {
      const r = await client.reply();
      expect(r.final['id'], `reply ${i} id`).to.equal(ids[i]);
      for (const h of r.interim) expect(h['id'], `interim reply of request ${i}`).to.equal(ids[i]);
      req.check(r);
    }
    expect(client.pending).to.equal(0);
    await expectAlive(client);
  });

  it('pipelined uploads publish in parallel, yet every reply comes in order and every later request sees the earlier ones', async function () {
    const c = await login();
    const files = Array.from({ length: 40 }, (_, i) => ({ name: `par-${i}.bin`, data: randomBytes(1 + ((i * 7919) % 9000)) }));
    const v1 = randomBytes(5000);
    const v2 = randomBytes(6000);
    const reqs: Array<{ bytes: Buffer; check: (r: Reply) => void }> = [];
    let id = 5000;
    const upload = (name: string, data: Buffer, check: (r: Reply) => void, sha = sha256(data)): void => {
      reqs.push({ bytes: uploadBytes(++id, name, data, 64 * 1024, sha), check });
    };
    const published = (name: string, data: Buffer) => (r: Reply) => expect(r.final).to.include({ status: 'ok', name, size: data.length, sha256: sha256(data) });
    for (const [i, f] of files.entries()) {
      upload(f.name, f.data, published(f.name, f.data));
      // The same name twice in a row: the second upload must be the version that stays.
      if (i === 10) upload('twice.bin', v1, published('twice.bin', v1));
      if (i === 11) upload('twice.bin', v2, published('twice.bin', v2));
      // A liar in the middle of the burst fails alone.
      if (i === 20) upload('liar.bin', v1, (r) => expectError(r, 'CHECKSUM_MISMATCH', false, r.final['id'] as number), sha256(v2));
    }
    reqs.push({
      bytes: encodeHeader({ op: 'download', id: ++id, name: 'twice.bin' }),
      check: (r) => expect(Buffer.concat(r.data).equals(v2), 'the download after both uploads gets the second version').to.equal(true),
    });
    reqs.push({
      bytes: encodeHeader({ op: 'list', id: ++id }),
      check: (r) => expect(r.interim.map((h) => h['name'])).to.include.members([...files.map((f) => f.name), 'twice.bin']).and.not.include('liar.bin'),
    });
    // Sent in one write, then our side half-closes: the replies of publishes still running must arrive.
    await c.write(...reqs.map((r) => r.bytes));
    c.end();
    for (const [i, req] of reqs.entries()) {
      const r = await c.reply(30_000);
      expect(r.final['id'], `reply ${i} is in request order`).to.equal(5001 + i);
      req.check(r);
    }
    for (const f of files) expect((await readFile(path.join(server.storage, ALICE.user, f.name))).equals(f.data), f.name).to.equal(true);
    expect((await readFile(path.join(server.storage, ALICE.user, 'twice.bin'))).equals(v2)).to.equal(true);
    expect(await exists(path.join(server.storage, ALICE.user, 'liar.bin'))).to.equal(false);
  });

  it('operations before auth get AUTH_REQUIRED (non-fatal); noop works; then auth works', async function () {
    const { client } = await open();
    client.write(
      encodeHeader({ op: 'list', id: 10 }),
      uploadBytes(11, 'early.txt', Buffer.from('sneaky')),
      encodeHeader({ op: 'download', id: 12, name: 'early.txt' }),
      encodeHeader({ op: 'view', id: 13, name: 'early.txt' }),
      encodeHeader({ op: 'delete', id: 14, name: 'early.txt' }),
      encodeHeader({ op: 'list' }), // §3.2 rule 5: AUTH_REQUIRED before the missing id is looked at
      encodeHeader({ op: 'noop', id: 15 }),
    );
    for (const id of [10, 11, 12, 13, 14, null]) {
      const r = await client.reply();
      expectError(r, 'AUTH_REQUIRED', false, id);
      expect(r.interim).to.deep.equal([]);
      expect(r.data).to.deep.equal([]);
    }
    expect((await client.reply()).final).to.deep.equal({ id: 15, status: 'ok' });
    client.sendHeader({ op: 'auth', id: 16, mech: 'plain', user: ALICE.user, password: ALICE.password });
    expect((await client.reply()).final).to.include({ id: 16, status: 'ok', user: 'alice' });
    client.sendHeader({ op: 'list', id: 17, long: false });
    const list = await client.reply();
    expect(list.final['status']).to.equal('ok');
    expect(list.interim.map((h) => h['name'])).to.not.include('early.txt');
    expect(await exists(path.join(server.storage, 'alice', 'early.txt'))).to.equal(false);
  });

  it('UNSUPPORTED_MECHANISM is non-fatal, and plain works afterwards', async function () {
    const { client } = await open();
    client.sendHeader({ op: 'auth', id: 3, mech: 'x-no-such-mech', user: ALICE.user, password: ALICE.password });
    expectError(await client.reply(), 'UNSUPPORTED_MECHANISM', false, 3);
    client.sendHeader({ op: 'auth', id: 4, mech: 'plain', user: ALICE.user, password: ALICE.password });
    expect((await client.reply()).final).to.include({ id: 4, status: 'ok', user: 'alice' });
  });

  it('unknown op gets UNKNOWN_OP (non-fatal)', async function () {
    const c = await login();
    c.sendHeader({ op: 'chmod', id: 77, name: 'a', mode: 420 });
    expectError(await c.reply(), 'UNKNOWN_OP', false, 77);
    await expectAlive(c);
  });

  it('a header that is not a JSON object gets BAD_REQUEST with id null; the session survives', async function () {
    const c = await login();
    c.write(rawHeaderFrame(Buffer.from('{"op":"noop","id":5', 'utf8')));
    expectError(await c.reply(), 'BAD_REQUEST', false, null);
    c.write(rawHeaderFrame(Buffer.from('[1,2,3]', 'utf8')));
    expectError(await c.reply(), 'BAD_REQUEST', false, null);
    c.write(rawHeaderFrame(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]))); // {"\xff\xfe":1}: invalid UTF-8
    expectError(await c.reply(), 'BAD_REQUEST', false, null);
    await expectAlive(c);
  });

  it('a request without a usable id gets BAD_REQUEST with id null (non-fatal)', async function () {
    const c = await login();
    c.sendHeader({ op: 'noop' });
    expectError(await c.reply(), 'BAD_REQUEST', false, null);
    c.sendHeader({ op: 'noop', id: -1 });
    expectError(await c.reply(), 'BAD_REQUEST', false, null);
    c.sendHeader({ op: 'list', id: 9, long: 'yes' });
    expectError(await c.reply(), 'BAD_REQUEST', false, 9);
    // §3.2 rule 5: an auth after login is ALREADY_AUTHENTICATED before its id is looked at.
    c.sendHeader({ op: 'auth', mech: 'plain' });
    expectError(await c.reply(), 'ALREADY_AUTHENTICATED', false, null);
    await expectAlive(c);
  });

  it('regression (fixed): a download without a name (missing field) gets BAD_REQUEST as PROTOCOL.md §7 says, not BAD_NAME', async function () {
    const c = await login();
    c.sendHeader({ op: 'download', id: 8 });
    expectError(await c.reply(), 'BAD_REQUEST', false, 8);
    c.sendHeader({ op: 'delete', id: 10 });
    expectError(await c.reply(), 'BAD_REQUEST', false, 10);
    await expectAlive(c);
  });

  it('an unknown frame type is a fatal PROTOCOL_ERROR and the connection closes', async function () {
    const c = await login();
    c.write(Buffer.concat([Buffer.from([0x58, 0, 0, 0, 2]), Buffer.from('{}')]));
    const r = await c.reply();
    expectError(r, 'PROTOCOL_ERROR', true, null);
    await expectClosed(c);
  });

  it('a header frame declaring more than maxHeader bytes is a fatal FRAME_TOO_LARGE, before its body arrives', async function () {
    const { client, greeting } = await open();
    const maxHeader = greeting['maxHeader'] as number;
    client.write(prefix(0x48, maxHeader + 1), Buffer.from('{"op":"noop"')); // body never completed
    const r = await client.reply(5_000);
    expectError(r, 'FRAME_TOO_LARGE', true, null);
    await expectClosed(client);
  });

  it('a header frame of exactly maxHeader bytes is accepted', async function () {
    const c = await login();
    const base = JSON.stringify({ op: 'noop', id: 6, pad: '' });
    const body = JSON.stringify({ op: 'noop', id: 6, pad: 'x'.repeat(16384 - Buffer.byteLength(base)) });
    expect(Buffer.byteLength(body)).to.equal(16384);
    c.write(rawHeaderFrame(Buffer.from(body, 'utf8')));
    expect((await c.reply()).final).to.deep.equal({ id: 6, status: 'ok' });
  });

  it('a data frame longer than maxChunk + 4 is a fatal FRAME_TOO_LARGE', async function () {
    const c = await login();
    c.write(encodeHeader({ op: 'upload', id: 9, name: 'huge-frame.bin', size: 2_000_000, sha256: 'a'.repeat(64) }), prefix(0x44, 1048576 + 5));
    const r = await c.reply(5_000);
    expectError(r, 'FRAME_TOO_LARGE', true, [9, null]);
    await expectClosed(c);
    expect(await exists(path.join(server.storage, 'alice', 'huge-frame.bin'))).to.equal(false);
  });

  it('a data frame outside an upload is a fatal PROTOCOL_ERROR', async function () {
    const c = await login();
    c.write(encodeData(Buffer.from('stray bytes')));
    expectError(await c.reply(), 'PROTOCOL_ERROR', true, null);
    await expectClosed(c);
  });

  it('a fatal framing error after pipelined uploads comes after their replies, and the uploads are published', async function () {
    const c = await login();
    const files = Array.from({ length: 8 }, (_, i) => ({ name: `before-fatal-${i}.bin`, data: randomBytes(4096) }));
    c.write(...files.map((f, i) => uploadBytes(30 + i, f.name, f.data)), encodeData(Buffer.from('stray bytes')));
    for (const [i, f] of files.entries()) {
      const r = await c.reply();
      expect(r.final, JSON.stringify(r.final)).to.include({ status: 'ok', id: 30 + i, name: f.name });
    }
    expectError(await c.reply(), 'PROTOCOL_ERROR', true, null);
    await expectClosed(c);
    const honest = await login();
    await expectStoredThenDelete(honest, 50, Object.fromEntries(files.map((f) => [f.name, f.data])));
  });

  it('a request pipelined after a fatal error is not run, also while earlier uploads are still publishing', async function () {
    const c = await login();
    const files = Array.from({ length: 4 }, (_, i) => ({ name: `keep-after-fatal-${i}.bin`, data: randomBytes(4096) }));
    const bad = Buffer.alloc(100, 1);
    c.write(
      ...files.map((f, i) => uploadBytes(60 + i, f.name, f.data)),
      // 10 of 100 declared bytes, then a header frame inside the data phase: the fatal PROTOCOL_ERROR.
      encodeHeader({ op: 'upload', id: 70, name: 'fatal-mid-data.bin', size: bad.length, sha256: sha256(bad) }),
      encodeData(bad.subarray(0, 10)),
      encodeHeader({ op: 'noop', id: 71 }),
      encodeHeader({ op: 'delete', id: 72, name: files[0]!.name }),
    );
    for (const [i, f] of files.entries()) expect((await c.reply()).final, f.name).to.include({ status: 'ok', id: 60 + i });
    expectError(await c.reply(), 'PROTOCOL_ERROR', true, 70);
    await expectClosed(c);
    const honest = await login();
    await expectStoredThenDelete(honest, 80, Object.fromEntries(files.map((f) => [f.name, f.data])));
  });

  it('an empty data frame is a fatal PROTOCOL_ERROR', async function () {
    const c = await login();
    c.write(encodeHeader({ op: 'upload', id: 3, name: 'empty-frame.bin', size: 4, sha256: sha256(Buffer.from('abcd')) }), prefix(0x44, 4), Buffer.alloc(4));
    expectError(await c.reply(), 'PROTOCOL_ERROR', true, [3, null]);
    await expectClosed(c);
    expect(await exists(path.join(server.storage, 'alice', 'empty-frame.bin'))).to.equal(false);
  });

  it('upload with a wrong sha256 gets CHECKSUM_MISMATCH; nothing is published; the session survives', async function () {
    const c = await login();
    const data = randomBytes(200_000);
    const staged = await stagingFiles(server, 'alice');
    c.write(uploadBytes(21, 'badsum.bin', data, 65_536, sha256(Buffer.from('something else'))));
    expectError(await c.reply(), 'CHECKSUM_MISMATCH', false, 21);
    expect(await exists(path.join(server.storage, 'alice', 'badsum.bin'))).to.equal(false);
    expect(await stagingFiles(server, 'alice'), 'bytes proven wrong are not kept in staging').to.deep.equal(staged);
    c.sendHeader({ op: 'download', id: 22, name: 'badsum.bin' });
    expectError(await c.reply(), 'NOT_FOUND', false, 22);
    await expectAlive(c);
  });

  it('upload with a corrupted CRC in one data frame gets CHUNK_CORRUPT; nothing is published; the session survives', async function () {
    const c = await login();
    const data = randomBytes(30_000);
    c.write(uploadCorruptingSecondFrame(31, 'crc.bin', data), encodeHeader({ op: 'noop', id: 32 }));
    const r = await c.reply();
    expectError(r, 'CHUNK_CORRUPT', false, 31);
    // §6.1/§7: CHUNK_CORRUPT carries `offset`, where to resend from: the good bytes before the corrupt frame
    // (the first frame, 10 000 bytes) are kept, so exactly there.
    expect(r.final, JSON.stringify(r.final)).to.have.property('offset', 10_000);
    expect((await c.reply()).final).to.deep.equal({ id: 32, status: 'ok' });
    expect(await exists(path.join(server.storage, 'alice', 'crc.bin'))).to.equal(false);
    c.sendHeader({ op: 'list', id: 35, long: false });
    expect((await c.reply()).interim.map((h) => h['name'])).to.not.include('crc.bin');
    // The same upload without the corruption succeeds on the same connection.
    c.write(uploadBytes(33, 'crc.bin', data, 10_000));
    expect((await c.reply()).final).to.include({ id: 33, status: 'ok', sha256: sha256(data) });
    c.sendHeader({ op: 'delete', id: 34, name: 'crc.bin' });
    expect((await c.reply()).final['status']).to.equal('ok');
  });

  it('a small upload (read whole before its staging file opens) has the streaming outcomes: CHUNK_CORRUPT names the durable good prefix, a cut connection leaves what arrived staged, and both resume', async function () {
    const c = await login();
    const offsetOf = async (id: number, name: string, data: Buffer): Promise<unknown> => {
      c.sendHeader({ op: 'offset', id, name, size: data.length, sha256: sha256(data) });
      return (await c.reply()).final['offset'];
    };
    // Corrupt second frame: the first 10 000 bytes are made durable and named as the resend offset.
    const data = randomBytes(40_000);
    c.write(uploadCorruptingSecondFrame(301, 'small-crc.bin', data));
    const r = await c.reply();
    expectError(r, 'CHUNK_CORRUPT', false, 301);
    expect(r.final['offset']).to.equal(10_000);
    expect(await offsetOf(302, 'small-crc.bin', data)).to.equal(10_000);
    c.write(encodeHeader({ op: 'upload', id: 303, name: 'small-crc.bin', size: data.length, sha256: sha256(data), offset: 10_000 }), encodeData(data.subarray(10_000)));
    expect((await c.reply()).final).to.include({ id: 303, status: 'ok', sha256: sha256(data) });

    // Cut after 20 000 of 50 000 bytes: those bytes stay staged for a resume on another connection.
    const cut = await login();
    const more = randomBytes(50_000);
    await cut.write(encodeHeader({ op: 'upload', id: 311, name: 'small-cut.bin', size: more.length, sha256: sha256(more) }), encodeData(more.subarray(0, 20_000)));
    cut.end(); // a FIN after the bytes: the server reads them all, then sees the connection end mid-upload
    let staged: unknown = 0;
    for (let i = 0; i < 50 && staged !== 20_000; i++) {
      await delay(100);
      staged = await offsetOf(312 + i, 'small-cut.bin', more);
    }
    expect(staged, 'the received prefix is staged once the server sees the cut').to.equal(20_000);
    c.write(encodeHeader({ op: 'upload', id: 399, name: 'small-cut.bin', size: more.length, sha256: sha256(more), offset: 20_000 }), encodeData(more.subarray(20_000)));
    expect((await c.reply()).final).to.include({ id: 399, status: 'ok', sha256: sha256(more) });
    await expectStoredThenDelete(c, 397, { 'small-crc.bin': data, 'small-cut.bin': more });
  });

  it('a small upload split into 1-byte frames: CHUNK_CORRUPT at the exact frame, and an unparseable header after pipelined uploads is answered after their replies', async function () {
    const c = await login();
    const data = randomBytes(3000);
    const frames = [...data].map((byte, i) => (i === 1000 ? corruptCrcData(Buffer.from([byte])) : encodeData(Buffer.from([byte]))));
    c.write(encodeHeader({ op: 'upload', id: 401, name: 'tiny-frames.bin', size: data.length, sha256: sha256(data) }), ...frames);
    const r = await c.reply();
    expectError(r, 'CHUNK_CORRUPT', false, 401);
    expect(r.final['offset']).to.equal(1000);
    // The same bytes in 1-byte frames, then a header that is not JSON: its BAD_REQUEST (id null) is the last reply.
    c.write(
      encodeHeader({ op: 'upload', id: 402, name: 'tiny-frames.bin', size: data.length, sha256: sha256(data) }),
      ...[...data].map((byte) => encodeData(Buffer.from([byte]))),
      uploadBytes(403, 'tiny-frames-2.bin', data),
      rawHeaderFrame(Buffer.from('{"op":"noop"', 'utf8')),
    );
    expect((await c.reply()).final).to.include({ id: 402, status: 'ok', sha256: sha256(data) });
    expect((await c.reply()).final).to.include({ id: 403, status: 'ok', sha256: sha256(data) });
    expectError(await c.reply(), 'BAD_REQUEST', false, null);
    await expectStoredThenDelete(c, 404, { 'tiny-frames.bin': data, 'tiny-frames-2.bin': data });
  });

  it('upload with a bad name: its data is skipped, BAD_NAME comes only after the data, and the next request works', async function () {
    const c = await login();
    const data = randomBytes(50_000);
    const staged = await stagingFiles(server, 'alice');
    const bytes = uploadBytes(41, '../escape.bin', data, 10_000);
    const half = Math.floor(bytes.length / 2);
    // §6.1: the final reply comes only after all the data. Observed without a sleep: on another connection,
    // the header and half of the data, then a half-close (FIN). The server has then seen every byte it will
    // ever see of this upload, and must still not answer it; it closes the connection without a frame. The
    // control below shows that a half-close by itself does not silence the server: with all the data
    // before the FIN, BAD_NAME arrives (§3.2 rule 2).
    const halfSent = await login();
    await halfSent.write(bytes.subarray(0, half));
    halfSent.socket.end();
    const afterHalf = await halfSent.nextEvent(10_000);
    expect(afterHalf, 'no reply to an upload whose data never completed').to.deep.include({ kind: 'closed' });
    const allSent = await login();
    await allSent.write(bytes);
    allSent.socket.end();
    expectError(await allSent.reply(), 'BAD_NAME', false, 41);
    expect(await allSent.next(5_000), 'then the server closes').to.equal(null);
    // On a connection that goes on: the data is skipped, BAD_NAME comes after it, the next request works.
    c.write(bytes.subarray(0, half));
    c.write(bytes.subarray(half), encodeHeader({ op: 'noop', id: 42 }));
    expectError(await c.reply(), 'BAD_NAME', false, 41);
    expect((await c.reply()).final).to.deep.equal({ id: 42, status: 'ok' });
    expect(await exists(path.join(server.storage, 'escape.bin'))).to.equal(false);
    expect(await exists(path.join(path.dirname(server.storage), 'escape.bin'))).to.equal(false);
    expect(await stagingFiles(server, 'alice'), 'a refused name stages nothing').to.deep.equal(staged);
  });

  it('an upload cut by a half-close in its data gets no reply (a dropped connection): the bytes received are kept for a resume', async function () {
    const data = randomBytes(300_000);
    const bytes = uploadBytes(51, 'half-closed.bin', data, 100_000);
    const cut = await login();
    // The header and the first two data frames, whole: 200 000 bytes the server can keep.
    const twoFrames = bytes.length - (100_000 + 9);
    await cut.write(encodeHeader({ op: 'noop', id: 50 }), bytes.subarray(0, twoFrames));
    cut.socket.end();
    expect((await cut.reply()).final, 'earlier requests are still answered').to.deep.equal({ id: 50, status: 'ok' });
    expect(await cut.nextEvent(10_000), 'then the connection closes without a frame').to.deep.include({ kind: 'closed' });
    const c = await login();
    // The cut session releases its staging file as it closes; until then the offset may read lower.
    let id = 100;
    await waitUntil('the two whole frames to be staged', async () => {
      c.write(encodeHeader({ op: 'offset', id: ++id, name: 'half-closed.bin', size: data.length, sha256: sha256(data) }));
      return (await c.reply()).final['offset'] === 200_000;
    }, 10_000, 50);
    c.write(encodeHeader({ op: 'upload', id: 53, name: 'half-closed.bin', size: data.length, offset: 200_000, sha256: sha256(data) }), dataFrames(data.subarray(200_000), 100_000));
    expect((await c.reply()).final).to.include({ id: 53, status: 'ok', size: data.length, sha256: sha256(data) });
    await expectStoredThenDelete(c, 54, { 'half-closed.bin': data });
  });

  for (const [mib, outcome] of [
    [3, 'ok at once: the other upload published this very file (under 8 MiB: the server hashes it)'],
    [9, 'ok at once: the other upload published this very file (its recorded digest, 8 MiB or more, is ours)'],
  ] as const) {
    it(`an upload of ${mib} MiB whose staged bytes another connection's resume took over, and published, gets ${outcome}`, async function () {
      const MiB = 1024 * 1024;
      const data = randomBytes(mib * MiB);
      const digest = sha256(data);
      const name = `taken-over-${mib}.bin`;
      const stagedBefore = await stagingFiles(server, 'alice');
      const frames = dataFrames(data, MiB);
      const frameBytes = MiB + 9;
      // A: the header and the first two MiB, then it pauses (a slow client, or one stopped for a while).
      const a = await login();
      await a.write(encodeHeader({ op: 'upload', id: 61, name, size: data.length, sha256: digest }), frames.subarray(0, 2 * frameBytes));
      // B: the same file uploaded again on another connection resumes from A's staged bytes and publishes.
      const b = await login();
      let id = 200;
      const staged = await waitUntil('A\'s two MiB to be staged', async () => {
        b.write(encodeHeader({ op: 'offset', id: ++id, name, size: data.length, sha256: digest }));
        const offset = Number((await b.reply()).final['offset']);
        return offset === 2 * MiB ? offset : undefined;
      }, 10_000, 50);
      b.write(encodeHeader({ op: 'upload', id: 62, name, size: data.length, offset: staged, sha256: digest }), dataFrames(data.subarray(staged), MiB));
      const published = (await b.reply()).final;
      expect(published).to.include({ id: 62, status: 'ok', sha256: digest });
      // A sends the rest, into a staged file that is gone.
      a.write(frames.subarray(2 * frameBytes));
      const answer = await a.reply();
      expect(answer.final, 'the name already holds exactly this file').to.include({ id: 61, status: 'ok', sha256: digest, mtime: published['mtime'] });
      await expectStoredThenDelete(a, 64, { [name]: data });
      expect(await stagingFiles(server, 'alice'), 'nothing left staged').to.deep.equal(stagedBefore);
    });
  }

  it('an upload whose staged bytes its own user discards mid-way is not answered ok by an older file holding the same bytes (which would confirm a guess of it to a user who may not read it): OFFSET_MISMATCH', async function () {
    const MiB = 1024 * 1024;
    const data = randomBytes(9 * MiB);
    const digest = sha256(data);
    const name = 'older-same.bin';
    const first = await login();
    first.write(encodeHeader({ op: 'upload', id: 70, name, size: data.length, sha256: digest }), dataFrames(data, MiB));
    expect((await first.reply()).final).to.include({ id: 70, status: 'ok' });
    await sleep(1500); // older than the next upload by more than the file system's clock slack
    const frames = dataFrames(data, MiB);
    const frameBytes = MiB + 9;
    const a = await login();
    a.write(encodeHeader({ op: 'upload', id: 71, name, size: data.length, sha256: digest }), frames.subarray(0, 2 * frameBytes));
    const b = await login();
    let id = 300;
    const key = await waitUntil('the upload to be listed among the partials', async () => {
      b.write(encodeHeader({ op: 'partials', id: ++id }));
      const found = ((await b.reply()).interim as Array<{ name?: string; key?: string; bytes?: number }>).find((p) => p.name === name && (p.bytes ?? 0) > 0);
      return found?.key;
    }, 10_000, 50);
    b.write(encodeHeader({ op: 'discard', id: ++id, key }));
    expect((await b.reply()).final).to.include({ status: 'ok' });
    a.write(frames.subarray(2 * frameBytes));
    expect((await a.reply()).final, 'not "ok": the file under the name was there before this upload began').to.include({ id: 71, status: 'error', code: 'OFFSET_MISMATCH' });
    await expectStoredThenDelete(a, 72, { [name]: data });
  });

  it('upload with offset other than 0 gets OFFSET_MISMATCH after its data; the session survives', async function () {
    const c = await login();
    const data = Buffer.from('0123456789');
    c.write(
      encodeHeader({ op: 'upload', id: 45, name: 'resume.bin', size: 20, offset: 10, sha256: sha256(Buffer.concat([data, data])) }),
      encodeData(data),
      encodeHeader({ op: 'noop', id: 46 }),
    );
    expectError(await c.reply(), 'OFFSET_MISMATCH', false, 45);
    expect((await c.reply()).final).to.deep.equal({ id: 46, status: 'ok' });
    expect(await exists(path.join(server.storage, 'alice', 'resume.bin'))).to.equal(false);
  });

  it('upload with a data frame going past the declared size is a fatal PROTOCOL_ERROR; nothing is published', async function () {
    const c = await login();
    const data = randomBytes(20);
    c.write(encodeHeader({ op: 'upload', id: 51, name: 'overflow.bin', size: 10, sha256: sha256(data.subarray(0, 10)) }), encodeData(data));
    const r = await c.reply();
    expectError(r, 'PROTOCOL_ERROR', true, [51, null]);
    await expectClosed(c);
    expect(await exists(path.join(server.storage, 'alice', 'overflow.bin'))).to.equal(false);
  });

  it('a header frame inside an upload data phase is a fatal PROTOCOL_ERROR; nothing is published', async function () {
    const c = await login();
    const data = randomBytes(100);
    c.write(encodeHeader({ op: 'upload', id: 55, name: 'interrupted.bin', size: 100, sha256: sha256(data) }), encodeData(data.subarray(0, 50)), encodeHeader({ op: 'noop', id: 56 }));
    const r = await c.reply();
    expectError(r, 'PROTOCOL_ERROR', true, [55, null]);
    await expectClosed(c);
    expect(await exists(path.join(server.storage, 'alice', 'interrupted.bin'))).to.equal(false);
  });

  it('wrong password gets a fatal AUTH_FAILED and the connection closes; an unknown user gets the byte-identical reply except the id', async function () {
    const a = await open();
    a.client.sendHeader({ op: 'auth', id: 111, mech: 'plain', user: ALICE.user, password: 'wrong password' });
    const wrong = await a.client.reply();
    expectError(wrong, 'AUTH_FAILED', true, 111);
    await expectClosed(a.client);

    const b = await open();
    b.client.sendHeader({ op: 'auth', id: 222, mech: 'plain', user: 'mallory', password: ALICE.password });
    const unknown = await b.client.reply();
    expectError(unknown, 'AUTH_FAILED', true, 222);
    await expectClosed(b.client);

    const frameA = splitFrames(a.client.receivedBytes());
    const frameB = splitFrames(b.client.receivedBytes());
    expect(frameA).to.have.length(2); // greeting + the error
    expect(frameB).to.have.length(2);
    const normalise = (f: Buffer, id: number): string => f.subarray(5).toString('utf8').replace(`"id":${id}`, '"id":ID');
    expect(normalise(frameA[1]!, 111)).to.equal(normalise(frameB[1]!, 222));
    expect(frameA[1]!.length).to.equal(frameB[1]!.length);
    // The same with a user that exists but whose password belongs to another user.
    const c = await open();
    c.client.sendHeader({ op: 'auth', id: 111, mech: 'plain', user: BOB.user, password: ALICE.password });
    await c.client.reply();
    await expectClosed(c.client);
    const frameC = splitFrames(c.client.receivedBytes());
    expect(frameC[1]!.equals(frameA[1]!)).to.equal(true);
  });

  it('quit gets ok, then the server closes the connection', async function () {
    const c = await login();
    c.sendHeader({ op: 'quit', id: 61 });
    expect((await c.reply()).final).to.deep.equal({ id: 61, status: 'ok' });
    await expectClosed(c);
  });

  it('quit before auth also gets ok and a close', async function () {
    const { client } = await open();
    client.sendHeader({ op: 'quit', id: 62 });
    expect((await client.reply()).final).to.deep.equal({ id: 62, status: 'ok' });
    await expectClosed(client);
  });

  it('download: data reply with size/mtime/offset/length, data frames totalling length, then ok with the sha256', async function () {
    const c = await login();
    const data = randomBytes(2_500_001);
    c.write(uploadBytes(71, 'dl.bin', data, 1_048_576));
    const up = (await c.reply()).final;
    expect(up).to.include({ id: 71, status: 'ok', name: 'dl.bin', size: data.length, sha256: sha256(data) });
    expect(Number.isSafeInteger(up['mtime'])).to.equal(true);
    c.sendHeader({ op: 'download', id: 72, name: 'dl.bin', offset: 0 });
    const r = await c.reply();
    expect(r.interim).to.have.length(1);
    expect(r.interim[0]).to.deep.equal({ id: 72, status: 'data', size: data.length, mtime: up['mtime'], offset: 0, length: data.length });
    expect(r.data.length).to.be.greaterThan(1);
    for (const p of r.data) expect(p.length).to.be.within(1, 1048576);
    expect(Buffer.concat(r.data).equals(data)).to.equal(true);
    expect(r.final).to.deep.equal({ id: 72, status: 'ok', name: 'dl.bin', size: data.length, length: data.length, sha256: sha256(data) });

    // Without the optional offset field it defaults to 0.
    c.sendHeader({ op: 'download', id: 73, name: 'dl.bin' });
    const r2 = await c.reply();
    expect(Buffer.concat(r2.data).equals(data)).to.equal(true);

    // view: the first 1024 bytes.
    c.sendHeader({ op: 'view', id: 74, name: 'dl.bin' });
    const v = await c.reply();
    expect(v.interim).to.deep.equal([{ id: 74, status: 'data', size: data.length, mtime: up['mtime'], offset: 0, length: 1024 }]);
    expect(Buffer.concat(v.data).equals(data.subarray(0, 1024))).to.equal(true);
    expect(v.final).to.deep.equal({ id: 74, status: 'ok', name: 'dl.bin', size: data.length, length: 1024 });

    // list: the entry's size and mtime agree.
    c.sendHeader({ op: 'list', id: 75 });
    const l = await c.reply();
    const entry = l.interim.find((h) => h['name'] === 'dl.bin');
    expect(entry).to.deep.equal({ id: 75, status: 'entry', name: 'dl.bin', size: data.length, mtime: up['mtime'] });
  });

  it('download with an offset returns the tail and the whole-file sha256; offset = size gives no data', async function () {
    const c = await login();
    const data = randomBytes(400_000);
    c.write(uploadBytes(81, 'tail.bin', data));
    expect((await c.reply()).final['status']).to.equal('ok');
    c.sendHeader({ op: 'download', id: 82, name: 'tail.bin', offset: 123_457 });
    const r = await c.reply();
    expect(r.interim[0]).to.include({ id: 82, status: 'data', size: data.length, offset: 123_457, length: data.length - 123_457 });
    expect(Buffer.concat(r.data).equals(data.subarray(123_457))).to.equal(true);
    expect(r.final).to.include({ id: 82, status: 'ok', size: data.length, length: data.length - 123_457, sha256: sha256(data) });

    c.sendHeader({ op: 'download', id: 83, name: 'tail.bin', offset: data.length });
    const end = await c.reply();
    expect(end.interim[0]).to.include({ status: 'data', offset: data.length, length: 0 });
    expect(end.data).to.deep.equal([]);
    expect(end.final).to.include({ id: 83, status: 'ok', length: 0, sha256: sha256(data) });
  });

  it('download with an offset past the end gets OFFSET_MISMATCH (non-fatal)', async function () {
    const c = await login();
    const data = Buffer.from('short file');
    c.write(uploadBytes(91, 'short.txt', data));
    expect((await c.reply()).final['status']).to.equal('ok');
    c.sendHeader({ op: 'download', id: 92, name: 'short.txt', offset: data.length + 1 });
    const r = await c.reply();
    expectError(r, 'OFFSET_MISMATCH', false, 92);
    expect(r.interim).to.deep.equal([]);
    expect(r.data).to.deep.equal([]);
    await expectAlive(c);
  });

  it('zero-byte upload has no data frames; its download has a data reply with length 0 and no data frames', async function () {
    const c = await login();
    const empty = Buffer.alloc(0);
    c.write(encodeHeader({ op: 'upload', id: 95, name: 'zero.bin', size: 0, sha256: sha256(empty) }), encodeHeader({ op: 'download', id: 96, name: 'zero.bin' }));
    expect((await c.reply()).final).to.include({ id: 95, status: 'ok', size: 0 });
    const r = await c.reply();
    expect(r.interim[0]).to.include({ id: 96, status: 'data', size: 0, length: 0, offset: 0 });
    expect(r.data).to.deep.equal([]);
    expect(r.final).to.include({ id: 96, status: 'ok', sha256: sha256(empty) });
  });

  describe('streamed uploads ("trailer": true, §6.1)', function () {
    /** A version tag as a client would choose it (any 64 lowercase hex digits). */
    const tag = (seed: string): string => sha256(Buffer.from(seed));

    /** A streamed upload from `offset`: header, data frames of the bytes from `offset`, then the trailer. */
    function streamedBytes(id: number, name: string, data: Buffer, version: string, options: { offset?: number; trailerSha?: string } = {}): Buffer {
      const offset = options.offset ?? 0;
      return Buffer.concat([
        encodeHeader({ op: 'upload', id, name, size: data.length, trailer: true, version, ...(offset > 0 ? { offset } : {}) }),
        dataFrames(data.subarray(offset), 65_536),
        encodeHeader({ op: 'upload', id, sha256: options.trailerSha ?? sha256(data) }),
      ]);
    }

    it('the greeting offers upload-trailer', async function () {
      const { greeting } = await open();
      expect(greeting['caps']).to.include('upload-trailer');
    });

    it('header with a version tag, data, then the digest in a trailer: ok with the digest, stored exactly, nothing left in staging', async function () {
      const c = await login();
      const staged = await stagingFiles(server, 'alice');
      const data = randomBytes(300_000);
      c.write(streamedBytes(601, 'streamed.bin', data, tag('a')), encodeHeader({ op: 'noop', id: 602 }));
      expect((await c.reply()).final).to.include({ id: 601, status: 'ok', name: 'streamed.bin', size: data.length, sha256: sha256(data) });
      expect((await c.reply()).final).to.deep.equal({ id: 602, status: 'ok' });
      expect(await stagingFiles(server, 'alice')).to.deep.equal(staged);
      const empty = Buffer.alloc(0);
      c.write(streamedBytes(603, 'streamed-empty.bin', empty, tag('e')));
      expect((await c.reply()).final).to.include({ id: 603, status: 'ok', sha256: sha256(empty) });
      await expectStoredThenDelete(c, 604, { 'streamed.bin': data, 'streamed-empty.bin': empty });
    });

    it('a wrong digest in the trailer gets CHECKSUM_MISMATCH; nothing is published or kept; the session survives', async function () {
      const c = await login();
      const staged = await stagingFiles(server, 'alice');
      const data = randomBytes(200_000);
      c.write(streamedBytes(611, 'streamed-bad.bin', data, tag('b'), { trailerSha: sha256(Buffer.from('other')) }));
      expectError(await c.reply(), 'CHECKSUM_MISMATCH', false, 611);
      expect(await exists(path.join(server.storage, 'alice', 'streamed-bad.bin'))).to.equal(false);
      expect(await stagingFiles(server, 'alice'), 'bytes proven wrong are not kept').to.deep.equal(staged);
      await expectAlive(c);
    });

    it('a refused streamed upload (bad name, or sha256 in its header) still consumes its data and its trailer', async function () {
      const c = await login();
      const data = randomBytes(70_000);
      c.write(streamedBytes(621, '../escape.bin', data, tag('c')), encodeHeader({ op: 'noop', id: 622 }));
      expectError(await c.reply(), 'BAD_NAME', false, 621);
      expect((await c.reply()).final).to.deep.equal({ id: 622, status: 'ok' });
      c.write(
        encodeHeader({ op: 'upload', id: 623, name: 'both.bin', size: data.length, trailer: true, version: tag('c'), sha256: sha256(data) }),
        dataFrames(data, 65_536),
        encodeHeader({ op: 'upload', id: 623, sha256: sha256(data) }),
        encodeHeader({ op: 'noop', id: 624 }),
      );
      expectError(await c.reply(), 'BAD_REQUEST', false, 623);
      expect((await c.reply()).final).to.deep.equal({ id: 624, status: 'ok' });
      expect(await exists(path.join(server.storage, 'alice', 'both.bin'))).to.equal(false);
    });

    it('a refused streamed upload consumes its trailer on every refusal path: before login, an offset beyond what is staged', async function () {
      const data = randomBytes(5000);
      const { client: anon } = await open();
      anon.write(streamedBytes(671, 'anon.bin', data, tag('n')), encodeHeader({ op: 'noop', id: 672 }));
      expectError(await anon.reply(), 'AUTH_REQUIRED', false, 671);
      expect((await anon.reply()).final).to.deep.equal({ id: 672, status: 'ok' });
      const c = await login();
      c.write(streamedBytes(673, 'nothing-staged.bin', data, tag('n'), { offset: 1000 }), encodeHeader({ op: 'noop', id: 674 }));
      const r = await c.reply();
      expectError(r, 'OFFSET_MISMATCH', false, 673);
      expect(r.final['offset']).to.equal(0);
      expect((await c.reply()).final).to.deep.equal({ id: 674, status: 'ok' });
    });

    it('an upload whose "trailer" is not a boolean gets one fatal BAD_REQUEST (whether a trailer follows is unknown); nothing is published', async function () {
      for (const trailer of ['yes', 1]) {
        const c = await login();
        const data = randomBytes(3000);
        c.write(
          encodeHeader({ op: 'upload', id: 691, name: 'odd-trailer.bin', size: data.length, trailer, version: tag('t') }),
          dataFrames(data),
          encodeHeader({ op: 'upload', id: 691, sha256: sha256(data) }),
          encodeHeader({ op: 'noop', id: 692 }),
        );
        const r = await c.reply();
        expectError(r, 'BAD_REQUEST', true, 691);
        expect(r.final['message']).to.match(/trailer/);
        await expectClosed(c);
        expect(await exists(path.join(server.storage, 'alice', 'odd-trailer.bin'))).to.equal(false);
      }
    });

    it('after a refused streamed upload, a header of another id where its trailer belongs is a fatal PROTOCOL_ERROR', async function () {
      const c = await login();
      const data = randomBytes(3000);
      c.write(
        encodeHeader({ op: 'upload', id: 681, name: '../refused.bin', size: data.length, trailer: true, version: tag('r') }),
        dataFrames(data),
        encodeHeader({ op: 'upload', id: 682, sha256: sha256(data) }),
      );
      const r = await c.reply();
      // The refusal (BAD_NAME) is answered before the trailer is read; then the wrong trailer ends the session.
      const finals = [r.final, ...(r.final['fatal'] === true ? [] : [(await c.reply()).final])];
      expect(finals.map((f) => f['code'])).to.include('PROTOCOL_ERROR');
      expectError(finals[finals.length - 1]!, 'PROTOCOL_ERROR', true, [681, 682, null]);
      await expectClosed(c);
    });

    it('a corrupted frame followed by a malformed trailer answers CHUNK_CORRUPT (the earlier failure, with its resend offset)', async function () {
      const c = await login();
      const data = randomBytes(30_000);
      c.write(
        encodeHeader({ op: 'upload', id: 691, name: 'corrupt-then-bad.bin', size: data.length, trailer: true, version: tag('cb') }),
        encodeData(data.subarray(0, 10_000)),
        corruptCrcData(data.subarray(10_000)),
        encodeHeader({ op: 'upload', id: 691, sha256: 'not a digest' }),
      );
      const r = await c.reply();
      expectError(r, 'CHUNK_CORRUPT', false, 691);
      expect(r.final['offset']).to.be.a('number').within(0, 10_000);
      await expectAlive(c);
    });

    it('a malformed digest in the trailer is BAD_REQUEST (not fatal); the received bytes stay staged for a resume', async function () {
      const c = await login();
      const data = randomBytes(100_000);
      c.write(streamedBytes(631, 'streamed-malformed.bin', data, tag('m'), { trailerSha: 'ABC' }));
      expectError(await c.reply(), 'BAD_REQUEST', false, 631);
      await expectAlive(c);
      c.sendHeader({ op: 'offset', id: 632, name: 'streamed-malformed.bin', size: data.length, version: tag('m') });
      expect((await c.reply()).final).to.include({ id: 632, status: 'ok', offset: data.length });
      // offset = size: no data, only the trailer, and the server verifies and publishes.
      c.write(encodeHeader({ op: 'upload', id: 633, name: 'streamed-malformed.bin', size: data.length, trailer: true, version: tag('m'), offset: data.length }), encodeHeader({ op: 'upload', id: 633, sha256: sha256(data) }));
      expect((await c.reply()).final).to.include({ id: 633, status: 'ok', sha256: sha256(data) });
      await expectStoredThenDelete(c, 634, { 'streamed-malformed.bin': data });
    });

    it('a data frame, or another request, where the trailer belongs is a fatal PROTOCOL_ERROR; nothing is published', async function () {
      const data = randomBytes(1000);
      const header = (id: number): Buffer => encodeHeader({ op: 'upload', id, name: 'no-trailer.bin', size: data.length, trailer: true, version: tag('t') });
      const a = await login();
      a.write(header(641), encodeData(data), encodeData(Buffer.from('x')));
      expectError(await a.reply(), 'PROTOCOL_ERROR', true, [641, null]);
      await expectClosed(a);
      const b = await login();
      b.write(header(642), encodeData(data), encodeHeader({ op: 'noop', id: 643 }));
      expectError(await b.reply(), 'PROTOCOL_ERROR', true, [642, null]);
      await expectClosed(b);
      expect(await exists(path.join(server.storage, 'alice', 'no-trailer.bin'))).to.equal(false);
    });

    it('a cut streamed upload is resumed by its version tag (offset, then upload from there with the trailer); another tag or the digest starts from 0', async function () {
      const name = 'streamed-cut.bin';
      const data = randomBytes(3 * 1024 * 1024 + 5);
      const cut = await login();
      cut.write(encodeHeader({ op: 'upload', id: 651, name, size: data.length, trailer: true, version: tag('cut') }), dataFrames(data.subarray(0, 1024 * 1024), 65_536));
      // The server has the bytes once they are staged; then the connection is dropped mid-upload.
      const c = await login();
      let offset = 0;
      for (let i = 0; i < 50 && offset === 0; i++) {
        await delay(100);
        c.sendHeader({ op: 'offset', id: 652, name, size: data.length, version: tag('cut') });
        offset = Number((await c.reply()).final['offset']);
      }
      cut.destroy();
      await delay(300);
      c.sendHeader({ op: 'offset', id: 653, name, size: data.length, version: tag('cut') });
      offset = Number((await c.reply()).final['offset']);
      expect(offset, 'the received bytes are kept').to.be.greaterThan(0).and.at.most(1024 * 1024);
      c.sendHeader({ op: 'offset', id: 654, name, size: data.length, version: tag('changed') });
      expect((await c.reply()).final['offset'], 'another version tag is another upload').to.equal(0);
      c.sendHeader({ op: 'offset', id: 655, name, size: data.length, sha256: sha256(data) });
      expect((await c.reply()).final['offset'], 'a digest-first upload is another identity').to.equal(0);
      c.write(streamedBytes(656, name, data, tag('cut'), { offset }));
      const done = await c.reply(30_000);
      expect(done.final).to.include({ id: 656, status: 'ok', sha256: sha256(data) });
      c.sendHeader({ op: 'offset', id: 657, name, size: data.length, version: tag('cut') });
      expect((await c.reply()).final['offset'], 'nothing left staged after the publish').to.equal(0);
      await expectStoredThenDelete(c, 658, { [name]: data });
    });

    it('a resumed streamed upload whose kept bytes are not a prefix of the file ends in CHECKSUM_MISMATCH, and they are discarded', async function () {
      const name = 'streamed-other.bin';
      const a = randomBytes(200_000);
      const b = randomBytes(200_000);
      const c = await login();
      // Stage the first 100 000 bytes of `a` under the tag: a frame with a bad CRC32C stops the upload, and the
      // good bytes before it are kept for a resume.
      c.write(encodeHeader({ op: 'upload', id: 661, name, size: a.length, trailer: true, version: tag('o') }), dataFrames(a.subarray(0, 100_000), 65_536), corruptCrcData(a.subarray(100_000)), encodeHeader({ op: 'upload', id: 661, sha256: sha256(a) }));
      const corrupt = await c.reply();
      expectError(corrupt, 'CHUNK_CORRUPT', false, 661);
      const kept = Number(corrupt.final['offset']);
      expect(kept).to.be.greaterThan(0).and.at.most(100_000);
      // A client that (wrongly) reuses the tag for other content: the digest check refuses the splice.
      c.write(streamedBytes(662, name, b, tag('o'), { offset: kept }));
      expectError(await c.reply(), 'CHECKSUM_MISMATCH', false, 662);
      c.sendHeader({ op: 'offset', id: 663, name, size: a.length, version: tag('o') });
      expect((await c.reply()).final['offset'], 'the proven-wrong bytes are gone').to.equal(0);
      expect(await exists(path.join(server.storage, 'alice', name))).to.equal(false);
    });
  });

  it('the server survived every case above', async function () {
    const c = await login(BOB);
    await expectAlive(c);
    expect(server.proc.exitCode).to.equal(null);
    expect(server.lines.filter((l) => typeof l.msg === 'string' && /worker died|crash loop/.test(l.msg))).to.deep.equal([]);
  });
});

describe('protocol timeouts', function () {
  let server: TestServer;
  const clients: RawClient[] = [];

  before(async function () {
    server = await TestServer.start({ workers: 1, args: [...NO_BANS, '--login-timeout', '1', '--idle-timeout', '1'] });
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
  });

  it('login timeout: no auth within the limit gets bye LOGIN_TIMEOUT, then the connection closes', async function () {
    const { client } = await RawClient.open(server.port);
    clients.push(client);
    const started = Date.now();
    const bye = await client.nextHeader(5_000);
    expect(bye['status']).to.equal('bye');
    expect(bye['code']).to.equal('LOGIN_TIMEOUT');
    expect(bye['message']).to.be.a('string');
    expect(bye).to.not.have.property('id');
    expect(await client.waitClosed(5_000)).to.equal(true);
    expect(Date.now() - started).to.be.below(5_000);
  });

  it('idle timeout: an authenticated session without requests gets bye IDLE_TIMEOUT, then the connection closes', async function () {
    const client = await RawClient.login(server.port, ALICE.user, ALICE.password);
    clients.push(client);
    const started = Date.now();
    const bye = await client.nextHeader(5_000);
    expect(bye).to.include({ status: 'bye', code: 'IDLE_TIMEOUT' });
    expect(await client.waitClosed(5_000)).to.equal(true);
    expect(Date.now() - started).to.be.below(5_000);
  });
});
