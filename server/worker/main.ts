import net from 'node:net';
import { encodeHeader, errnoReason, errnoWords, hostPort } from '../../protocol/index.js';
import { parseUsers, type UserTable } from '../auth/users.js';
import type { Config } from '../config.js';
import { isFtsMessage, type PrimaryToWorker, type WorkerStats, type WorkerToPrimary } from '../ipc.js';
import { createLogger, whenLogOutputLost } from '../log.js';
import { WorkerMetrics } from '../metrics/worker-metrics.js';
import { onLockCompromised, setLockWaitSeconds } from '../storage/locks.js';
import { setDirectIo } from '../../protocol/direct-io.js';
import { Store } from '../storage/store.js';
import { Permissions } from '../storage/permissions.js';
import { QuotaLimits } from '../storage/quota-limits.js';
import type { WorkerContext } from './context.js';
import { UploadHooks } from './upload-hooks.js';
import { memberOf, Networks } from '../auth/networks.js';
import { ProxyRefusalLog, readProxyHeader, REFUSAL_LOG_INTERVAL_MS } from './proxy-protocol.js';
import { ThrottledLinesByKey } from '../throttled-lines.js';
import { newSessionId, Session } from './session.js';
import { GateClient, normaliseIp } from './gate-client.js';
import { TlsTerminator } from './tls.js';
import { RateLimits } from '../rate-limits.js';

/** After an abort, sessions get this long to clean up their staging files before the worker exits anyway. */
const ABORT_CLEANUP_MS = 3_000;

function send(msg: WorkerToPrimary): void {
  // Without the channel (the primary is gone and this worker is cleaning up) a send would throw
  // ERR_IPC_CHANNEL_CLOSED as an unhandled 'error'.
  if (process.connected) process.send?.(msg);
}

/**
 * A worker process: one net.Server on the listening socket shared by the cluster, one Session per
 * connection. It never decides on its own to stop: signals go to the primary, which sends fts:drain.
 */
export async function runWorker(config: Config): Promise<void> {
  const log = createLogger(config.logLevel, 'worker').child({ worker: process.pid });
  // Ctrl+C delivers SIGINT to the whole process group (a closed terminal SIGHUP); the primary coordinates
  // the drain and the reload.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  process.on('SIGHUP', () => {});
  // The primary drains the whole server: this worker cannot log (or audit) any more.
  whenLogOutputLost((err) => send({ type: 'fts:log-output-lost', reason: errnoReason(err) }));

  // Before the first session: every publish and delete of this worker waits at most --lock-timeout for a
  // name's lock. (stale and update are not configurable: every process must share them, locks.ts.)
  setLockWaitSeconds(config.lockTimeoutSeconds);
  setDirectIo(config.directIo); // before the first transfer, like the lock wait
  const store = new Store(config.storage, new QuotaLimits(config.quotaBytes, config.maxFiles), config.maxFileSize);
  /** The quotas: --quota, replaced for the users the quota file names (its text comes with the users file). */
  const useQuotas = (text: string | null): void => store.setLimits(QuotaLimits.fromFile(config.quotaBytes, config.maxFiles, text));
  /** What each user may do (the permissions file's text comes with the users file too). */
  const usePermissions = (text: string | null): void => store.setPermissions(Permissions.fromFile(text));
  /** The context, once the init has come and it exists. */
  let context: WorkerContext | null = null;
  /**
   * The rules the sessions read from the context (their files' texts come with the users file too): kept
   * here until the context exists (the init comes before it), and set on the context afterwards.
   */
  const rateFlags = { upload: config.maxUploadRate, download: config.maxDownloadRate };
  const initialRules: Pick<WorkerContext, 'rates' | 'networks'> = { rates: new RateLimits(rateFlags), networks: new Networks() };
  const rules = (): Pick<WorkerContext, 'rates' | 'networks'> => context ?? initialRules;
  /** Each user's transfer rates. */
  const useRates = (text: string | null): void => {
    rules().rates = RateLimits.fromFile(rateFlags, text);
  };
  /** Where each user may log in from. */
  const useNetworks = (text: string | null): void => {
    rules().networks = Networks.fromFile(text);
  };
  const sessions = new Set<Session>();
  // The primary validated the users file and sends its text; we never read a file the primary rejected.
  // The token secret comes with it (never through the environment: see fts:init in ipc.ts).
  // Messages that arrive after fts:init but before the main handler below is installed (a reload sent
  // right behind the init is read in the same batch, and its 'message' event fires before the promise's
  // continuation runs) are kept and replayed, or a reload could miss this worker.
  const early: unknown[] = [];
  let initialised = false;
  let onEarly: (msg: unknown) => void = () => undefined;
  const { users, secret, saltKey, port } = await new Promise<{ users: UserTable; secret: Buffer; saltKey: Buffer; port: number }>((resolve) => {
    onEarly = (msg: unknown): void => {
      if (!isFtsMessage(msg)) return;
      if (initialised) {
        early.push(msg);
        return;
      }
      // Before the init, a broadcast (users, TLS) is older than what the init will carry: ignored.
      const m = msg as PrimaryToWorker;
      if (m.type === 'fts:init') {
        initialised = true;
        useQuotas(m.quotas);
        usePermissions(m.permissions);
        useRates(m.rates);
        useNetworks(m.networks);
        resolve({ users: parseUsers(m.users).users, secret: Buffer.from(m.secret, 'hex'), saltKey: Buffer.from(m.saltKey, 'hex'), port: m.port });
      } else if (m.type === 'fts:drain' || m.type === 'fts:abort') {
        // Stopped before we ever listened: there is nothing to drain.
        log.info('stop requested before listening; exiting');
        process.exit(0);
      }
    };
    process.on('message', onEarly);
    send({ type: 'fts:need-init' });
  });

  /** When the drain ends (ms since the epoch): sessions, then upload hooks, get until then. */
  let drainDeadline = Infinity;
  let exiting = false;
  /** Hands our final counters to the primary, then exits. Bounded: a missing primary cannot keep us alive. */
  const exit = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // Upload hooks queued or running get what is left of the drain's grace (none after an abort).
    const hooks = context?.hooks ?? null;
    if (hooks === null || hooks.pending === 0) {
      hooks?.stop();
      leave(code);
      return;
    }
    const deadline = Number.isFinite(drainDeadline) ? drainDeadline : Date.now();
    log.info({ pending: hooks.pending, waitMs: Math.max(0, deadline - Date.now()) }, 'waiting for upload hooks');
    void hooks.finish(deadline).finally(() => leave(code));
  };
  const leave = (code: number): void => {
    log.info({ code }, 'worker exiting');
    const done = (): never => process.exit(code);
    setTimeout(done, 1_000).unref();
    metrics
      .snapshot()
      .then((final) => {
        if (!process.connected) return done();
        process.send?.({ type: 'fts:final-metrics', metrics: final } satisfies WorkerToPrimary, undefined, {}, () => done());
      })
      .catch(done);
  };

  const checkDrained = (): void => {
    if (!ctx.draining) return;
    // Idle sessions are told at once (their clients can reconnect to another node now); busy ones when
    // their request is done (this runs again then).
    for (const s of sessions) if (!s.busy) s.bye('SHUTTING_DOWN');
    if (sessions.size === 0) exit(0);
  };

  if (secret.length < 32) throw new Error('worker started without a session secret');
  if (saltKey.length < 32) throw new Error('worker started without a salt key');
  const metrics = new WorkerMetrics();
  // Only ordering suffers (renames and unlinks are atomic), but it means clock skew or a stall: say so.
  onLockCompromised(({ lockfile, error }) => {
    log.warn({ lockfile, err: error }, 'lock compromised: another process broke a lock this worker held');
    metrics.lockCompromised();
  });
  const hooks = config.uploadHook === null ? null : new UploadHooks(config.uploadHook, config.uploadHookTimeoutSeconds * 1000, log, metrics, config.hookEvents);
  const refusals = new ThrottledLinesByKey<{ remote: string }>(REFUSAL_LOG_INTERVAL_MS, (reason, fields, refusedSinceLastLine) =>
    log.info({ event: 'rejected', reason, ...fields, refusedSinceLastLine }, 'connection refused'),
  );
  const refused = (reason: string, remote: string): void => refusals.note(reason, { remote });
  const ctx: WorkerContext = { config, log, store, metrics, gate: new GateClient(), secret, saltKey, users, ...initialRules, hooks, draining: false, onSessionIdle: checkDrained, refused };
  context = ctx;
  /** Makes `table` the users table: it keeps what its predecessor derived and derives the rest meanwhile. */
  const useUsers = (table: UserTable): void => {
    if (table !== ctx.users) table.adoptDerived(ctx.users);
    ctx.users = table;
    void table.prepareScram(saltKey, () => ctx.users === table);
  };
  useUsers(users);

  const tlsTerminator = config.tlsCert && config.tlsKey ? await TlsTerminator.create({ cert: config.tlsCert, key: config.tlsKey }) : null;
  // allowHalfOpen: a client may send its last requests and shut down its sending side while it waits for
  // the replies (`printf … | nc`); the session answers them all, then closes its side.
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (raw) => void accept(raw));
  // Validated by the primary; were it not, nobody (rather than everybody) may send PROXY headers.
  const mayProxy = config.proxyFrom === null ? () => true : memberOf(config.proxyFrom);
  const proxyRefusals = new ProxyRefusalLog((fields) => log.warn({ event: 'rejected', reason: 'proxy_header', ...fields }, 'connection closed: no valid PROXY protocol v2 header (is the load balancer sending send-proxy-v2, and do clients reach this port only through it?)'));
  const accept = async (raw: net.Socket): Promise<void> => {
    raw.on('error', () => undefined);
    if (ctx.draining) {
      // On a TLS port nothing but TLS may be sent (PROTOCOL.md §1), and a handshake is not worth it now.
      if (tlsTerminator) raw.destroy();
      else raw.end(encodeHeader({ status: 'bye', code: 'SHUTTING_DOWN', message: 'server is shutting down' }));
      return;
    }
    // Behind HAProxy the real client address arrives in a PROXY v2 header, before anything else (TLS too).
    // Read now: a destroyed socket no longer knows its peer.
    const from = hostPort(raw.remoteAddress ?? '?', raw.remotePort ?? '?');
    if (config.proxyProtocol && !mayProxy(raw.remoteAddress ?? '')) {
      // Only the load balancer may say where a client comes from: anyone else could claim any address,
      // past bans, the networks file and the per-address limits.
      proxyRefusals.refused(from, 'the peer is not in --proxy-from');
      send({ type: 'fts:rejected', reason: 'proxy_header' });
      raw.destroy();
      return;
    }
    const proxied = config.proxyProtocol
      ? await readProxyHeader(raw, (problem) => {
          proxyRefusals.refused(from, problem);
          // Counted by the primary, with the refusals it decides itself (the log line is rate-limited).
          send({ type: 'fts:rejected', reason: 'proxy_header' });
        })
      : null;
    if (config.proxyProtocol && proxied === null) return;
    const peer = proxied?.address ? { address: proxied.address, port: proxied.port ?? 0 } : undefined;
    // Counted before any TLS handshake, so handshakes in progress take their place in every limit. A PROXY
    // LOCAL connection is the proxy's own health check (only the proxy can send PROXY headers: SECURITY.md):
    // it must see the greeting however many clients are logging in, or a burst of them would mark every
    // node DOWN, so it is not counted (it is not registered with the gate, whose later notices ignore it).
    const id = newSessionId();
    const healthCheck = proxied?.local === true;
    const admission = healthCheck ? ({ ok: true } as const) : await ctx.gate.admit(id, normaliseIp(peer?.address ?? raw.remoteAddress));
    // A refused TLS connection still completes its handshake (bounded by the terminator's timeouts), so
    // that the client reads the refusal and its code instead of a reset.
    // Half-close is a plain-TCP feature: under TLS the peer's close_notify ends the session as before.
    if (tlsTerminator) raw.allowHalfOpen = false;
    const socket = tlsTerminator ? await tlsTerminator.upgrade(raw) : raw;
    if (socket === null || socket.destroyed) {
      if (admission.ok) ctx.gate.closed(id);
      return;
    }
    const session = new Session(socket, ctx, admission, { id, ...(peer ? { peer } : {}), healthCheck, addressUnknown: config.proxyProtocol && peer === undefined });
    sessions.add(session);
    void session.run().finally(() => {
      sessions.delete(session);
      checkDrained();
    });
  };
  server.on('error', (err: NodeJS.ErrnoException) => {
    const reason = `cannot listen on ${hostPort(config.host, port)}: ${errnoReason(err)}`;
    log.fatal({ err }, reason);
    process.exitCode = 1;
    // The primary prints the reason before it exits; exit once the message is on its way.
    if (process.connected) process.send?.({ type: 'fts:startup-failed', reason } satisfies WorkerToPrimary, undefined, {}, () => process.exit(1));
    else process.exit(1);
  });
  server.listen({ host: config.host, port }, () => {
    const address = server.address();
    if (address && typeof address === 'object') send({ type: 'fts:listening', address: address.address, port: address.port });
  });

  const stats = (): WorkerStats => {
    let authenticated = 0;
    let transfers = 0;
    for (const s of sessions) {
      if (s.authenticated) authenticated++;
      if (s.transferring) transfers++;
    }
    return { pid: process.pid, connections: sessions.size, sessions: authenticated, transfers, ...(ctx.hooks === null ? {} : { hooks: ctx.hooks.pending }) };
  };

  let graceTimer: NodeJS.Timeout | undefined;
  /** Starts the drain, or brings its deadline forward (a later, shorter `fts-admin drain --timeout`). */
  const drain = (deadline: number): void => {
    if (deadline >= drainDeadline) return;
    drainDeadline = deadline;
    ctx.hooks?.hasten(deadline);
    clearTimeout(graceTimer);
    graceTimer = setTimeout(() => abort('grace period over'), Math.max(0, deadline - Date.now()));
    graceTimer.unref();
    if (ctx.draining) {
      log.info({ graceMs: Math.max(0, deadline - Date.now()) }, 'drain deadline brought forward');
      return;
    }
    ctx.draining = true;
    server.close();
    log.info({ graceMs: Math.max(0, deadline - Date.now()) }, 'draining');
    checkDrained();
  };

  const abort = (reason: string): void => {
    ctx.draining = true;
    // Nothing more is waited for: no hook starts, and those running are killed (and logged).
    drainDeadline = Math.min(drainDeadline, Date.now());
    ctx.hooks?.stop();
    ctx.hooks?.hasten(drainDeadline);
    server.close();
    log.warn({ reason, sessions: sessions.size }, 'aborting open sessions');
    for (const s of sessions) {
      s.bye('SHUTTING_DOWN');
      s.destroy();
    }
    if (sessions.size === 0) exit(0);
    setTimeout(() => exit(0), ABORT_CLEANUP_MS).unref();
  };

  const onMessage = (msg: unknown): void => {
    if (!isFtsMessage(msg)) return; // prom-client shares this channel
    const m = msg as PrimaryToWorker;
    switch (m.type) {
      case 'fts:drain':
        drain(m.deadline);
        break;
      case 'fts:abort':
        abort('forced stop');
        break;
      case 'fts:users':
        useUsers(parseUsers(m.text).users);
        useQuotas(m.quotas);
        usePermissions(m.permissions);
        useRates(m.rates);
        useNetworks(m.networks);
        log.info({ users: ctx.users.size }, 'users reloaded');
        send({ type: 'fts:reply', reqId: m.reqId, data: { applied: true } });
        break;
      case 'fts:reload-tls':
        tlsTerminator?.reload().then(
          () => log.info('TLS certificate reloaded'),
          (err: unknown) => log.error({ err }, 'TLS certificate reload failed; keeping the old one'),
        );
        break;
      case 'fts:query':
        if (m.what === 'metrics') {
          void metrics.snapshot().then((data) => send({ type: 'fts:reply', reqId: m.reqId, data }));
        } else {
          send({ type: 'fts:reply', reqId: m.reqId, data: m.what === 'stats' ? stats() : [...sessions].filter((s) => !s.closed).map((s) => s.snapshot()) });
        }
        break;
      case 'fts:kick': {
        const target = [...sessions].find((s) => s.id === m.session);
        if (target) target.kick();
        send({ type: 'fts:reply', reqId: m.reqId, data: { found: target !== undefined } });
        break;
      }
    }
  };
  process.on('message', onMessage);
  process.off('message', onEarly);
  for (const msg of early.splice(0)) onMessage(msg);
  // The primary is gone: nobody coordinates us any more, so stop safely.
  process.on('disconnect', () => abort('primary disconnected'));
}
