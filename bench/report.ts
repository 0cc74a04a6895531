/**
 * Result rows and their two renderings: a fixed-width table for people, one JSON document for tools.
 */
import { MiB } from './util.js';

export interface LimitRef {
  /** Short name of the limit ("durable-write", "raw copy", ...). */
  name: string;
  /** The limit's value, in the row's unit. */
  value: number;
  /** row value / limit value. */
  ratio: number;
}

export interface Target {
  /** Human-readable target, e.g. "≥ 0.9 × durable-write". */
  text: string;
  pass: boolean;
}

export interface Row {
  /** Stable machine key, e.g. "upload-1g". */
  id: string;
  section: string;
  workload: string;
  value: number;
  unit: string;
  limits?: LimitRef[];
  target?: Target;
  /** Peak of the summed server RSS (primary + workers) during the workload, bytes. */
  serverRssPeak?: number;
  /** Free-form details (CPU time, sizes, sub-results). */
  notes?: string;
  /** Extra numbers for the JSON document. */
  details?: Record<string, unknown>;
}

export interface ErrorRow {
  workload: string;
  error: string;
}

export interface Report {
  meta: Record<string, unknown>;
  limits: Record<string, unknown>;
  rows: Row[];
  errors: ErrorRow[];
}

export function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return `— ${unit}`;
  if (Number.isInteger(value) && unit !== 'MiB/s') return `${value} ${unit}`;
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  const text = `${value.toFixed(digits)} ${unit}`;
  // The issue asks for MB/s; the targets are in MiB/s. Show both for throughputs.
  if (unit === 'MiB/s') return `${text} (${((value * MiB) / 1e6).toFixed(0)} MB/s)`;
  return text;
}

function formatLimits(limits: LimitRef[] | undefined, unit: string): string {
  if (!limits || limits.length === 0) return '';
  return limits.map((l) => `${l.ratio.toFixed(2)}× ${l.name} (${formatValue(l.value, unit).replace(/ \(.*\)$/, '')})`).join('; ');
}

function mib(bytes: number | undefined): string {
  return bytes === undefined ? '' : `${(bytes / MiB).toFixed(0)} MiB`;
}

function pad(s: string, n: number): string {
  const len = [...s].length;
  return len >= n ? s : s + ' '.repeat(n - len);
}

/** The human table: one line per row, grouped by section, with a notes line under rows that have them. */
export function renderTable(report: Report): string {
  const header = ['Workload', 'Result', 'vs limit', 'Srv RSS peak', 'Target', ''];
  const lines: string[][] = [];
  const notes = new Map<number, string>();
  let section = '';
  const sectionAt = new Map<number, string>();
  for (const row of report.rows) {
    if (row.section !== section) {
      section = row.section;
      sectionAt.set(lines.length, section);
    }
    if (row.notes) notes.set(lines.length, row.notes);
    lines.push([
      row.workload,
      formatValue(row.value, row.unit),
      formatLimits(row.limits, row.unit),
      mib(row.serverRssPeak),
      row.target?.text ?? '',
      row.target ? (row.target.pass ? 'PASS' : 'FAIL') : '',
    ]);
  }
  const widths = header.map((h, i) => Math.max([...h].length, ...lines.map((l) => [...l[i]!].length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => pad(c, widths[i]!)).join('  ').trimEnd();
  const out: string[] = [fmt(header), widths.map((w) => '-'.repeat(w)).join('  ')];
  lines.forEach((l, i) => {
    const s = sectionAt.get(i);
    if (s !== undefined) out.push(`[${s}]`);
    out.push(fmt(l));
    const n = notes.get(i);
    if (n !== undefined) out.push(`    ${n}`);
  });
  for (const e of report.errors) out.push(`ERROR ${e.workload}: ${e.error}`);
  return out.join('\n');
}

export function renderJson(report: Report): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
