import { parseQuotaSize } from './storage/quota-limits.js';
import { parseRuleLines, type RuleLineProblem } from './storage/rule-lines.js';

/**
 * Which transfer rates apply to which user: the per-user lines of the rates file (--rates-file), else the
 * server's --max-upload-rate and --max-download-rate. Pure: text in, limits out; the primary reads and
 * validates the file, and sends its text to the workers, as for the quota and permissions files.
 */

/**
 * The lowest rate limit: one of the smallest data frames a limited transfer uses (64 KiB, see pacer.ts) a
 * second. Slower, the wire would be silent for seconds between frames, or the frames tiny (each costs a
 * wake-up and a syscall or two on both sides).
 */
export const MIN_RATE_BYTES = 64 * 1024;

export type RateDirection = 'upload' | 'download';

/** Bytes per second in each direction; null = no limit. */
export interface Rates {
  readonly upload: number | null;
  readonly download: number | null;
}

/** A rate: bytes per second as for --quota, at least MIN_RATE_BYTES, or `off` (null); undefined if neither. */
export function parseRate(raw: string): number | null | undefined {
  const bytes = parseQuotaSize(raw);
  return bytes === undefined || (bytes !== null && bytes < MIN_RATE_BYTES) ? undefined : bytes;
}

/** A rates file value: `UPLOAD/DOWNLOAD`, or one RATE for both directions. */
function parseRates(raw: string): Rates | undefined {
  const parts = raw.split('/');
  if (parts.length > 2) return undefined;
  const upload = parseRate(parts[0]!);
  const download = parts.length === 2 ? parseRate(parts[1]!) : upload;
  return upload === undefined || download === undefined ? undefined : { upload, download };
}

/**
 * The rates file: one `USER:UPLOAD/DOWNLOAD` (or `USER:RATE`, both directions) per line, each a rate as for
 * --max-upload-rate or `off`; a `*:…` line for every user the file does not name; in the syntax of
 * rule-lines.ts.
 */
export function parseRatesFile(text: string): { star: Rates | undefined; perUser: Map<string, Rates>; problems: RuleLineProblem[] } {
  return parseRuleLines(
    text,
    {
      name: 'UPLOAD/DOWNLOAD',
      parse: parseRates,
      invalid: 'expected UPLOAD/DOWNLOAD or one RATE for both, each bytes per second of at least 64K (K, M, G, T: powers of 1024) or off',
    },
    true,
  );
}

export class RateLimits {
  /**
   * @param flags --max-upload-rate and --max-download-rate: the rates of users the file does not name (and
   *   of connections before their login), unless the file has a `*` line.
   */
  constructor(
    readonly flags: Rates,
    readonly star: Rates | undefined = undefined,
    readonly perUser: ReadonlyMap<string, Rates> = new Map(),
  ) {}

  /** The flags' rates, refined by a validated rates file's text (null: no file). */
  static fromFile(flags: Rates, text: string | null): RateLimits {
    if (text === null) return new RateLimits(flags);
    const { star, perUser } = parseRatesFile(text);
    return new RateLimits(flags, star, perUser);
  }

  /** The rate of `user` (null: not logged in yet) in `direction`; null = no limit. */
  rateFor(user: string | null, direction: RateDirection): number | null {
    const rates = (user === null ? undefined : this.perUser.get(user)) ?? (user === null ? undefined : this.star) ?? this.flags;
    return rates[direction];
  }
}
