import cluster from 'node:cluster';
import { loadUsers } from '../auth/users.js';
import type { Config } from '../config.js';
import { isFtsMessage, type WorkerToPrimary } from '../ipc.js';
import type { Logger } from '../log.js';
import { Store, sweepStaging } from '../storage/store.js';
import { WorkerPool } from './worker-pool.js';

/** Workers that have not exited this long after the drain deadline are killed. */
const HARD_KILL_AFTER_DEADLINE_MS = 5_000;
/** After a forced stop, workers get this long before SIGKILL. */
const FORCED_STOP_KILL_MS = 5_000;

/** A startup problem: reported as one line on stderr, exit code 1. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/**
 * The primary: validates what workers will need, forks them, owns the drain. It never touches client
 * connections itself (apart from the cluster's round-robin hand-off of the shared listening socket).
 */
export async function runPrimary(config: Config, log: Logger): Promise<void> {
  const { problems } = await loadUsers(config.users).catch((err: Error) => {
    throw new StartupError(err.message);
  });
  for (const p of problems) log.warn({ line: p.line, reason: p.reason }, `users file line ${p.line} skipped: ${p.reason}`);
  const store = new Store(config.storage);
  await store.init().catch((err: Error) => {
    throw new StartupError(`storage ${config.storage}: ${err.message}`);
  });
  const swept = await sweepStaging(config.storage, config.partialTtlSeconds * 1000);
  if (swept > 0) log.info({ removed: swept }, 'removed expired partial uploads');

  const pool = new WorkerPool(config, log);
  let listening = false;
  let draining = false;

  cluster.on('message', (_worker, msg: unknown) => {
    if (!isFtsMessage(msg)) return;
    const m = msg as WorkerToPrimary;
    if (m.type === 'fts:listening' && !listening) {
      listening = true;
      log.info({ address: m.address, port: m.port, workers: config.workers }, `listening on ${m.address}:${m.port}`);
    }
  });
  pool.onExit = (worker, code) => {
    // A worker that fails before anyone listened means the listener cannot be opened (port in use, bad host).
    if (!listening && code !== 0) {
      process.stderr.write(`fts-server: worker ${worker.process.pid} failed during startup (exit code ${code}); see the log above\n`);
      pool.stop();
      pool.killAll('SIGKILL');
      process.exit(1);
    }
  };
  pool.onAllExited = () => {
    log.info('stopped');
    process.exit(0);
  };

  const drain = (reason: string): void => {
    if (draining) return;
    draining = true;
    const deadline = Date.now() + config.graceSeconds * 1000;
    log.info({ reason, graceSeconds: config.graceSeconds }, 'drain started');
    pool.stop();
    pool.broadcast({ type: 'fts:drain', deadline });
    setTimeout(() => {
      log.error({ workers: pool.workers.length }, 'workers did not exit after the grace period; killing them');
      pool.killAll('SIGKILL');
    }, config.graceSeconds * 1000 + HARD_KILL_AFTER_DEADLINE_MS).unref();
  };

  const forceStop = (): void => {
    log.warn('second signal: stopping now; partial uploads are discarded');
    pool.broadcast({ type: 'fts:abort' });
    setTimeout(() => pool.killAll('SIGKILL'), FORCED_STOP_KILL_MS).unref();
  };

  const onSignal = (signal: NodeJS.Signals) => {
    if (draining && signal === 'SIGINT') forceStop();
    else drain(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  pool.start();
}
