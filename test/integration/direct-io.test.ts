/**
 * Large files with direct I/O on (the default: uploads are written and downloads read with O_DIRECT where
 * the file system allows it) and off (--direct-io off: the page cache only). Real server, real files.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile, rm, statfs, truncate, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { digestRecordPath } from '../../server/storage/paths.js';
import { sha256 as sha, waitUntil } from '../helpers/lifecycle-util.js';
import { sessionsJson, statusJson } from '../helpers/admin-cli.js';
import { downloadOnce, RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const MiB = 1024 * 1024;
/** Above the 8 MiB direct-I/O threshold, with a tail that is not a multiple of 4 KiB. */
const SIZE = 9 * MiB + 12_345;

/** Open descriptors of process `pid` with O_DIRECT (octal 040000) among their flags. */
function directDescriptors(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      if (flags !== undefined && (parseInt(flags, 8) & 0o40000) !== 0) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/**
 * Starts a download of each of `names` whose client reads nothing (each keeps a send and a read-ahead of the
 * server's in flight), counts the worker's O_DIRECT descriptors once they are stuck, then drops them.
 */
async function stalledDownloads(server: TestServer, names: readonly string[]): Promise<number> {
  const clients: RawClient[] = [];
  const connected = (): Promise<number> => statusJson(server.adminSocket).then((st) => st.connections);
  const base = await connected();
  try {
    for (const name of names) {
      const { client } = await RawClient.open(server.port);
      clients.push(client);
      await client.auth(ALICE.user, ALICE.password);
      client.socket.pause();
      void client.sendHeader({ op: 'download', id: 1, name, offset: 0 });
    }
    // Every download has opened its file and sent from it (its read-ahead is then in flight too).
    const wanted = new Set(names);
    await waitUntil('every download to be sending', async () => (await sessionsJson(server.adminSocket)).filter((x) => x.op === 'download' && x.file !== null && wanted.has(x.file) && x.bytes > 0).length === names.length, 15_000);
    return directDescriptors(server.workerPids()[0]!);
  } finally {
    for (const c of clients) c.socket.destroy();
    await Promise.all(clients.map((c) => c.closed));
    await waitUntil('the worker to see the closes', async () => (await connected()) <= base, 15_000);
  }
}

/**
 * `count` files of 64 MiB named `<prefix>-<i>.bin` in `dir`, sparse (no disk space, no writes), each a file
 * the server has never sent. Large enough that a client reading nothing leaves the server with payloads
 * in flight.
 */
async function sparseFiles(dir: string, prefix: string, count: number): Promise<string[]> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}.bin`);
  for (const name of names) {
    await writeFile(path.join(dir, name), '');
    await truncate(path.join(dir, name), 64 * MiB);
  }
  return names;
}

for (const mode of ['on', 'off'] as const) {
  describe(`large files with --direct-io ${mode}`, function () {
    this.timeout(60_000);
    let server: TestServer;
    let dir: string;
    let cleanDir: () => Promise<void>;
    let client: FtsClient;
    let data: Buffer;
    /** Whether the storage is on a file system where the server uses direct I/O (ext4, xfs, btrfs). */
    let localBlockFs: boolean;

    before(async function () {
      server = await TestServer.start({ workers: 1, args: ['--direct-io', mode] });
      localBlockFs = [0xef53, 0x58465342, 0x9123683e].includes((await statfs(server.storage)).type);
      ({ dir, cleanup: cleanDir } = await tempDir('fts-direct-io-'));
      client = await FtsClient.connect({ port: server.port });
      await client.auth(ALICE.user, ALICE.password);
      data = randomBytes(SIZE);
      await writeFile(path.join(dir, 'src'), data);
      expect((await client.upload(path.join(dir, 'src'), 'big.bin')).sha256).to.equal(sha(data));
    });

    after(async function () {
      client.close();
      await server.stop();
      await cleanDir();
    });

    it('the stored file and a download are byte-identical to the upload', async function () {
      expect((await readFile(path.join(server.storage, ALICE.user, 'big.bin'))).equals(data)).to.equal(true);
      const out = path.join(dir, 'out');
      expect((await client.download('big.bin', out)).sha256).to.equal(sha(data));
      expect((await readFile(out)).equals(data)).to.equal(true);
    });

    it('a download resumed at an unaligned offset, without a recorded digest, hashes the prefix and sends the rest intact', async function () {
      // Without the record the server reads the skipped prefix too, to hash the whole file.
      await rm(digestRecordPath(server.storage, ALICE.user, 'big.bin'));
      // A new modification time makes it a version never sent, so it is read directly again (a file sent
      // again soon goes through the page cache; see the last test).
      const stored = path.join(server.storage, ALICE.user, 'big.bin');
      const later = new Date(Date.now() + 30_000);
      await utimes(stored, later, later);
      const offset = 4 * MiB + 1234;
      const r = await downloadOnce(server.port, ALICE, 'big.bin', offset);
      expect(r.final['status']).to.equal('ok');
      expect(r.final['sha256']).to.equal(sha(data));
      expect(Buffer.concat(r.data).equals(data.subarray(offset))).to.equal(true);
    });

    it('downloads read directly only with direct I/O on, and still do after more of them than the aligned arena holds', async function () {
      if (mode === 'on' && !localBlockFs) this.skip();
      const userDir = path.join(server.storage, ALICE.user);
      const expected = (n: number): number => (mode === 'on' ? n : 0);
      expect(await stalledDownloads(server, await sparseFiles(userDir, 'first', 4))).to.equal(expected(4));
      // 40 downloads hold ~80 payloads: more than the worker's 48 aligned slabs of two.
      expect(await stalledDownloads(server, await sparseFiles(userDir, 'many', 40))).to.equal(expected(40));
      expect(await stalledDownloads(server, await sparseFiles(userDir, 'after', 4)), 'after the arena was all in use').to.equal(expected(4));
    });

    it('a file sent again soon is read through the page cache; a new version of it directly again', async function () {
      if (mode === 'on' && !localBlockFs) this.skip();
      const userDir = path.join(server.storage, ALICE.user);
      const [name] = await sparseFiles(userDir, 'again', 1);
      const expected = (n: number): number => (mode === 'on' ? n : 0);
      expect(await stalledDownloads(server, [name!]), 'the first download').to.equal(expected(1));
      expect(await stalledDownloads(server, [name!, name!, name!]), 'three more').to.equal(0);
      const later = new Date(Date.now() + 60_000);
      await utimes(path.join(userDir, name!), later, later);
      expect(await stalledDownloads(server, [name!]), 'the file changed').to.equal(expected(1));
    });
  });
}
