import { FtsError } from '../../protocol/index.js';
import { parseRuleLines, type RuleLineProblem } from './rule-lines.js';

/**
 * What each user may do (--permissions-file), as SFTPGo's per-user permissions or vsftpd's write_enable and
 * download_enable: read-only accounts, upload-only drop boxes, archives where nothing is ever replaced or
 * removed. Pure: text in, rules out; the primary reads and validates the file and sends its text to the
 * workers, as for the users and quota files.
 *
 * One letter per permission:
 *   l  list           list
 *   r  read           download, view, hash
 *   w  write          upload a file under a free name (and offset, asked before an upload)
 *   o  overwrite      replace an existing file: an upload, or a rename with overwrite, onto a taken name
 *   m  move           rename
 *   d  delete         delete
 * `usage`, `partials`, `discard`, `noop` and `quit` need none: they only show or free what the user stores
 * (a user whose permissions were narrowed must still be able to free their partial uploads).
 */
export const PERMISSION_LETTERS = 'lrwomd';
export type Permission = 'l' | 'r' | 'w' | 'o' | 'm' | 'd';

const WHAT: Record<Permission, string> = {
  l: 'list files',
  r: 'read files',
  w: 'upload files',
  o: 'replace existing files',
  m: 'rename files',
  d: 'delete files',
};

/** A user's permissions: a set of letters. */
export class PermissionSet {
  static readonly ALL = new PermissionSet(PERMISSION_LETTERS);

  readonly letters: string;

  private constructor(letters: string) {
    // In the canonical order, whatever order the file gave them in.
    this.letters = [...PERMISSION_LETTERS].filter((c) => letters.includes(c)).join('');
  }

  /** The set a PERMS field spells: letters of PERMISSION_LETTERS, each at most once, or `-` for none; undefined otherwise. */
  static parse(raw: string): PermissionSet | undefined {
    const text = raw.trim();
    if (text === '-') return new PermissionSet('');
    if (text === '' || [...text].some((c, i) => !PERMISSION_LETTERS.includes(c) || text.indexOf(c) !== i)) return undefined;
    return new PermissionSet(text);
  }

  has(p: Permission): boolean {
    return this.letters.includes(p);
  }

  /** PERMISSION_DENIED unless the set has `p`; `name`, the file the request is about, starts the message. */
  require(p: Permission, user: string, name?: string): void {
    if (this.has(p)) return;
    const about = name === undefined ? '' : `${name}: `;
    throw new FtsError('PERMISSION_DENIED', `${about}${user} may not ${WHAT[p]} (permission "${p}"; the server grants "${this.letters === '' ? '-' : this.letters}")`);
  }
}

export class Permissions {
  /** @param fallback the permissions of users the file does not name (its `*` line, else all). */
  constructor(
    readonly fallback: PermissionSet = PermissionSet.ALL,
    readonly perUser: ReadonlyMap<string, PermissionSet> = new Map(),
  ) {}

  /** The rules of a validated permissions file's text; everyone may do everything without one (null). */
  static fromFile(text: string | null): Permissions {
    if (text === null) return new Permissions();
    const { fallback, perUser } = parsePermissionsFile(text);
    return new Permissions(fallback, perUser);
  }

  of(user: string): PermissionSet {
    return this.perUser.get(user) ?? this.fallback;
  }
}

/**
 * The permissions file: one `USER:PERMS` per line (PERMS: letters of PERMISSION_LETTERS, or `-` for none),
 * and at most one `*:PERMS` for every user no line names (default: all), in the syntax of rule-lines.ts.
 */
export function parsePermissionsFile(text: string): { fallback: PermissionSet; perUser: Map<string, PermissionSet>; problems: RuleLineProblem[] } {
  const { perUser, star, problems } = parseRuleLines(
    text,
    { name: 'PERMS', parse: (raw) => PermissionSet.parse(raw), invalid: `PERMS must be letters of "${PERMISSION_LETTERS}", each at most once, or - for none` },
    true,
  );
  return { fallback: star ?? PermissionSet.ALL, perUser, problems };
}
