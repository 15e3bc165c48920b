import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { MultipartWriter, partHeadText } from '../../../src/dicomweb/multipart-writer';
import { fillRun, groupRuns, RUN_PARTS, RUN_READS_IN_FLIGHT, SLAB_BYTES, type PackablePart } from '../../../src/dicomweb/packed-parts';
import type { BlobStore } from '../../../src/storage/blob-store';
import { createFsBlobStore } from '../../../src/storage/fs-blob-store';
import { ReadBufferPool } from '../../../src/storage/read-buffer-pool';
import { putBytes } from '../storage/blob-store-contract';

const BOUNDARY = 'imaging-lake-test';

function headOf(size: number): string {
  return partHeadText(BOUNDARY, { 'Content-Type': 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1', 'Content-Length': String(size) });
}

/** What MultipartWriter.writePart writes for these parts, one after another. */
async function writtenByWriter(parts: Array<{ size: number; prefix: Buffer | null; bytes: Buffer }>): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const writer = new MultipartWriter(out, BOUNDARY);
  for (const p of parts) {
    const body = p.prefix ? Buffer.concat([p.prefix, p.bytes]) : p.bytes;
    await writer.writePart({ 'Content-Type': 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1', 'Content-Length': String(body.length) }, body);
  }
  return Buffer.concat(chunks);
}

describe('packed small parts (runs of parts in one slab)', () => {
  let root: string;
  let store: BlobStore;
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'il-R-packed-'));
    store = createFsBlobStore({ root });
  });
  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  test('runs never exceed a slab or RUN_PARTS parts, and keep the parts in order', () => {
    const parts: PackablePart[] = Array.from({ length: 150 }, (_, n) => ({ head: headOf(n), prefix: null, blobKey: `k${n}`, size: n % 3 === 0 ? 400_000 : 1000 }));
    const runs = groupRuns(parts);
    expect(runs.flatMap((r) => r.parts)).toEqual(parts);
    for (const r of runs) {
      expect(r.bytes).toBeLessThanOrEqual(SLAB_BYTES);
      expect(r.parts.length).toBeLessThanOrEqual(RUN_PARTS);
    }
    // A part of the largest packed size (1 MiB) with its head fits a slab alone.
    expect(groupRuns([{ head: headOf(1), prefix: Buffer.alloc(300), blobKey: 'x', size: 1024 * 1024 }])).toHaveLength(1);
  });

  test('a run of 64 parts keeps at most RUN_READS_IN_FLIGHT reads in flight, and fills every part', async () => {
    const blobs = Array.from({ length: RUN_PARTS }, () => randomBytes(2000));
    const keys = await Promise.all(blobs.map(async (b) => (await putBytes(store, b)).key));
    let inFlight = 0;
    let most = 0;
    // The real store, its reads counted while they run.
    const counting: BlobStore = Object.create(store, {
      readBuffer: {
        value: async (...args: Parameters<BlobStore['readBuffer']>) => {
          most = Math.max(most, ++inFlight);
          try {
            return await store.readBuffer(...args);
          } finally {
            inFlight--;
          }
        },
      },
    });
    const parts: PackablePart[] = blobs.map((b, n) => ({ head: headOf(b.length), prefix: null, blobKey: keys[n]!, size: b.length }));
    const [run] = groupRuns(parts);
    const filled = await fillRun(counting, run!, new ReadBufferPool(SLAB_BYTES, 1));
    expect(filled.failed).toBeUndefined();
    expect(most).toBe(RUN_READS_IN_FLIGHT);
    expect(filled.slab.subarray(0, filled.complete).equals(await writtenByWriter(blobs.map((bytes) => ({ size: bytes.length, prefix: null, bytes }))))).toBe(true);
  });

  test('a filled run is byte for byte what the writer writes part by part, generated File Meta Information included', async () => {
    const blobs = [randomBytes(34_000), randomBytes(1), randomBytes(5000)];
    const keys = await Promise.all(blobs.map(async (b) => (await putBytes(store, b)).key));
    const prefixes = [null, Buffer.from('PREFIX-BYTES'), null];
    const parts: PackablePart[] = blobs.map((b, n) => ({ head: headOf(b.length + (prefixes[n]?.length ?? 0)), prefix: prefixes[n], blobKey: keys[n], size: b.length }));
    const [run] = groupRuns(parts);
    const pool = new ReadBufferPool(SLAB_BYTES, 1);
    const filled = await fillRun(store, run, pool);
    expect(filled.failed).toBeUndefined();
    expect(filled.complete).toBe(run.bytes);
    const expected = await writtenByWriter(blobs.map((bytes, n) => ({ size: bytes.length, prefix: prefixes[n], bytes })));
    expect(filled.slab.subarray(0, filled.complete).equals(expected)).toBe(true);
  });

  test('a missing blob in a run is reported with the bytes of the parts before it, once every read has settled', async () => {
    const blobs = [randomBytes(2000), randomBytes(3000), randomBytes(4000)];
    const keys = await Promise.all(blobs.map(async (b) => (await putBytes(store, b)).key));
    await store.delete(keys[1]);
    const parts: PackablePart[] = blobs.map((b, n) => ({ head: headOf(b.length), prefix: null, blobKey: keys[n], size: b.length }));
    const filled = await fillRun(store, groupRuns(parts)[0], new ReadBufferPool(SLAB_BYTES, 1));
    expect(filled.failed?.index).toBe(1);
    expect((filled.failed?.error as Error).name).toBe('BlobNotFoundError');
    const expected = await writtenByWriter([{ size: 2000, prefix: null, bytes: blobs[0] }]);
    expect(filled.complete).toBe(expected.length);
    expect(filled.slab.subarray(0, filled.complete).equals(expected)).toBe(true);
    // The third read had finished too: its bytes are in place.
    const third = filled.slab.indexOf(blobs[2].subarray(0, 64));
    expect(third).toBeGreaterThan(0);
  });

  test('a blob shorter than the index says is reported with the bytes it has', async () => {
    const bytes = randomBytes(3000);
    const { key } = await putBytes(store, bytes);
    // Damage on disk: the file lost its tail.
    const file = path.join(root, 'blobs', key.slice(0, 2), key.slice(2, 4), key);
    await chmod(file, 0o644);
    await writeFile(file, bytes.subarray(0, 1000));
    const filled = await fillRun(store, groupRuns([{ head: headOf(3000), prefix: null, blobKey: key, size: 3000 }])[0], new ReadBufferPool(SLAB_BYTES, 1));
    expect(filled.failed).toMatchObject({ index: 0, got: 1000, headStart: 0 });
    expect(filled.slab.subarray(filled.failed!.bodyStart, filled.failed!.bodyStart + 1000).equals(bytes.subarray(0, 1000))).toBe(true);
  });
});
