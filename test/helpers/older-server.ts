/** A relay standing for an older fts server (one without streamed uploads). */
import net from 'node:net';
import { encodeHeader, type Header } from '../../protocol/index.js';

/**
 * A relay that removes `upload-trailer` from the server's greeting, so that the client behaves as it does
 * against a server without streamed uploads; it records what the client sends.
 */
export async function olderServer(target: number): Promise<{ port: number; fromClient: () => Buffer; close: () => Promise<void> }> {
  const sent: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((down) => {
    const up = net.connect(target, '127.0.0.1');
    for (const s of [down, up]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    let greeting: Buffer | null = Buffer.alloc(0);
    up.on('data', (chunk: Buffer) => {
      if (greeting === null) return void down.write(chunk);
      greeting = Buffer.concat([greeting, chunk]);
      if (greeting.length < 5 || greeting.length < 5 + greeting.readUInt32BE(1)) return;
      const end = 5 + greeting.readUInt32BE(1);
      const hello = JSON.parse(greeting.subarray(5, end).toString('utf8')) as Header;
      hello['caps'] = (hello['caps'] as string[]).filter((c) => c !== 'upload-trailer');
      down.write(Buffer.concat([encodeHeader(hello), greeting.subarray(end)]));
      greeting = null;
    });
    down.on('data', (chunk: Buffer) => {
      sent.push(chunk);
      up.write(chunk);
    });
    up.on('close', () => down.destroy());
    down.on('close', () => up.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as net.AddressInfo).port,
    fromClient: () => Buffer.concat(sent),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}
