import type { Worker } from 'node:cluster';

/** The part of a raw libuv TCP handle (what node:cluster passes around) that we use. */
interface RawHandle {
  close(): void;
}

/** node:cluster's internal message handing an accepted connection to a worker (internal/cluster/round_robin_handle.js). */
interface NewConn {
  cmd: 'NODE_CLUSTER';
  act: 'newconn';
  seq: number;
}

function isNewConn(msg: unknown): msg is NewConn {
  const m = msg as Partial<NewConn> | null;
  return typeof m === 'object' && m !== null && m.cmd === 'NODE_CLUSTER' && m.act === 'newconn' && typeof m.seq === 'number';
}

function ackOf(msg: unknown): number | undefined {
  const m = msg as { cmd?: unknown; ack?: unknown } | null;
  return typeof m === 'object' && m !== null && m.cmd === 'NODE_CLUSTER' && typeof m.ack === 'number' ? m.ack : undefined;
}

/**
 * Closes the connections node:cluster handed to a worker that died before taking them.
 *
 * With the round-robin scheduling (Linux's default) the primary accepts, sends the connection's handle to a
 * worker and keeps its own copy open until the worker's cluster acknowledgement arrives; only then does it
 * close the copy (or pass the connection on, if the worker refused it). A worker killed between the send and
 * its acknowledgement never answers, and nothing in Node closes or re-sends that copy (checked in Node 20).
 * The client waits forever for a greeting, and once it gives up the primary keeps the socket in CLOSE-WAIT
 * until it stops, one per such death (measured: one per SIGKILL under a steady stream of connections).
 *
 * So the primary notes every connection handed to `worker` until it is acknowledged, and closes those still
 * unacknowledged once the worker's process has exited and its channel is closed ('close'): from then on no
 * acknowledgement can arrive, so the copy is closed exactly once, and Node's pending callback (which would
 * have closed or re-sent it) can never run. The client sees the connection closed at once, as it would have
 * had the worker taken it and died. Internal message shapes are matched defensively: if a future Node
 * changes them, this does nothing and the old behaviour stays.
 */
export function guardHandoffs(worker: Worker, onLost: (count: number) => void): void {
  const proc = worker.process as Worker['process'] & { send?: (...args: unknown[]) => boolean };
  const originalSend = proc.send;
  if (typeof originalSend !== 'function') return;
  const unacknowledged = new Map<number, RawHandle>();
  proc.send = function guardedSend(this: unknown, ...args: unknown[]): boolean {
    const [message, handle] = args;
    if (isNewConn(message) && typeof (handle as Partial<RawHandle> | undefined)?.close === 'function') unacknowledged.set(message.seq, handle as RawHandle);
    return originalSend.apply(this, args);
  };
  // 'internalMessage' carries the NODE_* messages; node:cluster's own listener, added by fork(), runs first.
  proc.on('internalMessage', (message: unknown) => {
    const ack = ackOf(message);
    if (ack !== undefined) unacknowledged.delete(ack);
  });
  proc.once('close', () => {
    const lost = unacknowledged.size;
    for (const handle of unacknowledged.values()) {
      try {
        handle.close();
      } catch {
        // already closed
      }
    }
    unacknowledged.clear();
    if (lost > 0) onLost(lost);
  });
}
