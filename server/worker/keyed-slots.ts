/**
 * At most `limit` holders per key at once; the others wait, first come first served. Used to bound what
 * one user's listings hold in a worker: a listing is built whole (it is sorted) before it is sent, and a
 * reader that reads nothing keeps it until the stall timeout, so without a bound a user with many
 * sessions could make a worker hold its directory once per session.
 */
export class KeyedSlots {
  private readonly held = new Map<string, number>();
  /** Waiters in order; `grant` hands one the slot being given back. */
  private readonly waiting = new Map<string, Array<{ grant: () => void }>>();

  constructor(private readonly limit: number) {}

  /**
   * Waits for a slot of `key`; call the returned function exactly once to give it back. Aborting `signal`
   * while still waiting leaves the queue and rejects with its reason (a waiter whose connection is gone must
   * not hold its session open until a slot frees up); once granted, the slot is the caller's to give back.
   */
  async acquire(key: string, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if ((this.held.get(key) ?? 0) >= this.limit) {
      await new Promise<void>((resolve, reject) => {
        const waiter = {
          grant: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        const onAbort = (): void => {
          const queue = this.waiting.get(key);
          const at = queue?.indexOf(waiter) ?? -1;
          if (at < 0) return; // granted meanwhile: the slot is ours, and released by the caller
          queue!.splice(at, 1);
          if (queue!.length === 0) this.waiting.delete(key);
          reject(signal!.reason);
        };
        const queue = this.waiting.get(key) ?? [];
        queue.push(waiter);
        this.waiting.set(key, queue);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    } else {
      this.held.set(key, (this.held.get(key) ?? 0) + 1);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(key);
    };
  }

  /** Slots of `key` held now (for tests and status). */
  holders(key: string): number {
    return this.held.get(key) ?? 0;
  }

  /** Callers waiting for a slot of `key` now. */
  waiters(key: string): number {
    return this.waiting.get(key)?.length ?? 0;
  }

  private release(key: string): void {
    const queue = this.waiting.get(key);
    const next = queue?.shift();
    if (queue !== undefined && queue.length === 0) this.waiting.delete(key);
    // The slot passes straight to the next waiter: the count stays as it is.
    if (next !== undefined) return next.grant();
    const left = (this.held.get(key) ?? 1) - 1;
    if (left <= 0) this.held.delete(key);
    else this.held.set(key, left);
  }
}
