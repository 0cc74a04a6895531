/**
 * TLS (docs/PROTOCOL.md §1), SCRAM-SHA-256 (§5.2), `fts-admin passwd` and the users file's permission
 * checks (docs/SECURITY.md), against real fts-server processes on 127.0.0.1 with certificates made by
 * openssl in a temporary directory. Tests whose name starts with "BUG" pin down product defects: they fail
 * until the product is fixed.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { chmod, copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient, FtsError } from '../../client/index.js';
import { checkPassword, deriveVerifier, formatVerifier, parseVerifier, ScramClient, type Header } from '../../protocol/index.js';
import { parseUsers } from '../../server/auth/users.js';
import { runAdmin, waitWorkersReady } from '../helpers/admin-cli.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { metric, metricsPortOf } from '../helpers/hardening-proc.js';
import { runServerOnce, type ServerRunResult } from '../helpers/lifecycle-spawn.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { RawClient } from '../helpers/raw-client.js';
import { TestServer, type LogLine } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { handshakeWith, makeCert, peerFingerprints, type CertFiles } from '../helpers/tls-certs.js';
import { authLines, describeProc, modeOf, runPasswd, snapshot, waitForLine, writeWithMode } from '../helpers/tls-procs.js';

const ALICE = { user: 'alice', password: 'Alice4Tls-Secret-PW' };
const DAVE = { user: 'dave', password: 'Dave7Scram-Hashed-PW' };
/** A plaintext entry, with ':' in the password. */
const ERIN = { user: 'erin', password: 'Erin5Plain:Text-PW' };
const WRONG = 'Wrong3Guess-PW';

/** No bans and a penalty window of 1 s, so each failed login costs its 1 s delay and no more. */
const LENIENT_GATE = ['--ban-threshold', '0', '--ban-window', '1'];
const VERIFIER_LINE = /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/;

/** The FtsError a promise rejects with (fails the test if it resolves or rejects with something else). */
async function failure(p: Promise<unknown>, what: string): Promise<FtsError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FtsError) return err;
    throw new Error(`${what}: expected an FtsError, got ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
  throw new Error(`${what}: expected a failure, but it succeeded`);
}

function hashedLine(user: string, password: string): string {
  return `${user}:${formatVerifier(deriveVerifier(password))}`;
}

/** The SCRAM server-first-message fields. */
function parseServerFirst(data: unknown): { nonce: string; salt: string; iterations: number } {
  expect(data, 'server-first-message').to.be.a('string');
  const m = /^r=([^,]+),s=([A-Za-z0-9+/=]+),i=(\d+)$/.exec(data as string);
  expect(m, `server-first-message ${JSON.stringify(data)}`).to.not.equal(null);
  return { nonce: m![1]!, salt: m![2]!, iterations: Number(m![3]) };
}

/** Sends the client-first-message and returns the `continue` reply. */
async function scramStart(raw: RawClient, scram: ScramClient, id: number): Promise<Header> {
  raw.sendHeader({ op: 'auth', id, mech: 'scram-sha-256', data: scram.first });
  const h = await raw.nextHeader();
  expect(h['status'], `reply to client-first: ${JSON.stringify(h)}`).to.equal('continue');
  expect(h['id'], 'continue carries the request id').to.equal(id);
  return h;
}

/** Salt of a user's SCRAM server-first-message on a new connection (the exchange is then abandoned). */
async function scramSalt(port: number, user: string): Promise<{ salt: string; iterations: number }> {
  const { client } = await RawClient.open(port);
  try {
    const scram = new ScramClient(user, 'irrelevant-PW');
    const { salt, iterations } = parseServerFirst((await scramStart(client, scram, 1))['data']);
    return { salt, iterations };
  } finally {
    client.close();
  }
}

/** One problem line on stderr (and at most the --help hint), no stack trace, quick exit with `code`. */
function startupFailure(r: ServerRunResult, code: number): string {
  expect(r.timedOut, `the server did not exit by itself; stdout: ${r.stdout}; stderr: ${r.stderr}`).to.equal(false);
  expect(r.signal, 'killed by a signal').to.equal(null);
  expect(r.code, `exit code; stderr: ${r.stderr}`).to.equal(code);
  expect(r.elapsedMs, 'ms until the exit').to.be.below(5_000);
  const problems = r.stderr.split('\n').filter((l) => l.trim() !== '');
  expect(problems, `stderr must hold exactly one problem line:\n${r.stderr}`).to.have.length(1);
  expect(r.stderr, 'no stack trace').to.not.match(/\n\s+at /);
  const line = problems[0]!;
  expect(line).to.match(/^fts-server: \S/);
  return line;
}

describe('TLS, SCRAM-SHA-256, fts-admin passwd and users file permissions', function () {
  this.timeout(60_000);

  let dir: string;
  let cleanup: () => Promise<void>;
  let main: CertFiles;
  let second: CertFiles;
  let other: CertFiles;

  before(async () => {
    ({ dir, cleanup } = await tempDir('fts-authtls-'));
    [main, second, other] = await Promise.all([
      makeCert(dir, 'main'),
      makeCert(dir, 'second'),
      makeCert(dir, 'other', 'other.example', 'DNS:other.example'),
    ]);
    expect(second.fingerprint256).to.not.equal(main.fingerprint256);
  });

  after(async () => {
    await cleanup();
  });

  // ---------------------------------------------------------------------------------------------------
  describe('TLS transport', () => {
    let server: TestServer;
    let work: string;

    before(async () => {
      server = await TestServer.start({ workers: 2, users: [ALICE], args: ['--tls-cert', main.cert, '--tls-key', main.key, ...LENIENT_GATE] });
      work = path.join(dir, 'tls-work');
      await mkdir(work);
    });

    after(async () => {
      await server?.stop();
    });

    it('fts --tls --ca cert.pem --host localhost: upload, list and download round trip', async () => {
      const data = randomBytes(300 * 1024 + 17);
      await writeFile(path.join(work, 'local.bin'), data);
      const common = ['--tls', '--ca', main.cert, '--host', 'localhost', '--port', String(server.port)];
      const opts = { user: ALICE.user, password: ALICE.password, cwd: work };
      const up = await runCli([...common, '--quiet', 'upload', 'local.bin', 'rt.bin'], opts);
      expect(up.code, describeRun(up)).to.equal(0);
      const ls = await runCli([...common, 'list'], opts);
      expect(ls.code, describeRun(ls)).to.equal(0);
      expect(ls.out.split('\n')).to.include('rt.bin');
      const down = await runCli([...common, '--quiet', 'download', 'rt.bin', 'back.bin'], opts);
      expect(down.code, describeRun(down)).to.equal(0);
      expect((await readFile(path.join(work, 'back.bin'))).equals(data), 'downloaded bytes equal the uploaded ones').to.equal(true);
    });

    it('FtsClient with tls {ca} connects, logs in and transfers inside TLS', async () => {
      const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } });
      try {
        expect(client.greeting['protocol']).to.equal('fts/1');
        await client.auth(ALICE.user, ALICE.password);
        const data = randomBytes(5000);
        await client.uploadBuffer('lib.bin', data);
        expect((await client.list()).map((e) => e.name)).to.include('lib.bin');
        expect((await client.downloadBuffer('lib.bin')).data.equals(data)).to.equal(true);
        await client.quit();
      } finally {
        client.close();
      }
      // Host name form too (the certificate names DNS:localhost).
      const byName = await FtsClient.connect({ host: 'localhost', port: server.port, tls: { ca: main.pem } });
      try {
        await byName.authPlain(ALICE.user, ALICE.password);
        expect((await byName.list()).map((e) => e.name)).to.include('lib.bin');
      } finally {
        byName.close();
      }
    });

    it('without --ca the self-signed certificate is refused: exit 1, message about TLS and the certificate', async () => {
      const r = await runCli(['--tls', 'list'], { port: server.port, user: ALICE.user, password: ALICE.password, timeoutMs: 15_000 });
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.stderr, describeRun(r)).to.match(/TLS/);
      expect(r.stderr, describeRun(r)).to.match(/certificate/i);
      expect(r.stderr, 'no stack trace').to.not.match(/\n\s+at /);
      const err = await failure(FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: true }), 'FtsClient tls:true with a self-signed cert');
      expect(err.message).to.match(/TLS/);
      expect(err.message).to.match(/certificate/i);
    });

    it('a plaintext fts client (no --tls) gets exit 1 and TLS_REQUIRED within 5 s', async () => {
      const started = Date.now();
      const r = await runCli(['list'], { port: server.port, user: ALICE.user, password: ALICE.password, timeoutMs: 15_000 });
      const elapsed = Date.now() - started;
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.stderr, describeRun(r)).to.include('TLS_REQUIRED');
      expect(elapsed, 'ms until the plaintext client gave up').to.be.below(5_000);
    });

    it('a raw plain TCP connection receives a plain `bye` frame with code TLS_REQUIRED after about 2 s, then the close', async () => {
      const raw = await RawClient.connect(server.port);
      try {
        const started = Date.now();
        const frame = await raw.next(5_000);
        const elapsed = Date.now() - started;
        expect(frame, 'a frame before the close').to.not.equal(null);
        expect(frame!.kind).to.equal('header');
        if (frame!.kind !== 'header') return;
        expect(frame!.header['status']).to.equal('bye');
        expect(frame!.header['code']).to.equal('TLS_REQUIRED');
        expect(frame!.header['message']).to.be.a('string');
        expect(frame!.header, 'a bye carries no id').to.not.have.property('id');
        expect(raw.receivedBytes()[0], 'plain fts framing (H), not a TLS record').to.equal(0x48);
        expect(elapsed, 'ms until the bye').to.be.within(1_000, 4_000);
        expect(await raw.waitClosed(3_000), 'the server closes the connection after the bye').to.equal(true);
      } finally {
        raw.close();
      }
    });

    it('a raw plain client that speaks first (a noop frame) also gets `bye` TLS_REQUIRED and the close', async () => {
      const raw = await RawClient.connect(server.port);
      try {
        raw.sendHeader({ op: 'noop', id: 1 });
        const h = await raw.nextHeader(5_000);
        expect(h['status']).to.equal('bye');
        expect(h['code']).to.equal('TLS_REQUIRED');
        expect(await raw.waitClosed(3_000)).to.equal(true);
      } finally {
        raw.close();
      }
    });

    it('the server speaks TLS 1.2 and 1.3 and refuses TLS 1.0/1.1', async () => {
      expect(await handshakeWith(server.port, 'TLSv1.2', 'TLSv1.2')).to.equal('TLSv1.2');
      expect(await handshakeWith(server.port, 'TLSv1.3', 'TLSv1.3')).to.equal('TLSv1.3');
      const old = await handshakeWith(server.port, 'TLSv1', 'TLSv1.1');
      expect(old, 'TLS 1.0/1.1 handshake').to.match(/^error:/);
      expect(old).to.not.equal('error:timeout');
    });

    it('after the refused clients above, TLS clients are still served by every worker', async () => {
      for (let i = 0; i < 4; i++) {
        const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } });
        try {
          await client.noop();
        } finally {
          client.close();
        }
      }
      expect(server.proc.exitCode, 'server still running').to.equal(null);
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('TLS and the connection limits', () => {
    let server: TestServer;

    before(async () => {
      server = await TestServer.start({ workers: 1, users: [ALICE], args: ['--tls-cert', main.cert, '--tls-key', main.key, '--max-connections-per-ip', '2'] });
    });

    after(async () => {
      await server?.stop();
    });

    it('regression (fixed): connections still in the TLS handshake are not counted against --max-connections-per-ip', async () => {
      // Three connections from 127.0.0.1 that started a TLS handshake (one byte of a handshake record) and
      // stall: the server holds each for up to ~10 s. With a limit of 2 per address, a further connection
      // must get `bye TOO_MANY_CONNECTIONS`; admission only happens after the handshake, so it is let in.
      const stalled = await Promise.all([0, 1, 2].map(() => RawClient.connect(server.port)));
      try {
        for (const s of stalled) s.write(Buffer.from([0x16]));
        await new Promise((r) => setTimeout(r, 300));
        const err = await failure(
          FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } }).then((c) => c.close()),
          'a fourth connection from the address with a per-address limit of 2',
        );
        expect(err.code).to.equal('TOO_MANY_CONNECTIONS');
      } finally {
        for (const s of stalled) s.close();
      }
    });

    it('control: with two established TLS sessions from the address, a third gets bye TOO_MANY_CONNECTIONS', async () => {
      await new Promise((r) => setTimeout(r, 500)); // the primary hears about the previous test's closes
      const open = await Promise.all([0, 1].map(() => FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } })));
      try {
        const err = await failure(
          FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } }).then((c) => c.close()),
          'a third TLS session with a per-address limit of 2',
        );
        expect(err.code).to.equal('TOO_MANY_CONNECTIONS');
      } finally {
        for (const c of open) c.close();
      }
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('TLS host name verification', () => {
    let server: TestServer;

    before(async () => {
      server = await TestServer.start({ workers: 1, users: [ALICE], args: ['--tls-cert', other.cert, '--tls-key', other.key] });
    });

    after(async () => {
      await server?.stop();
    });

    it('FtsClient to 127.0.0.1 is refused when the (trusted) certificate is for CN=other.example', async () => {
      const err = await failure(FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: other.pem } }), 'name mismatch');
      expect(err.code).to.equal('IO_ERROR');
      expect(err.message).to.match(/TLS/);
      expect(err.message, 'the reason is the name, not the CA').to.match(/altnames|host ?name/i);
      expect(err.message).to.not.match(/self.signed/i);
    });

    it('fts --tls --ca other.pem to 127.0.0.1 exits 1 with a message about the certificate', async () => {
      const r = await runCli(['--tls', '--ca', other.cert, 'list'], { port: server.port, user: ALICE.user, password: ALICE.password, timeoutMs: 15_000 });
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.stderr, describeRun(r)).to.match(/TLS/);
      expect(r.stderr, describeRun(r)).to.match(/certificate/i);
      expect(r.stderr, describeRun(r)).to.match(/altnames|host ?name/i);
    });

    it('control: the same certificate is accepted when the expected name is other.example', async () => {
      const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: other.pem, servername: 'other.example' } });
      try {
        await client.auth(ALICE.user, ALICE.password);
        await client.list();
      } finally {
        client.close();
      }
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('TLS client against a plaintext server', () => {
    let server: TestServer;

    before(async () => {
      server = await TestServer.start({ workers: 1, users: [ALICE] });
    });

    after(async () => {
      await server?.stop();
    });

    it('FtsClient with tls fails cleanly, saying the server does not speak TLS', async () => {
      const started = Date.now();
      const err = await failure(FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } }), 'TLS to plaintext');
      expect(Date.now() - started, 'ms until the failure').to.be.below(5_000);
      expect(err.code).to.equal('IO_ERROR');
      expect(err.message).to.match(/does not speak TLS/);
    });

    it('fts --tls --ca exits 1 with "does not speak TLS"', async () => {
      const r = await runCli(['--tls', '--ca', main.cert, 'list'], { port: server.port, user: ALICE.user, password: ALICE.password, timeoutMs: 15_000 });
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.stderr, describeRun(r)).to.match(/does not speak TLS/);
      expect(r.stderr, 'no stack trace').to.not.match(/\n\s+at /);
      expect(r.stderr.trim().split('\n'), 'one line').to.have.length(1);
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('TLS startup errors', () => {
    let good: string[];
    let sdir: string;

    before(async () => {
      sdir = path.join(dir, 'startup');
      await mkdir(sdir);
      const users = path.join(sdir, 'users.txt');
      await writeWithMode(users, `${ALICE.user}:${ALICE.password}\n`, 0o600);
      await writeFile(path.join(sdir, 'garbage.pem'), 'this is not a PEM file\n');
      good = ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--workers', '1', '--users', users, '--storage', path.join(sdir, 'storage')];
    });

    const sock = (name: string): string[] => ['--admin-socket', path.join(sdir, `${name}.sock`)];

    it('a missing or invalid certificate or key, or a mismatched pair: exit 1 and one clear line', async () => {
      const garbage = path.join(sdir, 'garbage.pem');
      const cases: Array<{ what: string; args: string[] }> = [
        { what: 'missing cert', args: ['--tls-cert', path.join(sdir, 'no-such-cert.pem'), '--tls-key', main.key] },
        { what: 'missing key', args: ['--tls-cert', main.cert, '--tls-key', path.join(sdir, 'no-such-key.pem')] },
        { what: 'invalid cert', args: ['--tls-cert', garbage, '--tls-key', main.key] },
        { what: 'invalid key', args: ['--tls-cert', main.cert, '--tls-key', garbage] },
        { what: 'key of another cert', args: ['--tls-cert', main.cert, '--tls-key', second.key] },
      ];
      const results = await Promise.all(cases.map((c, i) => runServerOnce([...good, ...sock(`bad${i}`), ...c.args])));
      results.forEach((r, i) => {
        const line = startupFailure(r, 1);
        expect(line, cases[i]!.what).to.match(/TLS/);
        expect(line, cases[i]!.what).to.match(/certificate|key/i);
      });
      expect(results[0]!.stderr, 'missing cert').to.match(/ENOENT|no such file/i);
      expect(results[1]!.stderr, 'missing key').to.match(/ENOENT|no such file/i);
    });

    it('regression (fixed): a missing certificate or key file is not named in the startup error (users file errors name their path)', async () => {
      const missingCert = path.join(sdir, 'absent-cert.pem');
      const missingKey = path.join(sdir, 'absent-key.pem');
      const [a, b] = await Promise.all([
        runServerOnce([...good, ...sock('nc'), '--tls-cert', missingCert, '--tls-key', main.key]),
        runServerOnce([...good, ...sock('nk'), '--tls-cert', main.cert, '--tls-key', missingKey]),
      ]);
      expect(startupFailure(a, 1), 'the missing certificate path is named').to.include(missingCert);
      expect(startupFailure(b, 1), 'the missing key path is named').to.include(missingKey);
    });

    it('--tls-cert without --tls-key (and the reverse): exit 2', async () => {
      const [a, b] = await Promise.all([
        runServerOnce([...good, ...sock('c'), '--tls-cert', main.cert]),
        runServerOnce([...good, ...sock('k'), '--tls-key', main.key]),
      ]);
      expect(startupFailure(a, 2)).to.include('--tls-key');
      expect(startupFailure(b, 2)).to.include('--tls-cert');
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('what the server says of its certificate', () => {
    it('at start and at reload: subject and expiry logged, a certificate expiring within 14 days and a key others can read warned of (reload prints the warnings); the expiry is a metric', async () => {
      const cdir = path.join(dir, 'facts');
      await mkdir(cdir);
      const lasting = await makeCert(cdir, 'lasting', 'localhost', 'DNS:localhost,IP:127.0.0.1', 30);
      await chmod(lasting.key, 0o600);
      const server = await TestServer.start({ workers: 1, users: [ALICE], args: ['--tls-cert', lasting.cert, '--tls-key', lasting.key] });
      try {
        const notAfter = Date.parse(new X509Certificate(lasting.pem).validTo);
        const inForce = await server.waitForLog((l) => l.msg === 'TLS certificate in force');
        expect(inForce).to.include({ on: 'start', subject: 'CN=localhost', notAfter: new Date(notAfter).toISOString() });
        expect(server.lines.filter((l) => l.level === 'warn' && String(l.msg).includes('TLS')), 'a good pair: no warning').to.deep.equal([]);
        expect(await metric(await metricsPortOf(server), 'fts_tls_certificate_expiry_timestamp_seconds')).to.equal(Math.floor(notAfter / 1000));

        // A two-day certificate, its key left readable by others: both said, at the reload and in its output.
        const short = await makeCert(cdir, 'short');
        await copyFile(short.cert, lasting.cert);
        await copyFile(short.key, lasting.key);
        await chmod(lasting.key, 0o644);
        const r = await runAdmin(server.adminSocket, ['reload']);
        expect(r.code, r.stderr).to.equal(0);
        const shortEnd = Date.parse(new X509Certificate(short.pem).validTo);
        expect(r.stderr).to.include(`warning: the TLS certificate expires at ${new Date(shortEnd).toISOString()}, in less than 14 days: renew it, then fts-admin reload`);
        expect(r.stderr).to.include(`warning: the TLS key ${lasting.key} is readable by group or others (mode 644); chmod 600 it`);
        const warned = server.lines.filter((l) => l.level === 'warn' && l.on === 'reload').map((l) => String(l.msg));
        expect(warned).to.have.length(2);
        expect(await metric(await metricsPortOf(server), 'fts_tls_certificate_expiry_timestamp_seconds'), 'the metric follows the reload').to.equal(Math.floor(shortEnd / 1000));
      } finally {
        await server.stop();
      }
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('TLS certificate reload (fts-admin reload)', () => {
    let server: TestServer;
    let certPath: string;
    let keyPath: string;

    before(async () => {
      const rdir = path.join(dir, 'reload');
      await mkdir(rdir);
      certPath = path.join(rdir, 'cert.pem');
      keyPath = path.join(rdir, 'key.pem');
      await copyFile(main.cert, certPath);
      await copyFile(main.key, keyPath);
      server = await TestServer.start({ workers: 2, users: [ALICE], args: ['--tls-cert', certPath, '--tls-key', keyPath] });
      await waitWorkersReady(server.adminSocket, 2);
    });

    after(async () => {
      await server?.stop();
    });

    it('after replacing cert.pem/key.pem, new connections present the new certificate; an existing session continues', async () => {
      const before = await peerFingerprints(server.port, 6);
      expect(new Set(before), 'every new connection presents the first certificate').to.deep.equal(new Set([main.fingerprint256]));

      const existing = await FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } });
      try {
        await existing.auth(ALICE.user, ALICE.password);
        const early = randomBytes(4096);
        await existing.uploadBuffer('before-reload.bin', early);

        await copyFile(second.cert, certPath);
        await copyFile(second.key, keyPath);
        const from = server.lines.length;
        const r = await runAdmin(server.adminSocket, ['reload']);
        expect(r.code, `fts-admin reload: ${r.stdout} ${r.stderr}`).to.equal(0);
        expect(r.stdout).to.match(/^TLS certificate reloaded$/m);

        const after = await peerFingerprints(server.port, 6);
        expect(after, 'every new connection presents the second certificate').to.deep.equal(Array<string>(6).fill(second.fingerprint256));
        // The reload reaches the workers without an acknowledgement: a worker that served none of the six
        // may log it a moment later.
        const reloadLines = (): number => server.lines.slice(from).filter((l) => l.msg === 'TLS certificate reloaded').length;
        await waitUntil('each worker to log the reload', () => reloadLines() >= 2, 10_000);
        expect(reloadLines(), 'each worker logged the reload, once').to.equal(2);

        // The session opened before the reload goes on, both ways.
        expect((await existing.list()).map((e) => e.name)).to.include('before-reload.bin');
        expect((await existing.downloadBuffer('before-reload.bin')).data.equals(early)).to.equal(true);
        await existing.uploadBuffer('after-reload.bin', randomBytes(2048));
        await existing.quit();
      } finally {
        existing.close();
      }

      // A client trusting only the new certificate gets in; one trusting only the old one does not.
      const fresh = await FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: second.pem } });
      try {
        await fresh.auth(ALICE.user, ALICE.password);
        expect((await fresh.list()).map((e) => e.name)).to.include('after-reload.bin');
      } finally {
        fresh.close();
      }
      const stale = await failure(FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: main.pem } }), 'old CA after reload');
      expect(stale.message).to.match(/TLS/);
    });

    it('reload with a broken certificate file: exit 1, and the current certificate keeps being served', async () => {
      const current = (await peerFingerprints(server.port, 1))[0]!;
      expect(current).to.equal(second.fingerprint256);
      await writeFile(certPath, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
      const r = await runAdmin(server.adminSocket, ['reload']);
      expect(r.code, `fts-admin reload: ${r.stdout} ${r.stderr}`).to.equal(1);
      expect(r.stderr).to.match(/^fts-admin: .*certificate/im);
      expect(r.stderr).to.match(/kept/);
      expect(await peerFingerprints(server.port, 6)).to.deep.equal(Array<string>(6).fill(current));
      const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port, tls: { ca: second.pem } });
      try {
        await client.auth(ALICE.user, ALICE.password);
        await client.noop();
      } finally {
        client.close();
      }
    });

    it('reload with a key that does not match the certificate: exit 1, the current certificate stays', async () => {
      await copyFile(main.cert, certPath);
      await copyFile(second.key, keyPath);
      const r = await runAdmin(server.adminSocket, ['reload']);
      expect(r.code, `fts-admin reload: ${r.stdout} ${r.stderr}`).to.equal(1);
      expect(r.stderr).to.match(/certificate|key/i);
      expect(await peerFingerprints(server.port, 4)).to.deep.equal(Array<string>(4).fill(second.fingerprint256));
    });

    it('reload with a key that is a FIFO: refused at once (exit 1), the server keeps answering and keeps its certificate', async () => {
      await copyFile(main.cert, certPath);
      await rm(keyPath);
      expect(spawnSync('mkfifo', ['-m', '600', keyPath]).status, 'mkfifo').to.equal(0);
      try {
        const started = Date.now();
        const r = await runAdmin(server.adminSocket, ['reload']);
        expect(r.code, `fts-admin reload: ${r.stdout} ${r.stderr}`).to.equal(1);
        expect(r.stderr).to.include(`cannot read TLS key ${keyPath}: is not a regular file`);
        expect(Date.now() - started, 'not blocked on the FIFO').to.be.below(10_000);
        expect(await peerFingerprints(server.port, 4)).to.deep.equal(Array<string>(4).fill(second.fingerprint256));
      } finally {
        await rm(keyPath, { force: true });
        await copyFile(second.key, keyPath);
      }
    });

    it('a reload refused for its users file applies nothing: a new valid certificate is not taken either', async () => {
      await copyFile(main.cert, certPath);
      await copyFile(main.key, keyPath);
      const users = await readFile(server.usersFile);
      await writeFile(server.usersFile, `${ALICE.user}:${ALICE.password}\nno separator here\n`);
      try {
        const r = await runAdmin(server.adminSocket, ['reload']);
        expect(r.code, `fts-admin reload: ${r.stdout} ${r.stderr}`).to.equal(1);
        expect(r.stderr).to.match(/malformed/);
        expect(await peerFingerprints(server.port, 4), 'still the certificate before the reload').to.deep.equal(Array<string>(4).fill(second.fingerprint256));
      } finally {
        await writeFile(server.usersFile, users);
      }
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('SCRAM-SHA-256 logins', () => {
    let server: TestServer;
    let usersFile: string;
    let passwdRun: Awaited<ReturnType<typeof runPasswd>>;
    const header = '# scram test users\n';

    before(async () => {
      const sdir = path.join(dir, 'scram');
      await mkdir(sdir);
      usersFile = path.join(sdir, 'users.txt');
      await writeWithMode(usersFile, `${header}${ERIN.user}:${ERIN.password}\n`, 0o600);
      // No server is running at this socket: passwd writes the file and says the change applies at the next start.
      passwdRun = await runPasswd(DAVE.user, usersFile, path.join(sdir, 'nobody.sock'), `${DAVE.password}\n`);
      server = await TestServer.start({ workers: 2, users: [ALICE], args: ['--users', usersFile, '--log-level', 'trace', ...LENIENT_GATE] });
      await waitWorkersReady(server.adminSocket, 2);
    });

    after(async () => {
      await server?.stop();
    });

    it('fts-admin passwd with no server running: exit 0, "no server running", a verifier line, mode 0600', async () => {
      expect(passwdRun.code, describeProc('passwd', passwdRun)).to.equal(0);
      expect(passwdRun.stdout).to.match(/no server running/);
      expect(passwdRun.stdout).to.match(/added dave/);
      expect(passwdRun.stdout + passwdRun.stderr, 'passwd never prints the password').to.not.include(DAVE.password);
      const text = await readFile(usersFile, 'utf8');
      const lines = text.split('\n');
      expect(lines.slice(0, 2).join('\n') + '\n').to.equal(`${header}${ERIN.user}:${ERIN.password}\n`);
      expect(lines[2]!.startsWith('dave:')).to.equal(true);
      const secret = lines[2]!.slice('dave:'.length);
      expect(secret).to.match(VERIFIER_LINE);
      expect(text, 'the password itself is not stored').to.not.include(DAVE.password);
      const v = parseVerifier(secret);
      expect(v).to.not.equal(null);
      expect(checkPassword(v!, DAVE.password)).to.equal(true);
      expect(lines[3]).to.equal('');
      expect(lines).to.have.length(4);
      expect(await modeOf(usersFile)).to.equal(0o600);
    });

    it('the startup log warns about the plaintext entry, with the count', () => {
      const warn = server.lines.find((l) => typeof l['plaintext'] === 'number');
      expect(warn, 'a plaintext warning').to.not.equal(undefined);
      expect(warn!['plaintext']).to.equal(1);
      expect(warn!.msg).to.match(/1 plaintext/);
    });

    it('the CLI logs in with SCRAM (audit: mech scram-sha-256, success)', async () => {
      const from = server.lines.length;
      const r = await runCli(['list'], { port: server.port, user: DAVE.user, password: DAVE.password });
      expect(r.code, describeRun(r)).to.equal(0);
      const line = await waitForLine(server.lines, (l) => l['event'] === 'auth' && l['user'] === 'dave', from);
      expect(line['mech']).to.equal('scram-sha-256');
      expect(line['result']).to.equal('success');
    });

    it('FtsClient.authScram logs in to the hashed entry; the session works and has a token', async () => {
      const client = await FtsClient.connect({ port: server.port });
      try {
        await client.authScram(DAVE.user, DAVE.password);
        expect(client.session?.user).to.equal('dave');
        await client.uploadBuffer('scram.txt', Buffer.from('hello scram\n'));
        expect((await client.list()).map((e) => e.name)).to.include('scram.txt');
      } finally {
        client.close();
      }
    });

    it('a wrong password: the CLI exits 3 with AUTH_FAILED (audit: scram-sha-256, failure, user named)', async () => {
      const from = server.lines.length;
      const r = await runCli(['list'], { port: server.port, user: DAVE.user, password: WRONG });
      expect(r.code, describeRun(r)).to.equal(3);
      expect(r.stderr).to.include('AUTH_FAILED');
      const line = await waitForLine(server.lines, (l) => l['event'] === 'auth' && l['result'] === 'failure', from);
      expect(line['mech']).to.equal('scram-sha-256');
      expect(line['user']).to.equal('dave');
      const err = await failure(
        FtsClient.connect({ port: server.port }).then(async (c) => {
          try {
            await c.authScram(DAVE.user, WRONG);
          } finally {
            c.close();
          }
        }),
        'authScram with a wrong password',
      );
      expect(err.code).to.equal('AUTH_FAILED');
    });

    it('authPlain with the right password works against the hashed entry; a wrong one fails', async () => {
      const from = server.lines.length;
      const client = await FtsClient.connect({ port: server.port, allowPlainPassword: true });
      try {
        await client.authPlain(DAVE.user, DAVE.password);
        expect(client.session?.user).to.equal('dave');
        expect((await client.list()).map((e) => e.name)).to.include('scram.txt');
      } finally {
        client.close();
      }
      const line = await waitForLine(server.lines, (l) => l['event'] === 'auth' && l['user'] === 'dave', from);
      expect(line['mech']).to.equal('plain');
      expect(line['result']).to.equal('success');
      const bad = await FtsClient.connect({ port: server.port, allowPlainPassword: true });
      try {
        expect((await failure(bad.authPlain(DAVE.user, WRONG), 'plain, wrong password')).code).to.equal('AUTH_FAILED');
      } finally {
        bad.close();
      }
    });

    it('a plaintext entry works with SCRAM too (FtsClient.authScram and the CLI)', async () => {
      const client = await FtsClient.connect({ port: server.port });
      try {
        await client.authScram(ERIN.user, ERIN.password);
        expect(client.session?.user).to.equal('erin');
        await client.list();
      } finally {
        client.close();
      }
      const from = server.lines.length;
      const r = await runCli(['list'], { port: server.port, user: ERIN.user, password: ERIN.password });
      expect(r.code, describeRun(r)).to.equal(0);
      const line = await waitForLine(server.lines, (l) => l['event'] === 'auth' && l['user'] === 'erin', from);
      expect(line['mech']).to.equal('scram-sha-256');
      expect(line['result']).to.equal('success');
    });

    it('a raw SCRAM exchange: `continue` with the stored salt, then ok whose `data` is a valid server signature', async () => {
      const fileLine = (await readFile(usersFile, 'utf8')).split('\n').find((l) => l.startsWith('dave:'))!;
      const stored = parseVerifier(fileLine.slice('dave:'.length))!;
      const { client: raw, greeting } = await RawClient.open(server.port);
      let token = '';
      try {
        expect(greeting['mechs']).to.include('scram-sha-256');
        const scram = new ScramClient(DAVE.user, DAVE.password);
        const ours = scram.first.slice(scram.first.indexOf(',r=') + 3);
        const cont = await scramStart(raw, scram, 41);
        const first = parseServerFirst(cont['data']);
        expect(first.nonce.startsWith(ours) && first.nonce.length > ours.length, 'the server nonce extends ours').to.equal(true);
        expect(first.salt, 'the salt is the one stored in the verifier').to.equal(stored.salt.toString('base64'));
        expect(first.iterations).to.equal(stored.iterations);
        expect(cont, 'an interim reply is not final').to.not.have.property('code');

        const clientFinal = await scram.final(cont['data'] as string);
        expect(clientFinal).to.be.a('string');
        expect(clientFinal!).to.match(/^c=biws,r=[^,]+,p=[A-Za-z0-9+/=]+$/);
        expect(clientFinal!, 'the proof, not the password, crosses the wire').to.not.include(DAVE.password);
        raw.sendHeader({ op: 'auth', id: 41, mech: 'scram-sha-256', data: clientFinal });
        const ok = await raw.nextHeader();
        expect(ok['status'], JSON.stringify(ok)).to.equal('ok');
        expect(ok['id']).to.equal(41);
        expect(ok['user']).to.equal('dave');
        expect(ok['token']).to.be.a('string');
        expect(ok['tokenExpires']).to.be.a('number');
        expect(ok['data']).to.be.a('string');
        expect(scram.verifyServer(ok['data'] as string), 'ScramClient.verifyServer accepts the server signature').to.equal(true);
        token = ok['token'] as string;
        // Authenticated now: a request that needs login is served.
        raw.sendHeader({ op: 'list', id: 42 });
        const listed = await raw.reply();
        expect(listed.final['status']).to.equal('ok');
      } finally {
        raw.close();
      }
      const again = await FtsClient.connect({ port: server.port });
      try {
        await again.authToken(token);
        expect(again.session?.user).to.equal('dave');
      } finally {
        again.close();
      }
    });

    it('an unknown user gets a `continue` with a stable fake salt, then AUTH_FAILED like a wrong password', async () => {
      const a = await scramSalt(server.port, 'nobody-here');
      const b = await scramSalt(server.port, 'nobody-here');
      expect(a.salt, 'same fake salt on two connections').to.equal(b.salt);
      expect(a.iterations).to.equal(4096);
      expect(Buffer.from(a.salt, 'base64').length, 'fake salt as long as a real one').to.equal(16);

      const runToEnd = async (user: string): Promise<Header> => {
        const { client: raw } = await RawClient.open(server.port);
        try {
          const scram = new ScramClient(user, WRONG);
          const cont = await scramStart(raw, scram, 9);
          raw.sendHeader({ op: 'auth', id: 9, mech: 'scram-sha-256', data: await scram.final(cont['data'] as string) });
          const final = await raw.nextHeader(10_000);
          expect(await raw.waitClosed(3_000), 'AUTH_FAILED closes the connection').to.equal(true);
          return final;
        } finally {
          raw.close();
        }
      };
      const [unknown, wrong] = await Promise.all([runToEnd('nobody-here'), runToEnd(DAVE.user)]);
      expect(unknown['status']).to.equal('error');
      expect(unknown['code']).to.equal('AUTH_FAILED');
      expect(unknown['fatal']).to.equal(true);
      expect(unknown, 'no server signature for a failed login').to.not.have.property('data');
      expect(unknown, 'unknown user and wrong password get the same reply').to.deep.equal(wrong);
    });

    it('regression (fixed): the SCRAM salt of a plaintext entry changes between connections, unlike the stable fake salt of an unknown user', async () => {
      // With two workers each derives its own random salt for a plaintext entry, so an attacker who sees
      // the salt change learns that the user exists (an unknown user's fake salt never changes).
      const salts = new Set<string>();
      for (let i = 0; i < 6; i++) salts.add((await scramSalt(server.port, ERIN.user)).salt);
      expect([...salts], 'one salt for erin across 6 connections (2 workers)').to.have.length(1);
    });

    it('regression (fixed): across a restart without --cluster-secret-file, every name announces the salt and count it did before (a restart told unknown and plaintext names from hashed ones)', async () => {
      const storage = path.join(dir, 'scram-restart-storage');
      type Announced = { salt: string; iterations: number };
      const announced = async (): Promise<{ ghost: Announced; erin: Announced; dave: Announced }> => {
        const s = await TestServer.start({ workers: 1, users: [ALICE], storage, args: ['--users', usersFile, ...LENIENT_GATE] });
        try {
          return { ghost: await scramSalt(s.port, 'nobody-here'), erin: await scramSalt(s.port, ERIN.user), dave: await scramSalt(s.port, DAVE.user) };
        } finally {
          await s.stop();
        }
      };
      const first = await announced();
      const second = await announced();
      expect(second, 'after a restart').to.deep.equal(first);
      expect(first.ghost.salt).to.not.equal(first.erin.salt);
    });

    it('a SCRAM continuation with another id fails with AUTH_FAILED (no login)', async () => {
      const { client: raw } = await RawClient.open(server.port);
      try {
        const scram = new ScramClient(DAVE.user, DAVE.password);
        const cont = await scramStart(raw, scram, 5);
        raw.sendHeader({ op: 'auth', id: 6, mech: 'scram-sha-256', data: await scram.final(cont['data'] as string) });
        const reply = await raw.nextHeader(10_000);
        expect(reply['status']).to.equal('error');
        expect(reply['code']).to.equal('AUTH_FAILED');
      } finally {
        raw.close();
      }
    });

    it('no password appears in the server output (stdout or stderr, log level trace)', async () => {
      const audits = authLines(server.lines);
      expect(audits.length, 'auth attempts were logged').to.be.above(5);
      const output = server.stdout + server.stderr;
      for (const secret of [DAVE.password, ERIN.password, ...ERIN.password.split(':'), WRONG]) {
        expect(output.includes(secret), `server output contains ${JSON.stringify(secret)}`).to.equal(false);
      }
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('fts-admin passwd', () => {
    let pdir: string;
    let noServer: string;
    const NEW_PW = 'New9Passwd-Entry-PW';

    before(async () => {
      pdir = path.join(dir, 'passwd');
      await mkdir(pdir);
      noServer = path.join(pdir, 'none.sock');
    });

    async function onlyFiles(d: string): Promise<string[]> {
      return (await readdir(d)).sort();
    }

    it('updates an existing user in place: every other line and comment byte-identical, mode 0600, no temp file', async () => {
      const d = path.join(pdir, 'update');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      const original = [
        '# users of the test server',
        'alice:alice-plain-pw',
        '',
        '   # an indented comment, with dave:fake inside',
        '#dave:commented-out-entry',
        'dave:old-plain-pw',
        'bob:bob:with:colons \r',
        'carol:' + formatVerifier(deriveVerifier('carol-pw')),
        '# trailing comment',
        '',
      ].join('\n');
      await writeWithMode(file, original, 0o600);
      const r = await runPasswd('dave', file, noServer, `${NEW_PW}\n`);
      expect(r.code, describeProc('passwd', r)).to.equal(0);
      expect(r.stdout).to.match(/updated dave/);
      expect(r.stdout).to.match(/no server running/);
      const before = original.split('\n');
      const after = (await readFile(file, 'utf8')).split('\n');
      expect(after).to.have.length(before.length);
      after.forEach((line, i) => {
        if (i === 5) return;
        expect(line, `line ${i + 1} unchanged`).to.equal(before[i]);
      });
      expect(after[5]!.startsWith('dave:')).to.equal(true);
      const v = parseVerifier(after[5]!.slice(5));
      expect(v, after[5]).to.not.equal(null);
      expect(checkPassword(v!, NEW_PW)).to.equal(true);
      expect(await modeOf(file)).to.equal(0o600);
      expect(await onlyFiles(d), 'no temporary file left').to.deep.equal(['users.txt']);
    });

    it('appends a new user, keeping the file byte-identical before it, mode 0600', async () => {
      const d = path.join(pdir, 'append');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      const original = '# list\nalice:alice-plain-pw\n';
      await writeWithMode(file, original, 0o600);
      const r = await runPasswd('frank', file, noServer, `${NEW_PW}\n`);
      expect(r.code, describeProc('passwd', r)).to.equal(0);
      expect(r.stdout).to.match(/added frank/);
      const text = await readFile(file, 'utf8');
      expect(text.startsWith(original), 'the old content is a byte-identical prefix').to.equal(true);
      const rest = text.slice(original.length);
      expect(rest).to.match(/^frank:SCRAM-SHA-256\$[^\n]+\n$/);
      expect(checkPassword(parseVerifier(rest.slice('frank:'.length, -1))!, NEW_PW)).to.equal(true);
      expect(await modeOf(file)).to.equal(0o600);
      expect(await onlyFiles(d)).to.deep.equal(['users.txt']);
    });

    it('an invalid username: exit 2 (a bad argument) with a message, file unchanged', async () => {
      const d = path.join(pdir, 'invalid');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      await writeWithMode(file, 'alice:alice-plain-pw\n', 0o600);
      const before = await snapshot(file);
      for (const bad of ['bad:name', '.hidden', 'with space', 'x'.repeat(65)]) {
        const r = await runPasswd(bad, file, noServer, `${NEW_PW}\n`);
        expect(r.code, describeProc(`passwd ${bad}`, r)).to.equal(2);
        expect(r.stderr, describeProc(`passwd ${bad}`, r)).to.match(/^fts-admin: .*invalid username/m);
        expect(r.stdout + r.stderr).to.not.include(NEW_PW);
      }
      const after = await snapshot(file);
      expect(after.bytes.equals(before.bytes)).to.equal(true);
      expect(after.ino, 'not rewritten').to.equal(before.ino);
      expect(await onlyFiles(d)).to.deep.equal(['users.txt']);
    });

    it('regression (fixed): an invalid username is reported only after the new password was read (on a terminal: typed twice for nothing)', async () => {
      const d = path.join(pdir, 'invalid-first');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      await writeWithMode(file, 'alice:alice-plain-pw\n', 0o600);
      // No password on stdin at all: the username is the first problem and should be the one reported.
      const r = await runPasswd('bad:name', file, noServer, '');
      expect(r.code, describeProc('passwd bad:name', r)).to.not.equal(0);
      expect(r.stderr, describeProc('passwd bad:name', r)).to.match(/invalid username/);
    });

    it('an empty password, or one of fewer than 8 characters, on stdin: exit 1, file unchanged', async () => {
      const d = path.join(pdir, 'empty');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      await writeWithMode(file, 'alice:alice-plain-pw\ndave:old-pw\n', 0o600);
      const before = await snapshot(file);
      for (const input of ['', '\n', '\r\n']) {
        const r = await runPasswd('dave', file, noServer, input);
        expect(r.code, describeProc(`passwd with ${JSON.stringify(input)}`, r)).to.equal(1);
        expect(r.stderr).to.match(/^fts-admin: .*empty password/m);
      }
      // Characters, not bytes: seven of them in 14 bytes are still too few.
      for (const input of ['x\n', 'seven77\n', 'äöüßéèê\n']) {
        const r = await runPasswd('dave', file, noServer, input);
        expect(r.code, describeProc(`passwd with ${JSON.stringify(input)}`, r)).to.equal(1);
        expect(r.stderr).to.equal('fts-admin: the password has fewer than 8 characters; nothing changed\n');
      }
      const after = await snapshot(file);
      expect(after.bytes.equals(before.bytes)).to.equal(true);
      expect(after.mode).to.equal(0o600);
      expect(after.ino, 'not rewritten').to.equal(before.ino);
      expect(await onlyFiles(d)).to.deep.equal(['users.txt']);
    });

    it('regression (fixed): on a users file starting with a UTF-8 byte-order mark, passwd appends a duplicate instead of replacing the first user', async () => {
      // users.ts strips a leading BOM, so the server reads line 1 as user "dave"; passwd does not, so it
      // appends a second "dave" line. The server keeps the FIRST definition (the old password) and reports
      // the new line as a duplicate: the password change silently does not take effect.
      const d = path.join(pdir, 'bom');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      await writeWithMode(file, '\uFEFFdave:old-plain-pw\nalice:alice-plain-pw\n', 0o600);
      expect(parseUsers('\uFEFFdave:old-plain-pw\n').users.has('dave'), 'the server sees dave on line 1').to.equal(true);
      const r = await runPasswd('dave', file, noServer, `${NEW_PW}\n`);
      expect(r.code, describeProc('passwd', r)).to.equal(0);
      const parsed = parseUsers(await readFile(file, 'utf8'));
      expect(parsed.problems, 'no duplicate or malformed line').to.deep.equal([]);
      expect(await parsed.users.verify('dave', NEW_PW, Buffer.alloc(32)), 'the new password is the one the server uses').to.equal(true);
      expect((await readFile(file)).subarray(0, 3), 'the byte-order mark is kept').to.deep.equal(Buffer.from([0xef, 0xbb, 0xbf]));
    });

    it('regression (fixed): concurrent passwd runs on one file lose updates (read-modify-write without a lock)', async () => {
      const d = path.join(pdir, 'concurrent');
      await mkdir(d);
      const file = path.join(d, 'users.txt');
      await writeWithMode(file, 'alice:alice-plain-pw\n', 0o600);
      const users = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8'];
      const runs = await Promise.all(users.map((u) => runPasswd(u, file, noServer, `password-${u}\n`)));
      runs.forEach((r, i) => expect(r.code, describeProc(`passwd ${users[i]!}`, r)).to.equal(0));
      const parsed = parseUsers(await readFile(file, 'utf8'));
      expect(parsed.problems).to.deep.equal([]);
      // Every run reported success, so every user must be in the file with their password.
      const verified = await Promise.all(users.map((u) => parsed.users.verify(u, `password-${u}`, Buffer.alloc(32))));
      const missing = users.filter((_u, i) => !verified[i]);
      expect(missing, 'users whose successful passwd was overwritten by a concurrent run').to.deep.equal([]);
      expect(await parsed.users.verify('alice', 'alice-plain-pw', Buffer.alloc(32))).to.equal(true);
    });

    describe('with a running server (--socket)', () => {
      let server: TestServer;
      let usersFile: string;
      const OLD_PW = 'Old1Dave-Running-PW';

      before(async () => {
        const d = path.join(pdir, 'running');
        await mkdir(d);
        usersFile = path.join(d, 'users.txt');
        await writeWithMode(usersFile, `${hashedLine('dave', OLD_PW)}\n${ERIN.user}:${ERIN.password}\n`, 0o600);
        server = await TestServer.start({ workers: 2, users: [ALICE], args: ['--users', usersFile, ...LENIENT_GATE] });
        await waitWorkersReady(server.adminSocket, 2);
      });

      after(async () => {
        await server?.stop();
      });

      it('the new password works at once (the server reloaded) and the old one no longer does', async () => {
        const warm = await FtsClient.connect({ port: server.port });
        try {
          await warm.authScram('dave', OLD_PW);
        } finally {
          warm.close();
        }
        const r = await runPasswd('dave', usersFile, server.adminSocket, `${NEW_PW}\n`);
        expect(r.code, describeProc('passwd', r)).to.equal(0);
        expect(r.stdout).to.match(/updated dave/);
        expect(r.stdout).to.match(/server reloaded: 2 users/);
        expect(await modeOf(usersFile)).to.equal(0o600);

        // Several connections, so that both workers are asked.
        for (let i = 0; i < 4; i++) {
          const c = await FtsClient.connect({ port: server.port, allowPlainPassword: true });
          try {
            if (i % 2 === 0) await c.authScram('dave', NEW_PW);
            else await c.authPlain('dave', NEW_PW);
            expect(c.session?.user).to.equal('dave');
          } finally {
            c.close();
          }
        }
        const [scramOld, plainOld] = await Promise.all([
          FtsClient.connect({ port: server.port }).then(async (c) => {
            try {
              return await failure(c.authScram('dave', OLD_PW), 'old password, SCRAM');
            } finally {
              c.close();
            }
          }),
          FtsClient.connect({ port: server.port, allowPlainPassword: true }).then(async (c) => {
            try {
              return await failure(c.authPlain('dave', OLD_PW), 'old password, plain');
            } finally {
              c.close();
            }
          }),
        ]);
        expect(scramOld.code).to.equal('AUTH_FAILED');
        expect(plainOld.code).to.equal('AUTH_FAILED');
        // The other user is untouched.
        const erin = await FtsClient.connect({ port: server.port });
        try {
          await erin.auth(ERIN.user, ERIN.password);
        } finally {
          erin.close();
        }
        const output = server.stdout + server.stderr;
        for (const secret of [NEW_PW, OLD_PW]) expect(output.includes(secret), `server output contains ${secret}`).to.equal(false);
      });
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('users file permissions and plaintext warnings', () => {
    let udir: string;
    const servers: TestServer[] = [];

    before(async () => {
      udir = path.join(dir, 'perms');
      await mkdir(udir);
    });

    after(async () => {
      for (const s of servers.splice(0)) await s.stop();
    });

    function flags(users: string, name: string): string[] {
      return [
        '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--workers', '1', '--users', users,
        '--storage', path.join(udir, `${name}-storage`), '--admin-socket', path.join(udir, `${name}.sock`),
      ];
    }

    it('a users file readable by group or others (0644, 0640, 0604): exit 1 naming the mode and --allow-insecure-users-file', async () => {
      const modes = [0o644, 0o640, 0o604];
      const files = await Promise.all(
        modes.map(async (mode) => {
          const f = path.join(udir, `users-${mode.toString(8)}.txt`);
          await writeWithMode(f, `${ALICE.user}:${ALICE.password}\n`, mode);
          return f;
        }),
      );
      const results = await Promise.all(files.map((f, i) => runServerOnce(flags(f, `m${i}`))));
      results.forEach((r, i) => {
        const line = startupFailure(r, 1);
        expect(line).to.include(modes[i]!.toString(8));
        expect(line).to.include('--allow-insecure-users-file');
        expect(line).to.include(files[i]!);
        expect(line, 'no password in the message').to.not.include(ALICE.password);
      });
    });

    it('with --allow-insecure-users-file it starts, logs a warning about the mode, and counts the plaintext entries', async () => {
      const f = path.join(udir, 'insecure.txt');
      await writeWithMode(f, `${ALICE.user}:${ALICE.password}\n${hashedLine('dave', DAVE.password)}\n${ERIN.user}:${ERIN.password}\n`, 0o644);
      const server = await TestServer.start({ workers: 1, args: ['--users', f, '--allow-insecure-users-file'] });
      servers.push(server);
      const modeWarn = server.lines.find((l) => l['mode'] === '644');
      expect(modeWarn, `a warning naming the mode; log: ${server.stdout.slice(0, 2000)}`).to.not.equal(undefined);
      expect(modeWarn!.msg).to.match(/readable by group or others/);
      expect(String(modeWarn!['level'])).to.match(/warn|40/);
      const plain = server.lines.find((l) => typeof l['plaintext'] === 'number');
      expect(plain, 'a plaintext warning').to.not.equal(undefined);
      expect(plain!['plaintext']).to.equal(2);
      expect(plain!.msg).to.match(/2 plaintext/);
      expect(String(plain!['level'])).to.match(/warn|40/);
      const client = await FtsClient.connect({ port: server.port });
      try {
        await client.auth(DAVE.user, DAVE.password);
      } finally {
        client.close();
      }
    });

    it('a users file with only hashed entries (mode 0600) starts without any plaintext or mode warning', async () => {
      const f = path.join(udir, 'hashed.txt');
      await writeWithMode(f, `${hashedLine('dave', DAVE.password)}\n${hashedLine('alice', ALICE.password)}\n`, 0o600);
      const server = await TestServer.start({ workers: 1, args: ['--users', f] });
      servers.push(server);
      const warnings: LogLine[] = server.lines.filter((l) => typeof l['plaintext'] === 'number' || l['mode'] !== undefined);
      expect(warnings).to.deep.equal([]);
      const client = await FtsClient.connect({ port: server.port });
      try {
        await client.auth(ALICE.user, ALICE.password);
      } finally {
        client.close();
      }
    });
  });
});
