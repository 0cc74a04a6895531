import { FtsError, type Request } from '../../../protocol/index.js';
import { verifyPassword } from '../../auth/users.js';
import type { HandlerResult, SessionIo } from '../session-io.js';

type Req<K extends Request['op']> = Extract<Request, { op: K }>;

/** Unknown user and wrong password take the same path (verifyPassword is constant-time) and get one reply. */
export async function auth(req: Req<'auth'>, io: SessionIo): Promise<HandlerResult> {
  if (!verifyPassword(io.ctx.users, req.user, req.password)) throw new FtsError('AUTH_FAILED');
  await io.authenticate(req.user);
  return { reply: { user: req.user } };
}

export async function remove(req: Req<'delete'>, io: SessionIo): Promise<HandlerResult> {
  await io.userStore().delete(req.name);
  return { reply: { name: req.name }, audit: { file: req.name } };
}

export async function list(req: Req<'list'>, io: SessionIo): Promise<HandlerResult> {
  const entries = await io.userStore().list(req.long);
  for (const entry of entries) {
    io.send(req.long ? { status: 'entry', name: entry.name, size: entry.size, mtime: entry.mtime } : { status: 'entry', name: entry.name });
  }
  return { reply: { count: entries.length }, audit: { bytes: 0 } };
}

export async function noop(): Promise<HandlerResult> {
  return { reply: {} };
}

export async function quit(_req: Req<'quit'>, io: SessionIo): Promise<HandlerResult> {
  io.closeAfterReply();
  return { reply: {} };
}
