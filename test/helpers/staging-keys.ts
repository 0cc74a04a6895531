import { stat } from 'node:fs/promises';
import { versionTag } from '../../client/upload.js';
import { stagingKey, streamedStagingKey } from '../../server/storage/staging.js';

/**
 * The staging keys an upload of `localPath` as `name` can leave partial files under: the digest's (a
 * digest-first upload) and the local file's version tag's (a streamed one, §6.1). The version tag is taken
 * from the file as it is now, so call this before changing the file.
 */
export async function uploadStagingKeys(localPath: string, name: string, size: number, sha256: string): Promise<string[]> {
  const keys = [stagingKey(name, size, sha256)];
  const st = await stat(localPath, { bigint: true }).catch(() => null);
  if (st !== null) keys.push(streamedStagingKey(name, size, versionTag(st)));
  return keys;
}
