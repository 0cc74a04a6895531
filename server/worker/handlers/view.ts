import { VIEW_BYTES, type Request } from '../../../protocol/index.js';
import { fsError } from '../../storage/errors.js';
import type { HandlerResult, SessionIo } from '../session-io.js';

type ViewRequest = Extract<Request, { op: 'view' }>;

/** The first VIEW_BYTES of a file, read with one positioned read: the file is never loaded whole. */
export async function view(req: ViewRequest, io: SessionIo): Promise<HandlerResult> {
  const file = await io.userStore().openRead(req.name);
  let closing: Promise<void> | null = null;
  try {
    const length = Math.min(file.size, VIEW_BYTES);
    const buf = Buffer.allocUnsafe(length);
    let filled = 0;
    try {
      while (filled < length) {
        const { bytesRead } = await file.handle.read(buf, filled, length - filled, filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
    } catch (err) {
      throw fsError(err, 'read');
    }
    // The close runs in the background (it never rejects), so the replies and the data frame leave in one
    // tick, which the session sends as one socket write.
    closing = file.close();
    io.send({ status: 'data', size: file.size, mtime: file.mtime, offset: 0, length: filled });
    if (filled > 0) await io.sendData(buf.subarray(0, filled));
    io.progress(filled, req.name);
    return { reply: { name: req.name, size: file.size, length: filled }, audit: { file: req.name, bytes: filled } };
  } finally {
    if (closing === null) await file.close();
  }
}
