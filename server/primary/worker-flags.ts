/**
 * How the primary tunes the worker processes it forks: environment variables and node flags, each with a
 * measured reason, each overridable by the operator.
 */

/**
 * libuv's thread pool runs every file operation, fsync included. Its default of 4 threads caps a worker at
 * 4 fsyncs in flight, which is what limits parallel publishes of small files; fsync threads mostly sleep
 * in the kernel, so more of them cost little. An operator's UV_THREADPOOL_SIZE wins.
 */
const WORKER_THREADPOOL_SIZE = '16';

/**
 * glibc gives freed memory at the top of its heap back to the system as soon as 128 KiB are free there, and
 * takes it back on the next allocations, one page fault per page. A worker frees its socket reads (64 KiB
 * each, Node's own) in bursts at every collection, so a transfer kept faulting the same memory back in:
 * 0.4–0.5 s of system time per GiB uploaded, and each fault is expensive on a VM. Keeping 8 MiB of padding
 * at the top of the heap stops that (4 MiB gave half the gain, 16 MiB no more than 8), at the cost of at
 * most 8 MiB per worker that stays resident after a burst. Setting it also fixes glibc's mmap threshold at
 * 128 KiB (no dynamic adjustment), which suits a worker: its large buffers are the payload pool's slabs,
 * allocated once and reused. An operator's MALLOC_TOP_PAD_ wins.
 */
const WORKER_MALLOC_TOP_PAD = String(8 * 1024 * 1024);

/**
 * V8 grows a process's young generation (two semispaces) from 1 MiB up to 16 MiB each whenever much
 * survives a scavenge, and rarely shrinks it again. A worker's garbage is many small short-lived objects
 * (frames, replies, sessions), so a burst of connections left each worker ~25 MiB larger for good: the
 * fuzz test's 20,000 hostile cases grew the server by 120–150 MiB with the default and by 61–77 MiB in
 * most runs with 2 MiB, and 1000 idle sessions cost 37 against 18 MiB. Throughput did not move
 * (alternated bench runs: small files, 1 GiB and 16 × 64 MiB rows within noise), since a transfer's
 * payloads live outside the JS heap. An operator's --max-semi-space-size (in NODE_OPTIONS or on node's command line) wins.
 */
const WORKER_SEMI_SPACE_MIB = 2;

/** The tuning variables a worker is started with; the operator's own values win. */
export function workerEnv(env: NodeJS.ProcessEnv): { UV_THREADPOOL_SIZE: string; MALLOC_TOP_PAD_: string } {
  return {
    UV_THREADPOOL_SIZE: env['UV_THREADPOOL_SIZE'] ?? WORKER_THREADPOOL_SIZE,
    MALLOC_TOP_PAD_: env['MALLOC_TOP_PAD_'] ?? WORKER_MALLOC_TOP_PAD,
  };
}

/** The worker's node flags: the primary's own, plus the semispace cap unless the operator chose one. */
export function workerExecArgv(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const chosen = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)].some((flag) => /^--max[-_]semi[-_]space[-_]size(=|$)/.test(flag));
  return chosen ? [...execArgv] : [...execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`];
}
