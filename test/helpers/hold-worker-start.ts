/**
 * Preloaded into a test's fts-server with NODE_OPTIONS=--import (see WorkerHold): while the file named by
 * FTSTEST_HOLD_WORKERS exists, a worker process that starts waits here, before any fts code runs, so it
 * stays forked but not listening (the state of a slow or failing start) until the test removes the file.
 * The primary is never held. Bounded: after HOLD_MAX_MS a worker goes on regardless.
 */
import cluster from 'node:cluster';
import { existsSync } from 'node:fs';

const HOLD_MAX_MS = 60_000;
const POLL_MS = 20;

const holdFile = process.env['FTSTEST_HOLD_WORKERS'];
if (cluster.isWorker && holdFile !== undefined && holdFile !== '') {
  const deadline = Date.now() + HOLD_MAX_MS;
  while (existsSync(holdFile) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
}
