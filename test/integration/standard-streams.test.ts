/**
 * `fts upload - NAME` (standard input) and `fts download NAME -` (standard output), end to end: a real
 * fts-server, the real CLI as a process, and the fault-injecting proxy to cut and corrupt the download
 * stream. README "Commands" and client/cli/stdin-file.ts, client/stream-download.ts say what is expected.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readdir, readlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { FtsClient, FtsError, ResilientClient, StreamPosition } from '../../client/index.js';
import { childExit, stagingFiles } from '../helpers/common.js';
import { sessionsJson } from '../helpers/admin-cli.js';
import { cliEnv, describeRun, runCli, type CliResult, type CliOptions } from '../helpers/cli.js';
import { publishedSha256, sha256, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { CLIENT_CLI } from '../helpers/paths.js';
import { FaultProxy, type FaultPlan } from '../helpers/proxy.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const MiB = 1024 * 1024;

/**
 * A Writable that keeps the very chunks it is given, without copying them (as collectors usually do: the
 * download must not reuse their memory), or fails on the first write with `failWith`.
 */
class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  constructor(private readonly failWith?: NodeJS.ErrnoException) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.failWith !== undefined) {
      done(this.failWith);
      return;
    }
    this.chunks.push(chunk);
    done();
  }
  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

describe('standard input and output as LOCAL (`upload - NAME`, `download NAME -`)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let dir = '';
  /** TMPDIR of the CLI runs: where a copy of standard input would go. */
  let spoolDir = '';
  let cleanDir: () => Promise<void> = async () => undefined;
  const proxies: FaultProxy[] = [];
  const clients: Array<{ close(): void }> = [];
  const children: ChildProcess[] = [];

  before(async function () {
    this.timeout(30_000);
    server = await TestServer.start({ workers: 2 });
    ({ dir, cleanup: cleanDir } = await tempDir('fts-streams-'));
    spoolDir = path.join(dir, 'tmp');
    await mkdir(spoolDir);
  });

  after(async function () {
    this.timeout(30_000);
    await server.stop();
    await cleanDir();
  });

  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const c of clients.splice(0)) c.close();
    for (const p of proxies.splice(0)) await p.close();
  });

  async function proxy(plan: FaultPlan | ((index: number) => FaultPlan)): Promise<FaultProxy> {
    const p = await FaultProxy.start(server.port, plan);
    proxies.push(p);
    return p;
  }

  async function login(port = server.port): Promise<FtsClient> {
    const c = await FtsClient.connect({ port });
    clients.push(c);
    await c.auth(ALICE.user, ALICE.password);
    return c;
  }

  function cli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
    return runCli(args, { port: server.port, user: ALICE.user, password: ALICE.password, cwd: dir, timeoutMs: 45_000, env: { TMPDIR: spoolDir }, ...options });
  }

  async function spoolLeftovers(): Promise<string[]> {
    return readdir(spoolDir);
  }

  /** The CLI as a process, all three streams piped (stdin stays open until the test ends it). */
  function startFts(args: readonly string[], port = server.port): { child: ChildProcessWithoutNullStreams; stderr: () => string } {
    const child = spawn(process.execPath, [CLIENT_CLI, '--host', '127.0.0.1', '--port', String(port), '--user', ALICE.user, ...args], {
      cwd: dir,
      env: cliEnv(ALICE.password, { TMPDIR: spoolDir }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(child);
    child.stdin.on('error', () => undefined); // it may exit before reading everything
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    return { child, stderr: () => stderr };
  }

  /** Whether process `pid` holds the (nameless) copy of its standard input open. */
  async function copyOpenIn(pid: number): Promise<boolean> {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (target.startsWith(spoolDir) && target.includes('fts-stdin-') && target.endsWith('(deleted)')) return true;
    }
    return false;
  }

  function auditOf(event: string, file: string): Array<Record<string, unknown>> {
    return server.lines.filter((l) => l['event'] === event && l['file'] === file);
  }

  /** Whether a session of the server is uploading `file` now, with bytes received. */
  async function sessionUploading(file: string): Promise<boolean> {
    return (await sessionsJson(server.adminSocket)).some((s) => s.op === 'upload' && s.file === file && s.bytes > 0);
  }

  describe('upload - NAME', () => {
    it('streams what comes through a pipe under NAME, verified, with no local copy (an unsized upload)', async () => {
      const data = randomBytes(3 * MiB + 17);
      // TMPDIR that does not exist: a copy could not be made, so success shows none was.
      const r = await cli(['upload', '-', 'piped.bin', '--json'], { input: data, env: { TMPDIR: path.join(dir, 'no-such-dir') } });
      expect(r.code, describeRun(r)).to.equal(0);
      expect(JSON.parse(r.out)).to.include({ name: 'piped.bin', bytes: data.length, sha256: sha256(data), resumedFrom: 0 });
      expect(await publishedSha256(server.storage, ALICE.user, 'piped.bin')).to.equal(sha256(data));
    });

    it('--spool: copies the pipe to a temporary file first, uploads it, and removes the copy', async () => {
      const data = randomBytes(3 * MiB + 17);
      const r = await cli(['upload', '-', 'spooled.bin', '--spool', '--json'], { input: data });
      expect(r.code, describeRun(r)).to.equal(0);
      expect(JSON.parse(r.out)).to.include({ name: 'spooled.bin', bytes: data.length, sha256: sha256(data), resumedFrom: 0 });
      expect(await publishedSha256(server.storage, ALICE.user, 'spooled.bin')).to.equal(sha256(data));
      expect(await spoolLeftovers(), 'the copy of stdin is removed').to.deep.equal([]);
      const notStdin = await cli(['upload', 'spooled.src', '--spool'], {});
      expect(notStdin.code, describeRun(notStdin)).to.equal(2);
      expect(notStdin.stderr).to.include('--spool is for standard input');
    });

    it('a streamed pipe cut by Ctrl+C exits 130 and leaves nothing on the server', async () => {
      const { child, stderr } = startFts(['upload', '-', 'stream-interrupted.bin']);
      child.stdin.write(randomBytes(2 * MiB)); // and the pipe stays open: the input never ends
      await waitUntil('the upload to be under way', () => server.lines.length > 0 && sessionUploading('stream-interrupted.bin'), 15_000);
      const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      child.kill('SIGINT');
      const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
      expect(code, stderr()).to.equal(130);
      await waitUntil('the upload to end on the server', () => auditOf('upload', 'stream-interrupted.bin').length > 0, 10_000);
      expect(await publishedSha256(server.storage, ALICE.user, 'stream-interrupted.bin')).to.equal(null);
      expect(await stagingFiles(server, ALICE.user), 'nothing staged').to.deep.equal([]);
      child.stdin.destroy();
    });

    it('Ctrl+C after the whole input was written ahead to a server that reads slower (a rate limit): the bytes not yet read are dropped (a reset, not a FIN after them), so nothing is published', async () => {
      const slow = await TestServer.start({ workers: 1, args: ['--max-upload-rate', '1M'] });
      try {
        const auditOn = (file: string): Array<Record<string, unknown>> => slow.lines.filter((l) => l['event'] === 'upload' && l['file'] === file);
        const data = randomBytes(3 * MiB);
        await writeFile(path.join(dir, 'ahead.src'), data);
        for (const [name, args] of [
          ['ahead-piped.bin', ['upload', '-', 'ahead-piped.bin']],
          ['ahead-file.bin', ['upload', 'ahead.src', 'ahead-file.bin']],
        ] as const) {
          const { child, stderr } = startFts(args, slow.port);
          // The input ends at once: the client has all of it, and its trailer, in the kernel's buffers well
          // before the server (at 1 MiB/s) has read a third of it.
          child.stdin.end(name === 'ahead-piped.bin' ? data : undefined);
          const under = async (): Promise<boolean> => (await sessionsJson(slow.adminSocket)).some((s) => s.op === 'upload' && s.file === name && s.bytes > 0);
          await waitUntil(`the upload of ${name} to be under way`, under, 15_000);
          const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
          child.kill('SIGINT');
          const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
          expect(code, stderr()).to.equal(130);
          await waitUntil(`the upload of ${name} to end on the server`, () => auditOn(name).length > 0, 10_000);
          expect(auditOn(name)[0], name).to.include({ result: 'error' });
          expect(await publishedSha256(slow.storage, ALICE.user, name), name).to.equal(null);
        }
      } finally {
        await slow.stop();
      }
    });

    it('a streamed pipe whose connection drops fails at once (exit 1; a pipe cannot be sent again) and leaves nothing on the server', async () => {
      const p = await proxy((i) => (i === 0 ? { cutUpAfter: 1 * MiB } : {}));
      const r = await cli(['upload', '-', 'stream-dropped.bin'], { input: randomBytes(3 * MiB), port: p.port });
      expect(r.code, describeRun(r)).to.equal(1);
      expect(p.connections, 'no second connection').to.equal(1);
      await waitUntil('the upload to end on the server', () => auditOf('upload', 'stream-dropped.bin').length > 0, 10_000);
      expect(await publishedSha256(server.storage, ALICE.user, 'stream-dropped.bin')).to.equal(null);
      expect(await stagingFiles(server, ALICE.user), 'nothing staged').to.deep.equal([]);
    });

    it('an empty pipe stores an empty file', async () => {
      const r = await cli(['put', '-', 'empty-pipe.txt'], { input: '' });
      expect(r.code, describeRun(r)).to.equal(0);
      expect(r.out).to.match(/^uploaded empty-pipe\.txt \(0 bytes, sha256 e3b0c442/);
      expect(await publishedSha256(server.storage, ALICE.user, 'empty-pipe.txt')).to.equal(sha256(Buffer.alloc(0)));
    });

    it('a directory on standard input (`upload - NAME < DIR`) is refused: exit 1, named, nothing stored (not an empty file)', async () => {
      const r = await cli(['upload', '-', 'from-dir.bin'], { stdinFile: dir });
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.stderr).to.include('standard input is a directory');
      expect(await publishedSha256(server.storage, ALICE.user, 'from-dir.bin')).to.equal(null);
      const spooled = await cli(['upload', '-', 'from-dir.bin', '--spool'], { stdinFile: dir });
      expect(spooled.code, describeRun(spooled)).to.equal(1);
      expect(await publishedSha256(server.storage, ALICE.user, 'from-dir.bin')).to.equal(null);
    });

    it('a regular file redirected to standard input is uploaded as it is, without a copy', async () => {
      const data = randomBytes(2 * MiB);
      const file = path.join(dir, 'redirected.src');
      await writeFile(file, data);
      // TMPDIR that does not exist: a copy could not be made, so success shows none was.
      const r = await cli(['upload', '-', 'redirected.bin'], { stdinFile: file, env: { TMPDIR: path.join(dir, 'no-such-dir') } });
      expect(r.code, describeRun(r)).to.equal(0);
      expect(await publishedSha256(server.storage, ALICE.user, 'redirected.bin')).to.equal(sha256(data));
    });

    it('a regular file on standard input that was partly read already is uploaded from where it stands', async () => {
      const data = randomBytes(64 * 1024);
      const file = path.join(dir, 'partly-read.src');
      await writeFile(file, data);
      // dd reads exactly 5 bytes of the shared file description; fts then gets the rest.
      const script = `dd bs=5 count=1 of=/dev/null 2>/dev/null; exec "$0" "$@"`;
      const fd = openSync(file, 'r');
      let run: ChildProcess;
      try {
        run = spawn('sh', ['-c', script, process.execPath, CLIENT_CLI, '--host', '127.0.0.1', '--port', String(server.port), '--user', ALICE.user, 'upload', '-', 'partly-read.bin'], {
          cwd: dir,
          env: cliEnv(ALICE.password, { TMPDIR: spoolDir }),
          stdio: [fd, 'ignore', 'pipe'],
        });
      } finally {
        closeSync(fd);
      }
      children.push(run);
      let stderr = '';
      run.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const exit = await childExit(run, '', 30_000, () => `partly-read upload (stderr: ${stderr})`);
      expect(exit.code, stderr).to.equal(0);
      expect(await publishedSha256(server.storage, ALICE.user, 'partly-read.bin')).to.equal(sha256(data.subarray(5)));
      expect(await spoolLeftovers()).to.deep.equal([]);
    });

    it('without NAME, or inside the shell, `-` is a usage error (exit 2) and nothing is sent', async () => {
      const noName = await cli(['upload', '-'], { input: 'data' });
      expect(noName.code, describeRun(noName)).to.equal(2);
      expect(noName.stderr).to.include('upload - NAME');
      const shell = await cli(['shell'], { input: 'put - from-shell.txt\n' });
      expect(shell.code, describeRun(shell)).to.equal(2);
      expect(shell.stderr).to.include('standard input belongs to the shell');
      const getShell = await cli(['shell'], { input: 'get piped.bin -\n' });
      expect(getShell.code, describeRun(getShell)).to.equal(2);
      expect(getShell.stderr).to.include('standard output belongs to the shell');
      expect(await publishedSha256(server.storage, ALICE.user, 'from-shell.txt')).to.equal(null);
    });

    it('a bad NAME is refused before the input is read or anything is sent (exit 2, as any name refused locally)', async () => {
      const logins = server.lines.filter((l) => l['event'] === 'auth').length;
      const r = await cli(['upload', '-', '../escape'], { input: 'data' });
      expect(r.code, describeRun(r)).to.equal(2);
      expect(r.stderr).to.include('"../escape"');
      await sleep(200);
      expect(server.lines.filter((l) => l['event'] === 'auth').length, 'no login was even tried').to.equal(logins);
    });

    it('--spool: Ctrl+C while standard input is still being read exits 130 and leaves no copy behind', async () => {
      const { child, stderr } = startFts(['upload', '-', 'never-ends.bin', '--spool']);
      child.stdin.write(randomBytes(256 * 1024)); // and the pipe stays open: the input never ends
      await waitUntil('the copy of stdin to begin', () => copyOpenIn(child.pid!), 15_000);
      expect(await spoolLeftovers(), 'the copy has no name while it is written').to.deep.equal([]);
      const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      child.kill('SIGINT');
      const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
      expect(code, stderr()).to.equal(130);
      expect(await spoolLeftovers(), 'the copy is removed').to.deep.equal([]);
      expect(await publishedSha256(server.storage, ALICE.user, 'never-ends.bin')).to.equal(null);
      child.stdin.destroy();
    });
  });

  const slowPipes = [
    { title: "a pipe slower than the server's stall timeout keeps its one session alive (keep-alive frames), even with --retries 0", server: ['--stall-timeout', '1'], extra: [] },
    { title: "--spool: a pipe slower than the server's idle timeout keeps its one session alive while it is copied (noop), even with --retries 0", server: ['--idle-timeout', '1'], extra: ['--spool'] },
  ];
  for (const variant of slowPipes) {
    it(variant.title, async () => {
      const idle = await TestServer.start({ workers: 1, args: variant.server });
      try {
        const { child, stderr } = startFts(['--retries', '0', 'upload', '-', 'slow-pipe.txt', ...variant.extra], idle.port);
        child.stdin.write('first line\n');
        await sleep(2_500); // well past the timeout
        child.stdin.end('second line\n');
        const exit = await childExit(child, '', 30_000, () => `slow pipe upload (stderr: ${stderr()})`);
        expect(exit.code, stderr()).to.equal(0);
        expect(await publishedSha256(idle.storage, ALICE.user, 'slow-pipe.txt')).to.equal(sha256(Buffer.from('first line\nsecond line\n')));
        expect(idle.lines.filter((l) => l['event'] === 'auth' && l['result'] === 'success'), 'one login, no reconnection').to.have.length(1);
      } finally {
        await idle.stop();
      }
    });
  }

  it('--spool: a copy being read when the CLI is killed (SIGKILL) leaves nothing behind', async () => {
    const { child } = startFts(['upload', '-', 'killed-copy.bin', '--spool']);
    child.stdin.write(randomBytes(2 * MiB));
    await waitUntil('the copy of stdin to begin', () => copyOpenIn(child.pid!), 15_000);
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('close', (_code, signal) => resolve(signal)));
    child.kill('SIGKILL');
    expect(await exited).to.equal('SIGKILL');
    expect(await spoolLeftovers()).to.deep.equal([]);
  });

  describe('download NAME -', () => {
    it('writes the exact bytes to standard output and the result line to stderr (--json too; --quiet: none)', async () => {
      const data = randomBytes(5 * MiB + 3);
      await (await login()).uploadBuffer('to-stdout.bin', data);
      const r = await cli(['download', 'to-stdout.bin', '-']);
      expect(r.code, describeRun(r)).to.equal(0);
      expect(r.stdout.equals(data), 'stdout holds exactly the file').to.equal(true);
      expect(r.stderr).to.equal(`downloaded to-stdout.bin -> standard output (${data.length} bytes, sha256 ${sha256(data)})\n`);
      const json = await cli(['get', 'to-stdout.bin', '-', '--json']);
      expect(json.code, describeRun(json)).to.equal(0);
      expect(json.stdout.equals(data)).to.equal(true);
      expect(JSON.parse(json.stderr)).to.include({ name: 'to-stdout.bin', bytes: data.length, sha256: sha256(data), resumedFrom: 0 });
      const quiet = await cli(['get', 'to-stdout.bin', '-', '-q']);
      expect(quiet.code, describeRun(quiet)).to.equal(0);
      expect(quiet.stdout.equals(data)).to.equal(true);
      expect(quiet.stderr).to.equal('');
      const local = await readdir(dir);
      expect(local, 'no local file named "-"').to.not.include('-');
      expect(local, 'no local file named "-.part"').to.not.include('-.part');
    });

    it('standard output on a terminal is a usage error (exit 2): the raw bytes would garble it', async () => {
      const r = await cli(['download', 'to-stdout.bin', '-'], { terminal: true });
      expect(r.code, describeRun(r)).to.equal(2);
      expect(r.out).to.include('standard output is a terminal');
    });

    it('a missing file exits 4 with nothing on stdout', async () => {
      const r = await cli(['download', 'no-such-file.bin', '-']);
      expect(r.code, describeRun(r)).to.equal(4);
      expect(r.stdout.length).to.equal(0);
    });

    it('continues after a dropped connection from the byte where the output stands: stdout holds the file once', async () => {
      const data = randomBytes(12 * MiB);
      await (await login()).uploadBuffer('cut-stdout.bin', data);
      const p = await proxy((i) => (i === 0 ? { cutDownAfter: 5 * MiB } : {}));
      const r = await cli(['download', 'cut-stdout.bin', '-', '--json'], { port: p.port });
      expect(r.code, describeRun(r)).to.equal(0);
      expect(p.cuts).to.equal(1);
      expect(r.stdout.length).to.equal(data.length);
      expect(r.stdout.equals(data), 'no byte twice, none missing').to.equal(true);
      const sent = await waitUntil('the resumed download audited ok', () => {
        const ok = auditOf('download', 'cut-stdout.bin').filter((l) => l['result'] === 'ok');
        return ok.length > 0 ? ok : undefined;
      });
      expect(Number(sent.at(-1)!['bytes']), 'the new connection sent only the rest').to.be.lessThan(data.length);
    });

    it('a frame corrupted on the way is fetched again from the bytes before it (library, one connection)', async () => {
      const data = randomBytes(4 * MiB);
      await (await login()).uploadBuffer('corrupt-stdout.bin', data);
      const p = await proxy((i) => (i === 0 ? { corruptDownPayloadAt: 2 * MiB + 100 } : {}));
      const client = await login(p.port);
      const out = new Collector();
      const r = await client.downloadStream('corrupt-stdout.bin', out);
      expect(p.corruptions).to.equal(1);
      expect(p.connections).to.equal(1);
      expect(r).to.include({ size: data.length, sha256: sha256(data), resumedFrom: 0 });
      expect(out.data.equals(data)).to.equal(true);
    });

    it('a frame altered with its CRC32C recomputed fails the whole-file check: CHECKSUM_MISMATCH after the bytes were written', async () => {
      const data = randomBytes(3 * MiB);
      await (await login()).uploadBuffer('forged-stdout.bin', data);
      const p = await proxy({ corruptDownPayloadAt: MiB, corruptDownFixCrc: true });
      const r = await cli(['download', 'forged-stdout.bin', '-'], { port: p.port });
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.stderr).to.match(/received bytes hash to [0-9a-f]{64}, the server announced [0-9a-f]{64}/);
    });

    it('a file replaced on the server between two attempts is not spliced: the continuation fails, naming the change', async () => {
      const first = randomBytes(6 * MiB);
      const owner = await login();
      await owner.uploadBuffer('changes.bin', first);
      const p = await proxy((i) => (i === 0 ? { cutDownAfter: 2 * MiB } : {}));
      const cut = await login(p.port);
      const position = new StreamPosition();
      const out = new Collector();
      const err1 = await cut.downloadStream('changes.bin', out, { position }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err1, 'the first attempt is cut').to.be.instanceOf(FtsError);
      expect(position.written, 'part of the file reached the output').to.be.greaterThan(0).and.lessThan(first.length);
      expect(out.data.equals(first.subarray(0, position.written))).to.equal(true);
      await owner.uploadBuffer('changes.bin', randomBytes(6 * MiB));
      const again = await login();
      const err2 = await again.downloadStream('changes.bin', out, { position }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err2).to.be.instanceOf(FtsError);
      expect((err2 as FtsError).code).to.equal('IO_ERROR');
      expect((err2 as FtsError).message).to.include('changed on the server during the download');
      expect(out.data.length, 'nothing of the new version was written').to.equal(position.written);
      expect(again.connected, 'the connection was closed rather than draining the new version').to.equal(false);
    });

    it('the same continuation of an unchanged file completes it (library, explicit position)', async () => {
      const data = randomBytes(6 * MiB);
      await (await login()).uploadBuffer('continues.bin', data);
      const p = await proxy((i) => (i === 0 ? { cutDownAfter: 3 * MiB } : {}));
      const position = new StreamPosition();
      const out = new Collector();
      await (await login(p.port)).downloadStream('continues.bin', out, { position }).catch(() => undefined);
      const from = position.written;
      expect(from).to.be.greaterThan(0);
      const r = await (await login()).downloadStream('continues.bin', out, { position });
      expect(r).to.include({ size: data.length, sha256: sha256(data), resumedFrom: from });
      expect(out.data.equals(data)).to.equal(true);
    });

    it('an output that fails stops the download at once, and ResilientClient does not retry it', async () => {
      const data = randomBytes(8 * MiB);
      await (await login()).uploadBuffer('bad-output.bin', data);
      const client = await ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password });
      clients.push(client);
      const failure = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      const err = await client.downloadStream('bad-output.bin', new Collector(failure)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).code).to.equal('NO_SPACE');
      expect((err as FtsError).message).to.include('output');
      expect(client.reconnects, 'not retried on a new connection').to.equal(0);
      // The client still works: the next call reconnects.
      expect((await client.list()).some((e) => e.name === 'bad-output.bin')).to.equal(true);
    });

    it('an output destroyed without an error (a client that went away) stops the download instead of hanging', async () => {
      const data = randomBytes(8 * MiB);
      await (await login()).uploadBuffer('destroyed-output.bin', data);
      const client = await login();
      let taken = 0;
      const out = new Writable({
        write(chunk: Buffer, _enc, done) {
          taken += chunk.length;
          done();
          if (taken >= MiB) this.destroy();
        },
      });
      const err = await Promise.race([client.downloadStream('destroyed-output.bin', out).then(() => null, (e: unknown) => e), sleep(20_000).then(() => 'hung')]);
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).message).to.include('closed before the download ended');
      // A stream already closed is refused before anything is asked.
      // The first download's own record comes when its server session sees the end, which may be after
      // the client's error: wait for it, or it would be counted as the refused one's.
      await waitUntil('the first download audited', () => auditOf('download', 'destroyed-output.bin').length > 0, 10_000);
      const again = await login();
      const before = auditOf('download', 'destroyed-output.bin').length;
      const refused = await again.downloadStream('destroyed-output.bin', out).then(() => null, (e: unknown) => e);
      expect((refused as FtsError).message).to.include('closed before the download ended');
      expect(again.connected, 'nothing was sent, the session goes on').to.equal(true);
      await sleep(100);
      expect(auditOf('download', 'destroyed-output.bin').length).to.equal(before);
    });

    it('a reader that goes away (`| head -c`) stops the download: exit 1, "broken pipe", the rest never sent', async () => {
      const data = randomBytes(16 * MiB);
      await (await login()).uploadBuffer('gone-reader.bin', data);
      const p = await proxy({ throttleDown: 4 * MiB });
      const { child, stderr } = startFts(['download', 'gone-reader.bin', '-'], p.port);
      child.stdout.once('data', () => child.stdout.destroy()); // read a little, then go away
      const exit = await childExit(child, '', 30_000, () => `download to a reader that went away (stderr: ${stderr()})`);
      expect(exit.code, stderr()).to.equal(1);
      expect(stderr()).to.include('broken pipe');
      const ended = await waitUntil('the download audited', () => {
        const lines = auditOf('download', 'gone-reader.bin');
        return lines.length > 0 ? lines : undefined;
      });
      expect(ended.every((l) => l['result'] !== 'ok'), 'the server did not get to send it all').to.equal(true);
    });
  });
});
