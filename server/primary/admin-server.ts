import { randomBytes } from 'node:crypto';
import { chmod, lstat, realpath, rename, stat, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { AdminLineDecoder, encodeAdminLine, parseAdminRequest, type AdminLine, type AdminRequest } from '../../protocol/index.js';
import { MAX_SOCKET_PATH_BYTES } from '../config.js';
import type { Logger } from '../log.js';
import { makeDirectories } from '../storage/private-dir.js';

/** Admin commands that only look: they change nothing, so they are logged at debug. */
const QUERIES: ReadonlySet<AdminRequest['cmd']> = new Set<AdminRequest['cmd']>(['status', 'sessions', 'config', 'bans', 'usage', 'partials']);

/** How long the startup probe waits for an existing server to answer on the socket. */
const PROBE_TIMEOUT_MS = 1_000;
/**
 * A connection that has not sent a whole request line within this is closed, as is one that ends its side
 * before sending one: with allowHalfOpen nothing else would close them, and each kept a descriptor of the
 * primary for good (a liveness check, a refused second server's probe).
 */
const REQUEST_TIMEOUT_MS = 10_000;
/** Admin connections at once; more are closed at once (fts-admin needs one per command). */
const MAX_ADMIN_CONNECTIONS = 64;

export class AdminSocketInUse extends Error {
  override name = 'AdminSocketInUse';
}

/** What the admin server needs from the primary. `reply` may be called for events and then once for the final line. */
export type AdminHandler = (req: AdminRequest, reply: (line: AdminLine) => void, connection: net.Socket) => Promise<void>;

/**
 * Resolves true if something accepts connections on the socket path (another running server), false if
 * the path is absent or stale (nothing listening: ECONNREFUSED), so it can be replaced.
 */
function probe(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socketPath);
    const timer = setTimeout(() => {
      conn.destroy();
      resolve(true); // it accepted but is slow to talk: treat as alive, never steal a live socket
    }, PROBE_TIMEOUT_MS);
    conn.once('connect', () => {
      clearTimeout(timer);
      conn.destroy();
      resolve(true);
    });
    conn.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** What is at the socket's path, when it is something a server must not remove: anything but a socket. */
async function notASocket(socketPath: string): Promise<string | null> {
  let st: Stats;
  try {
    st = await lstat(socketPath);
  } catch {
    return null; // nothing there (or nothing we could see: listen() will say why)
  }
  if (st.isSocket()) return null;
  return st.isFile() ? 'a regular file' : st.isDirectory() ? 'a directory' : st.isSymbolicLink() ? 'a symbolic link' : 'a special file';
}

/**
 * A name beside the socket's to listen on before renaming into place, or null when none fits in sun_path.
 * Node (libuv) unlinks the path a UNIX socket was bound to when the server closes, whatever is there by
 * then: bound under a name of its own, a server that stops can never remove a newer server's socket (or
 * anything else) at the real path.
 */
function bindingPath(socketPath: string): string | null {
  const name = path.join(path.dirname(socketPath), `.fts-admin-${randomBytes(6).toString('hex')}`);
  return Buffer.byteLength(name) <= MAX_SOCKET_PATH_BYTES ? name : null;
}

/**
 * The directory of the admin socket must be ours (or root's) and writable by nobody else: whoever can write
 * there can put their own socket in its place (fts-admin would talk to them) or hold the path so that the
 * server cannot start. Creating the directory changes nothing about one that already exists, so it is
 * checked.
 */
async function checkSocketDir(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (!st.isDirectory()) throw new Error(`admin socket directory ${dir} is not a directory`);
  checkOwnedAndClosed(dir, st, 'admin socket directory');
  // Every directory above it too (OpenSSH's secure_path): whoever can rename one of them can move the
  // socket's directory aside and put one of their own in its place. Both the path as written (a link on it
  // can be replaced by whoever may write the directory holding the link) and the one it resolves to.
  for (const start of new Set([path.resolve(dir), await realpath(dir)])) {
    for (let above = path.dirname(start); ; above = path.dirname(above)) {
      checkOwnedAndClosed(above, await lstat(above), 'directory above the admin socket');
      if (above === path.dirname(above)) break;
    }
  }
}

function checkOwnedAndClosed(dir: string, st: Stats, what: string): void {
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid && st.uid !== 0) throw new Error(`${what} ${dir} belongs to uid ${st.uid}, not to this user (uid ${uid}) or root; use a directory of your own (--admin-socket)`);
  // A sticky directory (/tmp) lets nobody remove or rename another user's file, so what is ours stays ours.
  // A link's own mode means nothing (/var/run -> /run is 0777): only its owner, and its directory, matter.
  if (!st.isSymbolicLink() && (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw new Error(`${what} ${dir} is writable by others (mode ${(st.mode & 0o777).toString(8)}); use a directory only you can write to (--admin-socket)`);
  }
}

/**
 * The UNIX-domain admin socket, served by the primary only (a worker listening on the path would share it
 * round-robin). Mode 0600: whoever can connect can stop the server.
 */
export class AdminServer {
  private server: net.Server | null = null;
  /** Identity of the socket file we created, so close() never unlinks a path another server took over. */
  private inode: { dev: number; ino: number } | null = null;

  constructor(
    private readonly socketPath: string,
    private readonly log: Logger,
    private readonly handle: AdminHandler,
  ) {}

  async start(): Promise<void> {
    const dir = path.dirname(this.socketPath);
    await makeDirectories(dir);
    await checkSocketDir(dir);
    // Only a socket is ever replaced: a file given as --admin-socket by mistake is not ours to remove.
    const other = await notASocket(this.socketPath);
    if (other !== null) throw new Error(`admin socket ${this.socketPath} is ${other}, not a socket; not replacing it (remove it, or choose another --admin-socket)`);
    if (await probe(this.socketPath)) {
      throw new AdminSocketInUse(`another fts-server is already running (admin socket ${this.socketPath} answers)`);
    }
    // allowHalfOpen: a client may send its request and shut down its side while it waits for the answer.
    const server = net.createServer({ allowHalfOpen: true }, (conn) => this.serve(conn));
    server.maxConnections = MAX_ADMIN_CONNECTIONS;
    // Bound beside the path, then renamed over it: a stale socket from a crash is replaced in one step. Only
    // when no such name fits in sun_path is the stale socket removed first and the path bound itself.
    const binding = bindingPath(this.socketPath);
    if (binding === null) await unlink(this.socketPath).catch(() => undefined);
    // The socket is created 0600 (not 0777 & ~umask, then chmod): nobody else can connect in between.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(binding ?? this.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    try {
      await chmod(binding ?? this.socketPath, 0o600);
      if (binding !== null) await rename(binding, this.socketPath);
    } catch (err) {
      server.close();
      throw err;
    }
    const st = await stat(this.socketPath);
    this.inode = { dev: st.dev, ino: st.ino };
    server.on('error', (err) => this.log.error({ err }, 'admin socket error'));
    this.server = server;
    this.log.info({ socket: this.socketPath }, 'admin socket ready');
  }

  /** Stops listening and removes the socket file, if it is still ours. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) server.close();
    const mine = this.inode;
    this.inode = null;
    if (mine === null) return;
    const st = await stat(this.socketPath).catch(() => null);
    if (st && st.dev === mine.dev && st.ino === mine.ino) await unlink(this.socketPath).catch(() => undefined);
  }

  private serve(conn: net.Socket): void {
    conn.setEncoding('utf8');
    conn.on('error', () => undefined);
    const decoder = new AdminLineDecoder();
    let handled = false;
    const reply = (line: AdminLine): void => {
      if (!conn.destroyed) conn.write(encodeAdminLine(line));
      if ('ok' in line) conn.end();
    };
    // Only until the request is in: a drain's connection stays open for as long as the drain lasts.
    conn.setTimeout(REQUEST_TIMEOUT_MS, () => {
      if (!handled) conn.destroy();
    });
    conn.on('end', () => {
      if (!handled) conn.destroy();
    });
    conn.on('data', (chunk: string) => {
      if (handled) return;
      let values: unknown[];
      try {
        values = decoder.push(chunk);
      } catch (err) {
        handled = true;
        conn.setTimeout(0);
        reply({ ok: false, error: `bad request: ${(err as Error).message}` });
        return;
      }
      if (values.length === 0) return;
      handled = true;
      conn.setTimeout(0);
      let req: AdminRequest;
      try {
        req = parseAdminRequest(values[0]);
      } catch (err) {
        reply({ ok: false, error: (err as Error).message });
        return;
      }
      // With what it acts on (session, address, user, key, timeout), validated by parseAdminRequest.
      // Queries at debug: a monitoring loop (status every few seconds, ready's polls) must not flood the log
      // that records the commands that change something.
      (QUERIES.has(req.cmd) ? this.log.debug : this.log.info).call(this.log, { event: 'admin', ...req }, `admin command: ${req.cmd}`);
      this.handle(req, reply, conn).catch((err: unknown) => {
        this.log.error({ err }, 'admin command failed');
        reply({ ok: false, error: err instanceof Error ? err.message : String(err) });
      });
    });
  }
}
