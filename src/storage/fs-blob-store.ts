import fs, { constants } from 'node:fs';
import { access, lstat, mkdir, open, readdir, stat, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { BlobNotFoundError, type BlobReadOptions, type BlobStore, type CommittedBlob, type StagedBlob } from './blob-store';
import { assertBlobKey, assertByteRange, isBlobKey } from './blob-key';
import { errnoCode, toBlobStoreError } from './fs-error';
import { fdCall, fsyncDir, fsyncParents, linkNoReplace, mkdirDurable, syncSpool, writeDurable } from './durable-fs';
import { HandleCache, type CachedHandle } from './handle-cache';
import type { ReadBufferPool } from './read-buffer-pool';
import {
  createSpooledBlob,
  dropSpooledBlob,
  ownSpooledBlob,
  removeStaleFiles,
  type SpooledBlob,
  type SpoolMemoryOptions,
} from './spooled-blob';

export interface FsBlobStoreOptions {
  /** Directory holding `blobs/` and `staging/`; both must be on the same filesystem (hard links). */
  root: string;
  /** In-memory spooling of small parts (defaults: 2 MiB per part, the process-wide 64 MiB budget). */
  memory?: SpoolMemoryOptions;
}

/**
 * Read size per open blob stream (large instances): 1 MiB reads keep the per-chunk work (a
 * thread-pool round trip, a socket write, stream bookkeeping) small against the bytes moved,
 * while memory per reader stays bounded.
 */
const READ_HIGH_WATER_MARK = 1024 * 1024;
/** Ranges shorter than this (a frame, a header) are read in one piece into memory instead of streamed. */
const SMALL_RANGE_BYTES = 1024 * 1024;
/** Open descriptors kept for small range reads (a viewer scrolling through a few volumes). */
const HANDLE_CACHE_SIZE = 32;

/**
 * Creates the filesystem backend: `<root>/blobs/<aa>/<bb>/<sha256>`, staging in `<root>/staging/`.
 * A commit is durable (file and directory entries fsynced) before it resolves.
 */
export function createFsBlobStore(options: FsBlobStoreOptions): BlobStore {
  const root = path.resolve(options.root);
  const blobsDir = path.join(root, 'blobs');
  const stagingDir = path.join(root, 'staging');
  const owner = {};
  /** Staging files of this process still in use: never swept, whatever their age. */
  const active = new Set<string>();
  /**
   * `<aa>/<bb>` directories known to exist durably: a commit then skips the mkdir (a thread-pool
   * call and its promise per blob). Nothing removes them; a link that finds one gone recreates it.
   * At most 65,536 short strings.
   */
  const placedDirs = new Set<string>();
  /** `<aa>/<bb>` directories being made: concurrent commits into one new shard share its mkdir and its flush. */
  const makingDirs = new Map<string, Promise<NewShardDir>>();
  let ready: Promise<void> | null = null;

  /**
   * Makes the shard directory of a blob about to be linked. Resolves once it exists; the flush of
   * the new entries (its parent's, and the grandparent's when `<aa>` is new too) runs on, so that
   * the commit waits for it together with the flush of the link: the concurrent directory fsyncs
   * share one journal commit, where waiting for each in turn cost one more per new shard (most
   * blobs of a young store).
   */
  function makeShardDir(shard: string, dir: string): Promise<NewShardDir> {
    let making = makingDirs.get(shard);
    if (making) return making;
    making = mkdir(dir, { recursive: true }).then((first) => {
      const durable = first === undefined ? Promise.resolve() : fsyncParents(dir, first);
      durable.then(
        () => placedDirs.add(shard),
        () => undefined,
      );
      void durable.finally(() => makingDirs.delete(shard)).catch(() => undefined);
      return { durable };
    });
    making.catch(() => makingDirs.delete(shard));
    makingDirs.set(shard, making);
    return making;
  }

  /** Creates blobs/ and staging/ once; retried after a failure. */
  function ensureDirs(): Promise<void> {
    ready ??= Promise.all([mkdirDurable(blobsDir), mkdirDurable(stagingDir)]).then(
      () => undefined,
      (err: unknown) => {
        ready = null;
        throw toBlobStoreError(err, `creating ${root}`);
      },
    );
    return ready;
  }

  function blobPath(key: string): string {
    assertBlobKey(key);
    return path.join(blobsDir, key.slice(0, 2), key.slice(2, 4), key);
  }

  async function openBlob(key: string) {
    const file = blobPath(key);
    try {
      return await open(file, 'r');
    } catch (err) {
      throw openFailure(err, key);
    }
  }

  async function place(staged: SpooledBlob, fence?: Promise<unknown>): Promise<CommittedBlob> {
    let sha256 = '';
    try {
      const done = await staged.done;
      sha256 = done.sha256;
      const size = done.size;
      const final = blobPath(sha256);
      const dir = path.dirname(final);
      const chunks = staged.chunks;
      const shard = sha256.slice(0, 4);
      // An empty shard directory names nothing yet: it is made while the bytes are written.
      const making = placedDirs.has(shard) ? null : makeShardDir(shard, dir);
      making?.catch(() => undefined); // awaited below unless the write fails first
      // The bytes must be on disk before a name points at them, or a crash leaves a torn blob.
      // (No existence probe first: a miss costs an ENOENT error on every new blob, the common case.)
      if (chunks) await writeDurable(staged.path, chunks, ensureDirs);
      else if (staged.synced) await staged.synced;
      else await syncSpool(staged.path);
      // The claim (run meanwhile) must be visible before the name is: see BlobStore.commit.
      await fence;
      const newDir = making ? await making : null;
      let existed: boolean;
      try {
        existed = await linkNoReplace(staged.path, final);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
        // The directory went away behind our back (an operator's cleanup): make it again, once.
        placedDirs.delete(shard);
        await mkdirDurable(dir);
        placedDirs.add(shard);
        existed = await linkNoReplace(staged.path, final);
      }
      if (existed) {
        // An orphan sweeper judges by age; a fresh mtime keeps it from deleting this blob
        // before the index row that now points at it is written.
        const now = new Date();
        await utimes(final, now, now);
      }
      // Also when it existed: a concurrent committer may have linked it without its fsync done yet.
      await Promise.all([fsyncDir(dir), newDir?.durable]);
      return { key: sha256, sha256, size, existed };
    } catch (err) {
      throw toBlobStoreError(err, `committing blob ${sha256}`);
    } finally {
      // Linked into place, or a failed commit (final: the caller restages); the spool name goes either way.
      await staged.closed; // a spool still being opened would otherwise reappear after the unlink
      const wroteFile = staged.spilled || staged.chunks !== null;
      staged.releaseMemory();
      if (wroteFile) await fdCall<void>((cb) => fs.unlink(staged.path, cb)).catch(() => undefined);
      active.delete(staged.path);
    }
  }

  /** Recently read blobs kept open: blobs are immutable, so a descriptor stays valid until delete. */
  const handles = new HandleCache(HANDLE_CACHE_SIZE);

  /**
   * Bytes [start, end] in one buffer: on a cached descriptor when there is one (frames of a
   * volume being viewed). Descriptors here go through the callback API: a FileHandle and a
   * promise per call cost about twice the CPU, which matters at one read per CT slice.
   */
  async function readBuffer(key: string, start: number, end: number, into?: Buffer): Promise<Buffer> {
    assertByteRange(start, end);
    const cached = handles.acquireCached(key);
    if (cached) return readCached(cached, key, start, end, into);
    // A leading range (a small instance, a header): open, one read, close. Not cached: a study's
    // instances are read once each and would push out the descriptors of volumes being viewed.
    if (start === 0 && end < SMALL_RANGE_BYTES) return readLeading(key, end + 1, into);
    const entry = await handles.acquire(key, async () => {
      const fh = await openBlob(key);
      try {
        return { fh, size: (await fh.stat()).size };
      } catch (err) {
        await fh.close().catch(() => undefined);
        throw toBlobStoreError(err, `reading blob ${key}`);
      }
    });
    return readCached(entry, key, start, end, into);
  }

  /** A range read on a cached descriptor, which it releases. */
  async function readCached(entry: CachedHandle, key: string, start: number, end: number, into?: Buffer): Promise<Buffer> {
    try {
      if (start >= entry.size) {
        throw new RangeError(`range [${start}, ${end}] starts past the end of blob ${key} (${entry.size} bytes)`);
      }
      const length = Math.min(end, entry.size - 1) - start + 1;
      return await readAt(entry.fh.fd, key, into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length), start);
    } finally {
      handles.release(entry);
    }
  }

  /**
   * Bytes [0, length) of a blob, into `into` when it is large enough: one chain of callbacks
   * (open, read, close) settling one promise, with no fstat (the caller knows the size from the
   * index). A study of small instances is one such read per instance, so each hand-off to the
   * thread pool and each promise counts. The descriptor is closed synchronously: closing a local
   * file opened read-only does no I/O, so it is not worth a round trip through the thread pool
   * (and its callback) per instance. Without a size, an empty first read is what tells a start
   * past the end.
   */
  function readLeading(key: string, length: number, into?: Buffer): Promise<Buffer> {
    const file = blobPath(key);
    const buf = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    return new Promise((resolve, reject) => {
      fs.open(file, 'r', (openErr, fd) => {
        if (openErr) {
          reject(openFailure(openErr, key));
          return;
        }
        let got = 0;
        const next = (): void => {
          fs.read(fd, buf, got, length - got, got, (err, n) => {
            if (!err) got += n;
            if (!err && n > 0 && got < length) {
              next();
              return;
            }
            try {
              fs.closeSync(fd);
            } catch {
              // Nothing to do: the bytes (or the read's own error) are what the caller gets.
            }
            if (err) reject(toBlobStoreError(err, `reading blob ${key}`));
            else if (got === 0) reject(new RangeError(`range [0, ${length - 1}] starts past the end of blob ${key} (0 bytes)`));
            else resolve(got === length ? buf : buf.subarray(0, got));
          });
        };
        next();
      });
    });
  }

  function openBlobFd(key: string): Promise<number> {
    const file = blobPath(key);
    return new Promise((resolve, reject) => {
      fs.open(file, 'r', (err, fd) => {
        if (!err) resolve(fd);
        else reject(openFailure(err, key));
      });
    });
  }

  return {
    kind: 'fs',

    stage(): StagedBlob {
      const staged = createSpooledBlob(owner, stagingDir, ensureDirs, options.memory, { durable: true });
      active.add(staged.path);
      return staged;
    },

    async commit(staged: StagedBlob, fence?: Promise<unknown>): Promise<CommittedBlob> {
      const own = ownSpooledBlob(owner, staged);
      if (own.settled === 'discarded') throw new Error('staged blob was discarded');
      own.settled ??= place(own, fence);
      return own.settled;
    },

    async discard(staged: StagedBlob): Promise<void> {
      let own: SpooledBlob;
      try {
        own = ownSpooledBlob(owner, staged);
      } catch {
        return;
      }
      // After a commit the spool file is already linked into place; it is not ours to delete.
      if (own.settled) return;
      own.settled = 'discarded';
      await dropSpooledBlob(own);
      active.delete(own.path);
    },

    async read(key: string, options?: BlobReadOptions): Promise<Readable> {
      if (options?.pool) return new PooledBlobStream(await openBlobFd(key), key, options.pool);
      const fh = await openBlob(key);
      return fh.createReadStream({ highWaterMark: READ_HIGH_WATER_MARK });
    },

    async readRange(key: string, start: number, end: number): Promise<Readable> {
      assertByteRange(start, end);
      // A frame-sized range: one positional read (on a cached descriptor for frames), no stream per call.
      if (end - start < SMALL_RANGE_BYTES) return Readable.from([await readBuffer(key, start, end)], { objectMode: false });
      const fh = await openBlob(key);
      let size: number;
      try {
        size = (await fh.stat()).size;
      } catch (err) {
        await fh.close();
        throw toBlobStoreError(err, `reading blob ${key}`);
      }
      if (start >= size) {
        await fh.close();
        throw new RangeError(`range [${start}, ${end}] starts past the end of blob ${key} (${size} bytes)`);
      }
      return fh.createReadStream({ start, end: Math.min(end, size - 1), highWaterMark: READ_HIGH_WATER_MARK });
    },

    readBuffer,

    async stat(key: string) {
      const file = blobPath(key);
      try {
        const st = await stat(file);
        return { size: st.size, lastModified: st.mtime };
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return null;
        throw toBlobStoreError(err, `stat blob ${key}`);
      }
    },

    async delete(key: string): Promise<void> {
      const file = blobPath(key);
      await handles.evict(key);
      try {
        await unlink(file);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return;
        throw toBlobStoreError(err, `deleting blob ${key}`);
      }
    },

    list(): AsyncIterable<{ key: string; lastModified: Date }> {
      return walkBlobs(blobsDir);
    },

    async cleanStaging(olderThanMs: number): Promise<number> {
      return removeStaleFiles(stagingDir, olderThanMs, active);
    },

    async checkHealth(): Promise<void> {
      await ensureDirs();
      const probe = path.join(stagingDir, `.health-${randomUUID()}`);
      try {
        await access(blobsDir, constants.R_OK | constants.W_OK | constants.X_OK);
        const fh = await open(probe, 'wx', 0o600);
        try {
          await fh.writeFile('ok');
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch (err) {
        throw toBlobStoreError(err, 'health probe');
      } finally {
        await unlink(probe).catch(() => undefined);
      }
    },

    async close(): Promise<void> {
      // Streams handed out close themselves; only the descriptor cache holds files open.
      await handles.clear();
    },
  };
}

/** What opening a blob's file failed with, as the store reports it: a missing blob, or a store error. */
function openFailure(err: unknown, key: string): unknown {
  return errnoCode(err) === 'ENOENT' ? new BlobNotFoundError(key) : toBlobStoreError(err, `opening blob ${key}`);
}

/**
 * Fills `buf` from position `at` of an open blob; a file that ends first gives the bytes it has
 * (a short answer, which callers comparing against the index report as such).
 */
async function readAt(fd: number, key: string, buf: Buffer, at: number): Promise<Buffer> {
  let got = 0;
  while (got < buf.length) {
    const bytesRead = await new Promise<number>((resolve, reject) => {
      fs.read(fd, buf, got, buf.length - got, at + got, (err, n) => (err ? reject(toBlobStoreError(err, `reading blob ${key}`)) : resolve(n)));
    });
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === buf.length ? buf : buf.subarray(0, got);
}

/**
 * A whole blob streamed in chunks read into buffers of a pool (BlobReadOptions.pool), one
 * positional read per chunk on the thread pool; the descriptor is closed at the end, on error or
 * when the stream is destroyed (after a read in flight has finished, so it never reads a
 * descriptor number that was reused meanwhile).
 */
class PooledBlobStream extends Readable {
  private position = 0;
  private reading = false;
  private closeAfterRead: (() => void) | null = null;

  constructor(
    private readonly fd: number,
    private readonly key: string,
    private readonly pool: ReadBufferPool,
  ) {
    // One chunk read ahead of the one being consumed.
    super({ highWaterMark: pool.chunkSize });
  }

  override _read(): void {
    const buf = this.pool.take();
    this.reading = true;
    fs.read(this.fd, buf, 0, buf.length, this.position, (err, n) => {
      this.reading = false;
      if (this.closeAfterRead || err || n === 0) {
        this.pool.release(buf);
        if (this.closeAfterRead) this.closeAfterRead();
        else if (err) this.destroy(toBlobStoreError(err, `reading blob ${this.key}`) as Error);
        else this.push(null);
        return;
      }
      this.position += n;
      this.push(n === buf.length ? buf : buf.subarray(0, n));
    });
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const close = () => fs.close(this.fd, (closeErr) => callback(err ?? closeErr));
    if (this.reading) this.closeAfterRead = close;
    else close();
  }
}

/** A shard directory that exists; `durable` settles once its entry is on stable storage. */
interface NewShardDir {
  durable: Promise<unknown>;
}

/** Yields every blob under `blobs/<aa>/<bb>/`, ignoring anything that is not a well-placed key. */
async function* walkBlobs(blobsDir: string): AsyncGenerator<{ key: string; lastModified: Date }> {
  const pair = /^[0-9a-f]{2}$/;
  for (const aa of await listDir(blobsDir)) {
    if (!pair.test(aa)) continue;
    for (const bb of await listDir(path.join(blobsDir, aa))) {
      if (!pair.test(bb)) continue;
      const dir = path.join(blobsDir, aa, bb);
      for (const name of await listDir(dir)) {
        if (!isBlobKey(name) || name.slice(0, 2) !== aa || name.slice(2, 4) !== bb) continue;
        try {
          const st = await lstat(path.join(dir, name));
          if (st.isFile()) yield { key: name, lastModified: st.mtime };
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw toBlobStoreError(err, `listing ${dir}`);
        }
      }
    }
  }
}

/** Sorted directory entries; a directory that vanished (or never existed) is empty. */
async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw toBlobStoreError(err, `listing ${dir}`);
  }
}
