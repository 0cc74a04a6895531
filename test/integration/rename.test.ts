/**
 * A rename whose connection is lost while the server runs it (PROTOCOL.md §3.2 rule 4): the ResilientClient
 * reconnects and must not repeat it blindly, since a repeat could move another file. The server is made to
 * hold the rename (the test process holds the lock of its target, as another publish would), the client's
 * connection is cut through a proxy, and the proxy lets it reconnect only once the scene is set.
 */
import { expect } from 'chai';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { FtsClient, FtsError, ResilientClient } from '../../client/index.js';
import { withLock } from '../../server/storage/locks.js';
import { sessionsJson } from '../helpers/admin-cli.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { FaultProxy } from '../helpers/proxy.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';

const ALICE = DEFAULT_USERS[0]!;

/** A loopback port nothing listens on (connections to it are refused). */
async function deadPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe('rename over a connection lost while the server runs it (ResilientClient)', function () {
  this.timeout(60_000);
  let server: TestServer;
  let proxy: FaultProxy;
  const clients: Array<{ close(): void }> = [];
  const releases: Array<() => void> = [];

  beforeEach(async function () {
    server = await TestServer.start({ workers: 1 });
    proxy = await FaultProxy.start(server.port);
  });

  afterEach(async function () {
    for (const release of releases.splice(0)) release();
    for (const c of clients.splice(0)) c.close();
    await proxy?.close();
    await server?.stop();
  });

  const stored = async (name: string): Promise<string> => readFile(path.join(server.storage, ALICE.user, name), 'utf8');
  const names = async (): Promise<string[]> => (await readdir(path.join(server.storage, ALICE.user))).sort();

  /**
   * Starts `client.rename(from, to)` with the lock of `to` held here, cuts the connection while the server
   * waits for that lock, refuses reconnections, lets the rename happen on the server, runs `meanwhile`, and
   * only then lets the client reconnect. Resolves with the rename's outcome.
   */
  async function renameAcrossADrop(client: ResilientClient, from: string, to: string, meanwhile: () => Promise<void>): Promise<'ok' | FtsError> {
    let held = false;
    const holding = withLock(server.storage, ALICE.user, to, () => {
      held = true;
      return new Promise<void>((resolve) => releases.push(resolve));
    });
    await waitUntil('the test to hold the lock', () => held, 5_000, 5);
    const renaming = client.rename(from, to).then(
      () => 'ok' as const,
      (err: unknown) => {
        if (err instanceof FtsError) return err;
        throw err;
      },
    );
    await waitUntil('the server to run the rename', async () => (await sessionsJson(server.adminSocket)).some((s) => s.op === 'rename'));
    proxy.retarget(await deadPort());
    proxy.dropAll();
    releases.pop()!();
    await holding;
    await waitUntil('the rename to happen on the server', async () => !(await names()).includes(from));
    await meanwhile();
    proxy.retarget(server.port);
    return renaming;
  }

  /** Uploads `text` as `name` on a connection of its own, straight to the server. */
  async function put(name: string, text: string): Promise<void> {
    const direct = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(direct);
    await direct.auth(ALICE.user, ALICE.password);
    await direct.uploadBuffer(name, Buffer.from(text));
    await direct.quit();
  }

  async function resilient(): Promise<ResilientClient> {
    // Patient enough to outlast the refused reconnections of the scene (about 10 s).
    const client = await ResilientClient.connect({ host: '127.0.0.1', port: proxy.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 20, initialDelayMs: 100, maxDelayMs: 500 } });
    clients.push(client);
    return client;
  }

  it('the old name gone and the new one there: done, and not repeated', async function () {
    const client = await resilient();
    await put('a.txt', 'original');
    const outcome = await renameAcrossADrop(client, 'a.txt', 'b.txt', async () => undefined);
    expect(outcome).to.equal('ok');
    expect(await names()).to.deep.equal(['b.txt']);
    expect(await stored('b.txt')).to.equal('original');
    expect(proxy.connections, 'the client reconnected').to.be.at.least(2);
  });

  it('both names there (a new file uploaded under the old name since): IO_ERROR, and the new file is not moved', async function () {
    const client = await resilient();
    await put('a.txt', 'original');
    const outcome = await renameAcrossADrop(client, 'a.txt', 'b.txt', () => put('a.txt', 'uploaded since'));
    expect(outcome).to.be.instanceOf(FtsError);
    const err = outcome as FtsError;
    expect(err.code).to.equal('IO_ERROR');
    expect(err.message).to.include('cannot be told');
    expect(await names()).to.deep.equal(['a.txt', 'b.txt']);
    expect([await stored('a.txt'), await stored('b.txt')]).to.deep.equal(['uploaded since', 'original']);
  });
});
