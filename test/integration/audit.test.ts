/**
 * The audit log of a real fts-server: pino JSON lines on stdout, one per authentication attempt, one per
 * completed or failed operation (upload, download, view, delete, list), one per session end; no password
 * (or session token) anywhere in the output; whole lines under concurrency across two workers; and the
 * final 'stopped' line flushed on shutdown.
 */
import { expect } from 'chai';
import { FtsClient } from '../../client/index.js';
import { runAdmin, sessionsJson, statusJson } from '../helpers/admin-cli.js';
import { codeOf } from '../helpers/common.js';
import { sha256, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { greetAndQuit, RawClient, uploadBytes } from '../helpers/raw-client.js';
import { TestServer, type LogLine, type ServerOptions, type TestUser } from '../helpers/server.js';
import { metric, metricsPortOf } from '../helpers/hardening-proc.js';

const OPS = ['upload', 'download', 'view', 'delete', 'rename', 'list'] as const;

const ALICE: TestUser = { user: 'alice', password: 'Zebra7Quartz-Alice-PW' };
/** A password with ':' in it (the users file splits at the first one). */
const BOB: TestUser = { user: 'bob', password: 'Mango4:Violet:Bob-PW9' };
const WRONG_PASSWORD = 'Wrong7Walrus-PW';

function payload(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

/** Every line of the server's stdout, each of which must be one JSON object. */
function parseAll(stdout: string): Array<Record<string, unknown>> {
  expect(stdout.endsWith('\n'), 'stdout ends with a complete line').to.equal(true);
  const out: Array<Record<string, unknown>> = [];
  const bad: string[] = [];
  for (const line of stdout.split('\n').slice(0, -1)) {
    try {
      const v = JSON.parse(line) as unknown;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) bad.push(line);
      else out.push(v as Record<string, unknown>);
    } catch {
      bad.push(line);
    }
  }
  expect(bad.slice(0, 5), `${bad.length} stdout lines that are not JSON objects`).to.deep.equal([]);
  return out;
}

function events(lines: readonly LogLine[], event: string): LogLine[] {
  return lines.filter((l) => l['event'] === event);
}

/**
 * "listening on" is logged when the FIRST worker listens; the others may join the cluster's round-robin
 * a little later. Opens unauthenticated connections (greeting, quit) until two distinct workers have
 * served one (their session-end lines, user null, name the worker).
 */
async function warmUp(server: TestServer): Promise<void> {
  const from = server.lines.length;
  const ends = (): LogLine[] => server.lines.slice(from).filter((l) => l['event'] === 'session-end');
  let n = 0;
  for (; n < 60 && new Set(ends().map((l) => l['worker'])).size < 2; n++) {
    await greetAndQuit(server.port);
    await waitUntil(`the session-end line of warm-up connection ${n + 1}`, () => ends().length >= n + 1, 5_000, 10);
    if (n >= 1) await sleep(50);
  }
  expect(new Set(ends().map((l) => l['worker'])).size, `workers serving connections after ${n} warm-up connections`).to.be.at.least(2);
}

describe('audit log (JSON lines on stdout)', function () {
  this.timeout(90_000);

  const servers: TestServer[] = [];
  const clients: FtsClient[] = [];
  const raws: RawClient[] = [];

  afterEach(async function () {
    this.timeout(60_000);
    for (const r of raws.splice(0)) r.close();
    for (const c of clients.splice(0)) c.close();
    for (const s of servers.splice(0).reverse()) await s.stop();
  });

  async function startServer(options: ServerOptions = {}): Promise<TestServer> {
    const server = await TestServer.start({ workers: 2, users: [ALICE, BOB], ...options });
    servers.push(server);
    return server;
  }

  async function connect(server: TestServer): Promise<FtsClient> {
    const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(client);
    return client;
  }

  async function login(server: TestServer, who: TestUser = ALICE): Promise<FtsClient> {
    const client = await connect(server);
    await client.auth(who.user, who.password);
    return client;
  }

  async function rawLogin(server: TestServer, who: TestUser = ALICE): Promise<RawClient> {
    const raw = await RawClient.login(server.port, who.user, who.password);
    raws.push(raw);
    return raw;
  }

  /** Waits until `count` lines with this event have been logged (lines after a reply may lag a little). */
  async function waitForEvents(server: TestServer, event: string, count: number, timeoutMs = 10_000): Promise<LogLine[]> {
    await waitUntil(`${count} "${event}" audit lines (have ${events(server.lines, event).length})`, () => events(server.lines, event).length >= count, timeoutMs, 50);
    return events(server.lines, event);
  }

  it('one "auth" line per attempt, result success or failure, with user, session, remote and worker', async () => {
    const server = await startServer();
    await login(server, ALICE);
    await login(server, BOB);
    const wrong = await connect(server);
    expect(await codeOf(wrong.auth(ALICE.user, WRONG_PASSWORD))).to.equal('AUTH_FAILED');
    const unknown = await connect(server);
    expect(await codeOf(unknown.auth('mallory', 'Mallory3Guess-PW'))).to.equal('AUTH_FAILED');

    const workers = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);
    const auth = await waitForEvents(server, 'auth', 4);
    await new Promise((r) => setTimeout(r, 300)); // nothing more may come
    expect(events(server.lines, 'auth')).to.have.length(4);
    expect(auth.map((l) => `${String(l['user'])}:${String(l['result'])}`).sort()).to.deep.equal(['alice:failure', 'alice:success', 'bob:success', 'mallory:failure']);
    for (const l of auth) {
      expect(l['session'], 'session').to.be.a('string').and.match(/^[0-9a-f]{6,64}$/);
      expect(l['remote'], 'remote').to.be.a('string').and.match(/^127\.0\.0\.1:\d+$/);
      expect(workers, 'worker').to.include(l['worker']);
      expect(l['level']).to.equal('info');
    }
    expect(new Set(auth.map((l) => l['session'])).size, 'one session per attempt').to.equal(4);
  });

  it('one line per completed or failed upload, download, view, delete, rename and list, with its fields', async () => {
    const server = await startServer();
    const c = await login(server, ALICE);
    const big = payload(3_000, 1);
    const small = Buffer.from('ten bytes!');
    await c.uploadBuffer('report a.bin', big);
    await c.uploadBuffer('small.txt', small);
    await c.downloadBuffer('report a.bin');
    expect((await c.view('report a.bin')).length).to.equal(1024);
    expect((await c.view('small.txt')).length).to.equal(10);
    expect((await c.list()).map((e) => e.name).sort()).to.deep.equal(['report a.bin', 'small.txt']);
    await c.rename('small.txt', 'small 2.txt');
    await c.rename('small 2.txt', 'small.txt');
    expect(await codeOf(c.rename('report a.bin', 'small.txt'))).to.equal('ALREADY_EXISTS');
    await c.delete('small.txt');
    expect(await codeOf(c.downloadBuffer('missing.bin'))).to.equal('NOT_FOUND');
    expect(await codeOf(c.view('missing.bin'))).to.equal('NOT_FOUND');
    expect(await codeOf(c.delete('missing.bin'))).to.equal('NOT_FOUND');

    // Failures the client library would not send: an upload whose digest is wrong, a list with a bad field.
    const raw = await rawLogin(server, BOB);
    const bad = payload(500, 2);
    raw.write(uploadBytes(2, 'bad-digest.bin', bad, 64 * 1024, sha256(Buffer.from('something else'))));
    const up = await raw.reply();
    expect(up.final['status']).to.equal('error');
    raw.sendHeader({ op: 'list', id: 3, long: 'yes' });
    const ls = await raw.reply();
    expect(ls.final['status']).to.equal('error');

    const workers = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);
    const expected: Record<string, { ok: number; error: number }> = {
      upload: { ok: 2, error: 1 },
      download: { ok: 1, error: 1 },
      view: { ok: 2, error: 1 },
      delete: { ok: 1, error: 1 },
      rename: { ok: 2, error: 1 },
      list: { ok: 1, error: 1 },
    };
    await waitForEvents(server, 'list', 2);
    const lines = server.lines.filter((l) => (OPS as readonly string[]).includes(String(l['event'])));
    const counts: Record<string, { ok: number; error: number }> = {};
    for (const op of OPS) counts[op] = { ok: lines.filter((l) => l['event'] === op && l['result'] === 'ok').length, error: lines.filter((l) => l['event'] === op && l['result'] === 'error').length };
    expect(counts, 'audit lines per operation and result').to.deep.equal(expected);

    const aliceSession = events(server.lines, 'auth').find((l) => l['user'] === 'alice')?.['session'];
    for (const l of lines) {
      const what = JSON.stringify(l);
      expect(l['user'], `user: ${what}`).to.be.oneOf(['alice', 'bob']);
      expect(l['bytes'], `bytes: ${what}`).to.be.a('number').and.at.least(0);
      expect(l['durationMs'], `durationMs: ${what}`).to.be.a('number').and.at.least(0);
      expect(l['session'], `session: ${what}`).to.be.a('string').and.match(/^[0-9a-f]{6,64}$/);
      expect(l['remote'], `remote: ${what}`).to.be.a('string').and.match(/^127\.0\.0\.1:\d+$/);
      expect(workers, `worker: ${what}`).to.include(l['worker']);
      expect(l['result'], `result: ${what}`).to.be.oneOf(['ok', 'error']);
      expect('file' in l, `file: ${what}`).to.equal(true);
      if (l['result'] === 'error') expect(l['code'], `code: ${what}`).to.be.a('string').and.match(/^[A-Z_]+$/);
      if (l['user'] === 'alice') expect(l['session'], `alice's lines carry her session: ${what}`).to.equal(aliceSession);
    }
    const one = (event: string, result: string, file: string | null): LogLine => {
      const hits = lines.filter((l) => l['event'] === event && l['result'] === result && l['file'] === file);
      expect(hits, `${event} ${result} ${String(file)}`).to.have.length(1);
      return hits[0]!;
    };
    expect(one('upload', 'ok', 'report a.bin')).to.include({ user: 'alice', bytes: 3_000, sha256: sha256(big) });
    expect(one('upload', 'ok', 'small.txt')).to.include({ bytes: 10, sha256: sha256(small) });
    expect(one('download', 'ok', 'report a.bin')).to.include({ bytes: 3_000, sha256: sha256(big) });
    expect(one('view', 'ok', 'report a.bin')).to.include({ bytes: 1024 });
    expect(one('view', 'ok', 'small.txt')).to.include({ bytes: 10 });
    one('delete', 'ok', 'small.txt');
    expect(one('rename', 'ok', 'small.txt')).to.include({ to: 'small 2.txt', user: 'alice' });
    expect(one('rename', 'ok', 'small 2.txt')).to.include({ to: 'small.txt' });
    expect(one('rename', 'error', 'report a.bin')).to.include({ to: 'small.txt', code: 'ALREADY_EXISTS' });
    expect(one('download', 'error', 'missing.bin')).to.include({ code: 'NOT_FOUND', user: 'alice' });
    expect(one('view', 'error', 'missing.bin')).to.include({ code: 'NOT_FOUND' });
    expect(one('delete', 'error', 'missing.bin')).to.include({ code: 'NOT_FOUND' });
    expect(one('upload', 'error', 'bad-digest.bin')).to.include({ user: 'bob', code: String(up.final['code']) });
    expect(one('list', 'error', null)).to.include({ user: 'bob', code: String(ls.final['code']) });
    expect(one('list', 'ok', null)).to.include({ user: 'alice' });
  });

  it('an upload cut by its connection: "disconnected": true when the client went away, the bye code when the server ended it', async () => {
    const server = await startServer();
    const data = payload(300_000, 3);
    const half = (name: string): Buffer => {
      const whole = uploadBytes(5, name, data);
      return whole.subarray(0, Math.floor(whole.length / 2));
    };
    const gone = await rawLogin(server);
    gone.write(half('gone.bin'));
    await waitUntil('the upload in progress', async () => (await sessionsJson(server.adminSocket)).some((s) => s.file === 'gone.bin' && s.bytes > 0), 10_000, 50);
    gone.close();
    const kicked = await rawLogin(server);
    kicked.write(half('kicked.bin'));
    let session: string | undefined;
    await waitUntil('the second upload in progress', async () => {
      session = (await sessionsJson(server.adminSocket)).find((s) => s.file === 'kicked.bin' && s.bytes > 0)?.id;
      return session !== undefined;
    }, 10_000, 50);
    expect((await runAdmin(server.adminSocket, ['kick', session!])).code).to.equal(0);
    const lines = await waitForEvents(server, 'upload', 2);
    const line = (file: string): LogLine => lines.find((l) => l['file'] === file)!;
    expect(line('gone.bin'), JSON.stringify(line('gone.bin'))).to.include({ result: 'error', code: 'IO_ERROR', disconnected: true });
    expect(line('kicked.bin'), JSON.stringify(line('kicked.bin'))).to.include({ result: 'error', code: 'KICKED' });
    expect(line('kicked.bin')).to.not.have.property('disconnected');
  });

  it('one "session-end" line per connection, authenticated or not', async () => {
    const server = await startServer();
    const a = await login(server, ALICE);
    await a.list();
    const b = await login(server, BOB);
    const failed = await connect(server);
    expect(await codeOf(failed.auth(BOB.user, WRONG_PASSWORD))).to.equal('AUTH_FAILED');
    const anonymous = await connect(server);
    await anonymous.noop();
    const cut = await login(server, ALICE);

    await a.quit();
    await b.quit();
    await anonymous.quit();
    cut.close(); // the client just goes away
    failed.close();

    const ends = await waitForEvents(server, 'session-end', 5);
    await new Promise((r) => setTimeout(r, 300));
    expect(events(server.lines, 'session-end'), 'session-end lines').to.have.length(5);
    expect(new Set(ends.map((l) => l['session'])).size, 'distinct sessions').to.equal(5);
    expect(ends.map((l) => String(l['user'])).sort()).to.deep.equal(['alice', 'alice', 'bob', 'null', 'null']);
    for (const l of ends) {
      expect(l['requests'], 'requests').to.be.a('number');
      expect(l['durationMs'], 'durationMs').to.be.a('number').and.at.least(0);
      expect(l['remote']).to.match(/^127\.0\.0\.1:\d+$/);
      // The session's end is its last line.
      const sessionLines = server.lines.filter((x) => x['session'] === l['session']);
      expect(sessionLines[sessionLines.length - 1], `last line of session ${String(l['session'])}`).to.equal(l);
    }
    for (const auth of events(server.lines, 'auth')) expect(ends.map((l) => l['session']), 'every logged-in session ended').to.include(auth['session']);
  });

  it('no password (nor session token) appears anywhere in stdout or stderr, even at log level trace', async () => {
    const BAD_LINE: TestUser = { user: 'bad user', password: 'Leak9Badline-PW' };
    const DUPLICATE: TestUser = { user: 'alice', password: 'Dup5Alice-Second-PW' };
    const server = await startServer({ users: [ALICE, BOB, BAD_LINE, DUPLICATE], args: ['--log-level', 'trace'] });
    expect(server.lines.filter((l) => /users file line/.test(String(l.msg))).length, 'the two bad users-file lines are reported').to.equal(2);

    const a = await login(server, ALICE);
    const token = a.session?.token;
    await a.uploadBuffer('pw-test.txt', Buffer.from('x'));
    await a.list();
    const b = await login(server, BOB);
    await b.view('missing.txt').catch(() => undefined);
    const wrong = await connect(server);
    expect(await codeOf(wrong.auth(ALICE.user, WRONG_PASSWORD))).to.equal('AUTH_FAILED');
    const wrongColon = await connect(server);
    expect(await codeOf(wrongColon.auth(BOB.user, 'Mango4:Violet:Wrong-PW7'))).to.equal('AUTH_FAILED');
    const dup = await connect(server);
    expect(await codeOf(dup.auth(DUPLICATE.user, DUPLICATE.password))).to.equal('AUTH_FAILED');
    // Requests refused before any handler runs, carrying a password: bad mechanism, auth twice.
    const { client: raw } = await RawClient.open(server.port);
    raws.push(raw);
    raw.sendHeader({ op: 'auth', id: 1, mech: 'bogus', user: 'alice', password: 'Bogus8Mech-PW' });
    await raw.reply();
    const again = await rawLogin(server, BOB);
    again.sendHeader({ op: 'auth', id: 2, mech: 'plain', user: ALICE.user, password: ALICE.password });
    await again.reply();
    // A token login, then a bad token.
    if (token !== undefined) {
      const t = await connect(server);
      await t.authToken(token);
      const badToken = await connect(server);
      expect(await codeOf(badToken.authToken(`${token}x`))).to.equal('AUTH_FAILED');
    }
    for (const c of clients.splice(0)) c.close();
    for (const r of raws.splice(0)) r.close();
    await server.halt();

    const output = server.stdout + server.stderr;
    expect(output.length).to.be.greaterThan(0);
    const secrets = [ALICE.password, BOB.password, ...BOB.password.split(':'), WRONG_PASSWORD, 'Mango4:Violet:Wrong-PW7', 'Wrong-PW7', BAD_LINE.password, DUPLICATE.password, 'Bogus8Mech-PW'];
    for (const secret of secrets) expect(output.includes(secret), `server output contains the password (part) ${JSON.stringify(secret)}`).to.equal(false);
    expect(token, 'a login returns a session token').to.be.a('string');
    if (token !== undefined) expect(output.includes(token), 'server output contains a session token').to.equal(false);
    // The failed logins were logged, just without the password.
    expect(events(server.lines, 'auth').filter((l) => l['result'] === 'failure').length).to.be.at.least(3);
  });

  it('every stdout line is one whole JSON object with 16 concurrent clients on 2 workers', async () => {
    const server = await startServer();
    await warmUp(server);
    const CLIENTS = 16;
    const ROUNDS = 15; // 5 operations per round
    // Log in one after another (unauthenticated connections are rate limited), then work concurrently.
    const all: FtsClient[] = [];
    for (let k = 0; k < CLIENTS; k++) all.push(await login(server, k % 2 === 0 ? ALICE : BOB));
    await Promise.all(
      all.map(async (c, k) => {
        for (let i = 0; i < ROUNDS; i++) {
          // Long names make long lines: more chance to see a torn line if writes were not atomic.
          const name = `${'n'.repeat(180)}-client-${k}-round-${i}.txt`;
          const data = Buffer.from(`client ${k} round ${i} `.repeat(20));
          await c.uploadBuffer(name, data);
          await c.view(name);
          await c.downloadBuffer(name);
          await c.list();
          await c.delete(name);
        }
      }),
    );
    for (const c of all) await c.quit();
    await waitForEvents(server, 'session-end', CLIENTS);
    expect(await server.halt()).to.deep.equal({ code: 0, signal: null });
    await waitUntil('stdout to end', () => server.proc.stdout?.readableEnded === true || server.proc.stdout === null, 5_000, 20);

    const parsed = parseAll(server.stdout);
    const ops = parsed.filter((l) => (OPS as readonly string[]).includes(String(l['event'])));
    expect(ops.length, 'operation audit lines').to.equal(CLIENTS * ROUNDS * 5);
    expect(ops.every((l) => l['result'] === 'ok'), 'every operation succeeded').to.equal(true);
    expect(new Set(ops.map((l) => l['worker'])).size, 'workers that logged operations').to.equal(2);
    expect(parsed.filter((l) => l['event'] === 'auth').length).to.equal(CLIENTS);
    expect(parsed.filter((l) => l['event'] === 'session-end' && l['user'] !== null).length).to.equal(CLIENTS);
    for (const l of parsed) {
      expect(l['level'], JSON.stringify(l)).to.be.a('string');
      expect(l['time'], JSON.stringify(l)).to.be.a('string');
      expect(l['pid'], JSON.stringify(l)).to.be.a('number');
    }
    expect(parsed.length, 'TestServer parsed the same lines').to.equal(server.lines.length);
  });

  it('logs are flushed on shutdown: after SIGINT the last line is "stopped", after every session-end', async () => {
    const server = await startServer();
    const idle = await login(server, ALICE);
    await idle.uploadBuffer('before-stop.txt', Buffer.from('bye'));
    const busyWorker = (await statusJson(server.adminSocket)).workers.length;
    expect(busyWorker).to.equal(2);

    server.signal('SIGINT');
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
    // The pipe may still hold the last bytes after 'exit': wait for the stream to end.
    await waitUntil('stdout to end', () => server.proc.stdout?.readableEnded === true || server.proc.stdout === null, 5_000, 20);

    const parsed = parseAll(server.stdout);
    const last = parsed[parsed.length - 1];
    expect(last?.['msg'], `last line: ${JSON.stringify(last)}`).to.equal('stopped');
    expect(last?.['role']).to.equal('primary');
    const end = parsed.findIndex((l) => l['event'] === 'session-end' && l['user'] === 'alice');
    expect(end, 'the idle session ended (drained) and its line is in the log').to.be.at.least(0);
    expect(end).to.be.below(parsed.length - 1);
    expect(parsed.filter((l) => l['event'] === 'upload' && l['file'] === 'before-stop.txt')).to.have.length(1);
  });

  it('regression (fixed): auth attempts refused before authentication runs (auth twice, unknown mechanism) are logged with result "error", not "failure"', async () => {
    // session.ts refuse() logs every refused request through logAudit(): for op "auth" that gives an
    // "event":"auth" line whose result is "error" (and which has file/bytes fields instead of mech), and
    // fts_auth_attempts_total is not incremented for it. Expected: every "event":"auth" line has
    // result "success" or "failure".
    const server = await startServer();
    const { client: raw } = await RawClient.open(server.port);
    raws.push(raw);
    raw.sendHeader({ op: 'auth', id: 1, mech: 'bogus', user: 'alice', password: 'x' });
    expect((await raw.reply()).final['code']).to.equal('UNSUPPORTED_MECHANISM');
    const again = await rawLogin(server, ALICE);
    again.sendHeader({ op: 'auth', id: 2, mech: 'plain', user: ALICE.user, password: ALICE.password });
    expect((await again.reply()).final['code']).to.equal('ALREADY_AUTHENTICATED');

    const auth = await waitForEvents(server, 'auth', 3);
    expect(auth.map((l) => String(l['result'])).sort(), `auth lines: ${JSON.stringify(auth)}`).to.deep.equal(['failure', 'failure', 'success']);
  });

  it('a request refused before it ran is audited with the names it sent and no bytes; an auth after login is no login attempt for the metric', async () => {
    const server = await startServer({ workers: 1 });
    const raw = await rawLogin(server, ALICE);
    // A download first, so that a session-wide byte count would show in the lines below if it leaked.
    raw.write(uploadBytes(1, 'first.bin', payload(300_000, 1)));
    expect((await raw.reply()).final['status']).to.equal('ok');
    raw.sendHeader({ op: 'download', id: 2, name: 'first.bin' });
    expect((await raw.reply()).final['status']).to.equal('ok');
    const data = payload(200_000, 2);
    raw.write(uploadBytes(3, 'valid-name.txt', data, 64 * 1024, 'NOTHEX'));
    expect((await raw.reply()).final['code']).to.equal('BAD_REQUEST');
    raw.sendHeader({ op: 'delete', id: 4, name: '../../../etc/shadow' });
    expect((await raw.reply()).final['code']).to.equal('BAD_NAME');
    raw.sendHeader({ op: 'rename', id: 5, name: 'first.bin', to: 'a/b' });
    expect((await raw.reply()).final['code']).to.equal('BAD_NAME');
    // Fatal (its data cannot be skipped), and on record all the same.
    const other = await rawLogin(server, ALICE);
    other.sendHeader({ op: 'upload', id: 1, name: '../../etc/shadow', size: 'x' });
    expect((await other.reply()).final).to.include({ code: 'BAD_REQUEST', fatal: true });
    expect((await waitForEvents(server, 'upload', 3)).find((l) => l['file'] === '../../etc/shadow')).to.include({ code: 'BAD_REQUEST', bytes: 0 });
    const failuresBefore = await metric(await metricsPortOf(server), 'fts_auth_attempts_total', { result: 'failure' });
    for (let id = 6; id < 11; id++) {
      raw.sendHeader({ op: 'auth', id, mech: 'plain', user: ALICE.user, password: ALICE.password });
      expect((await raw.reply()).final['code']).to.equal('ALREADY_AUTHENTICATED');
    }
    const [upload] = (await waitForEvents(server, 'upload', 2)).filter((l) => l['code'] === 'BAD_REQUEST');
    expect(upload, 'the refused upload').to.include({ file: 'valid-name.txt', bytes: 0, result: 'error' });
    const del = (await waitForEvents(server, 'delete', 1))[0];
    expect(del).to.include({ file: '../../../etc/shadow', bytes: 0, code: 'BAD_NAME' });
    const rename = (await waitForEvents(server, 'rename', 1))[0];
    expect(rename).to.include({ file: 'first.bin', to: 'a/b', bytes: 0, code: 'BAD_NAME' });
    // Audited as refused logins, but not counted as failed ones (PROTOCOL.md §5): FtsAuthFailureSpike cannot
    // be set off by a user who is logged in.
    await waitForEvents(server, 'auth', 6);
    await sleep(300);
    expect(await metric(await metricsPortOf(server), 'fts_auth_attempts_total', { result: 'failure' })).to.equal(failuresBefore);
  });

  it('a protocol violation outside a request (an unknown frame type) leaves a "violation" line at warn naming it, with the penalty points', async () => {
    const server = await startServer({ workers: 1 });
    const raw = await rawLogin(server, ALICE);
    raw.write(Buffer.from([0x00, 0, 0, 0, 1, 0x7b]));
    expect((await raw.reply()).final).to.include({ code: 'PROTOCOL_ERROR', fatal: true });
    const [line] = await waitForEvents(server, 'violation', 1);
    expect(line).to.include({ level: 'warn', user: ALICE.user, code: 'PROTOCOL_ERROR', points: 3, msg: 'protocol violation' });
    expect(line?.['reason']).to.match(/unknown frame type 0x00/);
  });

  it("a request with an op that is not the protocol's is audited as event \"unknown\" with the op clipped in \"op\": a client cannot write an audit line (event or message) that reads \"session-end\", \"admin\" or \"banned …\"", async () => {
    const server = await startServer();
    const { client: raw } = await RawClient.open(server.port);
    raws.push(raw);
    const forged = `banned 10.9.9.9 for 900s${'A'.repeat(5000)}`;
    for (const [i, op] of ['session-end', 'admin', 'x'.repeat(100), forged].entries()) {
      raw.sendHeader({ op, id: 10 + i });
      await raw.reply().catch(() => undefined);
    }
    const lines = await waitForEvents(server, 'unknown', 4);
    expect(lines.map((l) => l['op'])).to.deep.equal(['session-end', 'admin', 'x'.repeat(32), forged.slice(0, 32)]);
    // Nor its message: that is ours, whatever the op was.
    expect(lines.map((l) => l['msg'])).to.deep.equal(['unknown failed', 'unknown failed', 'unknown failed', 'unknown failed']);
    expect(server.lines.filter((l) => l['event'] === 'admin'), 'no forged admin line').to.deep.equal([]);
    expect(server.lines.filter((l) => l['event'] === 'session-end' && l['op'] !== undefined), 'no forged session-end line').to.deep.equal([]);
  });
});
