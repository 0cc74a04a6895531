/**
 * Scale-out: two fts nodes on ONE storage root behind a real HAProxy (docs/SCALE-OUT.md, deploy/README.md).
 *
 * Both nodes run with --proxy-protocol and the same --cluster-secret-file; HAProxy's configuration is
 * derived from deploy/haproxy/haproxy.cfg (test/helpers/multinode-haproxy.ts), health check and PROXY v2
 * included. Checked here:
 *
 *   - the health check (greeting over PROXY v2) marks both nodes UP, and the PROXY header carries the client
 *     address into the nodes' audit lines (HAProxy connects from 127.0.0.2, clients from 127.0.0.1);
 *   - a token issued by one node logs in on the other; an upload cut on node A resumes on node B;
 *   - 32 ResilientClient sessions run a mixed workload (uploads 64 KiB–4 MiB, verified downloads, views,
 *     lists, deletes, same-name races across the nodes) while node A is drained with `fts-admin drain`
 *     and restarted on the same port and storage (a rolling restart); afterwards: no failed operation, no
 *     wrong byte seen by any client or found in the storage, no staging leftovers except resumable parts
 *     of interrupted uploads, no lock left, HAProxy marked node A DOWN and sent it nothing until it came
 *     back, and the restarted node serves new sessions and accepts tokens issued before the restart.
 *
 * HAProxy is required (.ci/install-debian installs it): without it the suite fails with instructions.
 * Every process is stopped by pid in after(); every temporary file is removed.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ResilientClient } from '../../client/index.js';
import { encodeData, encodeHeader, type Header } from '../../protocol/index.js';
import { stagingKey } from '../../server/storage/staging.js';
import { sessionsJson, startAdmin, waitWorkersReady, type AdminResult } from '../helpers/admin-cli.js';
import { freePort, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { dataFrames, DIRECT_SOURCE, loginDirect, openDirect, uploadFrom } from '../helpers/multinode-direct.js';
import { DEPLOY_HAPROXY_CFG, deriveHaproxyConfig, haproxyBinary, HaproxyProcess } from '../helpers/multinode-haproxy.js';
import { fileSha256, lockLeftovers, scanPublished, stagingParts } from '../helpers/multinode-storage.js';
import { Ledger, WorkloadClient, type OpRecord } from '../helpers/multinode-workload.js';
import { SERVER_MAIN } from '../helpers/paths.js';
import { FaultProxy } from '../helpers/proxy.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer, type LogLine } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;
const MiB = 1024 * 1024;
const WORKERS = 2;
const GRACE_SECONDS = 20;
const CLIENTS = 32;
/** Clients that connect after the restarted node is back, so that roundrobin sends some of them to it. */
const LATE_CLIENTS = 4;
/** Racers per user: they upload different contents to one shared name and download it. */
const RACERS_PER_USER = 4;
const RUN_MS = 24_000;
const DRAIN_AT_MS = 7_000;
const FILE_OPS: ReadonlySet<unknown> = new Set(['upload', 'download', 'view', 'delete', 'list']);

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
const timeOf = (l: LogLine): number => Date.parse(String(l['time']));
const str = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

function describeOps(ops: readonly OpRecord[], max = 40): string {
  const lines = ops.slice(0, max).map((o) => `  client ${o.client} ${o.user} ${o.op} ${o.name ?? ''} after ${o.ms} ms, ${o.reconnects} reconnects: ${o.code ?? ''} ${o.message ?? ''}`);
  if (ops.length > max) lines.push(`  … and ${ops.length - max} more`);
  return lines.join('\n');
}

/** Authenticated-session log lines (auth successes and file operations) of a node. */
function sessionLines(server: TestServer): LogLine[] {
  return server.lines.filter((l) => (l['event'] === 'auth' && l['result'] === 'success') || (FILE_OPS.has(l['event']) && typeof l['user'] === 'string'));
}

/** Sends one request on a raw connection and returns its final reply header. */
async function ask(c: RawClient, header: Header, timeoutMs = 15_000): Promise<Header> {
  c.sendHeader(header);
  return (await c.reply(timeoutMs)).final;
}

describe('scale-out: two fts nodes on one storage behind HAProxy', function () {
  this.timeout(120_000);

  let work = '';
  let cleanupWork: () => Promise<void> = async () => undefined;
  let storage = '';
  let secretFile = '';
  let nodeA: TestServer | null = null;
  let nodeB: TestServer | null = null;
  /** Node A after the rolling restart (same port, same storage). */
  let nodeA2: TestServer | null = null;
  let haproxy: HaproxyProcess | null = null;
  let frontendPort = 0;
  let portA = 0;
  const ledger = new Ledger();
  const raws: RawClient[] = [];
  /** A token node A issued before the rolling restart (for the last test). */
  let tokenFromA: string | null = null;

  // --login-timeout 10 only shortens the failure path (a login that hangs); logins here take milliseconds.
  // debug: the health checks' session-end lines are at debug level (they would flood an info log).
  const nodeArgs = (): string[] => ['--proxy-protocol', '--cluster-secret-file', secretFile, '--grace', String(GRACE_SECONDS), '--login-timeout', '10', '--log-level', 'debug'];
  const A = (): TestServer => {
    if (nodeA === null) throw new Error('node A did not start');
    return nodeA;
  };
  const B = (): TestServer => {
    if (nodeB === null) throw new Error('node B did not start');
    return nodeB;
  };
  const H = (): HaproxyProcess => {
    if (haproxy === null) throw new Error('HAProxy did not start');
    return haproxy;
  };
  const direct = async (port: number, who = ALICE): Promise<{ client: RawClient; reply: Header }> => {
    const r = await loginDirect(port, who.user, who.password);
    raws.push(r.client);
    return r;
  };

  before(async function () {
    this.timeout(60_000);
    haproxyBinary(); // fails with the install instructions when HAProxy is missing
    ({ dir: work, cleanup: cleanupWork } = await tempDir('fts-multinode-'));
    storage = path.join(work, 'storage');
    secretFile = path.join(work, 'cluster.secret');
    await writeFile(secretFile, randomBytes(48), { mode: 0o600 });
    await chmod(secretFile, 0o600);
    nodeA = await TestServer.start({ workers: WORKERS, storage, args: nodeArgs() });
    nodeB = await TestServer.start({ workers: WORKERS, storage, args: nodeArgs() });
    portA = nodeA.port;
    await waitWorkersReady(nodeA.adminSocket, WORKERS);
    await waitWorkersReady(nodeB.adminSocket, WORKERS);

    frontendPort = await freePort();
    const statsSocket = path.join(work, 'haproxy.sock');
    const cfgPath = path.join(work, 'haproxy.cfg');
    const cfg = deriveHaproxyConfig(await readFile(DEPLOY_HAPROXY_CFG, 'utf8'), {
      frontendPort,
      statsSocket,
      servers: [
        { name: 'node-a', port: nodeA.port },
        { name: 'node-b', port: nodeB.port },
      ],
    });
    await writeFile(cfgPath, cfg);
    haproxy = await HaproxyProcess.start(cfgPath, statsSocket);
    await haproxy.waitUp('node-a', 15_000);
    await haproxy.waitUp('node-b', 15_000);
  });

  after(async function () {
    this.timeout(60_000);
    for (const c of raws.splice(0)) c.close();
    await haproxy?.stop();
    for (const s of [nodeA2, nodeA, nodeB]) await s?.stop();
    await cleanupWork();
  });

  it('HAProxy health-checks both nodes by their greeting, over PROXY v2, from its own address', async function () {
    for (const name of ['node-a', 'node-b']) {
      const row = await H().server(name);
      expect(row['status'], `${name} status`).to.equal('UP');
      expect(row['check_status'], `${name} check_status (L7OK: the expected greeting arrived)`).to.equal('L7OK');
    }
    // The check connects with a PROXY v2 LOCAL header (check-send-proxy), so the node sees HAProxy's own
    // address (source 127.0.0.2) for it, and the check session ends before any login.
    for (const [label, node] of [['A', A()], ['B', B()]] as const) {
      const checks = await waitUntil(`health-check sessions on node ${label}`, () => {
        const found = node.lines.filter((l) => l['event'] === 'session-end' && l['healthCheck'] === true && l['user'] === null && str(l['remote']).startsWith('127.0.0.2:'));
        return found.length > 0 ? found : undefined;
      });
      expect(checks.length).to.be.greaterThan(0);
    }
  });

  it('regression (fixed): --proxy-protocol: a node reads the requests that follow the PROXY v2 header (server/worker/proxy-protocol.ts readProxyHeader pauses the socket and nothing resumes it)', async function () {
    for (const [label, node] of [['A', A()], ['B', B()]] as const) {
      const c = await openDirect(node.port); // the greeting does arrive: the server writes it without reading
      raws.push(c);
      let answer: string;
      try {
        answer = JSON.stringify(await ask(c, { op: 'noop', id: 1 }, 5_000));
      } catch (err) {
        answer = err instanceof Error ? err.message : String(err);
      }
      expect(answer, `node ${label}: reply to a noop sent after the PROXY header`).to.equal('{"id":1,"status":"ok"}');
      c.close();
    }
  });

  it('--proxy-protocol: a connection without a PROXY v2 header is closed and reported at warn, once a minute at most', async function () {
    const refusals = (): LogLine[] => A().lines.filter((l) => l['event'] === 'rejected' && l['reason'] === 'proxy_header');
    const before = refusals().length;
    for (let i = 0; i < 2; i++) {
      // An fts client that bypasses the load balancer: its first bytes are a header frame, not a PROXY header.
      const c = await RawClient.connect(A().port);
      raws.push(c);
      c.write(encodeHeader({ op: 'noop', id: 1 }));
      expect(await c.waitClosed(10_000), `bad connection ${i + 1} closed`).to.equal(true);
    }
    const lines = await waitUntil('the refusal line', () => (refusals().length > before ? refusals() : undefined), 10_000, 50);
    await sleep(300);
    expect(refusals().length - before, 'two refusals in a minute: at most one line (one per worker, and either may take both)').to.be.at.most(WORKERS);
    const last = lines[lines.length - 1]!;
    expect(last['level']).to.equal('warn');
    expect(last['problem']).to.equal('not a PROXY protocol v2 header');
    expect(str(last['remote'])).to.match(/^127\.0\.0\.1:\d+$/);
    expect(last['refusedSinceLastLine']).to.be.a('number').and.to.be.at.least(1);
  });

  it('the PROXY v2 header carries the client address and port into the audit lines of whichever node serves it', async function () {
    const served: string[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await RawClient.connect(frontendPort);
      raws.push(c);
      const localPort = c.socket.localPort;
      expect((await c.nextHeader())['status'], 'greeting through HAProxy').to.equal('hello');
      const auth = await ask(c, { op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
      expect(auth['status'], `login through HAProxy: ${JSON.stringify(auth)}`).to.equal('ok');
      const list = await ask(c, { op: 'list', id: 2, long: false });
      expect(list['status'], `list through HAProxy: ${JSON.stringify(list)}`).to.equal('ok');
      const remote = `127.0.0.1:${String(localPort)}`;
      const where = await waitUntil(`the audit line of list from ${remote}`, () => {
        const onA = A().lines.filter((l) => l['event'] === 'list' && l['remote'] === remote);
        const onB = B().lines.filter((l) => l['event'] === 'list' && l['remote'] === remote);
        if (onA.length + onB.length === 0) return undefined;
        expect(onA.length + onB.length, `list lines from ${remote}`).to.equal(1);
        return onA.length === 1 ? 'A' : 'B';
      });
      served.push(where);
      c.close();
    }
    expect([...served].sort(), 'balance roundrobin sends two consecutive sessions to different nodes').to.deep.equal(['A', 'B']);
  });

  it('a session token issued by node A logs in on node B, and one issued by B on A (shared --cluster-secret-file)', async function () {
    const { reply: fromA } = await direct(A().port, ALICE);
    const { reply: fromB } = await direct(B().port, BOB);
    expect(fromA['token'], 'node A issues a token').to.be.a('string');
    expect(fromB['token'], 'node B issues a token').to.be.a('string');
    tokenFromA = str(fromA['token']);
    for (const [node, token, who] of [
      [B(), tokenFromA, ALICE.user],
      [A(), str(fromB['token']), BOB.user],
    ] as const) {
      const c = await openDirect(node.port);
      raws.push(c);
      const auth = await ask(c, { op: 'auth', id: 1, mech: 'token', token });
      expect(auth['status'], `token login on the other node: ${JSON.stringify(auth)}`).to.equal('ok');
      expect(auth['user']).to.equal(who);
      const list = await ask(c, { op: 'list', id: 2, long: false });
      expect(list['status'], `the token session works: ${JSON.stringify(list)}`).to.equal('ok');
      c.close();
    }
    const remote = `${DIRECT_SOURCE.address}:${DIRECT_SOURCE.port}`;
    await waitUntil('node B logging the token login', () => B().lines.some((l) => l['event'] === 'auth' && l['mech'] === 'token' && l['result'] === 'success' && l['user'] === ALICE.user && l['remote'] === remote));
  });

  it('an upload cut on node A resumes on node B from the durable offset, and the file is intact', async function () {
    const name = 'cross-node-resume.bin';
    const data = randomBytes(6 * MiB);
    const sha = sha256(data);
    const half = 3 * MiB;
    ledger.addVersion(ALICE.user, name, sha);
    const { client: up } = await direct(A().port);
    up.write(encodeHeader({ op: 'upload', id: 2, name, size: data.length, sha256: sha }), dataFrames(data.subarray(0, half)));

    const { client: probe } = await direct(B().port);
    let id = 10;
    const offsetOnB = async (): Promise<number> => {
      const r = await ask(probe, { op: 'offset', id: ++id, name, size: data.length, sha256: sha });
      expect(r['status'], `offset on node B: ${JSON.stringify(r)}`).to.equal('ok');
      return Number(r['offset']);
    };
    await waitUntil('node B to see the 3 MiB node A staged', async () => (await offsetOnB()) >= half, 20_000, 100);

    up.close(); // the connection to node A is cut in the middle of the upload
    const cut = await waitUntil('node A to log the cut upload', () => A().lines.find((l) => l['event'] === 'upload' && l['file'] === name));
    expect(cut['result'], 'the cut upload is not published by node A').to.equal('error');

    const k = await offsetOnB();
    expect(k, 'durable offset seen from node B after the cut').to.equal(half);
    probe.write(uploadFrom(++id, name, data, k, sha));
    const done = (await probe.reply(30_000)).final;
    expect(done['status'], `resumed upload on node B: ${JSON.stringify(done)}`).to.equal('ok');
    expect(done['sha256']).to.equal(sha);
    expect(done['size']).to.equal(data.length);
    const resumed = await waitUntil('node B to log the resumed upload', () => B().lines.find((l) => l['event'] === 'upload' && l['file'] === name && l['result'] === 'ok'));
    expect(resumed['bytes'], 'node B received only the bytes after the offset').to.equal(data.length - half);

    // Read back through node A, and from the storage itself.
    const { client: reader } = await direct(A().port);
    reader.sendHeader({ op: 'download', id: 2, name });
    const got = await reader.reply(30_000);
    expect(got.final['status'], JSON.stringify(got.final)).to.equal('ok');
    expect(sha256(Buffer.concat(got.data)), 'downloaded from node A').to.equal(sha);
    expect(await fileSha256(path.join(storage, ALICE.user, name)), 'published file in the storage').to.equal(sha);
    const key = stagingKey(name, data.length, sha);
    const left = (await stagingParts(storage)).filter((p) => p.key === key);
    expect(left, 'partial files of the resumed upload left in staging').to.deep.equal([]);
  });

  describe(`${CLIENTS} resilient clients through HAProxy while node A is drained and restarted`, function () {
    const clients: WorkloadClient[] = [];
    const seed = Date.now() % 1_000_000;
    let startedAt = 0;
    let drainStartedAt = 0;
    let drain: AdminResult | null = null;
    let downAt: number | null = null;
    let downError: string | null = null;
    let stotAtDown = -1;
    let stotBeforeRestart = -1;
    let upAgainAt: number | null = null;
    let ran = false;
    let runError: string | null = null;

    const makeClient = (index: number): WorkloadClient => {
      // Users go in pairs (alice, alice, bob, bob, …): HAProxy alternates nodes for consecutive connections,
      // so each user, and each raced name, gets sessions on both nodes.
      const who = (index >> 1) % 2 === 0 ? ALICE : BOB;
      const racer = index < RACERS_PER_USER * 2 || index >= CLIENTS;
      const c = new WorkloadClient({
        index,
        user: who.user,
        password: who.password,
        host: '127.0.0.1',
        port: frontendPort,
        dir: path.join(work, 'clients', `c${index}`),
        ledger,
        raceName: racer ? `race-${who.user}.bin` : null,
        seed: seed * 100 + index,
      });
      clients.push(c);
      return c;
    };

    before(async function () {
      this.timeout(110_000);
      try {
        await runWorkload();
        ran = true;
      } catch (err) {
        // Reported by every test below, so that each property shows up as failed rather than skipped.
        runError = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
    });

    async function runWorkload(): Promise<void> {
      // Connect one at a time: 32 simultaneous logins would meet the nodes' MaxStartups early drop, and
      // ResilientClient does not retry a first connection.
      const first: WorkloadClient[] = [];
      for (let i = 0; i < CLIENTS; i++) {
        const c = makeClient(i);
        await c.connect();
        first.push(c);
      }
      startedAt = Date.now();
      const deadline = startedAt + RUN_MS;
      const runs = first.map((c) => c.run(deadline));

      await sleep(DRAIN_AT_MS);
      const oldA = A();
      drainStartedAt = Date.now();
      const admin = startAdmin(oldA.adminSocket, ['drain'], 60_000);
      try {
        const row = await H().waitDown('node-a', 10_000);
        downAt = Date.now();
        stotAtDown = Number(row['stot']);
      } catch (err) {
        downError = err instanceof Error ? err.message : String(err);
      }
      drain = await admin.done;
      await oldA.waitForExit(40_000);
      stotBeforeRestart = Number((await H().server('node-a'))['stot']);

      // Rolling restart: the same port (HAProxy's configuration names it) and the same storage.
      nodeA2 = await TestServer.start({ workers: WORKERS, storage, args: [...nodeArgs(), '--port', String(portA)] });
      await waitWorkersReady(nodeA2.adminSocket, WORKERS);
      await H().waitUp('node-a', 15_000);
      upAgainAt = Date.now();
      const lateDeadline = Math.max(deadline, upAgainAt + 6_000);
      for (let i = 0; i < LATE_CLIENTS; i++) {
        const c = makeClient(CLIENTS + i);
        await c.connect();
        runs.push(c.run(lateDeadline));
      }
      await Promise.all(runs);
      for (const c of clients) await c.quit();
    }

    after(function () {
      for (const c of clients) c.close();
    });

    const requireRun = (): void => {
      if (!ran) throw new Error(`the workload did not complete: ${runError ?? 'unknown reason'}`);
    };

    it('HAProxy spreads the sessions over both nodes', function () {
      requireRun();
      const logins = (s: TestServer): number => s.lines.filter((l) => l['event'] === 'auth' && l['result'] === 'success' && timeOf(l) >= startedAt - 60_000 && str(l['remote']).startsWith('127.0.0.1:')).length;
      expect(logins(A()), 'client logins on node A before its drain').to.be.at.least(CLIENTS / 4);
      expect(logins(B()), 'client logins on node B').to.be.at.least(CLIENTS / 4);
    });

    it('every client operation succeeds: 0 failed operations across the drain and the rolling restart', function () {
      requireRun();
      const failures = ledger.failures();
      const reconnects = clients.reduce((n, c) => n + c.reconnects, 0);
      const summary = ['upload', 'download', 'view', 'list', 'delete', 'race-upload', 'race-download'].map((op) => `${op} ${ledger.ops.filter((o) => o.op === op).length}`).join(', ');
      console.log(`      workload: ${ledger.ops.length} operations (${summary}), ${failures.length} failed, ${reconnects} reconnections, seed ${seed}`);
      const hint = failures.some((f) => f.op === 'delete' && f.code === 'SHUTTING_DOWN') ? '\n  (a delete failing with SHUTTING_DOWN is the ResilientClient bug pinned by "BUG ResilientClient.delete …" below)' : '';
      expect(failures.length, `failed operations (of ${ledger.ops.length}: ${summary}; seed ${seed}):\n${describeOps(failures)}${hint}`).to.equal(0);
      expect(ledger.ops.length, 'operations done').to.be.at.least(300);
      for (const c of clients) expect(ledger.ops.filter((o) => o.client === c.o.index).length, `operations of client ${c.o.index}`).to.be.at.least(3);
      const moved = clients.filter((c) => c.reconnects > 0).length;
      expect(moved, 'clients that reconnected (the drain must have moved node A\'s sessions)').to.be.at.least(CLIENTS / 4);
    });

    it('no client ever received wrong data, and the same-name races ran on both nodes', function () {
      requireRun();
      expect(ledger.integrity, 'wrong data seen by clients').to.deep.equal([]);
      expect(ledger.count('race-download'), 'verified downloads of the raced names').to.be.at.least(10);
      expect(ledger.count('download') + ledger.count('view') + ledger.count('list'), 'verified reads').to.be.at.least(100);
      for (const who of [ALICE, BOB]) {
        const name = `race-${who.user}.bin`;
        expect(ledger.versions.get(`${who.user}/${name}`)?.size ?? 0, `versions uploaded to ${name}`).to.be.at.least(4);
        const publishedBy = (s: TestServer | null): number => (s === null ? 0 : s.lines.filter((l) => l['event'] === 'upload' && l['file'] === name && l['user'] === who.user && l['result'] === 'ok').length);
        expect(publishedBy(nodeA) + publishedBy(nodeA2), `${name} published by node A`).to.be.greaterThan(0);
        expect(publishedBy(nodeB), `${name} published by node B`).to.be.greaterThan(0);
      }
    });

    it('the shared storage holds only whole, acknowledged versions: no corrupted, lost or resurrected file', async function () {
      requireRun();
      const { files, odd } = await scanPublished(storage);
      expect(odd, 'entries in user directories that are not regular files').to.deep.equal([]);
      const corrupt = files.filter((f) => !(ledger.versions.get(`${f.user}/${f.name}`)?.has(f.sha256) ?? false)).map((f) => `${f.user}/${f.name} (${f.size} bytes, ${f.sha256})`);
      expect(corrupt, 'published files whose bytes match no upload of that name').to.deep.equal([]);
      const onDisk = new Map(files.map((f) => [`${f.user}/${f.name}`, f.sha256]));
      const wrong: string[] = [];
      for (const [key, s] of ledger.own) {
        const found = onDisk.get(key);
        if (s.state === 'present' && found !== s.sha256) wrong.push(`${key}: acknowledged ${s.sha256}, storage has ${found ?? 'nothing'}`);
        if (s.state === 'absent' && found !== undefined) wrong.push(`${key}: deleted (acknowledged), storage still has it`);
        if (s.state === 'in-flight') wrong.push(`${key}: upload never finished`);
      }
      expect(wrong, 'own files whose final state differs from what the clients were told').to.deep.equal([]);
      expect(files.length, 'published files checked').to.be.at.least(CLIENTS);
    });

    it('no staging leftovers except resumable parts of interrupted uploads, and no lock left behind', async function () {
      requireRun();
      const parts = await stagingParts(storage);
      const unexplained = parts.filter((p) => p.key === null || !ledger.interruptedKeys.has(`${p.user}/${p.key}`)).map((p) => `${p.user}/${p.file} (${p.size} bytes)`);
      expect(unexplained, `staging files that belong to no interrupted upload (${parts.length} in staging)`).to.deep.equal([]);
      expect(await lockLeftovers(storage), 'lock directories left under .fts/locks').to.deep.equal([]);
    });

    it('fts-admin drain stops node A; HAProxy marks it DOWN within seconds and sends it nothing until it is back', function () {
      requireRun();
      expect(drain?.code, `fts-admin drain exit code (stdout: ${drain?.stdout ?? ''} stderr: ${drain?.stderr ?? ''})`).to.equal(0);
      expect(downError, 'HAProxy marking node A DOWN').to.equal(null);
      expect((downAt ?? Infinity) - drainStartedAt, 'ms from drain to DOWN').to.be.below(5_000);
      expect(stotBeforeRestart, 'sessions HAProxy sent to node A while it was DOWN').to.equal(stotAtDown);
      // On node A itself: no operation started after its worker began draining (it answers SHUTTING_DOWN).
      const old = A();
      const drainingAt = new Map<unknown, number>();
      for (const l of old.lines) if (l.msg === 'draining' && !drainingAt.has(l['worker'])) drainingAt.set(l['worker'], timeOf(l));
      expect(drainingAt.size, 'node A workers that logged "draining"').to.equal(WORKERS);
      const late = old.lines.filter((l) => {
        const since = drainingAt.get(l['worker']);
        return FILE_OPS.has(l['event']) && since !== undefined && timeOf(l) - Number(l['durationMs']) > since + 2;
      });
      expect(late.map((l) => `${str(l['event'])} ${str(l['file'])} at ${str(l['time'])}`), 'operations node A started after it began draining').to.deep.equal([]);
    });

    it('behind HAProxy every session is logged with its client address, never with HAProxy\'s', function () {
      requireRun();
      const bad: string[] = [];
      for (const [label, node] of [['A', nodeA], ['A (restarted)', nodeA2], ['B', nodeB]] as const) {
        if (node === null) continue;
        for (const l of sessionLines(node)) {
          const remote = str(l['remote']);
          if (!remote.startsWith('127.0.0.1:') && remote !== `${DIRECT_SOURCE.address}:${DIRECT_SOURCE.port}`) bad.push(`node ${label}: ${str(l['event'])} from ${remote}`);
        }
      }
      expect(bad.slice(0, 20), `${bad.length} session lines with an address other than the client's`).to.deep.equal([]);
    });

    it('the restarted node A rejoins: HAProxy marks it UP and it serves new sessions', function () {
      requireRun();
      expect(upAgainAt, 'node A UP again in HAProxy').to.not.equal(null);
      const node = nodeA2;
      if (node === null) throw new Error('node A was not restarted');
      const logins = node.lines.filter((l) => l['event'] === 'auth' && l['result'] === 'success' && str(l['remote']).startsWith('127.0.0.1:'));
      expect(logins.length, 'client logins on the restarted node A').to.be.at.least(1);
      const ops = node.lines.filter((l) => FILE_OPS.has(l['event']) && l['result'] === 'ok' && str(l['remote']).startsWith('127.0.0.1:'));
      expect(ops.length, 'operations served by the restarted node A').to.be.at.least(1);
    });

    it('a token issued by node A before the rolling restart logs in on the restarted node A', async function () {
      requireRun();
      const node = nodeA2;
      if (node === null) throw new Error('node A was not restarted');
      if (tokenFromA === null) throw new Error('no token was issued by node A (the token test did not run)');
      const c = await openDirect(node.port);
      raws.push(c);
      const auth = await ask(c, { op: 'auth', id: 1, mech: 'token', token: tokenFromA });
      expect(auth['status'], JSON.stringify(auth)).to.equal('ok');
      expect(auth['user']).to.equal(ALICE.user);
      c.close();
    });
  });
});

/** Starts fts-server with `args` and reports whether it got to "listening" or exited first (bounded; stopped by pid). */
async function tryStart(args: string[], dir: string): Promise<{ listening: boolean; code: number | null; stderr: string }> {
  const usersFile = path.join(dir, 'users.txt');
  await writeFile(usersFile, `${ALICE.user}:${ALICE.password}\n`, { mode: 0o600 });
  const child = spawn(
    process.execPath,
    [SERVER_MAIN, '--port', '0', '--workers', '1', '--storage', path.join(dir, 'storage'), '--users', usersFile, '--admin-socket', path.join(dir, 'admin.sock'), '--metrics-port', 'off', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null && !stdout.includes('listening on')) await sleep(50);
  const listening = stdout.includes('listening on');
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGINT');
    const stopped = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!stopped) child.kill('SIGKILL');
  }
  return { listening, code: await exited, stderr };
}

describe('scale-out: the cluster secret file', function () {
  this.timeout(60_000);
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  const servers: TestServer[] = [];
  const raws: RawClient[] = [];

  beforeEach(async function () {
    ({ dir, cleanup } = await tempDir('fts-secret-'));
  });

  afterEach(async function () {
    this.timeout(30_000);
    for (const c of raws.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.stop();
    await cleanup();
  });

  it('regression (fixed): distinct secret files whose bytes are not UTF-8 sign interchangeable tokens (server/primary/main.ts loadSecret decodes the file as UTF-8)', async function () {
    // Two different 48-byte secrets. Decoded as UTF-8, every byte of either is invalid and becomes U+FFFD,
    // so both nodes end up with the same key.
    const one = path.join(dir, 'one.secret');
    const two = path.join(dir, 'two.secret');
    await writeFile(one, Buffer.alloc(48, 0xff), { mode: 0o600 });
    await writeFile(two, Buffer.alloc(48, 0x80), { mode: 0o600 });
    const a = await TestServer.start({ workers: 1, args: ['--cluster-secret-file', one] });
    servers.push(a);
    const b = await TestServer.start({ workers: 1, args: ['--cluster-secret-file', two] });
    servers.push(b);
    const { client: c1 } = await RawClient.open(a.port);
    raws.push(c1);
    const issued = await ask(c1, { op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
    expect(issued['status']).to.equal('ok');
    const { client: c2 } = await RawClient.open(b.port);
    raws.push(c2);
    const reply = await ask(c2, { op: 'auth', id: 1, mech: 'token', token: str(issued['token']) });
    expect(reply['status'], `a token signed under secret file one, presented to a node with secret file two: ${JSON.stringify(reply)}`).to.equal('error');
    expect(reply['code']).to.equal('AUTH_FAILED');
  });

  it('regression (fixed): a cluster secret file of 11 bytes is accepted when its bytes are not UTF-8 (the 32-byte minimum is checked after decoding)', async function () {
    const secret = path.join(dir, 'short.secret');
    await writeFile(secret, Buffer.alloc(11, 0xff), { mode: 0o600 });
    const r = await tryStart(['--cluster-secret-file', secret], dir);
    expect(r.listening, 'fts-server started with an 11-byte cluster secret').to.equal(false);
    expect(r.code, `exit code (stderr: ${r.stderr})`).to.equal(1);
    expect(r.stderr).to.match(/at least 32 bytes/);
  });

  it('a text secret (e.g. `openssl rand -base64 48`) shared by two nodes lets a token from one log in on the other; a different one does not', async function () {
    const shared = path.join(dir, 'shared.secret');
    const other = path.join(dir, 'other.secret');
    await writeFile(shared, `${randomBytes(48).toString('base64')}\n`, { mode: 0o600 });
    await writeFile(other, `${randomBytes(48).toString('base64')}\n`, { mode: 0o600 });
    const a = await TestServer.start({ workers: 1, args: ['--cluster-secret-file', shared] });
    servers.push(a);
    const b = await TestServer.start({ workers: 1, args: ['--cluster-secret-file', shared] });
    servers.push(b);
    const c = await TestServer.start({ workers: 1, args: ['--cluster-secret-file', other] });
    servers.push(c);
    const { client: c1 } = await RawClient.open(a.port);
    raws.push(c1);
    const issued = await ask(c1, { op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
    const token = str(issued['token']);
    const { client: c2 } = await RawClient.open(b.port);
    raws.push(c2);
    expect((await ask(c2, { op: 'auth', id: 1, mech: 'token', token }))['status'], 'same secret').to.equal('ok');
    const { client: c3 } = await RawClient.open(c.port);
    raws.push(c3);
    const refused = await ask(c3, { op: 'auth', id: 1, mech: 'token', token });
    expect(refused['code'], 'different secret').to.equal('AUTH_FAILED');
  });
});

describe('scale-out: a client whose node is drained (rolling restart)', function () {
  this.timeout(60_000);
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  const servers: TestServer[] = [];
  const raws: RawClient[] = [];
  const clients: ResilientClient[] = [];
  let proxy: FaultProxy | null = null;

  beforeEach(async function () {
    ({ dir, cleanup } = await tempDir('fts-rolling-'));
  });

  afterEach(async function () {
    this.timeout(30_000);
    for (const c of clients.splice(0)) c.close();
    for (const c of raws.splice(0)) c.close();
    await proxy?.close();
    proxy = null;
    for (const s of servers.splice(0)) await s.stop();
    await cleanup();
  });

  it('regression (fixed): ResilientClient.delete fails with SHUTTING_DOWN when its node drains, instead of reconnecting and deleting (client/resilient.ts: delete is never repeated)', async function () {
    // Two nodes on one storage behind a plain TCP forwarder (no PROXY protocol, to keep this independent of
    // it), as HAProxy would do: once node X drains, new connections go to node Y.
    const storage = path.join(dir, 'storage');
    const x = await TestServer.start({ workers: 1, storage, args: ['--grace', '20'] });
    servers.push(x);
    const y = await TestServer.start({ workers: 1, storage });
    servers.push(y);
    proxy = await FaultProxy.start(x.port);
    const client = await ResilientClient.connect({ host: '127.0.0.1', port: proxy.port, user: ALICE.user, password: ALICE.password });
    clients.push(client);
    const local = path.join(dir, 'doomed.bin');
    await writeFile(local, randomBytes(4096));
    await client.upload(local, 'doomed.bin');

    // A transfer in flight on node X keeps its drain going; the idle session of `client` stays open and any
    // request on it is answered with the fatal SHUTTING_DOWN, which promises that nothing was done.
    const busy = await RawClient.login(x.port, BOB.user, BOB.password);
    raws.push(busy);
    busy.write(encodeHeader({ op: 'upload', id: 2, name: 'slow.bin', size: 1024 * 1024, sha256: '0'.repeat(64) }), encodeData(Buffer.alloc(4096)));
    await waitUntil('the slow upload to be in flight on node X', async () => (await sessionsJson(x.adminSocket)).some((s) => s.op === 'upload'));
    const admin = startAdmin(x.adminSocket, ['drain'], 40_000);
    await x.waitForLog((l) => l.msg === 'draining', 10_000);
    proxy.retarget(y.port);

    let outcome = 'ok';
    try {
      await client.delete('doomed.bin');
    } catch (err) {
      outcome = err instanceof Error ? `${(err as { code?: string }).code ?? ''} ${err.message}` : String(err);
    }
    busy.close(); // lets node X finish its drain
    expect((await admin.done).code, 'fts-admin drain exit code').to.equal(0);
    expect(outcome, 'ResilientClient.delete while its node drains (expected: reconnect to the other node and delete)').to.equal('ok');
    expect(await fileSha256(path.join(storage, ALICE.user, 'doomed.bin')).then(() => 'still there', () => 'gone'), 'the file after the delete').to.equal('gone');
  });
});
