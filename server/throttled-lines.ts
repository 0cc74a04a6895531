/**
 * A log line for an event that may come in floods (connections refused for want of a PROXY header, or for
 * want of a worker's descriptor): the first at once, then at most one per interval, carrying how many
 * there were since the last line. One line is how an operator learns of it; one per event would let
 * anyone who reaches the port flood the log.
 */
export class ThrottledLines<T> {
  private lastAt = -Infinity;
  private unreported = 0;

  constructor(
    private readonly intervalMs: number,
    private readonly write: (fields: T, sinceLastLine: number) => void,
  ) {}

  note(fields: T, now = Date.now()): void {
    this.unreported++;
    if (now - this.lastAt < this.intervalMs) return;
    this.write(fields, this.unreported);
    this.lastAt = now;
    this.unreported = 0;
  }
}

/** ThrottledLines per key (a refusal's reason): each key's first line at once, then at most one per interval. */
export class ThrottledLinesByKey<T> {
  private readonly lines = new Map<string, ThrottledLines<T>>();

  constructor(
    private readonly intervalMs: number,
    private readonly write: (key: string, fields: T, sinceLastLine: number) => void,
  ) {}

  note(key: string, fields: T, now = Date.now()): void {
    let lines = this.lines.get(key);
    if (lines === undefined) {
      lines = new ThrottledLines(this.intervalMs, (f, since) => this.write(key, f, since));
      this.lines.set(key, lines);
    }
    lines.note(fields, now);
  }
}
