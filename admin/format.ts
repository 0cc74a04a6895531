/** Human-readable output of fts-admin: tables and one-line messages. Pure functions, no I/O. */

import type { BanInfo, ConfigResult, DrainProgress, ScoredAddress, SessionInfo, StatusResult, UserPartial, UserUsage } from '../protocol/index.js';
import { formatBytes } from '../protocol/format-bytes.js';

/**
 * Makes a server-supplied string safe to print on a terminal: C0/C1 control characters, DEL, bidi
 * overrides, line/paragraph separators and lone surrogates become visible escapes (`\n`, `\x1b`,
 * `\u{202e}`). With `escapeBackslash` (the default, for names) backslash becomes `\\` so an escape cannot
 * be forged by a name; messages pass false. An empty string prints `""`.
 */
export function safeText(s: string, escapeBackslash = true): string {
  if (s === '') return '""';
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out += s[i] + s[i + 1]!;
        i++;
        continue;
      }
    }
    out += c === 0x5c && !escapeBackslash ? '\\' : escapeUnit(c) ?? s[i]!;
  }
  return out;
}

const NAMED: Readonly<Record<number, string>> = { 0x09: '\\t', 0x0a: '\\n', 0x0d: '\\r', 0x5c: '\\\\' };

function escapeUnit(c: number): string | null {
  const named = NAMED[c];
  if (named !== undefined) return named;
  if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return `\\x${c.toString(16).padStart(2, '0')}`;
  const invisible = (c >= 0x200e && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)
    || (c >= 0xd800 && c <= 0xdfff); // a surrogate reaching here is unpaired
  return invisible ? `\\u{${c.toString(16)}}` : null;
}

/** 45 → `45s`, 3723 → `1h02m03s`, 90061 → `1d01h01m01s`. */
export function formatDuration(totalSeconds: number): string {
  let s = Math.max(0, Math.floor(totalSeconds));
  const d = Math.floor(s / 86_400);
  s -= d * 86_400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const p2 = (n: number): string => String(n).padStart(2, '0');
  if (d > 0) return `${d}d${p2(h)}h${p2(m)}m${p2(s)}s`;
  if (h > 0) return `${h}h${p2(m)}m${p2(s)}s`;
  if (m > 0) return `${m}m${p2(s)}s`;
  return `${s}s`;
}

interface Column {
  header: string;
  right?: boolean;
  minWidth?: number;
}

/**
 * Columns separated by two spaces; right-aligned columns for numbers. `suffixes[i]`, when present, is
 * appended to row i after three spaces. Trailing blanks are trimmed.
 */
export function table(columns: readonly Column[], rows: readonly (readonly string[])[], suffixes: readonly (string | undefined)[] = []): string {
  const widths = columns.map((col, i) =>
    Math.max(col.minWidth ?? 0, col.header.length, ...rows.map((r) => (r[i] ?? '').length)));
  const render = (cells: readonly string[]): string =>
    columns
      .map((col, i) => {
        const cell = cells[i] ?? '';
        const w = widths[i] ?? 0;
        return col.right ? cell.padStart(w) : cell.padEnd(w);
      })
      .join('  ');
  const lines = [render(columns.map((c) => c.header))];
  rows.forEach((r, i) => {
    const suffix = suffixes[i];
    lines.push(suffix === undefined ? render(r) : `${render(r)}   ${suffix}`);
  });
  return lines.map((l) => l.trimEnd()).join('\n');
}

export function formatStatus(st: StatusResult): string {
  const head = [
    `fts-server pid ${st.pid}`,
    `port ${st.port ?? '-'}`,
    `metrics ${st.metricsPort ?? 'off'}`,
    `uptime ${formatDuration(st.uptimeSeconds)}`,
    `draining ${st.draining ? 'yes' : 'no'}`,
    // Last, as it may hold spaces; absent from servers older than the field.
    ...(st.usersFile === undefined ? [] : [`users ${safeText(st.usersFile)}`]),
  ].join('  ');
  const cols: Column[] = [
    { header: 'WORKER', minWidth: 7 },
    { header: 'CONNS', right: true },
    { header: 'SESSIONS', right: true },
    { header: 'TRANSFERS', right: true },
  ];
  const rows = st.workers.map((w) => [String(w.pid), String(w.connections), String(w.sessions), String(w.transfers)]);
  const suffixes: (string | undefined)[] = st.workers.map((w) => (w.responding ? undefined : w.starting === true ? '(starting)' : '(not responding)'));
  rows.push(['total', String(st.connections), String(st.sessions), String(st.transfers)]);
  // Said only when something is wrong: the usual output keeps its shape.
  const storage = st.storage?.ok === false ? `\nstorage unavailable: ${safeText(st.storage.problem ?? 'unknown problem', false)}` : '';
  return `${head}\n${table(cols, rows, suffixes)}${storage}`;
}

/** `2025-11-25T17:13:05.123Z` → `2025-11-25T17:13:05Z`; anything unparsable is shown escaped. */
export function formatSince(iso: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return safeText(iso);
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function formatSessions(sessions: readonly SessionInfo[]): string {
  if (sessions.length === 0) return 'no sessions';
  const cols: Column[] = [
    { header: 'ID' },
    { header: 'USER' },
    { header: 'REMOTE' },
    { header: 'WORKER', right: true },
    { header: 'OP' },
    { header: 'FILE' },
    { header: 'BYTES', right: true },
    { header: 'SINCE' },
  ];
  const rows = sessions.map((s) => [
    safeText(s.id),
    s.user === null ? '-' : safeText(s.user),
    safeText(s.remote),
    String(s.worker),
    s.op === null ? '-' : safeText(s.op),
    s.file === null ? '-' : safeText(s.file),
    String(s.bytes),
    formatSince(s.since),
  ]);
  return table(cols, rows);
}

/** `fts-admin usage`: one row per user, sizes for people (--json has the exact bytes). */
export function formatUsage(users: readonly UserUsage[]): string {
  if (users.length === 0) return 'no user';
  return table(
    [{ header: 'USER' }, { header: 'USED', right: true }, { header: 'QUOTA', right: true }, { header: 'USE%', right: true }, { header: 'FILES', right: true }, { header: 'MAX FILES', right: true }, { header: 'PARTIAL', right: true }],
    users.map((u) => [
      safeText(u.user),
      formatBytes(u.used),
      u.quota === null ? 'none' : formatBytes(u.quota),
      u.quota === null ? '-' : `${((100 * u.used) / u.quota).toFixed(1)}%`,
      String(u.files),
      // A primary older than file-count quotas sends no maxFiles.
      u.maxFiles === null || u.maxFiles === undefined ? 'none' : String(u.maxFiles),
      formatBytes(u.partial),
    ]),
  );
}

/**
 * `fts-admin partials`: one row per partial upload, sizes for people and times in UTC (--json has the exact
 * figures); NAME is `-` when the server does not know it. KEY is what `fts-admin discard` takes.
 */
export function formatPartials(partials: readonly UserPartial[]): string {
  if (partials.length === 0) return 'no unfinished upload';
  const time = (ms: number): string => formatSince(new Date(ms).toISOString());
  return table(
    [{ header: 'USER' }, { header: 'NAME' }, { header: 'STAGED', right: true }, { header: 'SIZE', right: true }, { header: 'WRITTEN' }, { header: 'KEPT UNTIL' }, { header: 'KEY' }],
    partials.map((p) => [
      safeText(p.user),
      p.name === undefined ? '-' : safeText(p.name),
      formatBytes(p.staged),
      p.size === undefined ? '?' : formatBytes(p.size),
      time(p.mtime),
      time(p.expires),
      p.key,
    ]),
  );
}

export function formatBans(bans: readonly BanInfo[]): string {
  if (bans.length === 0) return 'no address is banned';
  return table([{ header: 'ADDRESS' }, { header: 'LEFT', right: true }], bans.map((b) => [safeText(b.address), formatDuration(b.secondsLeft)]));
}

/** `bans --points`: LEFT is `-` for an address that is not banned. */
export function formatScored(scored: readonly ScoredAddress[]): string {
  if (scored.length === 0) return 'no address is banned or has penalty points';
  return table(
    [{ header: 'ADDRESS' }, { header: 'LEFT', right: true }, { header: 'POINTS', right: true }],
    scored.map((b) => [safeText(b.address), b.secondsLeft > 0 ? formatDuration(b.secondsLeft) : '-', String(b.points)]),
  );
}

export function formatDrainProgress(p: DrainProgress): string {
  const left = Math.max(0, Math.ceil(p.secondsLeft));
  // Only when some are silent, so the usual line keeps its shape for scripts that parse it.
  const silent = p.notAnswering !== undefined && p.notAnswering > 0 ? ` (${p.notAnswering} not answering)` : '';
  const hooks = p.hooks !== undefined && p.hooks > 0 ? `, ${p.hooks} upload hook runs` : '';
  return `draining: ${p.sessions} sessions, ${p.transfers} transfers${hooks}, ${p.workers} workers${silent}, ${left}s left`;
}

export function formatRestarted(oldPid: number, newPid: number): string {
  return `worker ${oldPid} replaced by ${newPid}`;
}

export function formatKilled(oldPid: number): string {
  return `worker ${oldPid} did not exit after draining; killed`;
}

/**
 * `config`: one row per fts-server flag in --help's order, `-` for an empty value, FROM the flag, its
 * environment variable or the default; then when the users and rules files in force were read.
 */
export function formatConfig(c: ConfigResult): string {
  const rows = c.settings.map((x) => [`--${safeText(x.name)}`, x.value === '' ? '-' : safeText(x.value), x.from === 'env' ? safeText(x.env) : x.from]);
  const read = new Date(c.filesAppliedAt).toISOString();
  const files = c.lastReloadSuccessful
    ? `users and rules files in force since ${read}`
    : `the last reload was refused: the users and rules files in force were read at ${read}, and those on disk may differ`;
  return `${table([{ header: 'SETTING' }, { header: 'VALUE' }, { header: 'FROM' }], rows)}\n${files}`;
}
