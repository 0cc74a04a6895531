/**
 * Runs Prometheus' promtool for the observability tests. The binary comes from Debian's `prometheus`
 * package, unpacked (not installed) into .ci/tools/ by .ci/install-debian, which .ci/run runs before the
 * tests. A missing promtool is a test failure with instructions, never a silent skip.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { onOutput } from './common.js';
import { REPO_ROOT } from './paths.js';

export const PROMTOOL = path.join(REPO_ROOT, '.ci', 'tools', 'usr', 'bin', 'promtool');

export interface PromtoolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The promtool path; throws a clear error when it is not there. */
export function promtoolPath(): string {
  if (!existsSync(PROMTOOL)) {
    throw new Error(
      `promtool not found at ${PROMTOOL}. CI installs it with .ci/install-debian (run by .ci/run); ` +
        `locally run \`bash ${path.join(REPO_ROOT, '.ci', 'install-debian')}\` once.`,
    );
  }
  return PROMTOOL;
}

/**
 * Runs `promtool ...args` (cwd: the repository root unless given), feeding `stdin` if any. Bounded: the
 * child is killed (by its own pid) if it runs longer than `timeoutMs`.
 */
export function runPromtool(args: string[], options: { stdin?: string; cwd?: string; timeoutMs?: number } = {}): Promise<PromtoolResult> {
  const bin = promtoolPath();
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd: options.cwd ?? REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    onOutput(
      child,
      (c) => (stdout += c),
      (c) => (stderr += c),
    );
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, options.timeoutMs ?? 30_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // promtool may exit before reading everything
    child.stdin.end(options.stdin ?? '');
  });
}
