/**
 * The Prometheus endpoint of a real fts-server (GET /metrics on the primary, aggregated over the workers):
 * exact counts after traffic spread over two workers, counters that never go backwards across a rolling
 * restart, a SIGKILLed worker and a SIGSTOPped one, promtool's lint of the fts_* exposition, label hygiene,
 * --metrics-port off, and the deploy/prometheus files (promtool check config / check rules / test rules).
 *
 * Linux only (as the server's CI): the "nothing listens" checks read /proc.
 */
import { expect } from 'chai';
import { mkdir, readdir, readFile, readlink, rename, rm, statfs, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { FtsClient, FtsError } from '../../client/index.js';
import { runAdmin, sessionsJson, startAdmin, statusJson, type AdminRun } from '../helpers/admin-cli.js';
import { codeOf, continueStopped, releaseAll } from '../helpers/common.js';
import { SlowUploader } from '../helpers/lifecycle-slow-uploader.js';
import { sha256, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { greetAndQuit, RawClient, uploadBytes } from '../helpers/raw-client.js';
import { encodeHeader, ERROR_CODES } from '../../protocol/index.js';
import { runPromtool } from '../helpers/promtool.js';
import { TestServer, type LogLine, type ServerOptions, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { WorkerHold } from '../helpers/worker-hold.js';

// ---------------------------------------------------------------------------------------------------------
// The exposition format

const OPS = ['upload', 'download', 'view', 'delete', 'rename', 'discard', 'list', 'hash'] as const;
type Op = (typeof OPS)[number];
const DIRECTIONS = ['upload', 'download'] as const;

/** Every fts_* family the endpoint must export, and its type. (Other fts_* families may be added.) */
const FAMILIES: Readonly<Record<string, 'counter' | 'gauge' | 'histogram'>> = {
  fts_connections_total: 'counter',
  fts_sessions_active: 'gauge',
  fts_auth_attempts_total: 'counter',
  fts_operations_total: 'counter',
  fts_operation_errors_total: 'counter',
  fts_transfer_bytes_total: 'counter',
  fts_operation_duration_seconds: 'histogram',
  fts_transfers_active: 'gauge',
  fts_workers: 'gauge',
  fts_worker_restarts_total: 'counter',
  fts_draining: 'gauge',
  fts_scrape_errors_total: 'counter',
  fts_lock_compromised_total: 'counter',
  fts_damaged_files_total: 'counter',
  fts_quota_refusals_total: 'counter',
  fts_throttled_seconds_total: 'counter',
  fts_rejections_total: 'counter',
  fts_bans_active: 'gauge',
  fts_upload_hooks_total: 'counter',
  fts_config_last_reload_successful: 'gauge',
  fts_config_last_reload_success_timestamp_seconds: 'gauge',
  fts_storage_up: 'gauge',
  fts_start_time_seconds: 'gauge',
  fts_storage_inodes: 'gauge',
  fts_storage_free_bytes: 'gauge',
  fts_storage_size_bytes: 'gauge',
  fts_storage_free_inodes: 'gauge',
};

/** Families exported only with TLS on (checked in auth-tls.test.ts). */
const TLS_FAMILIES: Readonly<Record<string, 'gauge'>> = { fts_tls_certificate_expiry_timestamp_seconds: 'gauge' };

/** Gauges that are not 0 on a fresh server. */
const NONZERO_AT_START = new Set(['fts_workers', 'fts_config_last_reload_successful', 'fts_config_last_reload_success_timestamp_seconds', 'fts_storage_up', 'fts_start_time_seconds', 'fts_storage_free_bytes', 'fts_storage_size_bytes', 'fts_storage_free_inodes', 'fts_storage_inodes']);

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseValue(raw: string): number {
  if (raw === '+Inf' || raw === 'Inf') return Infinity;
  if (raw === '-Inf') return -Infinity;
  // prom-client writes NaN as "Nan"; Prometheus parses it case-insensitively.
  if (raw.toLowerCase() === 'nan') return NaN;
  const n = Number(raw);
  if (raw.trim() === '' || Number.isNaN(n)) throw new Error(`bad sample value ${JSON.stringify(raw)}`);
  return n;
}

/** `{a="x",b="y\"z"}` → record (the text format's escapes: \\, \", \n). */
function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0 || text[eq + 1] !== '"') throw new Error(`bad labels in ${JSON.stringify(line)}`);
    const name = text.slice(i, eq).trim();
    let value = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        j++;
        value += text[j] === 'n' ? '\n' : (text[j] ?? '');
      } else {
        value += text[j];
      }
    }
    if (j >= text.length) throw new Error(`unterminated label value in ${JSON.stringify(line)}`);
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
  }
  return labels;
}

/** A parsed text exposition (format 0.0.4). */
class Exposition {
  readonly samples: Sample[] = [];
  readonly types = new Map<string, string>();
  readonly helps = new Map<string, string>();

  constructor(readonly text: string) {
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (meta) {
        (meta[1] === 'TYPE' ? this.types : this.helps).set(meta[2] ?? '', meta[3] ?? '');
        continue;
      }
      if (line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/.exec(line);
      if (!m) throw new Error(`unparsable exposition line ${JSON.stringify(line)}`);
      this.samples.push({ name: m[1] ?? '', labels: parseLabels(m[2] ?? '', line), value: parseValue(m[3] ?? '') });
    }
  }

  /** Samples of `name` whose labels include `labels`. */
  find(name: string, labels: Record<string, string> = {}): Sample[] {
    return this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** The one sample of `name` with exactly `labels`; fails the test if absent or ambiguous. */
  get(name: string, labels: Record<string, string> = {}): number {
    const hits = this.samples.filter((s) => s.name === name && sameLabels(s.labels, labels));
    expect(hits, `exactly one sample ${name}${JSON.stringify(labels)} in the exposition`).to.have.length(1);
    return hits[0]?.value ?? NaN;
  }

  /** Sum over every sample of `name` whose labels include `labels`. */
  sum(name: string, labels: Record<string, string> = {}): number {
    return this.find(name, labels).reduce((n, s) => n + s.value, 0);
  }

  /** The fts_* lines only (# HELP fts_, # TYPE fts_, fts_...). */
  ftsOnly(): string {
    return (
      this.text
        .split('\n')
        .filter((l) => l.startsWith('# HELP fts_') || l.startsWith('# TYPE fts_') || l.startsWith('fts_'))
        .join('\n') + '\n'
    );
  }

  /** The family (# TYPE name) a sample belongs to: itself, or for histograms the name without _bucket/_sum/_count. */
  familyOf(sampleName: string): string | null {
    if (this.types.has(sampleName)) return sampleName;
    const base = sampleName.replace(/_(bucket|sum|count)$/, '');
    return base !== sampleName && this.types.get(base) === 'histogram' ? base : null;
  }

  /** Every sample of a counter or histogram fts_* family, by series key: these must never decrease. */
  monotonic(): Map<string, number> {
    const out = new Map<string, number>();
    for (const s of this.samples) {
      const family = this.familyOf(s.name);
      if (family === null || !family.startsWith('fts_')) continue;
      const type = this.types.get(family);
      if (type === 'counter' || type === 'histogram') out.set(seriesKey(s), s.value);
    }
    return out;
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

function seriesKey(s: Sample): string {
  const labels = Object.keys(s.labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(s.labels[k])}`)
    .join(',');
  return `${s.name}{${labels}}`;
}

/**
 * Asserts that no counter/histogram series of `before` is missing or lower in `after`. Histogram _sum
 * values are floats whose addition order changes when a worker's counters are folded into the retired
 * total, so they get a relative tolerance of 1e-9; everything else is compared exactly.
 */
function expectNotBackwards(before: Exposition, after: Exposition, what: string): void {
  const a = after.monotonic();
  const problems: string[] = [];
  for (const [key, value] of before.monotonic()) {
    const now = a.get(key);
    const slack = key.includes('_sum{') ? Math.abs(value) * 1e-9 : 0;
    if (now === undefined) problems.push(`${key}: missing (was ${value})`);
    else if (now < value - slack) problems.push(`${key}: ${value} -> ${now}`);
  }
  expect(problems, `counters went backwards ${what}`).to.deep.equal([]);
}

/** The counters a test's traffic determines exactly (everything but the primary's own ones and _sum). */
function workerCounters(e: Exposition): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of e.monotonic()) {
    if (key.startsWith('fts_worker_restarts_total') || key.startsWith('fts_scrape_errors_total') || key.startsWith('fts_operation_duration_seconds_sum')) continue;
    if (key.startsWith('fts_operation_duration_seconds_bucket')) continue; // durations vary; _count is exact
    out.set(key, value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The endpoint

function metricsPortOf(server: TestServer): number {
  const line = server.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on http'));
  expect(line, "the 'metrics on http://...' log line").to.not.equal(undefined);
  const port = Number(line?.['port']);
  expect(Number.isInteger(port) && port > 0, `metrics port in ${JSON.stringify(line)}`).to.equal(true);
  return port;
}

async function get(port: number, urlPath: string, method = 'GET'): Promise<{ status: number; contentType: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, { method, signal: AbortSignal.timeout(20_000) });
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: await res.text() };
}

/** The storage gauges, NaN while the storage is unavailable (and only then). */
const STORAGE_SPACE = ['fts_storage_free_bytes', 'fts_storage_size_bytes', 'fts_storage_free_inodes', 'fts_storage_inodes'];

/** GET /metrics, parsed; no fts_* sample may be NaN, but for the families in `nanAllowed`. */
async function scrape(port: number, nanAllowed: readonly string[] = []): Promise<Exposition> {
  const r = await get(port, '/metrics');
  expect(r.status, `GET /metrics status (body: ${r.body.slice(0, 200)})`).to.equal(200);
  const e = new Exposition(r.body);
  const nan = e.samples.filter((s) => s.name.startsWith('fts_') && Number.isNaN(s.value) && !nanAllowed.includes(s.name)).map(seriesKey);
  expect(nan, 'fts_* samples whose value is NaN').to.deep.equal([]);
  return e;
}

/** Ports in LISTEN state of TCP sockets held by these processes (from /proc/<pid>/fd and /proc/net/tcp*). */
async function listeningSockets(pids: number[]): Promise<Array<{ address: string; port: number }>> {
  const inodes = new Set<string>();
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      continue; // exited meanwhile
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`));
        if (m?.[1]) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  }
  const out: Array<{ address: string; port: number }> = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = await readFile(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      const [local, state, inode] = [cols[1], cols[3], cols[9]];
      if (local === undefined || state !== '0A' || inode === undefined || !inodes.has(inode)) continue;
      const [addrHex = '', portHex = ''] = local.split(':');
      const address = addrHex.length === 8 ? [3, 2, 1, 0].map((i) => parseInt(addrHex.slice(i * 2, i * 2 + 2), 16)).join('.') : addrHex;
      out.push({ address, port: parseInt(portHex, 16) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Expected counts

class Tally {
  readonly ops = new Map<string, number>();
  bytesUp = 0;
  bytesDown = 0;
  authOk = 0;
  authFail = 0;
  connections = 0;

  /** Errors by op and code, as fts_operation_errors_total counts them. */
  readonly errors = new Map<string, number>();

  /** One completed operation: `true` if it succeeded, else the error code it failed with. */
  op(op: Op, outcome: true | string): void {
    const key = `${op}/${outcome === true ? 'ok' : 'error'}`;
    this.ops.set(key, (this.ops.get(key) ?? 0) + 1);
    if (outcome !== true) this.errors.set(`${op}/${outcome}`, (this.errors.get(`${op}/${outcome}`) ?? 0) + 1);
  }

  count(op: Op, result: 'ok' | 'error'): number {
    return this.ops.get(`${op}/${result}`) ?? 0;
  }
}

function expectCounts(e: Exposition, t: Tally, what: string): void {
  for (const op of OPS) {
    for (const result of ['ok', 'error'] as const) {
      expect(e.get('fts_operations_total', { op, result }), `${what}: fts_operations_total{op="${op}",result="${result}"}`).to.equal(t.count(op, result));
    }
    const total = t.count(op, 'ok') + t.count(op, 'error');
    const byCode = e.find('fts_operation_errors_total', { op });
    for (const s of byCode) {
      expect(s.value, `${what}: fts_operation_errors_total${JSON.stringify(s.labels)}`).to.equal(t.errors.get(`${op}/${s.labels['code']}`) ?? 0);
    }
    for (const [key, n] of t.errors) {
      const [tallied, code] = key.split('/');
      if (tallied === op) expect(e.get('fts_operation_errors_total', { op, code: code! }), `${what}: fts_operation_errors_total{op="${op}",code="${code}"}`).to.equal(n);
    }
    expect(e.get('fts_operation_duration_seconds_count', { op }), `${what}: fts_operation_duration_seconds_count{op="${op}"}`).to.equal(total);
    expect(e.get('fts_operation_duration_seconds_bucket', { op, le: '+Inf' }), `${what}: +Inf bucket of ${op}`).to.equal(total);
  }
  expect(e.get('fts_transfer_bytes_total', { direction: 'upload' }), `${what}: upload bytes`).to.equal(t.bytesUp);
  expect(e.get('fts_transfer_bytes_total', { direction: 'download' }), `${what}: download bytes`).to.equal(t.bytesDown);
  expect(e.get('fts_auth_attempts_total', { result: 'success' }), `${what}: auth successes`).to.equal(t.authOk);
  expect(e.get('fts_auth_attempts_total', { result: 'failure' }), `${what}: auth failures`).to.equal(t.authFail);
  expect(e.get('fts_connections_total'), `${what}: connections`).to.equal(t.connections);
}

/** Histogram buckets of every op are cumulative: non-decreasing in le, ending at _count. */
function expectHistogramsConsistent(e: Exposition): void {
  for (const op of OPS) {
    const buckets = e
      .find('fts_operation_duration_seconds_bucket', { op })
      .map((s) => ({ le: parseValue(s.labels['le'] ?? 'NaN'), value: s.value }))
      .sort((a, b) => a.le - b.le);
    expect(buckets.length, `${op}: bucket count`).to.be.greaterThan(10);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]?.value, `${op}: buckets cumulative`).to.be.at.least(buckets[i - 1]?.value ?? 0);
    expect(buckets[buckets.length - 1]?.le).to.equal(Infinity);
    expect(e.get('fts_operation_duration_seconds_sum', { op }), `${op}: _sum`).to.be.at.least(0);
  }
}

function payload(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** Pids of the workers that wrote audit lines (event = an operation) after line index `from`. */
function auditWorkers(lines: LogLine[], from = 0): Set<number> {
  const pids = new Set<number>();
  for (const l of lines.slice(from)) if (typeof l['event'] === 'string' && (OPS as readonly string[]).includes(l['event'])) pids.add(Number(l['worker']));
  return pids;
}

/**
 * "listening on" is logged when the FIRST worker listens; the others may join the cluster's round-robin
 * a little later. Opens unauthenticated connections (greeting, quit) until two distinct workers have
 * served one (their session-end lines name the worker), and returns how many connections that took.
 */
async function warmUp(server: TestServer): Promise<number> {
  const from = server.lines.length;
  const served = (): Set<number> => new Set(server.lines.slice(from).filter((l) => l['event'] === 'session-end').map((l) => Number(l['worker'])));
  let n = 0;
  for (; n < 60 && served().size < 2; n++) {
    await greetAndQuit(server.port);
    await waitUntil(`the session-end line of warm-up connection ${n + 1}`, () => server.lines.slice(from).filter((l) => l['event'] === 'session-end').length >= n + 1, 5_000, 10);
    if (n >= 1) await sleep(50);
  }
  expect(served().size, `workers serving connections after ${n} warm-up connections`).to.be.at.least(2);
  return n;
}

// ---------------------------------------------------------------------------------------------------------

const USER: TestUser = { user: 'metricsuser-qx7', password: 'Metrics-Pw-3Kq7' };
const OTHER: TestUser = { user: 'labelcheck-zr9', password: 'Label:Check:Pw-88' };

describe('metrics endpoint (Prometheus)', function () {
  this.timeout(90_000);

  const servers: TestServer[] = [];
  const clients: FtsClient[] = [];
  const uploaders: SlowUploader[] = [];
  const admins: AdminRun[] = [];
  /** Worker pids a test stopped with SIGSTOP: always continued before the servers are stopped. */
  const stopped = new Set<number>();
  const cleanups: Array<() => Promise<void>> = [];

  afterEach(async function () {
    this.timeout(90_000);
    continueStopped(stopped);
    await releaseAll({ uploaders, clients, servers, admins, cleanups });
  });

  async function startServer(options: ServerOptions = {}): Promise<TestServer> {
    const server = await TestServer.start({ workers: 2, users: [USER, OTHER], ...options });
    servers.push(server);
    return server;
  }

  /** A 2-worker server whose workers both take connections, and a tally that knows the warm-up connections. */
  async function startWarm(options: ServerOptions = {}): Promise<{ server: TestServer; tally: Tally }> {
    const server = await startServer(options);
    const tally = new Tally();
    tally.connections = await warmUp(server);
    return { server, tally };
  }

  async function login(server: TestServer, tally: Tally | null, user: TestUser = USER): Promise<FtsClient> {
    const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(client);
    await client.auth(user.user, user.password);
    if (tally) {
      tally.connections++;
      tally.authOk++;
    }
    return client;
  }

  /** A login with a wrong password on its own connection (AUTH_FAILED is fatal: the server closes it). */
  async function failedLogin(server: TestServer, tally: Tally, user = USER.user, password = 'Wrong-Pw-Metrics-5Tz'): Promise<void> {
    const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(client);
    tally.connections++;
    expect(await codeOf(client.auth(user, password))).to.equal('AUTH_FAILED');
    tally.authFail++;
    client.close();
  }

  /** A few operations of every kind on `client`, recorded in `tally`. Names are prefixed with `tag`. */
  async function someTraffic(client: FtsClient, tally: Tally, tag: string): Promise<void> {
    const data = payload(4_321, tag.length);
    await client.uploadBuffer(`${tag}-a.bin`, data);
    tally.op('upload', true);
    tally.bytesUp += data.length;
    expect((await client.downloadBuffer(`${tag}-a.bin`)).data.equals(data)).to.equal(true);
    tally.op('download', true);
    tally.bytesDown += data.length;
    await client.view(`${tag}-a.bin`);
    tally.op('view', true);
    await client.list();
    tally.op('list', true);
    await client.delete(`${tag}-a.bin`);
    tally.op('delete', true);
  }

  /**
   * someTraffic() on new connections, one after another, until both workers have served (seen in the
   * audit lines; at least `min` connections, at most 12). Returns the pids that served.
   */
  async function spreadTraffic(server: TestServer, tally: Tally, tag: string, min = 4): Promise<Set<number>> {
    const from = server.lines.length;
    for (let i = 0; i < 12; i++) {
      const served = auditWorkers(server.lines, from);
      if (i >= min && served.size >= 2) return served;
      await someTraffic(await login(server, tally), tally, `${tag}${i}`);
    }
    const served = auditWorkers(server.lines, from);
    expect(served.size, `workers that served 12 connections (${[...served].join(', ')})`).to.be.at.least(2);
    return served;
  }

  describe('exposition', () => {
    it('every known label set is exported at 0 on a fresh server, with HELP and the right TYPE; nothing else is non-zero but fts_workers and the last reload\'s gauges', async () => {
      const server = await startServer();
      const port = metricsPortOf(server);
      expect((await statusJson(server.adminSocket)).metricsPort, 'status --json metricsPort = the logged port').to.equal(port);
      const e = await scrape(port);

      for (const [name, type] of Object.entries(FAMILIES)) expect(e.types.get(name), `# TYPE ${name}`).to.equal(type);
      // Every fts_* sample belongs to a family with HELP and TYPE, and every sample is 0 but the gauges of workers.
      for (const name of [...e.types.keys()].filter((n) => n.startsWith('fts_'))) expect(e.helps.get(name) ?? '', `# HELP ${name}`).to.not.equal('');
      for (const s of e.samples.filter((x) => x.name.startsWith('fts_'))) {
        expect(e.familyOf(s.name), `family of ${s.name}`).to.not.equal(null);
        if (!NONZERO_AT_START.has(s.name)) expect(s.value, `${seriesKey(s)} on a fresh server`).to.equal(0);
      }
      for (const op of OPS) {
        for (const result of ['ok', 'error']) expect(e.get('fts_operations_total', { op, result }), `${op}/${result}`).to.equal(0);
        expect(e.get('fts_operation_duration_seconds_count', { op })).to.equal(0);
        expect(e.get('fts_operation_duration_seconds_sum', { op })).to.equal(0);
        for (const s of e.find('fts_operation_duration_seconds_bucket', { op })) expect(s.value, `bucket ${JSON.stringify(s.labels)}`).to.equal(0);
      }
      expect(e.find('fts_operations_total')).to.have.length(OPS.length * 2);
      // The server's own failures exist at 0 from the start (alerts on them need a series to rate); refusals appear when first counted.
      for (const op of OPS) for (const code of ['IO_ERROR', 'INTERNAL', 'NO_SPACE', 'READ_ONLY']) expect(e.get('fts_operation_errors_total', { op, code }), `${op}/${code}`).to.equal(0);
      expect(e.find('fts_operation_errors_total')).to.have.length(OPS.length * 4);
      for (const result of ['success', 'failure']) expect(e.get('fts_auth_attempts_total', { result })).to.equal(0);
      expect(e.find('fts_auth_attempts_total')).to.have.length(2);
      for (const direction of DIRECTIONS) {
        expect(e.get('fts_transfer_bytes_total', { direction })).to.equal(0);
        expect(e.get('fts_transfers_active', { direction })).to.equal(0);
      }
      expect(e.find('fts_transfer_bytes_total')).to.have.length(2);
      expect(e.find('fts_transfers_active')).to.have.length(2);
      for (const direction of DIRECTIONS) expect(e.get('fts_throttled_seconds_total', { direction })).to.equal(0);
      expect(e.find('fts_throttled_seconds_total')).to.have.length(2);
      expect(e.get('fts_connections_total')).to.equal(0);
      expect(e.get('fts_sessions_active')).to.equal(0);
      expect(e.get('fts_workers')).to.equal(2);
      expect(e.get('fts_worker_restarts_total')).to.equal(0);
      expect(e.get('fts_draining')).to.equal(0);
      expect(e.get('fts_scrape_errors_total')).to.equal(0);
      expect(e.get('fts_config_last_reload_successful'), 'the files read at start count as applied').to.equal(1);
      expect(e.get('fts_config_last_reload_success_timestamp_seconds')).to.be.within(Date.now() / 1000 - 120, Date.now() / 1000);
      // The storage's file system as statfs tells it (free space moves a little with everything else here).
      const fs = await statfs(server.storage);
      expect(e.get('fts_storage_size_bytes'), 'size').to.equal(fs.blocks * fs.bsize);
      expect(e.get('fts_storage_free_bytes'), 'free bytes').to.be.closeTo(fs.bavail * fs.bsize, 0.05 * fs.blocks * fs.bsize);
      expect(e.get('fts_storage_free_inodes'), 'free inodes').to.be.closeTo(fs.ffree, 0.05 * fs.files + 1000);
      expect(e.get('fts_storage_inodes'), 'inodes').to.equal(fs.files);
      expect(e.get('fts_storage_up')).to.equal(1);
      expect(e.get('fts_start_time_seconds'), 'the node started just now').to.be.within(Date.now() / 1000 - 120, Date.now() / 1000);
      expect(e.find('fts_tls_certificate_expiry_timestamp_seconds'), 'no certificate metric without TLS').to.deep.equal([]);
      expectHistogramsConsistent(e);
    });

    it('a storage that goes away (unmounted: its empty mount point stays; or removed) is fts_storage_up 0 with the free-space gauges NaN (not their last values), status says why, ready is not, usage and partials fail instead of reporting nothing; logins fail IO_ERROR at warn, not counted as failed logins', async () => {
      const server = await startServer({ workers: 1 });
      const port = metricsPortOf(server);
      // An unmount: what the storage held is gone, its empty mount point stays (on the parent file system).
      const away = `${server.storage}-away`;
      const unmount = async (): Promise<void> => {
        await mkdir(away);
        for (const entry of await readdir(server.storage)) await rename(path.join(server.storage, entry), path.join(away, entry));
      };
      const remount = async (): Promise<void> => {
        for (const entry of await readdir(server.storage)) await rm(path.join(server.storage, entry), { recursive: true, force: true });
        for (const entry of await readdir(away)) await rename(path.join(away, entry), path.join(server.storage, entry));
        await rm(away, { recursive: true, force: true });
      };
      await unmount();
      cleanups.push(async () => {
        if (await readdir(away).then(() => true, () => false)) await remount();
      });
      const e = await waitUntil('fts_storage_up 0', async () => {
        const x = await scrape(port, STORAGE_SPACE);
        return x.get('fts_storage_up') === 0 ? x : undefined;
      }, 10_000, 200);
      for (const name of STORAGE_SPACE) expect(e.get(name), `${name} while the storage is gone`).to.be.NaN;
      const status = await runAdmin(server.adminSocket, ['status']);
      expect(status.code).to.equal(0);
      expect(status.stdout.trimEnd().split('\n').at(-1)).to.match(/^storage unavailable: .*\.fts\/scram-salt-key: no such file or directory \(ENOENT\)$/);
      expect((await statusJson(server.adminSocket)).storage?.ok).to.equal(false);
      const ready = await runAdmin(server.adminSocket, ['ready']);
      expect([ready.code, ready.stderr]).to.deep.equal([1, `fts-admin: not ready: the storage is unavailable: ${server.storage}/.fts/scram-salt-key: no such file or directory (ENOENT)\n`]);
      for (const cmd of ['usage', 'partials']) {
        const r = await runAdmin(server.adminSocket, [cmd]);
        expect([r.code, r.stdout, r.stderr], `${cmd}: not "nothing stored"`).to.deep.equal([1, '', `fts-admin: the storage is unavailable: ${server.storage}/.fts/scram-salt-key: no such file or directory (ENOENT)\n`]);
      }

      const client = await FtsClient.connect({ port: server.port });
      clients.push(client);
      const err = await client.auth(USER.user, USER.password).then(() => null, (x: unknown) => x);
      expect(err, String(err)).to.be.instanceOf(FtsError);
      expect((err as FtsError).code).to.equal('IO_ERROR');
      expect((err as FtsError).message).to.equal('the storage is unavailable; try again later');
      const line = await waitUntil('the auth line', () => server.lines.find((l) => l['event'] === 'auth' && l['code'] === 'IO_ERROR'), 5_000, 50);
      expect(line).to.include({ level: 'warn', reason: 'the storage is unavailable; try again later' });
      expect((await scrape(port, STORAGE_SPACE)).get('fts_auth_attempts_total', { result: 'failure' }), 'not a failed login').to.equal(0);

      await remount();
      await waitUntil('fts_storage_up 1', async () => (await scrape(port)).get('fts_storage_up') === 1, 10_000, 200);
      expect((await runAdmin(server.adminSocket, ['ready'])).code).to.equal(0);
      expect((await runAdmin(server.adminSocket, ['status'])).stdout).to.not.include('storage unavailable');
    });

    it('serves text format 0.0.4 at /metrics; other paths are 404, other methods 405, HEAD has no body', async () => {
      const server = await startServer({ workers: 1 });
      const port = metricsPortOf(server);
      const ok = await get(port, '/metrics');
      expect(ok.status).to.equal(200);
      expect(ok.contentType).to.match(/^text\/plain; ?version=0\.0\.4/);
      expect((await get(port, '/metrics?debug=1')).status, '/metrics with a query string').to.equal(200);
      for (const p of ['/other', '/', '/metrics/extra', '/favicon.ico']) expect((await get(port, p)).status, `GET ${p}`).to.equal(404);
      expect((await get(port, '/metrics', 'POST')).status, 'POST /metrics').to.equal(405);
      const head = await get(port, '/metrics', 'HEAD');
      expect(head.status).to.equal(200);
      expect(head.body).to.equal('');
    });

    it('past 32 connections the endpoint closes new ones; concurrent scrapes all succeed and each sees what happened before it was sent', async () => {
      const server = await startServer({ workers: 1 });
      const port = metricsPortOf(server);
      // First, on a fresh endpoint: no keep-alive connection of this process's fetch() is open yet.
      const held: net.Socket[] = [];
      let closed = 0;
      try {
        for (let i = 0; i < 40; i++) {
          const socket = net.connect({ host: '127.0.0.1', port });
          socket.on('error', () => undefined);
          socket.on('close', () => closed++);
          held.push(socket);
          await new Promise<void>((resolve) => socket.once('connect', () => resolve()).once('close', () => resolve()));
        }
        await waitUntil('the connections past 32 to be closed', async () => (closed >= 8 ? true : undefined), 5_000, 50);
        await sleep(300);
        expect(closed, 'connections closed by the endpoint').to.equal(8);
      } finally {
        for (const socket of held) socket.destroy();
      }

      for (let round = 1; round <= 3; round++) {
        const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
        client.close();
        const all = await waitUntil('24 concurrent scrapes to succeed', async () => {
          try {
            return await Promise.all(Array.from({ length: 24 }, () => scrape(port)));
          } catch {
            return undefined; // the held sockets' slots are given back as their closes arrive
          }
        }, 5_000, 100);
        for (const e of all) expect(e.get('fts_connections_total'), `round ${round}`).to.be.at.least(round);
      }
    });

    it('32 connections that send nothing (or half a request) are cut after 10 s, and scrapes get through again', async () => {
      const server = await startServer({ workers: 1 });
      const port = metricsPortOf(server);
      const held: Array<{ socket: net.Socket; closedAt: number | null }> = [];
      const opened = Date.now();
      try {
        for (let i = 0; i < 32; i++) {
          const socket = net.connect({ host: '127.0.0.1', port });
          const entry = { socket, closedAt: null as number | null };
          socket.on('error', () => undefined);
          socket.on('close', () => (entry.closedAt = Date.now()));
          held.push(entry);
          await new Promise<void>((resolve) => socket.once('connect', () => resolve()).once('close', () => resolve()));
          // Half of them start a request and never finish its headers.
          if (i % 2 === 1) socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
        }
        await sleep(500);
        expect(held.filter((h) => h.closedAt !== null).length, 'none closed yet').to.equal(0);
        let refused = 0;
        await scrape(port).catch(() => refused++);
        expect(refused, 'a scrape while 32 connections are held is refused').to.equal(1);
        await waitUntil('the 32 silent connections to be cut', async () => (held.every((h) => h.closedAt !== null) ? true : undefined), 20_000, 100);
        for (const h of held) expect(h.closedAt! - opened, 'cut after about 10 s').to.be.within(9_000, 20_000);
        expect((await scrape(port)).get('fts_workers'), 'a scrape afterwards').to.equal(1);
      } finally {
        for (const h of held) h.socket.destroy();
      }
    });

    it('the fts_* families pass `promtool check metrics` (exit 0, no output)', async () => {
      const server = await startServer();
      const tally = new Tally();
      const c = await login(server, tally);
      await someTraffic(c, tally, 'lint');
      const e = await scrape(metricsPortOf(server));
      const fts = e.ftsOnly();
      expect(fts.split('\n').filter((l) => l.startsWith('fts_')).length).to.be.greaterThan(100);
      const r = await runPromtool(['check', 'metrics'], { stdin: fts });
      expect({ code: r.code, output: r.stdout + r.stderr }, 'promtool check metrics on the fts_* lines').to.deep.equal({ code: 0, output: '' });

      // The whole exposition fails only because of prom-client's default nodejs_* metrics (known; excluded above).
      const full = await runPromtool(['check', 'metrics'], { stdin: e.text });
      const complaints = (full.stdout + full.stderr).split('\n').filter((l) => l.trim() !== '');
      expect(complaints.filter((l) => /\bfts_/.test(l)), 'promtool complaints about fts_* in the full exposition').to.deep.equal([]);
    });
  });

  describe('counts', () => {
    it('exact counts after transfers spread over 2 workers; gauges summed across workers, not multiplied', async () => {
      const { server, tally } = await startWarm();
      const port = metricsPortOf(server);
      const firstLine = server.lines.length;

      // Six separate connections: the cluster's round-robin spreads them over both workers.
      const sizes = [1, 1_000, 65_537, 300_000, 1_048_583, 17];
      const clientsHere: FtsClient[] = [];
      for (let i = 0; i < sizes.length; i++) clientsHere.push(await login(server, tally));

      await Promise.all(
        clientsHere.map(async (c, i) => {
          const size = sizes[i] ?? 0;
          const data = payload(size, i);
          const name = `file-${i}.bin`;
          await c.uploadBuffer(name, data);
          tally.op('upload', true);
          tally.bytesUp += size;
          const got = await c.downloadBuffer(name);
          expect(sha256(got.data)).to.equal(sha256(data));
          tally.op('download', true);
          tally.bytesDown += size;
          if (i % 2 === 0) {
            await c.downloadBuffer(name);
            tally.op('download', true);
            tally.bytesDown += size;
          }
          const head = await c.view(name);
          expect(head.length).to.equal(Math.min(size, 1024));
          tally.op('view', true); // a view moves bytes but is not counted in fts_transfer_bytes_total
          await c.list();
          tally.op('list', true);
          if (i < 3) {
            await c.delete(name);
            tally.op('delete', true);
          } else {
            await c.rename(name, `renamed-${name}`);
            tally.op('rename', true);
          }
        }),
      );
      const last = clientsHere[clientsHere.length - 1]!;
      expect(await codeOf(last.downloadBuffer('no-such-file.bin'))).to.equal('NOT_FOUND');
      tally.op('download', 'NOT_FOUND');
      expect(await codeOf(last.delete('no-such-file.bin'))).to.equal('NOT_FOUND');
      tally.op('delete', 'NOT_FOUND');
      expect(await codeOf(last.rename('no-such-file.bin', 'x.bin'))).to.equal('NOT_FOUND');
      tally.op('rename', 'NOT_FOUND');
      await failedLogin(server, tally);

      const workers = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);
      const served = auditWorkers(server.lines, firstLine);
      expect(served.size, `distinct worker pids in the audit lines (workers: ${workers.join(', ')})`).to.be.at.least(2);
      for (const pid of served) expect(workers).to.include(pid);

      const e = await scrape(port);
      expectCounts(e, tally, 'after the traffic');
      expect(tally.count('upload', 'ok')).to.equal(6);
      expect(tally.bytesUp).to.equal(sizes.reduce((a, b) => a + b, 0));
      expectHistogramsConsistent(e);
      expect(e.get('fts_workers')).to.equal(2);
      expect(e.get('fts_sessions_active'), 'authenticated clients open now').to.equal(clientsHere.length);
      for (const direction of DIRECTIONS) expect(e.get('fts_transfers_active', { direction })).to.equal(0);
      expect(e.get('fts_worker_restarts_total')).to.equal(0);
      expect(e.get('fts_scrape_errors_total')).to.equal(0);

      // Two clients leave: the gauge follows (summed over workers), counters do not move.
      await clientsHere[0]!.quit();
      await clientsHere[1]!.quit();
      const after = await waitUntil(
        'fts_sessions_active to drop by 2',
        async () => {
          const x = await scrape(port);
          return x.get('fts_sessions_active') === clientsHere.length - 2 ? x : undefined;
        },
        10_000,
        100,
      );
      expectCounts(after, tally, 'after two clients quit');
    });

    it('fts_operation_errors_total counts each failure under its code: a refusal, a name refused before its handler, a kick, and "disconnected" for a client that left', async () => {
      const server = await startServer({ workers: 1 });
      const port = metricsPortOf(server);
      const client = await login(server, null);
      expect(await codeOf(client.downloadBuffer('missing.bin'))).to.equal('NOT_FOUND');
      expect(await codeOf(client.delete('missing.bin'))).to.equal('NOT_FOUND');
      const raws: RawClient[] = [];
      cleanups.push(async () => raws.forEach((r) => r.close()));
      const rawLogin = async (): Promise<RawClient> => {
        const raw = await RawClient.login(server.port, USER.user, USER.password);
        raws.push(raw);
        return raw;
      };
      const bad = await rawLogin();
      const refused = await bad.request({ id: 1, op: 'upload', name: '../escape.bin', size: 0, sha256: sha256(Buffer.alloc(0)) });
      expect(refused?.['code']).to.equal('BAD_NAME');

      const half = (name: string): Buffer => {
        const whole = uploadBytes(5, name, payload(300_000, 7));
        return whole.subarray(0, Math.floor(whole.length / 2));
      };
      const inProgress = async (name: string): Promise<string> => {
        let id: string | undefined;
        await waitUntil(`the upload of ${name} in progress`, async () => {
          id = (await sessionsJson(server.adminSocket)).find((x) => x.file === name && x.bytes > 0)?.id;
          return id !== undefined;
        }, 10_000, 50);
        return id!;
      };
      const gone = await rawLogin();
      await gone.write(half('gone.bin'));
      await inProgress('gone.bin');
      gone.close();
      const kicked = await rawLogin();
      await kicked.write(half('kicked.bin'));
      expect((await runAdmin(server.adminSocket, ['kick', await inProgress('kicked.bin')])).code).to.equal(0);

      const expected: Record<string, number> = { 'download/NOT_FOUND': 1, 'delete/NOT_FOUND': 1, 'upload/BAD_NAME': 1, 'upload/disconnected': 1, 'upload/KICKED': 1 };
      const e = await waitUntil('the five failures counted', async () => {
        const x = await scrape(port);
        return x.get('fts_operations_total', { op: 'upload', result: 'error' }) === 3 ? x : undefined;
      }, 10_000, 100);
      for (const s of e.find('fts_operation_errors_total')) {
        const key = `${s.labels['op']}/${s.labels['code']}`;
        expect(s.value, `fts_operation_errors_total{${key}}`).to.equal(expected[key] ?? 0);
      }
      for (const key of Object.keys(expected)) {
        const [op, code] = key.split('/');
        expect(e.find('fts_operation_errors_total', { op: op!, code: code! }), key).to.have.length(1);
      }
      for (const op of ['upload', 'download', 'delete']) {
        const byCode = e.find('fts_operation_errors_total', { op }).reduce((n, x) => n + x.value, 0);
        expect(byCode, `errors of ${op} by code sum to fts_operations_total{result="error"}`).to.equal(e.get('fts_operations_total', { op, result: 'error' }));
      }
    });

    it('with --proxy-protocol, connections without a valid PROXY v2 header count as fts_rejections_total{reason="proxy_header"}, each one though the log line is rate-limited', async () => {
      const server = await startServer({ args: ['--proxy-protocol'] });
      const port = metricsPortOf(server);
      expect((await scrape(port)).get('fts_rejections_total', { reason: 'proxy_header' }), 'on a fresh server').to.equal(0);
      const n = 5;
      for (let i = 0; i < n; i++) {
        // A client that reached the port directly: its first bytes are a header frame, not a PROXY header.
        const c = await RawClient.connect(server.port);
        c.write(encodeHeader({ op: 'noop', id: 1 }));
        expect(await c.waitClosed(10_000), `connection ${i + 1} closed`).to.equal(true);
        c.close();
      }
      await waitUntil(`${n} proxy_header rejections`, async () => ((await scrape(port)).get('fts_rejections_total', { reason: 'proxy_header' }) === n ? true : undefined), 10_000, 100);
      const e = await scrape(port);
      for (const reason of ['max_connections', 'per_ip_limit', 'startups', 'banned', 'per_user_limit', 'no_descriptor']) expect(e.get('fts_rejections_total', { reason }), reason).to.equal(0);
      expect(server.lines.filter((l) => l['reason'] === 'proxy_header').length, 'log lines: at most one per worker a minute').to.be.at.most(2);
    });

    it('fts_config_last_reload_successful is 0 after a refused reload (admin or SIGHUP, logged at error with its source) and 1 again after one applied, which moves the timestamp', async () => {
      const server = await startServer({ workers: 1 });
      const port = metricsPortOf(server);
      const started = (await scrape(port)).get('fts_config_last_reload_success_timestamp_seconds');
      const good = await readFile(server.usersFile, 'utf8');
      await writeFile(server.usersFile, `${good}this line has no separator\n`);
      const refused = await runAdmin(server.adminSocket, ['reload']);
      expect(refused.code, refused.stdout).to.equal(1);
      const logged = await server.waitForLog((l) => l.level === 'error' && String(l.msg).startsWith('reload refused: '));
      expect(logged['source']).to.equal('admin');
      let e = await scrape(port);
      expect(e.get('fts_config_last_reload_successful'), 'after the refused reload').to.equal(0);
      expect(e.get('fts_config_last_reload_success_timestamp_seconds'), 'the files in force are still those of the start').to.equal(started);

      await sleep(1_100); // a whole second later, so that the timestamp can move
      await writeFile(server.usersFile, good);
      const applied = await runAdmin(server.adminSocket, ['reload']);
      expect(applied.code, applied.stderr).to.equal(0);
      expect((await server.waitForLog((l) => l.msg === 'users file reloaded'))['source']).to.equal('admin');
      e = await scrape(port);
      expect(e.get('fts_config_last_reload_successful'), 'after the applied reload').to.equal(1);
      expect(e.get('fts_config_last_reload_success_timestamp_seconds')).to.be.greaterThan(started);

      await writeFile(server.usersFile, `${good}this line has no separator\n`);
      server.signal('SIGHUP');
      const hup = await server.waitForLog((l) => l.level === 'error' && l['source'] === 'SIGHUP');
      expect(String(hup.msg)).to.match(/^reload refused: /);
      expect(hup['signal']).to.equal('SIGHUP');
      expect((await scrape(port)).get('fts_config_last_reload_successful'), 'after the refused SIGHUP').to.equal(0);
    });

    it('a reload refused while an earlier one waits for a stopped worker\'s confirmation leaves the gauge at 0', async () => {
      const server = await startServer({ workers: 2 });
      const port = metricsPortOf(server);
      const good = await readFile(server.usersFile, 'utf8');
      const [victim] = server.workerPids();
      process.kill(victim!, 'SIGSTOP');
      stopped.add(victim!);
      const slow = startAdmin(server.adminSocket, ['reload'], 30_000); // applied, then waits up to 5 s for the stopped worker
      admins.push(slow);
      await sleep(1_000);
      await writeFile(server.usersFile, `${good}this line has no separator\n`);
      const refused = await runAdmin(server.adminSocket, ['reload']);
      expect(refused.code, refused.stdout).to.equal(1);
      const r = await slow.done;
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr, 'the slow reload waited for the stopped worker').to.match(/did not confirm the reload/);
      expect((await scrape(port)).get('fts_config_last_reload_successful'), 'the last reload was the refused one').to.equal(0);
      process.kill(victim!, 'SIGCONT');
      stopped.delete(victim!);
    });

    it('an open upload is counted in fts_transfers_active and fts_sessions_active; fts_draining is 1 during a drain', async () => {
      const server = await startServer();
      const port = metricsPortOf(server);
      const idle = await login(server, null);
      const up = await SlowUploader.start({ port: server.port, user: USER.user, password: USER.password, name: 'slow.bin', size: 1024 * 1024 });
      uploaders.push(up);
      await up.waitForSent(256 * 1024);

      const during = await waitUntil(
        'the slow upload to show in fts_transfers_active',
        async () => {
          const x = await scrape(port);
          return x.get('fts_transfers_active', { direction: 'upload' }) === 1 ? x : undefined;
        },
        10_000,
        100,
      );
      expect(during.get('fts_transfers_active', { direction: 'download' })).to.equal(0);
      expect(during.get('fts_sessions_active')).to.equal(2);
      expect(during.get('fts_draining')).to.equal(0);

      // The paused upload holds the drain open (30 s grace) for as long as the test needs.
      const admin = startAdmin(server.adminSocket, ['drain', '--timeout', '30'], 60_000);
      admins.push(admin);
      await waitUntil('status.draining', async () => (await statusJson(server.adminSocket)).draining, 10_000, 100);
      const draining = await scrape(port);
      expect(draining.get('fts_draining'), 'fts_draining during the drain').to.equal(1);
      expect(draining.get('fts_transfers_active', { direction: 'upload' })).to.equal(1);

      idle.close();
      up.finish();
      const o = await up.outcome(20_000);
      expect(o.kind === 'reply' ? o.header['status'] : o.kind, 'the upload finishes during the drain').to.equal('ok');
      const r = await admin.done;
      expect(r.code, `fts-admin drain: ${r.stderr}`).to.equal(0);
      expect(await server.waitForExit(15_000)).to.deep.equal({ code: 0, signal: null });
      // The endpoint is gone with the server.
      let refused = false;
      try {
        await get(port, '/metrics');
      } catch {
        refused = true;
      }
      expect(refused, 'nothing answers on the metrics port after the server stopped').to.equal(true);
    });
  });

  describe('counters never go backwards', () => {
    it('across a rolling restart (fts-admin restart-workers) and a SIGKILLed worker; fts_worker_restarts_total counts the crash', async () => {
      const { server, tally } = await startWarm();
      const port = metricsPortOf(server);
      await spreadTraffic(server, tally, 'pre');
      await failedLogin(server, tally);
      for (const c of clients.splice(0)) c.close();

      const before = await scrape(port);
      expectCounts(before, tally, 'before the restart');
      const pidsBefore = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);

      const r = await runAdmin(server.adminSocket, ['restart-workers'], 60_000);
      expect(r.code, `restart-workers: ${r.stderr}`).to.equal(0);
      const pidsAfter = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);
      for (const pid of pidsAfter) expect(pidsBefore, 'every worker was replaced').to.not.include(pid);

      const afterRestart = await scrape(port);
      expectNotBackwards(before, afterRestart, 'across restart-workers');
      expect(Object.fromEntries(workerCounters(afterRestart)), 'counters of the traffic before the restart, unchanged').to.deep.equal(Object.fromEntries(workerCounters(before)));
      expectCounts(afterRestart, tally, 'after restart-workers');
      expect(afterRestart.get('fts_worker_restarts_total'), 'a rolling restart is not a crash').to.equal(0);
      expect(afterRestart.get('fts_workers')).to.equal(2);

      // New traffic lands on the new workers and adds to the carried-over totals.
      for (let i = 0; i < 2; i++) await someTraffic(await login(server, tally), tally, `mid${i}`);
      for (const c of clients.splice(0)) c.close();
      await waitUntil('sessions to close', async () => (await scrape(port)).get('fts_sessions_active') === 0, 10_000, 100);
      const beforeKill = await scrape(port);
      expectCounts(beforeKill, tally, 'before the SIGKILL');
      const restartsBefore = beforeKill.get('fts_worker_restarts_total');

      const victim = pidsAfter[0]!;
      process.kill(victim, 'SIGKILL');
      await waitUntil(
        'the killed worker to be replaced',
        async () => {
          const st = await statusJson(server.adminSocket);
          return st.workers.length === 2 && !st.workers.some((w) => w.pid === victim) && st.workers.every((w) => w.responding);
        },
        20_000,
        100,
      );
      const afterKill = await scrape(port);
      expectNotBackwards(beforeKill, afterKill, 'after a SIGKILL');
      expectCounts(afterKill, tally, 'after the SIGKILL');
      expect(afterKill.get('fts_worker_restarts_total'), 'fts_worker_restarts_total after one crash').to.equal(restartsBefore + 1);
      expect(afterKill.get('fts_workers')).to.equal(2);

      // And the counting goes on from there.
      await someTraffic(await login(server, tally), tally, 'post');
      const end = await scrape(port);
      expectNotBackwards(afterKill, end, 'after more traffic');
      expectCounts(end, tally, 'after traffic on the respawned workers');
    });

    it('every worker SIGKILLed at once: the counters of all of them are kept (their folds into the retired total do not overwrite each other)', async () => {
      const { server, tally } = await startWarm({ workers: 3 });
      const port = metricsPortOf(server);
      await spreadTraffic(server, tally, 'all');
      for (const c of clients.splice(0)) c.close();
      await waitUntil('sessions to close', async () => (await scrape(port)).get('fts_sessions_active') === 0, 10_000, 100);
      const before = await scrape(port);
      expectCounts(before, tally, 'before the SIGKILLs');
      const victims = (await statusJson(server.adminSocket)).workers.map((w) => w.pid);
      for (const pid of victims) process.kill(pid, 'SIGKILL');
      await waitUntil(
        'three new workers answering',
        async () => {
          const st = await statusJson(server.adminSocket);
          return st.workers.length === 3 && st.workers.every((w) => w.responding && !victims.includes(w.pid));
        },
        30_000,
        100,
      );
      const after = await scrape(port);
      expectNotBackwards(before, after, 'after every worker was killed');
      expectCounts(after, tally, 'after every worker was killed');
    });

    it('a scrape while a worker is SIGSTOPped answers 200 within 10 s with its last known counters and counts the miss', async () => {
      const { server, tally } = await startWarm();
      const port = metricsPortOf(server);
      await spreadTraffic(server, tally, 's');
      const before = await scrape(port);
      expectCounts(before, tally, 'before SIGSTOP');
      expect(before.get('fts_scrape_errors_total')).to.equal(0);

      const victim = (await statusJson(server.adminSocket)).workers[0]!.pid;
      stopped.add(victim);
      process.kill(victim, 'SIGSTOP');
      try {
        const t0 = Date.now();
        const r = await get(port, '/metrics');
        const elapsed = Date.now() - t0;
        expect(r.status).to.equal(200);
        expect(elapsed, 'scrape time with a stopped worker (ms)').to.be.below(10_000);
        const during = new Exposition(r.body);
        expect(during.get('fts_scrape_errors_total'), 'fts_scrape_errors_total').to.be.greaterThan(0);
        expectNotBackwards(before, during, 'while a worker is stopped');
        expectCounts(during, tally, 'while a worker is stopped');
        expect(during.get('fts_workers')).to.equal(2);
      } finally {
        process.kill(victim, 'SIGCONT');
        stopped.delete(victim);
      }
      const after = await scrape(port);
      expectNotBackwards(before, after, 'after SIGCONT');
      expectCounts(after, tally, 'after SIGCONT');
      expect(after.get('fts_scrape_errors_total')).to.be.greaterThan(0);
    });

    it('a worker still starting is not asked and is no scrape error; counters of the worker it replaces are kept', async () => {
      const hold = await WorkerHold.create();
      cleanups.push(() => hold.dispose());
      const { server, tally } = await startWarm({ env: hold.env });
      const port = metricsPortOf(server);
      await spreadTraffic(server, tally, 'h');
      for (const c of clients.splice(0)) c.close();
      await waitUntil('sessions to close', async () => (await scrape(port)).get('fts_sessions_active') === 0, 10_000, 100);
      const before = await scrape(port);
      expectCounts(before, tally, 'before');
      expect(before.get('fts_scrape_errors_total')).to.equal(0);

      // The killed worker's respawn is held before it listens: a worker that is starting.
      await hold.hold();
      const victim = (await statusJson(server.adminSocket)).workers[0]!.pid;
      const forkedBefore = server.lines.filter((l) => l.msg === 'worker started').length;
      process.kill(victim, 'SIGKILL');
      await waitUntil('the respawned worker to be forked', () => server.lines.filter((l) => l.msg === 'worker started').length > forkedBefore, 15_000, 10);
      let during: Exposition;
      try {
        during = await scrape(port);
      } finally {
        await hold.release();
      }
      expect(during.get('fts_scrape_errors_total'), 'fts_scrape_errors_total with a worker starting').to.equal(0);
      expect(server.lines.some((l) => l.msg === 'worker did not answer the metrics scrape in time'), 'a miss was logged').to.equal(false);
      expect(during.get('fts_workers'), 'the starting worker is alive').to.equal(2);
      expectNotBackwards(before, during, 'while a worker starts');
      expectCounts(during, tally, 'while a worker starts');

      await waitUntil('the respawned worker to answer', async () => {
        const st = await statusJson(server.adminSocket);
        return st.workers.length === 2 && !st.workers.some((w) => w.pid === victim) && st.workers.every((w) => w.responding);
      }, 20_000, 100);
      const after = await scrape(port);
      expectNotBackwards(during, after, 'once the worker listens');
      expectCounts(after, tally, 'once the worker listens');
      expect(after.get('fts_scrape_errors_total')).to.equal(0);
    });

    it('regression (fixed): counters jump up then go backwards when a worker dies while a scrape waits for a stopped worker', async () => {
      // Repro: metrics-endpoint.ts gather() collects the answers of all workers with Promise.all and only
      // then uses them. If worker B answers, then dies (its 'disconnect' folds its last known counters into
      // the retired total) while the scrape still waits up to 2 s for a stopped worker A, the scrape returns
      // B's answer AND the retired copy of B: B is counted twice. The next scrape counts B once again.
      const { server, tally } = await startWarm();
      const port = metricsPortOf(server);
      const served = await spreadTraffic(server, tally, 'r');
      for (const c of clients.splice(0)) c.close();
      const st = await statusJson(server.adminSocket);
      expect(st.workers).to.have.length(2);
      // A is stopped; B, which has counts of its own, is killed.
      const [a, b] = [st.workers[0]!.pid, st.workers[1]!.pid];
      expect(served.has(b), `worker ${b} served some of the traffic`).to.equal(true);
      const before = await scrape(port);
      expectCounts(before, tally, 'before');

      stopped.add(a);
      process.kill(a, 'SIGSTOP');
      let during: Exposition;
      try {
        const pending = scrape(port); // waits 2 s for A; B answers at once
        await sleep(700);
        process.kill(b, 'SIGKILL');
        during = await pending;
      } finally {
        process.kill(a, 'SIGCONT');
        stopped.delete(a);
      }
      await waitUntil(
        'the killed worker to be replaced',
        async () => {
          const x = await statusJson(server.adminSocket);
          return x.workers.length === 2 && !x.workers.some((w) => w.pid === b) && x.workers.every((w) => w.responding);
        },
        20_000,
        100,
      );
      const after = await scrape(port);
      expect(during.get('fts_connections_total'), 'fts_connections_total in the scrape that overlapped the crash (expected: unchanged)').to.equal(before.get('fts_connections_total'));
      expectCounts(during, tally, 'the scrape that overlapped the crash');
      expectNotBackwards(during, after, 'from the overlapping scrape to the next one');
      expectCounts(after, tally, 'the next scrape');
    });
  });

  describe('labels and exposure', () => {
    it('labels never carry a user name, a file name or an address; label values are the bounded enums', async () => {
      const server = await startServer();
      const tally = new Tally();
      const names = ['Secret-Report-Q3.pdf', 'zz-label-probe 7.txt', 'ünïcødé-näme.bin'];
      const c = await login(server, tally, OTHER);
      for (const name of names) {
        await c.uploadBuffer(name, payload(100, 1));
        await c.view(name);
      }
      expect(await codeOf(c.downloadBuffer('missing-probe-file.bin'))).to.equal('NOT_FOUND');
      await failedLogin(server, tally, 'unknown-user-probe', 'whatever-Pw-1');
      const e = await scrape(metricsPortOf(server));
      for (const needle of [USER.user, OTHER.user, 'unknown-user-probe', ...names, 'missing-probe-file.bin', '127.0.0.1']) {
        expect(e.text.includes(needle), `exposition contains ${JSON.stringify(needle)}`).to.equal(false);
      }
      const allowed: Record<string, ReadonlySet<string>> = {
        op: new Set(OPS),
        result: new Set(['ok', 'error', 'success', 'failure']),
        direction: new Set(DIRECTIONS),
        // The stable codes of PROTOCOL.md's table, and a client that left mid-request.
        code: new Set([...Object.keys(ERROR_CODES), 'disconnected']),
      };
      // The upload hook's runs have results of their own.
      const hookResults = new Set(['ok', 'failed', 'timeout', 'killed', 'dropped', 'unrun']);
      for (const s of e.samples.filter((x) => x.name.startsWith('fts_'))) {
        for (const [k, v] of Object.entries(s.labels)) {
          const values = s.name === 'fts_upload_hooks_total' && k === 'result' ? hookResults : allowed[k];
          if (k === 'le') expect(Number.isNaN(parseValue(v)), `le="${v}"`).to.equal(false);
          else if (values) expect(values.has(v), `${s.name}{${k}="${v}"}`).to.equal(true);
          // Any other label (e.g. a refusal reason) must be an enum-like token, not free text.
          else expect(v, `${s.name}{${k}="${v}"}`).to.match(/^[a-z][a-z0-9_]{0,31}$/);
        }
      }
    });

    it('--metrics-port off: status metricsPort null, no metrics log line, nothing but the service port listens', async () => {
      // Control: with the endpoint on, the node listens on exactly the service port and the metrics port (127.0.0.1).
      const on = await startServer();
      const onStatus = await statusJson(on.adminSocket);
      const onSockets = await listeningSockets([on.pid, ...onStatus.workers.map((w) => w.pid)]);
      expect(onSockets.map((s) => s.port).sort((x, y) => x - y)).to.deep.equal([on.port, metricsPortOf(on)].sort((x, y) => x - y));
      expect(onSockets.find((s) => s.port === metricsPortOf(on))?.address, 'metrics endpoint bound to --metrics-host (default 127.0.0.1)').to.equal('127.0.0.1');

      const off = await startServer({ args: ['--metrics-port', 'off'] });
      const st = await statusJson(off.adminSocket);
      expect(st.metricsPort).to.equal(null);
      expect(off.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on')), "no 'metrics on' log line").to.equal(false);
      const sockets = await listeningSockets([off.pid, ...st.workers.map((w) => w.pid)]);
      expect(sockets.map((s) => s.port), 'TCP ports the server listens on').to.deep.equal([off.port]);
      // The service still works.
      const c = await login(off, null);
      await c.list();
    });
  });

  describe('deploy/prometheus', () => {
    const dir = path.join(REPO_ROOT, 'deploy', 'prometheus');

    it('promtool check config (with its rule files), check rules and test rules pass', async () => {
      const config = await runPromtool(['check', 'config', path.join('deploy', 'prometheus', 'prometheus.yml')]);
      expect(config.code, `promtool check config:\n${config.stdout}${config.stderr}`).to.equal(0);
      expect(config.stdout, 'check config found the rule file').to.match(/SUCCESS: 1 rule files found/);
      const rules = await runPromtool(['check', 'rules', path.join('deploy', 'prometheus', 'fts-alerts.yml')]);
      expect(rules.code, `promtool check rules:\n${rules.stdout}${rules.stderr}`).to.equal(0);
      const unit = await runPromtool(['test', 'rules', 'fts-alerts.test.yml'], { cwd: dir });
      expect(unit.code, `promtool test rules:\n${unit.stdout}${unit.stderr}`).to.equal(0);
    });

    it('prometheus.yml scrapes job "fts" every 15 s with a 10 s timeout; every alert has a severity, a summary and a description', async () => {
      const config = await readFile(path.join(dir, 'prometheus.yml'), 'utf8');
      expect(config).to.match(/job_name:\s*['"]?fts['"]?\s*$/m);
      expect(config).to.match(/^\s*scrape_interval:\s*15s\s*$/m);
      expect(config).to.match(/^\s*scrape_timeout:\s*10s\s*$/m);
      expect(config).to.match(/^\s*-\s*['"]?127\.0\.0\.1:9421['"]?\s*$/m);
      expect(config).to.match(/^\s*rule_files:\s*$/m);

      const rules = await readFile(path.join(dir, 'fts-alerts.yml'), 'utf8');
      const alerts = rules.split(/^\s*- alert:/m).slice(1);
      expect(alerts.length).to.be.at.least(5);
      const text = alerts.join('\n');
      for (const needle of ['fts_worker_restarts_total', 'fts_auth_attempts_total{result="failure"}', 'fts_draining == 1', 'fts_scrape_errors_total', 'up{job="fts"} == 0']) {
        expect(text, `an alert on ${needle}`).to.include(needle);
      }
      expect(text).to.match(/fts_draining == 1\s*\n\s*for:\s*10m/);
      for (const a of alerts) {
        const name = a.split('\n')[0]?.trim();
        expect(a, `${name}: expr`).to.match(/^\s*expr:/m);
        expect(a, `${name}: severity label`).to.match(/^\s*severity:\s*(critical|warning|info)\s*$/m);
        expect(a, `${name}: summary`).to.match(/^\s*summary:\s*\S/m);
        expect(a, `${name}: description`).to.match(/^\s*description:\s*\S/m);
      }
    });

    it('the rules and the Grafana dashboard use only exported metric names, and every dashboard query parses', async () => {
      const exported = new Set<string>(['up']);
      for (const [name, type] of Object.entries({ ...FAMILIES, ...TLS_FAMILIES })) {
        if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(name + s);
        else exported.add(name);
      }
      const rules = await readFile(path.join(dir, 'fts-alerts.yml'), 'utf8');
      const dashboardText = await readFile(path.join(dir, 'grafana-dashboard.json'), 'utf8');
      const dashboard = JSON.parse(dashboardText) as { panels?: Array<{ title?: string; targets?: Array<{ expr?: string }> }> };
      const exprs: Array<{ title: string; expr: string }> = [];
      for (const p of dashboard.panels ?? []) for (const t of p.targets ?? []) if (typeof t.expr === 'string') exprs.push({ title: p.title ?? '?', expr: t.expr });
      expect(exprs.length).to.be.at.least(8);
      const ruleExprs = rules.split('\n').filter((l) => /^\s*expr:/.test(l));
      for (const [file, queries] of [['fts-alerts.yml', ruleExprs], ['grafana-dashboard.json', exprs.map((x) => x.expr)]] as const) {
        const used = new Set(queries.join('\n').match(/\bfts_[a-z_]+/g) ?? []);
        expect(used.size, `${file} queries fts_* metrics`).to.be.greaterThan(3);
        for (const name of used) expect(exported.has(name), `${file}: ${name} is an exported series`).to.equal(true);
      }
      const joined = exprs.map((x) => x.expr).join('\n');
      for (const needle of ['fts_transfer_bytes_total', 'fts_operations_total', 'histogram_quantile', 'fts_operation_duration_seconds_bucket', 'fts_sessions_active', 'fts_transfers_active', 'fts_workers']) {
        expect(joined, `a dashboard panel on ${needle}`).to.include(needle);
      }
      // Parse each query with promtool: Grafana's variables replaced by values, wrapped as recording rules.
      const { dir: tmp, cleanup } = await tempDir('fts-dash-');
      cleanups.push(cleanup);
      const file = path.join(tmp, 'dashboard-rules.yml');
      const body = exprs
        .map((x, i) => {
          const expr = x.expr.replaceAll('$__rate_interval', '5m').replaceAll('$job', 'fts').replaceAll('$instance', '.*');
          return `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(expr)}\n`;
        })
        .join('');
      await writeFile(file, `groups:\n  - name: dashboard\n    rules:\n${body}`);
      const r = await runPromtool(['check', 'rules', file]);
      expect(r.code, `dashboard queries that do not parse:\n${r.stdout}${r.stderr}`).to.equal(0);
    });
  });
});
