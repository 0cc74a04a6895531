/**
 * --upload-hook, end to end: a real fts-server runs a real program (a shell script written by the test)
 * after each published upload. What is promised: the program gets the file's path as its argument and the
 * details in FTS_* variables (and nothing of the server's environment beyond PATH and the like); no shell
 * ever sees the name; the reply does not wait for it; every run's end is logged and counted (ok, failed,
 * timeout, killed with what it started); a drain waits for runs in progress up to its deadline; a program
 * the server cannot run refuses the start.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { holdLock, loginClient, stagingFiles } from '../helpers/common.js';
import { metricsPortOf, scrape } from '../helpers/hardening-proc.js';
import { RawClient, uploadBytes } from '../helpers/raw-client.js';
import { runServerOnce } from '../helpers/lifecycle-spawn.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { DEFAULT_USERS, TestServer, type LogLine } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;

/** fts_upload_hooks_total of one event (upload, delete, rename) by result, from the server's /metrics. */
async function hookRuns(server: TestServer, event = 'upload'): Promise<Record<string, number>> {
  const runs: Record<string, number> = {};
  for (const m of (await scrape(await metricsPortOf(server))).matchAll(/^fts_upload_hooks_total\{event="([a-z]+)",result="([a-z]+)"\} (\d+)$/gm)) {
    if (m[1] === event) runs[m[2]!] = Number(m[3]);
  }
  return runs;
}

const hookLines = (server: TestServer): LogLine[] => server.lines.filter((l) => l['event'] === 'upload-hook' && l['result'] !== undefined);

describe('upload hook (--upload-hook)', function () {
  this.timeout(60_000);

  let dir: string;
  let cleanup: () => Promise<void>;
  let server: TestServer | null = null;
  const clients: FtsClient[] = [];

  /** A hook script: `body` runs after it has noted its arguments and variables in `dir`/runs/<pid>. */
  async function hook(body = ''): Promise<string> {
    const file = path.join(dir, 'hook.sh');
    await writeFile(
      file,
      [
        '#!/bin/sh',
        `out='${dir}/runs'`,
        'mkdir -p "$out"',
        // One line per value, then the environment as it came, then a digest of the file.
        'env | sort > "$out/$$.env"',
        'printf "%s\\n" "$#" "$1" "$FTS_EVENT" "$FTS_USER" "$FTS_NAME" "$FTS_PATH" "$FTS_SIZE" "$FTS_SHA256" "$FTS_MTIME" "$FTS_REMOTE" > "$out/$$.tmp"',
        'sha256sum "$1" | cut -d" " -f1 >> "$out/$$.tmp"',
        'mv "$out/$$.tmp" "$out/$$.run"',
        body,
        '',
      ].join('\n'),
    );
    await chmod(file, 0o755);
    return file;
  }

  async function runs(): Promise<string[][]> {
    const names = await readdir(path.join(dir, 'runs')).catch(() => [] as string[]);
    const result: string[][] = [];
    for (const n of names.filter((n) => n.endsWith('.run')).sort()) result.push((await readFile(path.join(dir, 'runs', n), 'utf8')).split('\n').slice(0, -1));
    return result;
  }

  const connect = (s: TestServer): Promise<FtsClient> => loginClient(s, clients, ALICE);

  beforeEach(async function () {
    ({ dir, cleanup } = await tempDir('fts-hook-'));
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    // A hook the test left waiting is released first, so that the drain does not wait for it.
    await writeFile(path.join(dir, 'go'), '').catch(() => undefined);
    await server?.stop();
    server = null;
    // Whatever a hook left behind (each run is its own process group, which server.stop() does not reach).
    for (const pid of await hookPids()) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await cleanup();
  });

  /** The process ids of the runs so far (each its group's id). */
  async function hookPids(): Promise<number[]> {
    const names = await readdir(path.join(dir, 'runs')).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith('.env')).map((n) => Number(n.slice(0, -4)));
  }

  it('runs after each published upload with the path as its argument and the details in FTS_* variables; a name is never seen by a shell', async function () {
    server = await TestServer.start({ args: ['--upload-hook', await hook()], env: { FTS_TEST_SECRET: 'not for hooks' } });
    const c = await connect(server);
    const data = randomBytes(5000);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const name = '$(touch pwned); `id` "x" \'y\' ; *.txt';
    const up = await c.uploadBuffer(name, data);
    await waitUntil('the hook ran', async () => (await runs()).length === 1, 10_000);
    const [run] = await runs();
    const file = path.join(server.storage, ALICE.user, name);
    expect(run).to.deep.equal(['1', file, 'upload', ALICE.user, name, file, '5000', sha256, String(up.mtime), '127.0.0.1', sha256]);
    const envNames = (await readdir(path.join(dir, 'runs'))).filter((n) => n.endsWith('.env'));
    const env = await readFile(path.join(dir, 'runs', envNames[0]!), 'utf8');
    expect(env, 'the server environment is not passed on').to.not.include('FTS_TEST_SECRET');
    expect(env).to.match(/^PATH=/m);
    // A shell would have run it in the hook's working directory: the server's (this process's).
    for (const where of [dir, process.cwd(), server.dir]) expect((await readdir(where)).filter((n) => n === 'pwned'), `nothing was run from the name (${where})`).to.deep.equal([]);
    await waitUntil('the run logged', () => hookLines(server!).length === 1, 10_000);
    expect(hookLines(server)[0]).to.include({ result: 'ok', user: ALICE.user, file: name, size: 5000, sha256, code: 0 });
    expect(await hookRuns(server)).to.deep.include({ ok: 1, failed: 0, timeout: 0 });
  });

  it('--hook-events upload,delete,rename,download: deletes, renames and downloads run it too, with FTS_EVENT and their own details; by default they do not', async function () {
    const file = path.join(dir, 'events.sh');
    // One line per run: the argument count and argument, then the variables a delete or rename sets.
    await writeFile(file, `#!/bin/sh\nprintf '%s|' "$#" "$1" "$FTS_EVENT" "$FTS_USER" "$FTS_NAME" "$FTS_PATH" "$FTS_SIZE" "$FTS_FROM_NAME" "$FTS_FROM_PATH" "$FTS_REPLACED" "\${FTS_SHA256-unset}" "$FTS_REMOTE" "\${FTS_OFFSET-unset}" "\${FTS_LENGTH-unset}" >> '${dir}/events'\necho >> '${dir}/events'\n`);
    await chmod(file, 0o755);
    const events = async (): Promise<string[][]> => (await readFile(path.join(dir, 'events'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '').map((l) => l.split('|').slice(0, -1));
    server = await TestServer.start({ workers: 1, args: ['--upload-hook', file, '--hook-events', 'upload, delete,rename,download'] });
    const c = await connect(server);
    const at = (name: string): string => path.join(server!.storage, ALICE.user, name);
    const sha256 = createHash('sha256').update('12345').digest('hex');
    await c.uploadBuffer('a.txt', Buffer.from('12345'));
    await c.uploadBuffer('old.txt', Buffer.from('1'));
    await c.rename('a.txt', 'b.txt');
    await c.downloadBuffer('b.txt');
    // A resumed download: from offset 2.
    const raw = await RawClient.login(server.port, ALICE.user, ALICE.password);
    await raw.send({ op: 'download', name: 'b.txt', offset: 2 });
    expect((await raw.reply()).final).to.include({ status: 'ok', length: 3, sha256 });
    raw.socket.destroy();
    await c.rename('b.txt', 'old.txt', { overwrite: true });
    await c.delete('old.txt');
    await waitUntil('seven runs logged', () => hookLines(server!).length === 7, 10_000);
    const seen = await events();
    expect(seen.filter((e) => e[2] !== 'upload')).to.deep.equal([
      ['1', at('b.txt'), 'rename', ALICE.user, 'b.txt', at('b.txt'), '5', 'a.txt', at('a.txt'), '0', 'unset', '127.0.0.1', 'unset', 'unset'],
      ['1', at('b.txt'), 'download', ALICE.user, 'b.txt', at('b.txt'), '5', '', '', '', sha256, '127.0.0.1', '0', '5'],
      ['1', at('b.txt'), 'download', ALICE.user, 'b.txt', at('b.txt'), '5', '', '', '', sha256, '127.0.0.1', '2', '3'],
      ['1', at('old.txt'), 'rename', ALICE.user, 'old.txt', at('old.txt'), '5', 'b.txt', at('b.txt'), '1', 'unset', '127.0.0.1', 'unset', 'unset'],
      ['1', at('old.txt'), 'delete', ALICE.user, 'old.txt', at('old.txt'), '5', '', '', '', 'unset', '127.0.0.1', 'unset', 'unset'],
    ]);
    expect(hookLines(server).map((l) => [l['trigger'], l['file'], l['result']])).to.deep.include.members([
      ['rename', 'b.txt', 'ok'],
      ['rename', 'old.txt', 'ok'],
      ['delete', 'old.txt', 'ok'],
    ]);
    expect(hookLines(server).find((l) => l['trigger'] === 'rename' && l['file'] === 'old.txt')).to.include({ from: 'b.txt', replaced: true, msg: 'rename hook ran' });
    expect(await hookRuns(server, 'rename')).to.deep.include({ ok: 2, failed: 0 });
    expect(await hookRuns(server, 'delete')).to.deep.include({ ok: 1, failed: 0 });
    expect(await hookRuns(server, 'download')).to.deep.include({ ok: 2, failed: 0 });
    expect(hookLines(server).filter((l) => l['trigger'] === 'download').map((l) => [l['offset'], l['length'], l['msg']])).to.deep.equal([
      [0, 5, 'download hook ran'],
      [2, 3, 'download hook ran'],
    ]);
    expect(await hookRuns(server, 'upload')).to.deep.include({ ok: 2, failed: 0 });
    await server.stop();

    // The default is uploads only: a delete, a rename or a download runs nothing.
    await rm(path.join(dir, 'events'), { force: true });
    server = await TestServer.start({ workers: 1, args: ['--upload-hook', file] });
    const d = await connect(server);
    await d.uploadBuffer('a.txt', Buffer.from('1'));
    await d.rename('a.txt', 'b.txt');
    await d.downloadBuffer('b.txt');
    await d.delete('b.txt');
    await d.uploadBuffer('last.txt', Buffer.from('1'));
    // A run for the rename, the download or the delete would have started before the last upload's.
    await waitUntil('two runs logged', () => hookLines(server!).length === 2, 10_000);
    expect((await events()).map((e) => [e[2], e[4]])).to.deep.equal([
      ['upload', 'a.txt'],
      ['upload', 'last.txt'],
    ]);
  });

  it('a pipelined upload runs its hook at its publish, not at its reply: a delete that followed the publish runs after it', async function () {
    const file = path.join(dir, 'order.sh');
    await writeFile(file, `#!/bin/sh\necho "$FTS_EVENT $FTS_NAME" >> '${dir}/order'\n`);
    await chmod(file, 0o755);
    server = await TestServer.start({ workers: 1, args: ['--upload-hook', file, '--hook-events', 'upload,delete'] });
    // y.txt's publish waits for the lock this process holds, so its reply, and x.txt's after it, wait too.
    const release = await holdLock(server.storage, ALICE.user, 'y.txt');
    try {
      const a = await RawClient.login(server.port, ALICE.user, ALICE.password);
      await a.write(uploadBytes(1, 'y.txt', Buffer.from('y')), uploadBytes(2, 'x.txt', Buffer.from('x')));
      const x = path.join(server.storage, ALICE.user, 'x.txt');
      await waitUntil('x.txt published', async () => (await readFile(x).catch(() => null)) !== null, 10_000);
      const b = await connect(server);
      await b.delete('x.txt');
      await release();
      expect((await a.reply()).final).to.include({ id: 1, status: 'ok' });
      expect((await a.reply()).final).to.include({ id: 2, status: 'ok' });
      a.destroy();
    } finally {
      await release();
    }
    await waitUntil('three runs logged', () => hookLines(server!).length === 3, 10_000);
    const order = (await readFile(path.join(dir, 'order'), 'utf8')).split('\n').filter((l) => l !== '');
    expect(order.filter((l) => l.endsWith('x.txt'))).to.deep.equal(['upload x.txt', 'delete x.txt']);
  });

  it('--hook-events with anything but upload, delete, rename and download refuses the start (exit 2)', async function () {
    const r = await runServerOnce(['--port', '0', '--storage', path.join(dir, 'storage'), '--hook-events', 'upload,move']);
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr).to.include('--hook-events: must be a comma-separated list of upload, delete, rename, download (got "upload,move")');
  });

  it('--hook-events or --upload-hook-timeout without --upload-hook: the start says at warn that no hook runs (and a plain start says nothing of hooks)', async function () {
    server = await TestServer.start({ workers: 1, args: ['--hook-events', 'delete', '--upload-hook-timeout', '5'] });
    const warning = await server.waitForLog((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('without --upload-hook'));
    expect(warning).to.include({ msg: '--hook-events and --upload-hook-timeout do nothing without --upload-hook: no hook runs', uploadHookTimeout: 5 });
    expect(warning['hookEvents']).to.deep.equal(['delete']);
    await server.stop();
    server = await TestServer.start({ workers: 1 });
    await server.waitForLog((l) => l.msg === 'worker started');
    expect(server.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('--upload-hook'))).to.deep.equal([]);
  });

  it('the reply does not wait for the hook: an upload is answered while its hook still runs', async function () {
    // The hook waits until the test creates `go`, which it does only after the upload's reply.
    server = await TestServer.start({ args: ['--upload-hook', await hook(`while [ ! -e '${dir}/go' ]; do sleep 0.05; done`)] });
    const c = await connect(server);
    await c.uploadBuffer('a.txt', Buffer.from('a'));
    await waitUntil('the hook started', async () => (await runs()).length === 1, 10_000);
    expect(hookLines(server), 'not ended yet').to.deep.equal([]);
    await writeFile(path.join(dir, 'go'), '');
    await waitUntil('the hook ended', () => hookLines(server!).length === 1, 10_000);
    expect(hookLines(server)[0]).to.include({ result: 'ok' });
  });

  it('a failing hook is logged with its exit code and output; one past --upload-hook-timeout is killed with what it started', async function () {
    server = await TestServer.start({ args: ['--upload-hook', await hook(`if [ "$FTS_NAME" = slow ]; then sleep 300 & echo "$!" > '${dir}/child'; wait; fi\necho "scanner says no" >&2\nexit 3`), '--upload-hook-timeout', '1'] });
    const c = await connect(server);
    await c.uploadBuffer('bad', Buffer.from('x'));
    await waitUntil('the failed run logged', () => hookLines(server!).length === 1, 10_000);
    expect(hookLines(server)[0]).to.include({ result: 'failed', code: 3, file: 'bad', output: 'scanner says no\n', level: 'warn' });
    await c.uploadBuffer('slow', Buffer.from('y'));
    await waitUntil('the slow run killed', () => hookLines(server!).length === 2, 10_000);
    expect(hookLines(server)[1]).to.include({ result: 'timeout', file: 'slow', signal: 'SIGKILL' });
    const child = Number(await readFile(path.join(dir, 'child'), 'utf8'));
    await waitUntil('the sleep the hook started is gone too', () => !alive(child), 5_000);
    expect(await hookRuns(server)).to.deep.include({ ok: 0, failed: 1, timeout: 1 });
    // Both files were published all the same: the hook's verdict is its own business.
    expect((await c.list()).map((e) => e.name).sort()).to.deep.equal(['bad', 'slow']);
  });

  it('a drain (SIGINT) waits for a run in progress, within its grace; the run is logged before the server exits', async function () {
    server = await TestServer.start({ args: ['--upload-hook', await hook(`while [ ! -e '${dir}/go' ]; do sleep 0.05; done`), '--grace', '20'] });
    const c = await connect(server);
    await c.uploadBuffer('a.txt', Buffer.from('a'));
    await waitUntil('the hook started', async () => (await runs()).length === 1, 10_000);
    c.close();
    server.signal('SIGINT');
    await waitUntil('the worker waits for the hook', () => server!.lines.some((l) => l.msg === 'waiting for upload hooks'), 10_000);
    expect(server.proc.exitCode, 'still running').to.equal(null);
    // The drain's progress counts it (once a second).
    const progress = await waitUntil('progress counts the hook', () => server!.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('drain waiting for 0 sessions, 0 transfers, 1 upload hook runs')), 5_000);
    expect(progress).to.include({ hooks: 1 });
    await writeFile(path.join(dir, 'go'), '');
    const exit = await server.waitForExit(20_000);
    expect(exit.code).to.equal(0);
    expect(hookLines(server).map((l) => l['result'])).to.deep.equal(['ok']);
  });

  it('several failing runs at once: each line keeps its own output (read to the end of the pipes)', async function () {
    server = await TestServer.start({ args: ['--upload-hook', await hook('echo "no: $FTS_NAME" >&2\nexit 3')] });
    const c = await connect(server);
    const names = Array.from({ length: 12 }, (_, i) => `f${i}`);
    await Promise.all(names.map((n) => c.uploadBuffer(n, Buffer.from(n))));
    await waitUntil('every run logged', () => hookLines(server!).length === names.length, 20_000);
    for (const l of hookLines(server)) expect(l, String(l['file'])).to.include({ result: 'failed', code: 3, output: `no: ${String(l['file'])}\n` });
  });

  it('what a run leaves in the background is killed when it exits: no run outlives its line', async function () {
    server = await TestServer.start({ args: ['--upload-hook', await hook(`sleep 300 &\necho "$!" > '${dir}/child'\nexit 0`)] });
    const c = await connect(server);
    await c.uploadBuffer('a', Buffer.from('a'));
    await waitUntil('the run logged', () => hookLines(server!).length === 1, 10_000);
    expect(hookLines(server)[0]).to.include({ result: 'ok' });
    const child = Number(await readFile(path.join(dir, 'child'), 'utf8'));
    await waitUntil('the background sleep is gone', () => !alive(child), 5_000);
  });

  it('an unsized upload (fts upload - NAME) and a resumed upload run it too, once each', async function () {
    server = await TestServer.start({ args: ['--upload-hook', await hook()] });
    const piped = await runCli(['upload', '-', 'piped.txt'], { port: server.port, user: ALICE.user, password: ALICE.password, input: 'from a pipe' });
    expect(piped.code, describeRun(piped)).to.equal(0);
    // A resume: the first part staged by a raw upload cut off, the rest sent by the library.
    const data = randomBytes(3 * 1024 * 1024);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const raw = await RawClient.login(server.port, ALICE.user, ALICE.password);
    await raw.send({ op: 'upload', name: 'big.bin', size: data.length, sha256 });
    await raw.sendData(data.subarray(0, 1024 * 1024));
    await waitUntil('the first part staged', async () => (await stagingFiles(server!, ALICE.user)).length > 0, 10_000);
    raw.socket.destroy();
    const local = path.join(dir, 'big.bin');
    await writeFile(local, data);
    const c = await connect(server);
    await c.upload(local, 'big.bin');
    await waitUntil('two runs logged', () => hookLines(server!).length === 2, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(hookLines(server).map((l) => [l['file'], l['result']]).sort()).to.deep.equal([['big.bin', 'ok'], ['piped.txt', 'ok']]);
    expect((await runs()).map((r) => r[4]).sort()).to.deep.equal(['big.bin', 'piped.txt']);
  });

  it('a second Ctrl+C while the worker waits for hooks: runs are killed and logged as killed, queued ones as unrun; the server exits at once', async function () {
    server = await TestServer.start({ workers: 1, args: ['--upload-hook', await hook(`while [ ! -e '${dir}/go' ]; do sleep 0.05; done`), '--grace', '60'] });
    const c = await connect(server);
    // Four run at once in a worker; two wait.
    for (let i = 0; i < 6; i++) await c.uploadBuffer(`f${i}`, Buffer.from(String(i)));
    await waitUntil('four runs started', async () => ((await hookPids()).length === 4 ? true : undefined), 10_000);
    c.close();
    server.signal('SIGINT');
    await waitUntil('the worker waits for the hooks', () => server!.lines.some((l) => l.msg === 'waiting for upload hooks'), 10_000);
    const started = Date.now();
    server.signal('SIGINT');
    const exit = await server.waitForExit(10_000);
    expect(Date.now() - started, 'ms to exit after the second Ctrl+C').to.be.below(4_000);
    expect(exit.code).to.not.equal(null);
    const results = hookLines(server).map((l) => l['result']).sort();
    expect(results).to.deep.equal(['killed', 'killed', 'killed', 'killed', 'unrun', 'unrun']);
    for (const pid of await hookPids()) expect(alive(pid), `run ${pid}`).to.equal(false);
  });

  it('a program the server cannot run refuses the start (exit 1), naming it', async function () {
    const users = path.join(dir, 'users.txt');
    await writeFile(users, `${ALICE.user}:${ALICE.password}\n`, { mode: 0o600 });
    const base = ['--port', '0', '--storage', path.join(dir, 'storage'), '--users', users, '--admin-socket', path.join(dir, 'admin.sock'), '--metrics-port', '0'];
    const missing = path.join(dir, 'missing.sh');
    let r = await runServerOnce([...base, '--upload-hook', missing]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.include(`upload hook ${missing}: `);
    const plain = path.join(dir, 'plain.sh');
    await writeFile(plain, '#!/bin/sh\n', { mode: 0o644 });
    r = await runServerOnce([...base, '--upload-hook', plain]);
    // X_OK needs an execute bit, even for root.
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.include(`upload hook ${plain}: `);
    r = await runServerOnce([...base, '--upload-hook', dir]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.include(`upload hook ${dir}: not a regular file`);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
