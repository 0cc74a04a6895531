/**
 * Process and metrics inspection for the hardening tests: the summed RSS of a server's process tree
 * (primary + workers, from /proc), and scraping the primary's Prometheus endpoint.
 */
import { readdir, readFile } from 'node:fs/promises';
import http from 'node:http';
import type { TestServer } from './server.js';

/** Parent pid of `pid` from /proc/<pid>/stat, or null when the process is gone. */
async function parentOf(pid: number): Promise<number | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    return Number.isInteger(ppid) ? ppid : null;
  } catch {
    return null;
  }
}

/** `root` and every process descended from it. */
export async function processTree(root: number): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
  const parent = new Map<number, number>();
  await Promise.all(
    pids.map(async (pid) => {
      const pp = await parentOf(pid);
      if (pp !== null) parent.set(pid, pp);
    }),
  );
  const tree = new Set<number>([root]);
  // Bounded fixpoint: the depth of a process tree is far below the number of processes.
  for (let round = 0; round < 16; round++) {
    let grew = false;
    for (const [pid, pp] of parent) {
      if (!tree.has(pid) && tree.has(pp)) {
        tree.add(pid);
        grew = true;
      }
    }
    if (!grew) break;
  }
  return [...tree];
}

/** VmRSS of one process in bytes (0 when it is gone). */
export async function rssOf(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Summed RSS of `root` and its descendants, in bytes, with the pids counted. */
export async function treeRss(root: number): Promise<{ bytes: number; pids: number[] }> {
  const pids = await processTree(root);
  const sizes = await Promise.all(pids.map(rssOf));
  return { bytes: sizes.reduce((a, b) => a + b, 0), pids };
}

export const MiB = 1024 * 1024;

/** The metrics port the primary logged ("metrics on http://…", field "port"). */
export async function metricsPortOf(server: TestServer): Promise<number> {
  const line = await server.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on http'), 10_000);
  const port = Number(line['port']);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no metrics port in ${JSON.stringify(line)}`);
  return port;
}

/** GET /metrics; bounded. */
export function scrape(port: number, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics answered ${res.statusCode}: ${body}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('/metrics scrape timed out')));
    req.on('error', reject);
  });
}

/**
 * The value of one sample in Prometheus text format: `name` with exactly the given labels (order-free),
 * or undefined when there is no such sample.
 */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const lm of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) got[lm[1]!] = lm[2]!;
    const want = Object.entries(labels);
    if (Object.keys(got).length !== want.length || !want.every(([k, v]) => got[k] === v)) continue;
    return Number(m[3]);
  }
  return undefined;
}

/** Scrapes and returns one sample (throws when it is absent). */
export async function metric(port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await scrape(port);
  const v = sampleValue(text, name, labels);
  if (v === undefined) throw new Error(`metric ${name}${JSON.stringify(labels)} not found in /metrics`);
  return v;
}
