import type { Worker } from 'node:cluster';
import type { AdminFinal, AdminLine, AdminRequest, ConfigResult, SessionInfo, StatusResult, WorkerStatus } from '../../protocol/index.js';
import type { Config } from '../config.js';
import type { PrimaryToWorker, WorkerStats } from '../ipc.js';
import type { Logger } from '../log.js';
import { PACKAGE_VERSION } from '../../protocol/version.js';
import { loadTlsPair, type TlsPair } from '../worker/tls.js';
import { inspectTls, type CertificateFacts } from './tls-certificate.js';
import { queryWorker } from './cluster-query.js';
import type { Gatekeeper } from './gatekeeper.js';
import { readUsersFile, UsersFileRefused, type UsersFile } from './users-file.js';
import { knownUsersIn, readRulesFiles, RulesFileRefused, strangersIn, type PolicyTexts, type RulesFiles } from './rules-files.js';
import { partialsOfUsers, usageOfUsers, type PerUser } from './storage-usage.js';
import { discardPartials } from '../storage/partials.js';
import { FtsError } from '../../protocol/index.js';
import { StorageHealth } from './storage-health.js';
import type { WorkerPool } from './worker-pool.js';

/** A worker that does not answer within this long is reported as not responding. */
const QUERY_TIMEOUT_MS = 1_500;

/** "worker 123 did not answer within 1.5 s" (or "workers 1, 2 did not …"). */
/** A command's failure as its reply. */
function failedReply(err: unknown): AdminFinal {
  return { ok: false, error: (err as Error).message };
}

function silentWorkers(pids: number[]): string {
  return `${pids.length === 1 ? 'worker' : 'workers'} ${pids.join(', ')} did not answer within ${QUERY_TIMEOUT_MS / 1000} s`;
}
/**
 * How long a reload waits for each worker to confirm that the new files are in force. Longer than a query's
 * wait: an operator who revokes a permission is told it is in force everywhere, or which worker has not
 * confirmed yet, and a busy worker should not be reported for a moment's delay.
 */
const RELOAD_CONFIRM_MS = 5_000;
const DRAIN_PROGRESS_INTERVAL_MS = 1_000;
/**
 * How long a drain's progress report waits for each worker: below the interval, so that a stopped worker
 * (which never answers) delays no line past its second and reports do not pile up.
 */
const DRAIN_PROGRESS_QUERY_MS = 800;
/** Workers that have not exited this long after the drain deadline are killed. */
const HARD_KILL_AFTER_DEADLINE_MS = 5_000;
/** After a forced stop, workers get this long before SIGKILL. */
const FORCED_STOP_KILL_MS = 5_000;

type Reply = (line: AdminLine) => void;

/** The users a report covers, with a warning naming those it could not (fts-admin prints it on stderr). */
function perUserReply<T>({ result, failed }: PerUser<T>): AdminFinal {
  return failed.length === 0 ? { ok: true, result } : { ok: true, result, warning: `not listed, could not be read: ${failed.join('; ')}` };
}

/** Who asked for a reload: `fts-admin reload` or `passwd` (the admin socket), or a SIGHUP. */
export type ReloadSource = 'admin' | 'SIGHUP';

/** What every reload line carries about its cause (OPERATIONS.md "Signals": `signal` on a SIGHUP's). */
function reloadFields(source: ReloadSource): { source: ReloadSource; signal?: 'SIGHUP' } {
  return { source, ...(source === 'SIGHUP' ? { signal: source } : {}) };
}

/**
 * The primary's brain: answers admin commands, owns the drain, and hands the user table to workers.
 * Nothing here touches client connections; workers do that.
 */
export class Controller {
  readonly startedAt = Date.now();
  /** Whether the storage is there and answers (status, ready, /metrics). */
  readonly storage: StorageHealth;
  port: number | null = null;
  metricsPort: number | null = null;
  draining = false;
  /** Deadline of the drain in progress (epoch ms), for workers that start after it began. */
  private drainDeadline = 0;
  private hardKill: NodeJS.Timeout | undefined;
  /** A rolling restart is running: a second one would replace the same workers twice at once. */
  private restarting = false;
  private drainWatchers = new Set<Reply>();
  /** The reload in progress, if any (reload() runs them one after another). */
  private reloading: Promise<unknown> = Promise.resolve();
  /**
   * Whether the last reload was applied, and when the files in force were (start-up counts as one), for
   * fts_config_last_reload_*: a refused reload leaves the old files in force with nobody told but the
   * one who asked.
   */
  lastReload: { successful: boolean; appliedAt: number } = { successful: true, appliedAt: this.startedAt };
  /** The TLS certificate in force (null without TLS): its expiry is a metric. */
  certificate: CertificateFacts | null = null;
  /**
   * Workers sent their fts:init: only they apply a reload (one not yet initialised ignores it, and its init
   * carries the texts in force when it is sent), so only they are asked to confirm one.
   */
  private initialised = new WeakSet<Worker>();
  /** Called once every worker has exited after a drain; the primary then cleans up and exits. */
  onStopped: () => void = () => {};

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly pool: WorkerPool,
    /** Admission and bans, for `bans` and `unban`. */
    private readonly gate: Gatekeeper,
    /** The validated users file and quota file texts (quotas null without --quota-file) that workers parse. */
    private texts: PolicyTexts,
    /** Signs session tokens; sent to each worker over IPC (fts:init), never through its environment or the log. */
    private readonly secret: Buffer,
    /** The storage's SCRAM salt key (storage/salt-key.ts), sent the same way. */
    private readonly saltKey: Buffer,
  ) {
    this.storage = new StorageHealth(config.storage);
    pool.onAllExited = () => {
      this.log.info('all workers exited');
      for (const watcher of this.drainWatchers) watcher({ event: 'exited' });
      this.onStopped();
    };
  }

  /** A worker asks for what it needs to serve (user table, token secret) once its message handler is in place. */
  sendInit(worker: Worker): void {
    if (!worker.isConnected()) return;
    // A worker forked just before a drain began may have missed the broadcast: it must not start serving.
    if (this.draining) {
      worker.send({ type: 'fts:abort' });
      return;
    }
    this.initialised.add(worker);
    worker.send({ type: 'fts:init', users: this.texts.users, quotas: this.texts.quotas, permissions: this.texts.permissions, rates: this.texts.rates, networks: this.texts.networks, secret: this.secret.toString('hex'), saltKey: this.saltKey.toString('hex'), port: this.pool.portFor(worker) });
  }

  /** A worker started listening: if a drain began meanwhile, it drains too. */
  workerListening(worker: Worker): void {
    if (this.draining && worker.isConnected()) worker.send({ type: 'fts:drain', deadline: this.drainDeadline });
  }

  async handle(req: AdminRequest, reply: Reply): Promise<void> {
    switch (req.cmd) {
      case 'status':
        reply({ ok: true, result: await this.status() });
        return;
      case 'sessions': {
        const { sessions, silent } = await this.sessions();
        reply(silent.length === 0 ? { ok: true, result: sessions } : { ok: true, result: sessions, warning: `${silentWorkers(silent)}: the sessions on it are not listed` });
        return;
      }
      case 'drain':
        this.drainWatchers.add(reply);
        this.drain('admin', req.timeout);
        return;
      case 'reload':
        reply(await this.reload('admin'));
        return;
      case 'kick':
        reply(await this.kick(req.session));
        return;
      case 'config':
        reply({ ok: true, result: { settings: [...this.config.settings], filesAppliedAt: this.lastReload.appliedAt, lastReloadSuccessful: this.lastReload.successful } satisfies ConfigResult });
        return;
      case 'bans':
        reply({ ok: true, result: req.points === true ? this.gate.scored(Date.now()) : this.gate.bans(Date.now()) });
        return;
      case 'usage':
        reply(await this.onStorage(() => usageOfUsers(this.config.storage, this.config.quotaBytes, this.config.maxFiles, this.texts).then(perUserReply, failedReply)));
        return;
      case 'partials':
        reply(await this.onStorage(() => partialsOfUsers(this.config.storage, this.config.partialTtlSeconds * 1000).then(perUserReply, failedReply)));
        return;
      case 'discard':
        reply(await this.onStorage(() => this.discard(req.user, req.key)));
        return;
      case 'unban': {
        const lifted = this.gate.unban(req.address, Date.now());
        if (lifted === null) {
          reply({ ok: false, error: `${req.address} is not banned and has no penalty points` });
          return;
        }
        if (lifted.banned) this.log.warn({ event: 'unban', ip: req.address }, `ban on ${req.address} lifted by fts-admin unban`);
        else this.log.warn({ event: 'unban', ip: req.address, points: lifted.points }, `penalty points of ${req.address} (${lifted.points}, not banned) forgotten by fts-admin unban`);
        reply({ ok: true, result: lifted });
        return;
      }
      case 'restart-workers':
        if (this.draining || this.restarting) {
          reply({ ok: false, error: this.draining ? 'the server is draining' : 'a rolling restart is already running' });
          return;
        }
        this.restarting = true;
        try {
          const { killed } = await this.pool.rollingRestart(this.config.graceSeconds * 1000, {
            // Sent while a replacement starts and while an old worker drains (up to --grace): fts-admin
            // waits as long as these come.
            replacing: (oldPid, newPid) => reply({ event: 'replacing', old: oldPid, new: newPid }),
            killed: (oldPid, newPid) => reply({ event: 'killed', old: oldPid, new: newPid }),
            replaced: (oldPid, newPid) => reply({ event: 'restarted', old: oldPid, new: newPid }),
          });
          // Every worker was replaced; killing a hung one is what the restart is for, but say so.
          if (killed.length === 0) reply({ ok: true });
          else reply({ ok: true, warning: `${killed.length === 1 ? 'worker' : 'workers'} ${killed.join(', ')} did not exit after draining and ${killed.length === 1 ? 'was' : 'were'} killed` });
        } finally {
          // A failure propagates to the admin server, which logs it and replies ok:false with its message.
          this.restarting = false;
        }
        return;
    }
  }

  async workerStats(timeoutMs = QUERY_TIMEOUT_MS): Promise<WorkerStatus[]> {
    const listening = new Set(this.pool.listeningWorkers);
    const stats = await Promise.all(
      this.pool.workers.map(async (w): Promise<WorkerStatus | null> => {
        const silent = { pid: w.process.pid ?? 0, connections: 0, sessions: 0, transfers: 0, responding: false };
        // A worker still starting answers nothing yet; asking would only wait out the timeout.
        if (!listening.has(w)) return { ...silent, starting: true };
        const data = (await queryWorker(w, { type: 'fts:query', what: 'stats' }, timeoutMs)) as WorkerStats | null;
        if (data) return { ...data, responding: true };
        // One that exited while asked (a drained worker leaves at once) is gone, not silent.
        return w.isConnected() ? silent : null;
      }),
    );
    return stats.filter((s): s is WorkerStatus => s !== null);
  }

  async status(): Promise<StatusResult> {
    const [workers, storage] = await Promise.all([this.workerStats(), this.storage.probe()]);
    const sum = (key: 'connections' | 'sessions' | 'transfers') => workers.reduce((n, w) => n + w[key], 0);
    return {
      pid: process.pid,
      port: this.port,
      metricsPort: this.metricsPort,
      draining: this.draining,
      uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000),
      version: PACKAGE_VERSION,
      workers,
      connections: sum('connections'),
      sessions: sum('sessions'),
      transfers: sum('transfers'),
      workerRestarts: this.pool.restarts,
      usersFile: this.config.users,
      storage: storage.ok ? { ok: true } : { ok: false, problem: storage.problem },
    };
  }

  /**
   * A command that reads the storage, run if the storage answers: an unavailable one would read as "nothing
   * stored, no partial upload", so that is said instead.
   */
  private async onStorage(command: () => Promise<AdminFinal>): Promise<AdminFinal> {
    const storage = await this.storage.probe();
    return storage.ok ? command() : { ok: false, error: `the storage is unavailable: ${storage.problem}` };
  }

  /** `discard` of one user's partial upload, logged. */
  private async discard(user: string, key: string): Promise<AdminFinal> {
    try {
      const discarded = await discardPartials(this.config.storage, user, key);
      this.log.warn({ event: 'discard', user, key, file: discarded.name, bytes: discarded.bytes }, `partial upload of ${user} discarded by fts-admin discard`);
      return { ok: true, result: discarded };
    } catch (err) {
      return { ok: false, error: `${user}: ${(err as Error).message}`, ...(err instanceof FtsError ? { code: err.code } : {}) };
    }
  }

  /** Every worker's sessions, and the pids of the workers that did not answer in time. */
  async sessions(): Promise<{ sessions: SessionInfo[]; silent: number[] }> {
    const { answers, silent } = await this.askAll({ type: 'fts:query', what: 'sessions' });
    return { sessions: answers.flatMap((l) => (l as SessionInfo[] | null) ?? []), silent };
  }

  /**
   * Asks every listening worker at once (one still starting holds no session and answers nothing yet);
   * `silent` lists the pids of those that did not answer in time.
   */
  private async askAll(message: Parameters<typeof queryWorker>[1]): Promise<{ answers: Array<Awaited<ReturnType<typeof queryWorker>>>; silent: number[] }> {
    const workers = this.pool.listeningWorkers;
    const answers = await Promise.all(workers.map((w) => queryWorker(w, message, QUERY_TIMEOUT_MS)));
    return { answers, silent: workers.filter((_w, i) => answers[i] === null).map((w) => w.process.pid ?? 0) };
  }

  /**
   * Re-reads the users file, and the TLS certificate and key when TLS is on. The users file is judged as
   * at start-up (readUsersFile), so a reload never accepts what the next start would refuse, and a file with
   * a malformed line (which a start skips with a warning) keeps the old table; it is checked
   * before anything is applied, so a refused reload changes nothing. A bad certificate pair keeps the old
   * pair and the old table.
   */
  async reload(source: ReloadSource): Promise<AdminFinal> {
    // One at a time up to the send (fts-admin reload, passwd, SIGHUP may come together): a reload that read
    // the file before another must not broadcast its older table after the other's newer one. The wait for
    // the workers' confirmations is outside the queue (each worker's channel keeps the order), so that
    // reloads behind one that waits for a hung worker do not wait for it in turn.
    const next = this.reloading.then(() => this.reloadOnce(source));
    this.reloading = next.catch(() => undefined);
    const fields = reloadFields(source);
    let outcome: Awaited<typeof next>;
    try {
      outcome = await next;
    } catch (err) {
      this.lastReload = { ...this.lastReload, successful: false };
      this.log.error({ err, ...fields }, 'reload failed');
      throw err;
    }
    if ('confirmed' in outcome) return outcome.confirmed;
    this.lastReload = { ...this.lastReload, successful: false };
    if (!outcome.ok) this.log.error(fields, `reload refused: ${outcome.error}`);
    return outcome;
  }

  /** Reads, judges and sends a reload: a refusal, or the answer once the workers have confirmed. */
  private async reloadOnce(source: ReloadSource): Promise<AdminFinal | { confirmed: Promise<AdminFinal> }> {
    let file: UsersFile;
    try {
      file = await readUsersFile(this.config.users, this.config.allowInsecureUsersFile);
    } catch (err) {
      if (!(err instanceof UsersFileRefused)) throw err;
      return { ok: false, error: `${err.message}; the old user table is kept` };
    }
    if (file.problems.length > 0) {
      const detail = file.problems.map((p) => `line ${p.line}: ${p.reason}`).join('; ');
      return { ok: false, error: `${this.config.users} has ${file.problems.length} malformed line(s) (${detail}); the old user table is kept` };
    }
    // Stricter than a start, which warns: on a running server an empty file is far more often a truncated
    // copy from configuration management than a wish to lock everyone out (stopping the server does that).
    if (file.users.size === 0) {
      return { ok: false, error: `${this.config.users} defines no valid user, so nobody could log in; the old user table is kept (to let nobody in, stop the server)` };
    }
    let rules: RulesFiles;
    try {
      rules = await readRulesFiles(this.config);
    } catch (err) {
      if (!(err instanceof RulesFileRefused)) throw err;
      return { ok: false, error: `${err.message}; the old quotas, permissions, rates, networks and user table are kept` };
    }
    const { quotas, permissions, rates, networks } = rules;
    let tlsReloaded = false;
    let tlsWarnings: string[] = [];
    if (this.config.tlsCert && this.config.tlsKey) {
      let pair: TlsPair;
      try {
        pair = await loadTlsPair({ cert: this.config.tlsCert, key: this.config.tlsKey });
      } catch (err) {
        return { ok: false, error: `${(err as Error).message}; the old certificate and user table are kept` };
      }
      this.pool.broadcast({ type: 'fts:reload-tls' });
      tlsReloaded = true;
      const { facts, warnings } = inspectTls(pair, this.config.tlsKey, this.log, 'reload');
      this.certificate = facts ?? this.certificate;
      tlsWarnings = warnings;
    }
    this.texts = { users: file.text, quotas: quotas?.text ?? null, permissions: permissions?.text ?? null, rates: rates?.text ?? null, networks: networks?.text ?? null };
    // Here, inside the queue, when the files take force: set at the workers' confirmation, a later reload
    // refused meanwhile would be overwritten and read as applied.
    this.lastReload = { successful: true, appliedAt: Date.now() };
    const sent = this.sendReload({ type: 'fts:users', text: file.text, quotas: this.texts.quotas, permissions: this.texts.permissions, rates: this.texts.rates, networks: this.texts.networks });
    const isUser = (name: string): boolean => file.users.has(name);
    const strangers = strangersIn(rules, isUser);
    for (const w of [...file.warnings, ...strangers]) this.log.warn(w.fields, w.message);
    // Users of the users file only: a line for someone else applies to no one (warned above).
    const ruleUsers = {
      ...(quotas === null ? {} : { quotaUsers: knownUsersIn(quotas, isUser) }),
      ...(permissions === null ? {} : { permissionUsers: knownUsersIn(permissions, isUser) }),
      ...(rates === null ? {} : { rateUsers: knownUsersIn(rates, isUser) }),
      ...(networks === null ? {} : { networkUsers: knownUsersIn(networks, isUser) }),
    };
    const confirmed = sent.then(({ confirmed, silent }): AdminFinal => {
      this.log.info({ ...reloadFields(source), users: file.users.size, tlsReloaded, ...ruleUsers, workersConfirmed: confirmed }, 'users file reloaded');
      const warnings = [...file.warnings, ...strangers].map((w) => w.message).concat(tlsWarnings);
      if (silent.length > 0) {
        const unconfirmed = `${silent.length === 1 ? 'worker' : 'workers'} ${silent.join(', ')} did not confirm the reload within ${RELOAD_CONFIRM_MS / 1000} s: ${silent.length === 1 ? 'it applies' : 'they apply'} the new files only once ${silent.length === 1 ? 'it reads' : 'they read'} the message`;
        this.log.warn({ workers: silent }, unconfirmed);
        warnings.push(unconfirmed);
      }
      return { ok: true, result: { users: file.users.size, tlsReloaded, usersFile: this.config.users, ...ruleUsers, workersConfirmed: confirmed, ...(warnings.length > 0 ? { warnings } : {}) } };
    });
    return { confirmed };
  }

  /**
   * Sends a reload to every worker that has had its init (at once, before it returns) and waits for each to
   * confirm that it is in force. A worker forked meanwhile gets the new texts in its init instead; one that
   * exits meanwhile serves no one.
   */
  private async sendReload(body: Omit<Extract<PrimaryToWorker, { type: 'fts:users' }>, 'reqId'>): Promise<{ confirmed: number; silent: number[] }> {
    const workers = this.pool.workers.filter((w) => w.isConnected() && this.initialised.has(w));
    const answers = await Promise.all(workers.map((w) => queryWorker(w, body, RELOAD_CONFIRM_MS)));
    const silent = workers.filter((w, i) => answers[i] === null && w.isConnected()).map((w) => w.process.pid ?? 0);
    return { confirmed: answers.filter((a) => a !== null).length, silent };
  }

  async kick(session: string): Promise<AdminLine> {
    const { answers, silent } = await this.askAll({ type: 'fts:kick', session });
    const found = answers.some((a) => a !== null && !Array.isArray(a) && 'found' in a && a.found);
    if (found) return { ok: true };
    if (silent.length === 0) return { ok: false, error: `no session ${session}`, code: 'NO_SESSION' };
    return { ok: false, error: `no session ${session} found; ${silentWorkers(silent)} and may hold it` };
  }

  /**
   * SIGINT, SIGTERM and `fts-admin drain` all land here. During a drain a later call can only bring the
   * deadline forward (`fts-admin drain --timeout N` on a drain that has longer to go); a second signal is
   * forceStop instead.
   */
  drain(reason: string, graceSeconds = this.config.graceSeconds): void {
    const deadline = Date.now() + graceSeconds * 1000;
    if (this.draining && deadline >= this.drainDeadline) return;
    const first = !this.draining;
    this.draining = true;
    this.drainDeadline = deadline;
    this.log.info({ reason, graceSeconds }, first ? 'drain started' : 'drain deadline brought forward');
    this.pool.stop();
    this.pool.broadcast({ type: 'fts:drain', deadline });
    if (first) {
      // The first report at once: with a short grace period, one a second later could come after the end.
      void this.reportDrain();
      setInterval(() => void this.reportDrain(), DRAIN_PROGRESS_INTERVAL_MS).unref();
    }
    clearTimeout(this.hardKill);
    this.hardKill = setTimeout(() => {
      this.log.error({ workers: this.pool.workers.length }, 'workers did not exit after the grace period; killing them');
      this.pool.killAll('SIGKILL');
    }, graceSeconds * 1000 + HARD_KILL_AFTER_DEADLINE_MS);
    this.hardKill.unref();
  }

  /** A second Ctrl+C: cut everything now. Partial uploads stay staged for a resume; nothing partial is published. */
  forceStop(): void {
    this.log.warn('second signal: stopping now; partial uploads are kept for resume, never published');
    this.pool.broadcast({ type: 'fts:abort' });
    setTimeout(() => this.pool.killAll('SIGKILL'), FORCED_STOP_KILL_MS).unref();
  }

  private async reportDrain(): Promise<void> {
    const deadline = this.drainDeadline;
    const workers = await this.workerStats(DRAIN_PROGRESS_QUERY_MS);
    if (workers.length === 0 || this.pool.workers.length === 0) return;
    const sessions = workers.reduce((n, w) => n + w.connections, 0);
    const transfers = workers.reduce((n, w) => n + w.transfers, 0);
    // A hung or stopped worker reports zeros: without this count the drain would look idle but not end.
    const notAnswering = workers.filter((w) => !w.responding && w.starting !== true).length;
    const hooks = workers.reduce((n, w) => n + (w.hooks ?? 0), 0);
    const secondsLeft = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    const silent = notAnswering > 0 ? `, ${notAnswering} workers not answering` : '';
    const hooksText = hooks > 0 ? `, ${hooks} upload hook runs` : '';
    this.log.info({ sessions, transfers, hooks, workers: workers.length, notAnswering, secondsLeft }, `drain waiting for ${sessions} sessions, ${transfers} transfers${hooksText}${silent}, ${secondsLeft}s left`);
    for (const watcher of this.drainWatchers) watcher({ event: 'progress', sessions, transfers, workers: workers.length, notAnswering, ...(hooks > 0 ? { hooks } : {}), secondsLeft });
  }
}
