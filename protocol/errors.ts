import { ERROR_CODES, isErrorCode, type ErrorCode } from './codes.js';

/**
 * The single error type of fts. Anything thrown across a module boundary on purpose is an FtsError;
 * anything else reaching a reply path is a bug and is reported as INTERNAL.
 */
export class FtsError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable fields carried in the error reply (for example `offset`). */
  readonly details: Readonly<Record<string, string | number | boolean>>;

  /** Whether the session ends with this error: the table's value, unless the wire said otherwise. */
  readonly fatal: boolean;

  constructor(
    code: ErrorCode,
    message?: string,
    details: Record<string, string | number | boolean> = {},
    options?: { cause?: unknown; fatal?: boolean },
  ) {
    const entry = isErrorCode(code) ? ERROR_CODES[code] : undefined;
    // From JavaScript (or past a cast) any string can arrive: say which, not "cannot read properties of undefined".
    if (entry === undefined) throw new TypeError(`FtsError: unknown error code ${JSON.stringify(code)} (see ERROR_CODES)`);
    super(message ?? entry.message, options);
    this.name = 'FtsError';
    this.code = code;
    this.details = details;
    this.fatal = options?.fatal ?? entry.fatal;
  }
}
