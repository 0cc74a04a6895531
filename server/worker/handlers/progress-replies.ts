import { performance } from 'node:perf_hooks';
import type { SessionIo } from '../session-io.js';

/**
 * How often an upload that asked for them (`"progress": true`, PROTOCOL.md §6.1) is told how far the server
 * has got: often enough for a progress display to show a rate, rarely enough to cost nothing (a frame of
 * ~50 bytes a quarter second).
 */
const PROGRESS_INTERVAL_MS = 250;

/**
 * The `progress` interim replies of one upload: call it with the bytes of the file received so far after
 * each data frame; it sends at most one reply per PROGRESS_INTERVAL_MS, none unless `wanted`. The client's
 * own count of what it sent runs ahead of this by whatever the sockets buffer (megabytes), and by much more
 * when the server paces the upload (--max-upload-rate). None is sent while replies to earlier pipelined
 * requests wait (a publish waiting for a lock): queued, they would all leave together once those are sent,
 * and count against the session's outbox limit; the next one after them says where the upload stands.
 */
export function progressReplies(io: SessionIo, wanted: boolean): (received: number) => void {
  if (!wanted) return () => undefined;
  let last = performance.now();
  return (received) => {
    const now = performance.now();
    if (now - last < PROGRESS_INTERVAL_MS) return;
    if (io.sendIfNothingWaits({ status: 'progress', received })) last = now;
  };
}
