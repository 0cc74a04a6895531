import { createHash } from 'node:crypto';
import type { UploadTag } from '../../protocol/index.js';

/**
 * The key of an upload identity (user's name, size, and the SHA-256 or streamed version tag): the prefix of
 * its staging files' names. Fixed length and filesystem-safe, with no user-chosen bytes. The formula is
 * part of the protocol (PROTOCOL.md §6.10): a client may compute the key of an identity to discard it.
 */
export function stagingKey(name: string, size: number, sha256: string): string {
  return createHash('sha256').update(`${size}\0${sha256}\0${name}`, 'utf8').digest('hex');
}

/** The staging key of a streamed upload ('v' is never a hex digit, so it cannot collide with stagingKey). */
export function streamedStagingKey(name: string, size: number, version: string): string {
  return createHash('sha256').update(`${size}\0v${version}\0${name}`, 'utf8').digest('hex');
}

/** The staging key of an upload identity, whichever kind (also the quota's name for it). */
export function keyOf(name: string, size: number, tag: UploadTag): string {
  return 'sha256' in tag ? stagingKey(name, size, tag.sha256) : streamedStagingKey(name, size, tag.version);
}
