/**
 * fts-server started with bad inputs: each must stop quickly, with a non-zero exit code and one clear line
 * on stderr naming the problem (main.ts: exit 2 for a bad flag or environment value, 1 for a startup
 * failure). Every run gets a private temporary directory, its own admin socket and port 0, so that a
 * server that wrongly starts can neither collide with anything nor outlive the test.
 */
import { expect } from 'chai';
import { PACKAGE_VERSION } from '../../protocol/version.js';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { runServerOnce, type ServerRunResult } from '../helpers/lifecycle-spawn.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { FtsClient } from '../../client/index.js';

const FLAGS = [
  '--host', '--port', '--storage', '--users', '--workers', '--admin-socket', '--log-level', '--grace', '--partial-ttl',
  '--login-timeout', '--idle-timeout', '--stall-timeout', '--lock-timeout', '--quota', '--max-files', '--max-file-size', '--networks-file', '--upload-hook', '--upload-hook-timeout', '--max-upload-rate', '--max-download-rate', '--direct-io', '--max-header-bytes', '--help', '--version',
];

interface Fixture {
  dir: string;
  users: string;
  storage: string;
  socket: string;
  /** Flags for a server that would start fine. */
  good: string[];
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The one line naming the problem: stderr holds nothing else, and no stack trace. */
function problemLine(r: ServerRunResult): string {
  const problems = r.stderr.split('\n').filter((l) => l.trim() !== '');
  expect(problems, `stderr must hold exactly one line:\n${r.stderr}`).to.have.length(1);
  const line = problems[0]!;
  expect(line, 'problem line').to.match(/^fts-server: \S/);
  expect(r.stderr, 'no stack trace').to.not.match(/\n\s+at /);
  return line;
}

function expectQuickFailure(r: ServerRunResult, code: number): string {
  expect(r.timedOut, `the server did not exit by itself; stdout: ${r.stdout}; stderr: ${r.stderr}`).to.equal(false);
  expect(r.signal, 'killed by a signal').to.equal(null);
  expect(r.code, `exit code; stderr: ${r.stderr}`).to.equal(code);
  expect(r.elapsedMs, 'ms until the exit').to.be.below(5_000);
  return problemLine(r);
}

describe('fts-server startup with bad inputs', function () {
  this.timeout(30_000);

  let fx: Fixture;
  const servers: TestServer[] = [];

  beforeEach(async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fts-start-'));
    const users = path.join(dir, 'users.txt');
    await writeFile(users, 'alice:alice-secret\n');
    await chmod(users, 0o600);
    const storage = path.join(dir, 'storage');
    const socket = path.join(dir, 'admin.sock');
    fx = {
      dir,
      users,
      storage,
      socket,
      good: ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--workers', '1', '--users', users, '--storage', storage, '--admin-socket', socket],
    };
  });

  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    await rm(fx.dir, { recursive: true, force: true });
  });

  /** The good flags with `flag` replaced by `value` (or added). */
  function withFlag(flag: string, value: string): string[] {
    const args = [...fx.good];
    const i = args.indexOf(flag);
    if (i >= 0) args[i + 1] = value;
    else args.push(flag, value);
    return args;
  }

  it('an unknown flag, or a flag without its value: exit 2, one line of our own naming the flag', async () => {
    const line = expectQuickFailure(await runServerOnce([...fx.good, '--bogus-flag', 'x']), 2);
    expect(line).to.equal(`fts-server: unknown option '--bogus-flag' (see 'fts-server --help')`);
    const missing = expectQuickFailure(await runServerOnce([...fx.good, '--grace']), 2);
    expect(missing).to.equal(`fts-server: option '--grace' needs a value (see 'fts-server --help')`);
  });

  it('--port abc: exit 2, --port and the value named', async () => {
    const line = expectQuickFailure(await runServerOnce(withFlag('--port', 'abc')), 2);
    expect(line).to.include('--port');
    expect(line).to.include('abc');
  });

  it('--metrics-port abc, or FTS_METRICS_PORT=abc: exit 2, the value named and both kinds of valid value (a port, or off)', async () => {
    const line = expectQuickFailure(await runServerOnce(withFlag('--metrics-port', 'abc')), 2);
    expect(line).to.equal(`fts-server: --metrics-port: must be an integer from 0 to 65535 or off (got "abc") (see 'fts-server --help')`);
    const args = [...fx.good];
    args.splice(args.indexOf('--metrics-port'), 2);
    const fromEnv = expectQuickFailure(await runServerOnce(args, { env: { FTS_METRICS_PORT: 'abc' } }), 2);
    expect(fromEnv).to.equal(`fts-server: FTS_METRICS_PORT: must be an integer from 0 to 65535 or off (got "abc") (see 'fts-server --help')`);
  });

  it('--workers 0: exit 2, --workers named', async () => {
    const line = expectQuickFailure(await runServerOnce(withFlag('--workers', '0')), 2);
    expect(line).to.include('--workers');
  });

  it('--lock-timeout 0 and 3601: exit 2, --lock-timeout and the value named', async () => {
    // 0 would answer LOCKED without ever waiting for a lock held for milliseconds; past an hour a wait is a hang.
    for (const bad of ['0', '3601', '1.5']) {
      const line = expectQuickFailure(await runServerOnce(withFlag('--lock-timeout', bad)), 2);
      expect(line).to.include('--lock-timeout');
      expect(line).to.include(`"${bad}"`);
    }
  });

  it('--quota 0, 1.5M, 3X, lots, or FTS_QUOTA=none: exit 2, the flag or variable and the value named', async () => {
    for (const bad of ['0', '1.5M', '3X', 'lots']) {
      const line = expectQuickFailure(await runServerOnce(withFlag('--quota', bad)), 2);
      expect(line).to.include('--quota');
      expect(line).to.include(`"${bad}"`);
    }
    const line = expectQuickFailure(await runServerOnce(fx.good, { env: { FTS_QUOTA: 'none' } }), 2);
    expect(line).to.include('FTS_QUOTA');
    expect(line).to.include('"none"');
  });

  it('--max-file-size 0, 1.5M or FTS_MAX_FILE_SIZE=big: exit 2, the flag or variable and the value named', async () => {
    for (const bad of ['0', '1.5M']) {
      const line = expectQuickFailure(await runServerOnce(withFlag('--max-file-size', bad)), 2);
      expect(line).to.include('--max-file-size');
      expect(line).to.include(`"${bad}"`);
    }
    const line = expectQuickFailure(await runServerOnce(fx.good, { env: { FTS_MAX_FILE_SIZE: 'big' } }), 2);
    expect(line).to.include('FTS_MAX_FILE_SIZE');
  });

  it('--max-files 0, 10K, 1.5 or FTS_MAX_FILES=many: exit 2, the flag or variable and the value named', async () => {
    for (const bad of ['0', '10K', '1.5']) {
      const line = expectQuickFailure(await runServerOnce(withFlag('--max-files', bad)), 2);
      expect(line).to.equal(`fts-server: --max-files: must be a number of files of at least 1, or off (got "${bad}") (see 'fts-server --help')`);
    }
    const line = expectQuickFailure(await runServerOnce(fx.good, { env: { FTS_MAX_FILES: 'many' } }), 2);
    expect(line).to.include('FTS_MAX_FILES');
    expect(line).to.include('"many"');
  });

  it('--max-upload-rate and --max-download-rate below 64K or malformed, or FTS_MAX_UPLOAD_RATE=fast: exit 2, the flag or variable and the value named', async () => {
    for (const flag of ['--max-upload-rate', '--max-download-rate']) {
      for (const bad of ['0', '65535', '63K', '1.5M', 'fast']) {
        const line = expectQuickFailure(await runServerOnce(withFlag(flag, bad)), 2);
        expect(line).to.include(flag);
        expect(line).to.include(`"${bad}"`);
        expect(line).to.include('at least 64K');
      }
    }
    const line = expectQuickFailure(await runServerOnce(fx.good, { env: { FTS_MAX_UPLOAD_RATE: 'fast' } }), 2);
    expect(line).to.include('FTS_MAX_UPLOAD_RATE');
    expect(line).to.include('"fast"');
  });

  it('a --quota-file with a malformed line, or that cannot be read: exit 1, the file and each bad line named', async () => {
    const file = path.join(fx.dir, 'quotas.txt');
    await writeFile(file, 'alice:1M\nbob 2M\ncarol:lots\n');
    let line = expectQuickFailure(await runServerOnce(withFlag('--quota-file', file)), 1);
    expect(line).to.equal(`fts-server: quota file ${file}: line 2: expected USER:SIZE; line 3: SIZE must be a number of bytes of at least 1, optionally with K, M, G or T, or off; FILES (after a /, optional) a number of files of at least 1, or off`);
    line = expectQuickFailure(await runServerOnce(withFlag('--quota-file', path.join(fx.dir, 'missing.txt'))), 1);
    expect(line).to.include(`quota file ${path.join(fx.dir, 'missing.txt')}`);
    expect(line).to.include('ENOENT');
  });

  it('a --networks-file with a malformed line: exit 1, the file and each bad line named', async () => {
    const file = path.join(fx.dir, 'networks.txt');
    await writeFile(file, 'alice:10.0.0.0/8\nbob:10.0.0.0/40\ncarol\n');
    const line = expectQuickFailure(await runServerOnce(withFlag('--networks-file', file)), 1);
    expect(line).to.equal(`fts-server: networks file ${file}: line 2: expected any, or addresses and networks (10.0.0.0/8, 192.0.2.7, 2001:db8::/32; no %zone) separated by commas; line 3: expected USER:NETWORKS`);
  });

  it('a --rates-file with a malformed line: exit 1, the file and each bad line named', async () => {
    const file = path.join(fx.dir, 'rates.txt');
    await writeFile(file, 'alice:1M/2M\nbob:32K\ncarol:1M/2M/3M\n*:off\n*:1M\n');
    const line = expectQuickFailure(await runServerOnce(withFlag('--rates-file', file)), 1);
    const invalid = 'expected UPLOAD/DOWNLOAD or one RATE for both, each bytes per second of at least 64K (K, M, G, T: powers of 1024) or off';
    expect(line).to.equal(`fts-server: rates file ${file}: line 2: ${invalid}; line 3: ${invalid}; line 5: * is named twice`);
  });

  it('--direct-io maybe, or FTS_DIRECT_IO=yes: exit 2, the flag or variable and the value named', async () => {
    let line = expectQuickFailure(await runServerOnce(withFlag('--direct-io', 'maybe')), 2);
    expect(line).to.include('--direct-io');
    expect(line).to.include('"maybe"');
    line = expectQuickFailure(await runServerOnce(fx.good, { env: { FTS_DIRECT_IO: 'yes' } }), 2);
    expect(line).to.include('FTS_DIRECT_IO');
    expect(line).to.include('yes');
  });

  it('FTS_LOCK_TIMEOUT=soon in the environment: exit 2, FTS_LOCK_TIMEOUT named', async () => {
    const line = expectQuickFailure(await runServerOnce(fx.good, { env: { FTS_LOCK_TIMEOUT: 'soon' } }), 2);
    expect(line).to.include('FTS_LOCK_TIMEOUT');
    expect(line).to.include('soon');
  });

  it('FTS_PROXY_PROTOCOL=yes (an on/off variable with another value): exit 2, the variable and value named', async () => {
    for (const name of ['FTS_PROXY_PROTOCOL', 'FTS_ALLOW_INSECURE_USERS_FILE']) {
      const line = expectQuickFailure(await runServerOnce(fx.good, { env: { [name]: 'yes' } }), 2);
      expect(line).to.include(name);
      expect(line).to.include("'yes'");
    }
  });

  it('a missing users file: exit 1, its path named', async () => {
    const missing = path.join(fx.dir, 'no-such-users.txt');
    const line = expectQuickFailure(await runServerOnce(withFlag('--users', missing)), 1);
    expect(line).to.include(missing);
    expect(line).to.match(/no such file/i);
  });

  it('a storage path that cannot be created (under a regular file): exit 1, the path named', async () => {
    const file = path.join(fx.dir, 'plain-file');
    await writeFile(file, 'not a directory\n');
    const storage = path.join(file, 'storage');
    const line = expectQuickFailure(await runServerOnce(withFlag('--storage', storage)), 1);
    expect(line).to.include(storage);
  });

  it('a storage root on a read-only or pseudo file system: exit 1 at once, the real cause named (not ENOENT, no hang)', async () => {
    // Node's mkdir({recursive}) loops forever under /proc and says ENOENT on a read-only mount.
    const proc = `/proc/fts-test-${process.pid}`;
    const line = expectQuickFailure(await runServerOnce(withFlag('--storage', proc)), 1);
    expect(line).to.include(proc);
    if (process.getuid?.() !== 0) return; // mounting needs root (CI runs as root)
    const mnt = path.join(fx.dir, 'ro');
    await mkdir(mnt);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mnt]).status === 0;
    if (!mounted) return; // a container without CAP_SYS_ADMIN
    try {
      const ro = expectQuickFailure(await runServerOnce(withFlag('--storage', mnt)), 1);
      expect(ro).to.include(mnt);
      expect(ro).to.include('EROFS');
      const below = expectQuickFailure(await runServerOnce(withFlag('--storage', path.join(mnt, 'a', 'b'))), 1);
      expect(below).to.include('EROFS');
    } finally {
      spawnSync('umount', [mnt]);
    }
  });

  it('an admin socket path longer than 107 bytes: exit 2, --admin-socket named', async () => {
    const long = path.join(fx.dir, `${'s'.repeat(120)}.sock`);
    expect(Buffer.byteLength(long)).to.be.above(107);
    const line = expectQuickFailure(await runServerOnce(withFlag('--admin-socket', long)), 2);
    expect(line).to.include('--admin-socket');
    expect(line).to.match(/107/);
  });

  it('an admin socket directory that others can write to: exit 1, the directory named', async () => {
    const shared = path.join(fx.dir, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o777); // not sticky: anyone could replace the socket
    const line = expectQuickFailure(await runServerOnce(withFlag('--admin-socket', path.join(shared, 'admin.sock'))), 1);
    expect(line).to.include(shared);
    expect(line).to.match(/writable by others/);
  });

  it('a directory above the admin socket\'s that others can write to (and could rename it in): exit 1, that directory named', async () => {
    const shared = path.join(fx.dir, 'open-above');
    const own = path.join(shared, 'run');
    await mkdir(own, { recursive: true });
    await chmod(shared, 0o777);
    const line = expectQuickFailure(await runServerOnce(withFlag('--admin-socket', path.join(own, 'admin.sock'))), 1);
    expect(line).to.include(`directory above the admin socket ${shared} is writable by others`);
  });

  it('a link on the admin socket\'s path is judged where it is written: in a directory others can write to, refused; a link of root\'s in a closed directory (as /var/run), accepted', async () => {
    // The socket's own directory may not be a link (refused before); here a link sits above it.
    const own = path.join(fx.dir, 'own-run');
    await mkdir(path.join(own, 'sub'), { recursive: true });
    const open = path.join(fx.dir, 'open-links');
    await mkdir(open);
    await chmod(open, 0o777);
    await symlink(own, path.join(open, 'run'));
    const line = expectQuickFailure(await runServerOnce(withFlag('--admin-socket', path.join(open, 'run', 'sub', 'admin.sock'))), 1);
    expect(line).to.include(`directory above the admin socket ${open} is writable by others`);

    const closed = path.join(fx.dir, 'closed-links');
    await mkdir(closed, { mode: 0o755 });
    await symlink(own, path.join(closed, 'run'));
    const server = await TestServer.start({ workers: 1, args: ['--admin-socket', path.join(closed, 'run', 'sub', 'admin.sock')] });
    try {
      expect(existsSync(path.join(own, 'sub', 'admin.sock')), 'the socket, through the link').to.equal(true);
    } finally {
      await server.stop();
    }
  });

  it('a port already in use: exit 1, one line naming the address and the reason', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((holder.address() as net.AddressInfo).port);
      const line = expectQuickFailure(await runServerOnce(withFlag('--port', port)), 1);
      expect(line).to.equal(`fts-server: cannot listen on 127.0.0.1:${port}: the port is in use (EADDRINUSE)`);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('system errors at start-up are named in words, with the errno code: exit 1, one line each', async () => {
    // The main port's own line ("the port is in use") is checked above; these come from the primary.
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const busy = String((holder.address() as net.AddressInfo).port);
      const dir = path.join(fx.dir, 'a-directory');
      await mkdir(dir, { mode: 0o700 });
      const missing = path.join(fx.dir, 'missing.pem');
      const proc = `/proc/fts-test-${process.pid}`;
      const cases: Array<[string[], string]> = [
        [withFlag('--metrics-port', busy), `metrics endpoint 127.0.0.1:${busy}: the port is in use (EADDRINUSE)`],
        [withFlag('--users', dir), `users file ${dir}: is a directory (EISDIR)`],
        [[...withFlag('--tls-cert', missing), '--tls-key', missing], `cannot read TLS certificate ${missing}: no such file or directory (ENOENT)`],
        [withFlag('--cluster-secret-file', missing), `cluster secret file ${missing}: no such file or directory (ENOENT)`],
        [withFlag('--cluster-secret-file', dir), `cluster secret file ${dir}: is a directory (EISDIR)`],
        [withFlag('--storage', proc), `storage root ${proc}: creating ${proc} failed: no such file or directory (ENOENT)`],
        [withFlag('--admin-socket', `${proc}/admin.sock`), `admin socket ${proc}/admin.sock: no such file or directory (ENOENT)`],
      ];
      for (const [args, problem] of cases) {
        expect(expectQuickFailure(await runServerOnce(args), 1)).to.equal(`fts-server: ${problem}`);
      }
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('FTS_PORT=abc in the environment: exit 2, FTS_PORT named', async () => {
    const args = [...fx.good];
    args.splice(args.indexOf('--port'), 2);
    const line = expectQuickFailure(await runServerOnce(args, { env: { FTS_PORT: 'abc' } }), 2);
    expect(line).to.include('FTS_PORT');
    expect(line).to.include('abc');
  });

  it('--help exits 0 and lists the flags', async () => {
    const r = await runServerOnce(['--help']);
    expect(r.timedOut).to.equal(false);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.match(/^Usage: fts-server/);
    for (const flag of FLAGS) expect(r.stdout, `--help mentions ${flag}`).to.match(new RegExp(`^\\s+${escape(flag)}\\b`, 'm'));
  });

  it('--version prints "fts-server <version>" and exits 0, in a directory with no users file, touching no storage', async () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    // Run where neither ./id_passwd.txt nor ./server_storage exists, and with flags naming unusable ones.
    const storage = path.join(fx.dir, 'never-created');
    for (const args of [['--version'], ['--users', path.join(fx.dir, 'missing.txt'), '--storage', storage, '--version']]) {
      const r = await runServerOnce(args, { cwd: fx.dir });
      expect(r.timedOut, r.stderr).to.equal(false);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr).to.equal('');
      expect(r.stdout).to.equal(`fts-server ${version}\n`);
    }
    expect(existsSync(storage), 'storage created by --version').to.equal(false);
    expect(existsSync(path.join(fx.dir, 'server_storage')), 'default storage created by --version').to.equal(false);
  });

  it('--help: --ban-threshold lists every penalty README and SECURITY.md list, with its points', async () => {
    const r = await runServerOnce(['--help']);
    expect(r.code, r.stderr).to.equal(0);
    const line = r.stdout.split('\n').find((l) => /^\s+--ban-threshold\b/.test(l));
    expect(line, '--ban-threshold line').to.be.a('string');
    for (const penalty of ['failed login 2', 'illegal name 1', 'unknown authentication mechanism 1', 'protocol violation 3', '0 = never']) {
      expect(line, `--ban-threshold help names "${penalty}"`).to.include(penalty);
    }
  });

  it('--metrics-host with --metrics-port off: the start says at warn that no endpoint is served', async () => {
    const server = await TestServer.start({ workers: 1, args: ['--metrics-port', 'off', '--metrics-host', '127.0.0.2'] });
    servers.push(server);
    const warning = await server.waitForLog((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.startsWith('--metrics-host'));
    expect(warning).to.include({ msg: '--metrics-host does nothing with --metrics-port off: no metrics endpoint is served', metricsHost: '127.0.0.2' });
    expect(server.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on')), 'no endpoint').to.equal(false);
  });

  it('with --port 0 the listening log line carries the real port, which accepts connections', async () => {
    const server = await TestServer.start({ workers: 1, args: ['--port', '0'] });
    servers.push(server);
    const line = server.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'));
    expect(line, 'a listening log line').to.not.equal(undefined);
    const port = line?.['port'];
    expect(port).to.be.a('number');
    expect(port).to.be.above(0).and.at.most(65535);
    expect(line?.msg).to.equal(`listening on 127.0.0.1:${String(port)}`);
    expect(line, 'the line says which version serves, and whether with TLS').to.include({ version: PACKAGE_VERSION, tls: false });
    expect(server.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('without TLS')), 'loopback: no plaintext warning').to.deep.equal([]);
    const contact = await RawClient.firstContact(port as number, 5_000);
    if (contact.kind === 'header') contact.conn.destroy();
    expect(contact.kind, JSON.stringify(contact)).to.equal('header');
    if (contact.kind !== 'header') return;
    expect(contact.header['status']).to.equal('hello');
    expect(contact.header['protocol']).to.equal('fts/1');
  });

  it('on IPv6 (::1) the log writes addresses with brackets ([::1]:port), as URLs do: listening, metrics, a session\'s remote', async function () {
    const server = await TestServer.start({ workers: 1, args: ['--host', '::1', '--metrics-host', '::1'] });
    servers.push(server);
    const listening = server.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'));
    expect(listening?.msg).to.equal(`listening on [::1]:${server.port}`);
    const metrics = server.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on'));
    expect(metrics?.msg).to.match(/^metrics on http:\/\/\[::1\]:\d+\/metrics$/);
    const url = new URL(/(http:\S+)/.exec(metrics?.msg ?? '')?.[1] ?? 'x:');
    expect(url.hostname, 'the logged URL parses').to.equal('[::1]');
    const client = await FtsClient.connect({ host: '::1', port: server.port });
    try {
      await client.auth(DEFAULT_USERS[0]!.user, DEFAULT_USERS[0]!.password);
      await client.list();
      const audit = await server.waitForLog((l) => l['event'] === 'list');
      expect(audit['remote']).to.match(/^\[::1\]:\d+$/);
    } finally {
      client.close();
    }
  });
});
