import type { Logger } from '../log.js';

/**
 * A session's replies that wait for earlier deferred replies (and the closes that follow fatal ones), sent
 * in request order.
 */
export class Outbox {
  private tail: Promise<void> = Promise.resolve();
  /** Steps queued and not yet done. */
  private count = 0;

  constructor(
    private readonly log: Logger,
    /** The last queued step is done. */
    private readonly emptied: () => void,
  ) {}

  get queued(): number {
    return this.count;
  }

  /** Runs `send` now if nothing is waiting in the outbox, otherwise after everything that is. */
  deliver(send: () => void): void {
    if (this.count > 0) this.enqueue(send);
    else send();
  }

  enqueue(step: () => void | Promise<void>): void {
    this.count++;
    this.tail = this.tail
      .then(step)
      .catch((err: unknown) => this.log.error({ err }, 'sending a deferred reply failed'))
      .finally(() => {
        if (--this.count > 0) return;
        this.emptied();
      });
  }

  /** Waits until every queued reply has been sent. */
  async settle(): Promise<void> {
    while (this.count > 0) await this.tail;
  }
}
