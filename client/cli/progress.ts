/**
 * A one-line progress display for a terminal: `NAME  12.0 MiB / 32.0 MiB  37%  8.1 MiB/s  ETA 0:03`,
 * redrawn in place with `\r` at most MAX_REDRAWS_PER_SECOND times a second. The caller decides whether to
 * show it at all (only when stderr is a terminal); this module only renders and throttles.
 */
import { formatBytes } from '../../protocol/format-bytes.js';
import { printable } from './report.js';

const MIN_REDRAW_MS = 100; // at most ~10 redraws per second
/** Below this much elapsed time a rate is noise; the display shows "--" instead. */
const MIN_RATE_WINDOW_MS = 250;
const CLEAR_LINE = '\r\u001b[K';

export interface ProgressStream {
  write(text: string): unknown;
  readonly columns?: number;
}

export class ProgressBar {
  private label = '';
  private done = 0;
  private total = 0;
  /** Bytes and time when the current attempt started: the rate counts only what this attempt moved. */
  private baseBytes = 0;
  private baseTime = 0;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private visible = false;

  constructor(
    private readonly stream: ProgressStream,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** A transfer (or another attempt of it) starts at `offset` of `total` bytes. Drawn at once. */
  start(label: string, offset: number, total: number): void {
    this.label = printable(label);
    this.done = offset;
    this.total = total;
    this.baseBytes = offset;
    this.baseTime = this.now();
    this.draw();
  }

  /** Bytes done so far; redrawn when the last redraw is old enough, and always at 100 %. */
  update(done: number, total: number): void {
    this.done = done;
    this.total = total;
    if (done >= total || this.now() - this.lastDraw >= MIN_REDRAW_MS) this.draw();
  }

  /** Removes the line, so that other output can be written (the next update draws it again). */
  clear(): void {
    if (!this.visible) return;
    this.stream.write(CLEAR_LINE);
    this.visible = false;
  }

  private draw(): void {
    this.lastDraw = this.now();
    // A pseudo-terminal without a size (script(1), some CI runners) reports 0 columns.
    const columns = this.stream.columns !== undefined && this.stream.columns > 0 ? this.stream.columns : 80;
    const width = Math.max(20, columns - 1);
    const stats = this.stats();
    const room = width - stats.length - 2;
    const label = room <= 3 ? '' : this.label.length > room ? `${this.label.slice(0, room - 1)}…` : this.label;
    this.stream.write(`${CLEAR_LINE}${label}  ${stats}`.slice(0, width + CLEAR_LINE.length));
    this.visible = true;
  }

  /** `12.0 MiB / 32.0 MiB  37%  8.1 MiB/s  ETA 0:03`; `12.0 MiB  8.1 MiB/s` when the total is not known (Infinity). */
  private stats(): string {
    const percent = this.total > 0 ? Math.floor((this.done / this.total) * 100) : 100;
    const elapsed = this.now() - this.baseTime;
    const moved = this.done - this.baseBytes;
    let rate = '--';
    let eta = '--:--';
    if (elapsed >= MIN_RATE_WINDOW_MS && moved > 0) {
      const perSecond = (moved / elapsed) * 1000;
      rate = formatBytes(perSecond);
      eta = formatDuration((this.total - this.done) / perSecond);
    }
    // A stream of unknown length (upload -): what moved and how fast, nothing about what is left.
    if (!Number.isFinite(this.total)) return `${formatBytes(this.done)}  ${rate}/s`;
    return `${formatBytes(this.done)} / ${formatBytes(this.total)}  ${String(percent).padStart(3)}%  ${rate}/s  ETA ${eta}`;
  }
}


/** Seconds as m:ss, or h:mm:ss from an hour on. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
