/**
 * Resumable transfers end to end: a real fts-server (test/helpers/server.ts), the real `fts` CLI and the
 * client library, with a fault-injecting proxy (test/helpers/proxy.ts) in between to corrupt, cut and
 * slow down the byte streams. Files are 8–16 MiB and the proxy throttles, so "in the middle of a transfer"
 * is reached reliably without huge files; every wait is bounded.
 */
import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, lchown, lstat, mkdir, open, readdir, readFile, rename, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { FtsClient, FtsError, isServerError, ResilientClient } from '../../client/index.js';
import { encodeData, encodeHeader, FrameDecoder, MAX_CHUNK_BYTES, type Header } from '../../protocol/index.js';
import { uploadStagingKeys } from '../helpers/staging-keys.js';
import { sessionsJson } from '../helpers/admin-cli.js';
import { cliEnv, describeRun, runCli, type CliResult } from '../helpers/cli.js';
import { exists, freePort, publishedSha256, sha256, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { CLIENT_CLI } from '../helpers/paths.js';
import { FaultProxy, type FaultPlan } from '../helpers/proxy.js';
import { olderServer } from '../helpers/older-server.js';
import { DEFAULT_USERS, TestServer, type LogLine, type ServerOptions } from '../helpers/server.js';
import { mountOwnerMapped, unmount } from '../helpers/hardening-fs.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const MiB = 1024 * 1024;
/** Slow enough that a 16 MiB transfer takes seconds, fast enough that a test does not. */
const THROTTLE = 4 * MiB;

interface RunningCli {
  child: ChildProcess;
  result: Promise<CliResult>;
}

interface TransferJson {
  name: string;
  bytes: number;
  sha256: string;
  resumedFrom: number;
  seconds: number;
}

/**
 * The files an mput or mget run names, each once if it accounts for every file: done (its result line on
 * stdout, matched by `done`), cut while in flight (`fts: not <cut>: …`) or never attempted.
 */
function accounted(r: CliResult, done: RegExp, cut: string): string[] {
  const listed = (prefix: string): string[] => r.stderr.split('\n').find((l) => l.startsWith(prefix))?.slice(prefix.length).split(', ') ?? [];
  const finished = r.out.split('\n').flatMap((l) => done.exec(l)?.[1] ?? []);
  return [...finished, ...listed(`fts: not ${cut}: `), ...listed('fts: not attempted: '), ...listed('fts: stopped after the first failure; not attempted: ')];
}

function parseJsonLine(r: CliResult): TransferJson {
  const lines = r.out.trim().split('\n');
  expect(lines, describeRun(r)).to.have.length(1);
  const v = JSON.parse(lines[0]!) as TransferJson;
  expect(Object.keys(v).sort(), 'the --json keys').to.deep.equal(['bytes', 'name', 'resumedFrom', 'seconds', 'sha256']);
  return v;
}

/** Audit lines of one operation on one file, in log order. */
function audit(server: TestServer, event: string, file: string): LogLine[] {
  return server.lines.filter((l) => l['event'] === event && l['file'] === file);
}

/** Control of withSlowLocalReads: when the first slowed read began, and how many slowed reads are left. */
interface SlowReads {
  firstRead: Promise<void>;
  left: () => number;
}

describe('resumable transfers (end to end)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let dir = '';
  let cleanDir: () => Promise<void> = async () => undefined;
  const proxies: FaultProxy[] = [];
  const children: ChildProcess[] = [];
  const clients: FtsClient[] = [];
  const extraServers: TestServer[] = [];

  before(async function () {
    this.timeout(30_000);
    server = await TestServer.start({ workers: 2 });
    ({ dir, cleanup: cleanDir } = await tempDir('fts-resume-'));
  });

  after(async function () {
    this.timeout(30_000);
    await server.stop();
    await cleanDir();
  });

  afterEach(async function () {
    this.timeout(60_000);
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const c of clients.splice(0)) c.close();
    for (const p of proxies.splice(0)) await p.close();
    // Newest first: a restarted server uses the storage directory of the one it replaced.
    for (const s of extraServers.splice(0).reverse()) await s.stop();
  });

  async function proxy(target: number, plan: FaultPlan | ((index: number) => FaultPlan)): Promise<FaultProxy> {
    const p = await FaultProxy.start(target, plan);
    proxies.push(p);
    return p;
  }

  async function startServer(options: ServerOptions): Promise<TestServer> {
    const s = await TestServer.start(options);
    extraServers.push(s);
    return s;
  }

  async function login(port: number): Promise<FtsClient> {
    const c = await FtsClient.connect({ port });
    clients.push(c);
    await c.auth(ALICE.user, ALICE.password);
    return c;
  }

  async function localFile(name: string, size: number): Promise<{ file: string; data: Buffer }> {
    const data = randomBytes(size);
    const file = path.join(dir, name);
    await writeFile(file, data);
    return { file, data };
  }

  /**
   * Uploads `data` as `name` (on the server at `port`), then leaves what an interrupted download of it to
   * `<dir>/<localName>` would have kept: LOCAL.part holding `kept`, and the sidecar naming this version.
   */
  async function keptDownload(port: number, name: string, data: Buffer, kept: Buffer, localName: string): Promise<{ client: FtsClient; local: string; sidecar: string }> {
    const client = await login(port);
    await client.uploadBuffer(name, data);
    const [entry] = (await client.list({ long: true })).filter((e) => e.name === name);
    const local = path.join(dir, localName);
    const sidecar = JSON.stringify({ name, size: entry!.size, mtime: entry!.mtime });
    await writeFile(`${local}.part`, kept);
    await writeFile(`${local}.part.json`, sidecar);
    return { client, local, sidecar };
  }

  /** The CLI as a child process we can kill: like runCli, but returns at once. `input` goes to its stdin. */
  function startCli(args: readonly string[], port: number, input?: string): RunningCli {
    const argv = ['--host', '127.0.0.1', '--port', String(port), '--user', ALICE.user, ...args];
    const child = spawn(process.execPath, [CLIENT_CLI, ...argv], { cwd: dir, env: cliEnv(ALICE.password), stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    children.push(child);
    child.stdin?.end(input);
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (c: string) => {
      stderr += c;
    });
    const result = new Promise<CliResult>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fts ${argv.join(' ')} still running after 45 s`)), 45_000);
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        const stdout = Buffer.concat(out);
        resolve({ code, signal, stdout, stderr, out: stdout.toString('utf8'), argv });
      });
    });
    return { child, result };
  }

  function cli(args: readonly string[], port: number): Promise<CliResult> {
    return runCli(args, { port, user: ALICE.user, password: ALICE.password, cwd: dir, timeoutMs: 45_000 });
  }

  /**
   * The server's staging files of one upload of the local file `path.join(dir, name)` (<storage>/.fts/
   * staging/<user>/<key>…part, where the key is derived from name, size and either sha256 or, for a
   * streamed upload, the local file's version tag), longest first.
   */
  async function stagingFiles(storage: string, name: string, data: Buffer): Promise<Array<{ file: string; size: number }>> {
    const staging = path.join(storage, '.fts', 'staging', ALICE.user);
    const keys = await uploadStagingKeys(path.join(dir, name), name, data.length, sha256(data));
    const names = await readdir(staging).catch(() => [] as string[]);
    const found: Array<{ file: string; size: number }> = [];
    for (const entry of names) {
      if (!keys.some((key) => entry.startsWith(`${key}.`)) || !entry.endsWith('.part')) continue;
      const file = path.join(staging, entry);
      const size = await fileSize(file);
      found.push({ file, size });
    }
    return found.sort((a, b) => b.size - a.size);
  }

  /** Bytes the server has staged for this upload identity (0 while there is nothing). */
  async function stagedBytes(storage: string, name: string, data: Buffer): Promise<number> {
    return (await stagingFiles(storage, name, data))[0]?.size ?? 0;
  }

  async function fileSize(file: string): Promise<number> {
    return stat(file).then(
      (st) => st.size,
      () => 0,
    );
  }

  /** Runs the CLI and SIGKILLs it once `progressed` says the transfer is under way. */
  async function killMidway(args: readonly string[], port: number, progressed: () => Promise<boolean>): Promise<void> {
    const run = startCli(args, port);
    await waitUntil('the transfer to be under way', async () => (await progressed()) || (run.child.exitCode !== null ? 'exited' : false), 20_000);
    expect(run.child.exitCode, 'the CLI finished before it could be killed').to.equal(null);
    run.child.kill('SIGKILL');
    const r = await run.result;
    expect(r.signal, describeRun(r)).to.equal('SIGKILL');
  }

  it('resends an upload from the corrupted frame, not from 0, when one data frame is corrupted', async () => {
    const name = 'corrupt.bin';
    const { file, data } = await localFile(name, 8 * MiB);
    const corruptAt = 3 * MiB + 1000;
    const p = await proxy(server.port, (i) => (i === 0 ? { corruptPayloadAt: corruptAt } : {}));
    const client = await login(p.port);
    const r = await client.upload(file, name);
    expect(p.corruptions).to.equal(1);
    expect(r.sha256).to.equal(sha256(data));
    expect(r.resumedFrom).to.equal(0);
    expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(data));

    const lines = audit(server, 'upload', name);
    expect(JSON.stringify(lines)).to.include('"code":"CHUNK_CORRUPT"');
    const ok = lines.filter((l) => l['result'] === 'ok');
    expect(ok, 'one published upload').to.have.length(1);
    // The audit's bytes are what that request carried: size − offset of the resend.
    const resentFrom = data.length - Number(ok[0]!['bytes']);
    expect(resentFrom, 'the resend started where the corrupted frame did').to.be.greaterThan(2 * MiB).and.at.most(corruptAt);
  });

  /** The byte counts of the server's audited downloads of `name`, once `count` of them are logged. */
  async function downloadsSent(name: string, count: number): Promise<number[]> {
    // The audit line may follow the final reply by a moment: wait for it (bounded) rather than race it.
    return waitUntil(`${count} audited downloads of ${name}`, () => {
      const sent = audit(server, 'download', name).map((l) => Number(l['bytes']));
      return sent.length >= count ? sent : undefined;
    });
  }

  it('a download frame corrupted on the way (its CRC32C no longer matches) is fetched again from the bytes before it, on the same connection, and the file arrives intact', async () => {
    // README/PROTOCOL §6.3 + client.ts: the client checks each frame's CRC32C; a frame that arrives corrupted
    // (CHUNK_CORRUPT, found by the client) makes it continue from the good bytes before it, and the caller
    // never sees the error. Without the per-frame check the bad byte would reach LOCAL.part and only the
    // final SHA-256 would catch it: the download would fail with CHECKSUM_MISMATCH instead.
    const name = 'corrupt-down.bin';
    const data = randomBytes(4 * MiB); // ≥ 1 MiB: the received prefix is kept for the resend
    await (await login(server.port)).uploadBuffer(name, data);
    const corruptAt = 2 * MiB + 1000;
    const p = await proxy(server.port, (i) => (i === 0 ? { corruptDownPayloadAt: corruptAt } : {}));
    const client = await login(p.port);
    const local = path.join(dir, 'corrupt-down.local');

    const r = await client.download(name, local);
    expect(p.corruptions, 'one byte was flipped on the way').to.equal(1);
    expect(p.connections, 'recovered without a new connection').to.equal(1);
    expect(r).to.include({ size: data.length, sha256: sha256(data), resumedFrom: 0 });
    expect((await readFile(local)).equals(data), 'LOCAL holds the exact bytes').to.equal(true);
    expect(await exists(`${local}.part`), 'no .part left').to.equal(false);
    expect(await exists(`${local}.part.json`), 'no sidecar left').to.equal(false);
    // The server sent the whole file (the client read it to the end to stay in step), then, asked again,
    // the rest from the client's kept prefix: everything before the corrupted frame, which began at most
    // one frame (maxChunk) before the flipped byte.
    const sent = await downloadsSent(name, 2);
    expect(sent, 'the whole file, then one resend').to.have.length(2);
    expect(sent[0]).to.equal(data.length);
    const resentFrom = data.length - sent[1]!;
    expect(resentFrom, 'the resend started where the corrupted frame did').to.be.greaterThan(corruptAt - MAX_CHUNK_BYTES).and.at.most(corruptAt);
  });

  it('a download frame altered on the way with its CRC32C recomputed fails the whole-file SHA-256: CHECKSUM_MISMATCH, LOCAL untouched, LOCAL.part and its sidecar dropped', async () => {
    // The frame checks out, so only the final reply's SHA-256 (PROTOCOL §6.3) can tell. A download that
    // started from 0 is not retried (client.ts: only a continued one starts over), and README: the .part
    // and its sidecar are dropped when the bytes are wrong; LOCAL keeps whatever it held before.
    const name = 'forged-down.bin';
    const data = randomBytes(4 * MiB); // ≥ 1 MiB: a sidecar is written, so its removal is tested too
    await (await login(server.port)).uploadBuffer(name, data);
    const p = await proxy(server.port, { corruptDownPayloadAt: 2 * MiB + 1000, corruptDownFixCrc: true });
    const client = await login(p.port);
    const local = path.join(dir, 'forged-down.local');
    await writeFile(local, 'what LOCAL held before');

    const err = await client.download(name, local).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err, 'the download fails').to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('CHECKSUM_MISMATCH');
    expect(p.corruptions).to.equal(1);
    expect(await readFile(local, 'utf8'), 'LOCAL untouched').to.equal('what LOCAL held before');
    expect(await exists(`${local}.part`), 'LOCAL.part dropped').to.equal(false);
    expect(await exists(`${local}.part.json`), 'sidecar dropped').to.equal(false);
    expect(await downloadsSent(name, 1), 'asked once, not retried').to.deep.equal([data.length]);
  });

  it('a continued download whose new bytes are altered on the way (CRC32C recomputed) fails its SHA-256 and is fetched once more from 0', async () => {
    // client.ts: a failed verification of a continued download starts over from 0 once (the kept LOCAL.part
    // might be what is wrong). Here the kept prefix is good and the corruption hits only the first attempt,
    // so the second attempt, whole, succeeds.
    const name = 'forged-resume.bin';
    const data = randomBytes(4 * MiB);
    const { local } = await keptDownload(server.port, name, data, data.subarray(0, MiB), 'forged-resume.local');
    // Payload position 1 MiB of this connection lies in the first attempt's data (bytes MiB … 4 MiB − 1).
    const p = await proxy(server.port, (i) => (i === 0 ? { corruptDownPayloadAt: MiB, corruptDownFixCrc: true } : {}));
    const client = await login(p.port);

    const r = await client.download(name, local);
    expect(p.corruptions).to.equal(1);
    expect(p.connections).to.equal(1);
    expect(r.resumedFrom, 'the first attempt continued the .part, but nothing of it was used in the end').to.equal(0);
    expect(r.sha256).to.equal(sha256(data));
    expect((await readFile(local)).equals(data), 'LOCAL holds the exact bytes').to.equal(true);
    expect(await exists(`${local}.part`)).to.equal(false);
    expect(await exists(`${local}.part.json`)).to.equal(false);
    expect(await downloadsSent(name, 2), 'the rest, then the whole file').to.deep.equal([data.length - MiB, data.length]);
  });

  it('continues an upload whose CLI was killed (SIGKILL) in the middle', async () => {
    const name = 'killed-up.bin';
    const { file, data } = await localFile(name, 16 * MiB);
    const p = await proxy(server.port, { throttleUp: THROTTLE });
    await killMidway(['upload', file], p.port, async () => (await stagedBytes(server.storage, name, data)) >= 2 * MiB);

    const r = await cli(['upload', file, '--json'], server.port);
    expect(r.code, describeRun(r)).to.equal(0);
    const j = parseJsonLine(r);
    expect(j).to.include({ name, bytes: data.length, sha256: sha256(data) });
    expect(j.resumedFrom, 'resumed from what the server kept').to.be.greaterThan(0);
    expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(data));
  });

  it('continues a download whose CLI was killed (SIGKILL) in the middle from LOCAL.part', async () => {
    const name = 'killed-down.bin';
    const data = randomBytes(16 * MiB);
    await (await login(server.port)).uploadBuffer(name, data);
    const local = path.join(dir, 'killed-down.local');
    const p = await proxy(server.port, { throttleDown: THROTTLE });
    await killMidway(['download', name, local], p.port, async () => (await fileSize(`${local}.part`)) >= 2 * MiB);
    expect(await exists(`${local}.part`), 'LOCAL.part kept').to.equal(true);
    expect(await exists(`${local}.part.json`), 'sidecar kept').to.equal(true);
    expect(await exists(local), 'nothing under LOCAL yet').to.equal(false);

    const r = await cli(['download', name, local, '--json'], server.port);
    expect(r.code, describeRun(r)).to.equal(0);
    const j = parseJsonLine(r);
    expect(j).to.include({ name, bytes: data.length, sha256: sha256(data) });
    expect(j.resumedFrom).to.be.at.least(2 * MiB);
    expect(sha256(await readFile(local))).to.equal(sha256(data));
    expect(await exists(`${local}.part`), 'no .part left').to.equal(false);
    expect(await exists(`${local}.part.json`), 'no sidecar left').to.equal(false);
  });

  it('continues an upload cut by a server restart on the restarted server (same storage)', async () => {
    const first = await startServer({ workers: 1, args: ['--grace', '1'] });
    const name = 'restart-up.bin';
    const { file, data } = await localFile(name, 16 * MiB);
    const p = await proxy(first.port, { throttleUp: THROTTLE });
    const run = startCli(['upload', file, '--retries', '0'], p.port);
    await waitUntil('the upload to be under way', async () => (await stagedBytes(first.storage, name, data)) >= 2 * MiB, 20_000);
    await first.halt(); // SIGINT: the drain's 1 s grace runs out and the upload is cut
    const cut = await run.result;
    expect(cut.code, describeRun(cut)).to.equal(1);
    expect(await publishedSha256(first.storage, ALICE.user, name), 'nothing published').to.equal(null);

    const second = await startServer({ workers: 1, storage: first.storage });
    const r = await cli(['upload', file, '--json'], second.port);
    expect(r.code, describeRun(r)).to.equal(0);
    expect(parseJsonLine(r).resumedFrom).to.be.greaterThan(0);
    expect(await publishedSha256(second.storage, ALICE.user, name)).to.equal(sha256(data));
  });

  it('survives a server restart within one CLI run: the new server refuses the token, the password logs in, the upload resumes', async () => {
    const first = await startServer({ workers: 1, args: ['--grace', '1'] });
    const name = 'restart-one-run.bin';
    const { file, data } = await localFile(name, 16 * MiB);
    const p = await proxy(first.port, (i) => (i === 0 ? { throttleUp: THROTTLE } : {}));
    // 8 reconnections (about 20 s of backoff) leave room for a slow restart on a loaded machine.
    const run = startCli(['upload', file, '--json', '--retries', '8'], p.port);
    await waitUntil('the upload to be under way', async () => (await stagedBytes(first.storage, name, data)) >= 2 * MiB, 20_000);
    await first.halt();
    const second = await startServer({ workers: 1, storage: first.storage });
    p.retarget(second.port);

    const r = await run.result;
    expect(r.code, describeRun(r)).to.equal(0);
    expect(parseJsonLine(r)).to.include({ name, bytes: data.length, sha256: sha256(data), resumedFrom: 0 });
    expect(await publishedSha256(second.storage, ALICE.user, name)).to.equal(sha256(data));
    const auths = second.lines.filter((l) => l['event'] === 'auth').map((l) => `${String(l['mech'])}:${String(l['result'])}`);
    // The password login uses whichever password mechanism the client prefers (SCRAM when offered).
    expect(auths, 'token refused (new secret)').to.include('token:failure');
    expect(auths.some((a) => a === 'plain:success' || a === 'scram-sha-256:success'), `then the password: ${JSON.stringify(auths)}`).to.equal(true);
    const ok = audit(second, 'upload', name).filter((l) => l['result'] === 'ok');
    expect(ok).to.have.length(1);
    expect(Number(ok[0]!['bytes']), 'only the rest was sent').to.be.lessThan(data.length);
  });

  it('starts afresh when the local file changed between attempts (never splices old and new bytes)', async () => {
    const name = 'changed-local.bin';
    const { file, data: a } = await localFile(name, 16 * MiB);
    const p = await proxy(server.port, { throttleUp: THROTTLE });
    await killMidway(['upload', file], p.port, async () => (await stagedBytes(server.storage, name, a)) >= 2 * MiB);

    const b = Buffer.from(a);
    randomBytes(4096).copy(b, 1000); // same size, different bytes inside the prefix the server kept
    await writeFile(file, b);
    const r = await cli(['upload', file, '--json'], server.port);
    expect(r.code, describeRun(r)).to.equal(0);
    expect(parseJsonLine(r)).to.include({ resumedFrom: 0, sha256: sha256(b) });
    expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(b));
  });

  /**
   * Starts a throttled upload of `file` and waits until 2 MiB of it are staged. `outcome` resolves to the
   * upload's error, or null (wrapped: an async function would wait for a promise it returns).
   */
  async function throttledUploadUnderWay(file: string, name: string, data: Buffer): Promise<{ outcome: Promise<unknown> }> {
    const p = await proxy(server.port, { throttleUp: THROTTLE });
    const client = await login(p.port);
    const outcome = client.upload(file, name).then(
      () => null,
      (e: unknown) => e,
    );
    await waitUntil('the upload to be under way', async () => (await stagedBytes(server.storage, name, data)) >= 2 * MiB, 20_000);
    return { outcome };
  }

  it('a file written to while it is streamed is not published: the client says so, and the server discards what it got', async () => {
    const name = 'changing.bin';
    const { file, data } = await localFile(name, 16 * MiB);
    const keys = await uploadStagingKeys(file, name, data.length, sha256(data)); // before the file changes
    const { outcome } = await throttledUploadUnderWay(file, name, data);
    // Same size, other bytes at the end (not read yet): the bytes sent would hash consistently.
    const fh = await open(file, 'r+');
    try {
      await fh.write(randomBytes(4096), 0, 4096, data.length - 4096);
    } finally {
      await fh.close();
    }
    const err = await outcome;
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('IO_ERROR');
    expect((err as FtsError).message).to.include('changed while it was being uploaded');
    expect(await publishedSha256(server.storage, ALICE.user, name), 'nothing published').to.equal(null);
    const staging = await readdir(path.join(server.storage, '.fts', 'staging', ALICE.user)).catch(() => [] as string[]);
    expect(staging.filter((f) => keys.some((k) => f.startsWith(`${k}.`))), 'nothing kept for a resume').to.deep.equal([]);
  });

  it('a file truncated while it is streamed (read with O_DIRECT where the file system allows) is not published: the client says it shrank', async () => {
    const name = 'shrinking.bin';
    const { file, data } = await localFile(name, 16 * MiB);
    const { outcome } = await throttledUploadUnderWay(file, name, data);
    await truncate(file, 8 * MiB); // well ahead of what has been read
    const err = await outcome;
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('IO_ERROR');
    expect((err as FtsError).message).to.include('shrank while it was being uploaded');
    expect(await publishedSha256(server.storage, ALICE.user, name), 'nothing published').to.equal(null);
  });

  it('against a server without upload-trailer, a large file is hashed first and asks offset by digest (the older protocol)', async () => {
    const name = 'digest-first.bin';
    const { file, data } = await localFile(name, 3 * MiB + 7);
    const older = await olderServer(server.port);
    try {
      const client = await login(older.port);
      const r = await client.upload(file, name);
      expect(r.sha256).to.equal(sha256(data));
      expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(data));
      const sent = older.fromClient().toString('latin1');
      expect(sent, 'no streamed upload').to.not.include('"trailer":true');
      expect(sent).to.match(/"op":"offset"[^}]*"sha256":"[0-9a-f]{64}"/);
      expect(sent).to.match(/"op":"upload"[^}]*"sha256":"[0-9a-f]{64}"/);
    } finally {
      await older.close();
    }
  });

  it('starts a download afresh when the server file changed since LOCAL.part was written', async () => {
    const name = 'changed-remote.bin';
    const a = randomBytes(16 * MiB);
    const client = await login(server.port);
    await client.uploadBuffer(name, a);
    const local = path.join(dir, 'changed-remote.local');
    const p = await proxy(server.port, { throttleDown: THROTTLE });
    await killMidway(['download', name, local], p.port, async () => (await fileSize(`${local}.part`)) >= 2 * MiB);
    expect(await exists(`${local}.part.json`)).to.equal(true);

    const b = randomBytes(a.length); // same size: only the mtime tells the versions apart
    await client.uploadBuffer(name, b);
    // The kept LOCAL.part as another process resuming it at the same time would hold it: the restart must
    // not truncate and rewrite that file, but start a new one.
    const held = await open(`${local}.part`, 'r');
    const contents = async (): Promise<Buffer> => {
      const buf = Buffer.alloc((await held.stat()).size);
      await held.read(buf, 0, buf.length, 0);
      return buf;
    };
    try {
      const keptBytes = await contents();
      expect(keptBytes.length).to.be.at.least(2 * MiB);
      const r = await cli(['download', name, local, '--json'], server.port);
      expect(r.code, describeRun(r)).to.equal(0);
      expect(parseJsonLine(r)).to.include({ resumedFrom: 0, sha256: sha256(b) });
      expect(sha256(await contents()), 'the kept file itself is untouched').to.equal(sha256(keptBytes));
    } finally {
      await held.close();
    }
    expect(sha256(await readFile(local))).to.equal(sha256(b));
    expect(await exists(`${local}.part`)).to.equal(false);
    expect(await exists(`${local}.part.json`)).to.equal(false);
  });

  it('resumes an upload on another worker with the session token on a fresh connection', async () => {
    const { file, data } = await localFile('worker.bin', 8 * MiB);
    const tried: string[] = [];
    let crossed = false;
    for (let attempt = 0; attempt < 8 && !crossed; attempt++) {
      const name = `worker-${attempt}.bin`;
      const p = await proxy(server.port, { cutUpAfter: 4 * MiB });
      const first = await login(p.port);
      const token = first.session?.token;
      expect(token, 'auth returns a session token').to.be.a('string');
      const err = await first.upload(file, name).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, 'the cut upload fails').to.be.instanceOf(FtsError);
      expect((err as FtsError).code).to.equal('IO_ERROR');
      const failed = await server.waitForLog((l) => l['event'] === 'upload' && l['file'] === name && l['result'] === 'error');

      const second = await FtsClient.connect({ port: server.port });
      clients.push(second);
      await second.authToken(token!);
      const r = await second.upload(file, name);
      expect(r.resumedFrom, 'continued from what the first connection left').to.be.greaterThan(0);
      expect(r.sha256).to.equal(sha256(data));
      expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(data));
      const done = await server.waitForLog((l) => l['event'] === 'upload' && l['file'] === name && l['result'] === 'ok');
      tried.push(`${String(failed['pid'])}->${String(done['pid'])}`);
      crossed = failed['pid'] !== done['pid'];
      await second.quit();
    }
    expect(crossed, `a resume handled by another worker (pids: ${tried.join(', ')})`).to.equal(true);
    expect(server.lines.some((l) => l['event'] === 'auth' && l['mech'] === 'token' && l['result'] === 'success')).to.equal(true);
  });

  it('reconnects and finishes an upload and a download in one CLI run when the connection is cut once', async () => {
    const name = 'reconnect.bin';
    const { file, data } = await localFile(name, 16 * MiB);
    const up = await proxy(server.port, (i) => (i === 0 ? { cutUpAfter: 6 * MiB } : {}));
    const r = await cli(['upload', file, '--json'], up.port);
    expect(r.code, describeRun(r)).to.equal(0);
    expect(parseJsonLine(r)).to.include({ name, bytes: data.length, sha256: sha256(data) });
    expect(up.cuts).to.equal(1);
    expect(up.connections).to.be.at.least(2);
    expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(data));
    const ok = audit(server, 'upload', name).filter((l) => l['result'] === 'ok');
    expect(Number(ok[0]!['bytes']), 'the second connection sent only the rest').to.be.lessThan(data.length);

    const local = path.join(dir, 'reconnect.local');
    const down = await proxy(server.port, (i) => (i === 0 ? { cutDownAfter: 6 * MiB } : {}));
    const d = await cli(['download', name, local, '--json'], down.port);
    expect(d.code, describeRun(d)).to.equal(0);
    expect(parseJsonLine(d)).to.include({ name, bytes: data.length, sha256: sha256(data) });
    expect(down.cuts).to.equal(1);
    expect(sha256(await readFile(local))).to.equal(sha256(data));
    expect(await exists(`${local}.part`)).to.equal(false);
    const fetched = audit(server, 'download', name).filter((l) => l['result'] === 'ok');
    expect(Number(fetched.at(-1)!['bytes']), 'the second connection fetched only the rest').to.be.lessThan(data.length);
    expect(server.lines.some((l) => l['event'] === 'auth' && l['mech'] === 'token' && l['result'] === 'success'), 'reconnected with the token').to.equal(true);
  });

  it('sends a resumed upload once more from 0 when the staged bytes turn out wrong (CHECKSUM_MISMATCH); resumedFrom is then 0 (library and CLI)', async () => {
    for (const via of ['library', 'cli'] as const) {
      const name = `bad-staged-${via}.bin`;
      const { file, data } = await localFile(name, 8 * MiB);
      const p = await proxy(server.port, { cutUpAfter: 4 * MiB });
      const first = await login(p.port);
      await first.upload(file, name).catch(() => undefined);
      await server.waitForLog((l) => l['event'] === 'upload' && l['file'] === name && l['result'] === 'error');
      // Damage what the server kept (as a bad disk would); only the final digest can tell.
      const [staged] = await stagingFiles(server.storage, name, data);
      expect(staged, 'a staging file of the cut upload').to.not.equal(undefined);
      const bytes = await readFile(staged!.file);
      expect(bytes.length).to.be.greaterThan(MiB);
      bytes[100] = bytes[100]! ^ 0xff;
      await writeFile(staged!.file, bytes);

      let resumedFrom: number;
      if (via === 'library') resumedFrom = (await (await login(server.port)).upload(file, name)).resumedFrom;
      else {
        // The CLI goes through ResilientClient, which keeps its own account of where the transfer started.
        const r = await cli(['upload', file, name, '--json'], server.port);
        expect(r.code, describeRun(r)).to.equal(0);
        resumedFrom = parseJsonLine(r).resumedFrom;
      }
      expect(resumedFrom, `${via}: the kept bytes were not used in the end: the file was sent in full`).to.equal(0);
      expect(await publishedSha256(server.storage, ALICE.user, name)).to.equal(sha256(data));
      const results = audit(server, 'upload', name).map((l) => `${String(l['result'])}:${String(l['code'] ?? '')}:${String(l['bytes'])}`);
      expect(results.slice(-2), 'a mismatch, then the whole file').to.deep.equal([`error:CHECKSUM_MISMATCH:${data.length - bytes.length}`, `ok::${data.length}`]);
    }
  });

  it('downloads afresh (once) when a kept LOCAL.part does not match the server file', async () => {
    const name = 'bad-part.bin';
    const data = randomBytes(4 * MiB);
    const wrong = Buffer.from(data.subarray(0, MiB));
    wrong[10] = wrong[10]! ^ 0xff;
    const { client, local } = await keptDownload(server.port, name, data, wrong, 'bad-part.local');

    const r = await client.download(name, local);
    expect(r.resumedFrom, 'the first attempt continued the .part, but nothing of it was used in the end').to.equal(0);
    expect(sha256(await readFile(local))).to.equal(sha256(data));
    expect(await exists(`${local}.part`)).to.equal(false);
    expect(await exists(`${local}.part.json`)).to.equal(false);
    const fetched = audit(server, 'download', name).map((l) => Number(l['bytes']));
    expect(fetched.slice(-2), 'the rest, then the whole file').to.deep.equal([data.length - MiB, data.length]);

    // The CLI (through ResilientClient) reports the same.
    const again = await keptDownload(server.port, name, data, wrong, 'bad-part-cli.local');
    again.client.close();
    const c = await cli(['download', name, again.local, '--json'], server.port);
    expect(c.code, describeRun(c)).to.equal(0);
    expect(parseJsonLine(c).resumedFrom, 'the CLI: nothing of the .part was used').to.equal(0);
    expect(sha256(await readFile(again.local))).to.equal(sha256(data));
  });

  it('a CLI transfer that completes during a drain exits 0 although the server refuses its goodbye', async () => {
    const s = await startServer({ workers: 1, args: ['--grace', '30'] });
    const name = 'during-drain.bin';
    const data = randomBytes(8 * MiB);
    await (await login(s.port)).uploadBuffer(name, data);
    const p = await proxy(s.port, { throttleDown: THROTTLE });
    const local = path.join(dir, 'during-drain.local');
    const run = startCli(['download', name, local], p.port);
    await waitUntil('the download to be under way', async () => (await fileSize(`${local}.part`)) > MiB || (run.child.exitCode !== null ? 'exited' : false), 20_000);
    s.signal('SIGINT');
    const r = await run.result;
    expect(r.code, describeRun(r)).to.equal(0);
    expect(sha256(await readFile(local))).to.equal(sha256(data));
    expect(await s.waitForExit(20_000)).to.deep.equal({ code: 0, signal: null });
  });

  /**
   * A scripted plain-only fts server on an ephemeral port: greets, then hands every header frame to
   * `onHeader` with a reply function. close() ends its connections and stops it.
   */
  async function scriptedServer(onHeader: (h: Header, sock: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
    const sockets = new Set<net.Socket>();
    const fake = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
      sock.on('close', () => sockets.delete(sock));
      sock.write(encodeHeader({ status: 'hello', protocol: 'fts/1', server: 'fake', mechs: ['plain'], caps: ['pipeline'], maxHeader: 16384, maxChunk: MiB }));
      const decoder = new FrameDecoder();
      sock.on('data', (chunk: Buffer) => {
        for (const f of decoder.push(chunk)) if (f.kind === 'header') onHeader(f.header, sock);
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    return {
      port: (fake.address() as net.AddressInfo).port,
      close: async () => {
        for (const sock of sockets) sock.destroy();
        await new Promise((resolve) => fake.close(resolve));
      },
    };
  }

  it('a command whose work is done exits 0 when the server refuses its quit (draining): a scripted server', async () => {
    // Replies as a draining fts server does to a request made during the drain: the fatal SHUTTING_DOWN.
    // It offers only `plain` (as a man in the middle stripping SCRAM would): without TLS the client sends
    // no password unless told to with --allow-plain.
    let passwordsSeen = 0;
    const fake = await scriptedServer((h, sock) => {
      const id = h['id'];
      if (h['op'] === 'auth') {
        passwordsSeen += typeof h['password'] === 'string' ? 1 : 0;
        sock.write(encodeHeader({ id, status: 'ok', user: ALICE.user }));
      } else if (h['op'] === 'delete') sock.write(encodeHeader({ id, status: 'ok', name: h['name'] }));
      else sock.end(encodeHeader({ id, status: 'error', code: 'SHUTTING_DOWN', message: 'server is shutting down', fatal: true }));
    });
    try {
      const port = fake.port;
      const refused = await cli(['delete', 'gone.bin'], port);
      expect(refused.code, describeRun(refused)).to.equal(3);
      expect(refused.stderr).to.match(/scram-sha-256.*--allow-plain/);
      expect(passwordsSeen, 'no password sent in plaintext').to.equal(0);
      const r = await cli(['--allow-plain', 'delete', 'gone.bin'], port);
      expect(r.code, describeRun(r)).to.equal(0);
      expect(r.stderr).to.equal('');
      expect(passwordsSeen).to.equal(1);
    } finally {
      await fake.close();
    }
  });

  it('a server that stops answering (here: after the login) does not hang the client: the request fails after replyTimeoutMs', async () => {
    const silent = await scriptedServer((h, sock) => {
      if (h['op'] === 'auth') sock.write(encodeHeader({ id: h['id'], status: 'ok', user: ALICE.user }));
    });
    try {
      const client = await FtsClient.connect({ port: silent.port, allowPlainPassword: true, replyTimeoutMs: 1_000 });
      clients.push(client);
      await client.auth(ALICE.user, ALICE.password);
      await sleep(2_500); // idle time does not count
      expect(client.connected, 'an idle connection is kept').to.equal(true);
      const t0 = Date.now();
      const err = await client.list().then(() => null, (e: unknown) => e);
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).message).to.match(/no reply from .* in \d+ s/);
      expect(Date.now() - t0).to.be.below(10_000);
    } finally {
      await silent.close();
    }
  });

  it('a download refused half-way by a transient server error (IO_ERROR) keeps LOCAL.part for the next run; NOT_FOUND drops it', async () => {
    const size = 2 * MiB;
    const half = randomBytes(MiB);
    let failWith = 'IO_ERROR';
    const fake = await scriptedServer((h, sock) => {
      const id = h['id'];
      if (h['op'] === 'auth') sock.write(encodeHeader({ id, status: 'ok', user: ALICE.user }));
      else if (h['op'] === 'download') {
        sock.write(encodeHeader({ id, status: 'data', size, mtime: 1_700_000_000_000, offset: 0, length: size }));
        sock.write(encodeData(half));
        sock.write(encodeHeader({ id, status: 'error', code: failWith, message: 'injected', fatal: false }));
      }
    });
    try {
      const client = await FtsClient.connect({ port: fake.port, allowPlainPassword: true });
      clients.push(client);
      await client.auth(ALICE.user, ALICE.password);
      const local = path.join(dir, 'transient.bin');
      const first = await client.download('transient.bin', local).then(() => null, (e: unknown) => e);
      expect((first as FtsError).code).to.equal('IO_ERROR');
      expect(await fileSize(`${local}.part`), 'the received half is kept').to.equal(MiB);
      expect(await exists(`${local}.part.json`)).to.equal(true);
      failWith = 'NOT_FOUND';
      const second = await client.download('transient.bin', local).then(() => null, (e: unknown) => e);
      expect((second as FtsError).code).to.equal('NOT_FOUND');
      expect(await exists(`${local}.part`), 'a file that is gone takes its part with it').to.equal(false);
      expect(await exists(`${local}.part.json`)).to.equal(false);
    } finally {
      await fake.close();
    }
  });

  it('the first connection is retried when the server turns it away for now (TOO_MANY_CONNECTIONS), not when the password is wrong', async () => {
    // Its own server: the wrong password below must not add to the shared server's penalties for 127.0.0.1.
    const target = await startServer({ workers: 1 });
    let turnedAway = 0;
    const sockets = new Set<net.Socket>();
    const busy = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
      sock.on('close', () => sockets.delete(sock));
      // Two refusals, as --max-startups gives them to a burst of logins, then a relay to the real server.
      if (turnedAway < 2) {
        turnedAway++;
        sock.end(encodeHeader({ status: 'bye', code: 'TOO_MANY_CONNECTIONS', message: 'connection limit reached (startups)' }));
        return;
      }
      const up = net.connect(target.port, '127.0.0.1');
      up.on('error', () => sock.destroy());
      sockets.add(up);
      sock.pipe(up).pipe(sock);
    });
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (busy.address() as net.AddressInfo).port;
      const reconnect = { retries: 3, initialDelayMs: 20, maxDelayMs: 50 };
      const notices: Array<{ attempt: number; reconnecting: boolean }> = [];
      const onRetry = ({ attempt, reconnecting }: { attempt: number; reconnecting: boolean }): number => notices.push({ attempt, reconnecting });
      const client = await ResilientClient.connect({ port, user: ALICE.user, password: ALICE.password, reconnect, onRetry });
      expect(turnedAway).to.equal(2);
      expect(notices, 'each retry announced, as a first connection (the CLI says "trying again", not "reconnecting")').to.deep.equal([
        { attempt: 1, reconnecting: false },
        { attempt: 2, reconnecting: false },
      ]);
      expect(await client.list()).to.be.an('array');
      await client.quit();
      const wrong = await ResilientClient.connect({ port, user: ALICE.user, password: 'wrong', reconnect }).then(() => null, (e: unknown) => e);
      expect((wrong as FtsError).code, 'a wrong password is not retried').to.equal('AUTH_FAILED');
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('the first connection is retried when it is accepted and then lost before the login (a worker that died), not when it is refused', async () => {
    // The first two connections are closed before the greeting, as by a worker killed after the primary
    // handed it the connection; the third goes through.
    const p = await proxy(server.port, (index) => (index < 2 ? { cutDownAfter: 0 } : {}));
    const local = path.join(dir, 'lost-first.txt');
    await writeFile(local, 'first connection lost\n');
    const r = await cli(['upload', local], p.port);
    expect(r.code, describeRun(r)).to.equal(0);
    expect(p.connections, 'two lost, the third served').to.equal(3);
    expect(r.out).to.include('uploaded lost-first.txt');

    const once = await proxy(server.port, (index) => (index < 1 ? { cutDownAfter: 0 } : {}));
    const none = await runCli(['--retries', '0', 'upload', local], { port: once.port, user: ALICE.user, password: ALICE.password, cwd: dir });
    expect(none.code, describeRun(none)).to.equal(1);
    expect(none.stderr).to.equal(`fts: 127.0.0.1:${once.port} closed the connection before its greeting\n`);

    const refused = await runCli(['upload', local], { port: await freePort(), user: ALICE.user, password: ALICE.password, cwd: dir });
    expect(refused.code, describeRun(refused)).to.equal(1);
    expect(refused.stderr, 'a refused connection is not retried').to.match(/^fts: cannot connect to 127\.0\.0\.1:\d+: connection refused\n$/);
  });

  it('a transfer whose connection is lost and that cannot reconnect reports the loss, not only the refused reconnection', async () => {
    const local = path.join(dir, 'lost-then-refused.bin');
    await writeFile(local, randomBytes(8 * MiB));
    const p = await proxy(server.port, (index) => (index === 0 ? { cutUpAfter: 2 * MiB } : {}));
    const client = await ResilientClient.connect({ port: p.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 2, initialDelayMs: 300, maxDelayMs: 300 } });
    try {
      const failed = client.upload(local, 'lost-then-refused.bin').then(() => null, (e: unknown) => e);
      // Once the upload's connection is cut, nothing listens any more: every reconnection is refused.
      await waitUntil('the cut', async () => (p.cuts > 0 ? true : undefined), 20_000, 10);
      await p.close();
      const err = await failed;
      expect(err).to.be.instanceOf(FtsError);
      const message = (err as FtsError).message;
      expect(message, message).to.match(/; reconnecting failed: cannot connect to 127\.0\.0\.1:\d+: connection refused$/);
      expect(message.startsWith('cannot connect'), message).to.equal(false);
      expect(isServerError(err)).to.equal(false);
    } finally {
      client.close();
    }
  });

  it('mget whose reader goes away (`| head -1`) still finishes every download and exits with its own status', async () => {
    const client = await login(server.port);
    const names = ['gone-reader-1.bin', 'gone-reader-2.bin'];
    const data = names.map(() => randomBytes(4 * MiB));
    for (const [i, name] of names.entries()) await client.uploadBuffer(name, data[i]!);
    const p = await proxy(server.port, { throttleDown: THROTTLE });
    const into = path.join(dir, 'gone-reader');
    await mkdir(into);
    const run = startCli(['mget', ...names, '--dir', into], p.port);
    run.child.stdout?.destroy(); // the reader is gone before the first result line is written
    const r = await run.result;
    expect(r.code, describeRun(r)).to.equal(0);
    for (const [i, name] of names.entries()) expect(sha256(await readFile(path.join(into, name))), name).to.equal(sha256(data[i]!));
  });

  it('Ctrl+C during a batch `fts shell` transfer exits 130 and keeps LOCAL.part for the next run', async () => {
    const name = 'shell-interrupt.bin';
    const data = randomBytes(8 * MiB);
    await (await login(server.port)).uploadBuffer(name, data);
    const p = await proxy(server.port, { throttleDown: THROTTLE });
    const local = path.join(dir, 'shell-interrupt.local');
    const run = startCli(['shell'], p.port, `get ${name} ${local}\nls\n`);
    await waitUntil('the download to be under way', async () => (await fileSize(`${local}.part`)) > MiB || (run.child.exitCode !== null ? 'exited' : false), 20_000);
    run.child.kill('SIGINT');
    const r = await run.result;
    expect(r.code, describeRun(r)).to.equal(130);
    expect(await exists(`${local}.part`), 'LOCAL.part kept').to.equal(true);
    expect(await exists(local)).to.equal(false);
  });

  it('Ctrl+C during mget (and mput) exits 130 with the one line `fts: interrupted`, and names the files in flight (not downloaded) and those not attempted: no error of a connection closed under it', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `ctrlc-${i}.bin`);
    const data = randomBytes(2 * MiB);
    const client = await login(server.port);
    for (const name of names) await client.uploadBuffer(name, data);
    const p = await proxy(server.port, { throttleDown: THROTTLE, throttleUp: THROTTLE });
    const into = path.join(dir, 'ctrlc');
    await mkdir(into);
    const get = startCli(['mget', ...names, '--dir', into], p.port);
    await waitUntil('a download under way', async () => (await readdir(into)).some((n) => n.endsWith('.part')) || (get.child.exitCode !== null ? 'exited' : false), 20_000);
    get.child.kill('SIGINT');
    const r = await get.result;
    expect(r.code, describeRun(r)).to.equal(130);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines.filter((l) => l !== 'fts: interrupted' && !l.startsWith('fts: not attempted: ') && !l.startsWith('fts: not downloaded: ')), describeRun(r)).to.deep.equal([]);
    expect(lines.filter((l) => l === 'fts: interrupted'), describeRun(r)).to.have.length(1);
    expect(lines.find((l) => l.startsWith('fts: not attempted: ')), 'the 20 files do not all fit in one window of 16').to.include(names[19]);
    expect(lines.filter((l) => l.startsWith('fts: not downloaded: ')), describeRun(r)).to.have.length(1);
    expect(accounted(r, /^downloaded (\S+) -> /, 'downloaded').sort(), describeRun(r)).to.deep.equal([...names].sort());

    const locals = await Promise.all(names.slice(0, 4).map(async (name) => {
      const local = path.join(dir, `up-${name}`);
      await writeFile(local, data);
      return local;
    }));
    const put = startCli(['mput', ...locals], p.port);
    await waitUntil('an upload under way', async () => (await sessionsJson(server.adminSocket)).some((x) => x.op === 'upload' && x.bytes > 0) || (put.child.exitCode !== null ? 'exited' : false), 20_000, 50);
    put.child.kill('SIGINT');
    const u = await put.result;
    expect(u.code, describeRun(u)).to.equal(130);
    expect(u.stderr, describeRun(u)).to.match(/^fts: interrupted\nfts: not uploaded: [^\n]+\n$/);
    // mput names its files as given (local paths); its result lines name them as stored (base names).
    expect(accounted(u, /^uploaded (\S+) \(/, 'uploaded').map((n) => path.basename(n)).sort(), describeRun(u)).to.deep.equal(locals.map((l) => path.basename(l)).sort());
  });

  it('mput whose connection is lost and cannot be made again: the error once (not once per file in flight), then the files in flight named (not uploaded), exit 1', async () => {
    const locals = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
      const local = path.join(dir, `lost-${i}.bin`);
      await writeFile(local, randomBytes(1 * MiB));
      return local;
    }));
    // The first connection is cut in the middle of the second file; every later one before its greeting.
    const p = await proxy(server.port, (i) => (i === 0 ? { cutUpAfter: 1.5 * MiB } : { cutDownAfter: 0 }));
    const r = await cli(['--retries', '1', 'mput', ...locals], p.port);
    expect(r.code, describeRun(r)).to.equal(1);
    const errors = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('fts: not uploaded: ') && !l.startsWith('fts: not attempted: ') && !l.startsWith('fts: stopped after the first failure; not attempted: '));
    expect(errors, describeRun(r)).to.have.length(1);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('fts: not uploaded: ')), describeRun(r)).to.have.length(1);
    expect(accounted(r, /^uploaded (\S+) \(/, 'uploaded').map((n) => path.basename(n)).sort(), describeRun(r)).to.deep.equal(locals.map((l) => path.basename(l)).sort());
  });

  it('mput with a local file missing: its own error, which names it, and no "not uploaded" line (that is for errors of the whole connection)', async () => {
    const present = path.join(dir, 'present.bin');
    await writeFile(present, randomBytes(1000));
    const missing = path.join(dir, 'missing-local.bin');
    const r = await cli(['mput', present, missing], server.port);
    expect(r.code, describeRun(r)).to.equal(4);
    expect(r.stderr, describeRun(r)).to.equal(`fts: ${missing}: no such file or directory\n`);
    expect(r.out).to.match(/^uploaded present\.bin /);
  });

  it("mget x.part x: the second download, whose LOCAL.part is the first one's target, is refused and nothing is mixed up", async () => {
    const client = await login(server.port);
    const first = randomBytes(2 * MiB);
    const second = randomBytes(3 * MiB);
    await client.uploadBuffer('clash.part', first);
    await client.uploadBuffer('clash', second);
    const into = path.join(dir, 'clash');
    await mkdir(into);
    const r = await cli(['mget', 'clash.part', 'clash', '--dir', into], server.port);
    expect(r.code, describeRun(r)).to.equal(1);
    expect(r.stderr).to.contain('another download in progress');
    expect(sha256(await readFile(path.join(into, 'clash.part'))), 'clash.part holds the remote clash.part').to.equal(sha256(first));
    expect(await exists(path.join(into, 'clash'))).to.equal(false);
  });

  it('a download whose LOCAL.part is replaced by another process meanwhile is not published under LOCAL', async () => {
    const name = 'replaced-part.bin';
    const data = randomBytes(8 * MiB);
    const client = await login(server.port);
    await client.uploadBuffer(name, data);
    const p = await proxy(server.port, { throttleDown: THROTTLE });
    const local = path.join(dir, 'replaced-part.local');
    const slow = await login(p.port);
    const download = slow.download(name, local).then(
      () => null,
      (err: unknown) => err,
    );
    await waitUntil('the download to be under way', async () => (await fileSize(`${local}.part`)) > MiB, 20_000);
    // What a second fts would do: put its own LOCAL.part in place by rename.
    const theirs = randomBytes(8 * MiB);
    await writeFile(`${local}.other`, theirs);
    await rename(`${local}.other`, `${local}.part`);
    const err = await download;
    expect(err, 'the download fails').to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('IO_ERROR');
    expect((err as FtsError).message).to.contain('replaced by another process');
    expect(await exists(local)).to.equal(false);
    // Its clean-up removes by identity: the other process's LOCAL.part is not ours to delete.
    expect(sha256(await readFile(`${local}.part`)), "the other process's LOCAL.part is left alone").to.equal(sha256(theirs));
  });

  describe('a download into a directory shared with other users', () => {
    const OTHER_UID = 65534; // nobody
    const asRoot = process.getuid?.() === 0;

    /** Uploads `size` random bytes as `name` and makes the empty local directory `sub` to download into. */
    async function sharedSetup(name: string, size: number, sub: string): Promise<{ client: FtsClient; data: Buffer; shared: string }> {
      const data = randomBytes(size);
      const client = await login(server.port);
      await client.uploadBuffer(name, data);
      const shared = path.join(dir, sub);
      await mkdir(shared);
      return { client, data, shared };
    }

    it('a LOCAL.part and sidecar planted by another user are neither written into nor resumed from', async function () {
      if (!asRoot) this.skip(); // giving a file to another user needs root (CI runs as root)
      const name = 'planted-part.bin';
      const { client, data, shared } = await sharedSetup(name, 2 * MiB, 'shared-part');
      const local = path.join(shared, name);
      const planted = randomBytes(MiB); // a "prefix" with a sidecar naming the right version
      await writeFile(`${local}.part`, planted, { mode: 0o666 });
      const st = (await client.list({ long: true })).find((e) => e.name === name)!;
      await writeFile(`${local}.part.json`, JSON.stringify({ name, size: st.size, mtime: st.mtime }));
      await chown(`${local}.part`, OTHER_UID, OTHER_UID);
      await chown(`${local}.part.json`, OTHER_UID, OTHER_UID);
      const plantedFile = await open(`${local}.part`, 'r'); // to read the planted inode afterwards
      try {
        const r = await client.download(name, local);
        expect(r.resumedFrom, 'nothing resumed from a foreign .part').to.equal(0);
        expect(sha256(await readFile(local))).to.equal(sha256(data));
        const got = await stat(local);
        expect(got.uid, 'LOCAL is our own file').to.equal(0);
        expect(got.ino).to.not.equal((await plantedFile.stat()).ino);
        const after = Buffer.alloc(planted.length);
        await plantedFile.read(after, 0, after.length, 0);
        expect(after.equals(planted), "the other user's file did not receive the download").to.equal(true);
      } finally {
        await plantedFile.close();
      }
    });

    it('a symbolic link planted by another user at LOCAL does not redirect the download into its directory', async function () {
      if (!asRoot) this.skip();
      const name = 'planted-link.bin';
      const { client, data, shared } = await sharedSetup(name, 64 * 1024, 'shared-link');
      const victim = path.join(dir, 'victim-home');
      await mkdir(victim);
      const local = path.join(shared, name);
      await symlink(victim, local);
      await lchown(local, OTHER_UID, OTHER_UID);
      await client.download(name, local);
      expect(await readdir(victim), 'nothing written into the link target').to.deep.equal([]);
      expect((await lstat(local)).isFile(), 'LOCAL is now the downloaded file, the link replaced').to.equal(true);
      expect(sha256(await readFile(local))).to.equal(sha256(data));
      // Another user's directory is refused (they could swap the file inside it), unless named with a '/'.
      const theirs = path.join(shared, 'their-dir');
      await mkdir(theirs);
      await chown(theirs, OTHER_UID, OTHER_UID);
      const refused = await client.download(name, theirs).then(() => null, (e: unknown) => e);
      expect((refused as FtsError).message).to.match(/another user's directory/);
      await client.download(name, `${theirs}/`);
      expect(sha256(await readFile(path.join(theirs, name)))).to.equal(sha256(data));
      // Our own link to a directory is followed, as the user meant.
      const mine = path.join(shared, 'my-link');
      await symlink(victim, mine);
      await client.download(name, mine);
      expect(sha256(await readFile(path.join(victim, name)))).to.equal(sha256(data));
    });

    it('on a mount that shows every owner as another uid (bindfs --force-user, like NFS all_squash), its own LOCAL.part resumes and its own directory is a target', async function () {
      if (!asRoot) this.skip(); // FUSE mounts need root here (CI runs as root)
      const name = 'mapped.bin';
      const { client, data, shared } = await sharedSetup(name, 2 * MiB, 'mapped-source');
      const mapped = path.join(dir, 'mapped');
      await mkdir(mapped);
      const mounted = await mountOwnerMapped(shared, mapped);
      if (mounted.code !== 0) {
        console.log(`      (skipped: bindfs failed: ${mounted.stderr.trim()}; .ci/install-debian installs it)`);
        this.skip();
      }
      try {
        const into = path.join(mapped, 'into');
        await mkdir(into);
        expect((await stat(into)).uid, 'the mount maps our own directory to another owner').to.equal(OTHER_UID);
        const local = path.join(into, name);
        await writeFile(`${local}.part`, data.subarray(0, MiB));
        const st = (await client.list({ long: true })).find((e) => e.name === name)!;
        await writeFile(`${local}.part.json`, JSON.stringify({ name, size: st.size, mtime: st.mtime }));
        // Named without a trailing '/': the directory is ours although the mount shows another owner.
        const r = await client.download(name, into);
        expect(r.localPath).to.equal(local);
        expect(r.resumedFrom, 'our own LOCAL.part is continued').to.equal(MiB);
        expect(sha256(await readFile(local))).to.equal(sha256(data));
        expect((await readdir(into)).sort(), 'no .part, sidecar or owner probe left').to.deep.equal([name]);
        // The mount point itself: its parent is on another file system, where our files keep our uid.
        const top = await client.download(name, mapped);
        expect(top.localPath).to.equal(path.join(mapped, name));
        expect(sha256(await readFile(top.localPath))).to.equal(sha256(data));
      } finally {
        await unmount(mapped);
      }
    });

    it('a FIFO or a link to /dev/zero planted as the sidecar neither blocks nor exhausts the download', async function () {
      const name = 'planted-sidecar.bin';
      const { client, data, shared } = await sharedSetup(name, 2 * MiB, 'shared-sidecar');
      const fifoTarget = path.join(shared, `${name}.fifo-case`);
      await new Promise<void>((resolve, reject) => execFile('mkfifo', [`${fifoTarget}.part.json`], (err) => (err ? reject(err) : resolve())));
      const zeroTarget = path.join(shared, `${name}.zero-case`);
      await symlink('/dev/zero', `${zeroTarget}.part.json`);
      for (const target of [fifoTarget, zeroTarget]) {
        const r = await client.download(name, target);
        expect(r.resumedFrom).to.equal(0);
        expect(sha256(await readFile(target))).to.equal(sha256(data));
      }
    });
  });

  it('client connections use TCP keep-alive, so a peer that vanishes silently is eventually noticed', async () => {
    const s = await startServer({ workers: 1 });
    await login(s.port);
    // /proc/net/tcp: "sl local rem st tx:rx tr:when …"; tr 02 is the keep-alive timer. Our side of the
    // connection is the established socket whose remote port is the server's.
    const portHex = s.port.toString(16).toUpperCase().padStart(4, '0');
    const rows = (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1).map((l) => l.trim().split(/\s+/));
    const ours = rows.filter((f) => f[2]?.endsWith(`:${portHex}`) && f[3] === '01');
    expect(ours.length, 'our established connection to the server').to.equal(1);
    expect(ours[0]![5]!.split(':')[0], 'timer of the connection (02 = keep-alive)').to.equal('02');
  });

  describe('long local preparation (a slow local disk) against --idle-timeout 1 --stall-timeout 1', () => {
    const SLOW_READ_MS = 600;
    const SLOW_READS = 3;

    /**
     * Runs `fn` with a slow local disk: the first SLOW_READS reads through any FileHandle of this process
     * (the client hashes a kept prefix, or a whole file, through FileHandle.read) take SLOW_READ_MS longer.
     * Three such reads outlast both server timeouts. The server runs in its own process and is unaffected.
     */
    async function withSlowLocalReads<T>(fn: (slow: SlowReads) => Promise<T>, slowReads = SLOW_READS): Promise<T> {
      const probe = await open(dir, 'r');
      const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
      await probe.close();
      const original = proto.read;
      let left = slowReads;
      let began: () => void = () => undefined;
      const firstRead = new Promise<void>((resolve) => {
        began = resolve;
      });
      proto.read = async function (this: unknown, ...args: unknown[]) {
        if (left > 0) {
          left--;
          began();
          await new Promise((resolve) => setTimeout(resolve, SLOW_READ_MS));
        }
        return original.apply(this, args);
      };
      try {
        return await fn({ firstRead, left: () => left });
      } finally {
        proto.read = original;
      }
    }

    function impatientServer(): Promise<TestServer> {
      return startServer({ workers: 1, args: ['--idle-timeout', '1', '--stall-timeout', '1'] });
    }

    function noops(s: TestServer): number {
      return s.lines.filter((l) => l['event'] === 'noop').length;
    }

    it('a streamed upload hashes its kept prefix before it sends the header, and keeps the session alive meanwhile', async () => {
      const s = await impatientServer();
      const name = 'slow-prefix.bin';
      const { file, data } = await localFile(name, 8 * MiB);
      const p = await proxy(s.port, { cutUpAfter: 5 * MiB });
      await (await login(p.port)).upload(file, name).catch(() => undefined);
      await s.waitForLog((l) => l['event'] === 'upload' && l['file'] === name && l['result'] === 'error');
      expect(await stagedBytes(s.storage, name, data), 'staged by the cut upload').to.be.at.least(SLOW_READS * MiB);

      const client = await login(s.port);
      const r = await withSlowLocalReads(() => client.upload(file, name));
      expect(r.resumedFrom, 'continued the staged prefix').to.be.at.least(SLOW_READS * MiB);
      expect(r.sha256).to.equal(sha256(data));
      expect(await publishedSha256(s.storage, ALICE.user, name)).to.equal(sha256(data));
      expect(noops(s), 'keep-alive noops while the prefix was hashed').to.be.greaterThan(0);
      expect(s.lines.some((l) => l['code'] === 'TRANSFER_STALLED' || l['code'] === 'IDLE_TIMEOUT'), 'no session timed out').to.equal(false);
    });

    it('a download that continues LOCAL.part keeps the session alive while it hashes the kept bytes', async () => {
      const s = await impatientServer();
      const name = 'slow-part.bin';
      const data = randomBytes(6 * MiB);
      const { client, local } = await keptDownload(s.port, name, data, data.subarray(0, 4 * MiB), 'slow-part.local');

      const r = await withSlowLocalReads(() => client.download(name, local));
      expect(r.resumedFrom).to.equal(4 * MiB);
      expect(sha256(await readFile(local))).to.equal(sha256(data));
      expect(noops(s), 'keep-alive noops while LOCAL.part was hashed').to.be.greaterThan(0);
    });

    it('a small file rewritten while it is read for upload is not published (its version changed)', async () => {
      const s = await impatientServer();
      const name = 'rewritten-small.txt';
      const { file } = await localFile(name, 4096);
      const client = await login(s.port);
      const err = await withSlowLocalReads(async (slow) => {
        const upload = client.upload(file, name).then(
          () => null,
          (e: unknown) => e,
        );
        await slow.firstRead; // the client has opened and checked the file, and its first read waits
        await writeFile(file, randomBytes(4096)); // rewritten in place while the read waits
        return upload;
      });
      expect(err, 'the upload fails').to.be.instanceOf(FtsError);
      expect((err as FtsError).code).to.equal('IO_ERROR');
      expect((err as FtsError).message).to.contain('changed while it was being uploaded');
      expect(await exists(path.join(s.storage, ALICE.user, name))).to.equal(false);
    });

    const CLOSE_SLOW_READS = 6;

    /**
     * Closes `client` once `transfer` is hashing (its first slow read began) and returns its error and how
     * many of the CLOSE_SLOW_READS slow reads it never made: a transfer that gives up at once makes at most
     * the reads already in flight (two: the hashing reads one piece ahead).
     */
    async function closeDuring(client: FtsClient, transfer: () => Promise<unknown>): Promise<{ err: unknown; unread: number }> {
      return withSlowLocalReads(async (slow) => {
        const running = transfer().then(
          () => null,
          (e: unknown) => e,
        );
        await slow.firstRead;
        client.close();
        const err = await running;
        return { err, unread: slow.left() };
      }, CLOSE_SLOW_READS);
    }

    it('a download closed while it hashes a kept LOCAL.part gives up at once and leaves LOCAL.part and its sidecar as they were', async () => {
      const name = 'abandon-hashing.bin';
      const data = randomBytes(8 * MiB);
      const kept = data.subarray(0, 6 * MiB);
      const { client, local, sidecar } = await keptDownload(server.port, name, data, kept, 'abandon-hashing.local');
      const { err, unread } = await closeDuring(client, () => client.download(name, local));
      expect(err).to.be.instanceOf(FtsError);
      expect(unread, `slow reads of the kept part never made (of ${CLOSE_SLOW_READS}): hashing stopped`).to.be.at.least(CLOSE_SLOW_READS - 2);
      expect((await readFile(`${local}.part`)).equals(kept), 'LOCAL.part untouched').to.equal(true);
      expect(await readFile(`${local}.part.json`, 'utf8')).to.equal(sidecar);
    });

    it('an upload closed while it hashes the kept prefix for a resume gives up at once', async () => {
      const name = 'abandon-prefix.bin';
      const { file } = await localFile(name, 8 * MiB);
      const p = await proxy(server.port, { cutUpAfter: 7 * MiB });
      await (await login(p.port)).upload(file, name).catch(() => undefined);
      await server.waitForLog((l) => l['event'] === 'upload' && l['file'] === name && l['result'] === 'error');
      const client = await login(server.port);
      const { err, unread } = await closeDuring(client, () => client.upload(file, name));
      expect(err).to.be.instanceOf(FtsError);
      expect(unread, `slow reads of the prefix never made (of ${CLOSE_SLOW_READS}): hashing stopped`).to.be.at.least(CLOSE_SLOW_READS - 2);
    });

    it('against a server without upload-trailer, a file hashed before its header keeps the session alive meanwhile', async () => {
      const s = await impatientServer();
      const relay = await olderServer(s.port);
      try {
        const name = 'slow-digest.bin';
        const { file, data } = await localFile(name, 4 * MiB);
        const client = await login(relay.port);
        const r = await withSlowLocalReads(() => client.upload(file, name));
        expect(r.sha256).to.equal(sha256(data));
        expect(await publishedSha256(s.storage, ALICE.user, name)).to.equal(sha256(data));
        expect(noops(s), 'keep-alive noops while the file was hashed').to.be.greaterThan(0);
      } finally {
        await relay.close();
      }
    });
  });

  it('regression (fixed): stale session tokens are penalised like password guesses: ten clients reconnecting after a restart get their address banned, and the documented password fallback is refused', async function () {
    // A token signed with another secret is what every client holds after a restart without
    // --cluster-secret-file (PROTOCOL.md §5.2: "the client then logs in with plain on a new connection").
    // It is 256-bit HMAC material, not a guessable secret, yet each refusal scores as a failed login
    // (2 points, ban at 20 by default) and delays the answer. Default limits, one address (10 clients
    // behind one NAT, or one host running 10 transfers), in two waves to stay under MaxStartups.
    this.timeout(60_000);
    const fresh = await startServer({ workers: 1 });
    const stale = (await login(server.port)).session?.token;
    expect(stale, 'a token from another server (another secret)').to.be.a('string');
    const reconnect = async (): Promise<string> => {
      const c = await FtsClient.connect({ port: fresh.port });
      clients.push(c);
      return c.authToken(stale!).then(
        () => 'accepted',
        (e: unknown) => (e instanceof FtsError ? e.code : String(e)),
      );
    };
    const refusals: string[] = [];
    for (let wave = 0; wave < 2; wave++) refusals.push(...(await Promise.all(Array.from({ length: 5 }, reconnect))));
    expect(refusals, 'stale tokens are refused').to.deep.equal(Array.from({ length: 10 }, () => 'AUTH_FAILED'));

    const fallback = await (async () => {
      const c = await FtsClient.connect({ port: fresh.port });
      clients.push(c);
      await c.auth(ALICE.user, ALICE.password);
      return 'ok';
    })().catch((e: unknown) => (e instanceof FtsError ? `${e.code}: ${e.message}` : String(e)));
    expect(fallback, 'the password login that §5.2 prescribes after a refused token').to.equal('ok');
  });

  describe('CLI output', () => {
    /** Runs a CLI command under a pseudo-terminal; returns everything it wrote there. */
    async function underPty(args: readonly string[], port: number): Promise<{ code: number | null; output: string }> {
      const r = await runCli(args, { port, user: ALICE.user, password: ALICE.password, cwd: dir, terminal: true });
      return { code: r.code, output: r.out };
    }

    it('draws a progress line on a terminal, none with --quiet or --json, and none when stderr is piped', async function () {
      const name = 'progress.bin';
      const { file } = await localFile(name, 8 * MiB);
      const p = await proxy(server.port, { throttleUp: 8 * MiB });

      const shown = await underPty(['upload', file], p.port);
      expect(shown.code, shown.output).to.equal(0);
      // `NAME  done / total  NN%  rate/s  ETA m:ss`, redrawn in place with \r (the rate may still read "--").
      expect(shown.output, 'a progress line').to.match(/\r\u001b\[Kprogress\.bin {2}[\d.]+ (B|KiB|MiB) \/ 8\.0 MiB +\d+% {2}\S+\/s {2}ETA /);
      expect(shown.output).to.include('100%');
      expect(shown.output).to.include(`uploaded ${name}`);

      const quiet = await underPty(['upload', file, '--quiet'], p.port);
      expect(quiet.code, quiet.output).to.equal(0);
      expect(quiet.output).to.include(`uploaded ${name}`);
      expect(quiet.output).not.to.match(/%|\r\u001b\[K/);

      const json = await underPty(['--json', 'upload', file], p.port);
      expect(json.code, json.output).to.equal(0);
      expect(json.output).not.to.match(/%|\r\u001b\[K/);
      expect(JSON.parse(json.output.trim())).to.include({ name, bytes: 8 * MiB });

      const piped = await cli(['upload', file], p.port);
      expect(piped.code, describeRun(piped)).to.equal(0);
      expect(piped.stderr, 'nothing on a piped stderr').to.equal('');
    });

    it('mput and mget with --json print one JSON object per file and line', async () => {
      const a = await localFile('multi-a.txt', 1000);
      const b = await localFile('multi-b.txt', 2 * MiB);
      const put = await cli(['mput', a.file, b.file, '--json'], server.port);
      expect(put.code, describeRun(put)).to.equal(0);
      const putLines = put.out.trim().split('\n').map((l) => JSON.parse(l) as TransferJson);
      expect(putLines.map((j) => [j.name, j.bytes, j.sha256])).to.deep.equal([
        ['multi-a.txt', 1000, sha256(a.data)],
        ['multi-b.txt', 2 * MiB, sha256(b.data)],
      ]);

      const { dir: into, cleanup } = await tempDir('fts-mget-');
      try {
        const get = await cli(['mget', 'multi-a.txt', 'multi-b.txt', '--dir', into, '--json'], server.port);
        expect(get.code, describeRun(get)).to.equal(0);
        const getLines = get.out.trim().split('\n').map((l) => JSON.parse(l) as TransferJson);
        expect(getLines.map((j) => [j.name, j.bytes, j.resumedFrom])).to.deep.equal([
          ['multi-a.txt', 1000, 0],
          ['multi-b.txt', 2 * MiB, 0],
        ]);
        expect(sha256(await readFile(path.join(into, 'multi-b.txt')))).to.equal(sha256(b.data));
      } finally {
        await cleanup();
      }
    });
  });
});
