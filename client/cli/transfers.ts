/**
 * What the transfer commands (upload, download, mput, mget) print: one result per file on stdout (the
 * human line, or with --json one JSON object per line), and a progress line on stderr only when stderr is
 * a terminal and neither --quiet nor --json was given. Loaded only by those commands, so `fts list` does
 * not pay for it.
 */
import type { DownloadResult, StreamDownloadResult, TransferOptions, UploadResult } from '../client.js';
import { ProgressBar } from './progress.js';
import { report } from './report.js';

export interface OutputMode {
  json?: boolean;
  quiet?: boolean;
  /** --skip-same: transfers whose two ends hold the same bytes are left out (and --json says `skipped`). */
  'skip-same'?: boolean;
}

/** One file's transfer as the output follows it. */
export interface Tracked {
  /** To pass to FtsClient.upload/download: drives the progress line. */
  readonly options: TransferOptions;
  readonly startedAt: number;
}

/** Whether the progress line is shown: only for a person watching stderr. */
export function showsProgress(mode: OutputMode, stderrIsTty = process.stderr.isTTY === true): boolean {
  return stderrIsTty && mode.quiet !== true && mode.json !== true;
}

export class TransferOutput {
  private readonly bar: ProgressBar | null;

  /**
   * `dataOnStdout`: the file itself goes to standard output (`download NAME -`), so the result line goes to
   * stderr instead, and --quiet leaves it out.
   */
  constructor(
    private readonly mode: OutputMode,
    private readonly dataOnStdout = false,
  ) {
    this.bar = showsProgress(mode) ? new ProgressBar(process.stderr) : null;
  }

  /** Starts following one file; `label` is what the progress line calls it. */
  track(label: string): Tracked {
    const bar = this.bar;
    const options: TransferOptions = this.mode['skip-same'] === true ? { skipSame: true } : {};
    if (bar !== null) {
      options.onStart = (offset, size) => bar.start(label, offset, size);
      options.onProgress = (done, total) => bar.update(done, total);
    }
    return { options, startedAt: Date.now() };
  }

  uploaded(r: UploadResult, t: Tracked): void {
    if (r.skipped === true) this.result(r, t, `skipped ${r.name} (${r.size} bytes, sha256 ${r.sha256}): the server holds the same bytes`);
    else this.result(r, t, `uploaded ${r.name} (${r.size} bytes, sha256 ${r.sha256}${resumed(r.resumedFrom)})`);
  }

  downloaded(r: DownloadResult, t: Tracked): void {
    if (r.skipped === true) this.result(r, t, `skipped ${r.name} -> ${r.localPath} (${r.size} bytes, sha256 ${r.sha256}): ${r.localPath} holds the same bytes`);
    else this.result(r, t, `downloaded ${r.name} -> ${r.localPath} (${r.size} bytes, sha256 ${r.sha256}${resumed(r.resumedFrom)})`);
  }

  /** A download to standard output (`download NAME -`). */
  streamed(r: StreamDownloadResult, t: Tracked): void {
    this.result(r, t, `downloaded ${r.name} -> standard output (${r.size} bytes, sha256 ${r.sha256}${resumed(r.resumedFrom)})`);
  }

  /** Reports one file's failure (mput/mget go on with the files already in flight). */
  failed(err: unknown): void {
    this.bar?.clear();
    report(err);
  }

  /** Takes the progress line off the terminal; call once the command is done, whatever the outcome. */
  close(): void {
    this.bar?.clear();
  }

  private result(r: UploadResult | DownloadResult | StreamDownloadResult, t: Tracked, human: string): void {
    this.bar?.clear();
    if (this.dataOnStdout && this.mode.quiet === true) return;
    const skipped = this.mode['skip-same'] === true ? { skipped: 'skipped' in r && r.skipped === true } : {};
    const line =
      this.mode.json === true
        ? JSON.stringify({ name: r.name, bytes: r.size, sha256: r.sha256, resumedFrom: r.resumedFrom, seconds: (Date.now() - t.startedAt) / 1000, ...skipped })
        : human;
    (this.dataOnStdout ? process.stderr : process.stdout).write(`${line}\n`);
  }
}

function resumed(offset: number): string {
  return offset > 0 ? `, resumed at byte ${offset}` : '';
}
