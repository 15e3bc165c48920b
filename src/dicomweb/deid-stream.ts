/**
 * Streaming helpers for de-identified WADO-RS answers (PS3.18 10.4.1.1.1).
 */
import { Readable } from 'node:stream';

/**
 * A de-identified instance as fewer, larger chunks: the rewritten header, the Pixel Data element
 * header and the first pixel bytes leave in one write instead of three (a small instance in one).
 */
export function coalesceChunks(source: Readable, minBytes = 64 * 1024): Readable {
  async function* merged(): AsyncGenerator<Buffer> {
    let pending: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (size === 0 && chunk.length >= minBytes) {
          yield chunk;
          continue;
        }
        pending.push(chunk);
        size += chunk.length;
        if (size >= minBytes) {
          yield pending.length === 1 ? pending[0] : Buffer.concat(pending, size);
          pending = [];
          size = 0;
        }
      }
      if (size > 0) yield pending.length === 1 ? pending[0] : Buffer.concat(pending, size);
    } finally {
      source.destroy();
    }
  }
  const out = Readable.from(merged(), { objectMode: false });
  out.once('close', () => source.destroy());
  return out;
}
