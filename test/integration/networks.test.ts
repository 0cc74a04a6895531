/**
 * Per-user networks (--networks-file), end to end: a real fts-server with clients connecting from different
 * loopback addresses (127.0.0.1 and 127.0.0.2). A user may log in only from their networks, whatever the
 * mechanism, with the same AUTH_FAILED as a wrong password; a reload applies to new logins and ends open
 * sessions whose address is no longer allowed (KICKED at their next request); a malformed file refuses the
 * start and the reload.
 */
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { runAdmin } from '../helpers/admin-cli.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { proxyV2Header, proxyV2Raw } from '../helpers/multinode-direct.js';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;

describe('per-user networks (--networks-file)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let dir: string;
  let cleanup: () => Promise<void>;
  let file: string;
  const raws: RawClient[] = [];

  /** Logs in over plain auth from `from`; the auth reply. */
  async function loginFrom(from: string, user: string, password: string): Promise<Record<string, unknown>> {
    const { client } = await RawClient.open({ port: server.port, localAddress: from });
    raws.push(client);
    const reply = await client.request({ op: 'auth', mech: 'plain', user, password }, 10_000);
    return reply ?? {};
  }

  /** fts-admin reload, then waits until both workers have applied it (the broadcast is not acknowledged). */
  async function reload(): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const before = server.lines.filter((l) => l.msg === 'users reloaded').length;
    const r = await runAdmin(server.adminSocket, ['reload']);
    if (r.code === 0) await waitUntil('both workers applied the reload', () => server.lines.filter((l) => l.msg === 'users reloaded').length >= before + 2, 10_000);
    return r;
  }

  beforeEach(async function () {
    ({ dir, cleanup } = await tempDir('fts-networks-'));
    file = path.join(dir, 'networks.txt');
    // alice only from 127.0.0.2; bob from anywhere on loopback.
    await writeFile(file, '# who logs in from where\nalice:127.0.0.2/32\nbob:127.0.0.0/8, ::1\n');
    server = await TestServer.start({ workers: 2, args: ['--networks-file', file] });
  });

  afterEach(async function () {
    for (const r of raws.splice(0)) r.close();
    await server.stop();
    await cleanup();
  });

  it('a user logs in only from their networks; elsewhere the right password gets AUTH_FAILED, as a wrong one does', async function () {
    expect(await loginFrom('127.0.0.2', ALICE.user, ALICE.password)).to.include({ status: 'ok', user: ALICE.user });
    expect(await loginFrom('127.0.0.1', ALICE.user, ALICE.password)).to.include({ status: 'error', code: 'AUTH_FAILED', message: 'authentication failed' });
    expect(await loginFrom('127.0.0.1', BOB.user, BOB.password)).to.include({ status: 'ok' });
    await waitUntil('the refusal logged with its reason', () => server.lines.find((l) => l.msg === `login refused: 127.0.0.1 is not in alice's networks (--networks-file)`), 10_000);
    // The CLI connects from 127.0.0.1: exit 3 (an authentication failure), as for a wrong password.
    const cli = await runCli(['list'], { port: server.port, user: ALICE.user, password: ALICE.password });
    expect(cli.code, describeRun(cli)).to.equal(3);
    expect(cli.stderr).to.include('AUTH_FAILED');
  });

  it('behind --proxy-protocol the address the header carries is judged; a header without one (UNSPEC) is judged as unknown, never as the proxy', async function () {
    await server.stop();
    // The proxy (this test, on 127.0.0.1) is inside everyone's networks; alice's is 192.0.2.0/24; bob: any.
    await writeFile(file, '*:127.0.0.0/8\nalice:192.0.2.0/24\nbob:any\n');
    server = await TestServer.start({ args: ['--networks-file', file, '--proxy-protocol'] });
    const via = async (preamble: Buffer, user: { user: string; password: string }): Promise<Record<string, unknown>> => {
      const { client } = await RawClient.open({ port: server.port, preamble });
      raws.push(client);
      return (await client.request({ op: 'auth', mech: 'plain', user: user.user, password: user.password }, 10_000)) ?? {};
    };
    const to = { address: '127.0.0.1', port: server.port };
    expect(await via(proxyV2Header({ address: '192.0.2.9', port: 5000 }, to), ALICE)).to.include({ status: 'ok' });
    expect(await via(proxyV2Header({ address: '198.51.100.9', port: 5000 }, to), ALICE)).to.include({ code: 'AUTH_FAILED' });
    expect(await via(proxyV2Raw(0x21, 0x00, Buffer.alloc(0)), ALICE), 'UNSPEC: the client address is unknown').to.include({ code: 'AUTH_FAILED' });
    expect(await via(proxyV2Raw(0x21, 0x00, Buffer.alloc(0)), BOB), 'bob may log in from anywhere').to.include({ status: 'ok' });
    await waitUntil('refused as unknown', () => server.lines.find((l) => l.msg === `login refused: unknown is not in alice's networks (--networks-file)`), 10_000);
  });

  it('--proxy-from: only those peers may send PROXY headers; a header from any other is not read, the connection closed at once (so nobody can claim an address in alice\'s networks)', async function () {
    await server.stop();
    await writeFile(file, 'alice:192.0.2.0/24\n');
    // The load balancer is 127.0.0.2; this test also connects from 127.0.0.1, as someone past the firewall.
    server = await TestServer.start({ args: ['--networks-file', file, '--proxy-protocol', '--proxy-from', '127.0.0.2, 10.0.0.0/8'] });
    const to = { address: '127.0.0.1', port: server.port };
    const header = proxyV2Header({ address: '192.0.2.9', port: 5000 }, to);
    const { client: lb } = await RawClient.open({ port: server.port, preamble: header, localAddress: '127.0.0.2' });
    raws.push(lb);
    expect(await lb.request({ op: 'auth', mech: 'plain', user: ALICE.user, password: ALICE.password }, 10_000), 'from the load balancer').to.include({ status: 'ok' });
    const opened = await RawClient.open({ port: server.port, preamble: header, localAddress: '127.0.0.1' }).then(
      (r) => r.client,
      () => null,
    );
    if (opened !== null) raws.push(opened);
    expect(opened, 'from 127.0.0.1: closed without a greeting').to.equal(null);
    const refused = await waitUntil('the refusal logged', () => server.lines.find((l) => l['reason'] === 'proxy_header' && l['problem'] === 'the peer is not in --proxy-from'), 10_000);
    expect(refused['remote']).to.match(/^127\.0\.0\.1:\d+$/);
  });

  it('a session token does not get past it either', async function () {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    try {
      await c.auth(BOB.user, BOB.password);
      const token = c.session!.token;
      await writeFile(file, 'bob:127.0.0.2\n');
      const reloaded = await reload();
      expect(reloaded.code, reloaded.stderr).to.equal(0);
      const { client } = await RawClient.open({ port: server.port, localAddress: '127.0.0.1' });
      raws.push(client);
      expect(await client.request({ op: 'auth', mech: 'token', token }, 10_000)).to.include({ code: 'AUTH_FAILED' });
      await waitUntil('refused for the networks', () => server.lines.find((l) => l.msg === `login refused: 127.0.0.1 is not in bob's networks (--networks-file)`), 10_000);
      // The same token from bob's network still works: it was refused for the address only.
      const { client: inside } = await RawClient.open({ port: server.port, localAddress: '127.0.0.2' });
      raws.push(inside);
      expect(await inside.request({ op: 'auth', mech: 'token', token }, 10_000)).to.include({ status: 'ok', user: BOB.user });
    } finally {
      c.close();
    }
  });

  it('fts-admin reload applies a changed file: new logins follow it, and an open session whose address is no longer allowed ends at its next request (KICKED)', async function () {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    try {
      await c.auth(BOB.user, BOB.password);
      await c.list();
      await writeFile(file, 'alice:any\nbob:10.0.0.0/8\n');
      const reloaded = await reload();
      expect(reloaded.code, reloaded.stderr).to.equal(0);
      expect(reloaded.stdout).to.include('networks reloaded: 2 users with their own networks\n');
      const err = await c.list().then(() => null, (e: unknown) => e as { code: string });
      expect(err?.code, 'the open session, at its next request').to.equal('KICKED');
    } finally {
      c.close();
    }
    expect(await loginFrom('127.0.0.1', ALICE.user, ALICE.password), 'alice: any now').to.include({ status: 'ok' });
    expect(await loginFrom('127.0.0.1', BOB.user, BOB.password)).to.include({ code: 'AUTH_FAILED' });
    // A malformed file is refused, naming the line; the networks in force stay.
    await writeFile(file, 'alice:any\nbob:10.0.0.0/99\n');
    const refused = await reload();
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.include(`networks file ${file}: line 2: expected any, or addresses and networks`);
    expect(refused.stderr).to.include('the old quotas, permissions, rates, networks and user table are kept');
    expect(await loginFrom('127.0.0.1', BOB.user, BOB.password), 'still refused').to.include({ code: 'AUTH_FAILED' });
  });
});
