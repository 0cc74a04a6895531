/**
 * An on/off environment variable, read the same way by every fts tool: unset, empty, `0` or `false` is
 * off; `1` or `true` is on (in any case: `TRUE` too); anything else is null, which the caller refuses
 * (exit 2). Silently taking `yes` for "off" would, for FTS_TLS, send a password in clear to someone who
 * asked for TLS.
 */
export function parseSwitch(value: string | undefined): boolean | null {
  const word = value?.toLowerCase();
  if (word === undefined || word === '' || word === '0' || word === 'false') return false;
  if (word === '1' || word === 'true') return true;
  return null;
}

/** The message for a refused value: `NAME must be 1 or true (on), 0 or false (off), got 'VALUE'`. */
export function badSwitchMessage(name: string, value: string): string {
  return `${name} must be 1 or true (on), 0 or false (off), got '${value.slice(0, 40)}'`;
}
