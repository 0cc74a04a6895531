import type net from 'node:net';
import tls from 'node:tls';
import { encodeHeader, FtsError } from '../../protocol/index.js';
import { ConfigFileUnusable, readConfigFile } from '../config-file.js';

/** A TLS client speaks first (ClientHello); a plaintext fts client waits for our greeting. */
const SNIFF_MS = 2_000;
const HANDSHAKE_MS = 10_000;
/** First byte of a TLS record carrying a handshake message. */
const TLS_HANDSHAKE = 0x16;

export interface TlsFiles {
  cert: string;
  key: string;
}

/** A certificate and key that make a context, with what the primary tells the operator about them. */
export interface TlsPair {
  context: tls.SecureContext;
  /** The certificate file's PEM (chain). */
  cert: Buffer;
  /** The key file's mode (tls-certificate.ts warns when others may read it). */
  keyMode: number;
}

/**
 * Loads and checks the certificate and key; throws an Error naming the problem. Asynchronous, and only
 * from regular files: a FIFO read synchronously would stop the whole process, admission answers included.
 */
export async function loadTlsPair(files: TlsFiles): Promise<TlsPair> {
  const read = async (what: string, file: string): Promise<{ bytes: Buffer; mode: number }> => {
    try {
      return await readConfigFile(file);
    } catch (err) {
      if (!(err instanceof ConfigFileUnusable)) throw err;
      throw new Error(`cannot read TLS ${what} ${file}: ${err.message}`);
    }
  };
  const cert = (await read('certificate', files.cert)).bytes;
  const key = await read('key', files.key);
  try {
    return { context: tls.createSecureContext({ cert, key: key.bytes, minVersion: 'TLSv1.2' }), cert, keyMode: key.mode };
  } catch (err) {
    throw new Error(`invalid TLS certificate or key: ${(err as Error).message}`);
  }
}

/**
 * Terminates TLS on an accepted TCP socket. Because the fts server normally speaks first, a plaintext
 * client on a TLS port would just wait; so we wait briefly for a ClientHello, and if none comes (or the
 * first byte is not a TLS handshake) we tell the client in plain fts framing that TLS is required.
 */
export class TlsTerminator {
  private constructor(
    private readonly files: TlsFiles,
    private context: tls.SecureContext,
  ) {}

  static async create(files: TlsFiles): Promise<TlsTerminator> {
    return new TlsTerminator(files, (await loadTlsPair(files)).context);
  }

  /** Re-reads the certificate and key (fts-admin reload); a bad pair keeps the old one and throws. */
  async reload(): Promise<void> {
    this.context = (await loadTlsPair(this.files)).context;
  }

  upgrade(socket: net.Socket): Promise<tls.TLSSocket | null> {
    return new Promise((resolve) => {
      // Settles exactly once. A peer that goes away at any point (even silently, without an error) settles
      // it with null, so the connection's place in the limits is given back at once.
      let settled = false;
      const settle = (value: tls.TLSSocket | null): void => {
        if (settled) return;
        settled = true;
        resolve(value);
      };
      socket.once('close', () => settle(null));
      const refuse = (): void => {
        const err = new FtsError('TLS_REQUIRED');
        socket.end(encodeHeader({ status: 'bye', code: err.code, message: err.message }));
        setTimeout(() => socket.destroy(), 1_000).unref();
        settle(null);
      };
      const timer = setTimeout(() => {
        socket.off('data', onData);
        refuse();
      }, SNIFF_MS);
      const onData = (chunk: Buffer): void => {
        clearTimeout(timer);
        socket.pause();
        if (chunk[0] !== TLS_HANDSHAKE) {
          refuse();
          return;
        }
        socket.unshift(chunk);
        const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.context });
        const handshake = setTimeout(() => {
          secure.destroy();
          settle(null);
        }, HANDSHAKE_MS);
        secure.once('secure', () => {
          clearTimeout(handshake);
          settle(secure);
        });
        secure.once('close', () => {
          clearTimeout(handshake);
          settle(null);
        });
        secure.once('error', () => {
          clearTimeout(handshake);
          secure.destroy();
          settle(null);
        });
      };
      socket.once('data', onData);
      socket.resume(); // paused by a PROXY header reader that pushed bytes back
      socket.once('error', () => {
        clearTimeout(timer);
        settle(null);
      });
    });
  }
}
