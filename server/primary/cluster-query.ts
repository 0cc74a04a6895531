import cluster, { type Worker } from 'node:cluster';
import { isFtsMessage, type PrimaryToWorker, type WorkerToPrimary } from '../ipc.js';

type Query = Extract<PrimaryToWorker, { reqId: number }>;
type QueryBody = Query extends infer Q ? (Q extends { reqId: number } ? Omit<Q, 'reqId'> : never) : never;
type ReplyData = Extract<WorkerToPrimary, { type: 'fts:reply' }>['data'];

let nextReqId = 1;
const pending = new Map<number, (data: ReplyData) => void>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  cluster.on('message', (_worker, msg: unknown) => {
    if (!isFtsMessage(msg)) return;
    const m = msg as WorkerToPrimary;
    if (m.type !== 'fts:reply') return;
    const settle = pending.get(m.reqId);
    if (settle) {
      pending.delete(m.reqId);
      settle(m.data);
    }
  });
}

/** Per worker, what to do when its channel closes: one listener each, however many questions are open. */
const goneWaiters = new WeakMap<Worker, Set<() => void>>();

/** Calls `fn` once `worker`'s channel closes; returns the function that cancels it. */
function whenGone(worker: Worker, fn: () => void): () => void {
  let waiters = goneWaiters.get(worker);
  if (waiters === undefined) {
    const all = (waiters = new Set());
    goneWaiters.set(worker, all);
    worker.once('disconnect', () => {
      for (const waiter of [...all]) waiter();
      all.clear();
    });
  }
  const mine = waiters;
  mine.add(fn);
  return () => mine.delete(fn);
}

/**
 * Asks one worker a question over IPC. Settles exactly once: with the answer, or with null when the worker
 * does not answer within `timeoutMs` (it may be stopped with SIGSTOP, hung, or exiting), so that a single
 * bad worker can never hang an admin command.
 */
export function queryWorker(worker: Worker, body: QueryBody, timeoutMs: number): Promise<ReplyData | null> {
  install();
  const reqId = nextReqId++;
  return new Promise((resolve) => {
    const settle = (data: ReplyData | null): void => {
      clearTimeout(timer);
      pending.delete(reqId);
      forget();
      resolve(data);
    };
    const timer = setTimeout(() => settle(null), timeoutMs);
    pending.set(reqId, settle);
    // A worker that exits (or whose channel closes) meanwhile will never answer: no need to wait out the timer.
    const forget = whenGone(worker, () => settle(null));
    try {
      if (!worker.isConnected()) throw new Error('not connected');
      worker.send({ ...body, reqId } as Query);
    } catch {
      settle(null);
    }
  });
}
