import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BlobNotFoundError, type BlobStore } from '../../../src/storage/blob-store';
import { createFsBlobStore } from '../../../src/storage/fs-blob-store';
import { HandleCache } from '../../../src/storage/handle-cache';
import { putBytes, readAll } from './blob-store-contract';

/** A stand-in descriptor that counts how often it was closed. */
function fakeHandle(): { fh: FileHandle; closes: () => number } {
  let closes = 0;
  const fh = { close: async () => void closes++ } as unknown as FileHandle;
  return { fh, closes: () => closes };
}

describe('HandleCache', () => {
  test('opens a key once for concurrent readers and reuses it afterwards', async () => {
    const cache = new HandleCache(4);
    const h = fakeHandle();
    let opens = 0;
    const open = async () => {
      opens++;
      return { fh: h.fh, size: 10 };
    };
    const [a, b] = await Promise.all([cache.acquire('k', open), cache.acquire('k', open)]);
    cache.release(a);
    cache.release(b);
    cache.release(await cache.acquire('k', open));
    expect(opens).toBe(1);
    expect(h.closes()).toBe(0);
  });

  test('keeps at most `capacity` descriptors, closing the least recently used', async () => {
    const cache = new HandleCache(2);
    const handles = [fakeHandle(), fakeHandle(), fakeHandle()];
    for (let i = 0; i < 3; i++) cache.release(await cache.acquire(`k${i}`, async () => ({ fh: handles[i].fh, size: 1 })));
    expect(cache.size).toBe(2);
    expect(handles.map((h) => h.closes())).toEqual([1, 0, 0]);
  });

  test('acquireCached hands out only what is already open and never opens', async () => {
    const cache = new HandleCache(4);
    expect(cache.acquireCached('k')).toBeNull();
    expect(cache.size).toBe(0);
    const h = fakeHandle();
    cache.release(await cache.acquire('k', async () => ({ fh: h.fh, size: 7 })));
    const hit = cache.acquireCached('k');
    expect(hit?.size).toBe(7);
    await cache.evict('k');
    expect(h.closes()).toBe(0); // still in use by `hit`
    cache.release(hit!);
    expect(h.closes()).toBe(1);
  });

  test('an entry evicted while in use is closed only when its last reader releases it', async () => {
    const cache = new HandleCache(4);
    const h = fakeHandle();
    const entry = await cache.acquire('k', async () => ({ fh: h.fh, size: 1 }));
    await cache.evict('k');
    expect(h.closes()).toBe(0);
    cache.release(entry);
    expect(h.closes()).toBe(1);
    expect(cache.size).toBe(0);
  });
});

describe('fs store small range reads (cached descriptors)', () => {
  let root: string;
  let store: BlobStore;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ranges-'));
    store = createFsBlobStore({ root });
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  test('many parallel frame reads across more blobs than the cache holds return the right bytes', async () => {
    const blobs = await Promise.all(Array.from({ length: 40 }, async () => {
      const bytes = randomBytes(20_000);
      return { bytes, key: (await putBytes(store, bytes)).key };
    }));
    const reads = [];
    for (let round = 0; round < 3; round++) {
      for (const b of blobs) {
        const start = (round * 4999) % 15_000;
        reads.push(readAll(await store.readRange(b.key, start, start + 4095)).then((got) => expect(got.equals(b.bytes.subarray(start, start + 4096))).toBe(true)));
      }
    }
    await Promise.all(reads);
  });

  test('a deleted blob is gone for whole and range buffer reads too, after reads through the cache', async () => {
    const bytes = randomBytes(5000);
    const { key } = await putBytes(store, bytes);
    expect((await store.readBuffer(key, 100, 199)).equals(bytes.subarray(100, 200))).toBe(true); // cached descriptor
    expect((await store.readBuffer(key, 0, 4999)).equals(bytes)).toBe(true); // a whole read finds it cached
    await store.delete(key);
    await expect(store.readBuffer(key, 0, 4999)).rejects.toBeInstanceOf(BlobNotFoundError);
    await expect(store.readBuffer(key, 100, 199)).rejects.toBeInstanceOf(BlobNotFoundError);
  });

  test('a deleted blob is gone for range reads too, even after it was read through the cache', async () => {
    const { key } = await putBytes(store, randomBytes(5000));
    await readAll(await store.readRange(key, 0, 99));
    await store.delete(key);
    await expect(store.readRange(key, 0, 99)).rejects.toBeInstanceOf(BlobNotFoundError);
  });

  test('a range clamped at the end and one starting past it behave as for streamed reads', async () => {
    const bytes = randomBytes(3000);
    const { key } = await putBytes(store, bytes);
    expect((await readAll(await store.readRange(key, 2990, 5000))).equals(bytes.subarray(2990))).toBe(true);
    await expect(store.readRange(key, 3000, 3100)).rejects.toBeInstanceOf(RangeError);
  });
});
