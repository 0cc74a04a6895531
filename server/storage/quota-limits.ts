import { parseRuleLines, type RuleLineProblem } from './rule-lines.js';

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

/**
 * The quota file: one `USER:SIZE` per line (SIZE as for --quota, or `off`: no limit for that user), in the
 * syntax of rule-lines.ts.
 */
export function parseQuotaFile(text: string): { perUser: Map<string, number | null>; problems: RuleLineProblem[] } {
  const { perUser, problems } = parseRuleLines(text, {
    name: 'SIZE',
    parse: parseQuotaSize,
    invalid: 'SIZE must be a number of bytes of at least 1, optionally with K, M, G or T, or off',
  });
  return { perUser, problems };
}
