import cluster, { type Worker } from 'node:cluster';
import http from 'node:http';
import type { StatsFs } from 'node:fs';
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { hostPort } from '../../protocol/index.js';
import type { Logger } from '../log.js';
import type { MetricsJson } from '../metrics/worker-metrics.js';
import { queryWorker } from './cluster-query.js';
import type { StorageHealth } from './storage-health.js';
import type { CertificateFacts } from './tls-certificate.js';
import { MonotonicOutput } from './monotonic-output.js';
import { REJECT_REASONS, type Gatekeeper, type RejectReason } from './gatekeeper.js';
import type { WorkerPool } from './worker-pool.js';

/**
 * Why a connection was refused before its greeting: the primary's admission decisions, and a worker's
 * refusal of a connection without a valid PROXY protocol header (--proxy-protocol), which it reports.
 */
/** `no_descriptor`: handed to a worker that had no free file descriptor to receive it (handoff-guard.ts). */
export type RejectionReason = RejectReason | 'proxy_header' | 'no_descriptor';
const REJECTION_REASONS: readonly RejectionReason[] = [...REJECT_REASONS, 'proxy_header', 'no_descriptor'];

/**
 * How long a scrape waits for each worker. prom-client's clusterMetrics() waits a fixed 5 s and then fails
 * the whole scrape; we ask every worker ourselves, in parallel, and answer with what arrived in time.
 */
const SCRAPE_TIMEOUT_MS = 2_000;
/** Between scrapes the primary refreshes its copy of each worker's counters, for a worker that crashes. */
const REFRESH_INTERVAL_MS = 5_000;
/**
 * Connections the endpoint holds at once; more are closed at once. Prometheus keeps one per target (two or
 * three with HA pairs); a flood of scrapers must not keep the primary, which also answers every worker's
 * admission questions, busy.
 */
const MAX_SCRAPE_CONNECTIONS = 32;
/**
 * A scraper that has not sent its request line and headers within this is cut (slowloris), and so is a
 * connection silent for this long. Node enforces headersTimeout only when it checks (every
 * connectionsCheckingInterval, 30 s by default) and never for a connection that has sent no byte: the
 * socket's idle timeout covers those, or 32 silent connections would keep every scrape out.
 */
const SCRAPE_HEADERS_TIMEOUT_MS = 10_000;
const CONNECTIONS_CHECK_MS = 1_000;

type Rendered = { contentType: string; body: string };

/** Counters and histograms only ever grow, so they may be carried over from a worker that is gone. */
function monotonic(metrics: MetricsJson): MetricsJson {
  return metrics.filter((m) => {
    // prom-client types `type` as an enum; at run time (and over IPC) it is the plain string.
    const type: unknown = m.type;
    return m.name.startsWith('fts_') && (type === 'counter' || type === 'histogram');
  });
}

/**
 * GET /metrics on the primary: every worker's registry aggregated with prom-client's AggregatorRegistry,
 * plus the primary's own metrics.
 *
 * Counters must never go backwards, so the primary remembers each worker's latest counters: a worker that
 * exits (drain, rolling restart, crash) is folded into a "retired" total, and a worker that does not answer
 * in time (hung, SIGSTOPped) contributes its last known counters while fts_scrape_errors_total counts the miss.
 * A worker still starting (not listening yet) is not asked: it cannot answer before it has its users table,
 * and it has served nothing, so leaving it out loses no count and is no error.
 */
export class MetricsEndpoint {
  private readonly registry = new Registry();
  private readonly scrapeErrors: Counter;
  private readonly rejections: Counter<'reason'>;
  /** By cluster worker id (a pid may be reused by a later worker). */
  private readonly lastKnown = new Map<number, MetricsJson>();
  private retired: MetricsJson = [];
  private readonly unfolded = new Set<MetricsJson>();
  private readonly monotonic = new MonotonicOutput();
  /** Workers whose final snapshot (finalMetrics) is in lastKnown. */
  private readonly finals = new Set<number>();
  private folding: Promise<void> = Promise.resolve();
  private server: http.Server | null = null;
  /** The render running now, and the one that scrapes arriving meanwhile will share (see renderFresh). */
  private rendering: Promise<Rendered> | null = null;
  private nextRender: Promise<Rendered> | null = null;
  port: number | null = null;

  constructor(
    private readonly log: Logger,
    private readonly pool: WorkerPool,
    isDraining: () => boolean,
    gate: Gatekeeper,
    lastReload: () => { successful: boolean; appliedAt: number },
    node: { storage: StorageHealth; startedAt: number; certificate: () => CertificateFacts | null },
  ) {
    const registers = [this.registry];
    // What fills a node, takes its storage away or breaks its TLS port while it runs fine: for alerts,
    // before clients see it. One probe per scrape (StorageHealth) serves every storage gauge.
    // process_start_time_seconds is left out (summed over processes it means nothing): a node that restarts
    // in a loop (Restart=on-failure) shows here, each start resetting the counters too.
    new Gauge({ name: 'fts_start_time_seconds', help: 'When this node (its primary) started, Unix time', registers }).set(Math.floor(node.startedAt / 1000));
    new Gauge({
      name: 'fts_storage_up',
      help: 'Whether the storage answers: 1 when its root holds .fts/scram-salt-key and statfs answers within 2 s, 0 when not (unmounted, removed, hung); the other fts_storage_* gauges are then NaN',
      registers,
      async collect() {
        this.set((await node.storage.probe()).ok ? 1 : 0);
      },
    });
    const storageGauge = (name: string, help: string, value: (fs: StatsFs) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          const probe = await node.storage.probe();
          // NaN rather than the last value: a frozen "plenty free" would hide the failure, and a 0 would read
          // as a full disk. NaN compares false, so no threshold alert fires on it; FtsStorageUnavailable does.
          this.set(probe.ok ? value(probe.fs) : Number.NaN);
        },
      });
    };
    storageGauge('fts_storage_free_bytes', 'Bytes free for the server on the storage file system (statfs f_bavail × f_bsize)', (fs) => fs.bavail * fs.bsize);
    storageGauge('fts_storage_size_bytes', 'Size of the storage file system (statfs f_blocks × f_bsize)', (fs) => fs.blocks * fs.bsize);
    storageGauge('fts_storage_free_inodes', 'Inodes free on the storage file system (statfs f_ffree; 0 on file systems without a fixed count)', (fs) => fs.ffree);
    storageGauge('fts_storage_inodes', 'Inodes of the storage file system (statfs f_files; 0 on file systems without a fixed count)', (fs) => fs.files);
    if (node.certificate() !== null) {
      new Gauge({
        name: 'fts_tls_certificate_expiry_timestamp_seconds',
        help: 'When the TLS certificate in force expires (its notAfter), Unix time',
        registers,
        collect() {
          const cert = node.certificate();
          if (cert !== null) this.set(Math.floor(cert.notAfter / 1000));
        },
      });
    }
    new Gauge({
      name: 'fts_workers',
      help: 'Worker processes alive',
      registers,
      collect() {
        this.set(pool.workers.length);
      },
    });
    const restarts = new Counter({ name: 'fts_worker_restarts_total', help: 'Workers respawned after an unexpected exit', registers });
    let counted = 0;
    new Gauge({
      name: 'fts_draining',
      help: '1 while the server drains, else 0',
      registers,
      collect() {
        this.set(isDraining() ? 1 : 0);
        // The pool's count is the source of truth; catch the counter up with it at scrape time.
        if (pool.restarts > counted) {
          restarts.inc(pool.restarts - counted);
          counted = pool.restarts;
        }
      },
    });
    this.scrapeErrors = new Counter({ name: 'fts_scrape_errors_total', help: 'Workers that did not answer a scrape in time', registers });
    this.rejections = new Counter({ name: 'fts_rejections_total', help: 'Connections refused, by reason', labelNames: ['reason'], registers });
    for (const reason of REJECTION_REASONS) this.rejections.inc({ reason }, 0);
    new Gauge({
      name: 'fts_bans_active',
      help: 'Source addresses banned now',
      registers,
      collect() {
        this.set(gate.activeBans(Date.now()));
      },
    });
    // As Prometheus's own prometheus_config_last_reload_*: a refused reload leaves the old files in force.
    new Gauge({
      name: 'fts_config_last_reload_successful',
      help: '1 if the last reload (fts-admin reload or passwd, SIGHUP) was applied, or none was asked since the start; 0 if it was refused',
      registers,
      collect() {
        this.set(lastReload().successful ? 1 : 0);
      },
    });
    new Gauge({
      name: 'fts_config_last_reload_success_timestamp_seconds',
      help: 'When the users and rules files in force were applied (start or last successful reload), Unix time',
      registers,
      collect() {
        this.set(Math.floor(lastReload().appliedAt / 1000));
      },
    });
    restarts.inc(0);
    this.scrapeErrors.inc(0);
    collectDefaultMetrics({ register: this.registry });
    new AggregatorRegistry(); // installs prom-client's cluster listeners in the primary
    // Not cluster 'disconnect': Node 20 never emits it for a worker that died while a connection handed to
    // it awaited its acknowledgement (handoff-guard.ts). The process's 'close' comes after both its exit and
    // the end of its channel, so its final snapshot has arrived by then.
    cluster.on('fork', (worker) => worker.process.once('close', () => this.retire(worker.id)));
  }

  rejected(reason: RejectionReason): void {
    this.rejections.inc({ reason });
  }

  /**
   * A worker's own final snapshot, sent just before it exits on purpose. It is never replaced by an answer
   * to a scrape that was already on its way (older counters).
   */
  finalMetrics(worker: Worker, metrics: MetricsJson): void {
    this.lastKnown.set(worker.id, metrics);
    this.finals.add(worker.id);
  }

  async start(host: string, port: number): Promise<number> {
    const server = http.createServer(
      { headersTimeout: SCRAPE_HEADERS_TIMEOUT_MS, requestTimeout: SCRAPE_HEADERS_TIMEOUT_MS + SCRAPE_TIMEOUT_MS, connectionsCheckingInterval: CONNECTIONS_CHECK_MS },
      (req, res) => void this.serve(req, res),
    );
    server.maxConnections = MAX_SCRAPE_CONNECTIONS;
    // With no 'timeout' listener, Node destroys a socket idle this long (a render takes at most ~2 s).
    server.timeout = SCRAPE_HEADERS_TIMEOUT_MS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    this.port = address && typeof address === 'object' ? address.port : port;
    this.server = server;
    setInterval(() => void this.gather(false), REFRESH_INTERVAL_MS).unref();
    this.log.info({ address: host, port: this.port }, `metrics on http://${hostPort(host, this.port)}/metrics`);
    return this.port;
  }

  close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return Promise.resolve();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  /**
   * Asks every listening worker for its metrics; one that does not answer in time gets its last known
   * counters. Starting workers are skipped (see the class comment).
   */
  private async gather(scrape: boolean): Promise<MetricsJson[]> {
    const workers = this.pool.listeningWorkers;
    const answers = await Promise.all(workers.map((w) => queryWorker(w, { type: 'fts:query', what: 'metrics' }, SCRAPE_TIMEOUT_MS) as Promise<MetricsJson | null>));
    // A worker that exited while we waited has already been folded into `retired`: counting its answer
    // too would count it twice (and then the total would fall back at the next scrape).
    const live = new Set(this.pool.workers);
    const parts = answers.map((answer, i) => {
      const worker = workers[i];
      if (worker === undefined || !live.has(worker) || !worker.isConnected()) return [];
      const final = this.finals.has(worker.id) ? this.lastKnown.get(worker.id) : undefined;
      if (final) return final;
      if (answer) {
        this.lastKnown.set(worker.id, answer);
        return answer;
      }
      if (scrape) {
        this.scrapeErrors.inc();
        this.log.warn({ workerPid: worker.process.pid }, 'worker did not answer the metrics scrape in time');
      }
      return monotonic(this.lastKnown.get(worker.id) ?? []);
    });
    // A worker that has exited but whose process has not closed yet (retire() runs then, after its final
    // snapshot) is in no list of the pool any more: its last counters still count. Taken in the same
    // synchronous step as the live check above, so no worker is counted twice or not at all.
    const liveIds = new Set([...live].map((w) => w.id));
    for (const [id, last] of this.lastKnown) if (!liveIds.has(id)) parts.push(monotonic(last));
    // Retired workers whose fold into `retired` has not finished yet.
    parts.push(...this.unfolded, this.retired);
    return parts;
  }

  /**
   * One render at a time, however many scrapes arrive: a scrape never shares a render that had started
   * before it arrived (it would miss what happened just before), so all that arrive during one render
   * share the next. A flood of scrapes then costs the primary one render after another, never many at once.
   */
  private renderFresh(): Promise<Rendered> {
    if (this.rendering === null) {
      const running = this.render().finally(() => {
        this.rendering = null;
      });
      this.rendering = running;
      return running;
    }
    this.nextRender ??= this.rendering
      .catch(() => undefined)
      .then(() => {
        this.nextRender = null;
        return this.renderFresh();
      });
    return this.nextRender;
  }

  async render(): Promise<Rendered> {
    const parts = await this.gather(true);
    parts.push(await this.registry.getMetricsAsJSON());
    const summed = await AggregatorRegistry.aggregate(parts).getMetricsAsJSON();
    const aggregated = AggregatorRegistry.aggregate([this.monotonic.apply(summed)]);
    return { contentType: aggregated.contentType, body: await aggregated.metrics() };
  }

  /**
   * Folds an exited worker's last counters into one running total, so the retired set does not grow with
   * every restart. The fold is asynchronous: until it lands the counters stay in `unfolded`, and both change
   * in one step, so a scrape in between counts them exactly once. Folds run one after another (two at once
   * would each add to the same old total, and one would be lost).
   */
  private retire(id: number): void {
    const last = this.lastKnown.get(id);
    this.lastKnown.delete(id);
    this.finals.delete(id);
    if (!last) return;
    const entry = monotonic(last);
    this.unfolded.add(entry);
    this.folding = this.folding
      .then(async () => {
        const sum = await AggregatorRegistry.aggregate([this.retired, entry]).getMetricsAsJSON();
        this.retired = sum;
        this.unfolded.delete(entry);
      })
      .catch((err: unknown) => this.log.error({ err }, 'folding the counters of an exited worker failed; they stay counted separately'));
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
      return;
    }
    try {
      const { contentType, body } = await this.renderFresh();
      res.writeHead(200, { 'content-type': contentType }).end(req.method === 'HEAD' ? undefined : body);
    } catch (err) {
      this.log.error({ err }, 'metrics scrape failed');
      res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n');
    }
  }
}
