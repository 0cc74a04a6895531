import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest directory above this compiled file that holds package.json. */
export const REPO_ROOT = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json not found above the test files');
    dir = parent;
  }
  return dir;
})();

export const SERVER_MAIN = path.join(REPO_ROOT, 'dist', 'server', 'main.js');
export const CLIENT_CLI = path.join(REPO_ROOT, 'dist', 'client', 'cli.js');
export const ADMIN_CLI = path.join(REPO_ROOT, 'dist', 'admin', 'cli.js');
/** Shared read-only test data (the traversal payload corpus), laid beside the repository. */
export const SHARED_DATA = path.resolve(REPO_ROOT, '..', 'shared', 'data');
