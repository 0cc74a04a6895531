/**
 * Many sessions at once against a real two-worker fts-server: parallel transfers by two users, sessions
 * spread over the workers, and writers racing on one name (atomic publish, no partial names visible).
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient, FtsError } from '../../client/index.js';
import { encodeData, encodeHeader } from '../../protocol/index.js';
import { stagingFiles } from '../helpers/common.js';
import { delay, RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer, type LogLine, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Many clients connect at once from one address: the unauthenticated-connection budget (MaxStartups random
 * early drop) is raised so that it does not refuse them, and abuse scoring is off (one test sends wrong
 * bytes on purpose). The lock wait is the default 30 s, given explicitly so that an FTS_LOCK_TIMEOUT in the
 * test runner's environment cannot shorten it: the races below require every writer to end ok.
 */
const SERVER_ARGS = ['--max-startups', '100:30:200', '--ban-threshold', '0', '--ban-window', '1', '--lock-timeout', '30'];

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;
const KIB = 1024;
const MIB = 1024 * KIB;

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: FtsError }> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    expect(err).to.be.instanceOf(FtsError);
    return { ok: false, error: err as FtsError };
  }
}

/** Polls `check` every 20 ms until it returns true or `timeoutMs` passes. */
async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await delay(20);
  }
}

function brokenWorkers(lines: readonly LogLine[]): LogLine[] {
  return lines.filter((l) => typeof l.msg === 'string' && /worker died|crash loop/.test(l.msg));
}

describe('concurrency', function () {
  this.timeout(120_000);

  describe('16 sessions of two users transferring at once', function () {
    let server: TestServer;
    let work: string;
    let cleanupWork: () => Promise<void>;
    const clients: FtsClient[] = [];

    before(async function () {
      server = await TestServer.start({ workers: 2, args: SERVER_ARGS });
      ({ dir: work, cleanup: cleanupWork } = await tempDir('fts-conc-'));
    });

    after(async function () {
      for (const c of clients.splice(0)) c.close();
      await server?.stop();
      await cleanupWork?.();
    });

    it('every session uploads 4 distinct files and downloads them back byte-identical; sessions spread over both workers', async function () {
      // The server logs "listening on" as soon as its first worker listens; the cluster only hands
      // connections to workers that listen. Short probe sessions (bounded) until both workers served one.
      const probed = new Set<unknown>();
      for (let i = 0; i < 40 && probed.size < 2; i++) {
        const p = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
        await p.quit();
        await delay(50);
        for (const l of server.lines) if (l['event'] === 'session-end') probed.add(l['worker']);
      }
      expect(probed.size, 'both workers are accepting connections').to.equal(2);
      const probeLines = server.lines.length;

      const users: TestUser[] = [...Array<TestUser>(8).fill(ALICE), ...Array<TestUser>(8).fill(BOB)];
      const sessions = await Promise.all(
        users.map(async (who) => {
          const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
          clients.push(c);
          await c.auth(who.user, who.password);
          return c;
        }),
      );
      // Sizes from 64 KiB to 2 MiB, a different set per session; half the sessions go through files.
      const plan = users.map((who, s) =>
        Array.from({ length: 4 }, (_, f) => {
          const size = 64 * KIB + ((s * 4 + f) * 130_003) % (2 * MIB - 64 * KIB + 1);
          return { who, name: `s${s}-f${f}.bin`, data: randomBytes(size), viaFile: s % 2 === 1 };
        }),
      );
      for (const files of plan) for (const f of files) if (f.viaFile) await writeFile(path.join(work, `up-${f.who.user}-${f.name}`), f.data);

      await Promise.all(
        sessions.map(async (c, s) => {
          const files = plan[s]!;
          const ups = await Promise.all(files.map((f) => (f.viaFile ? c.upload(path.join(work, `up-${f.who.user}-${f.name}`), f.name) : c.uploadBuffer(f.name, f.data))));
          ups.forEach((u, k) => expect(u.sha256).to.equal(sha(files[k]!.data)));
        }),
      );
      await Promise.all(
        sessions.map(async (c, s) => {
          const files = plan[s]!;
          const dir = path.join(work, `down-${s}`);
          await mkdir(dir);
          await Promise.all(
            files.map(async (f) => {
              if (f.viaFile) {
                const r = await c.download(f.name, path.join(dir, f.name));
                expect(r.sha256).to.equal(sha(f.data));
                expect(sha(await readFile(path.join(dir, f.name))), `${f.who.user}/${f.name}`).to.equal(sha(f.data));
              } else {
                const r = await c.downloadBuffer(f.name);
                expect(sha(r.data), `${f.who.user}/${f.name}`).to.equal(sha(f.data));
              }
            }),
          );
        }),
      );

      // Each user sees exactly their own 32 files; the storage holds exactly those bytes.
      for (const who of [ALICE, BOB]) {
        const mine = plan.flat().filter((f) => f.who === who);
        const listed = await sessions[who === ALICE ? 0 : 8]!.list({ long: true });
        expect(listed.map((e) => e.name).sort()).to.deep.equal(mine.map((f) => f.name).sort());
        for (const f of mine) {
          expect(listed.find((e) => e.name === f.name)?.size).to.equal(f.data.length);
          expect(sha(await readFile(path.join(server.storage, who.user, f.name)))).to.equal(sha(f.data));
        }
      }
      expect(await stagingFiles(server, 'alice')).to.deep.equal([]);
      expect(await stagingFiles(server, 'bob')).to.deep.equal([]);
      await Promise.all(sessions.map((c) => c.quit()));

      // Which worker served each session: the worker pid on the session's successful auth line.
      const authLines = server.lines.slice(probeLines).filter((l) => l['event'] === 'auth' && l['result'] === 'success');
      expect(authLines).to.have.length(16);
      const workers = new Set(authLines.map((l) => l['worker']));
      for (const w of workers) expect(w, 'auth lines carry the worker pid').to.be.a('number');
      expect(new Set(authLines.map((l) => l['session'])).size, 'distinct sessions').to.equal(16);
      expect(workers.size, `sessions were served by workers ${[...workers].join(', ')}`).to.be.at.least(2);
      for (const w of workers) expect(server.workerPids()).to.include(w);
      expect(brokenWorkers(server.lines)).to.deep.equal([]);
    });
  });

  describe('writers racing on one name', function () {
    let server: TestServer;
    const clients: FtsClient[] = [];
    const raws: RawClient[] = [];

    async function client(who = ALICE): Promise<FtsClient> {
      const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
      clients.push(c);
      await c.auth(who.user, who.password);
      return c;
    }

    before(async function () {
      server = await TestServer.start({ workers: 2, args: SERVER_ARGS });
    });

    afterEach(async function () {
      for (const c of clients.splice(0)) c.close();
      for (const r of raws.splice(0)) r.close();
      // Each test starts with an empty directory for alice.
      const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
      try {
        await c.auth(ALICE.user, ALICE.password);
        for (const e of await c.list()) await c.delete(e.name);
      } finally {
        c.close();
      }
    });

    after(async function () {
      for (const c of clients.splice(0)) c.close();
      for (const r of raws.splice(0)) r.close();
      await server?.stop();
    });

    interface RaceOutcome {
      results: Array<{ ok: true; value: { sha256: string } } | { ok: false; error: FtsError }>;
      /** Names the lister saw during the race. */
      seen: Set<string>;
      lists: number;
      reads: number;
      /** What the reader saw that it should not have. */
      problems: string[];
    }

    /**
     * Publishes a first version of `name`, then runs one upload per content to that name at once, while a
     * lister and a reader poll. Because a version exists from before the race and every publish replaces
     * it atomically (PROTOCOL.md §6.1), the reader must get a whole version on every download: NOT_FOUND
     * (an unlink-then-rename publish), a version that was never uploaded (a copy over the target) or any
     * other error is a problem.
     */
    async function race(name: string, contents: readonly Buffer[]): Promise<RaceOutcome> {
      const writers = await Promise.all(contents.map(() => client()));
      const lister = await client();
      const reader = await client();
      const first = randomBytes(512 * KIB + 11);
      await lister.uploadBuffer(name, first);
      const shas = new Set([first, ...contents].map(sha));
      let done = false;
      const deadline = Date.now() + 90_000;

      const listing = (async () => {
        const seen = new Set<string>();
        let lists = 0;
        while (!done && lists < 20_000 && Date.now() < deadline) {
          for (const e of await lister.list()) seen.add(e.name);
          lists++;
        }
        return { seen, lists };
      })();
      const reading = (async () => {
        const problems: string[] = [];
        let reads = 0;
        while (!done && reads < 2_000 && Date.now() < deadline) {
          const r = await settle(reader.downloadBuffer(name));
          if (r.ok) {
            if (!shas.has(sha(r.value.data))) problems.push(`read a version that was never uploaded (${r.value.data.length} bytes)`);
          } else {
            problems.push(`download failed with ${r.error.code}: ${r.error.message}`);
          }
          reads++;
        }
        return { problems, reads };
      })();

      let results: RaceOutcome['results'];
      try {
        results = await Promise.all(writers.map((w, i) => settle(w.uploadBuffer(name, contents[i]!))));
      } finally {
        done = true;
      }
      const { seen, lists } = await listing;
      const { problems, reads } = await reading;
      expect(lists, 'the lister completed listings during the race').to.be.greaterThan(0);
      expect(reads, 'the reader completed downloads during the race').to.be.greaterThan(0);
      return { results, seen, lists, reads, problems };
    }

    // Every writer must end ok: this server waits the default 30 s for a name's lock (SERVER_ARGS), far
    // longer than eight publishes of a few MiB take, and LOCKED could not be accepted here anyway: it
    // leaves the writer's verified bytes staged (§6.1), and each race ends by checking staging is empty.
    it('8 writers with different contents: every one ends ok, the final file is exactly one of them, readers only ever get a whole version, no partial name is ever listed', async function () {
      const contents = Array.from({ length: 8 }, (_, i) => randomBytes(1 * MIB + i * 400_000 + 17 * i));
      const { results, seen, problems } = await race('race.bin', contents);
      expect([...seen], 'names visible during the race').to.deep.equal(['race.bin']);
      expect(problems, 'what the reader saw during the race').to.deep.equal([]);
      results.forEach((r, i) => {
        expect(r.ok ? 'ok' : `${r.error.code}: ${r.error.message}`, `writer ${i}`).to.equal('ok');
        if (r.ok) expect(r.value.sha256, `writer ${i}'s acknowledged sha256`).to.equal(sha(contents[i]!));
      });

      const c = await client();
      const final = await c.downloadBuffer('race.bin');
      expect(contents.map(sha), 'the final file is exactly one of the racing uploads').to.include(sha(final.data));
      expect(sha(await readFile(path.join(server.storage, 'alice', 'race.bin')))).to.equal(sha(final.data));
      expect((await c.list()).map((e) => e.name)).to.deep.equal(['race.bin']);
      expect(await readdir(path.join(server.storage, 'alice'))).to.deep.equal(['race.bin']);
      expect(await stagingFiles(server, 'alice'), 'staging area after the race').to.deep.equal([]);
      expect(brokenWorkers(server.lines)).to.deep.equal([]);
    });

    it('8 writers with the same content: every one ends ok (each publishes its own verified copy); readers only ever get a whole version', async function () {
      // PROTOCOL.md §6.1 (Resuming an upload): "Two uploads of the same identity at the same time each
      // publish their own, complete, verified copy."
      const content = randomBytes(3 * MIB + 5);
      const { results, seen, problems } = await race('same.bin', Array.from({ length: 8 }, () => content));
      expect([...seen], 'names visible during the race').to.deep.equal(['same.bin']);
      expect(problems, 'what the reader saw during the race').to.deep.equal([]);
      results.forEach((r, i) => {
        expect(r.ok ? 'ok' : `${r.error.code}: ${r.error.message}`, `writer ${i}`).to.equal('ok');
        if (r.ok) expect(r.value.sha256, `writer ${i}'s acknowledged sha256`).to.equal(sha(content));
      });
      const c = await client();
      const final = await c.downloadBuffer('same.bin');
      expect(sha(final.data), 'the final file').to.equal(sha(content));
      expect(await readdir(path.join(server.storage, 'alice'))).to.deep.equal(['same.bin']);
      expect(await stagingFiles(server, 'alice'), 'staging area after the race').to.deep.equal([]);
      expect(brokenWorkers(server.lines)).to.deep.equal([]);
    });

    it('regression (fixed): downloads racing overwrites of the same name always get a whole version, never NOT_A_FILE', async function () {
      const writer = await client();
      const readers = await Promise.all([1, 2, 3].map(() => client()));
      const versions = new Set<string>();
      const first = randomBytes(100);
      versions.add(sha(first));
      await writer.uploadBuffer('hot.bin', first);
      let done = false;
      const problems = new Map<string, number>();
      const note = (what: string): void => {
        problems.set(what, (problems.get(what) ?? 0) + 1);
      };
      let reads = 0;
      const reading = readers.map(async (r) => {
        for (let n = 0; !done && n < 5_000; n++) {
          const d = await settle(r.downloadBuffer('hot.bin'));
          reads++;
          if (!d.ok) note(`${d.error.code}: ${d.error.message}`);
          else if (!versions.has(sha(d.value.data))) note('a version that was never uploaded');
        }
      });
      const deadline = Date.now() + 4_000;
      let uploads = 0;
      try {
        while (Date.now() < deadline && uploads < 1_000) {
          const next = randomBytes(100 + (uploads % 50));
          versions.add(sha(next)); // added before the upload starts, so a reader may already see it
          await writer.uploadBuffer('hot.bin', next);
          uploads++;
        }
      } finally {
        done = true;
      }
      await Promise.all(reading);
      expect(uploads).to.be.greaterThan(10);
      expect(reads).to.be.greaterThan(10);
      expect(Object.fromEntries(problems), `${reads} downloads during ${uploads} overwrites`).to.deep.equal({});
    });

    it('regression (fixed): a stale writer of an upload identity never publishes another session\'s partial upload of that identity', async function () {
      // B starts an upload; A uploads the same identity (name, size, sha256) completely and publishes; C starts
      // the same identity again and stops half-way (as a retrying client whose connection dropped); then B
      // completes. Every ok must mean the published file is whole: a reader must never get C's half file.
      const chunk = 256 * KIB;
      const good = randomBytes(2 * chunk);
      const header = { op: 'upload', name: 'stale.bin', size: good.length, sha256: sha(good) };
      const earlier = new Set(await stagingFiles(server, 'alice'));
      const fresh = async (): Promise<string[]> => (await stagingFiles(server, 'alice')).filter((f) => !earlier.has(f));
      const stagedSize = async (): Promise<number> => {
        const files = await fresh();
        if (files.length !== 1) return -1;
        return (await readFile(path.join(server.storage, '.fts', 'staging', 'alice', files[0]!))).length;
      };
      const [a, b, c] = await Promise.all([1, 2, 3].map(() => RawClient.login(server.port, ALICE.user, ALICE.password)));
      raws.push(a!, b!, c!);

      b!.write(encodeHeader({ ...header, id: 2 }), encodeData(good.subarray(0, chunk)));
      await waitUntil("B's first chunk is staged", async () => (await stagedSize()) >= chunk);
      a!.write(encodeHeader({ ...header, id: 2 }), encodeData(good.subarray(0, chunk)), encodeData(good.subarray(chunk)));
      const ra = await a!.reply(30_000);
      expect(ra.final, 'A, complete and honest, publishes').to.include({ status: 'ok' });
      expect(sha(await readFile(path.join(server.storage, 'alice', 'stale.bin'))), 'after A').to.equal(sha(good));

      const beforeC = new Set(await fresh());
      c!.write(encodeHeader({ ...header, id: 2 }), encodeData(good.subarray(0, chunk)));
      await waitUntil("C's first chunk is staged", async () => {
        for (const f of await fresh()) {
          if (beforeC.has(f)) continue;
          const st = await readFile(path.join(server.storage, '.fts', 'staging', 'alice', f)).catch(() => Buffer.alloc(0));
          if (st.length >= chunk) return true;
        }
        return false;
      });
      b!.write(encodeData(good.subarray(chunk)));
      const rb = await b!.reply(30_000);
      // B sent the whole, right bytes; A's publish removed B's staging copy (§6.10), and B's commit finds
      // this very file published by A: ok, as for any taken-over upload of bytes already published (§6.1).
      expect(rb.final, "B's reply").to.include({ status: 'ok', size: good.length, sha256: sha(good) });
      const published = await readFile(path.join(server.storage, 'alice', 'stale.bin'));
      expect(published.length, 'published size after B').to.equal(good.length);
      expect(sha(published)).to.equal(sha(good));
      const r = await client();
      const d = await r.downloadBuffer('stale.bin');
      expect(d.data.length, 'a reader gets the whole file').to.equal(good.length);
      c!.write(encodeData(good.subarray(chunk)));
      // C, too, completes (B's commit removed C's copy as A's removed B's, and C finds this very file
      // published): ok, and the file is still whole.
      const rc = await c!.reply(30_000);
      expect(rc.final, "C's reply").to.include({ status: 'ok', size: good.length, sha256: sha(good) });
      expect(sha((await r.downloadBuffer('stale.bin')).data)).to.equal(sha(good));
      expect(await fresh(), 'staging after A, B and C published').to.deep.equal([]);
    });

    it('regression (fixed): an upload whose bytes do not match its declared sha256 cannot corrupt a concurrent upload of the same name, size and sha256', async function () {
      // Writer A is honest; writer B declares the same identity (name, size, sha256) but sends other bytes,
      // as a client does whose local file changed after it was hashed. B must end in CHECKSUM_MISMATCH and
      // A's published file, if A gets ok, must be exactly A's bytes.
      const chunk = 256 * KIB;
      const good = randomBytes(2 * chunk);
      const bad = randomBytes(chunk);
      const header = { op: 'upload', name: 'shared.bin', size: good.length, sha256: sha(good) };
      const a = await RawClient.login(server.port, ALICE.user, ALICE.password);
      const b = await RawClient.login(server.port, ALICE.user, ALICE.password);
      raws.push(a, b);
      // Staging files left by earlier tests are ignored: only a file that appears during this test counts.
      const earlier = new Set(await stagingFiles(server, 'alice'));
      const fresh = async (): Promise<string[]> => (await stagingFiles(server, 'alice')).filter((f) => !earlier.has(f));
      const stagedBytes = async (): Promise<Buffer | null> => {
        const files = await fresh();
        if (files.length !== 1) return null;
        return readFile(path.join(server.storage, '.fts', 'staging', 'alice', files[0]!));
      };

      a.write(encodeHeader({ ...header, id: 1 }), encodeData(good.subarray(0, chunk)));
      await waitUntil("A's first chunk is staged", async () => (await stagedBytes())?.subarray(0, chunk).equals(good.subarray(0, chunk)) === true);
      b.write(encodeHeader({ ...header, id: 1 }), encodeData(bad));
      // Give B's write time to land (if it shares A's staging file it overwrites A's first chunk).
      await waitUntil("B's chunk is written", async () => {
        const staged = await stagedBytes();
        return staged === null || staged.subarray(0, chunk).equals(bad) || (await fresh()).length > 1;
      }, 3_000).catch(() => undefined);
      a.write(encodeData(good.subarray(chunk)));
      const ra = await a.reply(30_000);
      // A is honest and writes its own staging copy (§6.1: every upload attempt has its own, and two uploads
      // of one identity at once each publish their own verified copy), so B can neither corrupt it nor make
      // it fail: A publishes, and what A published is exactly A's bytes.
      expect(ra.final, "A's reply").to.include({ status: 'ok', size: good.length, sha256: sha(good) });
      const published = await readFile(path.join(server.storage, 'alice', 'shared.bin'));
      expect(sha(published), 'the published file matches the sha256 acknowledged to A').to.equal(sha(good));
      b.write(encodeData(good.subarray(0, chunk))); // B completes with wrong bytes overall
      const rb = await b.reply(30_000);
      // §6.1: bytes that do not hash to the declared sha256 are CHECKSUM_MISMATCH, and nothing is published.
      expect(rb.final, 'B, whose bytes do not match').to.include({ status: 'error', code: 'CHECKSUM_MISMATCH', fatal: false });
      const c = await client();
      expect((await c.list()).map((e) => e.name), 'published after both uploads ended').to.deep.equal(['shared.bin']);
      expect(sha((await c.downloadBuffer('shared.bin')).data), "shared.bin is A's bytes").to.equal(sha(good));
      expect(await fresh(), 'staging after both uploads ended').to.deep.equal([]);
    });

    it('the server survived every race', async function () {
      const c = await client(BOB);
      await c.noop();
      expect(server.proc.exitCode).to.equal(null);
      expect(brokenWorkers(server.lines)).to.deep.equal([]);
    });
  });
});
