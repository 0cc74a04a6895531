import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import {
  declaredUploadBytes,
  declaresTrailer,
  declaresUnsized,
  encodeHeader,
  errorReply,
  stopReply,
  FtsError,
  parseRequest,
  PROTOCOL,
  requestId,
  AUTH_MECHANISMS,
  hostPort,
  type ErrorCode,
  type Header,
  type Request,
  type SessionInfo,
} from '../../protocol/index.js';
import type { Logger } from '../log.js';
import { isCountedOp, isServerFault, type Direction } from '../metrics/worker-metrics.js';
import type { UserStore } from '../storage/store.js';
import { PACKAGE_VERSION } from '../../protocol/version.js';
import type { WorkerContext } from './context.js';
import { asFtsError } from './errors.js';
import { FrameSource } from './frame-source.js';
import { pacedFrameBytes, pacedReadAheadBytes } from './pacer.js';
import { workerPayloads } from './payloads.js';
import { normaliseIp, PENALTY, type Admission } from './gate-client.js';
import { runHandler, UNAUTHENTICATED_OPS } from './handlers/index.js';
import { RequestFrames } from './request-frames.js';
import { disconnection, failureCode, isDisconnection, logAudit } from './session-audit.js';
import { ConnectionGone, isDeferred, type HandlerResult, type SessionIo } from './session-io.js';
import { SessionOutput } from './session-output.js';
import { Outbox } from './session-outbox.js';
import { SessionPacing } from './session-pacing.js';
import { SessionTimer } from './session-timer.js';

/** After we end our side, a peer that never closes its side is cut off after this long. */
const CLOSE_LINGER_MS = 2_000;

/**
 * Pipelined uploads of one session that may be publishing at once. Each holds a staging file descriptor
 * and, briefly, a name lock; 32 in flight is well past where parallel fsyncs stop paying off.
 */
const MAX_PUBLISHING = 32;
/** Replies waiting in the outbox (publishes and what follows them) before the session stops reading. */
const MAX_QUEUED_REPLIES = 2 * MAX_PUBLISHING;
/** What a refused request's names, and a violation's message, are clipped to in the log: a header may hold 16 KiB of them. */
const MAX_AUDITED_NAME_CHARS = 512;

export const CAPABILITIES = ['pipeline', 'crc32c', 'download-offset', 'upload-resume', 'upload-trailer', 'usage', 'rename', 'partials', 'hash', 'upload-unsized', 'upload-progress'] as const;

type Phase = 'unauthenticated' | 'authenticated' | 'closed';

export interface SessionOptions {
  /** Chosen when the connection was accepted, so the primary could count it before any handshake. */
  id: string;
  /** The client's address from a PROXY protocol header, when a load balancer sits in between. */
  peer?: { address: string; port: number };
  /**
   * A PROXY LOCAL connection: the load balancer's own health check, every few seconds on every node. Unless
   * it logs in, it is not counted in fts_connections_total and its session-end line is at debug level, or
   * it would drown the audit log and the connection rate.
   */
  healthCheck?: boolean;
  /**
   * Behind a PROXY protocol header that carried no address (UNSPEC, UNIX): the client's address is not
   * known. The proxy's own stands in for counting and bans, never for a user's networks.
   */
  addressUnknown?: boolean;
}

/** A fresh session id (also what `fts-admin kick` takes). */
export function newSessionId(): string {
  return randomBytes(6).toString('hex');
}

/** What `fts-admin sessions` shows about a session: the admin protocol's own type. */
export type SessionSnapshot = SessionInfo;

/**
 * One connection, as an explicit state machine: unauthenticated → authenticated → closed. Requests are
 * read one at a time in arrival order, each handled by its handler in handlers/. The one overlap: an upload
 * whose bytes are all in publishes in the background while the next pipelined upload of another name is
 * read; replies still leave in request order (the outbox), and any other request first waits for those
 * publishes, so every request observes the effects of all the requests before it, as if one at a time.
 * One timer per phase: login (unauthenticated), idle (authenticated, between requests) and stall (inside a
 * request, or while publishes are pending; refreshed by every byte that moves).
 */
export class Session {
  readonly id: string;
  readonly remote: string;
  /** The source address, as limits and bans count it. */
  readonly ip: string;
  /** The address judged against the user's networks (--networks-file): `unknown` when it is not known. */
  private readonly networkIp: string;
  readonly since = new Date();
  private admitted = false;
  private phase: Phase = 'unauthenticated';
  private user: string | null = null;
  private store: UserStore | null = null;
  private readonly source: FrameSource;
  private readonly frames: RequestFrames;
  private readonly output: SessionOutput;
  private log: Logger;
  private readonly timer: SessionTimer;
  private closeAfterReply = false;
  /** The user named by the login attempt in progress (SCRAM names it inside its first message). */
  private loginUser: string | null = null;
  /** We half-closed the connection ourselves (see end()). */
  private ended = false;
  /** The code of the `bye` we sent, if we ended the session (a request it cut is audited with it). */
  private byeCode: ErrorCode | null = null;
  /** The client closed its sending side (it may still be reading our replies). */
  private peerEnded = false;
  private requests = 0;
  /** True while a request is being read and handled. */
  private active = false;
  /** Replies (and the closes that follow fatal ones) waiting for earlier deferred replies, in order. */
  private readonly outbox: Outbox;
  /** Names with a publish in flight, and how many. */
  private readonly publishing = new Map<string, number>();
  private op: string | null = null;
  private file: string | null = null;
  private bytes = 0;

  private readonly healthCheck: boolean;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: WorkerContext,
    private readonly admission: Admission,
    opts: SessionOptions,
  ) {
    this.id = opts.id;
    this.healthCheck = opts.healthCheck === true;
    const peer = opts.peer;
    const address = peer?.address ?? socket.remoteAddress;
    this.remote = hostPort(address ?? '?', peer?.port ?? socket.remotePort ?? 0);
    this.ip = normaliseIp(address);
    this.networkIp = opts.addressUnknown === true ? 'unknown' : this.ip;
    this.log = ctx.log.child({ session: this.id, remote: this.remote });
    const { maxUploadRate } = ctx.config;
    // A rate-limited upload is asked for smaller frames (the greeting's maxChunk) and read less far ahead.
    // Both are settled before the login, by --max-upload-rate: a user's own rate (--rates-file) paces the
    // frames, whatever their size.
    this.source = new FrameSource(socket, { maxHeaderBytes: ctx.config.maxHeaderBytes, maxDataBytes: pacedFrameBytes(maxUploadRate), highWaterBytes: pacedReadAheadBytes(maxUploadRate) });
    this.timer = new SessionTimer(ctx.config, (code) => {
      this.log.info({ code }, 'closing session on timeout');
      this.bye(code);
      // A transfer blocked on a stalled peer must not wait for the linger: cut it so the handler cleans up.
      if (this.busy) this.socket.destroy();
    });
    const pacing = new SessionPacing({
      rateFor: (direction) => this.ctx.rates.rateFor(this.user, direction),
      source: this.source,
      socketGone: () => this.socket.destroyed,
      progressed: () => this.timer.progressed(),
      metrics: ctx.metrics,
    });
    this.frames = new RequestFrames(this.source, pacing);
    this.output = new SessionOutput(socket, pacing, () => this.timer.progressed());
    this.outbox = new Outbox(this.log, () => {
      this.armTimer();
      this.ctx.onSessionIdle();
    });
    // Bytes from the peer are progress, except while we send it a reply's data: a peer that reads nothing
    // but trickles bytes must not keep a download (and its file and buffers) open past the stall timeout.
    this.source.onBytes = () => {
      if (this.op !== 'download' && this.op !== 'view' && this.op !== 'list') this.timer.progressed();
    };
    socket.setNoDelay(true);
    if (!this.healthCheck) ctx.metrics.connection();
    // Errors surface as 'close'; without a listener an ECONNRESET would crash the worker.
    socket.on('error', (err) => this.log.debug({ err }, 'socket error'));
  }

  get authenticated(): boolean {
    return this.phase === 'authenticated';
  }

  get closed(): boolean {
    return this.phase === 'closed';
  }

  /** A request is in progress, or a publish has not been answered yet. */
  get busy(): boolean {
    return this.active || this.outbox.queued > 0;
  }

  /** An upload or download is in flight. */
  get transferring(): boolean {
    return this.busy && (this.op === 'upload' || this.op === 'download');
  }

  /**
   * Ends the session for an administrator. An upload still receiving data is never published (its bytes
   * stay staged for a resume); one whose data is all in finishes its publish without its reply.
   */
  kick(): void {
    this.log.info({ event: 'kick', user: this.user }, 'session kicked by an administrator');
    const busy = this.busy;
    this.bye('KICKED');
    if (busy) this.socket.destroy();
  }

  snapshot(): SessionSnapshot {
    return {
      id: this.id,
      user: this.user,
      remote: this.remote,
      worker: process.pid,
      op: this.op,
      file: this.file,
      // this.bytes outlives its request (the audit line reads it after the reply); between requests
      // nothing is being transferred.
      bytes: this.op === null ? 0 : this.bytes,
      since: this.since.toISOString(),
    };
  }

  /** Runs the session to its end. Never rejects. */
  async run(): Promise<void> {
    // The primary counted this connection when it was accepted; a refusal replaces the greeting.
    const admission = this.admission;
    if (!admission.ok) {
      this.ctx.refused(admission.reason, this.remote);
      const code = admission.reason === 'banned' ? 'RATE_LIMITED' : 'TOO_MANY_CONNECTIONS';
      const retry = admission.retryAfterSeconds;
      // The ban needs no reason in words; a connection limit says which one it was.
      const message = code === 'RATE_LIMITED' ? new FtsError(code).message : `${new FtsError(code).message} (${admission.reason})`;
      this.output.sendFrame(encodeHeader({ status: 'bye', code, message, ...(retry ? { retryAfter: retry } : {}) }));
      this.phase = 'closed';
      this.source.dispose();
      this.socket.end();
      setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
      return;
    }
    this.admitted = true;
    try {
      // Accepted before a drain began but admitted only now (the gate, a PROXY header or a TLS handshake
      // took a while): told like any idle session, instead of being greeted and holding the drain open.
      if (this.ctx.draining) {
        this.bye('SHUTTING_DOWN');
        return;
      }
      this.output.sendFrame(
        encodeHeader({
          status: 'hello',
          protocol: PROTOCOL,
          server: `fts/${PACKAGE_VERSION}`,
          mechs: [...AUTH_MECHANISMS],
          caps: [...CAPABILITIES],
          maxHeader: this.ctx.config.maxHeaderBytes,
          maxChunk: pacedFrameBytes(this.ctx.config.maxUploadRate),
          // So that a client busy preparing a request (hashing a large file) knows how often to send noop.
          idleTimeout: this.ctx.config.idleTimeoutSeconds,
          // So that a client can tell before sending a file that the server would refuse it.
          ...(this.ctx.config.maxFileSize === null ? {} : { maxFileSize: this.ctx.config.maxFileSize }),
        }),
      );
      this.armTimer();
      await this.loop();
      // The client may half-close after its last request: publishes still running deserve their replies,
      // and then our side closes gracefully, so that they are delivered before the FIN.
      await this.outbox.settle();
      if (this.peerEnded) this.end();
    } catch (err) {
      this.log.error({ err }, 'session failed');
    } finally {
      if (this.user !== null) this.ctx.metrics.sessionClosed();
      if (this.admitted) this.ctx.gate.closed(this.id);
      this.phase = 'closed';
      this.timer.clear();
      this.source.dispose();
      // After a graceful end() the linger timer destroys the socket: destroying it now could turn the
      // peer's next write into a reset that discards our last frame (the bye) before it is read.
      if (!this.ended && !this.socket.destroyed) this.socket.destroy();
      const end = { event: 'session-end', user: this.user, requests: this.requests, durationMs: Date.now() - this.since.getTime() };
      // A health check (PROXY LOCAL) cannot log in; every few seconds on every node, it stays out of the audit log.
      if (this.healthCheck) this.log.debug({ ...end, healthCheck: true }, 'session end');
      else this.log.info(end, 'session end');
    }
  }

  /** Ends the session on the server's initiative, telling the client why (`bye`). */
  bye(code: ErrorCode, message?: string): void {
    if (this.phase === 'closed' || this.socket.destroyed) return;
    const err = new FtsError(code, message);
    this.byeCode = code;
    this.output.sendFrame(encodeHeader({ status: 'bye', code, message: err.message }));
    this.end();
  }

  /** Cuts the connection at once: a request in flight sees ConnectionGone and cleans up. */
  destroy(): void {
    this.socket.destroy();
  }

  private async loop(): Promise<void> {
    while (this.phase !== 'closed' && !this.socket.destroyed) {
      // A peer that does not read its replies stops getting requests served: replies never pile up.
      if (this.socket.writableNeedDrain) await this.output.drained().catch(() => undefined);
      // Nor do replies waiting behind publishes: a peer that floods refused or malformed requests while its
      // uploads publish waits for them, instead of growing the outbox without bound.
      if (this.outbox.queued >= MAX_QUEUED_REPLIES) await this.outbox.settle();
      const event = await this.source.next();
      // Ended on our side (timeout, bye, fatal error) while waiting: whatever arrives now is not served,
      // and a data frame's payload goes back to the pool (an aligned slab never given back is lost for good).
      if ((this.phase as Phase) === 'closed') {
        if (event.kind === 'data') workerPayloads.release(event.payload);
        return;
      }
      switch (event.kind) {
        case 'end':
          this.peerEnded = true;
          return;
        // Fatal, but after the replies of earlier pipelined uploads still publishing (§3.2: replies in order).
        case 'error':
          await this.fatalInOrder(null, event.error);
          return;
        case 'data':
          workerPayloads.release(event.payload);
          await this.fatalInOrder(null, new FtsError('PROTOCOL_ERROR', 'data frame outside a data phase'));
          return;
        case 'bad-header': {
          const err = new FtsError('BAD_REQUEST', event.reason);
          this.outbox.deliver(() => this.output.reply(errorReply(null, err)));
          break;
        }
        case 'header':
          await this.request(event.header);
          if (this.closeAfterReply) {
            this.end();
            return;
          }
          break;
      }
    }
  }

  private async request(header: Header): Promise<void> {
    const id = requestId(header);
    this.requests++;
    if (this.outbox.queued > 0 && !this.mayOverlap(header)) await this.outbox.settle();
    // An earlier reply may have ended the session meanwhile (a fatal error): nothing after it runs.
    if ((this.phase as Phase) === 'closed') return;
    if (this.ctx.draining) {
      this.fatal(id, new FtsError('SHUTTING_DOWN'));
      return;
    }
    if (this.healthCheck && header['op'] === 'auth') {
      // A PROXY LOCAL connection is the load balancer's own and relays no client, and it is in no limit:
      // a login on one can only come from someone who reaches this port without the proxy. Not a password
      // guess either (no penalty: the address is the proxy's).
      const mech = typeof header['mech'] === 'string' ? header['mech'].slice(0, 32) : null;
      this.log.warn({ event: 'auth', result: 'failure', mech, healthCheck: true }, 'login refused on a PROXY LOCAL connection');
      this.ctx.metrics.authAttempt(false);
      this.fatal(id, new FtsError('AUTH_FAILED', 'a PROXY LOCAL connection (the load balancer\'s own) cannot log in'));
      return;
    }
    let req: Request;
    try {
      // Before login, anything but auth/noop/quit is AUTH_REQUIRED, whatever its fields say.
      if (this.phase === 'unauthenticated' && !(UNAUTHENTICATED_OPS as ReadonlySet<unknown>).has(header['op'])) throw new FtsError('AUTH_REQUIRED');
      // After login, any auth is ALREADY_AUTHENTICATED whatever its fields say (an unknown mechanism in it
      // must not earn a penalty point).
      if (this.phase === 'authenticated' && header['op'] === 'auth') throw new FtsError('ALREADY_AUTHENTICATED');
      req = parseRequest(header);
    } catch (err) {
      await this.refuse(id, header, asFtsError(err));
      return;
    }
    // A reload took the session's address out of the user's networks: the session ends, as a kick ends it.
    if (this.phase === 'authenticated' && this.user !== null && !this.mayWorkFrom(this.user)) {
      this.log.warn({ event: 'kick', reason: 'networks', user: this.user }, `session ended: ${this.networkIp} is no longer in ${this.user}'s networks (--networks-file)`);
      await this.fatalInOrder(id, new FtsError('KICKED', `your address is no longer allowed for ${this.user} (--networks-file)`));
      return;
    }
    await this.handle(req.id, req);
  }

  /** Refuses a request before its handler runs; an upload's data is skipped to keep the stream in step. */
  private async refuse(id: number | null, header: Header, err: FtsError): Promise<void> {
    const started = Date.now();
    if (header['op'] === 'upload') {
      const skip = declaresUnsized(header) ? 'to-trailer' : declaredUploadBytes(header);
      if (skip === null) {
        const fatal = new FtsError('BAD_REQUEST', `${err.message}; the upload's size, offset or trailer flag is unusable, so what follows its header cannot be skipped`);
        this.auditRefused(header, fatal, started);
        await this.fatalInOrder(id, fatal);
        return;
      }
      this.active = true;
      this.armTimer();
      try {
        if (skip === 'to-trailer') {
          // A client that can stop sending is told at once, instead of after its whole stream.
          if (header['stoppable'] === true && id !== null) this.outbox.deliver(() => this.output.reply(stopReply(id, err)));
          await this.frames.skipToTrailer(id);
        } else {
          await this.frames.skipData(skip);
          if (declaresTrailer(header)) await this.frames.skipTrailer(id);
        }
      } catch (skipErr) {
        this.active = false;
        // Refused, whatever cut the connection or broke the stream after: on record with what it sent.
        this.auditRefused(header, err, started);
        this.penalise(err);
        if (!(skipErr instanceof ConnectionGone)) await this.fatalInOrder(id, asFtsError(skipErr));
        return;
      }
      this.active = false;
      this.armTimer();
    }
    this.penalise(err);
    if (header['op'] === 'auth') {
      // Refused before a mechanism ran (unknown mechanism, malformed): still an attempt, and audited as one.
      // An auth after login (ALREADY_AUTHENTICATED) is audited the same way but is no login attempt
      // (PROTOCOL.md §5): not counted, or a logged-in user could make the failed-login alert fire at will.
      const user = typeof header['user'] === 'string' ? header['user'].slice(0, 64) : this.user;
      const mech = typeof header['mech'] === 'string' ? header['mech'].slice(0, 32) : null;
      this.log.info({ event: 'auth', result: 'failure', user, mech, code: err.code }, 'auth');
      if (err.code !== 'ALREADY_AUTHENTICATED') this.ctx.metrics.authAttempt(false);
      this.output.reply(errorReply(id, err));
      return;
    }
    this.auditRefused(header, err, started);
    if (typeof header['op'] === 'string' && isCountedOp(header['op'])) this.ctx.metrics.operation(header['op'], err.code, 0);
    this.outbox.deliver(() => this.output.reply(errorReply(id, err)));
    // A refused upload kept the session busy while its data was skipped: a drain that began meanwhile
    // waits for this to say goodbye now, as it does after a handled request (complete()).
    this.ctx.onSessionIdle();
  }

  /** The penalty points a refusal earns its address (an illegal name, an unknown mechanism), if any. */
  private penalise(err: FtsError): void {
    if (err.code === 'BAD_NAME') void this.ctx.gate.penalty(this.ip, PENALTY.badName);
    if (err.code === 'UNSUPPORTED_MECHANISM') void this.ctx.gate.penalty(this.ip, PENALTY.unknownMechanism);
  }

  /**
   * The audit line of a request refused before its handler ran: with the names it sent (clipped: a refused
   * name may be anything, and a traversal attempt is what an auditor looks for), no bytes stored, and the
   * time a refused upload's data took to skip.
   */
  private auditRefused(header: Header, err: FtsError, started: number): void {
    const sent = (field: string): string | undefined => (typeof header[field] === 'string' ? (header[field] as string).slice(0, MAX_AUDITED_NAME_CHARS) : undefined);
    logAudit(this.log, { op: header['op'], user: this.user, result: null, started, failure: err, bytes: 0, name: sent('name'), to: header['op'] === 'rename' ? sent('to') : undefined });
  }

  private async handle(id: number, req: Request): Promise<void> {
    if (req.op === 'auth') {
      // A ban also stops connections opened before it: no more guesses on them.
      const ban = await this.ctx.gate.banned(this.ip);
      if (ban.banned) {
        this.log.info({ event: 'auth', result: 'failure', user: null, mech: req.mech, code: 'RATE_LIMITED' }, 'auth');
        this.ctx.metrics.authAttempt(false);
        this.fatal(id, new FtsError('RATE_LIMITED', undefined, ban.retryAfterSeconds ? { retryAfter: ban.retryAfterSeconds } : {}));
        return;
      }
      // Ended while the primary was asked (a drain's bye, a kick, the login timeout): nothing may run now.
      if (this.phase === 'closed') return;
    }
    const started = Date.now();
    this.active = true;
    this.op = req.op;
    this.file = 'name' in req ? req.name : null;
    this.bytes = 0;
    this.armTimer();
    const direction = req.op === 'upload' || req.op === 'download' ? req.op : null;
    if (direction) this.ctx.metrics.transferStarted(direction);
    let result: HandlerResult | null = null;
    let failure: FtsError | null = null;
    try {
      const outcome = await runHandler(req, this.io(id));
      if (isDeferred(outcome)) {
        this.defer(id, req, started, outcome.later);
        return;
      }
      result = outcome;
      this.runHook(result);
    } catch (err) {
      failure = this.failureOf(err);
    } finally {
      if (direction) this.ctx.metrics.transferEnded(direction);
      this.active = false;
      this.op = null;
      this.file = null;
      this.armTimer();
    }
    // A fatal failure is answered after the earlier replies, and before anything else is read: requests
    // pipelined after it must not run (the client is told the connection ends there).
    if (this.outbox.queued > 0 && !failure?.fatal) this.outbox.enqueue(() => this.complete(id, req, started, result, failure));
    else {
      await this.outbox.settle();
      await this.complete(id, req, started, result, failure);
    }
  }

  private failureOf(err: unknown): FtsError {
    // A request cut by the end of its connection: the audit line must not read like a storage failure. It
    // gets our own bye's code when we ended the session (KICKED, SHUTTING_DOWN, TRANSFER_STALLED), else
    // IO_ERROR marked as a disconnection. A failure of its own (a publish still running in the background
    // that fails its checksum or its fsync) keeps its code, whatever happened to the connection since.
    if (err instanceof ConnectionGone || (this.socket.destroyed && !(err instanceof FtsError))) {
      if (this.byeCode !== null) return new FtsError(this.byeCode);
      return disconnection();
    }
    const failure = asFtsError(err);
    if (failure.code === 'INTERNAL') this.log.error({ err }, 'request failed');
    return failure;
  }

  /**
   * Hands what a request did to a file to the hooks as soon as it is done, whether or not its reply still
   * reaches the client (§3.2 rule 4), and not when its reply goes out: a pipelined upload's reply waits for
   * the earlier ones, and a change that followed it elsewhere must not have its run first.
   */
  private runHook(result: HandlerResult): void {
    const done = result.hookEvent;
    if (done === undefined || this.store === null || this.ctx.hooks === null) return;
    const fromPath = done.event === 'rename' ? { fromPath: this.store.pathOf(done.from) } : {};
    this.ctx.hooks.happened({ ...done, user: this.store.user, path: this.store.pathOf(done.name), ...fromPath, remote: this.ip });
  }

  /** Lets a publish run on while the next requests are read; its reply keeps its place in the order. */
  private defer(id: number, req: Request, started: number, later: Promise<HandlerResult>): void {
    const name = 'name' in req ? req.name : '';
    this.publishing.set(name, (this.publishing.get(name) ?? 0) + 1);
    const settled = later.then(
      (result) => {
        this.runHook(result);
        return { result, failure: null };
      },
      (err: unknown) => ({ result: null, failure: this.failureOf(err) }),
    );
    this.outbox.enqueue(async () => {
      const { result, failure } = await settled;
      const left = (this.publishing.get(name) ?? 1) - 1;
      if (left === 0) this.publishing.delete(name);
      else this.publishing.set(name, left);
      await this.complete(id, req, started, result, failure);
    });
  }

  /** An upload of a name nobody in this session is publishing may start while earlier uploads publish. */
  private mayOverlap(header: Header): boolean {
    const name = header['name'];
    return header['op'] === 'upload' && typeof name === 'string' && !this.publishing.has(name) && this.publishing.size < MAX_PUBLISHING && !this.ctx.draining;
  }

  private async fatalInOrder(id: number | null, err: FtsError): Promise<void> {
    await this.outbox.settle();
    this.fatal(id, err);
  }

  /** The end of a request: audit line, metrics, and its final reply. */
  private async complete(id: number, req: Request, started: number, result: HandlerResult | null, failure: FtsError | null): Promise<void> {
    if (req.op === 'auth') {
      const user = req.mech === 'plain' ? req.user.slice(0, 64) : (this.user ?? this.loginUser);
      // The server failing a login (its storage gone, say) is logged at warn with why, as any storage failure.
      const serverFault = failure !== null && isServerFault(failure.code);
      (serverFault ? this.log.warn : this.log.info).call(this.log, { event: 'auth', result: failure ? 'failure' : 'success', user, mech: req.mech, code: failure?.code, ...(serverFault ? { reason: failure.message } : {}) }, 'auth');
      // A login refused for the user's session count checked out (fts_rejections_total counts it), or failed
      // by the server: not a failed login, which alerts read as password guessing.
      if (failure?.code !== 'TOO_MANY_CONNECTIONS' && !serverFault) this.ctx.metrics.authAttempt(failure === null);
      // Token failures are not guesses (tokens are MACed); after a restart every client's token goes stale.
      if (failure?.code === 'AUTH_FAILED' && req.mech !== 'token') {
        // Wrong password or unknown user: delay the answer (growing with the address's score), as vsftpd does.
        // The answer is AUTH_FAILED whatever the login timeout: a delay longer than the time left must not
        // turn it into LOGIN_TIMEOUT. No timer is needed meanwhile: the delay is capped (Gatekeeper) and so
        // is the question to the primary (GateClient), and AUTH_FAILED is fatal, so the session ends after it.
        this.timer.clear();
        const { delayMs } = await this.ctx.gate.penalty(this.ip, PENALTY.authFailure);
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      }
    } else {
      if (isCountedOp(req.op)) this.ctx.metrics.operation(req.op, failureCode(failure), (Date.now() - started) / 1000);
      if (failure?.code === 'QUOTA_EXCEEDED') this.ctx.metrics.quotaRefused();
      if (req.op === 'hash' && result?.reply['damaged'] === true) this.ctx.metrics.fileDamaged();
      logAudit(this.log, { op: req.op, user: this.user, result, started, failure, bytes: this.bytes, name: 'name' in req ? req.name : undefined, to: req.op === 'rename' ? req.to : undefined });
    }
    // A request cut by its client's half-close (an upload whose data stopped) is a dropped connection, not
    // a failure to report: nothing more will come, so no reply; the connection closes after earlier ones.
    if (!this.socket.destroyed && !isDisconnection(failure)) {
      if (failure) {
        if (failure.fatal) this.fatal(id, failure);
        else this.output.reply(errorReply(id, failure));
      } else if (result) {
        this.output.reply({ id, status: 'ok', ...result.reply });
      }
    }
    this.ctx.onSessionIdle();
  }

  /** Whether `user` may log in, and work, from this session's address (--networks-file; a reload may change it). */
  private mayWorkFrom(user: string): boolean {
    return this.ctx.networks.allows(user, this.networkIp);
  }

  private io(id: number): SessionIo {
    return {
      ctx: this.ctx,
      log: this.log,
      userStore: () => {
        if (this.store === null) throw new FtsError('AUTH_REQUIRED');
        return this.store;
      },
      authenticate: async (user: string, credential: Buffer) => {
        if (!this.mayWorkFrom(user)) {
          // The same reply as any failed login (nothing tells the address's owner that the password was
          // right); the reason is the operator's.
          this.log.warn({ user, reason: 'networks' }, `login refused: ${this.networkIp} is not in ${user}'s networks (--networks-file)`);
          throw new FtsError('AUTH_FAILED');
        }
        const stillCurrent = (): boolean => this.ctx.users.credentialOf(user)?.equals(credential) === true && this.mayWorkFrom(user);
        // Checked before the user's directory is made (a user a reload removed gets none), and again after:
        // no await between that check and the phase change, and a reload is applied on this event loop, so
        // it came either before (refused here) or after (the session exists, and a kick finds it).
        if (!stillCurrent()) throw new FtsError('AUTH_FAILED'); // the same reply as any failed login
        const store = await this.ctx.store.user(user);
        const limited = this.ctx.config.maxSessionsPerUser > 0;
        // The primary counts sessions across the node's workers; with a limit it is asked, and only for a
        // login that can still go on, so that a slot is never taken for one about to fail. A refusal is not a
        // failed login.
        if (limited && stillCurrent()) {
          const admitted = await this.ctx.gate.login(this.id, user);
          if (!admitted.ok) {
            throw new FtsError('TOO_MANY_CONNECTIONS', `${user} has as many sessions as the server allows at once (--max-sessions-per-user); end one, or try again later`);
          }
        }
        // Cut meanwhile (kick, login timeout, drain's deadline): no session to open. The phase, not only the
        // socket: a bye leaves the socket open for a moment (its linger), and a session opened then would run
        // the requests that follow, unanswered.
        if (this.socket.destroyed || this.phase === 'closed') throw new ConnectionGone();
        if (!stillCurrent()) throw new FtsError('AUTH_FAILED');
        if (!limited) this.ctx.gate.loggedIn(this.id, user);
        this.store = store;
        this.user = user;
        this.phase = 'authenticated';
        this.ctx.metrics.sessionOpened();
      },
      // After the replies still owed to earlier requests (an unsized upload's `stop` may come while an
      // earlier upload publishes): replies keep request order.
      send: (reply: Header) => this.outbox.deliver(() => this.output.reply({ id, ...reply })),
      sendIfNothingWaits: (reply: Header) => {
        if (this.outbox.queued > 0) return false;
        this.output.reply({ id, ...reply });
        return true;
      },
      sendMany: (replies: Header[]) => this.output.sendFrame(Buffer.concat(replies.map((reply) => encodeHeader({ id, ...reply })))),
      sendData: (payload: Buffer, sent?: () => void, paced?: boolean) => this.output.sendData(payload, sent, paced),
      writable: async () => {
        if (this.socket.destroyed) throw new ConnectionGone();
        if (this.socket.writableNeedDrain) await this.output.drained();
        this.timer.progressed();
      },
      readData: () => this.frames.readData(),
      readContinuation: () => this.frames.readContinuation(),
      readDataOrTrailer: (id: number, keptAlive?: () => void) => this.frames.readDataOrTrailer(id, keptAlive),
      noteLoginUser: (user: string) => {
        this.loginUser = user.slice(0, 64);
      },
      working: () => {
        if (this.socket.destroyed) throw new ConnectionGone();
        this.timer.progressed();
      },
      rateLimit: (direction: Direction) => this.ctx.rates.rateFor(this.user, direction),
      progress: (bytes: number, file?: string) => {
        this.bytes = bytes;
        if (file !== undefined) this.file = file;
      },
      closeAfterReply: () => {
        this.closeAfterReply = true;
      },
    };
  }

  /** Sends a fatal error and closes: the stream cannot (or may not) continue. */
  private fatal(id: number | null, err: FtsError): void {
    if (err.code === 'PROTOCOL_ERROR' || err.code === 'FRAME_TOO_LARGE') {
      // Penalised, so the operator can see for what (outside a request nothing else names it).
      this.log.warn({ event: 'violation', user: this.user, code: err.code, reason: err.message.slice(0, MAX_AUDITED_NAME_CHARS), points: PENALTY.protocolViolation }, 'protocol violation');
      void this.ctx.gate.penalty(this.ip, PENALTY.protocolViolation);
    }
    const reply = errorReply(id, err);
    reply.fatal = true;
    this.output.reply(reply);
    this.end();
  }

  /** Half-closes our side so the last reply is delivered, then cuts a peer that lingers. */
  private end(): void {
    if (this.phase === 'closed') return;
    this.ended = true;
    this.phase = 'closed';
    this.timer.clear();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** (Re)arms the one timer for the current phase. */
  private armTimer(): void {
    if (this.phase === 'closed') this.timer.clear();
    else this.timer.arm(this.phase, this.busy);
  }
}
