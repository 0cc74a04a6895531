/**
 * Worker thread: every SAMPLE_MS, sums VmRSS over a process and its children (the fts-server primary
 * and its workers), and accumulates their CPU time. It runs on its own event loop so that a busy
 * benchmark main thread does not delay samples. Protocol (messages from rss.ts):
 *   {type:'watch', pid}         follow this process tree (null: none)
 *   {type:'begin', id}          open a measurement window
 *   {type:'end', id}            close it; replies {id, peakKiB, lastKiB, peakAnonKiB, lastAnonKiB, samples,
 *                               cpuTicks, syscr, syscw, ctxsw, processes}
 *   {type:'now', id}            one immediate sample; replies {id, peakKiB: sum, lastKiB: sum, ...}
 */
import { readdirSync, readFileSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

const SAMPLE_MS = 100;

interface Window {
  peakKiB: number;
  lastKiB: number;
  /** RssAnon: private anonymous memory (heap, buffers), without the shared pages of the node binary. */
  peakAnonKiB: number;
  lastAnonKiB: number;
  samples: number;
  /** Each process's counters when the window opened (zeros for one that started during it). */
  start: Map<number, Counters>;
  processes: number;
}

/**
 * Cumulative per-process counters. The system-call and context-switch counts are steadier than wall or
 * CPU time on a noisy machine, so they show what a change saves per operation.
 */
interface Counters {
  /** utime + stime in clock ticks. */
  cpuTicks: number;
  /** read-type and write-type system calls (/proc/<pid>/io syscr, syscw; sockets, files, eventfds). */
  syscr: number;
  syscw: number;
  /** Voluntary context switches summed over the process's threads (thread-pool hand-offs show here). */
  ctxsw: number;
}

const ZERO: Counters = { cpuTicks: 0, syscr: 0, syscw: 0, ctxsw: 0 };

let root: number | null = null;
const windows = new Map<number, Window>();

function readText(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** Direct children of `pid`, from /proc/<pid>/task/<tid>/children, else by scanning /proc/<n>/stat. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let viaTasks = false;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readText(`/proc/${pid}/task/${tid}/children`);
      if (text === null) continue;
      viaTasks = true;
      for (const word of text.trim().split(/\s+/)) if (word !== '') out.push(Number(word));
    }
  } catch {
    return [];
  }
  if (viaTasks) return out;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readText(`/proc/${entry}/stat`);
    if (stat === null) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid) out.push(Number(entry));
  }
  return out;
}

function rssKiB(pid: number): { rss: number; anon: number } {
  const text = readText(`/proc/${pid}/status`) ?? '';
  const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
  const anon = /^RssAnon:\s+(\d+)\s+kB/m.exec(text);
  return { rss: rss ? Number(rss[1]) : 0, anon: anon ? Number(anon[1]) : 0 };
}

/** The process's counters now, or null when it is gone. */
function counters(pid: number): Counters | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const io = readText(`/proc/${pid}/io`) ?? '';
  let ctxsw = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const m = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(readText(`/proc/${pid}/task/${tid}/status`) ?? '');
      if (m) ctxsw += Number(m[1]);
    }
  } catch {
    // gone meanwhile: the counts read so far stand
  }
  return {
    cpuTicks: Number(fields[11]) + Number(fields[12]),
    syscr: Number(/^syscr:\s+(\d+)/m.exec(io)?.[1] ?? 0),
    syscw: Number(/^syscw:\s+(\d+)/m.exec(io)?.[1] ?? 0),
    ctxsw,
  };
}

function tree(): number[] {
  if (root === null) return [];
  return [root, ...childrenOf(root)];
}

function sample(): { sum: number; anon: number; pids: number[] } {
  const pids = tree();
  let sum = 0;
  let anon = 0;
  for (const pid of pids) {
    const r = rssKiB(pid);
    sum += r.rss;
    anon += r.anon;
  }
  for (const w of windows.values()) {
    w.samples++;
    w.lastKiB = sum;
    w.lastAnonKiB = anon;
    if (sum > w.peakKiB) w.peakKiB = sum;
    if (anon > w.peakAnonKiB) w.peakAnonKiB = anon;
    w.processes = Math.max(w.processes, pids.length);
    for (const pid of pids) if (!w.start.has(pid)) w.start.set(pid, ZERO); // started during the window
  }
  return { sum, anon, pids };
}

const timer = setInterval(sample, SAMPLE_MS);

parentPort?.on('message', (m: { type: string; id?: number; pid?: number | null }) => {
  switch (m.type) {
    case 'watch':
      root = m.pid ?? null;
      break;
    case 'begin': {
      const start = new Map<number, Counters>();
      for (const pid of tree()) start.set(pid, counters(pid) ?? ZERO);
      windows.set(m.id!, { peakKiB: 0, lastKiB: 0, peakAnonKiB: 0, lastAnonKiB: 0, samples: 0, start, processes: 0 });
      sample();
      break;
    }
    case 'end': {
      sample();
      const w = windows.get(m.id!);
      windows.delete(m.id!);
      const used: Counters = { ...ZERO };
      for (const [pid, start] of w?.start ?? []) {
        const end = counters(pid) ?? start; // a process that exited meanwhile: its last counts are lost
        for (const k of Object.keys(used) as Array<keyof Counters>) used[k] += Math.max(0, end[k] - start[k]);
      }
      parentPort?.postMessage({
        id: m.id,
        peakKiB: w?.peakKiB ?? 0,
        lastKiB: w?.lastKiB ?? 0,
        peakAnonKiB: w?.peakAnonKiB ?? 0,
        lastAnonKiB: w?.lastAnonKiB ?? 0,
        samples: w?.samples ?? 0,
        cpuTicks: used.cpuTicks,
        syscr: used.syscr,
        syscw: used.syscw,
        ctxsw: used.ctxsw,
        processes: w?.processes ?? 0,
      });
      break;
    }
    case 'now': {
      const { sum, anon, pids } = sample();
      parentPort?.postMessage({ id: m.id, peakKiB: sum, lastKiB: sum, peakAnonKiB: anon, lastAnonKiB: anon, samples: 1, cpuTicks: 0, syscr: 0, syscw: 0, ctxsw: 0, processes: pids.length });
      break;
    }
    case 'stop':
      clearInterval(timer);
      parentPort?.close();
      break;
  }
});
