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

/** child_process's own answer to a message that carried a handle: received (ACK) or arrived without it (NACK). */
function handleAnswerOf(msg: unknown): 'ack' | 'nack' | undefined {
  const cmd = (msg as { cmd?: unknown } | null)?.cmd;
  return cmd === 'NODE_HANDLE_ACK' ? 'ack' : cmd === 'NODE_HANDLE_NACK' ? 'nack' : undefined;
}

/** What happened to connections handed to a worker that never took them. */
export interface HandoffLosses {
  /** The worker died before taking `count` connections; they were closed. */
  died(count: number): void;
  /** A connection reached the worker without its socket (it had no free file descriptor); it was closed. */
  undelivered(): void;
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
export function guardHandoffs(worker: Worker, losses: HandoffLosses): void {
  const proc = worker.process as Worker['process'] & { send?: (...args: unknown[]) => boolean };
  const originalSend = proc.send;
  if (typeof originalSend !== 'function') return;
  const unacknowledged = new Map<number, RawHandle>();
  // Every message sent with a handle whose delivery child_process has not confirmed yet, oldest first (the
  // connection's seq, or null for any other handle): it sends one handle at a time and queues the rest, so
  // each ACK or NACK answers the oldest.
  const inDelivery: Array<number | null> = [];
  proc.send = function guardedSend(this: unknown, ...args: unknown[]): boolean {
    const [message, handle] = args;
    const hasHandle = handle !== undefined && handle !== null && typeof handle !== 'function';
    if (isNewConn(message) && typeof (handle as Partial<RawHandle> | undefined)?.close === 'function') {
      unacknowledged.set(message.seq, handle as RawHandle);
      inDelivery.push(message.seq);
    } else if (hasHandle) {
      inDelivery.push(null);
    }
    return originalSend.apply(this, args);
  };
  // 'internalMessage' carries the NODE_* messages; node:cluster's own listener, added by fork(), runs first.
  proc.on('internalMessage', (message: unknown) => {
    const ack = ackOf(message);
    if (ack !== undefined) unacknowledged.delete(ack);
    const answer = handleAnswerOf(message);
    if (answer === undefined) return;
    const seq = inDelivery.shift();
    if (answer === 'ack' || seq === undefined || seq === null || !unacknowledged.has(seq)) return;
    // NACK: the worker received the message but not the socket (MSG_CTRUNC: it had no free descriptor) and
    // dropped both. Node neither re-sends a raw handle nor tells node:cluster, whose round robin then waits
    // for ever for this worker's answer and never gives it another connection: one EMFILE would take the
    // worker out of service for good. So the worker's answer is given in its place, as accepted, which
    // makes node:cluster close the primary's copy (the client sees the connection closed, as when a server
    // is out of descriptors) and hand the worker the next connection. Re-sending instead could loop for as
    // long as the worker has no descriptor.
    unacknowledged.delete(seq);
    proc.emit('internalMessage', { cmd: 'NODE_CLUSTER', ack: seq, accepted: true });
    losses.undelivered();
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
    if (lost > 0) losses.died(lost);
  });
}
