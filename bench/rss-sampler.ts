/**
 * Worker thread: every SAMPLE_MS, sums VmRSS over a process and its children (the fts-server primary
 * and its workers), and accumulates their CPU time. It runs on its own event loop so that a busy
 * benchmark main thread does not delay samples. Protocol (messages from rss.ts):
 *   {type:'watch', pid}         follow this process tree (null: none)
 *   {type:'begin', id}          open a measurement window
 *   {type:'end', id}            close it; replies {id, peakKiB, lastKiB, peakAnonKiB, lastAnonKiB, samples,
 *                               cpuTicks, processes}
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
  cpuStart: Map<number, number>;
  processes: number;
}

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

/** utime + stime in clock ticks. */
function cpuTicks(pid: number): number | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
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
    for (const pid of pids) if (!w.cpuStart.has(pid)) w.cpuStart.set(pid, 0); // started during the window
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
      const cpuStart = new Map<number, number>();
      for (const pid of tree()) cpuStart.set(pid, cpuTicks(pid) ?? 0);
      windows.set(m.id!, { peakKiB: 0, lastKiB: 0, peakAnonKiB: 0, lastAnonKiB: 0, samples: 0, cpuStart, processes: 0 });
      sample();
      break;
    }
    case 'end': {
      sample();
      const w = windows.get(m.id!);
      windows.delete(m.id!);
      let cpu = 0;
      if (w) for (const [pid, start] of w.cpuStart) cpu += Math.max(0, (cpuTicks(pid) ?? start) - start);
      parentPort?.postMessage({
        id: m.id,
        peakKiB: w?.peakKiB ?? 0,
        lastKiB: w?.lastKiB ?? 0,
        peakAnonKiB: w?.peakAnonKiB ?? 0,
        lastAnonKiB: w?.lastAnonKiB ?? 0,
        samples: w?.samples ?? 0,
        cpuTicks: cpu,
        processes: w?.processes ?? 0,
      });
      break;
    }
    case 'now': {
      const { sum, anon, pids } = sample();
      parentPort?.postMessage({ id: m.id, peakKiB: sum, lastKiB: sum, peakAnonKiB: anon, lastAnonKiB: anon, samples: 1, cpuTicks: 0, processes: pids.length });
      break;
    }
    case 'stop':
      clearInterval(timer);
      parentPort?.close();
      break;
  }
});
