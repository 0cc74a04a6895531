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

/**
 * Asks one worker a question over IPC. Settles exactly once: with the answer, or with null when the worker
 * does not answer within `timeoutMs` (it may be stopped with SIGSTOP, hung, or exiting), so that a single
 * bad worker can never hang an admin command.
 */
export function queryWorker(worker: Worker, body: QueryBody, timeoutMs: number): Promise<ReplyData | null> {
  install();
  const reqId = nextReqId++;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pending.delete(reqId);
      resolve(null);
    }, timeoutMs);
    pending.set(reqId, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
    try {
      if (!worker.isConnected()) throw new Error('not connected');
      worker.send({ ...body, reqId } as Query);
    } catch {
      clearTimeout(timer);
      pending.delete(reqId);
      resolve(null);
    }
  });
}
