import { FtsError, type Header, type Request } from '../../../protocol/index.js';
import { scramFinal, scramFirst } from '../../auth/scram.js';
import { issueToken, verifyToken } from '../../auth/tokens.js';
import { verifyPassword } from '../../auth/users.js';
import type { HandlerResult, SessionIo } from '../session-io.js';
import { KeyedSlots } from '../keyed-slots.js';

type Req<K extends Request['op']> = Extract<Request, { op: K }>;

/**
 * Unknown user and wrong password take the same path (verifyPassword is constant-time) and get one reply.
 * Success returns a session token for password-less reconnects (mech "token").
 */
export async function auth(req: Req<'auth'>, io: SessionIo): Promise<HandlerResult> {
  const { ctx } = io;
  // One table for the whole login (a reload may replace ctx.users meanwhile), so the token is bound to the
  // very credential that was checked: a password changed during the login ends it like any other.
  const users = ctx.users;
  let user: string | null;
  let serverFinal: string | undefined;
  switch (req.mech) {
    case 'plain':
      user = (await verifyPassword(users, req.user, req.password, ctx.saltKey)) ? req.user : null;
      break;
    case 'token': {
      // Refused once the user's entry has changed (a new password) or is gone (tokens.ts).
      const verdict = verifyToken(ctx.secret, req.token, (name) => users.credentialOf(name));
      // A stale token of ours names its user in the audit line of the failure (a forged one names nobody).
      if (verdict.issuedTo !== null) io.noteLoginUser(verdict.issuedTo);
      user = verdict.user;
      break;
    }
    case 'scram-sha-256': {
      const exchange = await scramFirst(req.data, (name) => users.scramVerifier(name, ctx.saltKey), ctx.saltKey, (name) => users.iterationsFor(name, ctx.saltKey));
      if (exchange === null) throw new FtsError('AUTH_FAILED', 'malformed SCRAM client-first-message');
      io.noteLoginUser(exchange.user);
      io.send({ status: 'continue', data: exchange.serverFirst });
      const next = await io.readContinuation();
      if (next['op'] !== 'auth' || next['id'] !== req.id || next['mech'] !== req.mech || typeof next['data'] !== 'string') {
        throw new FtsError('AUTH_FAILED', 'expected the SCRAM client-final-message as an auth continuation');
      }
      serverFinal = scramFinal(exchange, next['data']) ?? undefined;
      user = serverFinal === undefined ? null : exchange.user;
      break;
    }
  }
  const credential = user === null ? null : users.credentialOf(user);
  if (user === null || credential === null) throw new FtsError('AUTH_FAILED');
  await io.authenticate(user, credential);
  const { token, expires } = issueToken(ctx.secret, user, credential, ctx.config.tokenTtlSeconds * 1000);
  // What the user may do (--permissions-file), for clients to know before they try; re-read at every request.
  const perms = ctx.store.permissionsOf(user).letters;
  return { reply: { user, token, tokenExpires: expires, perms, ...(serverFinal ? { data: serverFinal } : {}) } };
}

/** The durable offset of a partial upload, so a client knows where to resume. */
export async function offset(req: Req<'offset'>, io: SessionIo): Promise<HandlerResult> {
  const staged = await io.userStore().stagedOffset(req.name, req.size, req.tag);
  return { reply: { name: req.name, offset: staged } };
}

export async function remove(req: Req<'delete'>, io: SessionIo): Promise<HandlerResult> {
  const { size } = await io.userStore().delete(req.name);
  return { reply: { name: req.name }, audit: { file: req.name }, hookEvent: { event: 'delete', name: req.name, size } };
}

/** Gives a file another name (§6.9). */
export async function rename(req: Req<'rename'>, io: SessionIo): Promise<HandlerResult> {
  const moved = await io.userStore().rename(req.name, req.to, req.overwrite);
  const reply = { name: req.name, to: req.to };
  return moved === null ? { reply } : { reply, hookEvent: { event: 'rename', name: req.to, from: req.name, ...moved } };
}

/** Entries sent per socket write: about 64 KiB of frames for typical names, then backpressure is checked. */
const LIST_BATCH = 256;

/** Sends one interim `entry` reply per item, then gives the final reply's count. */
async function sendEntries<T>(items: readonly T[], entry: (item: T) => Header, io: SessionIo): Promise<HandlerResult> {
  for (let at = 0; at < items.length; at += LIST_BATCH) {
    // One socket write per batch of entries instead of one per entry (each is a syscall).
    io.sendMany(items.slice(at, at + LIST_BATCH).map((item) => ({ status: 'entry', ...entry(item) })));
    // A reader slower than the listing holds it here instead of making the server buffer it whole.
    await io.writable();
  }
  return { reply: { count: items.length }, audit: { bytes: 0 } };
}

/**
 * Listings (list, partials) one user may have in a worker at once; more wait their turn. A listing is whole
 * in memory until sent (about 1 KiB per entry for long names), and a reader that reads nothing keeps it for
 * up to --stall-timeout: without this, a user's many sessions could each hold the directory.
 */
const LISTINGS_PER_USER = 2;
const listingSlots = new KeyedSlots(LISTINGS_PER_USER);

/** How often a listing waiting for its turn tells the session it is not stalled (and checks it is still there). */
const SLOT_WAIT_TICK_MS = 1_000;

/**
 * One of the user's listing slots. Waiting is not stalling (the session's stall timer would end an innocent
 * session waiting behind another's unread listing), but a session that ends meanwhile stops waiting at once.
 */
async function listingSlot(io: SessionIo): Promise<() => void> {
  const gone = new AbortController();
  const tick = setInterval(() => {
    try {
      io.working();
    } catch (err) {
      gone.abort(err); // ConnectionGone
    }
  }, SLOT_WAIT_TICK_MS);
  try {
    return await listingSlots.acquire(io.userStore().user, gone.signal);
  } finally {
    clearInterval(tick);
  }
}

/** Runs `build` then sends its entries, within one of the user's listing slots. */
async function listing<T>(io: SessionIo, build: () => Promise<readonly T[]>, entry: (item: T) => Header): Promise<HandlerResult> {
  const release = await listingSlot(io);
  try {
    await io.writable(); // a session cut while it waited for the slot builds nothing
    return await sendEntries(await build(), entry, io);
  } finally {
    release();
  }
}

export async function list(req: Req<'list'>, io: SessionIo): Promise<HandlerResult> {
  return listing(io, () => io.userStore().list(req.long), (e) => (req.long ? { ...e } : { name: e.name }));
}

/** The user's partial uploads (§6.10), sent like a listing. */
export async function partials(_req: Req<'partials'>, io: SessionIo): Promise<HandlerResult> {
  return listing(io, () => io.userStore().partials(io.ctx.config.partialTtlSeconds * 1000), (e) => ({ ...e }));
}

/** Removes one partial upload (§6.10). */
export async function discard(req: Req<'discard'>, io: SessionIo): Promise<HandlerResult> {
  const { bytes, name } = await io.userStore().discard(req.key);
  return { reply: { key: req.key, bytes, ...(name === null ? {} : { name }) }, audit: { bytes, ...(name === null ? {} : { file: name }) } };
}

/** What the user stores and their quota (§6.8). */
export async function usage(_req: Req<'usage'>, io: SessionIo): Promise<HandlerResult> {
  const { used, files, partial, quota, maxFiles } = await io.userStore().usage();
  return { reply: { used, files, partial, quota, maxFiles } };
}

export async function noop(): Promise<HandlerResult> {
  return { reply: {} };
}

export async function quit(_req: Req<'quit'>, io: SessionIo): Promise<HandlerResult> {
  io.closeAfterReply();
  return { reply: {} };
}
