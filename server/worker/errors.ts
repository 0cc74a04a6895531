import { FtsError } from '../../protocol/index.js';

/** Anything that is not already an FtsError is a bug: report it as INTERNAL, never leak its text. */
export function asFtsError(err: unknown): FtsError {
  return err instanceof FtsError ? err : new FtsError('INTERNAL', undefined, {}, { cause: err });
}
