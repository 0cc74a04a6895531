/**
 * Text helpers of the CLI: splitting shell lines into words, making file bytes safe for a terminal, and
 * formatting listings. Pure functions, no I/O.
 */
import type { ListEntry, PartialUpload } from '../client.js';
import { usageError } from './report.js';

/**
 * Splits a shell line into words: whitespace separates, '…' is literal, "…" groups with backslash escapes
 * inside, and a backslash outside quotes escapes the next character. Enough for names with spaces and
 * quotes; no variables, globs or other shell features.
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false; // distinguishes an empty quoted word ("") from no word at all
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote === "'") {
      if (c === "'") quote = null;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === '\\' && i + 1 < line.length) word += line[++i]!;
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 >= line.length) throw usageError('a backslash at the end of the line escapes nothing');
      word += line[++i]!;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote !== null) throw usageError(`unterminated ${quote} quote`);
  if (inWord) words.push(word);
  return words;
}

const hex = (b: number): string => `\\x${b.toString(16).padStart(2, '0')}`;

/**
 * The bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069). In a file's
 * text they reorder what a terminal shows of the characters after them, so that shown text differs from
 * the bytes (Trojan Source, CVE-2021-42574). Other format characters (the zero-width joiners, the
 * left-to-right and right-to-left marks) are part of ordinary Arabic, Persian or emoji text and stay.
 */
function isBidiControl(cp: number): boolean {
  return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/**
 * Bytes as text for a terminal: valid UTF-8 passes through, except control characters (C0, DEL and the C1
 * range U+0080–U+009F, which some terminals obey as escape sequences); those and every byte of invalid
 * UTF-8 become \xNN, and the bidirectional controls (isBidiControl) become \u{…}, as in listings. Newline
 * and tab are kept so that text files still read as text.
 */
export function escapeForTerminal(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      out += (b < 0x20 && b !== 0x0a && b !== 0x09) || b === 0x7f ? hex(b) : String.fromCharCode(b);
      i++;
      continue;
    }
    const n = utf8SequenceLength(bytes, i);
    if (n === 0) {
      out += hex(b);
      i++;
      continue;
    }
    const cp = decodeCodePoint(bytes, i, n);
    if (cp >= 0x80 && cp <= 0x9f) for (let k = 0; k < n; k++) out += hex(bytes[i + k]!);
    else if (isBidiControl(cp)) out += `\\u{${cp.toString(16).padStart(4, '0')}}`;
    else out += String.fromCodePoint(cp);
    i += n;
  }
  return out;
}

/** Length of the well-formed UTF-8 sequence at i (RFC 3629 table 3-7), or 0 when it is not well formed. */
function utf8SequenceLength(bytes: Uint8Array, i: number): number {
  const b0 = bytes[i]!;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => {
    const b = bytes[i + k];
    return b !== undefined && b >= lo && b <= hi;
  };
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
  if (b0 === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((b0 >= 0xe1 && b0 <= 0xec) || b0 === 0xee || b0 === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (b0 === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0; // excludes UTF-16 surrogates
  if (b0 === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xf1 && b0 <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

function decodeCodePoint(bytes: Uint8Array, i: number, n: number): number {
  const b0 = bytes[i]!;
  let cp = n === 2 ? b0 & 0x1f : n === 3 ? b0 & 0x0f : b0 & 0x07;
  for (let k = 1; k < n; k++) cp = (cp << 6) | (bytes[i + k]! & 0x3f);
  return cp;
}

/** ISO 8601 UTC, or '?' for a time that Date cannot represent (it stops at ±8.64e15 ms). */
export function isoTime(ms: number | undefined): string {
  const d = new Date(ms ?? Number.NaN);
  return Number.isNaN(d.getTime()) ? '?' : d.toISOString();
}

/**
 * Characters a legal name may hold that a terminal does not show as themselves: the invisible format
 * characters (Unicode Cf: bidirectional controls, zero-width space and joiners, soft hyphen, BOM, tags…)
 * and the line and paragraph separators. With U+202E, "report\u202Efdp.exe" displays as "reportexe.pdf";
 * with U+200B, "report\u200B.pdf" as "report.pdf". Control characters need no entry: nameProblem refuses
 * them in every name. One exception, see isEmojiJoiner.
 */
const HIDDEN = /[\p{Cf}\p{Zl}\p{Zp}]/gu;

/**
 * A zero-width joiner between two emoji (after an emoji, a skin-tone modifier or the emoji presentation
 * selector, before an emoji) shows, as one joined emoji: "👩‍💻" is not "👩💻". Anywhere else it shows
 * nothing and is escaped.
 */
function isEmojiJoiner(name: string, at: number): boolean {
  return name[at] === '\u200D' && /[\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0F]$/u.test(name.slice(Math.max(0, at - 2), at)) && /^\p{Extended_Pictographic}/u.test(name.slice(at + 1, at + 3));
}

const codePointHex = (c: string): string => c.codePointAt(0)!.toString(16).padStart(4, '0');

/** `name` with each HIDDEN character (but an emoji joiner) replaced by `escape(c)`. */
function replaceHidden(name: string, escape: (c: string) => string): string {
  return name.replace(HIDDEN, (c: string, at: number) => (isEmojiJoiner(name, at) ? c : escape(c)));
}

/** A file name for a terminal: the HIDDEN characters as \u{…}, everything else as it is. */
export function nameForTerminal(name: string): string {
  return replaceHidden(name, (c) => `\\u{${codePointHex(c)}}`);
}

/** How a listing shows names: exactly, or (for a terminal) through nameForTerminal. */
export type NameShown = (name: string) => string;

export const exactly: NameShown = (name) => name;

/** `SIZE<tab>MTIME<tab>NAME` lines, sizes right-aligned to the widest. */
export function formatLong(entries: readonly ListEntry[], show: NameShown = exactly): string[] {
  // Not Math.max(...array): spreading 150 000 arguments overflows the stack.
  const width = entries.reduce((w, e) => Math.max(w, String(e.size ?? '?').length), 0);
  return entries.map((e) => `${String(e.size ?? '?').padStart(width)}\t${isoTime(e.mtime)}\t${show(e.name)}`);
}

/** `fts partials`: one line per partial upload, saying which file it is, how far it got and how long it stays. */
export function formatPartials(entries: readonly PartialUpload[], show: NameShown = exactly): string[] {
  return entries.map((p) => {
    const what = p.name === undefined ? `(name unknown, key ${p.key}): ${p.staged} bytes` : `${show(p.name)}: ${p.staged} of ${p.size ?? '?'} bytes (${percent(p.staged, p.size ?? 0)} %)`;
    const extra = p.bytes !== p.staged ? `, ${p.bytes} bytes on disk` : '';
    return `${what}${extra}, last written ${isoTime(p.mtime)}, kept until ${isoTime(p.expires)}`;
  });
}

function percent(part: number, whole: number): string {
  return whole === 0 ? '100' : Math.floor((100 * part) / whole).toString();
}

/**
 * `fts partials --json`: an array of {key, name, size, sha256 or version, staged, bytes, mtime, expires},
 * times as ISO 8601 UTC strings, name and size null when the server does not know them.
 */
export function formatPartialsJson(entries: readonly PartialUpload[]): string {
  const items = entries.map((p) => ({
    key: p.key,
    name: p.name ?? null,
    size: p.size ?? null,
    ...(p.sha256 === undefined ? {} : { sha256: p.sha256 }),
    ...(p.version === undefined ? {} : { version: p.version }),
    staged: p.staged,
    bytes: p.bytes,
    mtime: isoTime(p.mtime),
    expires: isoTime(p.expires),
  }));
  return replaceHidden(JSON.stringify(items, null, 2), (c) => `\\u${codePointHex(c)}`);
}

/**
 * The --json listing: an array of {name, size, mtime} with mtime as an ISO 8601 UTC string, and sha256
 * where the server sent one (large files with a recorded digest). Names are exact (as JSON values).
 */
export function formatJson(entries: readonly ListEntry[]): string[] {
  // Exactly JSON.stringify(array, null, 2), one element per line group: a single string of millions of
  // entries would exceed V8's maximum string length.
  if (entries.length === 0) return ['[]'];
  const last = entries.length - 1;
  const items = entries.map((e, i) => {
    const item = { name: e.name, size: e.size ?? null, mtime: e.mtime === undefined ? null : isoTime(e.mtime), ...(e.sha256 === undefined ? {} : { sha256: e.sha256 }) };
    // The HIDDEN characters as JSON escapes: the same JSON value, but one a terminal shows as it is
    // (JSON.stringify writes them raw). Only the name can hold them.
    const json = replaceHidden(JSON.stringify(item, null, 2), (c) => `\\u${codePointHex(c)}`);
    return `  ${json.replace(/\n/g, '\n  ')}${i < last ? ',' : ''}`;
  });
  return ['[', ...items, ']'];
}
