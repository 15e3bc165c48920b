/**
 * The behaviour every BlobStore backend must share. Each backend's test file runs this suite
 * against a real instance so the two stay interchangeable.
 *
 * (Kept beside the unit tests rather than in test/helpers: only s3-server.ts in that folder
 * belongs to the storage work.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BlobNotFoundError, type BlobStore, type CommittedBlob } from '../../../src/storage/blob-store';
import { ReadBufferPool } from '../../../src/storage/read-buffer-pool';

export interface ContractSubject {
  store: BlobStore;
  /** Where the backend spools staged bytes (to plant crash leftovers). */
  stagingDir: string;
  cleanup(): Promise<void>;
}

/** Reads a stream to the end. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** SHA-256 hex of bytes, computed independently of the store. */
export function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Streams `bytes` through stage() in `chunkSize` pieces and commits. */
export async function putBytes(store: BlobStore, bytes: Buffer, chunkSize = 64 * 1024): Promise<CommittedBlob> {
  const staged = store.stage();
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  await pipeline(Readable.from(chunks), staged.writable);
  return store.commit(staged);
}

async function listKeys(store: BlobStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const entry of store.list()) keys.push(entry.key);
  return keys.sort();
}

async function stagingFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.health-'));
}

const TRAVERSAL_KEYS = [
  '../../../../etc/passwd',
  `../${'a'.repeat(61)}`,
  'A'.repeat(64), // upper case is a different key, not an alias
  'a'.repeat(63),
  'a'.repeat(65),
  `${'a'.repeat(62)}/x`,
  '',
];

/** Registers the shared behaviour suite for one backend. */
export function describeBlobStoreContract(name: string, factory: () => Promise<ContractSubject>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let subject: ContractSubject;
    let store: BlobStore;

    beforeEach(async () => {
      subject = await factory();
      store = subject.store;
    });

    afterEach(async () => {
      await subject.cleanup();
    });

    test('commit stores bytes at their SHA-256 and read returns them unchanged', async () => {
      const bytes = randomBytes(300_001);
      const committed = await putBytes(store, bytes);
      expect(committed).toEqual({ key: sha256Hex(bytes), sha256: sha256Hex(bytes), size: bytes.length, existed: false });
      const back = await readAll(await store.read(committed.key));
      expect(back.length).toBe(bytes.length);
      expect(back.equals(bytes)).toBe(true);
    });

    test('done reports the hash and size once the writable finishes', async () => {
      const bytes = randomBytes(12_345);
      const staged = store.stage();
      await pipeline(Readable.from([bytes.subarray(0, 5000), bytes.subarray(5000)]), staged.writable);
      await expect(staged.done).resolves.toEqual({ sha256: sha256Hex(bytes), size: 12_345 });
      await store.discard(staged);
    });

    test('an empty blob is a valid blob', async () => {
      const committed = await putBytes(store, Buffer.alloc(0));
      expect(committed.key).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
      expect(committed.size).toBe(0);
      expect((await readAll(await store.read(committed.key))).length).toBe(0);
      expect((await store.stat(committed.key))?.size).toBe(0);
    });

    test('a commit with a fence makes the blob visible only once the fence resolves', async () => {
      const bytes = randomBytes(40_000);
      const staged = store.stage();
      await pipeline(Readable.from([bytes]), staged.writable);
      let open!: () => void;
      const fence = new Promise<void>((resolve) => (open = resolve));
      const committing = store.commit(staged, fence);
      // Time enough for the bytes to be written and flushed (the filesystem store does that meanwhile).
      await new Promise((r) => setTimeout(r, 100));
      expect(await store.stat(sha256Hex(bytes))).toBeNull();
      open();
      await expect(committing).resolves.toMatchObject({ key: sha256Hex(bytes), existed: false });
      expect((await store.stat(sha256Hex(bytes)))?.size).toBe(bytes.length);
    });

    test('a commit whose fence rejects stores nothing and leaves no staging file', async () => {
      const bytes = randomBytes(40_000);
      const staged = store.stage();
      await pipeline(Readable.from([bytes]), staged.writable);
      await expect(store.commit(staged, Promise.reject(new Error('claim failed')))).rejects.toThrow();
      expect(await store.stat(sha256Hex(bytes))).toBeNull();
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
      await store.discard(staged); // a no-op after the failed commit, and never throws
    });

    test('identical bytes are stored once and the second commit says existed', async () => {
      const bytes = randomBytes(50_000);
      const first = await putBytes(store, bytes);
      const second = await putBytes(store, bytes, 777);
      expect(first.existed).toBe(false);
      expect(second).toEqual({ ...first, existed: true });
      expect(await listKeys(store)).toEqual([first.key]);
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
    });

    test('concurrent commits of the same bytes all succeed with one stored blob', async () => {
      const bytes = randomBytes(200_000);
      const results = await Promise.all(Array.from({ length: 6 }, () => putBytes(store, bytes)));
      expect(new Set(results.map((r) => r.key))).toEqual(new Set([sha256Hex(bytes)]));
      expect(results.some((r) => !r.existed)).toBe(true);
      expect(await listKeys(store)).toEqual([sha256Hex(bytes)]);
      expect((await readAll(await store.read(sha256Hex(bytes)))).equals(bytes)).toBe(true);
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
    });

    test('different bytes get different keys', async () => {
      const a = await putBytes(store, Buffer.from('instance A'));
      const b = await putBytes(store, Buffer.from('instance B'));
      expect(a.key).not.toBe(b.key);
      expect(await listKeys(store)).toEqual([a.key, b.key].sort());
      expect((await readAll(await store.read(b.key))).toString()).toBe('instance B');
    });

    test('commit is idempotent for the same staged blob', async () => {
      const staged = store.stage();
      await pipeline(Readable.from([Buffer.from('once')]), staged.writable);
      const [x, y] = await Promise.all([store.commit(staged), store.commit(staged)]);
      expect(x).toEqual(y);
      expect(x.existed).toBe(false);
    });

    test('discard drops the spooled bytes and never makes them visible', async () => {
      const staged = store.stage();
      // Past the in-memory part limit (2 MiB), so the bytes spill to a staging file.
      await pipeline(Readable.from([randomBytes(3 * 1024 * 1024)]), staged.writable);
      expect(await stagingFiles(subject.stagingDir)).toHaveLength(1);
      await store.discard(staged);
      await store.discard(staged); // twice is fine
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
      expect(await listKeys(store)).toEqual([]);
      await expect(store.commit(staged)).rejects.toThrow(/discarded/);
    });

    test('discard works while bytes are still being written', async () => {
      const staged = store.stage();
      staged.writable.write(randomBytes(1000));
      await store.discard(staged);
      await expect(staged.done).rejects.toThrow();
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
    });

    test('a failing source rejects done, and discard cleans up', async () => {
      const staged = store.stage();
      async function* broken() {
        yield randomBytes(5000);
        throw new Error('client went away');
      }
      await expect(pipeline(Readable.from(broken()), staged.writable)).rejects.toThrow('client went away');
      await expect(staged.done).rejects.toThrow();
      await store.discard(staged);
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
    });

    test('committing a stage whose source failed rejects and leaves no spool file', async () => {
      const staged = store.stage();
      async function* broken() {
        yield randomBytes(5000);
        throw new Error('truncated upload');
      }
      await expect(pipeline(Readable.from(broken()), staged.writable)).rejects.toThrow('truncated upload');
      await expect(store.commit(staged)).rejects.toThrow();
      await store.discard(staged);
      expect(await stagingFiles(subject.stagingDir)).toEqual([]);
      expect(await listKeys(store)).toEqual([]);
    });

    test('discard after commit leaves the blob alone', async () => {
      const staged = store.stage();
      await pipeline(Readable.from([Buffer.from('kept')]), staged.writable);
      const committed = await store.commit(staged);
      await store.discard(staged);
      expect((await readAll(await store.read(committed.key))).toString()).toBe('kept');
    });

    test('readRange returns exactly the inclusive byte range', async () => {
      const bytes = randomBytes(100_000);
      const { key } = await putBytes(store, bytes);
      const cases: Array<[number, number]> = [
        [0, 0],
        [0, 9],
        [10, 19],
        [65_530, 65_545], // across a 64 KiB read chunk
        [99_999, 99_999],
        [0, 99_999],
      ];
      for (const [start, end] of cases) {
        const got = await readAll(await store.readRange(key, start, end));
        expect({ start, end, hex: got.toString('hex') }).toEqual({ start, end, hex: bytes.subarray(start, end + 1).toString('hex') });
      }
    });

    test('readRange clamps an end past the blob and refuses a start past it', async () => {
      const bytes = randomBytes(1000);
      const { key } = await putBytes(store, bytes);
      expect((await readAll(await store.readRange(key, 990, 5000))).equals(bytes.subarray(990))).toBe(true);
      await expect(store.readRange(key, 1000, 1010)).rejects.toBeInstanceOf(RangeError);
      await expect(store.readRange(key, 10, 9)).rejects.toBeInstanceOf(RangeError);
      await expect(store.readRange(key, -1, 9)).rejects.toBeInstanceOf(RangeError);
    });

    test('readBuffer gives the bytes readRange gives, for leading, inner and clamped ranges', async () => {
      const bytes = randomBytes(100_000);
      const { key } = await putBytes(store, bytes);
      const cases: Array<[number, number]> = [
        [0, 99_999], // a whole small instance
        [0, 131], // a header
        [10, 19],
        [65_530, 65_545],
        [99_990, 200_000], // end clamped
        [0, 200_000],
      ];
      for (const [start, end] of cases) {
        const got = await store.readBuffer(key, start, end);
        expect({ start, end, hex: got.toString('hex') }).toEqual({ start, end, hex: bytes.subarray(start, end + 1).toString('hex') });
      }
    });

    test('readBuffer refuses a start past the blob and a malformed range, and reports a missing blob', async () => {
      const { key } = await putBytes(store, randomBytes(1000));
      await expect(store.readBuffer(key, 1000, 1010)).rejects.toBeInstanceOf(RangeError);
      await expect(store.readBuffer(key, 10, 9)).rejects.toBeInstanceOf(RangeError);
      await expect(store.readBuffer(key, -1, 9)).rejects.toBeInstanceOf(RangeError);
      const missing = sha256Hex(Buffer.from('never stored either'));
      await expect(store.readBuffer(missing, 0, 10)).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.readBuffer(missing, 5, 10)).rejects.toBeInstanceOf(BlobNotFoundError);
    });

    test('read with a buffer pool returns the blob unchanged while each chunk is given back once copied', async () => {
      const bytes = randomBytes(300_001);
      const { key } = await putBytes(store, bytes);
      const pool = new ReadBufferPool(64 * 1024, 2);
      const copies: Buffer[] = [];
      for await (const chunk of await store.read(key, { pool })) {
        copies.push(Buffer.from(chunk as Buffer));
        pool.release(chunk as Buffer);
      }
      expect(Buffer.concat(copies).equals(bytes)).toBe(true);
      const { key: empty } = await putBytes(store, Buffer.alloc(0));
      expect((await readAll(await store.read(empty, { pool }))).length).toBe(0);
    });

    test('read with a buffer pool reports a missing blob and a malformed key as read does', async () => {
      const pool = new ReadBufferPool(64 * 1024, 2);
      await expect(store.read(sha256Hex(Buffer.from('never stored')), { pool })).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.read('../../etc/passwd', { pool })).rejects.toBeInstanceOf(TypeError);
    });

    test('readBuffer of an empty blob is a RangeError, as for readRange', async () => {
      const { key } = await putBytes(store, Buffer.alloc(0));
      await expect(store.readBuffer(key, 0, 0)).rejects.toBeInstanceOf(RangeError);
      await expect(store.readRange(key, 0, 0)).rejects.toBeInstanceOf(RangeError);
    });

    test('absent blobs: read rejects with BlobNotFoundError, stat is null, delete is quiet', async () => {
      const missing = sha256Hex(Buffer.from('never stored'));
      await expect(store.read(missing)).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.readRange(missing, 0, 10)).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.stat(missing)).resolves.toBeNull();
      await expect(store.delete(missing)).resolves.toBeUndefined();
    });

    test.each(TRAVERSAL_KEYS)('malformed key %j is refused by every operation', async (bad) => {
      await expect(store.read(bad)).rejects.toBeInstanceOf(TypeError);
      await expect(store.readRange(bad, 0, 1)).rejects.toBeInstanceOf(TypeError);
      await expect(store.readBuffer(bad, 0, 1)).rejects.toBeInstanceOf(TypeError);
      await expect(store.stat(bad)).rejects.toBeInstanceOf(TypeError);
      await expect(store.delete(bad)).rejects.toBeInstanceOf(TypeError);
    });

    test('stat reports size and a recent modification time', async () => {
      const before = Date.now();
      const { key } = await putBytes(store, randomBytes(4321));
      const st = await store.stat(key);
      expect(st?.size).toBe(4321);
      // S3 keeps whole seconds.
      expect(st!.lastModified.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 - 1000);
      expect(st!.lastModified.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
    });

    test('delete removes the blob', async () => {
      const { key } = await putBytes(store, randomBytes(2000));
      await store.delete(key);
      await expect(store.stat(key)).resolves.toBeNull();
      await expect(store.read(key)).rejects.toBeInstanceOf(BlobNotFoundError);
      expect(await listKeys(store)).toEqual([]);
    });

    test('list yields every committed blob with its modification time', async () => {
      const committed = await Promise.all([1, 2, 3, 4, 5].map((n) => putBytes(store, Buffer.from(`blob ${n}`))));
      const staged = store.stage(); // staged bytes are not blobs
      staged.writable.end(Buffer.from('not yet'));
      await staged.done;
      const entries: Array<{ key: string; lastModified: Date }> = [];
      for await (const entry of store.list()) entries.push(entry);
      expect(entries.map((e) => e.key).sort()).toEqual(committed.map((c) => c.key).sort());
      for (const e of entries) {
        // Not toBeInstanceOf(Date): fs hands out Dates from Node's realm, not Jest's sandbox.
        expect(Object.prototype.toString.call(e.lastModified)).toBe('[object Date]');
        expect(Math.abs(e.lastModified.getTime() - Date.now())).toBeLessThan(120_000);
      }
      await store.discard(staged);
    });

    test('cleanStaging removes only stale leftovers, never a blob being staged', async () => {
      const stale = path.join(subject.stagingDir, 'crashed-upload');
      const fresh = path.join(subject.stagingDir, 'recent-upload');
      await mkdir(subject.stagingDir, { recursive: true });
      await writeFile(stale, 'left by a crash');
      await writeFile(fresh, 'another process, still writing');
      const old = new Date(Date.now() - 2 * 3600_000);
      await utimes(stale, old, old);
      const live = store.stage();
      live.writable.write(Buffer.from('in flight'));

      expect(await store.cleanStaging(3600_000)).toBe(1);
      expect((await stagingFiles(subject.stagingDir)).sort()).toEqual(expect.arrayContaining(['recent-upload']));
      expect(await stagingFiles(subject.stagingDir)).not.toContain('crashed-upload');

      // Even with no age limit, this store's own open staging survives and still commits.
      await store.cleanStaging(0);
      live.writable.end(Buffer.from(' and done'));
      const committed = await store.commit(live);
      expect((await readAll(await store.read(committed.key))).toString()).toBe('in flight and done');
    });

    test('checkHealth resolves on a working store and leaves nothing behind', async () => {
      await expect(store.checkHealth()).resolves.toBeUndefined();
      expect(await readdir(subject.stagingDir)).toEqual([]);
      expect(await listKeys(store)).toEqual([]);
    });

    test('a staged blob from another store is refused', async () => {
      const other = await factory();
      try {
        const staged = other.store.stage();
        staged.writable.end(Buffer.from('x'));
        await expect(store.commit(staged)).rejects.toBeInstanceOf(TypeError);
        await other.store.discard(staged);
      } finally {
        await other.cleanup();
      }
    });
  });
}
