/**
 * What an operator must hear about the TLS certificate and key in force: the certificate's subject and
 * validity, said at start and at each reload, and the problems that break or expose a TLS port while the
 * server itself runs fine (an expired certificate fails every client's handshake; a key others can read is
 * a key others can copy). Warnings, not refusals: a renewal that failed must not also stop the node.
 */
import { X509Certificate } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { errnoReason } from '../../protocol/index.js';
import { readConfigFile } from '../config-file.js';
import type { Logger } from '../log.js';
import type { TlsFiles } from '../worker/tls.js';

/** A certificate that ends within this is said to expire soon (as the alert FtsTlsCertificateExpiresSoon). */
export const EXPIRES_SOON_MS = 14 * 86_400_000;

export interface CertificateFacts {
  subject: string;
  /** Milliseconds since the UNIX epoch. */
  notBefore: number;
  notAfter: number;
}

/** The facts of the first certificate of a PEM chain (the server's own; the rest are its issuers). */
export function certificateFacts(pem: Buffer): CertificateFacts {
  const cert = new X509Certificate(pem);
  return { subject: cert.subject.replace(/\n/g, ', '), notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) };
}

/** What is wrong with the certificate's dates at `now`, in words (none when it is valid for a while yet). */
export function validityProblems(facts: CertificateFacts, now: number): string[] {
  const at = (ms: number): string => new Date(ms).toISOString();
  if (now > facts.notAfter) return [`the TLS certificate expired at ${at(facts.notAfter)}: every client's handshake fails; renew it, then fts-admin reload`];
  if (now < facts.notBefore) return [`the TLS certificate is not valid before ${at(facts.notBefore)}: clients refuse it until then (is this host's clock right?)`];
  if (facts.notAfter - now < EXPIRES_SOON_MS) return [`the TLS certificate expires at ${at(facts.notAfter)}, in less than ${EXPIRES_SOON_MS / 86_400_000} days: renew it, then fts-admin reload`];
  return [];
}

/** A key file that group or others may read (the users file and the cluster secret are refused for it). */
export async function keyModeProblem(keyFile: string): Promise<string | null> {
  let mode: number;
  try {
    mode = (await stat(keyFile)).mode;
  } catch (err) {
    return `cannot stat the TLS key ${keyFile}: ${errnoReason(err)}`;
  }
  if ((mode & 0o077) === 0) return null;
  return `the TLS key ${keyFile} is readable by group or others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`;
}

/**
 * Reads the pair the server has just loaded (loadSecureContext checked it), logs what is in force (`on`:
 * at `start` or `reload`) and warns of what is wrong with it; returns the certificate's facts and the
 * warnings. Never throws: a file replaced in between leaves a warning, and the facts null.
 */
export async function inspectTls(files: TlsFiles, log: Logger, on: 'start' | 'reload', now = Date.now()): Promise<{ facts: CertificateFacts | null; warnings: string[] }> {
  let facts: CertificateFacts | null = null;
  const warnings: string[] = [];
  try {
    facts = certificateFacts((await readConfigFile(files.cert)).bytes);
    warnings.push(...validityProblems(facts, now));
  } catch (err) {
    warnings.push(`cannot read the TLS certificate's dates from ${files.cert}: ${(err as Error).message}`);
  }
  const keyProblem = await keyModeProblem(files.key);
  if (keyProblem !== null) warnings.push(keyProblem);
  const fields = { on, ...(facts === null ? {} : { subject: facts.subject, notAfter: new Date(facts.notAfter).toISOString() }) };
  if (facts !== null) log.info(fields, 'TLS certificate in force');
  for (const w of warnings) log.warn(fields, w);
  return { facts, warnings };
}
