import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { constants, writeSync } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { errnoOf, errnoReason, hostPort } from '../../protocol/index.js';
import { PACKAGE_VERSION } from '../../protocol/version.js';
import { DEFAULT_HOOK_TIMEOUT_SECONDS, DEFAULT_METRICS_HOST, isLoopbackHost, type Config } from '../config.js';
import { ConfigFileUnusable, exposedMode, readConfigFile } from '../config-file.js';
import { isFtsMessage, type WorkerToPrimary } from '../ipc.js';
import { whenLogOutputLost, type Logger } from '../log.js';
import { Store, sweepStaging } from '../storage/store.js';
import { sweepAbandonedLocks } from '../storage/locks.js';
import { loadSaltKey } from '../storage/salt-key.js';
import { loadTlsPair } from '../worker/tls.js';
import { inspectTls, type CertificateFacts } from './tls-certificate.js';
import { AdminServer } from './admin-server.js';
import { Controller } from './controller.js';
import { Gatekeeper } from './gatekeeper.js';
import { memberOf } from '../auth/networks.js';
import { MetricsEndpoint } from './metrics-endpoint.js';
import { readUsersFile, UsersFileRefused } from './users-file.js';
import { readRulesFiles, RulesFileRefused, strangersIn } from './rules-files.js';
import { WorkerPool } from './worker-pool.js';

/** A startup problem: reported as one line on stderr, exit code 1. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/** How often expired partial uploads are removed while the server runs. */
const STAGING_SWEEP_INTERVAL_MS = 10 * 60 * 1000;

/** Minimum secret length: 256 bits. */
const MIN_SECRET_BYTES = 32;

/**
 * The token-signing secret: from --cluster-secret-file (shared by every node behind a load balancer, so a
 * reconnect may land anywhere), or random for this start (tokens then die with the process).
 */
async function loadSecret(config: Config): Promise<Buffer> {
  if (config.clusterSecretFile === null) return randomBytes(MIN_SECRET_BYTES);
  const file = config.clusterSecretFile;
  const { bytes: raw, mode } = await readConfigFile(file).catch((err: unknown) => {
    throw err instanceof ConfigFileUnusable ? new StartupError(`cluster secret file ${file}: ${err.message}`) : err;
  });
  const exposed = exposedMode(mode);
  if (exposed !== null) throw new StartupError(`cluster secret file ${file}: ${exposed}; chmod 600 it`);
  // Raw bytes (a binary secret is fine); only ASCII whitespace at the ends (a trailing newline) is dropped.
  let start = 0;
  let end = raw.length;
  const space = (b: number | undefined): boolean => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
  while (start < end && space(raw[start])) start++;
  while (end > start && space(raw[end - 1])) end--;
  const secret = raw.subarray(start, end);
  if (secret.length < MIN_SECRET_BYTES) throw new StartupError(`cluster secret file ${file}: must hold at least ${MIN_SECRET_BYTES} bytes`);
  return secret;
}

/**
 * The primary: validates what workers will need, forks them, serves the admin socket and owns the drain.
 * It never touches client connections itself (apart from the cluster's round-robin hand-off).
 */
/** Descriptors a process needs besides its connections' (listening sockets, IPC, log, files in transfer). */
const FD_RESERVE = 100;

/** RLIMIT_NOFILE as this process has it (Node raises the soft limit to the hard one at start), or null. */
function openFileLimit(): number | null {
  const report = process.report?.getReport() as { userLimits?: { open_files?: { soft?: unknown } } } | undefined;
  const soft = report?.userLimits?.open_files?.soft;
  return typeof soft === 'number' && Number.isFinite(soft) ? soft : null;
}

export async function runPrimary(config: Config, log: Logger): Promise<void> {
  // A SIGHUP during start-up (a log rotation's, say) must not kill the server (Node's default): it is kept
  // and answered with a reload once the reload handler is in place below.
  let hupDuringStart = false;
  const onEarlyHup = (): void => {
    hupDuringStart = true;
  };
  process.on('SIGHUP', onEarlyHup);
  const usersFile = await readUsersFile(config.users, config.allowInsecureUsersFile).catch((err: unknown) => {
    throw err instanceof UsersFileRefused ? new StartupError(err.message) : err;
  });
  for (const p of usersFile.problems) log.warn({ line: p.line, reason: p.reason }, `users file line ${p.line} skipped: ${p.reason}`);
  for (const w of usersFile.warnings) log.warn(w.fields, w.message);
  const usersText = usersFile.text;
  const rules = await readRulesFiles(config).catch((err: unknown) => {
    throw err instanceof RulesFileRefused ? new StartupError(err.message) : err;
  });
  for (const w of strangersIn(rules, (name) => usersFile.users.has(name))) log.warn(w.fields, w.message);

  if (config.uploadHook !== null) await checkUploadHook(config.uploadHook);

  let certificate: CertificateFacts | null = null;
  if (config.tlsCert && config.tlsKey) {
    const pair = await loadTlsPair({ cert: config.tlsCert, key: config.tlsKey }).catch((err: Error) => {
      throw new StartupError(err.message);
    });
    certificate = inspectTls(pair, config.tlsKey, log, 'start').facts;
  }
  const store = new Store(config.storage);
  const { full } = await store.init().catch((err: Error) => {
    throw new StartupError(err.message);
  });
  if (full) log.warn({ storage: config.storage }, 'the storage is full (no space left, or over quota): uploads fail with NO_SPACE until space is freed; downloads, listings and deletes work');
  if (config.partialTtlSeconds <= config.stallTimeoutSeconds) {
    // A live upload writes at least once per stall timeout; below that, the sweep may take a stalled but
    // still open upload's staged bytes (its publish then fails and the client starts again).
    log.warn({ partialTtl: config.partialTtlSeconds, stallTimeout: config.stallTimeoutSeconds }, '--partial-ttl is not above --stall-timeout: partial uploads of slow clients may be swept while they are still open');
  }
  // Options that only matter beside another one: said at start, so that a hook or endpoint the operator
  // thinks is configured is not silently missing.
  if (config.uploadHook === null && (config.hookEvents.join(',') !== 'upload' || config.uploadHookTimeoutSeconds !== DEFAULT_HOOK_TIMEOUT_SECONDS)) {
    log.warn({ hookEvents: config.hookEvents, uploadHookTimeout: config.uploadHookTimeoutSeconds }, '--hook-events and --upload-hook-timeout do nothing without --upload-hook: no hook runs');
  }
  if (config.tlsCert === null && !isLoopbackHost(config.host)) {
    log.warn({ host: config.host }, `listening on ${config.host} without TLS: passwords sent with "plain" and every file cross the network in clear; use --tls-cert and --tls-key, or keep the port on a network you trust`);
  }
  if (!config.proxyProtocol && config.proxyFrom !== null) {
    log.warn({ proxyFrom: config.proxyFrom }, '--proxy-from does nothing without --proxy-protocol: no PROXY header is read');
  }
  if (config.metricsPort === null && config.metricsHost !== DEFAULT_METRICS_HOST) {
    log.warn({ metricsHost: config.metricsHost }, '--metrics-host does nothing with --metrics-port off: no metrics endpoint is served');
  }
  const openFiles = openFileLimit();
  if (openFiles !== null && openFiles < config.maxConnections + FD_RESERVE) {
    // Each connection is a descriptor in the worker that holds it, plus the file of its transfer; a worker
    // that has none left cannot receive the next connection handed to it (handoff-guard.ts closes it).
    log.warn(
      { openFiles, maxConnections: config.maxConnections },
      `the open-file limit (${openFiles}) is below --max-connections (${config.maxConnections}) + ${FD_RESERVE}: connections beyond what the workers' descriptors hold are closed (fts_rejections_total{reason="no_descriptor"}); raise the limit (LimitNOFILE=, ulimit -n) or lower --max-connections`,
    );
  }
  if (config.lockTimeoutSeconds >= config.stallTimeoutSeconds) {
    // Waiting for a lock moves no bytes, so the session's stall timer runs meanwhile: it would end the
    // session (bye TRANSFER_STALLED) before the wait could end in LOCKED.
    log.warn({ lockTimeout: config.lockTimeoutSeconds, stallTimeout: config.stallTimeoutSeconds }, '--lock-timeout is not below --stall-timeout: a request waiting for a busy lock may end its session with TRANSFER_STALLED instead of LOCKED');
  }
  // Each path the sweep cannot read or remove is logged once, not at every pass for as long as it lasts.
  const reported = new Set<string>();
  const skipped = (what: string) => (where: string, err: unknown): void => {
    if (reported.has(where)) return;
    if (reported.size < 10_000) reported.add(where);
    log.warn({ path: where, err }, `${what} sweep skipped what it cannot read or remove (logged once per path)`);
  };
  const sweep = async (): Promise<void> => {
    const removed = await sweepStaging(config.storage, config.partialTtlSeconds * 1000, skipped('staging'));
    if (removed > 0) log.info({ removed }, 'removed expired partial uploads');
    const locks = await sweepAbandonedLocks(config.storage, skipped('lock'));
    if (locks > 0) log.info({ removed: locks }, 'removed abandoned locks');
  };
  const sweepFailed = (err: unknown): void => log.warn({ err }, 'sweep of partial uploads and locks failed');
  // Not waited for: on a large or slow (NFS) storage it may take minutes, and the server need not wait to
  // serve (a sweep is safe beside live uploads and locks: it runs every 10 minutes anyway). A start that
  // waited would keep `fts-admin ready`, and so the systemd unit's start, waiting with it.
  void sweep().catch(sweepFailed);
  // Partial uploads expire while the server runs too, not only at start.
  setInterval(() => sweep().catch(sweepFailed), STAGING_SWEEP_INTERVAL_MS).unref();

  const gate = new Gatekeeper({
    maxConnections: config.maxConnections,
    maxPerIp: config.maxConnectionsPerIp,
    maxSessionsPerUser: config.maxSessionsPerUser,
    startups: config.maxStartups,
    banThreshold: config.banThreshold,
    banWindowMs: config.banWindowSeconds * 1000,
    banDurationMs: config.banSeconds * 1000,
    exempt: memberOf(config.banExempt),
  });
  setInterval(() => gate.prune(Date.now()), 60_000).unref();
  const pool = new WorkerPool(config, log);
  const saltKey = await loadSaltKey(config.storage).catch((err: Error) => {
    throw new StartupError(`storage root ${config.storage}: SCRAM salt key: ${err.message}`);
  });
  const controller = new Controller(config, log, pool, gate, { users: usersText, quotas: rules.quotas?.text ?? null, permissions: rules.permissions?.text ?? null, rates: rules.rates?.text ?? null, networks: rules.networks?.text ?? null }, await loadSecret(config), saltKey);
  const admin = new AdminServer(config.adminSocket, log, (req, reply) => controller.handle(req, reply));
  await admin.start().catch((err: Error) => {
    // A system error (making its directory, listening) says nothing of the socket it was about.
    throw new StartupError(errnoOf(err) === undefined ? err.message : `admin socket ${config.adminSocket}: ${errnoReason(err)}`);
  });

  controller.certificate = certificate;
  const metrics = new MetricsEndpoint(log, pool, () => controller.draining, gate, () => controller.lastReload, { storage: controller.storage, startedAt: controller.startedAt, certificate: () => controller.certificate });
  pool.onUndelivered = () => metrics.rejected('no_descriptor');
  if (config.metricsPort !== null) {
    controller.metricsPort = await metrics.start(config.metricsHost, config.metricsPort).catch(async (err: NodeJS.ErrnoException) => {
      await admin.close();
      throw new StartupError(`metrics endpoint ${hostPort(config.metricsHost, config.metricsPort ?? '')}: ${errnoReason(err)}`);
    });
  }

  let listeningWorkers = 0;
  cluster.on('message', (worker, msg: unknown) => {
    if (!isFtsMessage(msg)) return; // prom-client shares the channel
    const m = msg as WorkerToPrimary;
    if (m.type === 'fts:ask') {
      const q = m.question;
      const now = Date.now();
      let data: unknown;
      if (q.kind === 'admit') {
        const verdict = gate.admit(q.conn, q.ip, worker.id, now);
        if (!verdict.ok) metrics.rejected(verdict.reason);
        data = verdict;
      } else if (q.kind === 'banned') {
        data = gate.banStatus(q.ip, now);
      } else if (q.kind === 'login') {
        const verdict = gate.login(q.conn, q.user);
        if (!verdict.ok) metrics.rejected(verdict.reason);
        data = verdict;
      } else {
        const result = gate.penalty(q.ip, q.points, now);
        if (result.started) log.warn({ event: 'ban', ip: q.ip, seconds: config.banSeconds }, `banned ${q.ip} for ${config.banSeconds}s`);
        // How long a ban lasts, so that the worker knows it from the penalty that started it (gate-client.ts).
        data = result.banned ? { ...result, retryAfterSeconds: gate.banStatus(q.ip, now).retryAfterSeconds } : result;
      }
      if (worker.isConnected()) worker.send({ type: 'fts:answer', reqId: m.reqId, data });
    } else if (m.type === 'fts:conn') {
      if (m.event === 'logged-in') gate.login(m.conn, m.user, true);
      else gate.closed(m.conn);
    } else if (m.type === 'fts:need-init') controller.sendInit(worker);
    else if (m.type === 'fts:final-metrics') metrics.finalMetrics(worker, m.metrics);
    else if (m.type === 'fts:listening') controller.workerListening(worker);
    else if (m.type === 'fts:startup-failed') startupFailures.set(worker.process.pid ?? 0, m.reason);
    else if (m.type === 'fts:log-output-lost') onLogOutputLost(m.reason);
    else if (m.type === 'fts:rejected') metrics.rejected(m.reason);
    if (m.type === 'fts:listening' && controller.port !== null && m.port !== controller.port) {
      // Clients were told controller.port: a worker elsewhere serves nobody (see WorkerPool.portFor).
      log.error({ workerPid: worker.process.pid, port: m.port, announced: controller.port }, 'worker listens on another port than the announced one');
    }
    if (m.type === 'fts:listening' && controller.port === null && ++listeningWorkers >= config.workers) {
      // Announce only once every worker takes connections, so the round-robin spreads from the start.
      controller.port = m.port;
      // With --port 0, later workers must bind the port we got: if every worker died, the cluster's
      // shared handle is gone and a fresh listen(0) would pick another port.
      pool.setPort(m.port);
      log.info({ address: m.address, port: m.port, workers: config.workers, adminSocket: config.adminSocket, version: PACKAGE_VERSION, tls: config.tlsCert !== null }, `listening on ${hostPort(m.address, m.port)}`);
    }
  });
  cluster.on('exit', (worker) => gate.workerGone(worker.id));
  /** Why a worker could not start, by pid, as it said before exiting. */
  const startupFailures = new Map<number, string>();
  pool.onCrash = (worker, code, signal, listened) => {
    // A worker failing before it could listen, while the server is not announced yet: it said why (port in
    // use, bad host), or it died (killed, crashed) starting. Start-up failed; a supervisor (systemd) starts
    // it again. One that was already listening is respawned like any crash, even before the announcement.
    if (controller.port === null && !listened) {
      const reason = startupFailures.get(worker.process.pid ?? 0);
      const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
      process.stderr.write(reason ? `fts-server: ${reason}\n` : `fts-server: worker ${worker.process.pid} ${how} before the server was listening; see the log above\n`);
      pool.stop();
      pool.killAll('SIGKILL');
      void Promise.all([admin.close(), metrics.close()]).finally(() => process.exit(1));
    }
  };
  /** 1 when the server stopped because it could no longer log, so that a supervisor restarts it. */
  let exitCode = 0;
  controller.onStopped = () => {
    void Promise.all([admin.close(), metrics.close()]).finally(() => {
      log.info('stopped');
      process.exit(exitCode);
    });
  };
  // Standard output is gone (a closed terminal, a dead log reader), in this process or a worker: drain as
  // for SIGTERM, since what happens from now on could not be logged or audited.
  const onLogOutputLost = (reason: string): void => {
    if (exitCode === 1) return;
    exitCode = 1;
    try {
      // Synchronous and guarded: standard error may be the same closed terminal.
      writeSync(2, `fts-server: the log output (standard output) failed: ${reason}; draining, then exiting with status 1\n`);
    } catch {
      // Nowhere left to say it; the exit status does.
    }
    controller.drain('log output lost');
  };
  whenLogOutputLost((err) => onLogOutputLost(errnoReason(err)));

  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.draining) controller.forceStop();
    else controller.drain(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // The daemon convention (sshd, nginx, PostgreSQL): SIGHUP reloads, as `fts-admin reload` does, instead of
  // Node's default of exiting at once without a drain. reload() logs what it applied or refused.
  const onHup = (): void => {
    controller.reload('SIGHUP').catch(() => undefined);
  };
  process.on('SIGHUP', onHup);
  process.off('SIGHUP', onEarlyHup);
  if (hupDuringStart) onHup();

  pool.start();
}

/** --upload-hook must be a program the server can run: found out at start, not at the first upload. */
async function checkUploadHook(program: string): Promise<void> {
  try {
    const st = await stat(program);
    if (!st.isFile()) throw new StartupError(`upload hook ${program}: not a regular file`);
    await access(program, constants.X_OK);
  } catch (err) {
    if (err instanceof StartupError) throw err;
    throw new StartupError(`upload hook ${program}: ${errnoReason(err)} (it must be a program the server may run)`);
  }
}
