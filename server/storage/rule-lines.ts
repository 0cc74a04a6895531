import { USERNAME_PATTERN } from '../../protocol/index.js';

export interface RuleLineProblem {
  line: number;
  reason: string;
}

/**
 * The shared syntax of the per-user rules files (--quota-file, --permissions-file): one `USER:VALUE` per
 * line, blank lines and lines starting with `#` ignored, a `#` after white space ending the line (a
 * comment after the value), a final CR dropped. With `star`, one `*:VALUE`
 * line may give the value of every user no line names. Any other line is a problem (the callers refuse
 * the whole file: a rule that silently did not apply would be worse than a server that refuses to start).
 */
export function parseRuleLines<T>(
  text: string,
  value: { name: string; parse: (raw: string) => T | undefined; invalid: string },
  star = false,
): { perUser: Map<string, T>; star: T | undefined; problems: RuleLineProblem[] } {
  const perUser = new Map<string, T>();
  let starValue = null as { value: T } | null;
  const problems: RuleLineProblem[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const at = line.indexOf(':');
    const user = at < 0 ? '' : line.slice(0, at).trim();
    const parsed = at < 0 ? undefined : value.parse(line.slice(at + 1).replace(/\s#.*$/, ''));
    const isStar = star && user === '*';
    let reason: string | null = null;
    if (at < 0) reason = `expected USER:${value.name}`;
    else if (!star && user === '*') reason = `"*" is not a valid user name (here the server's own flags apply to everyone the file does not name)`;
    else if (!isStar && !USERNAME_PATTERN.test(user)) reason = `"${user.slice(0, 64)}" is not a valid user name${star ? ' (or * for everyone else)' : ''}`;
    else if (parsed === undefined) reason = value.invalid;
    else if (isStar ? starValue !== null : perUser.has(user)) reason = `${user} is named twice`;
    if (reason !== null) problems.push({ line: i + 1, reason });
    else if (isStar) starValue = { value: parsed! };
    else perUser.set(user, parsed!);
  });
  return { perUser, star: starValue?.value, problems };
}
