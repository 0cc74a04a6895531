/**
 * Group commit for idempotent "make everything so far durable" operations, such as fsync of a directory:
 * any run that *starts* after a caller's change covers it. A caller that finds a run in progress (which may
 * have started before its change) waits for it and then shares the single next run with everyone else who
 * arrived meanwhile, so N concurrent callers cost about two runs, not N. Used by the server (publishing into
 * a user directory) and the client (downloads into one local directory).
 */
export class GroupCommit {
  readonly #runs = new Map<string, { running: Promise<void>; next: Promise<void> | null }>();

  constructor(private readonly run: (key: string) => Promise<void>) {}

  /** Resolves once a run for `key` that started after this call has finished (rejects if that run failed). */
  commit(key: string): Promise<void> {
    const current = this.#runs.get(key);
    if (current === undefined) return this.#start(key);
    current.next ??= current.running.then(
      () => this.#start(key),
      () => this.#start(key),
    );
    return current.next;
  }

  #start(key: string): Promise<void> {
    const running: Promise<void> = this.run(key).finally(() => {
      if (this.#runs.get(key)?.running === running) this.#runs.delete(key);
    });
    this.#runs.set(key, { running, next: null });
    return running;
  }
}
