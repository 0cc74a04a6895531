import type { Header } from '../../protocol/index.js';
import type { Logger } from '../log.js';
import type { UserStore } from '../storage/store.js';
import type { WorkerContext } from './context.js';
import type { FileEvent } from './upload-hooks.js';

/** One data frame handed to an upload handler. */
export interface DataChunk {
  payload: Buffer;
  crcOk: boolean;
}

/**
 * The narrow view of a session that a request handler gets. Handlers never touch the socket: they send
 * interim replies and data frames through this, and return the fields of their final `ok` reply.
 */
export interface SessionIo {
  readonly ctx: WorkerContext;
  readonly log: Logger;
  /** The user's store; only handlers that run after authentication call it. */
  userStore(): UserStore;
  /**
   * Marks the session authenticated as `user` (creates the user directory on first login), unless the
   * user's entry in the users table is no longer `credential` (the one the login checked): a reload that
   * changed the password while the login ran refuses it with AUTH_FAILED, so that once a reload has been
   * applied no login with the old password can begin a session (which a kick-user after it would miss).
   */
  authenticate(user: string, credential: Buffer): Promise<void>;
  /** Sends an interim reply for the current request (`id` is added), after the replies owed to earlier ones. */
  send(reply: Header): void;
  /**
   * Sends an interim reply now if no reply owed to an earlier request waits (a pipelined publish), and says
   * whether it did: for replies that are worth sending only now (progress), not queued one after another.
   */
  sendIfNothingWaits(reply: Header): boolean;
  /** Sends several interim replies for the current request in one socket write. */
  sendMany(replies: Header[]): void;
  /** Resolves once the socket can take more (a slow reader makes a long listing wait here). */
  writable(): Promise<void>;
  /**
   * Sends one data frame, resolving once the socket can take more (backpressure). `sent` is called once the
   * socket no longer needs `payload`'s memory (handed to the kernel, or the connection failed). `paced`: a
   * download's frame, sent no faster than the session's download rate limit allows (a view's is not).
   */
  sendData(payload: Buffer, sent?: () => void, paced?: boolean): Promise<void>;
  /**
   * The next data frame of the current upload, no faster than the session's upload rate limit allows.
   * Throws PROTOCOL_ERROR on anything else, ConnectionGone at end.
   */
  readData(): Promise<DataChunk>;
  /**
   * The next header frame of a multi-step request (an authentication continuation). Throws
   * PROTOCOL_ERROR on a data frame, ConnectionGone at end.
   */
  readContinuation(): Promise<Header>;
  /**
   * The next frame of unsized upload `id`: a data frame (paced as readData), or the header frame after its
   * data (its trailer); keep-alive frames are consumed, calling `keptAlive`. BAD_REQUEST for a header frame
   * that is not a JSON object, PROTOCOL_ERROR for one of another op or id, ConnectionGone at end.
   */
  readDataOrTrailer(id: number, keptAlive?: () => void): Promise<DataChunk | { trailer: Header }>;
  /** Records the user a login attempt is for, before it succeeds (for the audit line of a failure). */
  noteLoginUser(user: string): void;
  /**
   * Says that the current request is making progress on its own before any byte moves on the socket
   * (hashing or copying a long prefix of a file), so that this time is not taken for a stalled peer.
   * Throws ConnectionGone once the connection is gone: minutes of copying or hashing for a client that
   * left would only hold the disk and the file.
   */
  working(): void;
  /** The session's rate limit in `direction` now, bytes per second (its user's, else the server's); null: none. */
  rateLimit(direction: 'upload' | 'download'): number | null;
  /** Records progress of the current operation: total payload bytes moved so far. */
  progress(bytes: number, file?: string): void;
  /** Closes the connection once the final reply is sent. */
  closeAfterReply(): void;
}

/** The peer went away in the middle of a request. Nothing is replied; the handler just cleans up. */
export class ConnectionGone extends Error {
  override name = 'ConnectionGone';
}

/** Fields of a final `ok` reply, plus what the audit line should record. */
export interface HandlerResult {
  reply: Header;
  audit?: { file?: string; bytes?: number; sha256?: string };
  /** What the operation did to a file (for --upload-hook and --hook-events). */
  hookEvent?: FileEvent;
}

/**
 * A request whose frames have all been read but whose outcome is still being produced: an upload whose
 * data is staged and whose publish (fsync, rename, directory fsync) is running. The session reads the next
 * request meanwhile and sends this one's reply when `later` settles, still in request order.
 */
export interface DeferredResult {
  later: Promise<HandlerResult>;
}

export type HandlerOutcome = HandlerResult | DeferredResult;

export function isDeferred(outcome: HandlerOutcome): outcome is DeferredResult {
  return 'later' in outcome;
}
