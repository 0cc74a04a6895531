import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * JSON lines on stdout. The destination is synchronous: each line leaves in one write(2), so lines from
 * several worker processes sharing stdout never interleave, and nothing is lost when a process exits
 * right after logging. Audit lines stay far below PIPE_BUF (4096 bytes) because names are at most 255 bytes.
 *
 * Never pass a password, or an object that may hold one, to a log call.
 */
export function createLogger(level: LogLevel, role: 'primary' | 'worker'): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, role },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ['password', '*.password'], censor: '[redacted]' },
    },
    pino.destination({ fd: 1, sync: true }),
  );
}
