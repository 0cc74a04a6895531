/**
 * End-to-end lifecycle of fts-server: graceful drain on SIGINT/SIGTERM/Ctrl+C, the grace deadline, a forced
 * stop, refusing work while draining, a worker killed mid-upload, and the admin socket's single-instance
 * guard. Every test runs real server processes (test/helpers/server.ts) and raw-protocol uploaders whose
 * pace the test controls (test/helpers/lifecycle-slow-uploader.ts), so "in flight" is deterministic.
 *
 * An upload cut by the drain deadline, a forced stop or a dead worker is never published; its bytes are
 * kept in <storage>/.fts/staging/<user>/<identity>.part for a resume (docs/PROTOCOL.md §6.1, "Resuming an
 * upload") until --partial-ttl, so those tests check "nothing published, nothing but resumable parts
 * staged, and the parts really resume (or are swept at the TTL)".
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FtsClient, FtsError, isServerError, ResilientClient } from '../../client/index.js';
import { runAdmin, sessionsJson, startAdmin, statusJson, waitWorkersReady, type SessionJson } from '../helpers/admin-cli.js';
import { envWithoutFts, releaseAll } from '../helpers/common.js';
import { SERVER_MAIN } from '../helpers/paths.js';
import { resumeUpload, SlowUploader, type UploadOutcome } from '../helpers/lifecycle-slow-uploader.js';
import { runServerOnce, startServerProcess } from '../helpers/lifecycle-spawn.js';
import { exists, freePort, leaveStaleSocket, processAlive, publishedNames, publishedSha256, sleep, stagingLeftovers, waitUntil } from '../helpers/lifecycle-util.js';
import { RawClient, uploadBytes } from '../helpers/raw-client.js';
import { tempDir } from '../helpers/temp.js';
import { DEFAULT_USERS, TestServer, type LogLine, type ServerOptions, type TestUser } from '../helpers/server.js';

const ALICE = DEFAULT_USERS[0]!;
const MiB = 1024 * 1024;

function describeOutcome(o: UploadOutcome): string {
  return o.kind === 'closed' ? `closed (${o.error ?? 'no error'})` : `${o.kind} ${JSON.stringify(o.header)}`;
}

function logIndex(server: TestServer, predicate: (l: LogLine) => boolean): number {
  return server.lines.findIndex(predicate);
}

describe('lifecycle (end to end)', function () {
  this.timeout(60_000);

  const servers: TestServer[] = [];
  const uploaders: SlowUploader[] = [];
  const raws: RawClient[] = [];
  const clients: FtsClient[] = [];
  const cleanups: Array<() => Promise<void>> = [];

  afterEach(async function () {
    this.timeout(90_000);
    // Connections first, so that a server left draining by a failed test stops at once; servers newest first.
    await releaseAll({ uploaders, raws, clients, servers, cleanups });
  });

  /** Starts a server and waits until all its workers answer (`adminSocket`: when --admin-socket is overridden). */
  async function startServer(options: ServerOptions = {}, adminSocket?: string): Promise<TestServer> {
    const server = await TestServer.start(options);
    servers.push(server);
    await waitWorkersReady(adminSocket ?? server.adminSocket, options.workers ?? 2);
    return server;
  }

  async function startUploads(server: TestServer, count: number, prefix: string, options: { size?: number; pauseAt?: number; user?: TestUser } = {}): Promise<SlowUploader[]> {
    const user = options.user ?? ALICE;
    // One after the other: each logs in before the next connects, so the server's limit on concurrent
    // unauthenticated connections (--max-startups, random early drop) never comes into play.
    const started: SlowUploader[] = [];
    for (let i = 0; i < count; i++) {
      const u = await SlowUploader.start({
        port: server.port,
        user: user.user,
        password: user.password,
        name: `${prefix}-${i}.bin`,
        size: options.size ?? MiB,
        ...(options.pauseAt === undefined ? {} : { pauseAt: options.pauseAt }),
      });
      uploaders.push(u);
      started.push(u);
    }
    return started;
  }

  /** Waits until the server itself reports every upload in flight with all the bytes sent so far. */
  async function waitInFlight(server: TestServer, ups: SlowUploader[]): Promise<SessionJson[]> {
    for (const u of ups) await u.waitForSent(Math.floor(u.data.length / 2));
    return waitUntil(
      `${ups.length} uploads in flight on the server`,
      async () => {
        const sessions = await sessionsJson(server.adminSocket);
        const all = ups.every((u) =>
          sessions.some((s) => s.remote.endsWith(`:${u.localPort}`) && s.op === 'upload' && s.file === u.name && s.bytes >= u.sent && u.sent > 0),
        );
        return all ? sessions : undefined;
      },
      20_000,
      100,
    );
  }

  async function expectAllPublished(server: TestServer, ups: SlowUploader[]): Promise<void> {
    for (const u of ups) {
      expect(await publishedSha256(server.storage, u.user, u.name), `published content of ${u.name}`).to.equal(u.sha256);
    }
  }

  async function expectNonePublished(server: TestServer, ups: SlowUploader[]): Promise<void> {
    for (const u of ups) {
      expect(await exists(path.join(server.storage, u.user, u.name)), `${u.name} must not be published`).to.equal(false);
    }
  }

  /**
   * After an upload was cut (drain deadline, forced stop): the staging area holds nothing but at most one
   * `<identity key>.<attempt>.part` per cut upload, in the user's staging directory.
   */
  async function expectOnlyResumableParts(server: TestServer, ups: SlowUploader[]): Promise<void> {
    const left = await stagingLeftovers(server.storage);
    expect(left.length, `staging leftovers ${JSON.stringify(left)}`).to.be.at.most(ups.length);
    for (const f of left) expect(f, 'staging leftover').to.match(new RegExp(`^${ups[0]!.user}/[0-9a-f]{64}\\.[0-9a-f]{24}\\.part$`));
  }

  /** One graceful-stop run: uploads paused mid-transfer, resumed, the signal sent while they stream. */
  async function gracefulStop(count: number, send: (server: TestServer) => void, options: ServerOptions = {}): Promise<void> {
    const server = await startServer({ workers: 2, ...options });
    const ups = await startUploads(server, count, 'graceful');
    await waitInFlight(server, ups);
    // About 32 more frames at 40 ms each: every upload is still streaming when the signal lands.
    for (const u of ups) u.resume(40);
    send(server);
    const outcomes = await Promise.all(ups.map((u) => u.outcome(30_000)));
    outcomes.forEach((o, i) => {
      const u = ups[i]!;
      expect(o.kind, `upload ${u.name}: ${describeOutcome(o)}`).to.equal('reply');
      if (o.kind !== 'reply') return;
      expect(o.header['status'], `upload ${u.name}: ${describeOutcome(o)}`).to.equal('ok');
      expect(o.header['id']).to.equal(u.uploadId);
      expect(o.header['sha256']).to.equal(u.sha256);
      expect(o.header['size']).to.equal(u.data.length);
    });
    const exit = await server.waitForExit(30_000);
    expect(exit, `server exit status; stderr: ${server.stderr}`).to.deep.equal({ code: 0, signal: null });
    await expectAllPublished(server, ups);
    expect(await stagingLeftovers(server.storage), 'staging leftovers').to.deep.equal([]);
    // The drain started before any of these uploads completed: they really were in flight.
    const drainAt = logIndex(server, (l) => l.msg === 'drain started');
    expect(drainAt, 'a "drain started" log line').to.be.at.least(0);
    const firstUploadOk = logIndex(server, (l) => l['event'] === 'upload' && l['result'] === 'ok');
    expect(firstUploadOk, 'first "upload ok" audit line comes after "drain started"').to.be.greaterThan(drainAt);
    // Whatever followed each ok was the drain's goodbye, and every connection was closed.
    for (const u of ups) {
      await u.conn.expectClosed(5_000);
      for (const h of u.afterUpload.slice(1)) {
        expect(h['status'], `frame after the ok of ${u.name}`).to.equal('bye');
        expect(h['code']).to.equal('SHUTTING_DOWN');
      }
    }
  }

  it('SIGINT with 16 uploads in flight: all complete intact, exit 0, no staging leftovers', async () => {
    await gracefulStop(16, (s) => s.signal('SIGINT'));
  });

  it('SIGINT during a burst of pipelined uploads: replies in order, every ok published intact, the rest told SHUTTING_DOWN, exit 0', async () => {
    const server = await startServer({ workers: 1 });
    const c = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(c);
    const files = Array.from({ length: 200 }, (_, i) => ({ name: `burst-${i}.bin`, data: randomBytes(2000 + i) }));
    // One write: while the first publishes are still running (deferred), the drain begins.
    const sent = c.write(...files.map((f, i) => uploadBytes(7000 + i, f.name, f.data)));
    await c.nextHeader(10_000).then((h) => expect(h, 'the first reply arrives before the signal').to.include({ id: 7000 }));
    server.signal('SIGINT');
    await sent.catch(() => undefined); // the server may close before it has read everything we sent
    const published = new Set<string>(['burst-0.bin']);
    let expected = 7001;
    let refused = 0;
    let sawBye = false;
    for (;;) {
      const h = await c.nextHeaderOrNull(15_000);
      if (h === null) break;
      if (h['status'] === 'bye') {
        expect(h['code']).to.equal('SHUTTING_DOWN');
        sawBye = true;
        continue;
      }
      if (h['status'] === 'ok') {
        expect(refused, 'no ok after a refusal: replies are in request order').to.equal(0);
        expect(h['id'], 'replies are in request order').to.equal(expected++);
        published.add(String(h['name']));
        continue;
      }
      expect(h, JSON.stringify(h)).to.include({ status: 'error', code: 'SHUTTING_DOWN' });
      refused++;
    }
    expect(sawBye || refused > 0, 'the client is told why the rest were not served').to.equal(true);
    expect(await server.waitForExit(20_000)).to.deep.include({ code: 0 });
    const onDisk = await publishedNames(server.storage, ALICE.user);
    for (const f of files) {
      const path_ = path.join(server.storage, ALICE.user, f.name);
      if (published.has(f.name)) expect((await readFile(path_)).equals(f.data), `${f.name} was acknowledged: it must be whole`).to.equal(true);
    }
    // A publish may complete after its reply could no longer be delivered; nothing else may appear.
    for (const name of onDisk) expect(files.some((f) => f.name === name), name).to.equal(true);
    expect(await stagingLeftovers(server.storage)).to.deep.equal([]);
  });

  it('SIGTERM with 4 uploads in flight: all complete intact, exit 0, no staging leftovers', async () => {
    await gracefulStop(4, (s) => s.signal('SIGTERM'));
  });

  it('Ctrl+C to the process group (kill -INT -pgid): workers do not die on their own, uploads complete, exit 0', async () => {
    const server = await startServer({ workers: 2, detached: true });
    const workers = server.workerPids();
    expect(workers).to.have.length(2);
    const ups = await startUploads(server, 4, 'pgrp');
    await waitInFlight(server, ups);
    for (const u of ups) u.resume(40);
    process.kill(-server.pid, 'SIGINT');
    await sleep(300);
    for (const pid of workers) expect(processAlive(pid), `worker ${pid} alive after the group SIGINT`).to.equal(true);
    const outcomes = await Promise.all(ups.map((u) => u.outcome(30_000)));
    for (const o of outcomes) {
      expect(o.kind, describeOutcome(o)).to.equal('reply');
      if (o.kind === 'reply') expect(o.header['status'], describeOutcome(o)).to.equal('ok');
    }
    const exit = await server.waitForExit(30_000);
    expect(exit, `server exit status; stderr: ${server.stderr}`).to.deep.equal({ code: 0, signal: null });
    await expectAllPublished(server, ups);
    expect(await stagingLeftovers(server.storage)).to.deep.equal([]);
    expect(server.lines.some((l) => l.msg === 'worker died; restarting'), 'no worker died').to.equal(false);
    for (const pid of workers) {
      const exited = server.lines.find((l) => l.msg === 'worker exited' && l['workerPid'] === pid);
      expect(exited, `"worker exited" line for ${pid}`).to.not.equal(undefined);
      expect(exited?.['code'], `worker ${pid} exit code`).to.equal(0);
      expect(exited?.['signal'], `worker ${pid} exit signal`).to.equal(null);
    }
  });

  it('--grace 1 with uploads that never finish: exits 0 soon after the deadline, nothing partial published, clean restart', async () => {
    const server = await startServer({ workers: 2, args: ['--grace', '1'] });
    const ups = await startUploads(server, 3, 'stuck');
    await waitInFlight(server, ups);
    const t0 = Date.now();
    server.signal('SIGINT');
    const exit = await server.waitForExit(30_000);
    const elapsed = Date.now() - t0;
    expect(exit, `server exit status; stderr: ${server.stderr}`).to.deep.equal({ code: 0, signal: null });
    expect(elapsed, 'ms from the signal to the exit (grace 1 s)').to.be.below(11_000);
    for (const u of ups) {
      const o = await u.outcome(5_000);
      expect(o.kind === 'reply' && o.header['status'] === 'ok', `stuck upload ${u.name} must not succeed: ${describeOutcome(o)}`).to.equal(false);
      if (o.kind === 'bye') expect(o.header['code']).to.equal('SHUTTING_DOWN');
      if (o.kind === 'reply') expect(o.header['code']).to.equal('SHUTTING_DOWN');
    }
    await expectNonePublished(server, ups);
    // docs/PROTOCOL.md §6.1 "Resuming an upload": the bytes of an upload cut at the drain deadline are kept
    // (one identity-keyed .part per upload, outside the user's directory) until --partial-ttl.
    await expectOnlyResumableParts(server, ups);

    // A lock left by a holder that died (a worker SIGKILLed mid-rename on another node, say): last refreshed
    // a minute ago.
    const leftLock = path.join(server.storage, '.fts', 'locks', ALICE.user, `${'0'.repeat(64)}.lock`);
    await mkdir(leftLock, { recursive: true });
    await utimes(leftLock, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));

    // A restart with --partial-ttl 1 sweeps them: nothing partial is visible, the staging area is empty, and
    // the abandoned lock is gone (issue #3: lock artifacts older than their staleness).
    await sleep(1_200);
    const again = await startServer({ workers: 1, storage: server.storage, args: ['--partial-ttl', '1'] });
    const swept = await again.waitForLog((l) => l.msg === 'removed expired partial uploads', 5_000);
    expect(swept['removed']).to.equal(ups.length);
    expect((await again.waitForLog((l) => l.msg === 'removed abandoned locks', 5_000))['removed']).to.equal(1);
    expect(await exists(leftLock), 'the abandoned lock').to.equal(false);
    const client = await FtsClient.connect({ port: again.port });
    clients.push(client);
    await client.auth(ALICE.user, ALICE.password);
    const names = (await client.list({ long: true })).map((e) => e.name);
    for (const u of ups) expect(names, 'listing after restart').to.not.include(u.name);
    expect(names, 'listing after restart').to.deep.equal([]);
    expect(await stagingLeftovers(again.storage), 'staging after restart').to.deep.equal([]);
    expect(await publishedNames(again.storage, ALICE.user)).to.deep.equal([]);
  });

  it('a new connection during the drain is refused promptly while an upload keeps the drain open', async () => {
    const server = await startServer({ workers: 2 });
    const [up] = await startUploads(server, 1, 'holder');
    await waitInFlight(server, [up!]);
    server.signal('SIGINT');
    await waitUntil('both workers draining', () => server.lines.filter((l) => l.msg === 'draining').length >= 2, 10_000);
    const t0 = Date.now();
    const contact = await RawClient.firstContact(server.port, 5_000);
    const elapsed = Date.now() - t0;
    if (contact.kind === 'header') raws.push(contact.conn);
    expect(contact.kind, `first contact during the drain: ${JSON.stringify(contact.kind === 'header' ? contact.header : contact)}`).to.be.oneOf(['refused', 'header']);
    if (contact.kind === 'refused') expect(contact.code).to.equal('ECONNREFUSED');
    if (contact.kind === 'header') {
      expect(contact.header['status'], 'a bye instead of the greeting').to.equal('bye');
      expect(contact.header['code']).to.equal('SHUTTING_DOWN');
    }
    expect(elapsed).to.be.below(5_000);
    // The drain is still open: the server runs and the upload's connection is alive.
    expect(processAlive(server.pid)).to.equal(true);
    expect(up!.conn.isClosed).to.equal(false);
    up!.finish();
    const o = await up!.outcome(20_000);
    expect(o.kind === 'reply' ? o.header['status'] : describeOutcome(o)).to.equal('ok');
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
    await expectAllPublished(server, [up!]);
  });

  it('an idle session that sends a request during the drain gets SHUTTING_DOWN', async () => {
    // One worker: the idle session shares it with the upload, so it stays open until it asks for something.
    const server = await startServer({ workers: 1 });
    const idle = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(idle);
    const [up] = await startUploads(server, 1, 'holder');
    await waitInFlight(server, [up!]);
    server.signal('SIGINT');
    await server.waitForLog((l) => l.msg === 'draining', 10_000);
    const id = await idle.send({ op: 'list', long: false });
    const reply = await idle.nextHeaderOrNull(5_000);
    expect(reply, 'reply to a request sent during the drain').to.not.equal(null);
    expect(reply?.['status'], JSON.stringify(reply)).to.be.oneOf(['error', 'bye']);
    expect(reply?.['code'], JSON.stringify(reply)).to.equal('SHUTTING_DOWN');
    if (reply?.['status'] === 'error') {
      expect(reply['id']).to.equal(id);
      expect(reply['fatal']).to.equal(true);
    }
    await idle.expectClosed(5_000);
    up!.finish();
    const o = await up!.outcome(20_000);
    expect(o.kind === 'reply' ? o.header['status'] : describeOutcome(o)).to.equal('ok');
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
  });

  it('a session whose refused upload was still being skipped when the drain began gets its error, then bye at once: the stop does not wait for the grace period', async () => {
    const server = await startServer({ workers: 1 });
    const c = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(c);
    const data = Buffer.alloc(256 * 1024, 7);
    const bytes = uploadBytes(5, 'a/b', data); // BAD_NAME: its data is read and discarded
    const cut = bytes.length - 100_000;
    await c.write(bytes.subarray(0, cut));
    await sleep(300);
    server.signal('SIGINT');
    await server.waitForLog((l) => l.msg === 'draining', 10_000);
    const t0 = Date.now();
    await c.write(bytes.subarray(cut));
    const reply = await c.nextHeader(5_000);
    expect(reply).to.include({ id: 5, status: 'error', code: 'BAD_NAME', fatal: false });
    const bye = await c.nextHeaderOrNull(5_000);
    expect(bye).to.include({ status: 'bye', code: 'SHUTTING_DOWN' });
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
    expect(Date.now() - t0, 'ms until the server stopped (--grace 30)').to.be.below(10_000);
  });

  it('a reconnecting client whose idle session the drain ended reports SHUTTING_DOWN, not just the refused reconnection', async () => {
    const server = await startServer({ workers: 1 });
    // The paused upload keeps the server draining, with its listener closed, for as long as the test needs.
    const [up] = await startUploads(server, 1, 'holder');
    await waitInFlight(server, [up!]);
    const client = await ResilientClient.connect({ host: '127.0.0.1', port: server.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 1, initialDelayMs: 50, maxDelayMs: 50 } });
    try {
      server.signal('SIGINT');
      await waitUntil('the idle session ended by the drain', () => !client.connected, 10_000);
      const err: unknown = await client.list().then(() => null, (e: unknown) => e);
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).code, String(err)).to.equal('SHUTTING_DOWN');
      expect(isServerError(err), 'printed with its code by the CLI').to.equal(true);
      expect((err as FtsError).message).to.match(/shutting down; reconnecting failed: .*(refused|connect)/);
    } finally {
      client.close();
    }
    up!.finish();
    const o = await up!.outcome(20_000);
    expect(o.kind === 'reply' ? o.header['status'] : describeOutcome(o)).to.equal('ok');
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
  });

  it('idle sessions get bye SHUTTING_DOWN at once, also on a worker with a transfer in flight, which completes', async () => {
    const server = await startServer({ workers: 2 });
    const [up] = await startUploads(server, 1, 'holder');
    let sessions = await waitInFlight(server, [up!]);
    const busyWorker = sessions.find((s) => s.remote.endsWith(`:${up!.localPort}`))?.worker;
    expect(busyWorker).to.be.a('number');
    // Idle sessions on both workers (the kernel/cluster decides which worker gets a connection).
    const idles: RawClient[] = [];
    const workerOf = (c: RawClient): number | undefined => sessions.find((s) => s.remote.endsWith(`:${c.localPort}`))?.worker;
    for (let i = 0; i < 16; i++) {
      const c = await RawClient.login(server.port, ALICE.user, ALICE.password);
      raws.push(c);
      idles.push(c);
      if (idles.length < 4) continue;
      sessions = await sessionsJson(server.adminSocket);
      if (idles.some((x) => workerOf(x) === busyWorker) && idles.some((x) => workerOf(x) !== busyWorker && workerOf(x) !== undefined)) break;
    }
    sessions = await sessionsJson(server.adminSocket);
    const sameWorker = idles.filter((c) => workerOf(c) === busyWorker);
    const otherWorker = idles.filter((c) => workerOf(c) !== busyWorker);
    expect(otherWorker.length, 'idle sessions on the worker without the upload').to.be.at.least(1);
    expect(sameWorker.length, 'idle sessions on the worker with the upload').to.be.at.least(1);
    server.signal('SIGINT');
    // Every idle session, on either worker, while the upload is still paused mid-transfer.
    for (const c of [...otherWorker, ...sameWorker]) {
      const h = await c.nextHeaderOrNull(5_000);
      expect(h?.['status'], JSON.stringify(h)).to.equal('bye');
      expect(h?.['code']).to.equal('SHUTTING_DOWN');
      await c.expectClosed(5_000);
    }
    expect(up!.conn.isClosed, 'the upload in flight keeps its connection').to.equal(false);
    up!.finish();
    const o = await up!.outcome(20_000);
    expect(o.kind === 'reply' ? o.header['status'] : describeOutcome(o)).to.equal('ok');
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
  });

  it('SIGHUP reloads the users file like fts-admin reload, without a drain; a refused file is logged and the old table kept', async () => {
    const server = await startServer({ workers: 2 });
    const [up] = await startUploads(server, 1, 'during-hup');
    await waitInFlight(server, [up!]);
    const carol = { user: 'carol', password: 'carol-pass' };
    await writeFile(server.usersFile, [ALICE, carol].map((u) => `${u.user}:${u.password}\n`).join(''));
    server.signal('SIGHUP');
    const applied = await server.waitForLog((l) => l.msg === 'users file reloaded' && l['users'] === 2);
    expect(applied, 'a SIGHUP\'s reload line names its cause as OPERATIONS.md "Signals" says').to.include({ source: 'SIGHUP', signal: 'SIGHUP' });
    // Connections are spread over the workers: every one has the new table.
    for (let i = 0; i < 4; i++) {
      const c = await FtsClient.connect({ port: server.port });
      clients.push(c);
      await c.auth(carol.user, carol.password);
    }
    await writeFile(server.usersFile, `${ALICE.user}:${ALICE.password}\nthis line has no separator\n`);
    server.signal('SIGHUP');
    const refused = await server.waitForLog((l) => l.level === 'error' && l['signal'] === 'SIGHUP');
    expect(String(refused.msg)).to.match(/^reload refused: .*malformed line.*the old user table is kept/);
    const again = await FtsClient.connect({ port: server.port });
    clients.push(again);
    await again.auth(carol.user, carol.password);
    expect(server.lines.some((l) => l.msg === 'drain started'), 'no drain').to.equal(false);
    up!.finish();
    const o = await up!.outcome(20_000);
    expect(o.kind === 'reply' ? o.header['status'] : describeOutcome(o), 'the upload in flight across both SIGHUPs').to.equal('ok');
    expect(server.proc.exitCode, 'still running').to.equal(null);
  });

  it('a SIGHUP while the server starts (after its first log line, before it listens) does not kill it: it is answered with a reload once started', async () => {
    let hupAt = -1;
    const server = await startServer({
      workers: 1,
      // The users file's plaintext warning is the primary's first line; the start goes on for a while
      // after it (storage probe, sweep, admin socket) before the reload handler is in place.
      whileStarting: (s) => {
        const poll = setInterval(() => {
          if (s.proc.exitCode !== null || s.proc.signalCode !== null) return clearInterval(poll);
          const at = s.lines.findIndex((l) => String(l.msg).includes('plaintext password'));
          if (at < 0) return;
          clearInterval(poll);
          hupAt = s.lines.length;
          s.signal('SIGHUP');
        }, 1);
      },
    });
    expect(hupAt, 'the SIGHUP was sent').to.be.greaterThan(0);
    await server.waitForLog((l) => l.msg === 'users file reloaded');
    const c = await FtsClient.connect({ port: server.port });
    clients.push(c);
    await c.auth(ALICE.user, ALICE.password);
    expect(server.proc.exitCode, 'still running').to.equal(null);
  });

  it('when its log output fails (the reader of its stdout is gone), the server drains, lets the transfer in flight finish, and exits 1', async () => {
    const server = await startServer({ workers: 2 });
    const [up] = await startUploads(server, 1, 'log-lost');
    await waitInFlight(server, [up!]);
    // Close our end of the server's stdout: its next log line fails with EPIPE.
    server.proc.stdout!.destroy();
    // A login makes a worker log.
    const trigger = await RawClient.login(server.port, ALICE.user, ALICE.password).catch(() => null);
    if (trigger !== null) raws.push(trigger);
    await waitUntil('the drain', async () => ((await statusJson(server.adminSocket)).draining ? true : undefined), 10_000, 100);
    const contact = await RawClient.firstContact(server.port, 5_000);
    if (contact.kind === 'header') raws.push(contact.conn);
    expect(contact.kind === 'header' ? contact.header['code'] : contact.kind, 'a new connection during the drain').to.be.oneOf(['refused', 'SHUTTING_DOWN']);
    expect(up!.conn.isClosed, 'the upload in flight keeps its connection').to.equal(false);
    up!.finish();
    const o = await up!.outcome(20_000);
    expect(o.kind === 'reply' ? o.header['status'] : describeOutcome(o)).to.equal('ok');
    expect(await publishedSha256(server.storage, ALICE.user, up!.name)).to.equal(up!.sha256);
    expect(await server.waitForExit(20_000)).to.deep.equal({ code: 1, signal: null });
    expect(server.stderr).to.match(/fts-server: the log output \(standard output\) failed: broken pipe \(EPIPE\); draining, then exiting with status 1/);
  });

  /**
   * Connects and closes again and again (each connection makes a worker log: connect, session end) until a
   * connection is not greeted (the server froze, drains or is gone); bounded in count and time.
   */
  async function connectUntilRefused(server: TestServer): Promise<number> {
    const deadline = Date.now() + 60_000;
    let connections = 0;
    while (server.proc.exitCode === null && connections < 5_000 && Date.now() < deadline) {
      const contact = await RawClient.firstContact(server.port, 2_000).catch(() => null);
      if (contact?.kind === 'header') contact.conn.close();
      if (contact === null || contact.kind !== 'header') break;
      connections++;
    }
    return connections;
  }

  it('a log output that accepts nothing (its reader stopped reading without closing) counts as lost after 10 s: the server drains and exits 1 instead of freezing', async function () {
    this.timeout(120_000);
    const server = await startServer({ workers: 1 });
    // Stop reading the server's stdout: once our side's buffer and the socket's fill, its writes get EAGAIN.
    server.proc.stdout!.pause();
    const connections = await connectUntilRefused(server);
    const exit = await server.waitForExit(60_000);
    expect(exit, `after ${connections} connections`).to.deep.equal({ code: 1, signal: null });
    expect(server.stderr).to.match(/fts-server: the log output \(standard output\) failed: it accepted nothing for 10 s \(its reader stopped reading\); draining, then exiting with status 1/);
  });

  it('regression (fixed): after a rolling restart, a log output that accepts nothing still counts as lost after 10 s (worker exits used to make the shared output blocking, freezing the server for good)', async function () {
    this.timeout(120_000);
    const server = await startServer({ workers: 2 });
    const restart = await runAdmin(server.adminSocket, ['restart-workers']);
    expect(restart.code, restart.stderr).to.equal(0);
    await waitWorkersReady(server.adminSocket, 2);
    server.proc.stdout!.pause();
    const connections = await connectUntilRefused(server);
    const exit = await server.waitForExit(60_000);
    expect(exit, `after ${connections} connections`).to.deep.equal({ code: 1, signal: null });
    expect(server.stderr).to.match(/fts-server: the log output \(standard output\) failed: it accepted nothing for 10 s \(its reader stopped reading\); draining, then exiting with status 1/);
  });

  it('a log output that is already gone when the server starts (its first lines fail) still makes it drain and exit 1, with no client', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fts-log-lost-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(path.join(dir, 'users'), `${ALICE.user}:${ALICE.password}\n`, { mode: 0o600 });
    const proc = spawn(process.execPath, [SERVER_MAIN, '--port', '0', '--workers', '2', '--metrics-port', 'off', '--storage', path.join(dir, 'storage'), '--users', path.join(dir, 'users'), '--admin-socket', path.join(dir, 'admin.sock')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: envWithoutFts(),
    });
    // Before the primary writes its first line.
    proc.stdout.destroy();
    let stderr = '';
    proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    try {
      expect(await exited, `exit status; stderr: ${stderr}`).to.equal(1);
    } finally {
      clearTimeout(timer);
    }
    expect(stderr).to.match(/^fts-server: the log output \(standard output\) failed: broken pipe \(EPIPE\); draining, then exiting with status 1$/m);
    expect(await exists(path.join(dir, 'admin.sock')), 'the admin socket is removed as after any drain').to.equal(false);
  });

  it('a second SIGINT during the drain stops at once: exit 0 well before --grace 60, nothing partial published', async () => {
    const server = await startServer({ workers: 2, args: ['--grace', '60'] });
    const ups = await startUploads(server, 2, 'forced');
    await waitInFlight(server, ups);
    server.signal('SIGINT');
    await waitUntil('both workers draining', () => server.lines.filter((l) => l.msg === 'draining').length >= 2, 10_000);
    await sleep(200);
    expect(processAlive(server.pid), 'still draining (the uploads are stuck)').to.equal(true);
    const t0 = Date.now();
    server.signal('SIGINT');
    const exit = await server.waitForExit(20_000);
    expect(Date.now() - t0, 'ms from the second SIGINT to the exit').to.be.below(15_000);
    expect(exit, `server exit status; stderr: ${server.stderr}`).to.deep.equal({ code: 0, signal: null });
    for (const u of ups) {
      const o = await u.outcome(5_000);
      expect(o.kind === 'reply' && o.header['status'] === 'ok', `forced-stop upload must not succeed: ${describeOutcome(o)}`).to.equal(false);
    }
    await expectNonePublished(server, ups);
    await expectOnlyResumableParts(server, ups);

    // After a restart nothing partial is listed, and each upload resumes from its durable offset.
    const again = await startServer({ workers: 1, storage: server.storage });
    const client = await FtsClient.connect({ port: again.port });
    clients.push(client);
    await client.auth(ALICE.user, ALICE.password);
    expect(await client.list()).to.deep.equal([]);
    for (const u of ups) {
      const r = await resumeUpload(again.port, ALICE.user, ALICE.password, u.name, u.data);
      expect(r.offset, `durable offset of ${u.name}`).to.be.within(1, u.sent);
      expect(r.reply?.['status'], JSON.stringify(r.reply)).to.equal('ok');
    }
    await expectAllPublished(again, ups);
    expect(await stagingLeftovers(again.storage)).to.deep.equal([]);
  });

  it('a worker killed with SIGKILL mid-upload: upload fails, nothing published, worker respawned, other worker unaffected', async () => {
    const users: TestUser[] = [{ user: 'up', password: 'up-pass' }, ...Array.from({ length: 16 }, (_, i) => ({ user: `c${i}`, password: `c${i}-pass` }))];
    const server = await startServer({ workers: 2, users });
    const before = server.workerPids();
    const [up] = await startUploads(server, 1, 'victim', { user: users[0]! });
    let sessions = await waitInFlight(server, [up!]);
    const victim = sessions.find((s) => s.user === 'up')?.worker;
    expect(victim, 'worker holding the upload').to.be.a('number');
    // Clients on both workers (the kernel/cluster decides which worker gets a connection).
    const others: Array<{ user: TestUser; client: FtsClient }> = [];
    const workerOf = (user: string): number | undefined => sessions.find((s) => s.user === user)?.worker;
    for (const u of users.slice(1)) {
      const client = await FtsClient.connect({ port: server.port });
      clients.push(client);
      await client.auth(u.user, u.password);
      others.push({ user: u, client });
      if (others.length < 6) continue;
      sessions = await sessionsJson(server.adminSocket);
      const onOtherCount = others.filter((o) => workerOf(o.user.user) !== undefined && workerOf(o.user.user) !== victim).length;
      if (onOtherCount >= 2 && others.some((o) => workerOf(o.user.user) === victim)) break;
    }
    sessions = await sessionsJson(server.adminSocket);
    const onOther = others.filter((o) => workerOf(o.user.user) !== undefined && workerOf(o.user.user) !== victim);
    const onVictim = others.filter((o) => workerOf(o.user.user) === victim);
    expect(onOther.length, 'clients on the other worker').to.be.at.least(1);

    process.kill(victim!, 'SIGKILL');
    const o = await up!.outcome(10_000);
    expect(o.kind, `upload on the killed worker: ${describeOutcome(o)}`).to.not.equal('reply');
    await server.waitForLog((l) => l.msg === 'worker died; restarting' && l['workerPid'] === victim, 10_000);
    const st = await waitUntil(
      'two responding workers again',
      async () => {
        const s = await statusJson(server.adminSocket);
        return s.workers.length === 2 && s.workers.every((w) => w.responding && w.pid !== victim) ? s : undefined;
      },
      15_000,
      200,
    );
    expect(st.workers.map((w) => w.pid)).to.not.include(victim);
    expect(before).to.include(victim);

    // Clients on the surviving worker keep working on the same connection.
    for (const { user, client } of onOther) {
      const data = Buffer.from(`still here ${user.user}\n`);
      await client.noop();
      await client.uploadBuffer('after-kill.txt', data);
      const back = await client.downloadBuffer('after-kill.txt');
      expect(back.data.equals(data)).to.equal(true);
      expect((await client.list()).map((e) => e.name)).to.deep.equal(['after-kill.txt']);
    }
    // Clients on the killed worker lost their connection.
    for (const { client } of onVictim) {
      const err = await client.noop().then(() => null, (e: unknown) => e);
      expect(err, 'an operation on a connection of the killed worker fails').to.be.instanceOf(FtsError);
    }
    // New connections are served, and the upload was never published.
    const fresh = await FtsClient.connect({ port: server.port });
    clients.push(fresh);
    await fresh.auth('up', 'up-pass');
    expect((await fresh.list()).map((e) => e.name)).to.not.include(up!.name);
    expect(await exists(path.join(server.storage, 'up', up!.name))).to.equal(false);
    // The bytes the dead worker staged are resumable from any worker.
    const r = await resumeUpload(server.port, 'up', 'up-pass', up!.name, up!.data);
    expect(r.offset).to.be.within(0, up!.sent);
    expect(r.reply?.['status'], JSON.stringify(r.reply)).to.equal('ok');
    expect(await publishedSha256(server.storage, 'up', up!.name)).to.equal(up!.sha256);
  });

  it('regression (fixed): a worker respawned just before SIGINT misses the drain: it keeps accepting connections and the stop waits for grace + 5 s', async () => {
    // A fixed port: with --port 0 a respawned worker that is alone in listening gets a new ephemeral port
    // (see the next test), which would hide the effect.
    const port = await freePort();
    const server = await startServer({ workers: 2, args: ['--port', String(port), '--grace', '20'] });
    const count = (): number => server.lines.filter((l) => l.msg === 'worker started').length;
    const forked = count();
    const [victim] = server.workerPids();
    process.kill(victim!, 'SIGKILL');
    // SIGINT right after the primary forked the replacement, while that worker is still booting.
    await waitUntil('the replacement worker to be forked', () => count() > forked, 10_000, 2);
    const t0 = Date.now();
    server.signal('SIGINT');
    await server.waitForLog((l) => l.msg === 'drain started', 5_000);
    await sleep(2_000);
    const contact = await RawClient.firstContact(port, 5_000);
    if (contact.kind === 'header') raws.push(contact.conn);
    const problems: string[] = [];
    const refused = contact.kind === 'refused' || (contact.kind === 'header' && contact.header['status'] === 'bye' && contact.header['code'] === 'SHUTTING_DOWN');
    if (!refused) problems.push(`a new connection 2 s into the drain was not refused: ${contact.kind === 'header' ? JSON.stringify(contact.header) : contact.kind}`);
    const exit = await server.waitForExit(25_000).catch(() => null);
    const elapsed = Date.now() - t0;
    if (elapsed >= 10_000) problems.push(`the idle server took ${elapsed} ms from SIGINT to exit (--grace 20)`);
    if (JSON.stringify(exit) !== JSON.stringify({ code: 0, signal: null })) problems.push(`exit status ${JSON.stringify(exit)}`);
    if (server.lines.some((l) => l.msg === 'workers did not exit after the grace period; killing them')) problems.push('the workers had to be SIGKILLed after the grace period');
    expect(problems).to.deep.equal([]);
  });

  it('regression (fixed): SIGINT while the workers are still starting: the drain never reaches them and the stop waits for grace + 5 s', async () => {
    const { dir, cleanup } = await tempDir('fts-early-');
    cleanups.push(cleanup);
    const users = path.join(dir, 'users.txt');
    await writeFile(users, `${ALICE.user}:${ALICE.password}\n`, { mode: 0o600 });
    const proc = startServerProcess([
      '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--workers', '2', '--grace', '20',
      '--users', users, '--storage', path.join(dir, 'storage'), '--admin-socket', path.join(dir, 'admin.sock'),
    ]);
    cleanups.push(() => proc.stop());
    await waitUntil('both workers forked', () => proc.lines.filter((l) => l['msg'] === 'worker started').length >= 2, 10_000, 2);
    const t0 = Date.now();
    proc.proc.kill('SIGINT');
    const exit = await proc.waitForExit(30_000);
    const elapsed = Date.now() - t0;
    const problems: string[] = [];
    if (elapsed >= 10_000) problems.push(`the idle server took ${elapsed} ms from SIGINT to exit (--grace 20)`);
    if (JSON.stringify(exit) !== JSON.stringify({ code: 0, signal: null })) problems.push(`exit status ${JSON.stringify(exit)}`);
    if (proc.lines.some((l) => l['msg'] === 'workers did not exit after the grace period; killing them')) problems.push('the workers had to be SIGKILLed after the grace period');
    expect(problems, `stderr: ${proc.stderr}`).to.deep.equal([]);
  });

  it('regression (fixed): with --port 0 and one worker, the worker respawned after a SIGKILL no longer serves the announced port', async () => {
    const server = await startServer({ workers: 1 });
    const [victim] = server.workerPids();
    process.kill(victim!, 'SIGKILL');
    await server.waitForLog((l) => l.msg === 'worker died; restarting' && l['workerPid'] === victim, 10_000);
    const st = await waitUntil('the replacement worker to answer', async () => {
      const s = await statusJson(server.adminSocket);
      return s.workers.length === 1 && s.workers.every((w) => w.responding && w.pid !== victim) ? s : undefined;
    }, 15_000, 200);
    expect(st.port, 'status still announces the original port').to.equal(server.port);
    const contact = await waitUntil('a greeting on the announced port', async () => {
      const c = await RawClient.firstContact(server.port, 2_000);
      if (c.kind === 'header') {
        raws.push(c.conn);
        return c;
      }
      return undefined;
    }, 10_000, 250).catch((err: Error) => err);
    expect(contact instanceof Error ? contact.message : contact.header['status'], `port ${server.port} after the respawn`).to.equal('hello');
  });

  it('with --port 0 and several workers all SIGKILLed at once, every respawned worker serves the announced port (none moves to another)', async () => {
    const server = await startServer({ workers: 3 });
    const victims = server.workerPids();
    expect(victims).to.have.length(3);
    for (const pid of victims) process.kill(pid, 'SIGKILL');
    await waitUntil('three new workers answering', async () => {
      const s = await statusJson(server.adminSocket);
      return s.workers.length === 3 && s.workers.every((w) => w.responding && !victims.includes(w.pid)) ? s : undefined;
    }, 30_000, 200);
    // The cluster hands connections on one port round-robin to the workers that listen on it: logged-in
    // sessions on the announced port must reach all three (a worker on another port gets none).
    const reached = new Set<number>();
    for (let i = 0; i < 12 && reached.size < 3; i++) {
      const conn = await RawClient.login(server.port, DEFAULT_USERS[0]!.user, DEFAULT_USERS[0]!.password);
      raws.push(conn);
      const local = conn.socket.localPort;
      const mine = await waitUntil('the session to be listed', async () => (await sessionsJson(server.adminSocket)).find((s) => s.remote.endsWith(`:${String(local)}`)), 10_000, 100);
      reached.add(mine.worker);
    }
    expect(reached.size, 'workers serving the announced port').to.equal(3);
    expect(server.lines.filter((l) => l.msg === 'worker listens on another port than the announced one'), 'no worker on another port').to.deep.equal([]);
  });

  it('with --port 0, a replacement killed while the worker it replaces drains is respawned on the announced port', async () => {
    const server = await startServer({ workers: 1, args: ['--grace', '30'] });
    const [old] = server.workerPids();
    // An upload in flight keeps the old worker draining (its listener closed) for the rest of the test.
    const [up] = await startUploads(server, 1, 'drain-hold', { pauseAt: 256 * 1024 });
    await up!.waitForSent(256 * 1024);
    const restart = startAdmin(server.adminSocket, ['restart-workers'], 60_000);
    cleanups.push(async () => {
      restart.kill();
      await restart.done.catch(() => undefined);
    });
    // The old worker drains only once its replacement listens.
    await server.waitForLog((l) => l.msg === 'draining' && l['worker'] === old, 20_000);
    const replacement = await waitUntil('the replacement to answer', async () => (await statusJson(server.adminSocket)).workers.find((w) => w.pid !== old && w.responding)?.pid, 20_000, 100);
    process.kill(replacement, 'SIGKILL');
    await server.waitForLog((l) => l.msg === 'worker died; restarting' && l['workerPid'] === replacement, 10_000);
    const respawned = await waitUntil('the respawned worker to answer', async () => {
      const s = await statusJson(server.adminSocket);
      return s.workers.find((w) => w.pid !== old && w.pid !== replacement && w.responding)?.pid;
    }, 20_000, 100);
    expect(respawned).to.be.a('number');
    const contact = await RawClient.firstContact(server.port, 5_000);
    if (contact.kind === 'header') raws.push(contact.conn);
    expect(contact.kind === 'header' ? contact.header['status'] : contact.kind, `the announced port ${server.port}`).to.equal('hello');
    expect(server.lines.filter((l) => l.msg === 'worker listens on another port than the announced one')).to.deep.equal([]);
  });

  describe('admin socket single-instance guard', () => {
    it('a second server with the same --admin-socket is refused and the first keeps running', async () => {
      const first = await startServer({ workers: 1 });
      const { dir, cleanup } = await tempDir('fts-second-');
      cleanups.push(cleanup);
      const r = await runServerOnce(
        ['--port', '0', '--host', '127.0.0.1', '--metrics-port', '0', '--storage', path.join(dir, 'storage'), '--users', first.usersFile, '--workers', '1', '--admin-socket', first.adminSocket],
        { timeoutMs: 15_000 },
      );
      expect(r.timedOut, `second server kept running; stdout: ${r.stdout}`).to.equal(false);
      expect(r.code, `exit code; stderr: ${r.stderr}`).to.not.equal(0);
      expect(r.code).to.not.equal(null);
      expect(r.stderr).to.match(/already running/);
      expect(r.stderr).to.include(first.adminSocket);
      // The first server's socket was not touched.
      expect((await lstat(first.adminSocket)).isSocket()).to.equal(true);
      const st = await statusJson(first.adminSocket);
      expect(st.pid).to.equal(first.pid);
    });

    it('a stale socket file left by a killed process is replaced and the server starts', async () => {
      const { dir, cleanup } = await tempDir('fts-stale-');
      cleanups.push(cleanup);
      const stale = path.join(dir, 'admin.sock');
      await leaveStaleSocket(stale);
      expect((await lstat(stale)).isSocket(), 'stale socket file exists before the start').to.equal(true);
      const server = await startServer({ workers: 1, args: ['--admin-socket', stale] }, stale);
      const st = await statusJson(stale);
      expect(st.pid).to.equal(server.pid);
      expect(st.port).to.equal(server.port);
      const client = await FtsClient.connect({ port: server.port });
      clients.push(client);
      await client.auth(ALICE.user, ALICE.password);
      await client.noop();
      client.close();
      clients.splice(clients.indexOf(client), 1);
      // A stop removes the socket it created.
      expect(await server.halt()).to.deep.equal({ code: 0, signal: null });
      expect(await exists(stale), 'admin socket removed at exit').to.equal(false);
    });

    it('only a socket is replaced: a regular file or a directory at --admin-socket is left as it is (exit 1, named)', async () => {
      const { dir, cleanup } = await tempDir('fts-notsock-');
      cleanups.push(cleanup);
      const file = path.join(dir, 'notes.txt');
      await writeFile(file, 'precious\n');
      const folder = path.join(dir, 'folder');
      await mkdir(folder);
      await writeFile(path.join(dir, 'users'), `${ALICE.user}:${ALICE.password}\n`);
      await chmod(path.join(dir, 'users'), 0o600);
      for (const [target, what] of [[file, 'a regular file'], [folder, 'a directory']] as const) {
        const r = await runServerOnce(
          ['--port', '0', '--host', '127.0.0.1', '--metrics-port', '0', '--storage', path.join(dir, 'storage'), '--users', path.join(dir, 'users'), '--workers', '1', '--admin-socket', target],
          { timeoutMs: 15_000 },
        );
        expect(r.timedOut).to.equal(false);
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.equal(`fts-server: admin socket ${target} is ${what}, not a socket; not replacing it (remove it, or choose another --admin-socket)\n`);
      }
      expect(await readFile(file, 'utf8')).to.equal('precious\n');
      expect((await lstat(folder)).isDirectory()).to.equal(true);
    });

    it('a server whose socket path was taken over by a newer server leaves the newer one\'s socket when it stops', async () => {
      const first = await startServer({ workers: 1 });
      await rm(first.adminSocket); // an operator removed it, and started another server there
      const { dir, cleanup } = await tempDir('fts-takeover-');
      cleanups.push(cleanup);
      const second = await startServer({ workers: 1, args: ['--admin-socket', first.adminSocket], storage: path.join(dir, 'storage') }, first.adminSocket);
      expect((await statusJson(first.adminSocket)).pid).to.equal(second.pid);
      expect(await first.halt()).to.deep.equal({ code: 0, signal: null });
      expect((await lstat(first.adminSocket)).isSocket(), 'the newer server\'s socket is still there').to.equal(true);
      expect((await statusJson(first.adminSocket)).pid).to.equal(second.pid);
      expect((await readdir(path.dirname(first.adminSocket))).filter((n) => n.startsWith('.fts-admin-')), 'no binding name left').to.deep.equal([]);
    });
  });
});
