import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobStore, StagedBlob } from '../../../src/storage/blob-store';
import { createFsBlobStore } from '../../../src/storage/fs-blob-store';
import { SpoolMemoryBudget, type SpooledBlob } from '../../../src/storage/spooled-blob';
import { readAll, sha256Hex } from './blob-store-contract';

const KiB = 1024;

/** Streams `bytes` into a staged blob in 16 KiB pieces (as a multipart reader would). */
async function fill(staged: StagedBlob, bytes: Buffer): Promise<void> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 16 * KiB) chunks.push(bytes.subarray(i, i + 16 * KiB));
  await pipeline(Readable.from(chunks), staged.writable);
}

describe('in-memory spooling of small parts (fs store)', () => {
  let root: string;
  let budget: SpoolMemoryBudget;
  let store: BlobStore;
  const stagingDir = () => path.join(root, 'staging');

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'spool-'));
    budget = new SpoolMemoryBudget(256 * KiB);
    store = createFsBlobStore({ root, memory: { partLimit: 64 * KiB, budget } });
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  test('a small part is held in memory: no staging file, committed byte-identical under its SHA-256', async () => {
    const bytes = randomBytes(40 * KiB);
    const staged = store.stage();
    await fill(staged, bytes);
    expect((staged as SpooledBlob).spilled).toBe(false);
    expect(await readdir(stagingDir()).catch(() => [])).toEqual([]);
    expect(budget.used).toBe(bytes.length);

    const blob = await store.commit(staged);
    expect(blob).toEqual({ key: sha256Hex(bytes), sha256: sha256Hex(bytes), size: bytes.length, existed: false });
    expect((await readAll(await store.read(blob.key))).equals(bytes)).toBe(true);
    expect(budget.used).toBe(0);
    expect(await readdir(stagingDir())).toEqual([]);
    // Read-only like a spilled blob: content-addressed files are never rewritten in place.
    const file = path.join(root, 'blobs', blob.key.slice(0, 2), blob.key.slice(2, 4), blob.key);
    expect((await stat(file)).mode & 0o777).toBe(0o444);
  });

  test('a part past the per-part limit spills to a staging file and is stored byte-identical', async () => {
    const bytes = randomBytes(200 * KiB);
    const staged = store.stage();
    await fill(staged, bytes);
    expect((staged as SpooledBlob).spilled).toBe(true);
    expect(budget.used).toBe(0); // what was held before the spill went back to the budget
    expect(await readdir(stagingDir())).toHaveLength(1);

    const blob = await store.commit(staged);
    expect(blob.key).toBe(sha256Hex(bytes));
    expect(blob.size).toBe(bytes.length);
    expect((await readAll(await store.read(blob.key))).equals(bytes)).toBe(true);
    expect(await readdir(stagingDir())).toEqual([]);
  });

  test('memory and spill paths of the same bytes agree on the key; the second is stored once', async () => {
    const bytes = randomBytes(48 * KiB);
    const inMemory = store.stage();
    await fill(inMemory, bytes);
    const spilling = createFsBlobStore({ root, memory: { partLimit: 0, budget } });
    const onDisk = spilling.stage();
    await fill(onDisk, bytes);
    expect((inMemory as SpooledBlob).spilled).toBe(false);
    expect((onDisk as SpooledBlob).spilled).toBe(true);

    const a = await spilling.commit(onDisk);
    const b = await store.commit(inMemory);
    expect(b.key).toBe(a.key);
    expect(a.existed).toBe(false);
    expect(b.existed).toBe(true);
    expect(await readFile(path.join(root, 'blobs', a.key.slice(0, 2), a.key.slice(2, 4), a.key))).toEqual(bytes);
    expect(budget.used).toBe(0);
  });

  test('the budget is honoured under concurrency: some parts spill, all are stored intact, nothing stays reserved', async () => {
    const inputs = Array.from({ length: 24 }, () => randomBytes(48 * KiB));
    const staged = inputs.map(() => store.stage());
    // All parts stream at once and wait together before any commit, like 24 parallel uploads.
    await Promise.all(staged.map((s, i) => fill(s, inputs[i])));
    expect(budget.peak).toBeLessThanOrEqual(budget.limit);
    const spilled = staged.filter((s) => (s as SpooledBlob).spilled).length;
    expect(spilled).toBeGreaterThan(0); // 24 x 48 KiB cannot fit in 256 KiB
    expect(spilled).toBeLessThan(inputs.length); // but the budget was used
    expect(await readdir(stagingDir())).toHaveLength(spilled);

    const blobs = await Promise.all(staged.map((s) => store.commit(s)));
    for (let i = 0; i < inputs.length; i++) {
      expect(blobs[i].key).toBe(sha256Hex(inputs[i]));
      expect((await readAll(await store.read(blobs[i].key))).equals(inputs[i])).toBe(true);
    }
    expect(budget.used).toBe(0);
    expect(await readdir(stagingDir())).toEqual([]);
  });

  test('discarding an in-memory part returns its bytes to the budget and leaves nothing behind', async () => {
    const staged = store.stage();
    await fill(staged, randomBytes(30 * KiB));
    expect(budget.used).toBe(30 * KiB);
    await store.discard(staged);
    expect(budget.used).toBe(0);
    expect(await readdir(stagingDir()).catch(() => [])).toEqual([]);
    const keys: string[] = [];
    for await (const b of store.list()) keys.push(b.key);
    expect(keys).toEqual([]);
  });

  test('a part destroyed mid-upload (client gone) releases its reservation', async () => {
    const staged = store.stage();
    staged.writable.write(randomBytes(20 * KiB));
    await new Promise((r) => setImmediate(r));
    expect(budget.used).toBe(20 * KiB);
    staged.writable.destroy(new Error('client went away'));
    await expect(staged.done).rejects.toThrow();
    expect(budget.used).toBe(0);
    await store.discard(staged);
    expect(budget.used).toBe(0);
  });

  test('a part destroyed after spilling leaves no staging file once discarded', async () => {
    const staged = store.stage();
    staged.writable.write(randomBytes(100 * KiB));
    await new Promise((r) => setTimeout(r, 50));
    staged.writable.destroy(new Error('client went away'));
    await store.discard(staged);
    expect(await readdir(stagingDir())).toEqual([]);
    expect(budget.used).toBe(0);
  });
});

describe('SpoolMemoryBudget', () => {
  test('refuses a reservation that would pass the limit and accepts it after a release', () => {
    const b = new SpoolMemoryBudget(100);
    expect(b.tryReserve(60)).toBe(true);
    expect(b.tryReserve(50)).toBe(false);
    expect(b.used).toBe(60);
    b.release(60);
    expect(b.tryReserve(50)).toBe(true);
    expect(b.peak).toBe(60);
  });
});
