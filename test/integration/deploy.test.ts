/**
 * The deployment files: deploy/haproxy/haproxy.cfg is accepted by `haproxy -c` and keeps the pieces the
 * scale-out design relies on; deploy/systemd/fts-server.service is accepted by `systemd-analyze verify` and
 * keeps its hardening and a stop that never cuts a drain short. haproxy and systemd-analyze come from
 * .ci/install-debian; a missing tool is a failure with instructions, never a silent skip.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseConfig } from '../../server/config.js';
import { FtsClient } from '../../client/index.js';
import { freePort, waitUntil } from '../helpers/lifecycle-util.js';
import { metric, metricsPortOf } from '../helpers/hardening-proc.js';
import { proxyV2Header, proxyV2Local, proxyV2Raw } from '../helpers/multinode-direct.js';
import { RawClient } from '../helpers/raw-client.js';
import { DEPLOY_HAPROXY_CFG, deriveHaproxyConfig, haproxyBinary, HaproxyProcess, INSTALL_SCRIPT, parseSections } from '../helpers/multinode-haproxy.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { makeCert } from '../helpers/tls-certs.js';

const UNIT = path.join(REPO_ROOT, 'deploy', 'systemd', 'fts-server.service');
/** fts-server's default --idle-timeout: HAProxy must not cut an idle session before fts does. */
const FTS_IDLE_TIMEOUT_SECONDS = 300;
/** Workers that do not exit within this long after the grace period are killed (docs/OPERATIONS.md). */
const HARD_KILL_MARGIN_SECONDS = 5;

interface Run {
  code: number | null;
  out: string;
}

/** Runs a command to completion (bounded: SIGKILL by pid after timeoutMs), stdout and stderr together. */
function run(bin: string, args: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      out += c;
    });
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

function systemdAnalyze(): string {
  for (const dir of [...(process.env['PATH'] ?? '').split(path.delimiter).filter((d) => d !== ''), '/usr/bin', '/bin']) {
    const candidate = path.join(dir, 'systemd-analyze');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`systemd-analyze is not installed. Install it with \`bash ${INSTALL_SCRIPT}\` (apt-get install systemd; .ci/run does this in CI).`);
}

/** HAProxy time: a number with an optional unit (default milliseconds), in seconds. */
function haproxySeconds(value: string): number {
  const m = /^(\d+)(us|ms|s|m|h|d)?$/.exec(value);
  if (!m) throw new Error(`not an HAProxy time: ${value}`);
  const factor: Record<string, number> = { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400 };
  return Number(m[1]) * (factor[m[2] ?? 'ms'] ?? NaN);
}

/** systemd time span ("45", "45s", "1min 30s", "2m"), in seconds. */
function systemdSeconds(value: string): number {
  const factor: Record<string, number> = { ms: 1e-3, msec: 1e-3, s: 1, sec: 1, second: 1, seconds: 1, m: 60, min: 60, minute: 60, minutes: 60, h: 3600, hr: 3600, hour: 3600, hours: 3600 };
  let total = 0;
  const parts = value.trim().split(/\s+/);
  for (const part of parts) {
    const m = /^(\d+(?:\.\d+)?)([a-z]*)$/.exec(part);
    const f = m ? (m[2] === '' ? 1 : factor[m[2] ?? '']) : undefined;
    if (!m || f === undefined) throw new Error(`not a systemd time span: ${value}`);
    total += Number(m[1]) * f;
  }
  return total;
}

/** The unit's [Service] settings (continuation lines joined); a key that appears twice keeps every value. */
function serviceSettings(text: string): Map<string, string[]> {
  const joined = text.replace(/\\\n\s*/g, ' ');
  const settings = new Map<string, string[]>();
  let inService = false;
  for (const raw of joined.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('[')) {
      inService = line === '[Service]';
      continue;
    }
    if (!inService) continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return settings;
}

function one(settings: Map<string, string[]>, key: string): string {
  const values = settings.get(key);
  expect(values, `[Service] ${key}=`).to.not.equal(undefined);
  expect(values, `[Service] ${key}= appears once`).to.have.length(1);
  return values?.[0] ?? '';
}

/** The fts-server arguments of ExecStart (after the node binary and the entry file). */
function execStartArgs(settings: Map<string, string[]>): { node: string; entry: string; args: string[] } {
  const words = one(settings, 'ExecStart').split(/\s+/).filter((w) => w !== '');
  const [node = '', entry = '', ...args] = words;
  return { node, entry, args };
}

describe('deploy files', function () {
  this.timeout(60_000);

  describe('deploy/haproxy/haproxy.cfg', function () {
    it('haproxy -c accepts it, without alerts or warnings', async function () {
      const r = await run(haproxyBinary(), ['-c', '-f', DEPLOY_HAPROXY_CFG]);
      expect(r.code, `haproxy -c exit code; output:\n${r.out}`).to.equal(0);
      expect(r.out, 'haproxy -c output').to.not.match(/\[(ALERT|WARNING)\]/);
    });

    it('health-checks the fts greeting over PROXY v2, sends PROXY v2 to every node, and outlasts fts\'s own idle timeout', async function () {
      const text = await readFile(DEPLOY_HAPROXY_CFG, 'utf8');
      // Throws, naming what is missing, if the health check or the PROXY v2 options are gone.
      deriveHaproxyConfig(text, { frontendPort: 1, statsSocket: '/dev/null', servers: [{ name: 'x', port: 1 }] });
      const sections = parseSections(text);
      const defaults = sections.find((s) => s.head === 'defaults')?.body ?? [];
      expect(defaults, 'defaults').to.include('mode tcp');
      for (const side of ['client', 'server']) {
        const line = defaults.find((l) => l.startsWith(`timeout ${side} `));
        expect(line, `timeout ${side}`).to.be.a('string');
        expect(haproxySeconds(line?.split(/\s+/)[2] ?? ''), `timeout ${side} (s) vs fts --idle-timeout ${FTS_IDLE_TIMEOUT_SECONDS}`).to.be.at.least(FTS_IDLE_TIMEOUT_SECONDS);
      }
      const backend = sections.find((s) => s.head.startsWith('backend '))?.body ?? [];
      const servers = backend.filter((l) => l.startsWith('server '));
      expect(servers.length, 'backend servers').to.be.at.least(2);
      for (const s of servers) expect(s, 'every server is health-checked').to.match(/\bcheck\b/);
    });
  });

  describe('deploy/haproxy/haproxy.cfg with TLS on the nodes (as its comment and deploy/README.md say)', function () {
    const cleanups: Array<() => Promise<void>> = [];
    afterEach(async function () {
      this.timeout(30_000);
      for (const c of cleanups.splice(0).reverse()) await c();
    });

    it('the documented TLS health check sees the greeting (the node is UP), and a TLS client logs in through HAProxy', async function () {
      const text = await readFile(DEPLOY_HAPROXY_CFG, 'utf8');
      const connect = /^\s*#\s*(tcp-check connect send-proxy ssl)\s*$/m.exec(text)?.[1];
      const checkSsl = /^\s*#\s*(check-ssl verify required ca-file) \S+\s*$/m.exec(text)?.[1];
      expect(connect, 'the comment names the TLS connect line').to.be.a('string');
      expect(checkSsl, 'the comment names the check-ssl options').to.be.a('string');
      const { dir, cleanup } = await tempDir('fts-haproxy-tls-');
      cleanups.push(cleanup);
      const cert = await makeCert(dir, 'node');
      const node = await TestServer.start({ workers: 1, args: ['--tls-cert', cert.cert, '--tls-key', cert.key, '--proxy-protocol'] });
      cleanups.push(() => node.stop());
      // The shipped file with the two documented changes, then the test's own addresses and timings.
      const tlsText = text
        .replace(/^(\s*)tcp-check connect send-proxy\s*$/m, `$1${connect!}`)
        .replace(/^(\s*default-server .*)$/m, `$1 ${checkSsl!} ${cert.cert}`);
      const frontendPort = await freePort();
      const statsSocket = path.join(dir, 'haproxy.sock');
      const cfgPath = path.join(dir, 'haproxy.cfg');
      await writeFile(cfgPath, deriveHaproxyConfig(tlsText, { frontendPort, statsSocket, servers: [{ name: 'node-a', port: node.port }] }));
      const haproxy = await HaproxyProcess.start(cfgPath, statsSocket);
      cleanups.push(() => haproxy.stop());
      await haproxy.waitUp('node-a', 15_000);
      const client = await FtsClient.connect({ port: frontendPort, tls: { ca: cert.pem, servername: 'localhost' } });
      cleanups.push(async () => client.close());
      await client.auth(DEFAULT_USERS[0]!.user, DEFAULT_USERS[0]!.password);
      expect(await client.list()).to.be.an('array');
    });
  });

  describe('behind HAProxy (--proxy-protocol): its health checks', function () {
    let node: TestServer | null = null;
    const raws: RawClient[] = [];
    afterEach(async function () {
      this.timeout(30_000);
      for (const c of raws.splice(0)) c.close();
      await node?.stop();
      node = null;
    });

    it('see the greeting even when the unauthenticated-connection limit (--max-startups) refuses clients', async function () {
      node = await TestServer.start({ workers: 1, args: ['--proxy-protocol', '--max-startups', '1:100:1', '--log-level', 'debug'] });
      const to = { address: '127.0.0.1', port: node.port };
      const first = await RawClient.greet({ port: node.port, preamble: proxyV2Header({ address: '192.0.2.10', port: 40000 }, to) });
      raws.push(first.client);
      expect(first.first['status'], 'the first client, not yet logged in').to.equal('hello');
      const second = await RawClient.greet({ port: node.port, preamble: proxyV2Header({ address: '192.0.2.11', port: 40001 }, to) });
      raws.push(second.client);
      expect(second.first, 'a second client, while the first is not logged in').to.include({ status: 'bye', code: 'TOO_MANY_CONNECTIONS' });
      const metricsPort = await metricsPortOf(node);
      const connections = await metric(metricsPort, 'fts_connections_total');
      for (let i = 0; i < 3; i++) {
        const check = await RawClient.greet({ port: node.port, preamble: proxyV2Local() });
        raws.push(check.client);
        expect(check.first['status'], `health check ${i + 1} (PROXY LOCAL)`).to.equal('hello');
        check.client.close();
      }
      // Every few seconds on every node: not in the connection count, and not in the info-level audit log.
      const ends = await waitUntil('the session-end lines of the three health checks', () => {
        const found = node!.lines.filter((l) => l['event'] === 'session-end' && l['healthCheck'] === true);
        return found.length >= 3 ? found : undefined;
      });
      expect(ends.map((l) => l['level']), 'logged at debug level').to.deep.equal(['debug', 'debug', 'debug']);
      expect(await metric(metricsPort, 'fts_connections_total'), 'fts_connections_total').to.equal(connections);
      // It relays no client and is in no limit, so it cannot log in (someone who reaches the port without
      // the proxy could otherwise open sessions past every limit): refused at once, logged at warn.
      const user = DEFAULT_USERS[0]!;
      const local = await RawClient.open({ port: node.port, preamble: proxyV2Local() });
      raws.push(local.client);
      const refused = await local.client.request({ op: 'auth', id: 1, mech: 'plain', user: user.user, password: user.password });
      expect(refused).to.include({ id: 1, status: 'error', code: 'AUTH_FAILED', fatal: true });
      await local.client.expectClosed();
      const warned = await waitUntil('the warning of the refused login', () => node!.lines.find((l) => l['event'] === 'auth' && l['healthCheck'] === true));
      expect(warned).to.include({ level: 'warn', result: 'failure', mech: 'plain' });
      expect(node.lines.some((l) => l['event'] === 'session-end' && l['user'] === user.user), 'no session of the user began').to.equal(false);
    });

    it('a relayed client whose address the proxy does not know (family UNSPEC) is counted under the connection\'s own address', async function () {
      node = await TestServer.start({ workers: 1, args: ['--proxy-protocol', '--max-connections-per-ip', '2'] });
      const unspec = proxyV2Raw(0x21, 0x00, Buffer.alloc(0));
      const seen: Array<Record<string, unknown>> = [];
      for (let i = 0; i < 3; i++) {
        const c = await RawClient.greet({ port: node.port, preamble: unspec });
        raws.push(c.client);
        seen.push(c.first);
      }
      expect(seen.map((h) => h['status']), 'two per address, then refused').to.deep.equal(['hello', 'hello', 'bye']);
      expect(seen[2]).to.include({ code: 'TOO_MANY_CONNECTIONS' });
    });
  });

  describe('deploy/systemd/fts-server.service', function () {
    it('systemd-analyze verify accepts it, with no complaint about the unit', async function () {
      const bin = systemdAnalyze();
      let r = await run(bin, ['verify', UNIT]);
      let verified = UNIT;
      if (r.code !== 0 && /\/opt\/fts|not executable|fts user|User=|No such file/i.test(r.out)) {
        // Only what a machine without the install lacks: the /opt/fts checkout, node at /usr/bin/node, the
        // fts user. Every other line, the hardening included, is verified as it is.
        const { dir, cleanup } = await tempDir('fts-unit-');
        try {
          const text = (await readFile(UNIT, 'utf8'))
            .replaceAll('/opt/fts', REPO_ROOT)
            .replaceAll('/usr/bin/node', process.execPath)
            .replace(/^User=.*$/m, 'User=root')
            .replace(/^Group=.*$/m, 'Group=root');
          verified = path.join(dir, 'fts-server.service');
          await writeFile(verified, text);
          r = await run(bin, ['verify', verified]);
        } finally {
          await cleanup();
        }
      }
      expect(r.code, `systemd-analyze verify ${verified}:\n${r.out}`).to.equal(0);
      const aboutUnit = r.out.split('\n').filter((l) => l.includes('fts-server.service'));
      expect(aboutUnit, 'systemd-analyze lines about the unit (unknown keys, bad values…)').to.deep.equal([]);
    });

    it('keeps its hardening, runs as fts, restarts on failure, and never cuts a drain short', async function () {
      const settings = serviceSettings(await readFile(UNIT, 'utf8'));
      expect(one(settings, 'User'), 'User').to.equal('fts');
      expect(one(settings, 'NoNewPrivileges'), 'NoNewPrivileges').to.equal('yes');
      expect(one(settings, 'ProtectSystem'), 'ProtectSystem').to.equal('strict');
      expect(one(settings, 'PrivateTmp'), 'PrivateTmp').to.equal('yes');
      expect(one(settings, 'KillMode'), 'KillMode (SIGTERM to the primary only)').to.equal('mixed');
      expect(one(settings, 'Restart'), 'Restart').to.equal('on-failure');

      const { node, entry, args } = execStartArgs(settings);
      expect(path.basename(node), 'ExecStart runs node itself (npm/npx would not forward SIGTERM)').to.equal('node');
      expect(entry, 'ExecStart entry file').to.match(/\/dist\/server\/main\.js$/);
      const config = parseConfig(args, {});
      if (typeof config === 'string') throw new Error(`ExecStart asks for --${config}`);

      const grace = config.graceSeconds;
      const stop = systemdSeconds(one(settings, 'TimeoutStopSec'));
      expect(stop, `TimeoutStopSec (s) vs --grace ${grace}`).to.be.greaterThan(grace);
      expect(stop, `TimeoutStopSec (s) vs --grace ${grace} + ${HARD_KILL_MARGIN_SECONDS} s hard-kill margin`).to.be.greaterThan(grace + HARD_KILL_MARGIN_SECONDS);

      const writable = one(settings, 'ReadWritePaths').split(/\s+/).map((p) => p.replace(/^-/, ''));
      expect(writable, 'ReadWritePaths= (ProtectSystem=strict makes everything else read-only) holds --storage').to.include(config.storage);
      const runtimeDirs = one(settings, 'RuntimeDirectory').split(/\s+/).map((d) => path.join('/run', d));
      expect(runtimeDirs, `the admin socket ${config.adminSocket} lives in a RuntimeDirectory=`).to.include(path.dirname(config.adminSocket));
      expect(one(settings, 'ExecReload'), 'ExecReload reloads through the same admin socket').to.include(`--socket ${config.adminSocket}`);

      // Started means serving: systemctl start (and what is ordered after the unit) waits for fts-admin ready,
      // within systemd's default start timeout (90 s).
      expect(one(settings, 'Type'), 'Type').to.equal('exec');
      const post = one(settings, 'ExecStartPost');
      expect(post, 'ExecStartPost runs fts-admin ready through the same admin socket').to.match(new RegExp(`/dist/admin/cli\\.js --socket ${config.adminSocket} ready --timeout (\\d+)$`));
      const readyWait = Number(/--timeout (\d+)$/.exec(post)?.[1]);
      expect(readyWait, 'ready --timeout (s) within TimeoutStartSec').to.be.above(0).and.below(systemdSeconds(settings.get('TimeoutStartSec')?.[0] ?? '90'));
    });
  });
});
