import type { Request } from '../../../protocol/index.js';
import type { HandlerOutcome, SessionIo } from '../session-io.js';
import { download } from './download.js';
import { hash } from './hash.js';
import { auth, discard, list, noop, offset, partials, quit, remove, rename, usage } from './simple.js';
import { upload } from './upload.js';
import { view } from './view.js';

type Handler<K extends Request['op']> = (req: Extract<Request, { op: K }>, io: SessionIo) => Promise<HandlerOutcome>;

/** One handler per operation; `satisfies` makes the compiler reject a missing one. */
export const HANDLERS = {
  auth,
  upload,
  offset,
  download,
  view,
  delete: remove,
  rename,
  list,
  usage,
  partials,
  discard,
  hash,
  noop,
  quit,
} satisfies { [K in Request['op']]: Handler<K> };

/** Operations allowed before authentication. */
export const UNAUTHENTICATED_OPS: ReadonlySet<Request['op']> = new Set(['auth', 'noop', 'quit']);

export function runHandler(req: Request, io: SessionIo): Promise<HandlerOutcome> {
  // The cast is safe: HANDLERS[req.op] is the handler for exactly this member of the union.
  return (HANDLERS[req.op] as Handler<typeof req.op>)(req as never, io);
}
