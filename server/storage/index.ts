/** The storage layer's public surface: workers import from here, not from the individual modules. */
export { fsError } from './errors.js';
export { type ListEntry } from './listing.js';
export { DEFAULT_LOCK_WAIT_SECONDS, LOCK_OPTIONS, lockCompromisedCount, MAX_LOCK_WAIT_SECONDS, onLockCompromised, setLockWaitSeconds, withLock, type LockCompromise } from './locks.js';
export { lockTarget, resolveName, stagingDir, userDirPath } from './paths.js';
export { StagedUpload } from './staging.js';
export { sweepStaging } from './staging-sweep.js';
export { Store, UserStore, type ReadableFile } from './store.js';
