/**
 * Directory traversal: every line of the shared payload corpus (templates expanded with several targets)
 * is used as a file name for every operation, through the FtsClient library, on the wire (raw frames, so
 * the server's own checks are exercised even where the library refuses a name first), and, for a sample,
 * through the CLI. Whatever the name, nothing outside alice's own directory may be read, written, listed
 * or deleted, and the server must keep serving.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient, FtsError } from '../../client/index.js';
import { encodeHeader, nameProblem, type Header } from '../../protocol/index.js';
import { describeRun, mapLimit, runCli } from '../helpers/cli.js';
import { SHARED_DATA } from '../helpers/paths.js';
import { RawClient, uploadBytes, type Reply } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

/**
 * These tests misbehave on purpose (bad names, protocol violations, failed logins) from one address, which
 * the server's abuse defences would score, delay and eventually ban. They test the protocol, not those
 * defences, so bans are off and scores are forgotten after a second.
 */
const NO_BANS = ['--ban-threshold', '0', '--ban-window', '1'];

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;
const TARGETS = ['etc/passwd', '../bob/secret.txt', 'bob/secret.txt', 'id_passwd.txt', '.fts/staging'];
/** Requests written to the wire before their replies are read (bounds what either side buffers). */
const RAW_BATCH = 400;

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

async function loadPayloads(): Promise<string[]> {
  const text = await readFile(path.join(SHARED_DATA, 'traversal-payloads.txt'), 'utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  expect(lines, 'payload corpus lines').to.have.length(1443);
  const out = new Set<string>();
  for (const line of lines) {
    if (line.includes('{FILE}')) for (const t of TARGETS) out.add(line.split('{FILE}').join(t));
    else out.add(line);
  }
  return [...out];
}

/** Content uploaded under payload i: unique per payload and per phase, never equal to a canary. */
function contentFor(phase: string, i: number): Buffer {
  return Buffer.from(`${phase} traversal payload #${i}\n`);
}

interface Snapshot {
  /** path -> "type size mtime sha" for every entry of the tree (sockets and dirs without sha). */
  entries: Map<string, string>;
}

/** Recursive description of `root`, skipping the relative paths in `skip` (and everything below them). */
async function snapshotTree(root: string, skip: ReadonlySet<string>): Promise<Snapshot> {
  const entries = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const abs = path.join(root, rel);
    const st = await lstat(abs);
    let desc = `${st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'link' : 'other'} mode=${(st.mode & 0o7777).toString(8)}`;
    if (st.isFile()) desc += ` size=${st.size} mtime=${st.mtimeMs} sha=${sha(await readFile(abs))}`;
    entries.set(rel === '' ? '.' : rel, desc);
    if (st.isDirectory()) {
      // A directory's own mtime changes whenever an entry is added or removed; listing its entries
      // (compared exactly) covers that, so the mtime is left out on purpose.
      for (const name of (await readdir(abs)).sort()) {
        const child = rel === '' ? name : path.join(rel, name);
        if (!skip.has(child)) await walk(child);
      }
    }
  };
  await walk('');
  return { entries };
}

function expectSameSnapshot(before: Snapshot, after: Snapshot, what: string): void {
  const diffs: string[] = [];
  for (const [p, d] of before.entries) if (after.entries.get(p) !== d) diffs.push(`${p}: ${d} -> ${after.entries.get(p) ?? '(gone)'}`);
  for (const [p, d] of after.entries) if (!before.entries.has(p)) diffs.push(`${p}: (new) ${d}`);
  expect(diffs, `${what} changed`).to.deep.equal([]);
}

/** Where a naive server (path.join + URL-decoding, backslashes as separators) would have put a name. */
function naiveTargets(dir: string, payload: string): string[] {
  const variants = new Set<string>([payload, payload.replace(/\\/g, '/')]);
  for (const v of [...variants]) {
    let decoded = v;
    for (let round = 0; round < 3; round++) {
      try {
        decoded = decodeURIComponent(decoded);
      } catch {
        break;
      }
      variants.add(decoded);
      variants.add(decoded.replace(/\\/g, '/'));
    }
  }
  const out: string[] = [];
  for (const v of variants) {
    if (v.includes('\0')) continue;
    const abs = path.resolve(dir, v);
    if (!/^\/(proc|sys|dev|run)(\/|$)/.test(abs)) out.push(abs);
  }
  return out;
}

/**
 * PROTOCOL.md §6's name rules, written out here independently of protocol/names.ts (the code under test),
 * so that a loosened or tightened nameProblem() cannot move the line between the payloads that must work
 * and those that must be refused. A legal name: well-formed Unicode (no unpaired surrogate: those do not
 * survive a UTF-8 round trip), 1 to 255 UTF-8 bytes, no U+0000–U+001F, U+007F–U+009F, '/' or '\\', and
 * not '.' or '..'.
 */
function legalPerProtocol(name: string): boolean {
  const utf8 = Buffer.from(name, 'utf8');
  if (utf8.toString('utf8') !== name) return false;
  if (utf8.length < 1 || utf8.length > 255) return false;
  if (/[\u0000-\u001f\u007f-\u009f/\\]/u.test(name)) return false;
  return name !== '.' && name !== '..';
}

/** Edge cases of each rule, next to the corpus, for the agreement check. */
const RULE_EDGES = [
  'a',
  '.',
  '..',
  '...',
  '.a',
  '',
  'a'.repeat(255),
  'a'.repeat(256),
  'é'.repeat(127) + 'a', // 255 bytes
  'é'.repeat(128), // 256 bytes in 128 characters
  '😀'.repeat(63) + 'abc', // 255 bytes
  '😀'.repeat(64), // 256 bytes
  '\ud800',
  'a\udc00b',
  '\ud83d\ude00',
  '\ufffd',
  'x\u001fy',
  'x\u0020y',
  'x\u007ey',
  'x\u007fy',
  'x\u009fy',
  'x\u00a0y',
  'a/b',
  'a\\b',
  '%2f',
  '%5c',
];

async function statOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch {
    return null;
  }
}

function errorCodeOf(err: unknown): string {
  expect(err).to.be.instanceOf(FtsError);
  return (err as FtsError).code;
}

/** Settles a promise into either its value or the FtsError code it rejected with. */
async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; code: string }> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    return { ok: false, code: errorCodeOf(err) };
  }
}

describe('directory traversal payloads', function () {
  this.timeout(180_000);
  let server: TestServer;
  let payloads: string[];
  let legal: Set<string>;
  let aliceDir: string;
  let baseline: Snapshot;
  let skip: Set<string>;
  let workerPids: number[];
  const naiveBefore = new Map<string, string>();
  let bobSecret: Buffer;
  const clients: FtsClient[] = [];
  const raws: RawClient[] = [];
  const cleanups: Array<() => Promise<void>> = [];

  // A directory's mtime moves when the server adds entries it is entitled to add (alice's staging area);
  // its entries are compared through the tree snapshot instead.
  const describeStat = (st: Stats | null): string =>
    st === null ? 'missing' : st.isDirectory() ? 'dir' : `${st.isFile() ? 'file' : 'other'} ${st.size} ${st.mtimeMs}`;

  async function client(who = ALICE): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(who.user, who.password);
    return c;
  }

  /** Everything outside alice's own areas must be exactly as it was before the attack. */
  async function expectNothingOutsideTouched(): Promise<void> {
    expectSameSnapshot(baseline, await snapshotTree(server.dir, skip), `the server directory ${server.dir} outside alice's areas`);
    const root = (await readdir(server.storage)).sort();
    expect(root, 'storage root entries').to.deep.equal(['.fts', 'alice', 'bob', 'canary.txt']);
    expect(await readdir(path.join(server.storage, 'bob')), "bob's directory").to.deep.equal(['secret.txt']);
    expect((await readFile(path.join(server.storage, 'bob', 'secret.txt'))).equals(bobSecret), "bob's secret.txt").to.equal(true);
    const changed: string[] = [];
    for (const [p, desc] of naiveBefore) {
      const now = describeStat(await statOrNull(p));
      if (now !== desc) changed.push(`${p}: ${desc} -> ${now}`);
    }
    expect(changed, 'paths a naive server would have written to').to.deep.equal([]);
  }

  function expectNoCanary(data: Buffer, payload: string): void {
    expect(data.includes(Buffer.from('CANARY')), `content returned for ${JSON.stringify(payload)} contains canary bytes`).to.equal(false);
    expect(data.includes(Buffer.from('root:')), `content returned for ${JSON.stringify(payload)} looks like /etc/passwd`).to.equal(false);
    expect(data.includes(Buffer.from(ALICE.password)), `content returned for ${JSON.stringify(payload)} contains the users file`).to.equal(false);
  }

  before(async function () {
    payloads = await loadPayloads();
    legal = new Set(payloads.filter(legalPerProtocol));
    expect(payloads.length).to.be.greaterThan(6000);
    expect(legal.size, 'some payloads are legal names (percent-encodings etc.)').to.be.greaterThan(0);

    server = await TestServer.start({ workers: 2, args: NO_BANS });
    aliceDir = path.join(server.storage, 'alice');
    // Canaries: bob's file, a file in the storage root, a file next to the storage directory.
    bobSecret = Buffer.from(`CANARY bob's secret ${Date.now()}\n`);
    const bob = await client(BOB);
    await bob.uploadBuffer('secret.txt', bobSecret);
    await bob.quit();
    await writeFile(path.join(server.storage, 'canary.txt'), 'CANARY in the storage root\n');
    await writeFile(path.join(server.dir, 'canary-outside.txt'), 'CANARY next to the storage directory\n');
    const alice = await client(ALICE); // creates alice's directory
    await alice.quit();
    skip = new Set(['storage/alice', 'storage/.fts/staging/alice', 'storage/.fts/locks/alice']);
    baseline = await snapshotTree(server.dir, skip);
    expect(baseline.entries.has('storage/bob/secret.txt')).to.equal(true);
    expect(baseline.entries.has('id_passwd.txt')).to.equal(true);
    for (const p of payloads) {
      for (const target of naiveTargets(aliceDir, p)) {
        if (target === aliceDir || target.startsWith(`${aliceDir}${path.sep}`)) continue;
        if (!naiveBefore.has(target)) naiveBefore.set(target, describeStat(await statOrNull(target)));
      }
    }
    expect(naiveBefore.get('/etc/passwd')).to.be.a('string');
    expect(naiveBefore.get(path.join(server.storage, 'bob', 'secret.txt'))).to.match(/^file /);
    workerPids = server.workerPids().sort();
    expect(workerPids).to.have.length(2);
  });

  afterEach(function () {
    for (const c of clients.splice(0)) c.close();
    for (const r of raws.splice(0)) r.close();
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    for (const r of raws.splice(0)) r.close();
    for (const c of cleanups.splice(0)) await c();
    await server?.stop();
  });

  it("the test's own reading of the §6 name rules and nameProblem() agree on every payload and rule edge", function () {
    // Both the library and the server judge names with nameProblem(); every later test expects success or
    // BAD_NAME according to legalPerProtocol(). A difference is reported here by name.
    const disagreements = [...payloads, ...RULE_EDGES]
      .filter((p) => legalPerProtocol(p) !== (nameProblem(p) === null))
      .map((p) => `${JSON.stringify(p)}: protocol says ${legalPerProtocol(p) ? 'legal' : 'illegal'}, nameProblem says ${JSON.stringify(nameProblem(p))}`);
    expect(disagreements, disagreements.slice(0, 20).join('\n')).to.deep.equal([]);
  });

  it('through FtsClient: upload, download, view, list, delete with every payload as the name', async function () {
    const c = await client();
    // Upload: the library refuses an illegal name itself (BAD_NAME); a legal one must succeed.
    const uploads = await Promise.all(payloads.map((p, i) => settle(c.uploadBuffer(p, contentFor('lib', i)))));
    uploads.forEach((r, i) => {
      const p = payloads[i]!;
      if (legal.has(p)) expect(r.ok, `upload of legal name ${JSON.stringify(p)}: ${r.ok ? '' : r.code}`).to.equal(true);
      else expect(r.ok ? 'ok' : r.code, `upload of ${JSON.stringify(p)}`).to.equal('BAD_NAME');
    });
    // Every uploaded file is exactly <storage>/alice/<payload>, one path component.
    expect((await readdir(aliceDir)).sort()).to.deep.equal([...legal].sort());
    for (const [i, p] of payloads.entries()) {
      if (!legal.has(p)) continue;
      const file = path.join(aliceDir, p);
      expect(path.dirname(file)).to.equal(aliceDir);
      expect(path.basename(file)).to.equal(p);
      expect((await readFile(file)).equals(contentFor('lib', i)), p).to.equal(true);
    }

    const downloads = await Promise.all(payloads.map((p) => settle(c.downloadBuffer(p))));
    const views = await Promise.all(payloads.map((p) => settle(c.view(p))));
    payloads.forEach((p, i) => {
      for (const [what, r] of [['download', downloads[i]!], ['view', views[i]!]] as const) {
        if (legal.has(p)) {
          expect(r.ok, `${what} of ${JSON.stringify(p)}`).to.equal(true);
          if (r.ok) {
            const data = Buffer.isBuffer(r.value) ? r.value : r.value.data;
            expectNoCanary(data, p);
            expect(data.equals(contentFor('lib', i)), `${what} of ${JSON.stringify(p)} returns its own content`).to.equal(true);
          }
        } else {
          expect(r.ok ? 'ok' : r.code, `${what} of ${JSON.stringify(p)}`).to.equal('BAD_NAME');
        }
      }
    });

    const listed = await c.list({ long: true });
    expect(listed.map((e) => e.name).sort()).to.deep.equal([...legal].sort());

    const deletes = await Promise.all(payloads.map((p) => settle(c.delete(p))));
    deletes.forEach((r, i) => {
      const p = payloads[i]!;
      expect(r.ok ? 'ok' : r.code, `delete of ${JSON.stringify(p)}`).to.equal(legal.has(p) ? 'ok' : 'BAD_NAME');
    });
    expect(await c.list()).to.deep.equal([]);
    expect(await readdir(aliceDir)).to.deep.equal([]);
    await c.noop();
    await expectNothingOutsideTouched();
  });

  it('on the wire: the server itself refuses every illegal payload with BAD_NAME for every operation', async function () {
    const c = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(c);
    let nextId = 100;

    /** Sends one request per payload (in batches) and hands each reply to `check`. */
    const run = async (make: (p: string, i: number, id: number) => Buffer, check: (p: string, i: number, r: Reply, id: number) => void): Promise<void> => {
      for (let start = 0; start < payloads.length; start += RAW_BATCH) {
        const batch = payloads.slice(start, start + RAW_BATCH);
        const ids = batch.map(() => nextId++);
        c.write(...batch.map((p, k) => make(p, start + k, ids[k]!)));
        for (const [k, p] of batch.entries()) {
          const r = await c.reply(30_000);
          expect(r.final['id'], `reply order (payload ${JSON.stringify(p)})`).to.equal(ids[k]);
          check(p, start + k, r, ids[k]!);
        }
      }
    };
    const expectCode = (r: Reply, code: string, p: string, what: string): void => {
      expect(r.final, `${what} of ${JSON.stringify(p)}: ${JSON.stringify(r.final)}`).to.include({ status: 'error', code, fatal: false });
      expect(r.interim, `${what} of ${JSON.stringify(p)}: no interim replies`).to.deep.equal([]);
      expect(r.data, `${what} of ${JSON.stringify(p)}: no data`).to.deep.equal([]);
    };

    await run(
      (p, i, id) => uploadBytes(id, p, contentFor('raw', i)),
      (p, i, r) => {
        if (legal.has(p)) expect(r.final, `upload of ${JSON.stringify(p)}`).to.include({ status: 'ok', name: p, size: contentFor('raw', i).length });
        else expectCode(r, 'BAD_NAME', p, 'upload');
      },
    );
    expect((await readdir(aliceDir)).sort()).to.deep.equal([...legal].sort());
    for (const [i, p] of payloads.entries()) {
      if (legal.has(p)) expect((await readFile(path.join(aliceDir, p))).equals(contentFor('raw', i)), p).to.equal(true);
    }

    for (const op of ['download', 'view'] as const) {
      await run(
        (p, _i, id) => encodeHeader({ op, id, name: p }),
        (p, i, r) => {
          if (!legal.has(p)) return expectCode(r, 'BAD_NAME', p, op);
          expect(r.final['status'], `${op} of ${JSON.stringify(p)}: ${JSON.stringify(r.final)}`).to.equal('ok');
          const data = Buffer.concat(r.data);
          expectNoCanary(data, p);
          expect(data.equals(contentFor('raw', i)), `${op} of ${JSON.stringify(p)} returns its own content`).to.equal(true);
        },
      );
    }

    // rename: an illegal name on either side is BAD_NAME and moves nothing; legal names go there and back.
    const illegal = payloads.filter((p) => !legal.has(p));
    await run(
      (p, i, id) => encodeHeader({ op: 'rename', id, name: p, to: illegal[i % illegal.length]!, overwrite: true }),
      (p, _i, r) => expectCode(r, 'BAD_NAME', p, 'rename to an illegal name'),
    );
    expect(legal.has('renamed-by-traversal'), 'the test name is not itself a payload').to.equal(false);
    await run(
      (p, _i, id) => encodeHeader({ op: 'rename', id, name: p, to: 'renamed-by-traversal', overwrite: true }),
      (p, _i, r) => {
        if (legal.has(p)) expect(r.final, `rename of ${JSON.stringify(p)}`).to.include({ status: 'ok', name: p, to: 'renamed-by-traversal' });
        else expectCode(r, 'BAD_NAME', p, 'rename from an illegal name');
      },
    );
    // Each legal payload overwrote the one before under the same name: the last one's content is there.
    const lastLegal = payloads.reduce((at, p, i) => (legal.has(p) ? i : at), -1);
    expect((await readFile(path.join(aliceDir, 'renamed-by-traversal'))).equals(contentFor('raw', lastLegal))).to.equal(true);
    expect((await readdir(aliceDir)).sort()).to.deep.equal(['renamed-by-traversal']);
    await run(
      (p, i, id) => (legal.has(p) ? uploadBytes(id, p, contentFor('raw', i)) : encodeHeader({ op: 'noop', id })),
      (p, _i, r) => expect(r.final['status'], `upload again of ${JSON.stringify(p)}`).to.equal('ok'),
    );
    c.sendHeader({ op: 'delete', id: nextId++, name: 'renamed-by-traversal' });
    expect((await c.reply()).final['status']).to.equal('ok');
    await expectNothingOutsideTouched();

    c.sendHeader({ op: 'list', id: nextId++, long: true });
    const list = await c.reply();
    expect(list.interim.map((h: Header) => h['name']).sort()).to.deep.equal([...legal].sort());

    await run(
      (p, _i, id) => encodeHeader({ op: 'delete', id, name: p }),
      (p, _i, r) => {
        if (legal.has(p)) expect(r.final, `delete of ${JSON.stringify(p)}`).to.include({ status: 'ok', name: p });
        else expectCode(r, 'BAD_NAME', p, 'delete');
      },
    );
    // Now nothing exists: legal names are NOT_FOUND, illegal ones still BAD_NAME.
    for (const op of ['download', 'view', 'delete'] as const) {
      await run(
        (p, _i, id) => encodeHeader({ op, id, name: p }),
        (p, _i, r) => expectCode(r, legal.has(p) ? 'NOT_FOUND' : 'BAD_NAME', p, `${op} after delete`),
      );
    }
    c.sendHeader({ op: 'list', id: nextId++, long: false });
    const empty = await c.reply();
    expect(empty.interim).to.deep.equal([]);
    expect(await readdir(aliceDir)).to.deep.equal([]);
    c.sendHeader({ op: 'noop', id: nextId++ });
    expect((await c.reply()).final['status']).to.equal('ok');
    await expectNothingOutsideTouched();
  });

  it('through the CLI: a sample of payloads for upload, download (no LOCAL), view, rename (both ways) and delete', async function () {
    const { dir: sandbox, cleanup } = await tempDir('fts-trav-cli-');
    cleanups.push(cleanup);
    const cwd = path.join(sandbox, 'a', 'b', 'c');
    await mkdir(cwd, { recursive: true });
    await writeFile(path.join(sandbox, 'local-source.txt'), 'CLI traversal upload\n');
    const source = path.join(sandbox, 'local-source.txt');
    // ~50 payloads: an even spread over the corpus plus a few legal ones.
    const illegalSample = payloads.filter((p) => !legal.has(p)).filter((_, i, a) => i % Math.ceil(a.length / 40) === 0);
    const legalSample = [...legal].filter((_, i, a) => i % Math.ceil(a.length / 10) === 0);
    const sample = [...illegalSample, ...legalSample];
    expect(sample.length).to.be.within(40, 60);
    const cli = (args: string[]) => runCli(args, { port: server.port, user: ALICE.user, password: ALICE.password, cwd });

    const problems: string[] = [];
    const refused = (r: Awaited<ReturnType<typeof cli>>): boolean => r.code === 2 || (r.code === 1 && r.stderr.includes('BAD_NAME'));
    await mapLimit(sample, 3, async (p) => {
      const isLegal = legal.has(p);
      const steps: Array<[string, string[]]> = [
        ['upload', ['put', '--', source, p]],
        ['download', ['get', '--', p]],
        ['view', ['cat', '--', p]],
        ['rename away', ['mv', '--', p, `cli-renamed-${sample.indexOf(p)}`]],
        ['rename back', ['mv', '--', `cli-renamed-${sample.indexOf(p)}`, p]],
        ['delete', ['rm', '--', p]],
      ];
      for (const [what, args] of steps) {
        const r = await cli(args);
        if (isLegal) {
          if (r.code !== 0) problems.push(`${what} of legal ${JSON.stringify(p)} failed: ${describeRun(r)}`);
          if (what === 'view' && r.out !== 'CLI traversal upload\n') problems.push(`view of ${JSON.stringify(p)} printed ${JSON.stringify(r.out)}`);
        } else if (!refused(r)) {
          problems.push(`${what} of illegal ${JSON.stringify(p)} not refused: ${describeRun(r)}`);
        } else if (r.out !== '') {
          problems.push(`${what} of illegal ${JSON.stringify(p)} printed ${JSON.stringify(r.out)}`);
        }
      }
    });
    expect(problems).to.deep.equal([]);
    // Downloads without LOCAL only ever wrote a legal name into the current directory.
    const sandboxSnapshot = await snapshotTree(sandbox, new Set());
    const expected = new Set(['.', 'a', 'a/b', 'a/b/c', 'local-source.txt', ...legalSample.map((p) => path.join('a/b/c', p))]);
    expect([...sandboxSnapshot.entries.keys()].sort()).to.deep.equal([...expected].sort());
    for (const p of legalSample) expect(await readFile(path.join(cwd, p), 'utf8')).to.equal('CLI traversal upload\n');
    expect(await readdir(aliceDir)).to.deep.equal([]);
    await expectNothingOutsideTouched();
  });

  it('afterwards the server still answers, its process is alive, and no worker restarted', async function () {
    const c = await client(BOB);
    await c.noop();
    expect((await c.list()).map((e) => e.name)).to.deep.equal(['secret.txt']);
    expect((await c.downloadBuffer('secret.txt')).data.equals(bobSecret)).to.equal(true);
    expect(server.proc.exitCode).to.equal(null);
    expect(server.proc.signalCode).to.equal(null);
    expect(server.lines.filter((l) => typeof l.msg === 'string' && /worker died|crash loop/.test(l.msg))).to.deep.equal([]);
    expect(server.workerPids().sort()).to.deep.equal(workerPids);
    await expectNothingOutsideTouched();
  });
});
