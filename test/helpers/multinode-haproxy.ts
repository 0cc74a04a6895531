/**
 * A real HAProxy in front of several fts nodes, for the scale-out test (test/integration/multinode.test.ts).
 *
 * The configuration is derived from the shipped deploy/haproxy/haproxy.cfg rather than written from
 * scratch, so the test exercises the real health check (`tcp-check connect send-proxy` + expecting the
 * greeting) and the real `send-proxy-v2 check-send-proxy` server options. Only what a test must change is
 * changed: addresses and ports, `balance roundrobin` (deterministic spreading), `inter 500ms fall 1 rise 1`
 * (fast failover), a smaller `maxconn`, a stats socket, and `source 127.0.0.2` so that the nodes see
 * HAProxy's own connections (health checks) from another address than the clients' 127.0.0.1: an audit
 * line showing 127.0.0.1 can then only come from the PROXY protocol header.
 *
 * HAProxy comes from Debian's package, installed by .ci/install-debian. A missing binary is a test failure
 * with instructions, never a silent skip. The process is started in the foreground (`-db`) and stopped by
 * its own pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { REPO_ROOT } from './paths.js';

export const DEPLOY_HAPROXY_CFG = path.join(REPO_ROOT, 'deploy', 'haproxy', 'haproxy.cfg');
export const INSTALL_SCRIPT = path.join(REPO_ROOT, '.ci', 'install-debian');

/** The haproxy binary: on PATH, or in the sbin directories a non-root PATH often lacks. Throws with instructions. */
export function haproxyBinary(): string {
  const dirs = [...(process.env['PATH'] ?? '').split(path.delimiter).filter((d) => d !== ''), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    const candidate = path.join(dir, 'haproxy');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(
    `haproxy is not installed (not found on PATH nor in /usr/sbin). The multi-node test runs a real HAProxy in front of ` +
      `two fts nodes: install it with \`bash ${INSTALL_SCRIPT}\` (it runs \`apt-get install haproxy\` without starting the ` +
      `service; .ci/run does this in CI).`,
  );
}

interface Section {
  /** The section line, e.g. "backend fts_nodes". */
  head: string;
  /** Body lines, trimmed, comments and blank lines removed. */
  body: string[];
}

/** Splits an HAProxy configuration into sections (a section line starts at column 0). */
export function parseSections(text: string): Section[] {
  const sections: Section[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+$/, '');
    if (line.trim() === '' || line.trim().startsWith('#')) continue;
    if (!/^\s/.test(line)) {
      sections.push({ head: line.trim(), body: [] });
      continue;
    }
    const current = sections[sections.length - 1];
    if (current === undefined) throw new Error(`haproxy.cfg: indented line before any section: ${line}`);
    current.body.push(line.trim());
  }
  return sections;
}

function section(sections: Section[], head: RegExp, what: string): Section {
  const found = sections.find((s) => head.test(s.head));
  if (found === undefined) throw new Error(`${DEPLOY_HAPROXY_CFG} has no ${what} section`);
  return found;
}

export interface DerivedConfigOptions {
  /** 127.0.0.1 port of the frontend. */
  frontendPort: number;
  /** UNIX socket for `show stat`. */
  statsSocket: string;
  /** The fts nodes, in order: name and 127.0.0.1 port. */
  servers: ReadonlyArray<{ name: string; port: number }>;
  /** Address HAProxy connects to the nodes from (default 127.0.0.2). */
  source?: string;
}

/**
 * The shipped configuration with only the test-specific changes listed in the module comment. Throws if
 * the shipped file lost one of the pieces the scale-out design relies on (health check expecting the
 * greeting, PROXY v2 to the nodes and in the check).
 */
export function deriveHaproxyConfig(original: string, o: DerivedConfigOptions): string {
  const sections = parseSections(original);
  const global = section(sections, /^global$/, 'global');
  const defaults = section(sections, /^defaults\b/, 'defaults');
  const frontend = section(sections, /^frontend\s/, 'frontend');
  const backend = section(sections, /^backend\s/, 'backend');

  const checks = backend.body.filter((l) => l === 'option tcp-check' || l.startsWith('tcp-check '));
  const problems: string[] = [];
  if (!checks.includes('option tcp-check')) problems.push('`option tcp-check`');
  if (!checks.some((l) => /^tcp-check connect\b.*\bsend-proxy\b/.test(l))) problems.push('`tcp-check connect send-proxy`');
  if (!checks.some((l) => /^tcp-check expect\b.*status.*hello/.test(l))) problems.push('a `tcp-check expect` of the greeting ("status":"hello")');
  const defaultServer = backend.body.find((l) => l.startsWith('default-server '));
  if (defaultServer === undefined) problems.push('a `default-server` line');
  else {
    if (!/\bsend-proxy-v2\b/.test(defaultServer)) problems.push('`send-proxy-v2` on default-server');
    if (!/\bcheck-send-proxy\b/.test(defaultServer)) problems.push('`check-send-proxy` on default-server');
  }
  if (!backend.body.some((l) => /^server\s.*\bcheck\b/.test(l))) problems.push('servers with `check`');
  if (problems.length > 0 || defaultServer === undefined) {
    throw new Error(`${DEPLOY_HAPROXY_CFG}: the backend lost ${problems.join(', ')}; the scale-out design (and this test) rely on them`);
  }
  const fastDefaultServer = defaultServer
    .replace(/\binter\s+\S+/, 'inter 500ms')
    .replace(/\bfall\s+\d+/, 'fall 1')
    .replace(/\brise\s+\d+/, 'rise 1');

  const indent = (lines: string[]): string => lines.map((l) => `    ${l}`).join('\n');
  return [
    '# Generated by test/helpers/multinode-haproxy.ts from deploy/haproxy/haproxy.cfg (test-only changes:',
    '# addresses, balance roundrobin, inter/fall/rise, maxconn, stats socket, source address).',
    'global',
    indent([...global.body.filter((l) => !l.startsWith('maxconn') && !l.startsWith('stats ')), 'maxconn 1000', `stats socket ${o.statsSocket} mode 600 level admin`]),
    '',
    defaults.head,
    indent(defaults.body),
    '',
    frontend.head,
    indent([...frontend.body.filter((l) => !l.startsWith('bind ')), `bind 127.0.0.1:${o.frontendPort}`]),
    '',
    backend.head,
    indent([
      'balance roundrobin',
      `source ${o.source ?? '127.0.0.2'}`,
      ...backend.body.filter((l) => l === 'option tcp-check' || l.startsWith('tcp-check ')),
      fastDefaultServer,
      ...o.servers.map((s) => `server ${s.name} 127.0.0.1:${s.port} check`),
    ]),
    '',
  ].join('\n');
}

/** One row of `show stat` (CSV), keyed by the column names of its header line. */
export type StatRow = Readonly<Record<string, string>>;

export function parseShowStat(csv: string): StatRow[] {
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  const header = lines[0];
  if (header === undefined || !header.startsWith('# ')) throw new Error(`unexpected "show stat" output: ${csv.slice(0, 200)}`);
  const columns = header.slice(2).split(',');
  return lines.slice(1).map((line) => {
    const cells = line.split(',');
    const row: Record<string, string> = {};
    columns.forEach((c, i) => {
      if (c !== '') row[c] = cells[i] ?? '';
    });
    return row;
  });
}

/** Sends one command to an HAProxy stats socket and returns the whole answer (bounded). */
export function statsCommand(socketPath: string, command: string, timeoutMs = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let out = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`HAProxy stats socket did not answer "${command}" within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      out += c;
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    socket.once('connect', () => socket.write(`${command}\n`));
  });
}

export class HaproxyProcess {
  output = '';
  private readonly exited: Promise<void>;

  private constructor(
    readonly proc: ChildProcess,
    readonly statsSocket: string,
  ) {
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    proc.stdout?.setEncoding('utf8');
    proc.stderr?.setEncoding('utf8');
    const keep = (c: string): void => {
      // Bounded: HAProxy logs one line per connection; keep the last 1 MB for diagnostics.
      this.output = (this.output + c).slice(-1_000_000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts `haproxy -f <config> -db` and waits until its stats socket answers. */
  static async start(configPath: string, statsSocket: string, timeoutMs = 10_000): Promise<HaproxyProcess> {
    const proc = spawn(haproxyBinary(), ['-f', configPath, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const h = new HaproxyProcess(proc, statsSocket);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!h.running) throw new Error(`haproxy exited at start (${String(proc.exitCode ?? proc.signalCode)}): ${h.output}`);
      try {
        await h.showStat();
        return h;
      } catch (err) {
        if (Date.now() > deadline) {
          await h.stop();
          throw new Error(`haproxy's stats socket did not answer within ${timeoutMs} ms (${err instanceof Error ? err.message : String(err)}): ${h.output}`);
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async showStat(): Promise<StatRow[]> {
    return parseShowStat(await statsCommand(this.statsSocket, 'show stat'));
  }

  /** The row of one server of the backend. */
  async server(name: string): Promise<StatRow> {
    const row = (await this.showStat()).find((r) => r['svname'] === name);
    if (row === undefined) throw new Error(`no server ${name} in HAProxy's stats`);
    return row;
  }

  /** Polls until the server's stats row satisfies `ok`; returns the row. `what` names the wait in errors. */
  async waitServer(name: string, what: string, ok: (row: StatRow) => boolean, timeoutMs: number): Promise<StatRow> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    for (;;) {
      try {
        const row = await this.server(name);
        last = `status ${row['status'] ?? '?'}, check_status ${row['check_status'] ?? '?'}`;
        if (ok(row)) return row;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline) throw new Error(`HAProxy server ${name}: not ${what} within ${timeoutMs} ms (last: ${last})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Up, and its last health check passed (a server starts "UP" with check_status INI before any check). */
  waitUp(name: string, timeoutMs: number): Promise<StatRow> {
    return this.waitServer(name, 'UP after a passed check', (r) => r['status'] === 'UP' && r['check_status'] === 'L7OK', timeoutMs);
  }

  waitDown(name: string, timeoutMs: number): Promise<StatRow> {
    return this.waitServer(name, 'DOWN', (r) => (r['status'] ?? '').startsWith('DOWN'), timeoutMs);
  }

  /** SIGTERM by pid, then SIGKILL after 5 s. Idempotent. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const done = await Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref())]);
    if (!done && this.running) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }
}
