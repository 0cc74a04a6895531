import { USERNAME_PATTERN } from '../../protocol/index.js';

/**
 * Which quota applies to which user: the per-user lines of the quota file (--quota-file), else the server's
 * --quota. Pure: text in, limits out; the primary reads the file, validates it, and sends its text to the
 * workers, as for the users file.
 */

const SIZE_UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/**
 * A quota: digits with an optional K, M, G or T (powers of 1024), at least 1 byte; `off` (any case) is no
 * limit (null). undefined when `raw` is neither.
 */
export function parseQuotaSize(raw: string): number | null | undefined {
  const text = raw.trim();
  if (text.toLowerCase() === 'off') return null;
  const m = /^(\d+)([KMGT]?)$/i.exec(text);
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2]!.toUpperCase()]! : NaN;
  return Number.isSafeInteger(bytes) && bytes >= 1 ? bytes : undefined;
}

export class QuotaLimits {
  /** @param fallback the quota of users the file does not name (--quota); null = no limit. */
  constructor(
    readonly fallback: number | null,
    readonly perUser: ReadonlyMap<string, number | null> = new Map(),
  ) {}

  /** --quota (`fallback`), replaced for the users a validated quota file's text names (null: no file). */
  static fromFile(fallback: number | null, text: string | null): QuotaLimits {
    return new QuotaLimits(fallback, text === null ? new Map() : parseQuotaFile(text).perUser);
  }

  /** The user's quota in bytes; null = no limit. */
  limitFor(user: string): number | null {
    const own = this.perUser.get(user);
    return own === undefined ? this.fallback : own;
  }
}

export interface QuotaFileProblem {
  line: number;
  reason: string;
}

/**
 * The quota file: one `USER:SIZE` per line (SIZE as for --quota, or `off`: no limit for that user), blank
 * lines and lines starting with `#` ignored. Any other line is a problem: a quota that silently did not
 * apply would be worse than a server that refuses to start, so the caller refuses the whole file.
 */
export function parseQuotaFile(text: string): { perUser: Map<string, number | null>; problems: QuotaFileProblem[] } {
  const perUser = new Map<string, number | null>();
  const problems: QuotaFileProblem[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const at = line.indexOf(':');
    const user = at < 0 ? '' : line.slice(0, at).trim();
    const size = at < 0 ? undefined : parseQuotaSize(line.slice(at + 1));
    let reason: string | null = null;
    if (at < 0) reason = 'expected USER:SIZE';
    else if (!USERNAME_PATTERN.test(user)) reason = `"${user.slice(0, 64)}" is not a valid user name`;
    else if (size === undefined) reason = 'SIZE must be a number of bytes of at least 1, optionally with K, M, G or T, or off';
    else if (perUser.has(user)) reason = `${user} is named twice`;
    if (reason !== null) problems.push({ line: i + 1, reason });
    else perUser.set(user, size!);
  });
  return { perUser, problems };
}
