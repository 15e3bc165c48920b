import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobStore } from '../../../src/storage/blob-store';
import { createFsBlobStore } from '../../../src/storage/fs-blob-store';
import { terminateHashWorker } from '../../../src/storage/hash-worker';
import type { SpooledBlob } from '../../../src/storage/spooled-blob';

/**
 * How a large part reaches the disk on the filesystem store: socket-sized chunks are copied into
 * aligned 4 MiB blocks written with direct I/O (the spool's write calls on its file are counted,
 * its open flags read from /proc), the bytes are intact under their SHA-256, and a part given up
 * before its end leaves nothing behind.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Counts the write calls made on open files (FileHandle write and writev, the calls the spool
 * makes, each one system call or more) while `work` runs. The calls go through unchanged. Unlike
 * a process-wide tally such as /proc/self/io, the count leaves out the process's other activity
 * (timers, the test runner, servers of earlier test files), which made it depend on the load.
 */
async function countFileWrites(work: () => Promise<void>): Promise<number> {
  const probe = await open(os.devNull, 'r');
  const proto = Object.getPrototypeOf(probe) as Record<'write' | 'writev', (...args: unknown[]) => unknown>;
  await probe.close();
  const originals = { write: proto.write, writev: proto.writev };
  let calls = 0;
  for (const name of ['write', 'writev'] as const) {
    proto[name] = function (this: unknown, ...args: unknown[]) {
      calls += 1;
      return originals[name].apply(this, args);
    };
  }
  try {
    await work();
  } finally {
    proto.write = originals.write;
    proto.writev = originals.writev;
  }
  return calls;
}

/** Replaces one FileHandle method (on the prototype every handle shares) while `work` runs. */
async function withFileHandleMethod<T>(name: 'write' | 'writev' | 'sync', replace: (original: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown, work: () => Promise<T>): Promise<T> {
  const probe = await open(os.devNull, 'r');
  const proto = Object.getPrototypeOf(probe) as Record<string, (...args: unknown[]) => unknown>;
  await probe.close();
  const original = proto[name]!;
  proto[name] = replace(original);
  try {
    return await work();
  } finally {
    proto[name] = original;
  }
}

/** The open flags of this process's descriptor for `file` (from /proc/self/fdinfo), or null when none is open. */
async function openFlagsOf(file: string): Promise<number | null> {
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target !== file) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8');
    const flags = /^flags:\s*([0-7]+)/m.exec(info);
    if (flags) return parseInt(flags[1]!, 8);
  }
  return null;
}

function chunked(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

describe('filesystem store: writing a large part', () => {
  let root: string;
  let store: BlobStore;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'spool-writes-'));
    store = createFsBlobStore({ root });
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  test('64 KiB chunks of a 24 MiB part are written in 4 MiB blocks, and the blob is byte-identical', async () => {
    const bytes = randomBytes(24 * MiB);
    const staged = store.stage();
    const calls = await countFileWrites(async () => {
      // Chunks arrive as from a socket, a little apart, not all queued at once.
      for (const c of chunked(bytes, 64 * KiB)) {
        if (!staged.writable.write(c)) await new Promise((r) => staged.writable.once('drain', r));
        await new Promise((r) => setTimeout(r, 1));
      }
      staged.writable.end();
      await staged.done;
    });
    // 384 chunks of 64 KiB: written in 4 MiB blocks that is 6 calls (a few more if the kernel
    // ever wrote a block short), against 24 in MiB batches and 384 when every chunk is written on its own.
    expect(calls).toBeGreaterThanOrEqual(6);
    expect(calls).toBeLessThanOrEqual(9);
    expect((staged as SpooledBlob).spilled).toBe(true);
    const blob = await store.commit(staged);
    const sha = createHash('sha256').update(bytes).digest('hex');
    expect(blob).toEqual({ key: sha, sha256: sha, size: bytes.length, existed: false });
    const back: Buffer[] = [];
    for await (const c of await store.read(blob.key)) back.push(c as Buffer);
    expect(Buffer.concat(back).equals(bytes)).toBe(true);
  });

  test('chunks of an odd size that straddle the 4 MiB blocks are copied across them byte for byte', async () => {
    const bytes = randomBytes(13 * MiB + 5);
    const staged = store.stage();
    await pipeline(Readable.from(chunked(bytes, 100_003)), staged.writable);
    expect((staged as SpooledBlob).spilled).toBe(true);
    const blob = await store.commit(staged);
    expect(blob.key).toBe(createHash('sha256').update(bytes).digest('hex'));
    const back: Buffer[] = [];
    for await (const c of await store.read(blob.key)) back.push(c as Buffer);
    expect(Buffer.concat(back).equals(bytes)).toBe(true);
  });

  test('a part whose last batch is still unwritten when it ends is complete after finish', async () => {
    // 2 MiB kept in memory, then 2.5 MiB more: the tail (< 1 MiB) is written only at the end.
    const bytes = randomBytes(4 * MiB + 512 * KiB + 17);
    const staged = store.stage();
    await pipeline(Readable.from(chunked(bytes, 48 * KiB)), staged.writable);
    const blob = await store.commit(staged);
    expect(blob.size).toBe(bytes.length);
    const back: Buffer[] = [];
    for await (const c of await store.read(blob.key)) back.push(c as Buffer);
    expect(Buffer.concat(back).equals(bytes)).toBe(true);
  });

  test('a large part given up mid-way (client gone) leaves no staging file once discarded', async () => {
    const staged = store.stage();
    for (const c of chunked(randomBytes(12 * MiB + 100 * KiB), 64 * KiB)) {
      if (!staged.writable.write(c)) await new Promise((r) => staged.writable.once('drain', r));
    }
    staged.writable.destroy(new Error('client went away'));
    await expect(staged.done).rejects.toThrow();
    await store.discard(staged);
    expect(await readdir(path.join(root, 'staging'))).toEqual([]);
  });

  test('a slow write does not stop the part: several MiB are taken while blocks are being written', async () => {
    const staged = store.stage();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let accepted = 0;
    const hold = (original: (...args: unknown[]) => unknown) =>
      function (this: unknown, ...args: unknown[]) {
        return held.then(() => original.apply(this, args));
      };
    await withFileHandleMethod('write', hold, () =>
      withFileHandleMethod('writev', hold, async () => {
        // Every write call hangs until released: count what the writer takes before it asks to wait.
        for (const c of chunked(randomBytes(32 * MiB), 64 * KiB)) {
          accepted += c.length;
          if (!staged.writable.write(c)) break;
        }
        release();
        staged.writable.end();
        await staged.done;
      }),
    );
    // The blocks being written and the one filling (3 x 4 MiB, the first holding the 2 MiB kept in
    // memory), and the writer's buffer behind them; bounded all the same.
    expect(accepted).toBeGreaterThanOrEqual(8 * MiB);
    expect(accepted).toBeLessThan(24 * MiB);
  });

  test('a spilling part is written with direct I/O, past the page cache', async () => {
    const staged = store.stage() as SpooledBlob;
    for (const c of chunked(randomBytes(6 * MiB), 64 * KiB)) {
      if (!staged.writable.write(c)) await new Promise((r) => staged.writable.once('drain', r));
    }
    // Before its end the spool file is open (once its creation, started at the spill, is through):
    // its descriptor's flags say how it is written.
    let flags = await openFlagsOf(staged.path);
    for (let i = 0; flags === null && i < 500; i++) {
      await new Promise((r) => setTimeout(r, 10));
      flags = await openFlagsOf(staged.path);
    }
    staged.writable.end();
    await staged.done;
    expect(flags).not.toBeNull();
    expect(flags! & constants.O_DIRECT).toBe(constants.O_DIRECT);
    await store.discard(staged);
  });

  test('a spilling part is hashed off the main thread: no byte of it goes through a hash here', async () => {
    const bytes = randomBytes(10 * MiB + 5);
    const hashProto = Object.getPrototypeOf(createHash('sha256')) as { update: (...args: unknown[]) => unknown };
    const original = hashProto.update;
    let hashedHere = 0;
    hashProto.update = function (this: unknown, ...args: unknown[]) {
      hashedHere += (args[0] as Buffer).length;
      return original.apply(this, args);
    };
    const staged = store.stage();
    try {
      await pipeline(Readable.from(chunked(bytes, 64 * KiB)), staged.writable);
      await staged.done;
    } finally {
      hashProto.update = original;
    }
    expect(hashedHere).toBe(0);
    expect((await staged.done).sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    await store.discard(staged);
  });

  test('a spilled part is read-only and on its way to stable storage once it has ended; the commit waits for that', async () => {
    const bytes = randomBytes(5 * MiB);
    const staged = store.stage() as SpooledBlob;
    await pipeline(Readable.from(chunked(bytes, 64 * KiB)), staged.writable);
    await staged.done;
    expect(staged.spilled).toBe(true);
    expect(staged.synced).not.toBeNull();
    expect((await stat(staged.path)).mode & 0o777).toBe(0o444);
    await staged.synced;
    const blob = await store.commit(staged);
    expect(blob.key).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  test('a failed flush of a spilled part fails its commit, and nothing is placed', async () => {
    const bytes = randomBytes(5 * MiB);
    const staged = store.stage();
    await withFileHandleMethod(
      'sync',
      () => () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' })),
      async () => {
        await pipeline(Readable.from(chunked(bytes, 64 * KiB)), staged.writable);
        await expect(store.commit(staged)).rejects.toThrow(/EIO/);
      },
    );
    const key = createHash('sha256').update(bytes).digest('hex');
    expect(await store.stat(key)).toBeNull();
    expect(await readdir(path.join(root, 'staging'))).toEqual([]);
  });

  test('the hash worker dying mid-part fails that part, leaves nothing behind, and the next part gets a new worker', async () => {
    const staged = store.stage();
    const chunks = chunked(randomBytes(16 * MiB), 64 * KiB);
    let written = 0;
    let terminated: Promise<void> | null = null;
    try {
      for (const c of chunks) {
        if (staged.writable.destroyed) break;
        if (!staged.writable.write(c)) {
          await new Promise((r) => {
            staged.writable.once('drain', r);
            staged.writable.once('close', r);
          });
        }
        written += c.length;
        // Past the first blocks handed to the worker: kill it while the part is still arriving.
        if (written === 10 * MiB) terminated = terminateHashWorker();
      }
      staged.writable.end();
    } catch {
      // The writable may already have failed; the outcome is what done and commit say.
    }
    await terminated;
    await expect(store.commit(staged)).rejects.toThrow();
    await store.discard(staged);
    expect(await readdir(path.join(root, 'staging'))).toEqual([]);
    const files = (await readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
    expect(files).toEqual([]);

    const bytes = randomBytes(6 * MiB + 7);
    const next = store.stage();
    await pipeline(Readable.from(chunked(bytes, 64 * KiB)), next.writable);
    const blob = await store.commit(next);
    expect(blob.key).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  test('a filesystem that refuses a direct write gets the part written buffered, byte-identical', async () => {
    // The last test here: the refusal is remembered for the rest of the process (this test file).
    const bytes = randomBytes(9 * MiB + 123);
    const staged = store.stage();
    let refused = 0;
    const blob = await withFileHandleMethod(
      'write',
      (original) =>
        function (this: unknown, ...args: unknown[]) {
          if (refused++ === 0) return Promise.reject(Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' }));
          return original.apply(this, args);
        },
      async () => {
        await pipeline(Readable.from(chunked(bytes, 64 * KiB)), staged.writable);
        return store.commit(staged);
      },
    );
    expect(refused).toBeGreaterThan(1);
    expect(blob.key).toBe(createHash('sha256').update(bytes).digest('hex'));
    const back: Buffer[] = [];
    for await (const c of await store.read(blob.key)) back.push(c as Buffer);
    expect(Buffer.concat(back).equals(bytes)).toBe(true);
  });
});
