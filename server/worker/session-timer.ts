import type { ErrorCode } from '../../protocol/index.js';
import type { Config } from '../config.js';

/**
 * A session's one timer, for its phase: login (unauthenticated), idle (authenticated, between requests) or
 * stall (inside a request, or while publishes are pending; refreshed by every byte that moves).
 */
export class SessionTimer {
  private timer: NodeJS.Timeout | null = null;
  /** Only the stall timer is refreshed by traffic; the login deadline is fixed at connect. */
  private isStall = false;
  /** Epoch ms by which the client must have logged in, whatever it sends meanwhile. */
  private readonly loginDeadline: number;

  constructor(
    private readonly config: Pick<Config, 'loginTimeoutSeconds' | 'idleTimeoutSeconds' | 'stallTimeoutSeconds'>,
    /** The timer ran out: the session ends with `code`. */
    private readonly expired: (code: ErrorCode) => void,
  ) {
    this.loginDeadline = Date.now() + config.loginTimeoutSeconds * 1000;
  }

  /** (Re)arms the timer for `phase`; `busy`: a request is in progress, or a publish not answered yet. */
  arm(phase: 'unauthenticated' | 'authenticated', busy: boolean): void {
    this.clear();
    let code: ErrorCode;
    let seconds: number;
    // Before login the one deadline counts, busy or not: requests and data must not extend it.
    if (phase === 'unauthenticated') [code, seconds] = ['LOGIN_TIMEOUT', Math.max(0, (this.loginDeadline - Date.now()) / 1000)];
    else if (busy) [code, seconds] = ['TRANSFER_STALLED', this.config.stallTimeoutSeconds];
    else [code, seconds] = ['IDLE_TIMEOUT', this.config.idleTimeoutSeconds];
    this.isStall = code === 'TRANSFER_STALLED';
    this.timer = setTimeout(() => this.expired(code), seconds * 1000);
    this.timer.unref();
  }

  /** Something moved (bytes, or the handler's own work): the stall timer, if it is the one running, starts over. */
  progressed(): void {
    if (this.isStall) this.timer?.refresh();
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
