/**
 * The scanner must stream: a large instance passes with memory bounded by its header
 * (STYLE.md 11, "a 2 GB instance never sits in memory"). Generated ~300 MB instances are
 * pushed through in fresh 64 KiB chunks; if any chunk were kept, arrayBuffers would grow by
 * hundreds of MB.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import { EXPLICIT_LE, UNDEFINED, element, identity, imagePixel, part10 } from './dicom-fixtures';

const CHUNK = 64 * 1024;
const MiB = 1024 * 1024;

// A real collector call, so that what is measured is what the scanner retains, not garbage
// that V8 has not collected yet (300 MB of fresh chunks go by in well under a second).
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function memory(): number {
  collectGarbage();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * Streams `header` then `body(i)` chunks, sampling retained memory every 1,024 chunks (64 MiB:
 * each sample is a full collection of the test process's whole heap, about a second in a long
 * jest run). Growth is the largest rise over the lowest sample so far, so memory released by an
 * earlier test during this one cannot hide a leak, and a scanner keeping even a quarter of what
 * passes through it grows past the bound within a few samples.
 */
async function streamThrough(header: Buffer, chunks: number, body: (i: number) => Buffer) {
  let lowest = memory();
  let growth = 0;
  const sample = () => {
    const now = memory();
    lowest = Math.min(lowest, now);
    growth = Math.max(growth, now - lowest);
  };
  async function* source() {
    yield header;
    for (let i = 0; i < chunks; i++) {
      if (i % 1024 === 0) sample();
      yield body(i);
    }
  }
  const scanner = createInstanceScanner({ maxHeaderBytes: 64 * MiB });
  await pipeline(Readable.from(source(), { objectMode: false }), scanner.writable);
  sample();
  return { scanned: await scanner.result, peak: growth };
}

describe('streaming a large instance', () => {
  it('passes 300 MiB of native pixel data with memory growth under 50 MB', async () => {
    const rows = 1024;
    const columns = 1024;
    const frames = 150; // 2 MiB per frame
    const pixelBytes = rows * columns * 2 * frames;
    const pixelHeader = element(0x7fe00010, 'OW', Buffer.alloc(0), EXPLICIT_LE, pixelBytes);
    const header = part10('1.2.840.10008.1.2.1', Buffer.concat([identity(), imagePixel(rows, columns, 16, frames), pixelHeader]));
    const { scanned, peak } = await streamThrough(header, pixelBytes / CHUNK, () => Buffer.allocUnsafe(CHUNK));

    expect(scanned.size).toBe(header.length + pixelBytes);
    expect(scanned.frames).toHaveLength(150);
    expect(scanned.frames[149]).toEqual([{ offset: header.length + 149 * 2 * MiB, length: 2 * MiB }]);
    expect(peak).toBeLessThan(50 * 1000 * 1000);
  });

  it('passes 200 MiB of encapsulated fragments, reading every item header, with memory growth under 50 MB', async () => {
    // Each 64 KiB chunk is one fragment: item header (8 bytes) + 65528 bytes of value.
    const chunks = 3200;
    const header = part10('1.2.840.10008.1.2.5', Buffer.concat([identity(), imagePixel(8, 8, 8, chunks),
      element(0x7fe00010, 'OB', Buffer.alloc(0), EXPLICIT_LE, UNDEFINED), Buffer.from('feff00e000000000', 'hex')]));
    const fragment = (i: number) => {
      const chunk = Buffer.allocUnsafe(CHUNK);
      chunk.writeUInt32LE(0xe000fffe, 0);
      chunk.writeUInt32LE(CHUNK - 8, 4);
      chunk.writeUInt32LE(i, 8);
      return chunk;
    };
    const delimiter = Buffer.from('feffdde000000000', 'hex');
    const { scanned, peak } = await streamThrough(header, chunks + 1, (i) => (i < chunks ? fragment(i) : delimiter));

    expect(scanned.frames).toHaveLength(chunks);
    expect(scanned.frames[3199]).toEqual([{ offset: header.length + 3199 * CHUNK + 8, length: CHUNK - 8 }]);
    expect(peak).toBeLessThan(50 * 1000 * 1000);
  });
});
