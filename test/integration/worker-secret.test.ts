/**
 * The token-signing secret reaches the workers over the cluster IPC channel, never through their
 * environment: /proc/PID/environ shows a process's initial environment for its whole life, to every process
 * of the same user, whatever the process later deletes from process.env. Real server, real /proc (Linux).
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { waitWorkersReady } from '../helpers/admin-cli.js';
import { releaseAll } from '../helpers/common.js';
import { TestServer, DEFAULT_USERS } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
/** Logins with the token, each on a new connection, before both workers must have served one. */
const MAX_TOKEN_LOGINS = 12;

describe('the token secret in the worker processes', function () {
  this.timeout(60_000);

  const servers: TestServer[] = [];
  const clients: FtsClient[] = [];
  const cleanups: Array<() => Promise<void>> = [];

  afterEach(async function () {
    this.timeout(60_000);
    await releaseAll({ clients, servers, cleanups });
  });

  it("is not in /proc/<worker>/environ (nor the primary's) with --cluster-secret-file, and tokens work on every worker", async () => {
    const { dir, cleanup } = await tempDir('fts-secret-');
    cleanups.push(cleanup);
    // Text, as `openssl rand -base64 48` makes it: the file's bytes are the secret.
    const secret = randomBytes(48).toString('base64');
    const secretFile = path.join(dir, 'cluster.secret');
    await writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
    const server = await TestServer.start({ workers: 2, args: ['--cluster-secret-file', secretFile] });
    servers.push(server);
    const st = await waitWorkersReady(server.adminSocket, 2);

    const forms = { text: secret, hex: Buffer.from(secret).toString('hex'), base64: Buffer.from(secret).toString('base64') };
    for (const pid of [server.pid, ...st.workers.map((w) => w.pid)]) {
      const environ = await readFile(`/proc/${pid}/environ`, 'latin1');
      expect(environ.split('\0').length, `/proc/${pid}/environ was read`).to.be.greaterThan(1);
      expect(environ, `/proc/${pid}/environ`).to.not.contain('FTS_SESSION_SECRET');
      for (const [form, value] of Object.entries(forms)) expect(environ.includes(value), `the secret (${form}) in /proc/${pid}/environ`).to.equal(false);
    }

    const first = await FtsClient.connect({ port: server.port });
    clients.push(first);
    await first.auth(ALICE.user, ALICE.password);
    const token = first.session?.token;
    expect(token, 'a session token').to.be.a('string');
    const served = new Set<number>();
    const from = server.lines.length;
    for (let i = 0; i < MAX_TOKEN_LOGINS && served.size < 2; i++) {
      const c = await FtsClient.connect({ port: server.port });
      clients.push(c);
      await c.authToken(token!);
      await c.noop();
      c.close();
      for (const l of server.lines.slice(from)) if (l['event'] === 'auth' && l['mech'] === 'token' && l['result'] === 'success') served.add(Number(l['worker']));
    }
    expect([...served].sort(), 'workers that accepted the token').to.deep.equal(st.workers.map((w) => w.pid).sort());
  });
});
