/**
 * End-to-end tests of fts-admin (dist/admin/cli.js) against a real fts-server: status, sessions, reload,
 * kick, restart-workers, drain, and the "no server" case. fts-admin runs as a child process, exactly as an
 * operator runs it; the server's side is observed through real client connections and its storage.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FtsClient, FtsError, ResilientClient } from '../../client/index.js';
import { ScramClient } from '../../protocol/index.js';
import { parseUsers } from '../../server/auth/users.js';
import { adminRequest } from '../../admin/admin-client.js';
import { FakeAdminSocket, runAdmin, sessionsJson, startAdmin, statusJson, waitWorkersReady, type AdminRun, type SessionJson, type WorkerStatusJson } from '../helpers/admin-cli.js';
import { codeOf, releaseAll } from '../helpers/common.js';
import { SlowUploader } from '../helpers/lifecycle-slow-uploader.js';
import { exists, freePort, leaveStaleSocket, publishedSha256, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { FaultProxy } from '../helpers/proxy.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer, type ServerOptions } from '../helpers/server.js';
import { ADMIN_CLI, REPO_ROOT } from '../helpers/paths.js';
import { describeProc, modeOf, runAdminIn, runPasswd, snapshot, writeWithMode } from '../helpers/tls-procs.js';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

describe('fts-admin (end to end)', function () {
  this.timeout(60_000);

  const servers: TestServer[] = [];
  const uploaders: SlowUploader[] = [];
  const raws: RawClient[] = [];
  const clients: FtsClient[] = [];
  const admins: AdminRun[] = [];
  const cleanups: Array<() => Promise<void>> = [];

  afterEach(async function () {
    this.timeout(90_000);
    await releaseAll({ uploaders, raws, clients, servers, admins, cleanups });
  });

  /** Starts a server and waits until all its workers answer. */
  async function startServer(options: ServerOptions = {}): Promise<TestServer> {
    const server = await TestServer.start(options);
    servers.push(server);
    await waitWorkersReady(server.adminSocket, options.workers ?? 2);
    return server;
  }

  async function login(server: TestServer, user = ALICE.user, password = ALICE.password): Promise<FtsClient> {
    const client = await FtsClient.connect({ port: server.port });
    clients.push(client);
    await client.auth(user, password);
    return client;
  }

  async function rawLogin(server: TestServer, user = ALICE.user, password = ALICE.password): Promise<RawClient> {
    const conn = await RawClient.login(server.port, user, password);
    raws.push(conn);
    return conn;
  }

  async function sessionOf(server: TestServer, localPort: number): Promise<SessionJson> {
    return waitUntil(`the session of local port ${localPort}`, async () => (await sessionsJson(server.adminSocket)).find((s) => s.remote.endsWith(`:${localPort}`)), 10_000, 100);
  }

  /** A 1 MiB upload paused half-way (until up.finish()), once the server lists it as in flight. */
  async function uploadInFlight(server: TestServer, name: string): Promise<SlowUploader> {
    const up = await SlowUploader.start({ port: server.port, user: ALICE.user, password: ALICE.password, name, size: 1024 * 1024 });
    uploaders.push(up);
    await up.waitForSent(512 * 1024);
    await waitUntil('the upload in flight', async () => (await sessionOf(server, up.localPort)).op === 'upload');
    return up;
  }

  /** A temporary directory, removed after the test. */
  async function scratch(prefix: string): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  describe('status', () => {
    it('status --json reports pid, port, metricsPort, draining, uptime, one entry per worker and consistent totals', async () => {
      const server = await startServer({ workers: 3 });
      const conn = await rawLogin(server);
      const st = await waitUntil('the authenticated session to be counted', async () => {
        const s = await statusJson(server.adminSocket);
        return s.sessions >= 1 && s.workers.every((w) => w.responding) ? s : undefined;
      });
      expect(st.pid, 'pid').to.equal(server.pid);
      expect(st.port, 'port').to.equal(server.port);
      expect(st.metricsPort === null || (Number.isInteger(st.metricsPort) && st.metricsPort > 0), `metricsPort ${String(st.metricsPort)}`).to.equal(true);
      expect(st.draining).to.equal(false);
      expect(st.uptimeSeconds).to.be.a('number').and.to.be.at.least(0).and.below(120);
      expect(st.workers).to.have.length(3);
      expect(st.workers.map((w) => w.pid).sort()).to.deep.equal(server.workerPids().sort());
      for (const w of st.workers) {
        expect(w.responding, `worker ${w.pid} responding`).to.equal(true);
        for (const n of [w.connections, w.sessions, w.transfers]) expect(Number.isInteger(n) && n >= 0).to.equal(true);
        expect(w.sessions).to.be.at.most(w.connections);
      }
      const sum = (k: 'connections' | 'sessions' | 'transfers'): number => st.workers.reduce((n, w) => n + w[k], 0);
      expect(st.connections).to.equal(sum('connections'));
      expect(st.sessions).to.equal(sum('sessions'));
      expect(st.transfers).to.equal(sum('transfers'));
      expect(st.sessions).to.be.at.least(1);
      expect(st.connections).to.be.at.least(st.sessions);
      expect(st.transfers).to.equal(0);
      expect(st['usersFile'], 'status.usersFile: the file passwd must write').to.equal(server.usersFile);
      // The session is counted on the worker that holds it.
      const mine = await sessionOf(server, conn.localPort);
      expect(st.workers.find((w) => w.pid === mine.worker)?.sessions).to.be.at.least(1);
    });

    it('status prints a header line and a table with one row per worker and a total', async () => {
      const server = await startServer({ workers: 2 });
      await rawLogin(server);
      // A worker slow to answer (loaded machine) is shown "(not responding)"; take a run where all answered.
      const r = await waitUntil('a status with every worker responding', async () => {
        const run = await runAdmin(server.adminSocket, ['status']);
        return run.code === 0 && !run.stdout.includes('not responding') ? run : undefined;
      });
      expect(r.code, r.stderr).to.equal(0);
      const out = lines(r.stdout);
      expect(out[0], 'header line').to.match(new RegExp(`^fts-server pid ${server.pid}\\s+port ${server.port}\\b.*\\bdraining no\\b`));
      expect(out[0], 'the users file, last').to.match(/ {2}users (\S.*)$/);
      expect(/ {2}users (\S.*)$/.exec(out[0]!)?.[1]).to.equal(server.usersFile);
      expect(out[1], 'table header').to.match(/^WORKER\s+CONNS\s+SESSIONS\s+TRANSFERS$/);
      const rows = out.slice(2);
      expect(rows, r.stdout).to.have.length(3);
      for (const pid of server.workerPids()) expect(rows.some((row) => new RegExp(`^${pid}\\s+\\d+\\s+\\d+\\s+\\d+$`).test(row)), `row for worker ${pid}`).to.equal(true);
      expect(rows[2], 'total row').to.match(/^total\s+\d+\s+[1-9]\d*\s+\d+$/);
    });
  });

  describe('sessions', () => {
    it('sessions --json lists idle and uploading sessions; an upload shows op, file and growing bytes', async () => {
      const server = await startServer({ workers: 2 });
      const idle = await rawLogin(server, BOB.user, BOB.password);
      const up = await SlowUploader.start({ port: server.port, user: ALICE.user, password: ALICE.password, name: 'big.bin', size: 2 * 1024 * 1024, pauseAt: 256 * 1024 });
      uploaders.push(up);
      await up.waitForSent(256 * 1024);

      const idleInfo = await sessionOf(server, idle.localPort);
      expect(idleInfo.user).to.equal(BOB.user);
      expect(idleInfo.op).to.equal(null);
      expect(idleInfo.file).to.equal(null);
      expect(idleInfo.id).to.match(/^[0-9a-f]+$/);
      expect(server.workerPids()).to.include(idleInfo.worker);
      expect(idleInfo.remote).to.match(/127\.0\.0\.1:\d+$/);
      const since = Date.parse(idleInfo.since);
      expect(Number.isNaN(since), `since ${idleInfo.since}`).to.equal(false);
      expect(since).to.be.at.most(Date.now() + 1_000);
      expect(since).to.be.above(Date.now() - 60_000);

      const first = await waitUntil('the upload to show its bytes', async () => {
        const s = await sessionOf(server, up.localPort);
        return s.op === 'upload' && s.bytes >= 256 * 1024 ? s : undefined;
      });
      expect(first.user).to.equal(ALICE.user);
      expect(first.file).to.equal('big.bin');
      expect(first.bytes).to.be.above(0).and.at.most(2 * 1024 * 1024);
      expect(first.id).to.not.equal(idleInfo.id);

      up.resume(10, 1024 * 1024);
      const later = await waitUntil('the upload bytes to grow', async () => {
        const s = await sessionOf(server, up.localPort);
        return s.op === 'upload' && s.bytes > first.bytes ? s : undefined;
      });
      expect(later.id).to.equal(first.id);
      expect(later.file).to.equal('big.bin');

      // The human table shows both sessions.
      const r = await runAdmin(server.adminSocket, ['sessions']);
      expect(r.code, r.stderr).to.equal(0);
      const out = lines(r.stdout);
      expect(out[0]).to.match(/^ID\s+USER\s+REMOTE\s+WORKER\s+OP\s+FILE\s+BYTES\s+SINCE$/);
      expect(out.some((l) => l.startsWith(first.id) && /\bupload\b/.test(l) && l.includes('big.bin'))).to.equal(true);
      expect(out.some((l) => l.startsWith(idleInfo.id) && l.includes(BOB.user))).to.equal(true);

      up.finish();
      const o = await up.outcome(20_000);
      expect(o.kind === 'reply' ? o.header['status'] : o.kind).to.equal('ok');
      const after = await sessionOf(server, up.localPort);
      expect(after.op).to.equal(null);
      expect(after.file).to.equal(null);
      expect(after.bytes).to.equal(0);
    });
  });

  describe('config', () => {
    it('lists every fts-server flag in --help order with its value in force and where it came from (flag, variable, default); a refused reload is said', async () => {
      const server = await startServer({ workers: 1, args: ['--max-upload-rate', '10M', '--ban-exempt', '10.0.0.0/8', '--proxy-protocol', '--proxy-from', '127.0.0.1'], env: { FTS_GRACE: '7', FTS_QUOTA: '' } });
      const asJson = await runAdmin(server.adminSocket, ['config', '--json']);
      expect(asJson.code, asJson.stderr).to.equal(0);
      const result = JSON.parse(asJson.stdout) as { settings: Array<{ name: string; env: string; value: string; from: string }>; filesAppliedAt: number; lastReloadSuccessful: boolean };
      const help = await new Promise<string>((resolve, reject) => {
        const p = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/server/main.js'), '--help'], { stdio: ['ignore', 'pipe', 'inherit'] });
        let text = '';
        p.stdout.on('data', (d: Buffer) => (text += d.toString()));
        p.on('error', reject);
        p.on('close', () => resolve(text));
      });
      const flagsInHelp = [...help.matchAll(/^ {2}--([a-z-]+)/gm)].map((m) => m[1]!).filter((f) => f !== 'help' && f !== 'version');
      expect(result.settings.map((x) => x.name), 'one setting per flag of --help, in its order').to.deep.equal(flagsInHelp);
      const setting = (name: string): { name: string; env: string; value: string; from: string } | undefined => result.settings.find((x) => x.name === name);
      expect(setting('max-upload-rate')).to.deep.equal({ name: 'max-upload-rate', env: 'FTS_MAX_UPLOAD_RATE', value: '10M', from: 'flag' });
      expect(setting('ban-exempt')).to.include({ value: '10.0.0.0/8', from: 'flag' });
      expect(setting('proxy-protocol')).to.deep.equal({ name: 'proxy-protocol', env: 'FTS_PROXY_PROTOCOL', value: 'on', from: 'flag' });
      expect(setting('grace')).to.deep.equal({ name: 'grace', env: 'FTS_GRACE', value: '7', from: 'env' });
      expect(setting('quota'), 'an empty variable is unset').to.deep.equal({ name: 'quota', env: 'FTS_QUOTA', value: 'off', from: 'default' });
      expect(setting('storage'), 'paths are the absolute ones in force').to.include({ value: server.storage, from: 'flag' });
      expect(setting('tls-cert')).to.include({ value: '', from: 'default' });
      expect(result.lastReloadSuccessful).to.equal(true);
      expect(result.filesAppliedAt).to.be.within(Date.now() - 120_000, Date.now());

      const text = await runAdmin(server.adminSocket, ['config']);
      expect(text.code, text.stderr).to.equal(0);
      const rows = lines(text.stdout);
      expect(rows[0]).to.match(/^SETTING\s+VALUE\s+FROM$/);
      const cells = (flag: string): string[] | undefined => rows.map((r) => r.split(/\s+/)).find((c) => c[0] === `--${flag}`);
      expect(cells('grace')).to.deep.equal(['--grace', '7', 'FTS_GRACE']);
      expect(cells('max-upload-rate')).to.deep.equal(['--max-upload-rate', '10M', 'flag']);
      expect(cells('tls-cert')).to.deep.equal(['--tls-cert', '-', 'default']);
      expect(rows.at(-1)).to.equal(`users and rules files in force since ${new Date(result.filesAppliedAt).toISOString()}`);

      await writeFile(server.usersFile, 'this line has no separator\n');
      expect((await runAdmin(server.adminSocket, ['reload'])).code).to.equal(1);
      const after = await runAdmin(server.adminSocket, ['config']);
      expect(lines(after.stdout).at(-1)).to.equal(`the last reload was refused: the users and rules files in force were read at ${new Date(result.filesAppliedAt).toISOString()}, and those on disk may differ`);
      expect(JSON.parse((await runAdmin(server.adminSocket, ['config', '--json'])).stdout)).to.include({ lastReloadSuccessful: false, filesAppliedAt: result.filesAppliedAt });
    });
  });

  describe('the admin log lines', () => {
    it('commands that change something are logged at info; queries (status, ready, sessions, config, bans, usage, partials) only at debug', async () => {
      // At debug level, so that the queries' lines are there to be told apart from the commands' ones.
      const server = await startServer({ workers: 1, args: ['--log-level', 'debug'] });
      const from = server.lines.length; // after startServer's own status queries
      for (const args of [['status'], ['ready'], ['sessions'], ['config'], ['bans'], ['usage'], ['partials']]) {
        const r = await runAdmin(server.adminSocket, args);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(0);
      }
      expect((await runAdmin(server.adminSocket, ['unban', '192.0.2.9'])).code, 'unban of an address with nothing').to.equal(1);
      expect((await runAdmin(server.adminSocket, ['reload'])).code).to.equal(0);
      const admin = (level: string): string[] => server.lines.slice(from).filter((l) => l['event'] === 'admin' && l['level'] === level).map((l) => String(l['cmd']));
      await waitUntil('the reload line', () => admin('info').includes('reload'), 5_000, 50);
      expect(admin('info')).to.deep.equal(['unban', 'reload']);
      // status (and ready's) at least twice: a line of startServer's own status may still be on its way.
      expect(admin('debug').filter((c) => c !== 'status')).to.deep.equal(['sessions', 'config', 'bans', 'usage', 'partials']);
      expect(admin('debug').filter((c) => c === 'status').length, 'status and ready').to.be.at.least(2);
    });
  });

  describe('reload', () => {
    it('picks up a new user without disturbing open sessions; a malformed file is refused and the old table kept', async () => {
      const server = await startServer({ workers: 2 });
      const existing = await login(server);
      const carol = { user: 'carol', password: 'carol pass: with spaces' };
      expect(await codeOf(login(server, carol.user, carol.password)), 'carol before the reload').to.equal('AUTH_FAILED');

      await writeFile(server.usersFile, [ALICE, BOB, carol].map((u) => `${u.user}:${u.password}\n`).join(''));
      const ok = await runAdmin(server.adminSocket, ['reload']);
      expect(ok.code, ok.stderr).to.equal(0);
      expect(ok.stdout).to.match(/users reloaded: 3 users/);
      // Every worker got the new table: log in several times (connections are spread over the workers).
      for (let i = 0; i < 4; i++) {
        const c = await login(server, carol.user, carol.password);
        await c.noop();
      }
      await existing.noop();
      await existing.uploadBuffer('still-open.txt', Buffer.from('yes\n'));
      expect((await existing.list()).map((e) => e.name)).to.deep.equal(['still-open.txt']);

      await writeFile(server.usersFile, `${ALICE.user}:${ALICE.password}\ndave:dave-pass\nthis line has no separator\n`);
      const bad = await runAdmin(server.adminSocket, ['reload']);
      expect(bad.code, `stdout: ${bad.stdout}`).to.equal(1);
      expect(bad.stderr).to.match(/^fts-admin: .*malformed/);
      expect(bad.stderr).to.include('line 3');
      expect(bad.stderr).to.include(server.usersFile);
      expect(bad.stderr, 'the malformed line is never echoed').to.not.include('this line has no separator');
      // Each failed login costs the address a growing delay (--ban-threshold scoring), so dave tries only
      // twice; the refused file was never sent to any worker, so every worker must refuse him.
      for (const round of [[ALICE, BOB, carol], [ALICE, BOB]]) {
        for (const u of round) await (await login(server, u.user, u.password)).noop();
        expect(await codeOf(login(server, 'dave', 'dave-pass')), 'dave from the refused file').to.equal('AUTH_FAILED');
      }
      await existing.noop();
    });

    it('a changed password ends that user\'s session tokens, on every worker; other users\' tokens keep working', async () => {
      const server = await startServer({ workers: 2 });
      const tokenOf = async (user: string, password: string): Promise<string> => (await login(server, user, password)).session!.token;
      const withToken = async (token: string): Promise<void> => {
        const c = await FtsClient.connect({ port: server.port });
        clients.push(c);
        await c.authToken(token);
      };
      const aliceOld = await tokenOf(ALICE.user, ALICE.password);
      const bobs = await tokenOf(BOB.user, BOB.password);
      const renewed = { user: ALICE.user, password: 'a new password for alice' };
      await writeFile(server.usersFile, [renewed, BOB].map((u) => `${u.user}:${u.password}\n`).join(''));
      const ok = await runAdmin(server.adminSocket, ['reload']);
      expect(ok.code, ok.stderr).to.equal(0);
      // Connections are spread over the workers: try each token several times.
      for (let i = 0; i < 4; i++) {
        expect(await codeOf(withToken(aliceOld)), `alice's token from before the change, try ${i}`).to.equal('AUTH_FAILED');
        await withToken(bobs);
      }
      const aliceNew = await tokenOf(renewed.user, renewed.password);
      for (let i = 0; i < 4; i++) await withToken(aliceNew);
      // The refused token was ours: its failures are audited with its user, not as an unknown one.
      const refused = await waitUntil('the audit lines of the refused token', () => {
        const lines = server.lines.filter((l) => l['event'] === 'auth' && l['result'] === 'failure' && l['mech'] === 'token');
        return lines.length >= 4 ? lines : undefined;
      });
      expect(refused.map((l) => l['user'])).to.deep.equal(Array(4).fill(ALICE.user));
      const forged = await FtsClient.connect({ port: server.port });
      clients.push(forged);
      expect(await codeOf(forged.authToken(`${aliceNew}x`))).to.equal('AUTH_FAILED');
      const last = await waitUntil('the forged token\'s audit line', () => {
        const lines = server.lines.filter((l) => l['event'] === 'auth' && l['result'] === 'failure' && l['mech'] === 'token');
        return lines.length >= 5 ? lines[4] : undefined;
      });
      expect(last['user'], 'a token that is not ours names nobody').to.equal(null);
    });

    it('a SCRAM login begun before a password change and finished after the reload, with the old password, is refused', async () => {
      const server = await startServer({ workers: 1 });
      const { client } = await RawClient.open(server.port);
      raws.push(client);
      const scram = new ScramClient(ALICE.user, ALICE.password);
      await client.send({ op: 'auth', id: 1, mech: 'scram-sha-256', data: scram.first });
      const serverFirst = await client.nextHeader();
      expect(serverFirst['status'], JSON.stringify(serverFirst)).to.equal('continue');
      const clientFinal = await scram.final(serverFirst['data'] as string);
      expect(clientFinal).to.be.a('string');

      await writeFile(server.usersFile, [{ user: ALICE.user, password: 'alice, changed' }, BOB].map((u) => `${u.user}:${u.password}\n`).join(''));
      const ok = await runAdmin(server.adminSocket, ['reload']);
      expect(ok.code, ok.stderr).to.equal(0);
      await client.send({ op: 'auth', id: 1, mech: 'scram-sha-256', data: clientFinal });
      const reply = await client.nextHeader(15_000);
      expect(reply, 'the old password, checked against the old table, no longer opens a session').to.include({ id: 1, status: 'error', code: 'AUTH_FAILED' });
      const kicked = await runAdmin(server.adminSocket, ['kick-user', ALICE.user]);
      expect(kicked.code, 'no session of alice was begun').to.equal(1);
      expect((await sessionsJson(server.adminSocket)).filter((s) => s.user === ALICE.user)).to.deep.equal([]);
    });

    it('judges the users file as a start does, and more strictly: a group-readable one is refused (old table kept), and so is one with no valid user (a start only warns)', async () => {
      const server = await startServer({ workers: 1 });
      const carol = { user: 'carol', password: 'carol-pass' };
      await writeFile(server.usersFile, [ALICE, BOB, carol].map((u) => `${u.user}:${u.password}\n`).join(''));
      await chmod(server.usersFile, 0o644);
      const insecure = await runAdmin(server.adminSocket, ['reload']);
      expect(insecure.code, insecure.stdout).to.equal(1);
      expect(insecure.stderr).to.match(/readable by group or others \(mode 644\)/);
      expect(insecure.stderr).to.include('--allow-insecure-users-file');
      expect(insecure.stderr).to.include('the old user table is kept');
      expect(await codeOf(login(server, carol.user, carol.password)), 'carol from the refused file').to.equal('AUTH_FAILED');

      await chmod(server.usersFile, 0o600);
      await writeFile(server.usersFile, '# nobody here\n');
      const empty = await runAdmin(server.adminSocket, ['reload']);
      expect([empty.code, empty.stdout, empty.stderr]).to.deep.equal([1, '', `fts-admin: ${server.usersFile} defines no valid user, so nobody could log in; the old user table is kept (to let nobody in, stop the server)\n`]);
      await login(server); // alice still logs in: the old table is in force
    });
  });

  describe('reload of a file that is not a regular file', () => {
    it('a FIFO (users file) or a device (a rules file) is refused at once, the old files kept, and the next reload works', async function () {
      this.timeout(60_000);
      const dir = await scratch('fts-reload-fifo-');
      const quotas = path.join(dir, 'quotas.txt');
      await writeFile(quotas, 'alice:1G\n');
      const server = await startServer({ workers: 1, args: ['--quota-file', quotas] });
      const good = await readFile(server.usersFile, 'utf8');
      await rm(server.usersFile);
      await new Promise<void>((resolve, reject) => spawn('mkfifo', ['-m', '600', server.usersFile]).once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mkfifo exit ${code}`)))).once('error', reject));
      const started = Date.now();
      const fifo = await runAdmin(server.adminSocket, ['reload']);
      expect([fifo.code, fifo.stderr]).to.deep.equal([1, `fts-admin: users file ${server.usersFile}: is not a regular file (a FIFO, socket or device); the old user table is kept\n`]);
      expect(Date.now() - started, 'answered at once, not blocked on the FIFO').to.be.below(5_000);
      await rm(server.usersFile);
      await writeFile(server.usersFile, good, { mode: 0o600 });

      await rm(quotas);
      await symlink('/dev/zero', quotas);
      const zero = await runAdmin(server.adminSocket, ['reload']);
      expect(zero.code, zero.stdout).to.equal(1);
      expect(zero.stderr).to.equal(`fts-admin: quota file ${quotas}: is not a regular file (a FIFO, socket or device); the old quotas, permissions, rates, networks and user table are kept\n`);
      await rm(quotas);
      await writeFile(quotas, 'alice:2G\n');
      const ok = await runAdmin(server.adminSocket, ['reload']);
      expect(ok.code, ok.stderr).to.equal(0);
      expect(ok.stdout).to.include('quotas reloaded: 1 users with their own quota\n');
    });
  });

  describe('passwd', () => {
    const FILE_PW = 'dave-pass-1';

    it('as root, reads and writes as the owner of the file\'s directory: a link that owner planted to a root-only file gets nothing; a new file is the owner\'s', async function () {
      if (process.geteuid?.() !== 0) this.skip(); // the attack needs root running passwd
      const dir = await scratch('fts-passwd-owner-');
      await chmod(dir, 0o711); // the service account may pass through, as through /etc
      const service = path.join(dir, 'service');
      await mkdir(service);
      const NOBODY = 65534;
      await chown(service, NOBODY, NOBODY);
      const secret = path.join(dir, 'root-only');
      await writeWithMode(secret, 'root:only\n', 0o600);
      await symlink(secret, path.join(service, 'users.txt'));
      const noServer = path.join(dir, 'none.sock');

      const attack = await runPasswd('carol', path.join(service, 'users.txt'), noServer, 'carol-pass\n');
      expect(attack.code, describeProc('passwd', attack)).to.equal(1);
      expect(attack.stderr).to.include('permission denied');
      expect(await readFile(secret, 'utf8'), 'the root-only file is untouched').to.equal('root:only\n');
      expect((await lstat(secret)).mode & 0o777).to.equal(0o600);
      expect((await readdir(dir)).sort(), 'nothing created beside it').to.deep.equal(['root-only', 'service']);

      const fresh = path.join(service, 'fresh.txt');
      const created = await runPasswd('carol', fresh, noServer, 'carol-pass\n');
      expect(created.code, describeProc('passwd', created)).to.equal(0);
      const st = await lstat(fresh);
      expect([st.uid, st.gid, st.mode & 0o777], 'owned by the directory\'s owner, so the service can read it').to.deep.equal([NOBODY, NOBODY, 0o600]);
      expect((await readFile(fresh, 'utf8')).startsWith('carol:SCRAM-SHA-256$')).to.equal(true);
    });

    it('as root, without --socket or FTS_ADMIN_SOCKET: exit 2, nothing written (root\'s default socket is not the service\'s)', async function () {
      if (process.geteuid?.() !== 0) this.skip();
      const dir = await scratch('fts-passwd-root-socket-');
      const r = await runAdminIn(dir, ['passwd', 'carol', '--users', path.join(dir, 'users.txt')], 'carol-pass\n');
      expect(r.code, describeProc('passwd', r)).to.equal(2);
      expect(r.stderr).to.include("as root, name the service's admin socket");
      expect(await readdir(dir)).to.deep.equal([]);
    });

    it('Ctrl+C or Ctrl+D at the password prompt (a terminal, through script(1)): exit 130, one line, nothing written', async () => {
      const dir = await scratch('fts-passwd-cancel-');
      const file = path.join(dir, 'users.txt');
      await writeWithMode(file, 'bob:old\n', 0o600);
      for (const key of ['\u0003', '\u0004']) {
        const command = [process.execPath, ADMIN_CLI, '--socket', path.join(dir, 'no-server.sock'), 'passwd', 'bob', '--users', file].map((a) => `'${a}'`).join(' ');
        const child = spawn('script', ['-qefc', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
        const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
        try {
          await waitUntil('the prompt', () => output.includes('New password for bob: '), 15_000);
          child.stdin.write(key);
          const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
          expect(code, `${JSON.stringify(key)}: ${JSON.stringify(output)}`).to.equal(130);
        } finally {
          child.stdin.end();
          if (child.exitCode === null) child.kill('SIGKILL');
        }
        expect(output, JSON.stringify(key)).to.include('fts-admin: password entry cancelled; nothing changed');
        expect(output, 'no stack trace').to.not.include('    at ');
        expect(await readFile(file, 'utf8')).to.equal('bob:old\n');
      }
    });

    it('refuses a users file that is not UTF-8 (a rewrite would change another password for good): exit 1, the line named, the file unchanged', async () => {
      const dir = await scratch('fts-passwd-latin1-');
      const file = path.join(dir, 'users.txt');
      const original = Buffer.concat([Buffer.from('bob:fine\n'), Buffer.from('alice:p\xe4ss\n', 'latin1')]);
      await writeWithMode(file, original, 0o600);
      const r = await runPasswd('carol', file, path.join(dir, 'no-server.sock'), 'carol-pass\n');
      expect(r.code, describeProc('passwd', r)).to.equal(1);
      expect(r.stderr).to.include(`${file}: line 2 is not valid UTF-8; nothing was written`);
      expect(await readFile(file)).to.deep.equal(original);
      expect(await readdir(dir), 'no temporary or lock file left').to.deep.equal(['users.txt']);
    });

    it('on another file than the running server reads: exit 1 naming both files and --users, nothing written; on the server\'s file: reloaded', async () => {
      // Changed deliberately: this run used to write the other file and only then say the server did not know it.
      const server = await startServer({ workers: 1 });
      const dir = await scratch('fts-admin-passwd-');
      const other = path.join(dir, 'id_passwd.txt');
      await writeWithMode(other, `${ALICE.user}:${ALICE.password}\n`, 0o600);
      const before = await snapshot(other);
      const wrong = await runPasswd('dave', other, server.adminSocket, `${FILE_PW}\n`);
      expect(wrong.code, describeProc('passwd', wrong)).to.equal(1);
      expect(wrong.stdout, 'nothing is reported written').to.equal('');
      expect(wrong.stderr).to.include(`the running server reads its users from ${server.usersFile}, not ${other}`);
      expect(wrong.stderr).to.include('nothing was written');
      expect(wrong.stderr).to.include(`--users ${server.usersFile}`);
      const after = await snapshot(other);
      expect(after.bytes.equals(before.bytes), 'the other file is unchanged').to.equal(true);
      expect(after.ino, 'not rewritten').to.equal(before.ino);
      expect(await readdir(dir), 'no temporary or lock file').to.deep.equal(['id_passwd.txt']);
      expect(await codeOf(login(server, 'dave', FILE_PW))).to.equal('AUTH_FAILED');

      const right = await runPasswd('dave', server.usersFile, server.adminSocket, `${FILE_PW}\n`);
      expect(right.code, describeProc('passwd', right)).to.equal(0);
      expect(right.stdout).to.match(/server reloaded: 3 users/);
      await (await login(server, 'dave', FILE_PW)).noop();
    });

    it('regression (fixed): with no ./id_passwd.txt and the server reading another file, passwd created ./id_passwd.txt before saying so', async () => {
      const server = await startServer({ workers: 1 });
      const cwd = await scratch('fts-admin-cwd-');
      const target = path.join(await realpath(cwd), 'id_passwd.txt');
      // The socket given with --socket, then through FTS_ADMIN_SOCKET; FTS_USERS unset both times.
      const runs: Array<{ how: string; args: string[]; env: NodeJS.ProcessEnv }> = [
        { how: '--socket', args: ['--socket', server.adminSocket], env: {} },
        { how: 'FTS_ADMIN_SOCKET', args: [], env: { FTS_ADMIN_SOCKET: server.adminSocket } },
      ];
      for (const { how, args, env } of runs) {
        const r = await runAdminIn(cwd, ['passwd', 'carol', ...args], 'x\n', env);
        expect(r.code, describeProc(`passwd (${how})`, r)).to.equal(1);
        expect(r.stdout, how).to.equal('');
        expect(r.stderr, how).to.include(`the running server reads its users from ${server.usersFile}, not ${target}; nothing was written`);
        expect(r.stderr, how).to.include(`--users ${server.usersFile}`);
        expect(await readdir(cwd), `${how}: no users file created, no temporary or lock file`).to.deep.equal([]);
      }
    });

    it('the server\'s file under another name (the link it reads through, its target, a relative path) is its file: written through the link, reloaded', async () => {
      const dir = await scratch('fts-admin-links-');
      const real = path.join(dir, 'users.txt');
      const link = path.join(dir, 'users-link.txt');
      await writeWithMode(real, `${ALICE.user}:${ALICE.password}\n`, 0o600);
      await symlink(real, link);
      const server = await startServer({ workers: 1, users: [ALICE], args: ['--users', link] });
      const runs = [
        { user: 'dave', run: () => runPasswd('dave', real, server.adminSocket, `${FILE_PW}\n`) },
        { user: 'erin', run: () => runPasswd('erin', link, server.adminSocket, `${FILE_PW}\n`) },
        { user: 'frank', run: () => runAdminIn(dir, ['passwd', 'frank', '--users', 'users.txt', '--socket', server.adminSocket], `${FILE_PW}\n`) },
      ];
      for (const [i, { user, run }] of runs.entries()) {
        const r = await run();
        expect(r.code, describeProc(`passwd ${user}`, r)).to.equal(0);
        expect(r.stdout).to.match(new RegExp(`added ${user} in .*\\nserver reloaded: ${i + 2} users\\n$`));
        expect((await lstat(link)).isSymbolicLink(), `${user}: the link is still a link`).to.equal(true);
        await (await login(server, user, FILE_PW)).noop();
      }
      expect(await modeOf(real)).to.equal(0o600);
      expect((await readdir(dir)).sort(), 'no temporary or lock file').to.deep.equal(['users-link.txt', 'users.txt']);
    });

    it('a missing users file that the running server reads is created (mode 600) and reloaded', async () => {
      const server = await startServer({ workers: 1 });
      await rm(server.usersFile);
      const r = await runPasswd('carol', server.usersFile, server.adminSocket, `${FILE_PW}\n`);
      expect(r.code, describeProc('passwd', r)).to.equal(0);
      expect(lines(r.stdout)).to.deep.equal([`created ${server.usersFile} with carol (SCRAM-SHA-256 verifier)`, 'server reloaded: 1 users']);
      expect(await modeOf(server.usersFile)).to.equal(0o600);
      await (await login(server, 'carol', FILE_PW)).noop();
      expect(await codeOf(login(server)), 'alice went with the old file').to.equal('AUTH_FAILED');
    });

    it('no server at the socket: a missing users file is created (mode 600), and the message names the socket tried', async () => {
      const dir = await scratch('fts-admin-first-');
      const socket = path.join(dir, 'none.sock');
      const target = path.join(await realpath(dir), 'id_passwd.txt');
      const r = await runAdminIn(dir, ['passwd', 'carol', '--socket', socket], `${FILE_PW}\n`);
      expect(r.code, describeProc('passwd', r)).to.equal(0);
      expect(lines(r.stdout)).to.deep.equal([
        `created ${target} with carol (SCRAM-SHA-256 verifier)`,
        `no server running at ${socket}; the change applies at its next start`,
      ]);
      expect(r.stderr).to.equal('');
      expect(await modeOf(target)).to.equal(0o600);
      const parsed = parseUsers(await readFile(target, 'utf8'));
      expect(parsed.problems).to.deep.equal([]);
      expect(await parsed.users.verify('carol', FILE_PW, Buffer.alloc(32))).to.equal(true);
      expect(await readdir(dir), 'no temporary or lock file').to.deep.equal(['id_passwd.txt']);
    });

    it('a server that does not say which users file it reads (older), or fails to answer status: exit 1, nothing written', async () => {
      const dir = await scratch('fts-admin-unknown-');
      const file = path.join(dir, 'users.txt');
      await writeWithMode(file, `${ALICE.user}:${ALICE.password}\n`, 0o600);
      const before = await snapshot(file);
      const olderStatus = { pid: 1, port: 5421, metricsPort: null, draining: false, uptimeSeconds: 1, version: '0.0.1', workers: [], connections: 0, sessions: 0, transfers: 0, workerRestarts: 0 };
      const cases = [
        { reply: { ok: true, result: olderStatus }, says: /does not say which users file it reads .*; nothing changed/ },
        { reply: { ok: false, error: 'broken on purpose' }, says: /broken on purpose; cannot tell which users file the server reads, so nothing changed/ },
      ];
      for (const [i, { reply, says }] of cases.entries()) {
        const socket = path.join(dir, `fake-${i}.sock`);
        const fake = await FakeAdminSocket.listen(socket, () => reply);
        cleanups.push(() => fake.close());
        const r = await runPasswd('dave', file, socket, `${FILE_PW}\n`);
        expect(r.code, describeProc('passwd', r)).to.equal(1);
        expect(r.stdout).to.equal('');
        expect(r.stderr).to.match(says);
        expect(fake.requests, 'only status was asked').to.deep.equal([{ cmd: 'status' }]);
      }
      const after = await snapshot(file);
      expect(after.bytes.equals(before.bytes)).to.equal(true);
      expect(after.ino, 'not rewritten').to.equal(before.ino);
    });
  });

  describe('--version', () => {
    it('prints "fts-admin <package version>" and exits 0 without contacting the server, wherever the flag is', async () => {
      const dir = await scratch('fts-admin-version-');
      const socket = path.join(dir, 'admin.sock');
      const fake = await FakeAdminSocket.listen(socket, () => ({ ok: true, result: {} }));
      cleanups.push(() => fake.close());
      const { version } = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
      const runs: Array<[string | null, string[]]> = [
        [socket, ['--version']],
        [socket, ['status', '--version']],
        [socket, ['--version', 'drain']],
        // Like --help, not held up by a socket path fts-admin would refuse.
        [`/${'x'.repeat(200)}`, ['--version']],
      ];
      for (const [sock, args] of runs) {
        const r = await runAdmin(sock, args);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(0);
        expect(r.stdout, args.join(' ')).to.equal(`fts-admin ${version}\n`);
        expect(r.stderr, args.join(' ')).to.equal('');
      }
      expect(fake.connections, 'no connection to the admin socket').to.equal(0);
    });

    it('malformed options get one line of our own each (exit 2), without contacting the server', async () => {
      const dir = await scratch('fts-admin-options-');
      const socket = path.join(dir, 'admin.sock');
      const fake = await FakeAdminSocket.listen(socket, () => ({ ok: true, result: {} }));
      cleanups.push(() => fake.close());
      const cases: Array<[string[], string]> = [
        [['--bogus', 'status'], "fts-admin: unknown option '--bogus' (see 'fts-admin --help')\n"],
        [['drain', '--timeout'], "fts-admin: option '--timeout' needs a value (see 'fts-admin --help')\n"],
        [['status', '--json=yes'], "fts-admin: option '--json' takes no value (see 'fts-admin --help')\n"],
        [['status', '--points'], "fts-admin: status does not take --points (see 'fts-admin --help')\n"],
      ];
      for (const [args, message] of cases) {
        const r = await runAdmin(socket, args);
        expect(r.code, args.join(' ')).to.equal(2);
        expect(r.stderr, args.join(' ')).to.equal(message);
      }
      expect(fake.connections).to.equal(0);
    });
  });

  describe('ready', () => {
    it('exits 0 with the port on a running server; waits with --timeout for a server not started yet; exit 3 without one', async () => {
      const dir = await scratch('fts-admin-ready-');
      const none = await runAdmin(path.join(dir, 'none.sock'), ['ready']);
      expect(none.code, none.stderr).to.equal(3);
      expect(none.stdout).to.equal('');
      expect(none.stderr).to.match(/^fts-admin: no fts-server is running at .*none\.sock \(no such socket\)\n$/);
      const t0 = Date.now();
      const late = await runAdmin(path.join(dir, 'none.sock'), ['ready', '--timeout', '1']);
      expect(late.code, late.stderr).to.equal(3);
      expect(Date.now() - t0, 'it waited for the timeout').to.be.at.least(900);

      const server = await startServer({ workers: 2 });
      const r = await runAdmin(server.adminSocket, ['ready']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal(`ready: listening on port ${server.port}\n`);
      expect(r.stderr).to.equal('');

      // A server whose socket appears later (a service manager runs ready right after starting it).
      const socket = path.join(dir, 'later.sock');
      const waiting = startAdmin(socket, ['ready', '--timeout', '20']);
      admins.push(waiting);
      await sleep(700);
      expect(waiting.exited, 'still waiting for a server').to.equal(false);
      const starting: WorkerStatusJson = { pid: 2, connections: 0, sessions: 0, transfers: 0, responding: false, starting: true };
      const status = { pid: 1, port: null as number | null, metricsPort: null, draining: false, uptimeSeconds: 0, version: '0.0.1', workers: [starting], connections: 0, sessions: 0, transfers: 0, workerRestarts: 0 };
      const fake = await FakeAdminSocket.listen(socket, () => ({ ok: true, result: status }));
      cleanups.push(() => fake.close());
      await waitUntil('ready asked the server', () => fake.requests.length >= 2, 10_000);
      expect(waiting.exited, 'not ready while the workers do not all listen (port null)').to.equal(false);
      status.port = 5421; // announced, but its one worker (respawned, say) does not listen yet
      const asked = fake.requests.length;
      await waitUntil('ready asked again', () => fake.requests.length >= asked + 2, 10_000);
      expect(waiting.exited, 'not ready while no worker listens').to.equal(false);
      status.workers = [{ pid: 2, connections: 0, sessions: 0, transfers: 0, responding: true }] as WorkerStatusJson[];
      const done = await waiting.done;
      expect(done.code, done.stderr).to.equal(0);
      expect(done.stdout).to.equal('ready: listening on port 5421\n');
      expect(fake.requests.every((q) => JSON.stringify(q) === '{"cmd":"status"}')).to.equal(true);
    });

    it('a server still starting: exit 1 at once without --timeout, after it with one; a draining server: exit 1 at once', async () => {
      const dir = await scratch('fts-admin-ready-');
      const socket = path.join(dir, 'admin.sock');
      const status = { pid: 7, port: null, metricsPort: null, draining: false, uptimeSeconds: 0, version: '0.0.1', workers: [], connections: 0, sessions: 0, transfers: 0, workerRestarts: 0 };
      const fake = await FakeAdminSocket.listen(socket, () => ({ ok: true, result: status }));
      cleanups.push(() => fake.close());
      const once = await runAdmin(socket, ['ready']);
      expect(once.code).to.equal(1);
      expect(once.stdout).to.equal('');
      expect(once.stderr).to.equal('fts-admin: not ready: the server (pid 7) is starting; its workers do not all listen yet\n');
      const t0 = Date.now();
      const waited = await runAdmin(socket, ['ready', '--timeout', '1']);
      expect(waited.code).to.equal(1);
      expect(waited.stderr).to.equal(once.stderr);
      expect(Date.now() - t0).to.be.at.least(900);

      const server = await startServer({ workers: 1, args: ['--grace', '60'] });
      await uploadInFlight(server, 'ready-drain.bin');
      server.signal('SIGTERM'); // a drain with 60 s of grace, held by the upload
      await waitUntil('the drain', async () => server.lines.some((l) => l.msg === 'drain started'));
      const t1 = Date.now();
      const draining = await runAdmin(server.adminSocket, ['ready', '--timeout', '30']);
      expect(draining.code).to.equal(1);
      expect(draining.stderr).to.equal('fts-admin: not ready: the server is draining\n');
      expect(Date.now() - t1, 'a drain ends the wait at once').to.be.below(10_000);
    });

    it('takes no argument and no flag but --timeout (exit 2, nothing sent)', async () => {
      const dir = await scratch('fts-admin-ready-');
      const socket = path.join(dir, 'admin.sock');
      const fake = await FakeAdminSocket.listen(socket, () => ({ ok: true, result: {} }));
      cleanups.push(() => fake.close());
      for (const [args, message] of [
        [['ready', 'now'], "fts-admin: ready: unexpected argument 'now' (see 'fts-admin --help')\n"],
        [['ready', '--json'], "fts-admin: ready does not take --json (see 'fts-admin --help')\n"],
        [['ready', '--timeout', '1.5'], "fts-admin: --timeout must be a whole number of seconds, got '1.5' (see 'fts-admin --help')\n"],
      ] as const) {
        const r = await runAdmin(socket, [...args]);
        expect(r.code, args.join(' ')).to.equal(2);
        expect(r.stderr, args.join(' ')).to.equal(message);
      }
      expect(fake.connections).to.equal(0);
    });
  });

  describe('bans --points', () => {
    it('asks for the points and prints them; a server that lists no points (older) is an error, not an empty table', async () => {
      const dir = await scratch('fts-admin-points-');
      const socket = path.join(dir, 'admin.sock');
      let scored = true;
      const fake = await FakeAdminSocket.listen(socket, () => ({
        ok: true,
        result: scored
          ? [{ address: '10.1.2.3', secondsLeft: 75, points: 0 }, { address: '2001:db8::7', secondsLeft: 0, points: 12 }]
          : [{ address: '10.1.2.3', secondsLeft: 75 }],
      }));
      cleanups.push(() => fake.close());
      const text = await runAdmin(socket, ['bans', '--points']);
      expect([text.code, text.stderr]).to.deep.equal([0, '']);
      expect(text.stdout.split('\n').map((l) => l.trim().split(/\s+/))).to.deep.equal([['ADDRESS', 'LEFT', 'POINTS'], ['10.1.2.3', '1m15s', '0'], ['2001:db8::7', '-', '12'], ['']]);
      const json = await runAdmin(socket, ['bans', '--json', '--points']);
      expect(json.code, json.stderr).to.equal(0);
      expect(JSON.parse(json.stdout)).to.deep.equal([{ address: '10.1.2.3', secondsLeft: 75, points: 0 }, { address: '2001:db8::7', secondsLeft: 0, points: 12 }]);
      expect(fake.requests).to.deep.equal([{ cmd: 'bans', points: true }, { cmd: 'bans', points: true }]);
      scored = false;
      const older = await runAdmin(socket, ['bans', '--points']);
      expect([older.code, older.stdout, older.stderr]).to.deep.equal([1, '', 'fts-admin: the server does not report penalty points (it is older than this fts-admin)\n']);
    });
  });

  describe('kick', () => {
    it('ends the kicked session (bye KICKED) and leaves the others alone; an unknown id exits 1', async () => {
      const server = await startServer({ workers: 2 });
      const victim = await rawLogin(server);
      const bystander = await login(server, BOB.user, BOB.password);
      const info = await sessionOf(server, victim.localPort);

      const r = await runAdmin(server.adminSocket, ['kick', info.id]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include(info.id);
      const h = await victim.nextHeaderOrNull(5_000);
      if (h !== null) {
        expect(h['status'], JSON.stringify(h)).to.equal('bye');
        expect(h['code']).to.equal('KICKED');
      }
      await victim.expectClosed(5_000);
      await waitUntil('the kicked session to leave the list', async () => !(await sessionsJson(server.adminSocket)).some((s) => s.id === info.id), 5_000, 100);
      // The log says who kicked what: the admin line names the session, the worker's line its user.
      expect(server.lines.filter((l) => l['event'] === 'admin' && l['cmd'] === 'kick').map((l) => l['session'])).to.deep.equal([info.id]);
      expect(server.lines.filter((l) => l['event'] === 'kick').map((l) => [l['session'], l['user']])).to.deep.equal([[info.id, ALICE.user]]);

      await bystander.noop();
      await bystander.uploadBuffer('after-kick.txt', Buffer.from('fine\n'));
      expect((await bystander.downloadBuffer('after-kick.txt')).data.toString()).to.equal('fine\n');

      const unknown = await runAdmin(server.adminSocket, ['kick', 'ffffffffffff']);
      expect(unknown.code, unknown.stdout).to.equal(1);
      expect(unknown.stderr).to.match(/^fts-admin: .*no session ffffffffffff/);
      // With every worker answering, the refusal carries its code (kick-user tells a session gone by it).
      expect(await adminRequest(server.adminSocket, { cmd: 'kick', session: 'ffffffffffff' })).to.deep.equal({ ok: false, error: 'no session ffffffffffff', code: 'NO_SESSION' });
      const invalid = await runAdmin(server.adminSocket, ['kick', 'not-hex!']);
      expect(invalid.code, 'a malformed id is a usage error').to.equal(2);
      await bystander.noop();
    });
  });

  describe('kick-user', () => {
    it('ends every session of one user (whichever worker holds it) and no other; none left exits 1; a bad name exits 2', async () => {
      const server = await startServer({ workers: 2 });
      const victims: RawClient[] = [];
      for (let i = 0; i < 4; i++) victims.push(await rawLogin(server));
      const bystander = await login(server, BOB.user, BOB.password);
      const ids = new Set<string>();
      for (const v of victims) ids.add((await sessionOf(server, v.localPort)).id);

      const r = await runAdmin(server.adminSocket, ['kick-user', ALICE.user]);
      expect(r.code, r.stderr).to.equal(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(new Set(lines.slice(0, -1))).to.deep.equal(new Set([...ids].map((id) => `session ${id} ended`)));
      expect(lines.at(-1)).to.equal(`4 sessions of ${ALICE.user} ended`);
      for (const v of victims) await v.expectClosed(5_000);
      await bystander.noop();
      await waitUntil('alice\'s sessions to leave the list', async () => !(await sessionsJson(server.adminSocket)).some((s) => s.user === ALICE.user), 5_000, 100);

      const none = await runAdmin(server.adminSocket, ['kick-user', ALICE.user]);
      expect([none.code, none.stdout, none.stderr]).to.deep.equal([1, '', `fts-admin: no session of user ${ALICE.user}\n`]);
      const bad = await runAdmin(server.adminSocket, ['kick-user', '../alice']);
      expect(bad.code).to.equal(2);
      expect(bad.stderr).to.match(/^fts-admin: invalid username '\.\.\/alice'/);
      await bystander.noop();
    });
  });

  describe('kick-user against a server whose sessions change under it (fake admin socket)', () => {
    const listed = ['a1', 'b2', 'c3'].map((id, i) => ({ id, user: ALICE.user, remote: `127.0.0.1:${40_000 + i}`, worker: 1, op: null, file: null, bytes: 0, since: new Date().toISOString() }));

    it('a session gone before its kick (NO_SESSION) is not an error and is not counted', async () => {
      const socket = path.join(await scratch('fts-admin-kick-user-'), 'admin.sock');
      const fake = await FakeAdminSocket.listen(socket, (req) => {
        const r = req as { cmd: string; session?: string };
        if (r.cmd === 'sessions') return { ok: true, result: listed };
        return r.session === 'b2' ? { ok: false, error: 'no session b2', code: 'NO_SESSION' } : { ok: true };
      });
      cleanups.push(() => fake.close());
      const r = await runAdmin(socket, ['kick-user', ALICE.user]);
      expect([r.code, r.stdout, r.stderr]).to.deep.equal([0, `session a1 ended\nsession c3 ended\n2 sessions of ${ALICE.user} ended\n`, '']);
    });

    it('a session that a silent worker may still hold fails the command (exit 1), saying so', async () => {
      const socket = path.join(await scratch('fts-admin-kick-user-'), 'admin.sock');
      const fake = await FakeAdminSocket.listen(socket, (req) => {
        const r = req as { cmd: string; session?: string };
        if (r.cmd === 'sessions') return { ok: true, result: listed };
        return r.session === 'b2' ? { ok: false, error: 'no session b2 found; worker 7 did not answer and may hold it' } : { ok: true };
      });
      cleanups.push(() => fake.close());
      const r = await runAdmin(socket, ['kick-user', ALICE.user]);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stdout).to.equal('session a1 ended\n');
      expect(r.stderr).to.equal('fts-admin: no session b2 found; worker 7 did not answer and may hold it\n');
    });
  });

  describe('kick and reconnecting clients', () => {
    it('a ResilientClient does not reconnect after its session is kicked: that call and later ones fail with KICKED', async () => {
      const server = await startServer({ workers: 2 });
      const client = await ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 5, initialDelayMs: 10 } });
      cleanups.push(async () => client.close());
      expect(await client.list()).to.deep.equal([]);
      const [info] = await sessionsJson(server.adminSocket);
      expect(info, 'the one session').to.not.equal(undefined);
      const r = await runAdmin(server.adminSocket, ['kick', info!.id]);
      expect(r.code, r.stderr).to.equal(0);
      // The idle client reads the bye; its next call finds the connection gone.
      await waitUntil('the kicked connection to close', () => !client.connected, 5_000, 20);
      expect(await codeOf(client.list())).to.equal('KICKED');
      expect(await codeOf(client.view('kick-me.txt'))).to.equal('KICKED');
      expect(client.reconnects, 'no new connection').to.equal(0);
      await sleep(200);
      expect(await sessionsJson(server.adminSocket), 'no session came back').to.deep.equal([]);
    });
  });

  describe('kick and a call waiting to reconnect', () => {
    it('a call asleep in its reconnection backoff while another call\'s new connection is kicked fails with KICKED too, as do later ones', async function () {
      const server = await startServer({ workers: 1 });
      const proxy = await FaultProxy.start(server.port);
      cleanups.push(() => proxy.close());
      const client = await ResilientClient.connect({ port: proxy.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 5, initialDelayMs: 5_000, maxDelayMs: 10_000 } });
      cleanups.push(async () => client.close());
      // The network fails, and reconnecting fails for a while: call A goes to sleep in its backoff (~10 s).
      proxy.retarget(await freePort());
      proxy.dropAll();
      await waitUntil('the dropped connection to be noticed', () => !client.connected, 5_000, 20);
      const a = codeOf(client.list());
      await sleep(500);
      // The network is back: call B reconnects at once, and an administrator kicks that new session.
      proxy.retarget(server.port);
      expect(await client.list()).to.deep.equal([]);
      expect(client.reconnects).to.equal(1);
      const [session] = await sessionsJson(server.adminSocket);
      expect((await runAdmin(server.adminSocket, ['kick', session!.id])).code).to.equal(0);
      await waitUntil('the kicked connection to close', () => !client.connected, 5_000, 20);
      expect(await a, 'call A, woken after the kick').to.equal('KICKED');
      expect(await codeOf(client.list()), 'a later call').to.equal('KICKED');
      expect(client.reconnects, 'no connection after the kick').to.equal(1);
      expect(await sessionsJson(server.adminSocket)).to.deep.equal([]);
    });
  });

  describe('restart-workers', () => {
    it('replaces every worker while 4 clients keep working: no failed operation, all pids change', async () => {
      const server = await startServer({ workers: 2 });
      const before = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);
      expect(before).to.have.length(2);

      let stop = false;
      let restarting = false;
      const loops = Array.from({ length: 4 }, (_, k) => clientLoop(server, k, () => stop, () => restarting));
      await sleep(300);
      restarting = true;
      const admin = startAdmin(server.adminSocket, ['restart-workers'], 50_000);
      admins.push(admin);
      const r = await admin.done;
      restarting = false;
      await sleep(300);
      stop = true;
      const results = await Promise.all(loops);

      expect(r.code, `restart-workers: ${r.stderr}`).to.equal(0);
      expect(lines(r.stdout).filter((l) => /^worker \d+ replaced by \d+$/.test(l)), r.stdout).to.have.length(2);
      expect(r.stdout).to.include('all workers restarted');
      const failures = results.flatMap((x) => x.failures);
      expect(failures, 'failed operations').to.deep.equal([]);
      for (const x of results) expect(x.ops, 'operations per client').to.be.at.least(3);
      expect(results.reduce((n, x) => n + x.opsDuringRestart, 0), 'operations completed during the restart').to.be.at.least(1);

      const after = await statusJson(server.adminSocket);
      expect(after.workers).to.have.length(2);
      for (const w of after.workers) {
        expect(before, 'new worker pids').to.not.include(w.pid);
        expect(w.responding).to.equal(true);
      }
      expect(server.lines.some((l) => l.msg === 'worker died; restarting'), 'no worker crashed').to.equal(false);
    });

    it('a worker busy for longer than fts-admin waits for a reply (15 s) is still restarted: exit 0; a second restart meanwhile is refused', async function () {
      this.timeout(90_000);
      const server = await startServer({ workers: 1 });
      const up = await uploadInFlight(server, 'long-restart.bin');
      const admin = startAdmin(server.adminSocket, ['restart-workers'], 60_000);
      admins.push(admin);
      await waitUntil('the old worker draining', async () => server.lines.some((l) => l.msg === 'draining'));
      const second = await runAdmin(server.adminSocket, ['restart-workers'], 15_000);
      expect(second.code, second.stderr).to.equal(1);
      expect(second.stderr).to.contain('a rolling restart is already running');
      await sleep(17_000); // past fts-admin's 15 s: only the server's 'replacing' events keep it waiting
      up.finish();
      const r = await admin.done;
      expect(r.code, `restart-workers: ${r.stderr}`).to.equal(0);
      expect(lines(r.stdout).filter((l) => /^worker \d+ replaced by \d+$/.test(l)), r.stdout).to.have.length(1);
      const o = await up.outcome(10_000);
      expect(o.kind === 'reply' ? o.header['status'] : o.kind, 'the upload finished on the old worker').to.equal('ok');
    });

    /**
     * One client doing small verified operations in a loop. A session ended by its worker's drain (bye or
     * error SHUTTING_DOWN: "reconnect later", docs/PROTOCOL.md §7) is reconnected and the operation retried,
     * as the protocol asks; any other error, or SHUTTING_DOWN three times in a row, is a failed operation.
     */
    async function clientLoop(server: TestServer, k: number, stopped: () => boolean, restarting: () => boolean): Promise<{ ops: number; opsDuringRestart: number; retries: number; failures: string[] }> {
      const failures: string[] = [];
      let retries = 0;
      let ops = 0;
      let opsDuringRestart = 0;
      let client: FtsClient | null = null;
      for (let i = 0; i < 2_000 && !stopped(); i++) {
        const name = `loop-${k}-${i % 3}.txt`;
        const data = Buffer.from(`client ${k} iteration ${i}\n`);
        for (let attempt = 1; ; attempt++) {
          try {
            if (client === null || !client.connected) {
              client?.close();
              client = null;
              client = await login(server);
            }
            await client.uploadBuffer(name, data);
            const back = await client.downloadBuffer(name);
            if (!back.data.equals(data)) throw new Error(`downloaded ${name} differs from what was uploaded`);
            await client.noop();
            ops++;
            if (restarting()) opsDuringRestart++;
            break;
          } catch (err) {
            const code = err instanceof FtsError ? err.code : null;
            client?.close();
            client = null;
            if (code === 'SHUTTING_DOWN' && attempt < 3) {
              retries++;
              continue;
            }
            failures.push(`client ${k} op ${i} attempt ${attempt}: ${code ?? ''} ${err instanceof Error ? err.message : String(err)}`);
            break;
          }
        }
      }
      client?.close();
      return { ops, opsDuringRestart, retries, failures };
    }
  });

  describe('drain', () => {
    it('prints progress, exits 0 once the server is gone; server exit 0 and admin socket removed', async () => {
      const server = await startServer({ workers: 2 });
      const up = await uploadInFlight(server, 'during-drain.bin');

      const admin = startAdmin(server.adminSocket, ['drain'], 50_000);
      admins.push(admin);
      await waitUntil('a drain progress line', () => /^draining: /m.test(admin.stdout), 10_000);
      expect(admin.exited, 'fts-admin drain waits while the upload runs').to.equal(false);
      // (A worker slow to answer on a loaded machine is reported with zero counts; wait for a full answer.)
      const st = await waitUntil('status during the drain', async () => {
        const s = await statusJson(server.adminSocket);
        return s.workers.every((w) => w.responding) ? s : undefined;
      });
      expect(st.draining).to.equal(true);
      expect(st.transfers).to.equal(1);

      up.finish();
      const o = await up.outcome(20_000);
      expect(o.kind === 'reply' ? o.header['status'] : o.kind).to.equal('ok');
      const r = await admin.done;
      expect(r.code, `fts-admin drain: ${r.stderr}`).to.equal(0);
      const out = lines(r.stdout);
      expect(out.filter((l) => /^draining: \d+ sessions, \d+ transfers, \d+ workers, \d+s left$/.test(l)).length, r.stdout).to.be.at.least(1);
      expect(out[out.length - 1]).to.equal('server stopped');
      expect(await server.waitForExit(10_000)).to.deep.equal({ code: 0, signal: null });
      expect(await exists(server.adminSocket), 'admin socket removed').to.equal(false);
      expect(await publishedSha256(server.storage, ALICE.user, 'during-drain.bin')).to.equal(up.sha256);
    });

    it('drain --timeout 1 during a drain that has longer to go (--grace 60) brings its deadline forward', async () => {
      const server = await startServer({ workers: 1, args: ['--grace', '60'] });
      await uploadInFlight(server, 'stuck-longer.bin');
      server.signal('SIGTERM'); // a drain with 60 s of grace
      await waitUntil('the drain', async () => server.lines.some((l) => l.msg === 'drain started'));
      const t0 = Date.now();
      const r = await runAdmin(server.adminSocket, ['drain', '--timeout', '1'], 30_000);
      expect(r.code, r.stderr).to.equal(0);
      expect(Date.now() - t0, 'ms until the drain ended').to.be.below(11_000);
      expect(await server.waitForExit(10_000)).to.deep.equal({ code: 0, signal: null });
      expect(await exists(path.join(server.storage, ALICE.user, 'stuck-longer.bin'))).to.equal(false);
    });

    it('drain --timeout 1 cuts a stuck upload: fts-admin and the server exit 0 within seconds', async () => {
      const server = await startServer({ workers: 1 });
      const up = await uploadInFlight(server, 'stuck.bin');
      const t0 = Date.now();
      const r = await runAdmin(server.adminSocket, ['drain', '--timeout', '1'], 30_000);
      expect(r.code, r.stderr).to.equal(0);
      expect(Date.now() - t0).to.be.below(11_000);
      expect(await server.waitForExit(10_000)).to.deep.equal({ code: 0, signal: null });
      const o = await up.outcome(5_000);
      expect(o.kind === 'reply' && o.header['status'] === 'ok', 'the stuck upload did not succeed').to.equal(false);
      expect(await exists(path.join(server.storage, ALICE.user, 'stuck.bin'))).to.equal(false);
    });
  });

  describe('a worker that does not answer', () => {
    it('sessions lists the others and says which worker was silent; kick says it may hold the session', async function () {
      const server = await startServer({ workers: 2 });
      await waitWorkersReady(server.adminSocket, 2);
      const [silent] = server.workerPids();
      process.kill(silent!, 'SIGSTOP');
      try {
        const s = await runAdmin(server.adminSocket, ['sessions', '--json'], 15_000);
        expect(s.code, s.stderr).to.equal(0);
        expect(s.stderr).to.contain(`warning: worker ${silent!} did not answer within 1.5 s`);
        expect(JSON.parse(s.stdout)).to.be.an('array');
        const k = await runAdmin(server.adminSocket, ['kick', '0123456789abcdef'], 15_000);
        expect(k.code, k.stderr).to.equal(1);
        expect(k.stderr).to.contain(`worker ${silent!} did not answer within 1.5 s and may hold it`);
      } finally {
        process.kill(silent!, 'SIGCONT');
      }
    });
  });

  describe('a worker that does not confirm a reload', () => {
    it('reload waits for every worker: a stopped one is named in a warning (exit 0), reloads at once each wait for it side by side, and it applies the files once it runs again', async function () {
      const server = await startServer({ workers: 2 });
      const [silent, other] = server.workerPids();
      const carol = { user: 'carol', password: 'carol-pass' };
      await writeFile(server.usersFile, [ALICE, BOB, carol].map((u) => `${u.user}:${u.password}\n`).join(''));
      const appliedBy = (pid: number): boolean => server.lines.some((l) => l.msg === 'users reloaded' && l['pid'] === pid);
      process.kill(silent!, 'SIGSTOP');
      try {
        // Four at once: each waits for the confirmations on its own, not behind the others' waits (in turn,
        // the fourth would wait 20 s, past fts-admin's 15 s for a reply).
        const all = await Promise.all([1, 2, 3, 4].map(() => runAdmin(server.adminSocket, ['reload'], 30_000)));
        for (const r of all) {
          expect(r.code, r.stderr).to.equal(0);
          expect(r.stdout).to.match(/^users reloaded: 3 users$/m);
          expect(lines(r.stderr).filter((l) => l.includes('confirm')), r.stderr).to.deep.equal([`fts-admin: warning: worker ${silent!} did not confirm the reload within 5 s: it applies the new files only once it reads the message`]);
        }
        await waitUntil('the running worker\'s log line', async () => appliedBy(other!));
        expect(appliedBy(silent!), 'the stopped worker applied nothing').to.equal(false);
      } finally {
        process.kill(silent!, 'SIGCONT');
      }
      await waitUntil('the continued worker applies the reload', async () => appliedBy(silent!));
      const again = await runAdmin(server.adminSocket, ['reload'], 20_000);
      expect(again.code, again.stderr).to.equal(0);
      expect(again.stderr, 'every worker confirmed').to.not.include('confirm');
    });
  });

  describe('a worker that does not answer during a drain', () => {
    it('drain progress says how many workers are not answering, from the start and every second; the drain ends after its deadline, exit 0', async function () {
      const server = await startServer({ workers: 2 });
      const [silent] = server.workerPids();
      process.kill(silent!, 'SIGSTOP');
      try {
        const admin = startAdmin(server.adminSocket, ['drain', '--timeout', '3'], 40_000);
        admins.push(admin);
        const r = await admin.done;
        expect(r.code, `fts-admin drain: ${r.stderr}`).to.equal(0);
        const out = lines(r.stdout);
        // The silent worker does not hold the lines back past the grace period: they come every second.
        const left = out.map((l) => /^draining: .*, (\d+)s left$/.exec(l)?.[1]).filter((x) => x !== undefined).map(Number);
        expect(left.filter((n) => n >= 2), `lines during the grace period: ${r.stdout}`).to.have.length.of.at.least(1);
        // The other worker, idle, may still be counted in the first line (it exits at once).
        expect(out.filter((l) => /^draining: 0 sessions, 0 transfers, [12] workers \(1 not answering\), \d+s left$/.test(l)).length, r.stdout).to.be.at.least(1);
        expect(out.filter((l) => l.startsWith('draining: ') && !l.includes('(1 not answering)')), 'progress lines hiding the silent worker').to.deep.equal([]);
        expect(out[out.length - 1]).to.equal('server stopped');
        expect(await server.waitForExit(10_000)).to.deep.equal({ code: 0, signal: null });
        expect(server.lines.some((l) => l.msg === 'workers did not exit after the grace period; killing them'), 'the stopped worker was killed').to.equal(true);
      } finally {
        try {
          process.kill(silent!, 'SIGCONT');
        } catch {
          // killed by the drain's deadline, as expected
        }
      }
    });
  });

  describe('connections that never send a request', () => {
    it('are closed: one that ends its side at once (a liveness probe) or after half a line, and one that sends nothing for 10 s; the primary keeps no descriptor for them', async function () {
      this.timeout(60_000);
      const server = await startServer({ workers: 1 });
      const fds = async (): Promise<number> => (await readdir(`/proc/${server.proc.pid}/fd`)).length;
      const silent = net.connect(server.adminSocket);
      silent.on('error', () => undefined);
      const silentClosed = new Promise<number>((resolve) => silent.once('close', () => resolve(Date.now())));
      const opened = Date.now();
      await new Promise<void>((resolve) => silent.once('connect', () => resolve()));
      const before = await fds();
      for (let i = 0; i < 60; i++) {
        const probe = net.connect(server.adminSocket);
        probe.on('error', () => undefined);
        await new Promise<void>((resolve) => probe.once('connect', () => resolve()));
        // Half of them send a part of a request line first.
        if (i % 2 === 0) probe.end();
        else probe.end('{"cmd":"sta');
        await new Promise<void>((resolve) => probe.once('close', () => resolve()));
      }
      await waitUntil('the primary to have closed the 60 connections', async () => ((await fds()) <= before + 2 ? true : undefined), 5_000, 100);
      expect((await statusJson(server.adminSocket)).pid, 'the admin socket still answers').to.equal(server.proc.pid);
      const closedAt = await silentClosed;
      expect(closedAt - opened, 'the silent connection is closed after about 10 s').to.be.within(9_000, 20_000);
    });
  });

  describe('no server', () => {
    it('exits 3 with a clear message when nothing is at the socket (missing path or stale socket)', async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'fts-admin-none-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const missing = path.join(dir, 'nothing.sock');
      for (const cmd of [['status'], ['sessions', '--json'], ['drain'], ['reload']]) {
        const r = await runAdmin(missing, cmd, 15_000);
        expect(r.code, `${cmd.join(' ')}: ${r.stderr}`).to.equal(3);
        expect(lines(r.stderr), r.stderr).to.have.length(1);
        expect(r.stderr).to.match(new RegExp(`^fts-admin: no fts-server is running at ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
        expect(r.stdout).to.equal('');
      }
      const stale = path.join(dir, 'stale.sock');
      await leaveStaleSocket(stale);
      const r = await runAdmin(stale, ['status'], 15_000);
      expect(r.code, r.stderr).to.equal(3);
      expect(r.stderr).to.equal(`fts-admin: no fts-server is running at ${stale} (connection refused)\n`);
      // Linux refuses a connect to a file or a directory as it refuses a dead socket: the message says which.
      const file = path.join(dir, 'users.txt');
      await writeFile(file, 'x:y\n');
      for (const [where, what] of [[file, 'a regular file'], [dir, 'a directory']] as const) {
        const wrong = await runAdmin(where, ['status'], 15_000);
        expect([wrong.code, wrong.stderr]).to.deep.equal([3, `fts-admin: no fts-server is running at ${where} (${what}, not a socket)\n`]);
      }
    });

    it('a socket owned by another user is not the server\'s: exit 1, nothing sent to it (the server makes its socket as its own user)', async function () {
      if (process.getuid?.() !== 0) this.skip(); // needs root, to run fts-admin as nobody
      const dir = await mkdtemp(path.join(os.tmpdir(), 'fts-admin-foreign-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      await chmod(dir, 0o755);
      const planted = path.join(dir, 'admin.sock');
      const fake = await FakeAdminSocket.listen(planted, () => ({ ok: true, result: { reloaded: true, users: 0 } }));
      cleanups.push(() => fake.close());
      await chmod(planted, 0o666); // anyone could connect: only the owner check stops fts-admin
      const nobody = { uid: 65534, gid: 65534 };
      for (const cmd of [['status'], ['reload'], ['kick-user', 'alice']]) {
        const r = await runAdmin(planted, cmd, 15_000, {}, nobody);
        expect(r.code, `${cmd.join(' ')}: ${r.stderr}`).to.equal(1);
        expect(r.stderr).to.include('belongs to uid 0, not to you (uid 65534)');
      }
      expect(fake.connections, 'nothing was sent to the planted socket').to.equal(0);
      // Its owner (root here) uses it as before.
      const own = await runAdmin(planted, ['reload'], 15_000);
      expect(own.code, own.stderr).to.equal(0);
      expect(fake.connections).to.equal(1);
    });
  });
});
