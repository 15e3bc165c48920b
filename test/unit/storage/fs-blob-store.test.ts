import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, mkdir, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createFsBlobStore } from '../../../src/storage/fs-blob-store';
import { ReadBufferPool } from '../../../src/storage/read-buffer-pool';
import { describeBlobStoreContract, putBytes, readAll, sha256Hex } from './blob-store-contract';
import { descriptorsOpenOn } from '../../helpers/open-descriptors';

async function tempRoot(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'imaging-lake-fs-blobs-'));
}

describeBlobStoreContract('fs', async () => {
  const root = await tempRoot();
  const store = createFsBlobStore({ root });
  return {
    store,
    stagingDir: path.join(root, 'staging'),
    cleanup: async () => {
      await store.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

/**
 * Records the callback-style `fs.open` (path and flags) and `fs.fsync` (the path its descriptor
 * was opened with) calls made until `restore`; the calls go through unchanged.
 */
function recordFsCalls(): { calls: Array<{ op: 'open' | 'fsync'; path: string; flags?: unknown }>; restore: () => void } {
  const { open: realOpen, fsync: realFsync } = fs;
  const calls: Array<{ op: 'open' | 'fsync'; path: string; flags?: unknown }> = [];
  const opened = new Map<number, string>();
  const patched = fs as unknown as Record<'open' | 'fsync', (...args: unknown[]) => void>;
  patched.open = (...args: unknown[]) => {
    const cb = args[args.length - 1] as (err: Error | null, fd?: number) => void;
    calls.push({ op: 'open', path: String(args[0]), flags: args.length > 2 ? args[1] : undefined });
    (realOpen as (...a: unknown[]) => void)(...args.slice(0, -1), (err: Error | null, fd?: number) => {
      if (!err && fd !== undefined) opened.set(fd, String(args[0]));
      cb(err, fd);
    });
  };
  patched.fsync = (fd: unknown, cb: unknown) => {
    calls.push({ op: 'fsync', path: opened.get(fd as number) ?? '?' });
    realFsync(fd as number, cb as (err: Error | null) => void);
  };
  return {
    calls,
    restore: () => {
      patched.open = realOpen as never;
      patched.fsync = realFsync as never;
    },
  };
}

describe('fs blob store', () => {
  let root: string;
  beforeEach(async () => {
    root = await tempRoot();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('places a blob at blobs/<aa>/<bb>/<sha256>, read-only', async () => {
    const store = createFsBlobStore({ root });
    const bytes = Buffer.from('DICM layout check');
    const { key } = await putBytes(store, bytes);
    const file = path.join(root, 'blobs', key.slice(0, 2), key.slice(2, 4), key);
    const st = await stat(file);
    expect(st.size).toBe(bytes.length);
    expect(st.mode & 0o777).toBe(0o444);
    expect(await readdir(path.join(root, 'staging'))).toEqual([]);
  });

  test('a range read into given memory is a view of that memory with the range’s bytes; too small memory is not used', async () => {
    const store = createFsBlobStore({ root });
    try {
      const bytes = randomBytes(300_000);
      const { key } = await putBytes(store, bytes);
      const memory = Buffer.alloc(200_000);
      const got = await store.readBuffer(key, 100_000, 199_999, memory);
      expect(got.buffer).toBe(memory.buffer);
      expect(got.equals(bytes.subarray(100_000, 200_000))).toBe(true);
      const small = Buffer.alloc(10);
      const other = await store.readBuffer(key, 0, 99_999, small);
      expect(other.buffer).not.toBe(small.buffer);
      expect(other.equals(bytes.subarray(0, 100_000))).toBe(true);
    } finally {
      await store.close();
    }
  });

  test('a whole small blob read into given memory (a packed WADO-RS part) is a view of it, and closes its descriptor', async () => {
    const store = createFsBlobStore({ root });
    try {
      const bytes = randomBytes(34_000);
      const { key } = await putBytes(store, bytes);
      const memory = Buffer.alloc(50_000);
      const place = memory.subarray(1000, 1000 + bytes.length);
      const got = await store.readBuffer(key, 0, bytes.length - 1, place);
      expect(got.buffer).toBe(memory.buffer);
      expect(got.byteOffset).toBe(place.byteOffset);
      expect(memory.subarray(1000, 1000 + bytes.length).equals(bytes)).toBe(true);
      expect(descriptorsOpenOn(key)).toBe(0);
      // Asked for more than the blob has: the bytes it has, in the same memory.
      const longer = await store.readBuffer(key, 0, bytes.length + 99, memory);
      expect(longer.buffer).toBe(memory.buffer);
      expect(longer.equals(bytes)).toBe(true);
    } finally {
      await store.close();
    }
  });

  test('a read with a buffer pool reads into the pool’s memory, again into what was given back', async () => {
    const store = createFsBlobStore({ root });
    try {
      const bytes = randomBytes(300_000);
      const { key } = await putBytes(store, bytes);
      const pool = new ReadBufferPool(64 * 1024, 4);
      const memories = new Set<ArrayBufferLike>();
      const copies: Buffer[] = [];
      for await (const chunk of await store.read(key, { pool })) {
        memories.add((chunk as Buffer).buffer);
        copies.push(Buffer.from(chunk as Buffer));
        pool.release(chunk as Buffer);
      }
      expect(Buffer.concat(copies).equals(bytes)).toBe(true);
      // Five chunks; one being read while one waits: two buffers go round.
      expect(copies.length).toBe(5);
      expect(memories.size).toBeLessThanOrEqual(2);
    } finally {
      await store.close();
    }
  });

  test('a pooled read destroyed mid-blob, or before its first read ends, closes its descriptor', async () => {
    const store = createFsBlobStore({ root });
    try {
      const { key } = await putBytes(store, randomBytes(1_000_000));
      const openOnBlob = () => descriptorsOpenOn(key);
      const pool = new ReadBufferPool(64 * 1024, 4);
      const midway = await store.read(key, { pool });
      await new Promise<void>((resolve) => midway.once('data', () => resolve()));
      const early = await store.read(key, { pool });
      early.resume(); // a read is in flight when it is destroyed
      for (const s of [midway, early]) {
        const closed = new Promise((resolve) => s.once('close', resolve));
        s.destroy();
        await closed;
      }
      expect(openOnBlob()).toBe(0);
    } finally {
      await store.close();
    }
  });

  test('exactly one of many concurrent commits of the same bytes stores it', async () => {
    const store = createFsBlobStore({ root });
    const bytes = randomBytes(64 * 1024);
    const results = await Promise.all(Array.from({ length: 8 }, () => putBytes(store, bytes)));
    expect(results.filter((r) => !r.existed)).toHaveLength(1);
  });

  test('a blob directory removed behind its back is made again on the next commit', async () => {
    const store = createFsBlobStore({ root });
    const { key } = await putBytes(store, Buffer.from('first of its shard'));
    await store.delete(key);
    await rm(path.join(root, 'blobs', key.slice(0, 2)), { recursive: true });
    // Same content, same shard: the store remembers the directory, which no longer exists.
    const again = await putBytes(store, Buffer.from('first of its shard'));
    expect(again.key).toBe(key);
    expect(await readAll(await store.read(key))).toEqual(Buffer.from('first of its shard'));
    expect(await readdir(path.join(root, 'staging'))).toEqual([]);
  });

  test('a commit into a new shard links at once and answers only once the new directory entries are flushed', async () => {
    const store = createFsBlobStore({ root });
    const bytes = Buffer.from('first blob of a new shard');
    const key = sha256Hex(bytes);
    const parent = path.join(root, 'blobs', key.slice(0, 2)); // holds the new <bb> entry
    const { open: realOpen, fsync: realFsync } = fs;
    const opened = new Map<number, string>();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let reachedParentSync!: () => void;
    const parentSyncAsked = new Promise<void>((r) => (reachedParentSync = r));
    const patched = fs as unknown as Record<'open' | 'fsync', (...args: unknown[]) => void>;
    patched.open = (...args: unknown[]) => {
      const cb = args[args.length - 1] as (err: Error | null, fd?: number) => void;
      (realOpen as (...a: unknown[]) => void)(...args.slice(0, -1), (err: Error | null, fd?: number) => {
        if (!err && fd !== undefined) opened.set(fd, String(args[0]));
        cb(err, fd);
      });
    };
    patched.fsync = (fd: unknown, cb: unknown) => {
      if (opened.get(fd as number) !== parent) return realFsync(fd as number, cb as (err: Error | null) => void);
      reachedParentSync();
      void held.then(() => realFsync(fd as number, cb as (err: Error | null) => void));
    };
    try {
      let answered = false;
      const committing = putBytes(store, bytes).then((b) => ((answered = true), b));
      await parentSyncAsked;
      // The link did not wait for the parent's flush (it appears while the flush is held), the answer does.
      const linked = path.join(parent, key.slice(2, 4), key);
      for (let i = 0; i < 100 && !(await stat(linked).then((st) => st.isFile(), () => false)); i++) await new Promise((r) => setTimeout(r, 50));
      expect((await stat(linked)).isFile()).toBe(true);
      expect(answered).toBe(false);
      release();
      expect((await committing).key).toBe(key);
    } finally {
      patched.open = realOpen as never;
      patched.fsync = realFsync as never;
      release();
      await store.close();
    }
  });

  test('a small blob is written with O_SYNC and gets no separate fsync before its link', async () => {
    const store = createFsBlobStore({ root });
    const { calls, restore } = recordFsCalls();
    try {
      const { key } = await putBytes(store, Buffer.from('small in-memory instance'));
      const stagingOpens = calls.filter((c) => c.op === 'open' && c.path.startsWith(path.join(root, 'staging') + path.sep));
      expect(stagingOpens).toHaveLength(1);
      expect(Number(stagingOpens[0]!.flags) & fs.constants.O_SYNC).toBe(fs.constants.O_SYNC);
      const fsynced = calls.filter((c) => c.op === 'fsync').map((c) => c.path);
      expect(fsynced).not.toContain(stagingOpens[0]!.path);
      expect(fsynced).toContain(path.join(root, 'blobs', key.slice(0, 2), key.slice(2, 4)));
    } finally {
      restore();
      await store.close();
    }
  });

  test('an existing blob gets a fresh mtime on commit, so the orphan grace period restarts', async () => {
    const store = createFsBlobStore({ root });
    const { key } = await putBytes(store, Buffer.from('re-sent instance'));
    const file = path.join(root, 'blobs', key.slice(0, 2), key.slice(2, 4), key);
    const old = new Date(Date.now() - 86_400_000);
    await utimes(file, old, old);
    const again = await putBytes(store, Buffer.from('re-sent instance'));
    expect(again.existed).toBe(true);
    expect((await store.stat(key))!.lastModified.getTime()).toBeGreaterThan(Date.now() - 60_000);
  });

  test('list ignores files that are not well-placed blobs', async () => {
    const store = createFsBlobStore({ root });
    const { key } = await putBytes(store, Buffer.from('real'));
    const misplaced = sha256Hex(Buffer.from('elsewhere'));
    await mkdir(path.join(root, 'blobs', 'zz'), { recursive: true });
    await mkdir(path.join(root, 'blobs', '00', '00'), { recursive: true });
    await writeFile(path.join(root, 'blobs', '00', '00', misplaced), 'wrong directory');
    await writeFile(path.join(root, 'blobs', key.slice(0, 2), key.slice(2, 4), 'notes.txt'), 'junk');
    const keys: string[] = [];
    for await (const entry of store.list()) keys.push(entry.key);
    expect(keys).toEqual([key]);
  });

  test('a traversal key never touches a file outside the root', async () => {
    const outside = path.join(root, '..', `outside-${path.basename(root)}`);
    await writeFile(outside, 'secret');
    try {
      const store = createFsBlobStore({ root });
      const rel = path.relative(path.join(root, 'blobs', 'aa', 'bb'), outside);
      await expect(store.read(rel)).rejects.toBeInstanceOf(TypeError);
      await expect(store.delete(rel)).rejects.toBeInstanceOf(TypeError);
      expect((await stat(outside)).size).toBe(6);
    } finally {
      await rm(outside, { force: true });
    }
  });

  test('a 200 MB stream goes through stage() with bounded memory', async () => {
    const store = createFsBlobStore({ root });
    const total = 200 * 1024 * 1024;
    const chunkSize = 256 * 1024;
    const base = randomBytes(chunkSize);
    const expected = createHash('sha256');

    // A producer that never holds more than one chunk: memory growth can only come from the store.
    function* chunks(): Generator<Buffer> {
      for (let i = 0; i < total / chunkSize; i++) {
        const chunk = Buffer.from(base);
        chunk.writeUInt32BE(i, 0);
        expected.update(chunk);
        yield chunk;
      }
    }

    const baseline = process.memoryUsage();
    let peakExternal = 0;
    let peakHeap = 0;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peakExternal = Math.max(peakExternal, m.arrayBuffers - baseline.arrayBuffers);
      peakHeap = Math.max(peakHeap, m.heapUsed - baseline.heapUsed);
    }, 10);
    const started = process.hrtime.bigint();
    try {
      const staged = store.stage();
      await pipeline(Readable.from(chunks()), staged.writable);
      const committed = await store.commit(staged);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      expect(committed.size).toBe(total);
      expect(committed.key).toBe(expected.digest('hex'));
      expect((await store.stat(committed.key))?.size).toBe(total);
      // Buffering the whole stream would need 200 MB; a streaming path needs a few chunks.
      expect(peakExternal).toBeLessThan(64 * 1024 * 1024);
      expect(peakHeap).toBeLessThan(64 * 1024 * 1024);
      process.stdout.write(
        `  fs stage+commit 200 MB: ${(200 / seconds).toFixed(0)} MB/s, peak +${(peakExternal / 1048576).toFixed(1)} MB buffers\n`,
      );
      // A ranged read deep inside the blob comes back right.
      const at = 150 * 1024 * 1024 + 3;
      const slice = await readAll(await store.readRange(committed.key, at, at + 9));
      const chunkIndex = Math.floor(at / chunkSize);
      const want = Buffer.from(base);
      want.writeUInt32BE(chunkIndex, 0);
      expect(slice.equals(want.subarray(at % chunkSize, (at % chunkSize) + 10))).toBe(true);
    } finally {
      clearInterval(sampler);
    }
  });
});
