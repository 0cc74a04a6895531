/**
 * End-to-end operations through the real `fts` CLI (a child process per command, as a user runs it) and
 * through the FtsClient library, against a real fts-server with two workers.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { FtsClient, FtsError, isServerError } from '../../client/index.js';
import { READ_ONCE_MAX_BYTES } from '../../client/upload.js';
import { mkfifo } from '../helpers/hardening-fs.js';
import { FaultProxy } from '../helpers/proxy.js';
import { describeRun, runCli, type CliOptions, type CliResult } from '../helpers/cli.js';
import { DEFAULT_USERS, TestServer, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { waitUntil } from '../helpers/lifecycle-util.js';

/**
 * These tests misbehave on purpose (bad names, protocol violations, failed logins) from one address, which
 * the server's abuse defences would score, delay and eventually ban. They test the protocol, not those
 * defences, so bans are off and scores are forgotten after a second.
 */
const NO_BANS = ['--ban-threshold', '0', '--ban-window', '1'];

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;
const CAROL: TestUser = { user: 'carol', password: 'carol pass with spaces' };
const DAVE: TestUser = { user: 'dave', password: 'dävé-pässwörd' };
const ERIN: TestUser = { user: 'erin', password: 'erin-secret' };
const FRANK: TestUser = { user: 'frank', password: 'frank-secret' };
const GRACE: TestUser = { user: 'grace', password: 'grace-secret' };
const USERS = [ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE];

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Resolves with the FtsError the promise rejects with (fails if it resolves or rejects otherwise). */
async function ftsErrorOf(p: Promise<unknown>): Promise<FtsError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(FtsError);
    return err as FtsError;
  }
  throw new Error('expected an FtsError, but the operation succeeded');
}

function expectExit(r: CliResult, code: number): void {
  expect(r.code, describeRun(r)).to.equal(code);
}

/** Names in ascending order of their UTF-8 bytes (the server's listing order). */
function byteOrder(names: readonly string[]): string[] {
  return [...names].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

describe('operations through the CLI and the client library', function () {
  let server: TestServer;
  let work: string;
  let cleanupWork: () => Promise<void>;
  const clients: FtsClient[] = [];
  let dirCounter = 0;

  /** The CLI as `who` (default alice) with cwd `cwd` (default the shared work dir). */
  function fts(args: readonly string[], who: TestUser = ALICE, options: CliOptions = {}): Promise<CliResult> {
    return runCli(args, { port: server.port, user: who.user, password: who.password, cwd: work, ...options });
  }

  async function client(who: TestUser = ALICE): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(who.user, who.password);
    return c;
  }

  /** A fresh empty directory inside the work dir. */
  async function freshDir(label: string): Promise<string> {
    const dir = path.join(work, `${label}-${++dirCounter}`);
    await mkdir(dir);
    return dir;
  }

  before(async function () {
    server = await TestServer.start({ workers: 2, users: USERS, args: NO_BANS });
    ({ dir: work, cleanup: cleanupWork } = await tempDir('fts-ops-'));
  });

  afterEach(function () {
    for (const c of clients.splice(0)) c.close();
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
    await cleanupWork?.();
  });

  describe('CLI round trips', function () {
    const sizes = [0, 1, 1023, 1024, 1025, 3 * 1024 * 1024 + 17];
    for (const [i, size] of sizes.entries()) {
      // Even sizes use the command names, odd ones the aliases.
      const [up, down, view, del, ls] = i % 2 === 0 ? ['upload', 'download', 'view', 'delete', 'list'] : ['put', 'get', 'cat', 'rm', 'ls'];
      it(`${size} bytes: ${up}, ${ls}, ${down} (to another local name), ${view}, ${del}`, async function () {
        const dir = await freshDir(`rt${size}`);
        const data = randomBytes(size);
        const name = `rt-${size}.bin`;
        const local = path.join(dir, 'source.bin');
        await writeFile(local, data);

        const put = await fts([up, local, name]);
        expectExit(put, 0);
        expect(put.out).to.contain(`uploaded ${name} (${size} bytes, sha256 ${sha(data)})`);
        const stored = await readFile(path.join(server.storage, 'alice', name));
        expect(stored.equals(data), 'stored bytes').to.equal(true);

        const listed = await fts([ls]);
        expectExit(listed, 0);
        expect(listed.out.split('\n')).to.include(name);

        const target = path.join(dir, 'copy.bin');
        const got = await fts([down, name, target]);
        expectExit(got, 0);
        expect(got.out).to.contain(`downloaded ${name} -> `).and.contain(`(${size} bytes, sha256 ${sha(data)})`);
        expect(sha(await readFile(target)), 'downloaded bytes').to.equal(sha(data));
        expect(await readdir(dir), 'no temporary files left').to.have.members(['source.bin', 'copy.bin']);

        const shown = await fts([view, name]);
        expectExit(shown, 0);
        expect(shown.stdout.equals(data.subarray(0, 1024)), 'view prints the first min(size, 1024) bytes raw').to.equal(true);

        const removed = await fts([del, name]);
        expectExit(removed, 0);
        expect(removed.out).to.contain(`deleted ${name}`);
        expect(await exists(path.join(server.storage, 'alice', name))).to.equal(false);
        const after = await fts([ls]);
        expect(after.out.split('\n')).to.not.include(name);
      });
    }

    it('upload without NAME uses the base name; download without LOCAL writes NAME in the current directory', async function () {
      const dir = await freshDir('default-names');
      const data = randomBytes(5000);
      await writeFile(path.join(dir, 'plain name.txt'), data);
      expectExit(await fts(['put', path.join(dir, 'plain name.txt')]), 0);
      expect((await readFile(path.join(server.storage, 'alice', 'plain name.txt'))).equals(data)).to.equal(true);
      const other = await freshDir('default-names-dl');
      expectExit(await fts(['get', 'plain name.txt'], ALICE, { cwd: other }), 0);
      expect((await readFile(path.join(other, 'plain name.txt'))).equals(data)).to.equal(true);
      expect(await readdir(other)).to.deep.equal(['plain name.txt']);
      // A directory as LOCAL means NAME inside it.
      const third = await freshDir('default-names-dir');
      expectExit(await fts(['download', 'plain name.txt', third]), 0);
      expect((await readFile(path.join(third, 'plain name.txt'))).equals(data)).to.equal(true);
      expectExit(await fts(['rm', 'plain name.txt']), 0);
    });

    it('view prints exactly the first 1024 bytes raw (binary, control bytes, invalid UTF-8) when piped', async function () {
      const data = Buffer.alloc(3000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) % 256;
      data.write('\u001b[2J\r\n', 10, 'latin1');
      const dir = await freshDir('view');
      await writeFile(path.join(dir, 'v.bin'), data);
      expectExit(await fts(['put', path.join(dir, 'v.bin'), 'view-big.bin']), 0);
      const r = await fts(['view', 'view-big.bin']);
      expectExit(r, 0);
      expect(r.stdout.length).to.equal(1024);
      expect(r.stdout.equals(data.subarray(0, 1024))).to.equal(true);

      const small = data.subarray(0, 777);
      await writeFile(path.join(dir, 's.bin'), small);
      expectExit(await fts(['put', path.join(dir, 's.bin'), 'view-small.bin']), 0);
      const r2 = await fts(['cat', 'view-small.bin']);
      expectExit(r2, 0);
      expect(r2.stdout.equals(small), 'whole file when smaller than 1024 bytes').to.equal(true);

      await writeFile(path.join(dir, 'e.bin'), Buffer.alloc(0));
      expectExit(await fts(['put', path.join(dir, 'e.bin'), 'view-empty.bin']), 0);
      const r3 = await fts(['cat', 'view-empty.bin']);
      expectExit(r3, 0);
      expect(r3.stdout.length).to.equal(0);
      for (const n of ['view-big.bin', 'view-small.bin', 'view-empty.bin']) expectExit(await fts(['rm', n]), 0);
    });
  });

  describe('listing', function () {
    it('an empty listing: plain prints nothing, --json prints []', async function () {
      const plain = await fts(['ls'], CAROL);
      expectExit(plain, 0);
      expect(plain.out).to.equal('');
      const json = await fts(['list', '--json'], CAROL);
      expectExit(json, 0);
      expect(JSON.parse(json.out)).to.deep.equal([]);
      const long = await fts(['ls', '--long'], CAROL);
      expectExit(long, 0);
      expect(long.out).to.equal('');
    });

    it('plain (one name per line, byte order), --long (SIZE, MTIME, NAME) and --json ({name,size,mtime}) agree with the library', async function () {
      const c = await client(CAROL);
      const files: Record<string, Buffer> = {
        'b.bin': randomBytes(4096),
        'a.txt': Buffer.from('hello world\n'),
        'with space.txt': Buffer.from(''),
        'ünïcödé.txt': randomBytes(123_456),
        'Z-upper': randomBytes(1),
        '%2e%2e': Buffer.from('percent'),
      };
      for (const [name, data] of Object.entries(files)) await c.uploadBuffer(name, data);
      const expectedNames = byteOrder(Object.keys(files));
      const lib = await c.list({ long: true });
      expect(lib.map((e) => e.name)).to.deep.equal(expectedNames);

      const plain = await fts(['ls'], CAROL);
      expectExit(plain, 0);
      expect(plain.out).to.equal(`${expectedNames.join('\n')}\n`);

      const long = await fts(['list', '--long'], CAROL);
      expectExit(long, 0);
      const lines = long.out.split('\n');
      expect(lines.pop()).to.equal('');
      expect(lines).to.have.length(expectedNames.length);
      lines.forEach((line, i) => {
        const parts = line.split('\t');
        expect(parts, line).to.have.length(3);
        const entry = lib[i]!;
        expect(parts[0]!.trim()).to.equal(String(files[entry.name]!.length));
        expect(parts[1]).to.equal(new Date(entry.mtime!).toISOString());
        expect(parts[2]).to.equal(entry.name);
      });
      const short = await fts(['ls', '-l'], CAROL);
      expect(short.out).to.equal(long.out);

      const json = await fts(['ls', '--json'], CAROL);
      expectExit(json, 0);
      const parsed = JSON.parse(json.out) as unknown;
      expect(parsed).to.be.an('array').with.length(expectedNames.length);
      (parsed as unknown[]).forEach((item, i) => {
        const entry = lib[i]!;
        expect(item).to.have.all.keys('name', 'size', 'mtime');
        expect(item).to.deep.equal({ name: entry.name, size: files[entry.name]!.length, mtime: new Date(entry.mtime!).toISOString() });
      });
      for (const name of Object.keys(files)) await c.delete(name);
      expect(await c.list()).to.deep.equal([]);
    });

    it('names that rearrange a terminal (bidi controls, line separators) are exact when piped and in --json values, escaped on a terminal', async function () {
      const c = await client(CAROL);
      // Legal names: only control characters are refused. U+202E would show the first as "reportexe.pdf".
      const names = ['report\u202Efdp.exe', 'line\u2028break', 'rtl\u200Fmark', 'family-\u{1F468}\u200D\u{1F469}.jpg'];
      for (const name of names) await c.uploadBuffer(name, Buffer.from(name));
      try {
        const expectedNames = byteOrder(names);
        const plain = await fts(['ls'], CAROL);
        expectExit(plain, 0);
        expect(plain.out).to.equal(`${expectedNames.join('\n')}\n`);

        const json = await fts(['ls', '--json'], CAROL);
        expectExit(json, 0);
        expect(json.out).to.not.match(/[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069\u2028\u2029]/u);
        expect(json.out).to.include('report\\u202efdp.exe');
        expect((JSON.parse(json.out) as Array<{ name: string }>).map((e) => e.name)).to.deep.equal(expectedNames);

        const shown = expectedNames.map((n) => n.replace('\u202E', '\\u{202e}').replace('\u2028', '\\u{2028}').replace('\u200F', '\\u{200f}'));
        expect(shown).to.include('report\\u{202e}fdp.exe');
        expect(shown).to.include('family-\u{1F468}\u200D\u{1F469}.jpg'); // a zero-width joiner does not reorder: kept
        const onTerminal = await fts(['ls'], CAROL, { terminal: true });
        expectExit(onTerminal, 0);
        expect(onTerminal.out).to.equal(`${shown.join('\n')}\n`);
        const longOnTerminal = await fts(['ls', '--long'], CAROL, { terminal: true });
        expectExit(longOnTerminal, 0);
        expect(longOnTerminal.out.split('\n').slice(0, -1).map((line) => line.split('\t')[2])).to.deep.equal(shown);
      } finally {
        for (const name of names) await c.delete(name);
      }
    });
  });

  describe('rename', function () {
    /** Grace's files and their contents, as the server stores them. */
    async function graceFiles(): Promise<Record<string, string>> {
      const dir = path.join(server.storage, GRACE.user);
      const out: Record<string, string> = {};
      for (const entry of await readdir(dir, { withFileTypes: true })) if (entry.isFile()) out[entry.name] = await readFile(path.join(dir, entry.name), 'utf8');
      return out;
    }

    afterEach(async function () {
      const c = await client(GRACE);
      for (const e of await c.list()) await c.delete(e.name);
    });

    it('rename (alias mv) moves a file and prints one line; an existing NEWNAME needs --force (-f), otherwise exit 1 with ALREADY_EXISTS and nothing changes', async function () {
      const dir = await freshDir('rename');
      await writeFile(path.join(dir, 'a.txt'), 'first');
      await writeFile(path.join(dir, 'b.txt'), 'second');
      expectExit(await fts(['put', path.join(dir, 'a.txt'), 'draft.txt'], GRACE), 0);
      const moved = await fts(['rename', 'draft.txt', 'final name.txt'], GRACE);
      expectExit(moved, 0);
      expect(moved.out).to.equal('renamed draft.txt to final name.txt\n');
      expect(moved.stderr).to.equal('');
      expect(await graceFiles()).to.deep.equal({ 'final name.txt': 'first' });

      expectExit(await fts(['put', path.join(dir, 'b.txt'), 'other.txt'], GRACE), 0);
      const refused = await fts(['mv', 'other.txt', 'final name.txt'], GRACE);
      expectExit(refused, 1);
      expect(refused.stderr).to.equal('fts: other.txt: not renamed: final name.txt already exists; pass --force to replace it (ALREADY_EXISTS)\n');
      expect(refused.out).to.equal('');
      expect(await graceFiles()).to.deep.equal({ 'final name.txt': 'first', 'other.txt': 'second' });

      expectExit(await fts(['mv', '--force', 'other.txt', 'final name.txt'], GRACE), 0);
      expect(await graceFiles()).to.deep.equal({ 'final name.txt': 'second' });
      expectExit(await fts(['put', path.join(dir, 'a.txt'), 'again.txt'], GRACE), 0);
      expectExit(await fts(['rename', 'again.txt', 'final name.txt', '-f'], GRACE), 0);
      expect(await graceFiles()).to.deep.equal({ 'final name.txt': 'first' });
      const got = await fts(['get', 'final name.txt', path.join(dir, 'got.txt')], GRACE);
      expectExit(got, 0);
      expect(await readFile(path.join(dir, 'got.txt'), 'utf8')).to.equal('first');
    });

    it('a missing file exits 4 (NOT_FOUND); a bad name, a missing argument or --force elsewhere exit 2 before anything is sent', async function () {
      expectExit(await fts(['put', path.join(REPO_ROOT, 'package.json'), 'keep.json'], GRACE), 0);
      const missing = await fts(['mv', 'no-such-file', 'x'], GRACE);
      expectExit(missing, 4);
      expect(missing.stderr).to.equal('fts: no-such-file: no such file (NOT_FOUND)\n');
      for (const [args, message] of [
        [['mv', 'keep.json', '../escape'], 'fts: "../escape": name contains "/"\n'],
        [['rename', 'keep.json'], 'fts: rename: missing argument (usage: rename NAME NEWNAME [--force])\n'],
        [['rename', 'keep.json', 'a', 'b'], 'fts: rename: too many arguments (usage: rename NAME NEWNAME [--force])\n'],
        [['delete', 'keep.json', '--force'], 'fts: delete does not take --force\n'],
      ] as const) {
        const r = await fts(args, GRACE);
        expectExit(r, 2);
        expect(r.stderr, describeRun(r)).to.equal(message);
      }
      expect(Object.keys(await graceFiles())).to.deep.equal(['keep.json']);
    });

    it('in the shell, and through the library (overwrite option; NOT_A_FILE for what the server does not serve)', async function () {
      const dir = await freshDir('rename-shell');
      await writeFile(path.join(dir, 'one.txt'), 'one');
      const batch = await fts(['shell'], GRACE, { cwd: dir, input: 'put one.txt\nrename one.txt two.txt\nmv two.txt three.txt --force\nls\n' });
      expectExit(batch, 0);
      expect(batch.out).to.match(/renamed one\.txt to two\.txt\nrenamed two\.txt to three\.txt\nthree\.txt\n$/);

      const c = await client(GRACE);
      await c.uploadBuffer('four.txt', Buffer.from('four'));
      expect((await ftsErrorOf(c.rename('four.txt', 'three.txt'))).code).to.equal('ALREADY_EXISTS');
      await c.rename('four.txt', 'three.txt', { overwrite: true });
      expect(await graceFiles()).to.deep.equal({ 'three.txt': 'four' });
      await mkdir(path.join(server.storage, GRACE.user, 'a-directory'));
      try {
        const err = await ftsErrorOf(c.rename('three.txt', 'a-directory', { overwrite: true }));
        expect([err.code, isServerError(err)]).to.deep.equal(['NOT_A_FILE', true]);
        expect(await graceFiles()).to.deep.equal({ 'three.txt': 'four' });
      } finally {
        await rmdir(path.join(server.storage, GRACE.user, 'a-directory'));
      }
    });
  });

  describe('errors and exit codes', function () {
    it('download, view and delete of a missing file exit 4 with NOT_FOUND on stderr', async function () {
      const dir = await freshDir('missing');
      for (const args of [['get', 'no-such-file', path.join(dir, 'x')], ['download', 'no-such-file'], ['cat', 'no-such-file'], ['view', 'no-such-file'], ['rm', 'no-such-file'], ['delete', 'no-such-file']]) {
        const r = await fts(args, ALICE, { cwd: dir });
        expectExit(r, 4);
        expect(r.stderr, describeRun(r)).to.match(/^fts: .*NOT_FOUND/);
        expect(r.out).to.equal('');
      }
      expect(await readdir(dir)).to.deep.equal([]);
    });

    it('--password-file beats FTS_PASSWORD (a stale exported password must not win); its first line counts, CR LF too', async function () {
      const dir = await freshDir('password-file');
      const file = path.join(dir, 'pw');
      await writeFile(file, `${ALICE.password}\r\nsecond line ignored\n`, { mode: 0o600 });
      const r = await fts(['ls', '--password-file', file], { user: ALICE.user, password: 'stale-and-wrong' });
      expectExit(r, 0);
      const wrongFile = path.join(dir, 'wrong');
      await writeFile(wrongFile, 'not-her-password\n', { mode: 0o600 });
      expectExit(await fts(['ls', '--password-file', wrongFile], ALICE), 3);
      const missing = await fts(['ls', '--password-file', path.join(dir, 'absent')], ALICE);
      expectExit(missing, 2);
      expect(missing.stderr).to.match(/^fts: cannot read password file .*absent: /);
      // An empty first line is no password (no account has one): refused before connecting, not sent as a
      // failed login that counts toward a ban.
      for (const text of ['', '\n', '\r\nsecond\n']) {
        const emptyFile = path.join(dir, 'empty');
        await writeFile(emptyFile, text, { mode: 0o600 });
        const empty = await fts(['ls', '--password-file', emptyFile], ALICE, { port: 1 });
        expectExit(empty, 2);
        expect(empty.stderr, JSON.stringify(text)).to.equal(`fts: password file ${emptyFile}: its first line is empty (it must hold the password)\n`);
      }
    });

    it('a user name no server accepts exits 2 before connecting (not a failed login)', async function () {
      for (const user of ['bad/user', '.hidden', '-dash', 'x'.repeat(65), 'sp ace']) {
        const r = await runCli(['ls'], { port: 1, password: 'whatever', cwd: work, env: { FTS_USER: user } });
        expectExit(r, 2);
        expect(r.stderr, user).to.match(/^fts: invalid user name .* \(1-64 of A-Z a-z 0-9 _ \. -, not starting with "\." or "-"\)\n$/);
      }
    });

    it('FTS_TLS takes 1/true or 0/false in any case (empty: off), anything else exits 2 before any connection; --ca must hold a certificate', async function () {
      for (const value of ['yes', 'on', 'T', '2']) {
        const r = await fts(['ls'], ALICE, { env: { FTS_TLS: value } });
        expectExit(r, 2);
        expect(r.stderr).to.equal(`fts: FTS_TLS must be 1 or true (on), 0 or false (off), got '${value}'\n`);
      }
      for (const off of ['0', 'false', 'FALSE', '']) expectExit(await fts(['ls'], ALICE, { env: { FTS_TLS: off } }), 0);
      // On: this server speaks plain TCP, so the TLS handshake fails (exit 1), nothing is sent in clear.
      for (const value of ['true', 'TRUE']) {
        const on = await fts(['ls'], ALICE, { env: { FTS_TLS: value } });
        expectExit(on, 1);
        expect(on.stderr, value).to.include('does not speak TLS');
      }

      const dir = await freshDir('ca');
      const notACert = path.join(dir, 'key.pem');
      await writeFile(notACert, '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
      const ca = await fts(['ls', '--ca', notACert], ALICE);
      expectExit(ca, 2);
      expect(ca.stderr).to.equal(`fts: CA file ${notACert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)\n`);
    });

    it('malformed options get one-line messages of our own (exit 2); --version prints the version', async function () {
      const cases: Array<[string[], string]> = [
        [['--bogus', 'ls'], "fts: unknown option '--bogus'; try \"fts --help\"\n"],
        [['-qz', 'ls'], "fts: unknown option '-z'; try \"fts --help\"\n"],
        [['--retries', '-1', 'ls'], 'fts: option \'--retries\' needs a value (for one that starts with "-", write --retries=VALUE); try "fts --help"\n'],
        [['ls', '--retries'], 'fts: option \'--retries\' needs a value; try "fts --help"\n'],
        [['--tls=yes', 'ls'], 'fts: option \'--tls\' takes no value; try "fts --help"\n'],
      ];
      for (const [args, message] of cases) {
        const r = await fts(args, ALICE);
        expectExit(r, 2);
        expect(r.stderr, describeRun(r)).to.equal(message);
      }
      const version = await runCli(['--version']);
      expectExit(version, 0);
      const { version: expected } = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
      expect(version.out).to.equal(`fts ${expected}\n`);
    });

    it('a banned address is told how long the ban lasts (RATE_LIMITED, exit 1)', async function () {
      // A server of its own: the ban is on 127.0.0.1, which every other test here uses.
      const strict = await TestServer.start({ workers: 1, users: USERS, args: ['--ban-threshold', '2', '--ban-duration', '600'] });
      try {
        const run = (password: string): Promise<CliResult> => runCli(['ls'], { port: strict.port, user: ALICE.user, password, cwd: work });
        expectExit(await run('not-her-password'), 3);
        const banned = await waitUntil('the ban to apply', async () => {
          const r = await run(ALICE.password);
          return r.code === 1 ? r : undefined;
        }, 10_000, 100);
        expect(banned.stderr).to.match(/^fts: this address is banned after too many failures; try again in (\d+) s \(RATE_LIMITED\)\n$/);
        const seconds = Number(/try again in (\d+) s/.exec(banned.stderr)?.[1]);
        expect(seconds).to.be.within(590, 600);
      } finally {
        await strict.stop();
      }
    });

    it('wrong password and unknown user exit 3 (AUTH_FAILED)', async function () {
      const wrong = await fts(['ls'], { user: 'alice', password: 'not-her-password' });
      expectExit(wrong, 3);
      expect(wrong.stderr).to.contain('AUTH_FAILED');
      const unknown = await fts(['ls'], { user: 'nobody', password: ALICE.password });
      expectExit(unknown, 3);
      expect(unknown.stderr).to.contain('AUTH_FAILED');
      // A password from another user does not work either.
      expectExit(await fts(['ls'], { user: 'alice', password: BOB.password }), 3);
    });

    it('usage errors exit 2: bad flag, unknown command, missing or extra arguments, misplaced options, bad port, no user', async function () {
      const cases: string[][] = [
        ['--bogus', 'ls'],
        ['ls', '--frobnicate'],
        ['frobnicate'],
        [],
        ['get'],
        ['put'],
        ['cat'],
        ['rm'],
        ['cat', 'a', 'b'],
        ['rm', 'a', 'b'],
        ['ls', 'extra'],
        ['put', 'a', 'b', 'c'],
        ['get', 'x', '--long'],
        ['ls', '--dir', 'x'],
        ['mput'],
        ['mget'],
        ['shell', 'extra'],
      ];
      for (const args of cases) {
        const r = await fts(args);
        expectExit(r, 2);
        expect(r.stderr, describeRun(r)).to.match(/^fts: /);
      }
      const port = await runCli(['--port', '99999', '--user', 'alice', 'ls'], { password: ALICE.password, cwd: work });
      expectExit(port, 2);
      const noUser = await runCli(['--port', String(server.port), 'ls'], { password: ALICE.password, cwd: work });
      expectExit(noUser, 2);
      const pwFlag = await fts(['--password', 'x', 'ls']);
      expectExit(pwFlag, 2);
      const directIo = await fts(['ls'], ALICE, { env: { FTS_DIRECT_IO: 'maybe' } });
      expectExit(directIo, 2);
      expect(directIo.stderr).to.contain('FTS_DIRECT_IO');
    });

    it('FTS_DIRECT_IO=off and on: a 9 MiB file (above the direct-I/O threshold) goes up and comes back intact', async function () {
      const data = randomBytes(9 * 1024 * 1024 + 4321);
      await writeFile(path.join(work, 'nine.bin'), data);
      for (const mode of ['off', 'on']) {
        expectExit(await fts(['upload', 'nine.bin', `nine-${mode}.bin`], ALICE, { env: { FTS_DIRECT_IO: mode } }), 0);
        expectExit(await fts(['download', `nine-${mode}.bin`, `back-${mode}.bin`], ALICE, { env: { FTS_DIRECT_IO: mode } }), 0);
        expect((await readFile(path.join(work, `back-${mode}.bin`))).equals(data), mode).to.equal(true);
      }
    });

    it('no password (no FTS_PASSWORD, stdin not a TTY) exits 2 without connecting', async function () {
      const r = await runCli(['ls'], { port: server.port, user: 'alice', cwd: work });
      expectExit(r, 2);
      expect(r.stderr).to.contain('password');
    });

    it('a port where another kind of server answers (HTTP) exits 1 saying it is not an fts server', async function () {
      const http = net.createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'));
      await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
      try {
        const address = http.address();
        const port = typeof address === 'object' && address !== null ? address.port : 0;
        const r = await runCli(['ls'], { port, user: 'alice', password: ALICE.password, cwd: work });
        expectExit(r, 1);
        expect(r.stderr).to.match(new RegExp(`^fts: 127\\.0\\.0\\.1:${port} is not an fts server \\(what it sent first is not an fts frame: `));
      } finally {
        await new Promise<void>((resolve) => http.close(() => resolve()));
      }
    });

    it('connection refused exits 1', async function () {
      const probe = net.createServer();
      await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
      const address = probe.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const r = await runCli(['ls'], { port, user: 'alice', password: ALICE.password, cwd: work });
      expectExit(r, 1);
      expect(r.stderr).to.match(/^fts: .*(refused|connect)/);
    });

    it('upload of a missing local file exits 4; the library says NOT_FOUND (local, not from the server)', async function () {
      const dir = await freshDir('nolocal');
      const r = await fts(['put', path.join(dir, 'does-not-exist.txt')]);
      expectExit(r, 4);
      expect(r.stderr).to.contain('does-not-exist.txt');
      const c = await client();
      const err = await ftsErrorOf(c.upload(path.join(dir, 'does-not-exist.txt')));
      expect(err.code).to.equal('NOT_FOUND');
      expect(isServerError(err)).to.equal(false);
      await c.noop();
      expect((await c.list()).map((e) => e.name)).to.not.include('does-not-exist.txt');
    });

    it('upload of a local directory or FIFO fails at once with NOT_A_FILE (local); nothing is sent, the FIFO is never waited on', async function () {
      const dir = await freshDir('notfile');
      const fifo = path.join(dir, 'pipe');
      await mkfifo(fifo);
      const c = await client();
      for (const local of [dir, fifo]) {
        const started = Date.now();
        const err = await ftsErrorOf(c.upload(local, 'not-a-file.bin'));
        expect(err.code, local).to.equal('NOT_A_FILE');
        expect(isServerError(err)).to.equal(false);
        expect(Date.now() - started, 'refused without waiting for a writer').to.be.below(10_000);
      }
      const r = await fts(['put', fifo, 'not-a-file.bin']);
      expectExit(r, 1); // NOT_A_FILE is "other error"; a local error carries no server code
      expect(r.stderr).to.equal(`fts: ${fifo}: not a regular file\n`);
      expect((await c.list()).map((e) => e.name)).to.not.include('not-a-file.bin');
      await c.quit();
    });

    it('a bad remote name: BAD_NAME from the library, exit 2 from the CLI; nothing is sent or created', async function () {
      const c = await client();
      for (const bad of ['a/b', '..', '.', '', '../x', 'a\\b', 'tab\there', 'x'.repeat(256)]) {
        for (const op of [() => c.uploadBuffer(bad, Buffer.from('x')), () => c.downloadBuffer(bad), () => c.view(bad), () => c.delete(bad)]) {
          const err = await ftsErrorOf(op());
          expect(err.code, JSON.stringify(bad)).to.equal('BAD_NAME');
        }
      }
      await c.noop();
      const dir = await freshDir('badname');
      await writeFile(path.join(dir, 'ok.txt'), 'content');
      for (const args of [['put', path.join(dir, 'ok.txt'), 'a/b'], ['get', '../x', path.join(dir, 'y')], ['cat', 'a/b'], ['rm', '..']]) {
        const r = await fts(args);
        expectExit(r, 2);
        expect(r.stderr).to.match(/^fts: /);
      }
      expect(await readdir(dir)).to.deep.equal(['ok.txt']);
      expect(await exists(path.join(server.storage, 'alice', 'a'))).to.equal(false);
    });

    it('a failed download (NOT_FOUND before any byte, CHECKSUM_MISMATCH after all of them) never leaves a file under the target name, nor temporary files', async function () {
      const dir = await freshDir('faildl');
      const r = await fts(['get', 'missing-file', path.join(dir, 'LOCAL')]);
      expectExit(r, 4);
      expect(await readdir(dir), 'nothing created').to.deep.equal([]);
      // An existing target is left untouched.
      await writeFile(path.join(dir, 'precious'), 'keep me');
      const r2 = await fts(['get', 'missing-file', path.join(dir, 'precious')]);
      expectExit(r2, 4);
      expect(await readFile(path.join(dir, 'precious'), 'utf8')).to.equal('keep me');
      expect(await readdir(dir)).to.deep.equal(['precious']);
      // Same through the library.
      const c = await client();
      const err = await ftsErrorOf(c.download('missing-file', path.join(dir, 'LIB')));
      expect(err.code).to.equal('NOT_FOUND');
      expect(isServerError(err)).to.equal(true);
      expect(await readdir(dir)).to.deep.equal(['precious']);

      // A failure after the bytes arrived: a proxy alters one byte of a data frame on its way to the client
      // and recomputes the frame's CRC32C, so every frame checks out and only the whole-file SHA-256 fails.
      // README: LOCAL.part (and LOCAL.part.json) are dropped when the bytes are wrong (CHECKSUM_MISMATCH),
      // and LOCAL only ever receives a verified file. 2 MiB: at least 1 MiB, so a sidecar was written too.
      const data = randomBytes(2 * 1024 * 1024);
      await c.uploadBuffer('forged.bin', data);
      const proxy = await FaultProxy.start(server.port, { corruptDownPayloadAt: 1024 * 1024 + 7, corruptDownFixCrc: true });
      try {
        const r3 = await fts(['get', 'forged.bin', path.join(dir, 'precious')], ALICE, { port: proxy.port });
        expectExit(r3, 1);
        // Found by the client, not sent by the server: no "(CODE)" suffix (README, exit codes).
        expect(r3.stderr, describeRun(r3)).to.match(/^fts: .*hash.*, the server announced [0-9a-f]{64}\n$/);
        expect(proxy.corruptions, 'the byte was altered on the way').to.equal(1);
        expect(proxy.connections, 'reported at once, not retried on a new connection').to.equal(1);
      } finally {
        await proxy.close();
      }
      expect(await readFile(path.join(dir, 'precious'), 'utf8')).to.equal('keep me');
      expect(await readdir(dir), 'no precious.part, no precious.part.json').to.deep.equal(['precious']);
      // Same through the library, into a new target: nothing at all is left.
      const libProxy = await FaultProxy.start(server.port, { corruptDownPayloadAt: 1024 * 1024 + 7, corruptDownFixCrc: true });
      try {
        const viaProxy = await FtsClient.connect({ host: '127.0.0.1', port: libProxy.port });
        clients.push(viaProxy);
        await viaProxy.auth(ALICE.user, ALICE.password);
        const err2 = await ftsErrorOf(viaProxy.download('forged.bin', path.join(dir, 'LIB')));
        expect(err2.code).to.equal('CHECKSUM_MISMATCH');
        expect(isServerError(err2), 'found by the client').to.equal(false);
        expect(libProxy.corruptions).to.equal(1);
      } finally {
        await libProxy.close();
      }
      expect(await readdir(dir)).to.deep.equal(['precious']);
      await c.delete('forged.bin');
    });
  });

  describe('FtsClient round trips', function () {
    // 9 MiB + 5: above DIRECT_MIN_BYTES, so both sides write full frames with O_DIRECT and the tail through
    // the page cache (protocol/direct-writer.ts).
    for (const size of [0, 1, 1023, 1024, 1025, 3 * 1024 * 1024 + 3, 9 * 1024 * 1024 + 5]) {
      it(`${size} bytes: uploadBuffer/downloadBuffer/view/list/delete and upload/download with files`, async function () {
        const c = await client();
        const data = randomBytes(size);
        const name = `lib-${size}.bin`;
        const up = await c.uploadBuffer(name, data);
        expect(up).to.include({ name, size, sha256: sha(data) });
        expect(Number.isSafeInteger(up.mtime)).to.equal(true);
        const down = await c.downloadBuffer(name);
        expect(down.size).to.equal(size);
        expect(down.sha256).to.equal(sha(data));
        expect(down.data.equals(data)).to.equal(true);
        expect((await c.view(name)).equals(data.subarray(0, 1024))).to.equal(true);
        const entry = (await c.list({ long: true })).find((e) => e.name === name);
        // Files of 8 MiB or more are listed with the digest recorded when they were published.
        expect(entry).to.deep.equal(size >= 8 * 1024 * 1024 ? { name, size, mtime: up.mtime, sha256: sha(data) } : { name, size, mtime: up.mtime });
        await c.delete(name);
        expect((await ftsErrorOf(c.downloadBuffer(name))).code).to.equal('NOT_FOUND');

        const dir = await freshDir(`lib${size}`);
        const local = path.join(dir, 'original.dat');
        await writeFile(local, data);
        const up2 = await c.upload(local, `${name}.2`);
        expect(up2.sha256).to.equal(sha(data));
        const res = await c.download(`${name}.2`, path.join(dir, 'renamed.dat'));
        expect(res.localPath).to.equal(path.join(dir, 'renamed.dat'));
        expect(res.sha256).to.equal(sha(data));
        expect((await readFile(path.join(dir, 'renamed.dat'))).equals(data)).to.equal(true);
        expect(await readdir(dir)).to.have.members(['original.dat', 'renamed.dat']);
        await c.delete(`${name}.2`);
        await c.quit();
        expect(c.connected).to.equal(false);
      });
    }

    it('pipelined uploads around the read-once size and beyond its memory budget (files read once or twice) all arrive intact', async function () {
      // 72 files of READ_ONCE_MAX_BYTES (18 MiB) exceed the 16 MiB read-once budget, so the later ones are
      // hashed and sent in two passes while earlier ones are held; the neighbours of the limit take either path.
      const dir = await freshDir('readonce');
      const sizes = [0, 1, READ_ONCE_MAX_BYTES - 1, READ_ONCE_MAX_BYTES, READ_ONCE_MAX_BYTES + 1, ...Array<number>(72).fill(READ_ONCE_MAX_BYTES)];
      const files = await Promise.all(
        sizes.map(async (size, i) => {
          const data = randomBytes(size);
          const local = path.join(dir, `f${i}`);
          await writeFile(local, data);
          return { name: `readonce-${i}.bin`, local, data };
        }),
      );
      const c = await client();
      const uploaded = await Promise.all(files.map((f) => c.upload(f.local, f.name)));
      for (const [i, f] of files.entries()) {
        expect(uploaded[i], f.name).to.include({ name: f.name, size: f.data.length, sha256: sha(f.data) });
        const down = await c.downloadBuffer(f.name);
        expect(down.data.equals(f.data), f.name).to.equal(true);
        await c.delete(f.name);
      }
      await c.quit();
    });

    it('pipelined library calls settle in order, and an upload replaces an existing file', async function () {
      const c = await client();
      const v1 = randomBytes(10_000);
      const v2 = randomBytes(20_000);
      const ops = [c.uploadBuffer('replace.bin', v1), c.downloadBuffer('replace.bin'), c.uploadBuffer('replace.bin', v2), c.downloadBuffer('replace.bin'), c.delete('replace.bin'), c.list()] as const;
      const [, d1, , d2, , list] = await Promise.all(ops);
      expect(d1.data.equals(v1)).to.equal(true);
      expect(d2.data.equals(v2)).to.equal(true);
      expect(list.map((e) => e.name)).to.not.include('replace.bin');
    });
  });

  describe('mput, mget and shell', function () {
    it('mput several files, then mget --dir into another directory: byte-identical', async function () {
      const src = await freshDir('mput');
      const dst = await freshDir('mget');
      const files = new Map<string, Buffer>([
        ['m1.bin', randomBytes(0)],
        ['m2.bin', randomBytes(1)],
        ['m3.bin', randomBytes(300_000)],
        ['m 4.txt', Buffer.from('four\n')],
        ['m5.bin', randomBytes(1_500_000)],
      ]);
      for (const [name, data] of files) await writeFile(path.join(src, name), data);
      const put = await fts(['mput', ...[...files.keys()].map((n) => path.join(src, n))], ERIN);
      expectExit(put, 0);
      expect(put.out.trim().split('\n')).to.have.length(files.size);
      for (const [name, data] of files) expect(put.out).to.contain(`uploaded ${name} (${data.length} bytes, sha256 ${sha(data)})`);
      const get = await fts(['mget', ...files.keys(), '--dir', dst], ERIN);
      expectExit(get, 0);
      expect(get.out.trim().split('\n')).to.have.length(files.size);
      expect(await readdir(dst)).to.have.members([...files.keys()]);
      for (const [name, data] of files) expect((await readFile(path.join(dst, name))).equals(data), name).to.equal(true);

      // mget with one missing name exits 4 and writes no file for it.
      const dst2 = await freshDir('mget-missing');
      const partial = await fts(['mget', 'm2.bin', 'not-there.bin', '--dir', dst2], ERIN);
      expectExit(partial, 4);
      expect(partial.stderr).to.contain('NOT_FOUND');
      expect(await readdir(dst2)).to.not.include('not-there.bin');
      for (const f of await readdir(dst2)) expect(f).to.equal('m2.bin');

      // After the first failure nothing new starts (16 are in flight at most); the rest are named.
      const absent = Array.from({ length: 20 }, (_, i) => `absent-${String(i).padStart(2, '0')}`);
      const stopped = await fts(['mget', ...absent, '--dir', dst2], ERIN);
      expectExit(stopped, 4);
      expect(stopped.stderr).to.contain('not attempted: absent-16, absent-17, absent-18, absent-19\n');
    });

    it('mput of two files with one base name, or mget of one name twice, exits 2 before anything is sent (one would overwrite the other)', async function () {
      const src = await freshDir('mput-clash');
      await mkdir(path.join(src, 'one'));
      await mkdir(path.join(src, 'two'));
      await writeFile(path.join(src, 'one', 'clash.txt'), 'first\n');
      await writeFile(path.join(src, 'two', 'clash.txt'), 'second, longer\n');
      const put = await fts(['mput', 'one/clash.txt', 'two/clash.txt'], ERIN, { cwd: src });
      expectExit(put, 2);
      expect(put.stderr).to.equal('fts: mput: one/clash.txt and two/clash.txt would both be stored as clash.txt; each remote name may appear once (fts upload LOCAL NAME stores a file under another name)\n');
      const twice = await fts(['mput', 'one/clash.txt', 'one/clash.txt'], ERIN, { cwd: src });
      expectExit(twice, 2);
      expect(twice.stderr).to.contain('one/clash.txt is given twice');
      const c = await client(ERIN);
      expect((await c.list()).map((e) => e.name), 'nothing was uploaded').to.not.include('clash.txt');

      const get = await fts(['mget', 'm2.bin', 'm3.bin', 'm2.bin', '--dir', src], ERIN);
      expectExit(get, 2);
      expect(get.stderr).to.equal('fts: mget: m2.bin is given twice; each remote name may appear once\n');
      expect(await readdir(src), 'nothing was downloaded').to.have.members(['one', 'two']);
    });

    it('shell: a batch script on stdin runs several commands and exits 0', async function () {
      const dir = await freshDir('shell');
      await writeFile(path.join(dir, 'a.txt'), 'alpha\n');
      await writeFile(path.join(dir, 'b.txt'), 'bravo\n');
      const script = ['# a comment', 'put a.txt', '', 'put b.txt "b copy.txt"', 'ls', 'cat a.txt', 'get "b copy.txt" got.txt', 'rm a.txt', 'ls --json', 'quit', 'put a.txt never.txt'].join('\n');
      const r = await fts(['shell'], DAVE, { cwd: dir, input: `${script}\n` });
      expectExit(r, 0);
      expect(r.out).to.contain('uploaded a.txt (6 bytes');
      expect(r.out).to.contain('uploaded b copy.txt (6 bytes');
      expect(r.out).to.contain('a.txt\nb copy.txt\n');
      expect(r.out).to.contain('alpha\n');
      expect(r.out).to.contain('deleted a.txt');
      expect(r.out).to.not.contain('fts>'); // no prompt in batch mode
      expect(await readFile(path.join(dir, 'got.txt'), 'utf8')).to.equal('bravo\n');
      const c = await client(DAVE);
      expect((await c.list()).map((e) => e.name)).to.deep.equal(['b copy.txt']);
      await c.delete('b copy.txt');
    });

    it('shell: the first failing command stops the batch with a non-zero exit; later commands do not run', async function () {
      const dir = await freshDir('shellfail');
      await writeFile(path.join(dir, 'c.txt'), 'charlie\n');
      await writeFile(path.join(dir, 'd.txt'), 'delta\n');
      const r = await fts(['shell'], DAVE, { cwd: dir, input: 'put c.txt\nget missing.txt\nput d.txt\n' });
      expectExit(r, 4);
      expect(r.stderr).to.contain('NOT_FOUND');
      const c = await client(DAVE);
      expect((await c.list()).map((e) => e.name)).to.deep.equal(['c.txt']);

      const r2 = await fts(['shell'], DAVE, { cwd: dir, input: 'frobnicate\nput d.txt\n' });
      expectExit(r2, 2);
      const r3 = await fts(['shell'], DAVE, { cwd: dir, input: 'put "unterminated\nput d.txt\n' });
      expect(r3.code, describeRun(r3)).to.not.equal(0);
      expect((await c.list()).map((e) => e.name)).to.deep.equal(['c.txt']);
      await c.delete('c.txt');
    });
  });

  describe('isolation between users', function () {
    it("bob cannot see, read or delete alice's file; each user's files live in <storage>/<user>/ (mode 0700)", async function () {
      const a = await client(ALICE);
      const b = await client(BOB);
      const secret = randomBytes(2048);
      await a.uploadBuffer('iso-x.txt', secret);

      expect((await b.list()).map((e) => e.name)).to.not.include('iso-x.txt');
      expect((await ftsErrorOf(b.downloadBuffer('iso-x.txt'))).code).to.equal('NOT_FOUND');
      expect((await ftsErrorOf(b.view('iso-x.txt'))).code).to.equal('NOT_FOUND');
      expect((await ftsErrorOf(b.delete('iso-x.txt'))).code).to.equal('NOT_FOUND');

      const ls = await fts(['ls'], BOB);
      expectExit(ls, 0);
      expect(ls.out.split('\n')).to.not.include('iso-x.txt');
      for (const cmd of ['get', 'cat', 'rm']) {
        const dir = await freshDir('iso');
        const r = await fts([cmd, 'iso-x.txt'], BOB, { cwd: dir });
        expectExit(r, 4);
        expect(r.stderr).to.contain('NOT_FOUND');
        expect(await readdir(dir)).to.deep.equal([]);
      }

      // Bob's own file of the same name is a different file.
      const bobs = Buffer.from("bob's own\n");
      await b.uploadBuffer('iso-x.txt', bobs);
      expect((await a.downloadBuffer('iso-x.txt')).data.equals(secret)).to.equal(true);
      expect((await b.downloadBuffer('iso-x.txt')).data.equals(bobs)).to.equal(true);

      expect((await readFile(path.join(server.storage, 'alice', 'iso-x.txt'))).equals(secret)).to.equal(true);
      expect((await readFile(path.join(server.storage, 'bob', 'iso-x.txt'))).equals(bobs)).to.equal(true);
      for (const user of ['alice', 'bob']) {
        const st = await stat(path.join(server.storage, user));
        expect(st.isDirectory()).to.equal(true);
        expect((st.mode & 0o777).toString(8), `${user} directory mode`).to.equal('700');
      }
      await b.delete('iso-x.txt');
      expect((await a.downloadBuffer('iso-x.txt')).data.equals(secret), "bob's delete left alice's file alone").to.equal(true);
      await a.delete('iso-x.txt');
    });
  });

  // Nested so that it runs after every other suite (mocha runs a suite's own tests before its child suites).
  describe('afterwards', function () {
    it('the server keeps serving after all of the above errors', async function () {
      const c = await client(FRANK);
      await c.noop();
      expect(await c.list()).to.deep.equal([]);
      const r = await fts(['ls'], FRANK);
      expectExit(r, 0);
      expect(server.proc.exitCode).to.equal(null);
      expect(server.lines.filter((l) => typeof l.msg === 'string' && /worker died|crash loop/.test(l.msg))).to.deep.equal([]);
    });
  });
});
