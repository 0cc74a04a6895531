/**
 * What an operator must hear about the TLS certificate and key in force: the certificate's subject and
 * validity, said at start and at each reload, and the problems that break or expose a TLS port while the
 * server itself runs fine (an expired certificate fails every client's handshake; a key others can read is
 * a key others can copy). Warnings, not refusals: a renewal that failed must not also stop the node.
 */
import { X509Certificate } from 'node:crypto';
import { exposedMode } from '../config-file.js';
import type { Logger } from '../log.js';
import type { TlsPair } from '../worker/tls.js';

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

/**
 * Says what is in force (`on`: at `start` or `reload`) of the pair the server has just loaded (loadTlsPair
 * checked it), and warns of what is wrong with it; returns the certificate's facts (null if its dates
 * cannot be read) and the warnings. Never throws: a reload calls it after the workers were told.
 */
export function inspectTls(pair: Pick<TlsPair, 'cert' | 'keyMode'>, keyFile: string, log: Logger, on: 'start' | 'reload', now = Date.now()): { facts: CertificateFacts | null; warnings: string[] } {
  let facts: CertificateFacts | null = null;
  const warnings: string[] = [];
  try {
    facts = certificateFacts(pair.cert);
    warnings.push(...validityProblems(facts, now));
  } catch (err) {
    warnings.push(`cannot read the TLS certificate's dates: ${(err as Error).message}`);
  }
  const exposed = exposedMode(pair.keyMode);
  if (exposed !== null) warnings.push(`the TLS key ${keyFile} is ${exposed}; chmod 600 it`);
  const fields = { on, ...(facts === null ? {} : { subject: facts.subject, notAfter: new Date(facts.notAfter).toISOString() }) };
  if (facts !== null) log.info(fields, 'TLS certificate in force');
  for (const w of warnings) log.warn(fields, w);
  return { facts, warnings };
}
