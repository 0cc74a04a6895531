/**
 * The public surface of the fts client library (the package's main export).
 *
 *   const client = await FtsClient.connect({ host, port });
 *   await client.auth(user, password);
 *   await client.upload('report.pdf');
 *   await client.quit();
 *
 * FtsClient is one connection; ResilientClient replaces a dropped connection and continues the transfer
 * (logging in again with the session token):
 *
 *   const client = await ResilientClient.connect({ host, port, user, password, reconnect: { retries: 5 } });
 *
 * Every error is an FtsError with a stable `code`; isServerError() tells the ones the server sent from
 * those raised locally (a missing local file, a name refused before sending, a lost connection).
 */
export { FtsClient, StreamPosition } from './client.js';
export type {
  ConnectOptions,
  DiscardResult,
  DownloadBufferResult,
  DownloadResult,
  FileClient,
  FileHash,
  HashOptions,
  StreamUploadOptions,
  ListEntry,
  ListOptions,
  PartialUpload,
  ProgressCallback,
  RenameOptions,
  SessionInfo,
  StreamDownloadOptions,
  StreamDownloadResult,
  TransferOptions,
  UploadResult,
  Usage,
} from './client.js';
export { ResilientClient, type ReconnectOptions, type ResilientConnectOptions, type RetryInfo } from './resilient.js';
export { isServerError } from './errors.js';
export { keptUpload, type KeptUpload } from './stream-upload.js';
/** setDirectIo(false): large local files go through the page cache (the CLI's FTS_DIRECT_IO=off). */
export { setDirectIo } from '../protocol/direct-io.js';
export { FtsError, ERROR_CODES, type ErrorCode } from '../protocol/index.js';
