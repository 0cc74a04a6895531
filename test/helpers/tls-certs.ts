/**
 * Self-signed certificates for the TLS tests, made with the openssl command-line tool in a temporary
 * directory, and a probe that reports which certificate a server presents to a new connection.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';

export interface CertFiles {
  cert: string;
  key: string;
  /** SHA-256 fingerprint as node:crypto and TLSSocket.getPeerCertificate() print it (AA:BB:...). */
  fingerprint256: string;
  /** The certificate, PEM (for `ca`). */
  pem: Buffer;
}

function openssl(args: string[], timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { timeout: timeoutMs }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args.join(' ')} failed: ${err.message}; ${stderr}`));
      else resolve();
    });
  });
}

export async function fingerprintOf(certPath: string): Promise<string> {
  return new X509Certificate(await readFile(certPath)).fingerprint256;
}

/**
 * A self-signed RSA certificate and its key, `<base>.cert.pem` and `<base>.key.pem` in `dir`. By default
 * for CN=localhost with subjectAltName DNS:localhost and IP:127.0.0.1.
 */
export async function makeCert(dir: string, base: string, cn = 'localhost', san = 'DNS:localhost,IP:127.0.0.1', days = 2): Promise<CertFiles> {
  const cert = path.join(dir, `${base}.cert.pem`);
  const key = path.join(dir, `${base}.key.pem`);
  await openssl([
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', String(days),
    '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`,
  ]);
  const pem = await readFile(cert);
  return { cert, key, pem, fingerprint256: new X509Certificate(pem).fingerprint256 };
}

/**
 * Opens a TLS connection to 127.0.0.1:port WITHOUT verifying anything, and returns the SHA-256 fingerprint
 * of the certificate the server presented. The connection is closed at once.
 */
export function peerFingerprint(port: number, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'localhost' });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS handshake with 127.0.0.1:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fp);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

/** Fingerprints of `count` new connections, opened one after the other (spread over the workers). */
export async function peerFingerprints(port: number, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(await peerFingerprint(port));
  return out;
}

/**
 * A handshake limited to TLS versions [min, max] (no verification; low security level so that the client
 * can offer old versions at all). Resolves with the negotiated protocol, or `error:<code>`.
 */
export function handshakeWith(port: number, min: tls.SecureVersion, max: tls.SecureVersion, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: min, maxVersion: max, ciphers: 'DEFAULT@SECLEVEL=0' });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('error:timeout');
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const protocol = socket.getProtocol() ?? 'unknown';
      socket.destroy();
      resolve(protocol);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(`error:${err.code ?? err.message}`);
    });
  });
}
