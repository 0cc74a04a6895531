/**
 * Connection limits, MaxStartups, scored bans and timeouts against a real multi-process server.
 *
 * Attacker traffic always comes from other loopback addresses (127.0.0.2, .3, …) so that per-IP limits and
 * bans never touch the honest client on 127.0.0.1. Every server is started with its own flags in a
 * `before` and stopped (files removed) in the matching `after`; every client is closed in `afterEach`.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { encodeData, encodeHeader, type Header, type ScoredAddress } from '../../protocol/index.js';
import { runAdmin, sessionsJson, statusJson } from '../helpers/admin-cli.js';
import { proxyV2HeaderIpv6 } from '../helpers/multinode-direct.js';
import { metric, metricsPortOf } from '../helpers/hardening-proc.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { delay, rawAlive, rawDownload, rawList, rawUpload, RawClient, sha256, type ConnectOptions } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { stagingKey } from '../../server/storage/staging.js';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;

function expectHello(first: Header, what: string): void {
  expect(first['status'], `${what}: ${JSON.stringify(first)}`).to.equal('hello');
}

function expectBye(first: Header, code: string, reason: string | null, what: string): void {
  expect(first, `${what}: ${JSON.stringify(first)}`).to.include({ status: 'bye', code });
  expect(first['message'], what).to.be.a('string');
  if (reason !== null) expect(String(first['message']), `${what}: the message names the reason`).to.include(reason);
}

async function publishedNames(storage: string, user: string): Promise<string[]> {
  try {
    return (await readdir(path.join(storage, user))).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Shared per-describe bookkeeping: a server and every client opened against it. */
function harness(): {
  server: () => TestServer;
  start: (args: string[], workers?: number) => Promise<void>;
  stop: () => Promise<void>;
  track: <T extends RawClient>(c: T) => T;
  closeAll: () => void;
  greet: (localAddress?: string) => Promise<{ client: RawClient; first: Header }>;
  login: (localAddress?: string) => Promise<RawClient>;
} {
  let srv: TestServer | null = null;
  const clients = new Set<RawClient>();
  const opts = (localAddress?: string): ConnectOptions => ({ port: srv!.port, ...(localAddress ? { localAddress } : {}) });
  const h = {
    server: () => {
      if (srv === null) throw new Error('server not started');
      return srv;
    },
    start: async (args: string[], workers = 2) => {
      srv = await TestServer.start({ workers, args });
    },
    stop: async () => {
      for (const c of clients) c.close();
      clients.clear();
      await srv?.stop();
      srv = null;
    },
    track: <T extends RawClient>(c: T): T => {
      clients.add(c);
      return c;
    },
    closeAll: () => {
      for (const c of clients) c.close();
      clients.clear();
    },
    greet: async (localAddress?: string) => {
      const r = await RawClient.greet(opts(localAddress));
      clients.add(r.client);
      return r;
    },
    login: async (localAddress?: string) => h.track(await RawClient.login(opts(localAddress), ALICE.user, ALICE.password)),
  };
  return h;
}

/** The honest client on 127.0.0.1 logs in and does a full upload / list / download round trip. */
async function honestRoundTrip(h: ReturnType<typeof harness>, name: string, greeted?: RawClient): Promise<void> {
  let c: RawClient;
  if (greeted) {
    c = greeted;
    c.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
    expect((await c.reply()).final['status'], 'honest login').to.equal('ok');
  } else {
    c = await h.login();
  }
  const data = Buffer.from(`honest ${name} ${Date.now()}\n`);
  const up = await rawUpload(c, 2, name, data);
  expect(up, JSON.stringify(up)).to.include({ status: 'ok', name });
  const listed = await rawList(c, 3);
  expect(listed.final['status']).to.equal('ok');
  expect(listed.names).to.include(name);
  const down = await rawDownload(c, 4, name);
  expect(down.final, JSON.stringify(down.final)).to.include({ status: 'ok', sha256: sha256(data) });
  expect(down.bytes.equals(data)).to.equal(true);
  c.close();
}

/**
 * Waits until the primary holds exactly `points` penalty points for `address`, not banned (`fts-admin bans
 * --points`): a penalty travels worker -> primary asynchronously, so a probe made before would prove nothing.
 */
async function scoredAt(adminSocket: string, address: string, points: number): Promise<void> {
  await waitUntil(`${address} at ${points} points, not banned`, async () => {
    const r = await runAdmin(adminSocket, ['bans', '--points', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const seen = (JSON.parse(r.stdout) as ScoredAddress[]).filter((b) => b.address === address);
    // Thrown, so that a timeout names what was listed last.
    if (JSON.stringify(seen) !== JSON.stringify([{ address, secondsLeft: 0, points }])) throw new Error(`listed: ${JSON.stringify(seen)}`);
    return true;
  }, 5_000, 50);
}

describe('limits and bans (real server)', function () {
  this.timeout(60_000);

  describe('per-IP limit (--max-connections-per-ip 3, 2 workers)', function () {
    const h = harness();
    let refusals = 0;

    before(async function () {
      await h.start(['--max-connections-per-ip', '3']);
    });
    afterEach(() => h.closeAll());
    after(() => h.stop());

    it('the 4th connection from 127.0.0.2 gets bye TOO_MANY_CONNECTIONS; 127.0.0.1 still connects and works', async function () {
      const held: RawClient[] = [];
      for (let i = 0; i < 3; i++) {
        const { client, first } = await h.greet('127.0.0.2');
        expectHello(first, `connection ${i + 1} from 127.0.0.2`);
        held.push(client);
      }
      const { client: fourth, first } = await h.greet('127.0.0.2');
      expectBye(first, 'TOO_MANY_CONNECTIONS', 'per_ip_limit', '4th connection from 127.0.0.2');
      refusals++;
      expect(first['retryAfter'], 'no retryAfter for a connection limit').to.equal(undefined);
      expect(await fourth.waitClosed(5_000), 'the refused connection is closed').to.equal(true);
      // The admitted connections are untouched and the honest address is not limited.
      for (const c of held) expect(await rawAlive(c)).to.equal(true);
      await honestRoundTrip(h, 'per-ip-honest.txt');
    });

    it('closing one connection frees exactly one slot', async function () {
      // The previous test's connections, closed by afterEach, free their slots once their workers tell the
      // primary: wait for that, or they would still count against 127.0.0.2 here.
      await waitUntil('the earlier connections closed', async () => (await statusJson(h.server().adminSocket)).connections === 0, 10_000);
      const held: RawClient[] = [];
      for (let i = 0; i < 3; i++) {
        const { client, first } = await h.greet('127.0.0.2');
        expectHello(first, `connection ${i + 1}`);
        held.push(client);
      }
      held[0]!.close();
      // The primary learns of the close asynchronously: retry (bounded) until a new connection is admitted.
      const replacement = await waitUntil(
        'a freed per-IP slot',
        async () => {
          const { client, first } = await h.greet('127.0.0.2');
          if (first['status'] === 'hello') return client;
          refusals++;
          client.close();
          return undefined;
        },
        10_000,
        100,
      );
      expect(await rawAlive(replacement)).to.equal(true);
      const { first } = await h.greet('127.0.0.2');
      expectBye(first, 'TOO_MANY_CONNECTIONS', 'per_ip_limit', 'after the slot was taken again');
      refusals++;
    });

    it('the limit is exact across both workers: 12 near-simultaneous connections, exactly 3 admitted', async function () {
      // The cluster's round-robin hands a burst of connections to whichever worker is free; starting them
      // 10 ms apart (without waiting for any greeting) spreads them over both workers while they still
      // overlap. Every round must admit exactly 3; at least one round must have used both workers.
      let spreadRounds = 0;
      for (const addr of ['127.0.0.12', '127.0.0.13', '127.0.0.14']) {
        const pending: Array<Promise<{ client: RawClient; first: Header }>> = [];
        for (let i = 0; i < 12; i++) {
          pending.push(h.greet(addr));
          await delay(10);
        }
        const results = await Promise.all(pending);
        const statuses = results.map((r) => `${String(r.first['status'])}:${String(r.first['code'] ?? '')}`);
        const admitted = statuses.filter((s) => s === 'hello:').length;
        const refused = statuses.filter((s) => s === 'bye:TOO_MANY_CONNECTIONS').length;
        expect(admitted, `${addr}: ${statuses.join(' ')}`).to.equal(3);
        expect(refused, `${addr}: ${statuses.join(' ')}`).to.equal(9);
        refusals += refused;
        // Where the round's connections went: each worker counts those it holds (the admitted ones, and
        // refused ones still lingering), which is all this test's connections.
        const holding = (await statusJson(h.server().adminSocket)).workers.filter((w) => w.connections > 0).length;
        if (holding === 2) spreadRounds++;
        for (const r of results) r.client.close();
        await waitUntil(`the connections from ${addr} closed`, async () => (await statusJson(h.server().adminSocket)).connections === 0, 10_000);
      }
      expect(spreadRounds, 'rounds whose connections were spread over both workers').to.be.at.least(1);
    });

    it('fts_rejections_total{reason="per_ip_limit"} counts every refusal', async function () {
      const port = await metricsPortOf(h.server());
      expect(await metric(port, 'fts_rejections_total', { reason: 'per_ip_limit' })).to.equal(refusals);
      expect(await metric(port, 'fts_rejections_total', { reason: 'banned' })).to.equal(0);
      // Logged once a minute per reason and worker at most (the first at once), not once per refusal.
      const lines = h.server().lines.filter((l) => l['event'] === 'rejected' && l['reason'] === 'per_ip_limit');
      expect(refusals, 'refusals enough to tell').to.be.at.least(4);
      expect(lines.length, JSON.stringify(lines)).to.be.within(1, 2);
      for (const l of lines) expect(l).to.include({ level: 'info', refusedSinceLastLine: 1 }).and.to.have.property('remote');
      expect(await metric(port, 'fts_bans_active')).to.equal(0);
    });
  });

  describe('total limit (--max-connections 4)', function () {
    const h = harness();

    before(async function () {
      await h.start(['--max-connections', '4']);
    });
    afterEach(() => h.closeAll());
    after(() => h.stop());

    it('refuses the 5th connection cluster-wide with TOO_MANY_CONNECTIONS, frees a slot on close', async function () {
      const held: RawClient[] = [];
      for (let i = 0; i < 4; i++) {
        const { client, first } = await h.greet('127.0.0.2');
        expectHello(first, `connection ${i + 1}`);
        held.push(client);
      }
      let refused = 0;
      for (const addr of ['127.0.0.3', '127.0.0.1']) {
        const { client, first } = await h.greet(addr);
        expectBye(first, 'TOO_MANY_CONNECTIONS', 'max_connections', `5th connection (from ${addr})`);
        refused++;
        expect(await client.waitClosed(5_000)).to.equal(true);
      }
      held[0]!.close();
      // The honest client on 127.0.0.1 retries (bounded) until the freed slot is seen, then works normally.
      const honest = await waitUntil(
        'a freed total slot',
        async () => {
          const { client, first } = await h.greet();
          if (first['status'] === 'hello') return client;
          refused++;
          client.close();
          return undefined;
        },
        10_000,
        100,
      );
      await honestRoundTrip(h, 'total-honest.txt', honest);
      const port = await metricsPortOf(h.server());
      expect(await metric(port, 'fts_rejections_total', { reason: 'max_connections' })).to.equal(refused);
    });
  });

  describe('MaxStartups (--max-startups 2:100:3)', function () {
    const h = harness();

    before(async function () {
      await h.start(['--max-startups', '2:100:3']);
    });
    afterEach(() => h.closeAll());
    after(() => h.stop());

    it('unauthenticated connections beyond start are refused; authenticated ones do not count', async function () {
      let refused = 0;
      const a = await h.greet('127.0.0.2');
      const b = await h.greet('127.0.0.2');
      expectHello(a.first, 'unauthenticated #1');
      expectHello(b.first, 'unauthenticated #2');
      const c = await h.greet('127.0.0.3');
      expectBye(c.first, 'TOO_MANY_CONNECTIONS', 'startups', 'unauthenticated #3 (rate 100: always dropped)');
      refused++;

      // Log the first two in: they leave the unauthenticated budget.
      for (const [i, x] of [a, b].entries()) {
        x.client.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
        const r = await x.client.reply();
        expect(r.final['status'], `login of #${i + 1}`).to.equal('ok');
      }
      await delay(300); // the "authenticated" notice travels worker -> primary asynchronously

      const d = await h.greet('127.0.0.2');
      const e = await h.greet('127.0.0.3');
      expectHello(d.first, 'unauthenticated after two logins (#1)');
      expectHello(e.first, 'unauthenticated after two logins (#2)');
      const f = await h.greet('127.0.0.4');
      expectBye(f.first, 'TOO_MANY_CONNECTIONS', 'startups', 'unauthenticated beyond start again');
      refused++;
      // The authenticated sessions keep working meanwhile.
      expect(await rawAlive(a.client)).to.equal(true);
      expect(await rawAlive(b.client)).to.equal(true);

      // One more login frees a startup slot, and the honest client gets in and works.
      d.client.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
      expect((await d.client.reply()).final['status']).to.equal('ok');
      await delay(300);
      await honestRoundTrip(h, 'startups-honest.txt');

      const port = await metricsPortOf(h.server());
      expect(await metric(port, 'fts_rejections_total', { reason: 'startups' })).to.equal(refused);
    });
  });

  describe('scored bans (--ban-threshold 6 --ban-window 120 --ban-duration 120 --ban-exempt 127.0.0.6,10.0.0.0/8)', function () {
    const h = harness();
    let port = 0;

    before(async function () {
      await h.start(['--ban-threshold', '6', '--ban-window', '120', '--ban-duration', '120', '--ban-exempt', '127.0.0.6,10.0.0.0/8']);
      port = await metricsPortOf(h.server());
    });
    afterEach(() => h.closeAll());
    after(() => h.stop());

    /** One failed login from `addr`: returns how long the AUTH_FAILED reply took. */
    async function failLogin(addr: string): Promise<number> {
      const { client, first } = await h.greet(addr);
      expectHello(first, `connection from ${addr}`);
      const started = Date.now();
      client.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: 'wrong-password' });
      const r = await client.reply(20_000);
      const took = Date.now() - started;
      expect(r.final, JSON.stringify(r.final)).to.include({ status: 'error', code: 'AUTH_FAILED', fatal: true });
      expect(await client.waitClosed(5_000), 'AUTH_FAILED closes the connection').to.equal(true);
      return took;
    }

    it('brute force from 127.0.0.3: growing delays, then bye RATE_LIMITED; 127.0.0.1 unaffected', async function () {
      const bansBefore = await metric(port, 'fts_bans_active');
      const t1 = await failLogin('127.0.0.3');
      const t2 = await failLogin('127.0.0.3');
      // Score 4 < 6: the address may still connect.
      const probe = await h.greet('127.0.0.3');
      expectHello(probe.first, 'after two failed logins (score 4)');
      probe.client.close();
      const t3 = await failLogin('127.0.0.3');
      expect(t1, 'first failed login is delayed ~1 s (score 2 x 500 ms)').to.be.at.least(900);
      expect(t2, 'second failed login is delayed ~2 s').to.be.at.least(1_800);
      expect(t3, 'third failed login is delayed ~3 s').to.be.at.least(2_700);
      expect(t2, 'the delay grows').to.be.greaterThan(t1);
      expect(t3, 'the delay grows').to.be.greaterThan(t2);
      expect(t3, 'delays are capped (5 s) — generous bound').to.be.below(15_000);

      // Score 6: banned. The penalty reaches the primary before the reply was sent, but allow a little slack.
      const refusal = await waitUntil(
        'bye RATE_LIMITED for 127.0.0.3',
        async () => {
          const { client, first } = await h.greet('127.0.0.3');
          client.close();
          return first['status'] === 'bye' ? first : undefined;
        },
        5_000,
        100,
      );
      expectBye(refusal, 'RATE_LIMITED', 'banned', 'connection from a banned address');
      expect(refusal['retryAfter'], JSON.stringify(refusal)).to.be.a('number');
      expect(Number(refusal['retryAfter'])).to.be.within(1, 120);

      await honestRoundTrip(h, 'ban-honest.txt');
      expect(await metric(port, 'fts_bans_active')).to.equal(bansBefore + 1);
      expect(await metric(port, 'fts_rejections_total', { reason: 'banned' })).to.be.at.least(1);
    });

    it('protocol violations from 127.0.0.4 add 3 points each: banned after two', async function () {
      const bansBefore = await metric(port, 'fts_bans_active');
      const bannedBefore = await metric(port, 'fts_rejections_total', { reason: 'banned' });
      const unknownType = Buffer.from([0x00, 0, 0, 0, 1, 0x7b]);
      const tooLarge = Buffer.from([0x48, 0xff, 0xff, 0xff, 0xff]);
      for (const [i, bytes] of [unknownType, tooLarge].entries()) {
        const { client, first } = await h.greet('127.0.0.4');
        expectHello(first, `violation #${i + 1}: connection`);
        client.write(bytes);
        const r = await client.reply();
        expect(r.final, JSON.stringify(r.final)).to.include({ status: 'error', code: i === 0 ? 'PROTOCOL_ERROR' : 'FRAME_TOO_LARGE', fatal: true, id: null });
        expect(await client.waitClosed(5_000)).to.equal(true);
        if (i === 0) {
          await scoredAt(h.server().adminSocket, '127.0.0.4', 3);
          const probe = await h.greet('127.0.0.4');
          expectHello(probe.first, 'after one violation (score 3)');
          probe.client.close();
        }
      }
      const refusal = await waitUntil(
        'bye RATE_LIMITED for 127.0.0.4',
        async () => {
          const { client, first } = await h.greet('127.0.0.4');
          client.close();
          return first['status'] === 'bye' ? first : undefined;
        },
        5_000,
        100,
      );
      expectBye(refusal, 'RATE_LIMITED', 'banned', 'after two protocol violations');
      expect(await metric(port, 'fts_bans_active')).to.equal(bansBefore + 1);
      expect(await metric(port, 'fts_rejections_total', { reason: 'banned' })).to.be.greaterThan(bannedBefore);
      await honestRoundTrip(h, 'violation-honest.txt');
    });

    it('an address in --ban-exempt earns no points: never banned by violations or failed logins, each failed login still answered after ~1 s', async function () {
      const bansBefore = await metric(port, 'fts_bans_active');
      const unknownType = Buffer.from([0x00, 0, 0, 0, 1, 0x7b]);
      for (let i = 0; i < 3; i++) {
        const { client, first } = await h.greet('127.0.0.6');
        expectHello(first, `exempt violation #${i + 1}: connection`);
        client.write(unknownType);
        const r = await client.reply();
        expect(r.final, JSON.stringify(r.final)).to.include({ status: 'error', code: 'PROTOCOL_ERROR', fatal: true });
        expect(await client.waitClosed(5_000)).to.equal(true);
      }
      const delays = [await failLogin('127.0.0.6'), await failLogin('127.0.0.6'), await failLogin('127.0.0.6')];
      for (const [i, took] of delays.entries()) expect(took, `failed login #${i + 1} from an exempt address`).to.be.at.least(900);
      // 9 + 6 points' worth of failures, threshold 6: an address that earned points would be banned by now.
      const probe = await h.greet('127.0.0.6');
      expectHello(probe.first, 'an exempt address after failures worth 15 points');
      probe.client.close();
      const scored = await runAdmin(h.server().adminSocket, ['bans', '--points', '--json']);
      expect((JSON.parse(scored.stdout) as ScoredAddress[]).map((b) => b.address)).to.not.include('127.0.0.6');
      expect(await metric(port, 'fts_bans_active')).to.equal(bansBefore);
    });

    it('fts-admin bans lists a banned address with the time left; unban lifts it (and its points) at once; errors are exit 1 and 2', async function () {
      const banOf = async (): Promise<Array<{ address: string; secondsLeft: number }>> => {
        const r = await runAdmin(h.server().adminSocket, ['bans', '--json']);
        expect(r.code, r.stderr).to.equal(0);
        return (JSON.parse(r.stdout) as Array<{ address: string; secondsLeft: number }>).filter((b) => b.address === '127.0.0.5');
      };
      expect(await banOf(), 'before').to.deep.equal([]);
      for (const _ of [1, 2]) {
        const { client, first } = await h.greet('127.0.0.5');
        expectHello(first, 'a connection from 127.0.0.5');
        client.write(Buffer.from([0x00, 0, 0, 0, 1, 0x7b])); // an unknown frame type: 3 points
        expect(await client.waitClosed(5_000)).to.equal(true);
      }
      const [ban] = await waitUntil('the ban listed', async () => ((await banOf()).length === 1 ? banOf() : undefined), 5_000, 100);
      expect(ban!.secondsLeft).to.be.within(1, 120);
      const text = await runAdmin(h.server().adminSocket, ['bans']);
      expect(text.code, text.stderr).to.equal(0);
      expect(text.stdout.split('\n')[0]).to.match(/^ADDRESS\s+LEFT$/);
      expect(text.stdout).to.match(/^127\.0\.0\.5\s+\S+$/m);

      const lifted = await runAdmin(h.server().adminSocket, ['unban', '127.0.0.5']);
      expect([lifted.code, lifted.stdout, lifted.stderr]).to.deep.equal([0, 'unbanned 127.0.0.5\n', '']);
      expect(await banOf(), 'after unban').to.deep.equal([]);
      const back = await h.greet('127.0.0.5');
      expectHello(back.first, 'a connection from 127.0.0.5 after unban');
      back.client.close();
      // Its points went with the ban: one more violation (3 points) does not ban it again.
      const { client, first } = await h.greet('127.0.0.5');
      expectHello(first, 'again');
      client.write(Buffer.from([0x00, 0, 0, 0, 1, 0x7b]));
      expect(await client.waitClosed(5_000)).to.equal(true);
      // Once the primary has the 3 points (bans --points shows them), the address is still admitted.
      await scoredAt(h.server().adminSocket, '127.0.0.5', 3);
      const listed = await runAdmin(h.server().adminSocket, ['bans', '--points']);
      expect(listed.code, listed.stderr).to.equal(0);
      expect(listed.stdout.split('\n')[0]).to.match(/^ADDRESS\s+LEFT\s+POINTS$/);
      expect(listed.stdout).to.match(/^127\.0\.0\.5\s+-\s+3$/m);
      const still = await h.greet('127.0.0.5');
      expectHello(still.first, 'one violation after unban: not banned');
      still.client.close();

      // Not banned, but with the 3 points of that violation (its failed logins would be answered slowly):
      // unban forgets them; then it has nothing left to forget.
      const forgiven = await runAdmin(h.server().adminSocket, ['unban', '::ffff:127.0.0.5']);
      expect([forgiven.code, forgiven.stdout, forgiven.stderr]).to.deep.equal([0, '127.0.0.5 was not banned; forgot its 3 penalty points\n', '']);
      const nothing = await runAdmin(h.server().adminSocket, ['unban', '127.0.0.5']);
      expect([nothing.code, nothing.stdout, nothing.stderr]).to.deep.equal([1, '', 'fts-admin: 127.0.0.5 is not banned and has no penalty points\n']);
      // Its points are gone: one more violation (3 points) does not ban it, as 3 + 3 would have.
      const once = await h.greet('127.0.0.5');
      expectHello(once.first, 'after the points were forgotten');
      once.client.write(Buffer.from([0x00, 0, 0, 0, 1, 0x7b]));
      expect(await once.client.waitClosed(5_000)).to.equal(true);
      await scoredAt(h.server().adminSocket, '127.0.0.5', 3); // only the new violation counts
      const notBanned = await h.greet('127.0.0.5');
      expectHello(notBanned.first, 'one violation after the points were forgotten: not banned');
      notBanned.client.close();
      const bad = await runAdmin(h.server().adminSocket, ['unban', '127.0.0.999']);
      expect(bad.code).to.equal(2);
      expect(bad.stderr).to.match(/^fts-admin: invalid address '127\.0\.0\.999'/);
    });

    it('regression (fixed): a connection opened before a ban can still try passwords after the ban (the ban is only checked at connect)', async function () {
      // An attacker opens connections first (up to the per-IP limit), then guesses on each of them. The ban
      // must stop the guessing, not only new connections: otherwise every pre-opened connection is one more
      // password check, and the correct password is still confirmed after the address was banned.
      const pre: RawClient[] = [];
      for (let i = 0; i < 4; i++) {
        const { client, first } = await h.greet('127.0.0.10');
        expectHello(first, `pre-opened connection ${i + 1}`);
        pre.push(client);
      }
      for (let i = 0; i < 3; i++) {
        const c = pre[i]!;
        c.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: `guess-${i}` });
        expect((await c.reply(20_000)).final).to.include({ code: 'AUTH_FAILED' });
      }
      const refusal = await waitUntil(
        'bye RATE_LIMITED for 127.0.0.10',
        async () => {
          const { client, first } = await h.greet('127.0.0.10');
          client.close();
          return first['status'] === 'bye' ? first : undefined;
        },
        5_000,
        100,
      );
      expectBye(refusal, 'RATE_LIMITED', 'banned', 'new connection after three failed logins');
      const last = pre[3]!;
      last.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password });
      const r = await last.reply(20_000);
      expect(r.final, `auth from a banned address on a connection opened before the ban: ${JSON.stringify(r.final)}`).to.include({
        status: 'error',
        code: 'RATE_LIMITED',
      });
    });

    it('BAD_NAME adds 1 point per request: the 6th bans the address (the session itself survives)', async function () {
      const c = await h.login('127.0.0.9');
      for (let i = 0; i < 5; i++) {
        c.sendHeader({ op: 'download', id: 10 + i, name: '..' });
        const r = await c.reply();
        expect(r.final, JSON.stringify(r.final)).to.include({ status: 'error', code: 'BAD_NAME', fatal: false });
      }
      await scoredAt(h.server().adminSocket, '127.0.0.9', 5);
      const probe = await h.greet('127.0.0.9');
      expectHello(probe.first, 'score 5: not banned yet');
      probe.client.close();
      c.sendHeader({ op: 'view', id: 20, name: 'a/b' });
      expect((await c.reply()).final).to.include({ code: 'BAD_NAME' });
      const refusal = await waitUntil(
        'bye RATE_LIMITED for 127.0.0.9',
        async () => {
          const { client, first } = await h.greet('127.0.0.9');
          client.close();
          return first['status'] === 'bye' ? first : undefined;
        },
        5_000,
        100,
      );
      expectBye(refusal, 'RATE_LIMITED', 'banned', 'after six bad names');
      expect(await rawAlive(c), 'a ban refuses new connections; the open session goes on').to.equal(true);
    });
  });

  describe('bans behind --proxy-protocol (the client address comes from the PROXY v2 header)', function () {
    let server: TestServer | null = null;
    before(async function () {
      server = await TestServer.start({ workers: 1, args: ['--proxy-protocol', '--ban-threshold', '6', '--ban-window', '120', '--ban-duration', '120'] });
    });
    after(async function () {
      await server?.stop();
    });

    for (const [client, listed, typed] of [
      ['2001:db8::7', '2001:db8::7', '2001:DB8:0:0:0:0:0:7'],
      ['::ffff:a01:203', '10.1.2.3', '::ffff:10.1.2.3'],
    ] as const) {
      it(`an IPv6 client ${client} is banned as ${listed}, and fts-admin unban ${typed} lifts it`, async function () {
        const s = server!;
        for (let i = 0; i < 2; i++) {
          const c = await RawClient.connect(s.port);
          // The header writes the address with 8 groups; then an unknown frame type (3 points).
          await c.write(proxyV2HeaderIpv6({ address: client, port: 40_000 + i }, { address: '::1', port: s.port }), Buffer.from([0x00, 0, 0, 0, 1, 0x7b]));
          expect(await c.waitClosed(5_000), `violation ${i + 1} closed`).to.equal(true);
          c.close();
        }
        const bans = async (): Promise<string[]> => {
          const r = await runAdmin(s.adminSocket, ['bans', '--json']);
          expect(r.code, r.stderr).to.equal(0);
          return (JSON.parse(r.stdout) as Array<{ address: string }>).map((b) => b.address);
        };
        await waitUntil(`${listed} banned`, async () => ((await bans()).includes(listed) ? true : undefined), 5_000, 100);
        const r = await runAdmin(s.adminSocket, ['unban', typed]);
        expect([r.code, r.stdout, r.stderr]).to.deep.equal([0, `unbanned ${listed}\n`, '']);
        expect(await bans()).to.not.include(listed);
      });
    }
  });

  describe('listings per user (two at once in a worker; the others wait)', function () {
    const h = harness();
    const paused: net.Socket[] = [];

    let storage = '';
    const FILES = 70_000;

    before(async function () {
      this.timeout(60_000);
      // On tmpfs when there is one: creating 70,000 files on a journalled disk takes half a minute on a small VM.
      storage = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'fts-listings-'));
      // Long names, so that one long listing (~21 MB of entries) is more than the socket buffers hold, even
      // with loopback buffers tuned to 16 MB.
      const dir = path.join(storage, ALICE.user);
      await mkdir(dir, { recursive: true });
      const stem = 'n'.repeat(232);
      for (let i = 0; i < FILES; i++) writeFileSync(path.join(dir, `${stem}${String(i).padStart(6, '0')}`), '');
      await h.start(['--storage', storage], 1);
    });
    afterEach(() => {
      for (const socket of paused.splice(0)) socket.destroy();
      h.closeAll();
    });
    after(async () => {
      await h.stop();
      if (storage !== '') await rm(storage, { recursive: true, force: true });
    });

    /** A session of alice that asks for a long listing and then reads nothing. */
    async function unreadListing(): Promise<net.Socket> {
      const socket = net.connect(h.server().port, '127.0.0.1');
      socket.on('error', () => undefined);
      paused.push(socket);
      await new Promise<void>((resolve) => socket.once('data', () => resolve())); // the greeting
      socket.write(Buffer.concat([encodeHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password }), encodeHeader({ op: 'list', id: 2, long: true })]));
      socket.pause();
      return socket;
    }

    it("a third listing of the same user waits while two unread ones hold their turn; another user's does not; it runs once one ends", async function () {
      this.timeout(90_000);
      const held = [await unreadListing(), await unreadListing()];
      await waitUntil('both listings under way', async () => ((await sessionsJson(h.server().adminSocket)).filter((s) => s.user === ALICE.user && s.op === 'list').length === 2 ? true : undefined), 30_000, 200);
      const third = await h.login();
      void third.sendHeader({ op: 'list', id: 3 });
      // Not even a first entry: without the limit, the first entries come once the listing is built (~1-3 s).
      const early = await third.next(10_000).then(
        (frame) => `a frame: ${JSON.stringify(frame).slice(0, 200)}`,
        () => 'nothing',
      );
      expect(early, 'the third listing of alice').to.equal('nothing');
      const bob = h.track(await RawClient.login(h.server().port, BOB.user, BOB.password));
      expect((await rawList(bob, 4)).final, "bob's listing meanwhile").to.include({ status: 'ok', count: 0 });

      // A waiting session that is kicked ends at once, not when a slot frees up (and is not counted meanwhile).
      const fourth = await h.login();
      void fourth.sendHeader({ op: 'list', id: 5 });
      const mine = async (): Promise<Array<{ id: string; remote: string }>> => (await sessionsJson(h.server().adminSocket)).filter((s) => s.user === ALICE.user);
      const waiter = await waitUntil('the fourth listing asked', async () => (await mine()).find((s) => s.remote.endsWith(`:${fourth.localPort}`)), 10_000, 100);
      const kicked = await runAdmin(h.server().adminSocket, ['kick', waiter.id]);
      expect(kicked.code, kicked.stderr).to.equal(0);
      // Its end is logged (and its connection uncounted) only once its request has returned.
      await h.server().waitForLog((l) => l['event'] === 'session-end' && l['session'] === waiter.id, 5_000);
      fourth.close();

      held[0]!.destroy(); // its listing ends (ConnectionGone): the third takes the turn
      const r = await third.reply(60_000);
      expect(r.final).to.include({ status: 'ok', id: 3, count: FILES });
      expect(r.interim.filter((x) => x['status'] === 'entry')).to.have.length(FILES);
    });
  });

  describe('timeouts and header limit (--login-timeout 1 --idle-timeout 1 --stall-timeout 1 --max-header-bytes 1024)', function () {
    const h = harness();

    before(async function () {
      await h.start(['--login-timeout', '1', '--idle-timeout', '1', '--stall-timeout', '1', '--max-header-bytes', '1024']);
    });
    afterEach(() => h.closeAll());
    after(() => h.stop());

    it('no auth within 1 s: bye LOGIN_TIMEOUT, connection closed', async function () {
      const { client, first } = await h.greet('127.0.0.5');
      expectHello(first, 'greeting');
      const started = Date.now();
      const bye = await client.nextHeader(10_000);
      const took = Date.now() - started;
      expectBye(bye, 'LOGIN_TIMEOUT', null, 'after 1 s without auth');
      expect(took).to.be.within(800, 8_000);
      expect(await client.waitClosed(5_000)).to.equal(true);
    });

    it('the login timeout is not reset by noops: an unauthenticated client cannot stay connected forever', async function () {
      // LOGIN_TIMEOUT: "No successful auth within the login time limit". noop is allowed before auth, but it
      // must not extend the login deadline, or one client can pin MaxStartups slots indefinitely.
      const { client, first } = await h.greet('127.0.0.5');
      expectHello(first, 'greeting');
      const started = Date.now();
      let bye: Header | null = null;
      for (let i = 0; i < 15 && bye === null && !client.isClosed; i++) {
        client.sendHeader({ op: 'noop', id: 100 + i });
        try {
          const r = await client.reply(2_000);
          if (r.final['status'] === 'bye') bye = r.final;
        } catch {
          break; // closed without a reply
        }
        await delay(300);
      }
      // The bye may already be queued when the loop sees the connection closed: read what is left.
      for (let frame = await client.next(500).catch(() => null); bye === null && frame !== null; frame = await client.next(500).catch(() => null)) {
        if (frame.kind === 'header' && frame.header['status'] === 'bye') bye = frame.header;
      }
      const elapsed = Date.now() - started;
      expect(bye, `still unauthenticated and connected after ${elapsed} ms of noops (login timeout 1 s)`).to.not.equal(null);
      expect(bye).to.include({ code: 'LOGIN_TIMEOUT' });
      expect(elapsed).to.be.below(4_000);
    });

    it('an unauthenticated upload does not keep the connection past the login timeout while data flows', async function () {
      // Before auth, an upload is refused (AUTH_REQUIRED) but its declared data is read and discarded. While
      // it is, the session's only timer is the stall timer, refreshed by every byte, so the login deadline
      // never comes: an anonymous peer can stream to the server for as long as it likes.
      const { client, first } = await h.greet('127.0.0.5');
      expectHello(first, 'greeting');
      client.sendHeader({ op: 'upload', id: 1, name: 'anon.bin', size: 1e12, sha256: 'a'.repeat(64) });
      const started = Date.now();
      const chunk = encodeData(Buffer.alloc(1024, 0x41));
      let bye: Header | null = null;
      for (let i = 0; i < 15 && !client.isClosed; i++) {
        client.write(chunk);
        const f = await client.next(300).catch(() => undefined);
        if (f && f.kind === 'header') {
          bye = f.header;
          break;
        }
      }
      const elapsed = Date.now() - started;
      expect(bye, `unauthenticated, still streaming upload data after ${elapsed} ms (login timeout 1 s)`).to.not.equal(null);
      expect(bye).to.include({ code: 'LOGIN_TIMEOUT' });
    });

    it('a failed login delayed past the login timeout is still answered AUTH_FAILED (not LOGIN_TIMEOUT), then the connection closes', async function () {
      // The failed-login delay grows 1 s, 2 s, 3 s for one address (score 2, 4, 6 x 500 ms), each longer than
      // what is left of the 1 s login timeout. The delay must not hand the answer to the login timer.
      for (let attempt = 1; attempt <= 3; attempt++) {
        const { client, first } = await h.greet('127.0.0.13');
        expectHello(first, `connection ${attempt}`);
        const started = Date.now();
        client.sendHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: 'wrong-password' });
        const r = await client.reply(15_000);
        const took = Date.now() - started;
        expect(r.final, `attempt ${attempt}: ${JSON.stringify(r.final)}`).to.include({ status: 'error', code: 'AUTH_FAILED', fatal: true });
        expect(took, `attempt ${attempt}: answered after the delay (${attempt} s)`).to.be.at.least(attempt * 1_000 - 100);
        expect(took, `attempt ${attempt}: the delay stays bounded`).to.be.below(8_000);
        expect(await client.waitClosed(2_000), `attempt ${attempt}: AUTH_FAILED closes the connection at once`).to.equal(true);
        client.close();
      }
    });

    it('idle for 1 s after auth: bye IDLE_TIMEOUT', async function () {
      const c = await h.login('127.0.0.5');
      const started = Date.now();
      const bye = await c.nextHeader(10_000);
      expectBye(bye, 'IDLE_TIMEOUT', null, 'idle after auth');
      expect(Date.now() - started).to.be.within(800, 8_000);
      expect(await c.waitClosed(5_000)).to.equal(true);
    });

    it('an upload that stops sending mid-data is cut (bye TRANSFER_STALLED) and nothing is published', async function () {
      const c = await h.login('127.0.0.5');
      const data = Buffer.alloc(1024 * 1024, 0x5a);
      c.write(encodeHeader({ op: 'upload', id: 2, name: 'stalled.bin', size: data.length, sha256: sha256(data) }), encodeData(data.subarray(0, 64 * 1024)));
      const started = Date.now();
      const r = await c.reply(15_000);
      expectBye(r.final, 'TRANSFER_STALLED', null, 'stalled upload');
      expect(Date.now() - started).to.be.within(800, 10_000);
      expect(await c.waitClosed(5_000)).to.equal(true);
      expect(await publishedNames(h.server().storage, ALICE.user)).to.not.include('stalled.bin');
      const honest = await h.login();
      expect((await rawList(honest, 2)).names).to.not.include('stalled.bin');
    });

    /** SHA-256 of `zeros` zero bytes followed by `tail`. */
    function zerosThenSha256(zeros: number, tail: Buffer): string {
      const hash = createHash('sha256');
      const piece = Buffer.alloc(1024 * 1024);
      for (let done = 0; done < zeros; done += piece.length) hash.update(piece);
      return hash.update(tail).digest('hex');
    }

    it('a resumed download whose skipped prefix takes the server longer than the stall timeout to hash is not cut', async function () {
      this.timeout(60_000);
      // A sparse file of zeros: it costs no disk, but the server takes seconds to read and hash its prefix.
      const prefix = 2 * 1024 ** 3;
      const tail = Buffer.from('the end\n');
      const file = path.join(h.server().storage, ALICE.user, 'long-prefix.bin');
      const expected = zerosThenSha256(prefix, tail);
      const c = await h.login();
      // Put there directly, so that no digest was recorded at publish: the server must hash the prefix.
      await writeFile(file, Buffer.alloc(0));
      await truncate(file, prefix);
      await appendFile(file, tail);
      try {
        void c.sendHeader({ op: 'download', id: 3, name: 'long-prefix.bin', offset: prefix });
        const r = await c.reply(45_000);
        expect(r.final, JSON.stringify(r.final)).to.include({ status: 'ok', id: 3, sha256: expected });
        expect(Buffer.concat(r.data).equals(tail)).to.equal(true);
      } finally {
        await rm(file, { force: true });
      }
    });

    it('a resumed upload whose staged prefix takes the server longer than the stall timeout to copy is not cut', async function () {
      this.timeout(90_000);
      const name = 'long-staged.bin';
      // The server copies the staged prefix into this attempt's own file (and flushes it as it goes): seconds.
      const prefix = 1024 ** 3;
      const tail = Buffer.from('the end\n');
      const size = prefix + tail.length;
      const sha = zerosThenSha256(prefix, tail);
      // What a cut upload of this identity would have left: its first `prefix` bytes, staged.
      const staging = path.join(h.server().storage, '.fts', 'staging', ALICE.user);
      await mkdir(staging, { recursive: true, mode: 0o700 });
      const partial = path.join(staging, `${stagingKey(name, size, sha)}.${'0'.repeat(24)}.part`);
      await writeFile(partial, Buffer.alloc(0));
      await truncate(partial, prefix);
      const published = path.join(h.server().storage, ALICE.user, name);
      try {
        const c = await h.login();
        c.write(encodeHeader({ op: 'upload', id: 4, name, size, sha256: sha, offset: prefix }), encodeData(tail));
        const r = await c.reply(80_000);
        expect(r.final, JSON.stringify(r.final)).to.include({ status: 'ok', id: 4, name, size, sha256: sha });
      } finally {
        await rm(partial, { force: true });
        await rm(published, { force: true });
      }
    });

    it('a download whose reader reads nothing is cut (TRANSFER_STALLED) even while it trickles bytes at the server', async function () {
      this.timeout(30_000);
      const name = 'unread.bin';
      const file = path.join(h.server().storage, ALICE.user, name);
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, Buffer.alloc(0));
      await truncate(file, 64 * 1024 * 1024); // more than the socket buffers hold
      const sock = net.connect(h.server().port, '127.0.0.1');
      sock.on('error', () => undefined);
      try {
        await new Promise<void>((resolve) => sock.once('data', () => resolve())); // the greeting
        sock.write(Buffer.concat([encodeHeader({ op: 'auth', id: 1, mech: 'plain', user: ALICE.user, password: ALICE.password }), encodeHeader({ op: 'download', id: 2, name })]));
        await delay(300);
        sock.pause(); // reads nothing from now on
        const trickle = encodeHeader({ op: 'noop', id: 3 });
        let closed = false;
        sock.once('close', () => {
          closed = true;
        });
        const started = Date.now();
        for (let i = 0; i < trickle.length && !closed && Date.now() - started < 8_000; i++) {
          sock.write(trickle.subarray(i, i + 1)); // one byte of a next request every 300 ms
          await delay(300);
          if (h.server().lines.some((l) => l['code'] === 'TRANSFER_STALLED')) break;
        }
        expect(h.server().lines.some((l) => l['code'] === 'TRANSFER_STALLED'), 'the session was cut as stalled').to.equal(true);
      } finally {
        sock.destroy();
        await rm(file, { force: true });
      }
    });

    it('a slow but steady upload (a frame every 300 ms for 3 s) is not cut', async function () {
      const c = await h.login('127.0.0.5');
      const frames = 10;
      const data = Buffer.alloc(frames * 1000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
      c.write(encodeHeader({ op: 'upload', id: 2, name: 'steady.bin', size: data.length, sha256: sha256(data) }));
      for (let i = 0; i < frames; i++) {
        await delay(300);
        expect(c.isClosed, `connection still open before frame ${i + 1}`).to.equal(false);
        c.write(encodeData(data.subarray(i * 1000, (i + 1) * 1000)));
      }
      const r = await c.reply(10_000);
      expect(r.final, JSON.stringify(r.final)).to.include({ status: 'ok', id: 2, name: 'steady.bin' });
      const down = await rawDownload(c, 3, 'steady.bin');
      expect(down.bytes.equals(data)).to.equal(true);
    });

    it('--max-header-bytes 1024: the greeting says so, ≤1024 is accepted, a 2000-byte header is FRAME_TOO_LARGE', async function () {
      const { client, first } = await h.greet('127.0.0.6');
      expectHello(first, 'greeting');
      expect(first['maxHeader']).to.equal(1024);
      const small = { op: 'noop', id: 7, pad: '' };
      small.pad = 'x'.repeat(1024 - encodeHeader(small).length + 5);
      expect(encodeHeader(small).length - 5).to.equal(1024);
      client.sendHeader(small);
      expect((await client.reply()).final).to.deep.equal({ id: 7, status: 'ok' });
      const big = { op: 'noop', id: 8, pad: 'y'.repeat(2000) };
      client.sendHeader(big);
      const r = await client.reply();
      expect(r.final, JSON.stringify(r.final)).to.include({ status: 'error', code: 'FRAME_TOO_LARGE', fatal: true, id: null });
      expect(await client.waitClosed(5_000)).to.equal(true);
    });
  });
});
