/**
 * Child process for the raw-copy limits: accepts one TCP connection on 127.0.0.1 and writes what it
 * receives into a file through an fs write stream with a large highWaterMark, no hashing, no framing.
 * With --fsync the file is fsynced before "done" is reported. Reports over IPC:
 *   {port}                    once listening
 *   {done, bytes, error?}     once the data is written (and synced)
 */
import { closeSync, createWriteStream, fsync, openSync } from 'node:fs';
import net from 'node:net';

const [out, mode] = process.argv.slice(2);
if (out === undefined) throw new Error('usage: limit-receiver.js OUT [--fsync]');
const wantSync = mode === '--fsync';
const send = (m: object): void => {
  process.send?.(m);
};

const server = net.createServer((socket) => {
  server.close();
  const fd = openSync(out, 'w', 0o600);
  const file = createWriteStream('', { fd, autoClose: false, highWaterMark: 8 * 1024 * 1024 });
  let bytes = 0;
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  const finish = (error?: string): void => {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    send({ done: true, bytes, error });
    setTimeout(() => process.exit(error === undefined ? 0 : 1), 50);
  };
  socket.on('error', (err) => finish(err.message));
  file.on('error', (err) => finish(err.message));
  file.on('finish', () => {
    if (!wantSync) return finish();
    fsync(fd, (err) => finish(err?.message));
  });
  socket.pipe(file);
});
server.listen({ host: '127.0.0.1', port: 0 }, () => {
  const address = server.address();
  send({ port: typeof address === 'object' && address !== null ? address.port : 0 });
});
// The parent going away (Ctrl+C) must not leave us waiting forever.
process.on('disconnect', () => process.exit(1));
