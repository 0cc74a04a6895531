import { parseRuleLines, type RuleLineProblem } from './rule-lines.js';

/**
 * Which quotas apply to which user: the per-user lines of the quota file (--quota-file), else the server's
 * --quota and --max-files. Pure: text in, limits out; the primary reads the file, validates it, and sends
 * its text to the workers, as for the users file.
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

/**
 * A file-count quota: a whole number of files, at least 1, with no unit (a K here would read as 1024 files
 * to some and 1000 to others); `off` (any case) is no limit (null). undefined when `raw` is neither.
 */
export function parseFileCount(raw: string): number | null | undefined {
  const text = raw.trim();
  if (text.toLowerCase() === 'off') return null;
  const count = /^\d+$/.test(text) ? Number(text) : NaN;
  return Number.isSafeInteger(count) && count >= 1 ? count : undefined;
}

/** One line of the quota file: its SIZE, and its FILES when it gives one (else --max-files applies). */
export interface QuotaRule {
  bytes: number | null;
  files?: number | null;
}

/** `SIZE` or `SIZE/FILES`; undefined when malformed. */
function parseQuotaRule(raw: string): QuotaRule | undefined {
  const parts = raw.split('/');
  if (parts.length > 2) return undefined;
  const bytes = parseQuotaSize(parts[0]!);
  if (bytes === undefined) return undefined;
  if (parts.length === 1) return { bytes };
  const files = parseFileCount(parts[1]!);
  return files === undefined ? undefined : { bytes, files };
}

export class QuotaLimits {
  /**
   * @param fallback the byte quota of users the file does not name (--quota); null = no limit.
   * @param fallbackFiles the file-count quota of users the file does not name, or whose line gives none
   *   (--max-files); null = no limit.
   */
  constructor(
    readonly fallback: number | null,
    readonly fallbackFiles: number | null = null,
    readonly perUser: ReadonlyMap<string, QuotaRule> = new Map(),
  ) {}

  /** --quota and --max-files, replaced for the users a validated quota file's text names (null: no file). */
  static fromFile(fallback: number | null, fallbackFiles: number | null, text: string | null): QuotaLimits {
    return new QuotaLimits(fallback, fallbackFiles, text === null ? new Map() : parseQuotaFile(text).perUser);
  }

  /** The user's quota in bytes; null = no limit. */
  limitFor(user: string): number | null {
    const own = this.perUser.get(user);
    return own === undefined ? this.fallback : own.bytes;
  }

  /** The most published files the user may have; null = no limit. */
  filesFor(user: string): number | null {
    const own = this.perUser.get(user)?.files;
    return own === undefined ? this.fallbackFiles : own;
  }
}

/**
 * The quota file: one `USER:SIZE` or `USER:SIZE/FILES` per line (SIZE as for --quota, FILES as for
 * --max-files, either `off`: no limit of that kind for that user), in the syntax of rule-lines.ts.
 */
export function parseQuotaFile(text: string): { perUser: Map<string, QuotaRule>; problems: RuleLineProblem[] } {
  const { perUser, problems } = parseRuleLines(text, {
    name: 'SIZE',
    parse: parseQuotaRule,
    invalid: 'SIZE must be a number of bytes of at least 1, optionally with K, M, G or T, or off; FILES (after a /, optional) a number of files of at least 1, or off',
  });
  return { perUser, problems };
}
