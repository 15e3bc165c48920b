import { createHash, randomUUID, type Hash } from 'node:crypto';
import { open, readdir, lstat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { CommittedBlob, StagedBlob } from './blob-store';
import { DirectSpoolFile, directWritesAvailable } from './direct-spool';
import { errnoCode, toBlobStoreError } from './fs-error';

/**
 * How much a staging writer buffers before `write()` returns false: bounds memory per upload.
 * Room for a few batches behind the one being written, so a write that is slow to come back
 * (the thread pool busy, a background sync) does not pause the request: with 1 MiB a 23 MB part
 * paused its socket about 19 times, each pause and resume a round of stream bookkeeping, socket
 * read stops and starts, and re-optimised stream code; with 4 MiB about 3 (counted over 24 volumes).
 */
const SPOOL_HIGH_WATER_MARK = 4 * 1024 * 1024;

/** Spilled bytes are written in batches of at least this many: one write call per MiB, not one per socket read. */
const WRITE_BATCH_BYTES = 1024 * 1024;
/**
 * A spilling part is flushed to stable storage in the background every time this many more bytes
 * were written, so the disk works while the rest arrives and the commit's fsync only waits for
 * the tail (the commit still fsyncs the whole file before anything points at it).
 */
const BACKGROUND_SYNC_BYTES = 8 * 1024 * 1024;

/** Parts up to this size are held in memory (unless the budget is spent); larger ones spill to a file. */
export const DEFAULT_MEMORY_PART_LIMIT = 2 * 1024 * 1024;
/** Process-wide cap on bytes held by in-memory spools: 64 concurrent small uploads fit, more spill. */
export const DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024;

/**
 * A byte budget shared by in-memory spools. A spool reserves each chunk before keeping it and
 * spills to a staging file when the reservation is refused, so concurrent uploads can never hold
 * more than `limit` bytes between them.
 */
export class SpoolMemoryBudget {
  private usedBytes = 0;
  private peakBytes = 0;

  constructor(readonly limit: number) {}

  /** Bytes currently reserved. */
  get used(): number {
    return this.usedBytes;
  }

  /** Highest reservation seen since creation (for tests and diagnostics). */
  get peak(): number {
    return this.peakBytes;
  }

  /** Reserves `bytes` when they fit; false (nothing reserved) otherwise. */
  tryReserve(bytes: number): boolean {
    if (this.usedBytes + bytes > this.limit) return false;
    this.usedBytes += bytes;
    if (this.usedBytes > this.peakBytes) this.peakBytes = this.usedBytes;
    return true;
  }

  /** Returns `bytes` reserved earlier. */
  release(bytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - bytes);
  }
}

/** The budget all stores of this process share unless given their own. */
export const processSpoolBudget = new SpoolMemoryBudget(DEFAULT_MEMORY_BUDGET);

/** How a store spools: parts up to `partLimit` bytes stay in memory while `budget` allows. */
export interface SpoolMemoryOptions {
  partLimit?: number;
  budget?: SpoolMemoryBudget;
}

/** What the owning store does with a spill file once the part has ended. */
export interface SpoolFileOptions {
  /**
   * The file becomes the blob itself (filesystem store: linked to its content address): it is
   * created read-only and flushed to stable storage as soon as the last byte is written, on the
   * descriptor already open, while the caller checks the instance (`synced`). Otherwise (a spool
   * that is only read back and uploaded) it stays private and is not flushed.
   */
  durable?: boolean;
}

/**
 * A staged blob hashed as it arrives and held in memory when small (no file is opened at all),
 * or spooled to a local file at `path` once it outgrows its memory allowance. Shared by both
 * backends: the key is only known after the last byte, so bytes must wait somewhere before they
 * can be placed at their content address.
 */
export class SpooledBlob implements StagedBlob {
  readonly writable: Writable;
  readonly done: Promise<{ sha256: string; size: number }>;
  /** Resolves once the writer is closed (after finish or destroy) and any spool descriptor with it. */
  readonly closed: Promise<void>;
  /** Set by the owning store so commit/discard happen once. */
  settled: Promise<CommittedBlob> | 'discarded' | null = null;
  private readonly writer: SpoolWriter;

  constructor(
    readonly owner: object,
    readonly path: string,
    prepare: () => Promise<void>,
    memory: SpoolMemoryOptions = {},
    file: SpoolFileOptions = {},
  ) {
    const writer = new SpoolWriter(path, prepare, memory.partLimit ?? DEFAULT_MEMORY_PART_LIMIT, memory.budget ?? processSpoolBudget, file.durable ?? false);
    this.writer = writer;
    this.writable = writer;
    this.done = new Promise((resolve, reject) => {
      writer.once('finish', () => resolve({ sha256: writer.digest(), size: writer.size }));
      writer.once('error', reject);
      writer.once('close', () => reject(new Error('staged blob was destroyed before it finished')));
    });
    // Nobody is obliged to await `done` (discard paths often do not); avoid unhandled rejections.
    this.done.catch(() => undefined);
    this.closed = new Promise((resolve) => writer.once('close', () => resolve()));
  }

  /** True while bytes may still arrive (neither finished nor destroyed). */
  get isOpen(): boolean {
    return !this.writable.writableFinished && !this.writable.destroyed;
  }

  /** The bytes as chunks when held in memory; null once spilled to `path` (or released). */
  get chunks(): readonly Buffer[] | null {
    return this.writer.memory;
  }

  /** True when the bytes went to the staging file at `path`. */
  get spilled(): boolean {
    return this.writer.spilled;
  }

  /**
   * For a durable spool that spilled: settles once the finished file is on stable storage (its
   * descriptor then closed), rejecting when the flush failed. Null before the end, or when there
   * is no such flush (in memory, or not durable).
   */
  get synced(): Promise<void> | null {
    return this.writer.synced;
  }

  /** Gives the in-memory bytes back to the budget; idempotent. */
  releaseMemory(): void {
    this.writer.releaseMemory();
  }
}

/** Opens a staging writer whose spill file (if it needs one) is a fresh random path inside `dir`. */
export function createSpooledBlob(
  owner: object,
  dir: string,
  prepare: () => Promise<void>,
  memory?: SpoolMemoryOptions,
  file?: SpoolFileOptions,
): SpooledBlob {
  return new SpooledBlob(owner, path.join(dir, randomUUID()), prepare, memory, file);
}

/** Narrows a StagedBlob to one this store created, so a foreign object can never be committed. */
export function ownSpooledBlob(owner: object, staged: StagedBlob): SpooledBlob {
  if (!(staged instanceof SpooledBlob) || staged.owner !== owner) {
    throw new TypeError('staged blob does not belong to this blob store');
  }
  return staged;
}

/** Destroys the writer if still open, waits for its descriptor to close, and removes the spool file. Never throws. */
export async function dropSpooledBlob(staged: SpooledBlob): Promise<void> {
  try {
    if (!staged.writable.destroyed) staged.writable.destroy();
    await staged.closed;
    staged.releaseMemory();
    if (!staged.spilled) return; // nothing was ever written to disk
    await unlink(staged.path);
  } catch {
    // Already gone or unremovable: cleanStaging sweeps what is left.
  }
}

/** Removes files in `dir` not modified for `olderThanMs`, skipping `keep`. Returns how many were removed. */
export async function removeStaleFiles(dir: string, olderThanMs: number, keep: ReadonlySet<string>): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw toBlobStoreError(err, `listing ${dir}`);
  }
  const cutoff = Date.now() - olderThanMs;
  let removed = 0;
  for (const name of names) {
    const file = path.join(dir, name);
    if (keep.has(file)) continue;
    try {
      const st = await lstat(file);
      if (!st.isFile() || st.mtimeMs > cutoff) continue;
      await unlink(file);
      removed++;
    } catch (err) {
      // Raced with a commit or another sweeper: the file is gone, which is what we wanted.
      if (errnoCode(err) !== 'ENOENT') throw toBlobStoreError(err, `removing ${file}`);
    }
  }
  return removed;
}

/**
 * Keeps every chunk in memory while the part stays within its limit and the budget allows (hashed
 * at the end); past that, a durable part that gets aligned blocks goes to a direct-I/O file that
 * is hashed on the hash worker (direct-spool.ts), any other opens the spool file once, writes what
 * was kept, and appends from then on in batches of WRITE_BATCH_BYTES, hashed here. A chunk is
 * acknowledged only once kept (in memory, in the batch or a block, all bounded) or written; the
 * last bytes are written, and the digest known, before 'finish'.
 */
class SpoolWriter extends Writable {
  private readonly hash: Hash = createHash('sha256');
  private file: FileHandle | null = null;
  private digested: string | null = null;
  /** Chunks held in memory; null once spilled or released. */
  memory: Buffer[] | null = [];
  /** Bytes of `memory` reserved from the budget. */
  private reserved = 0;
  spilled = false;
  size = 0;
  /** Bytes acknowledged but not yet written to the spool file. */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  /** Bytes written to the spool file, and how many of them a background sync was started for. */
  private written = 0;
  private syncedUpTo = 0;
  private backgroundSync: Promise<void> | null = null;
  /** A failed background sync fails the blob: after a write-back error a later fsync may wrongly succeed. */
  private syncError: unknown = null;
  /** The flush of a durable spill file started when the part ended (see SpooledBlob.synced). */
  synced: Promise<void> | null = null;
  /** A durable spill written with direct I/O (see direct-spool.ts); null when written buffered. */
  private direct: DirectSpoolFile | null = null;

  constructor(
    private readonly filePath: string,
    private readonly prepare: () => Promise<void>,
    private readonly partLimit: number,
    private readonly budget: SpoolMemoryBudget,
    private readonly durable: boolean,
  ) {
    super({ highWaterMark: SPOOL_HIGH_WATER_MARK });
  }

  digest(): string {
    this.digested ??= this.hash.digest('hex');
    return this.digested;
  }

  releaseMemory(): void {
    this.memory = null;
    this.budget.release(this.reserved);
    this.reserved = 0;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.accept([chunk], chunk.length, callback);
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    const buffers = chunks.map(({ chunk }) => chunk);
    let bytes = 0;
    for (const b of buffers) bytes += b.length;
    this.accept(buffers, bytes, callback);
  }

  private accept(buffers: Buffer[], bytes: number, callback: (error?: Error | null) => void): void {
    // Hashed where the bytes go: kept ones at the end, buffered spills here, direct spills on the hash worker.
    this.size += bytes;
    if (this.memory && this.size <= this.partLimit && this.budget.tryReserve(bytes)) {
      this.reserved += bytes;
      // A small slice would pin its whole parent (a socket read): keep a copy instead.
      for (const b of buffers) this.memory.push(b.length * 2 < b.buffer.byteLength ? Buffer.from(b) : b);
      return callback();
    }
    const spillStarts = this.memory !== null;
    if (spillStarts) {
      // What was kept goes first, written at once: from here on the part lives in its file.
      for (const b of this.memory!) this.batch.push(b);
      this.batchBytes += this.size - bytes;
      this.releaseMemory();
      // A blob-to-be skips the page cache when blocks are free (direct-spool.ts); a private spool is read back soon.
      if (this.durable && directWritesAvailable()) {
        this.direct = DirectSpoolFile.reserve(this.filePath, 0o444, this.prepare);
        if (this.direct) this.spilled = true; // the file is being created: a discard removes it
      }
      if (!this.direct) for (const b of this.batch) this.hash.update(b);
    }
    if (this.direct) {
      const pending = this.batch.length > 0 ? [...this.batch, ...buffers] : buffers;
      this.batch = [];
      this.batchBytes = 0;
      const waiting = this.direct.append(pending);
      if (!waiting) return callback();
      waiting.then(
        () => callback(),
        (err: unknown) => callback(toBlobStoreError(err, 'writing staging file') as Error),
      );
      return;
    }
    for (const b of buffers) {
      this.hash.update(b);
      this.batch.push(b);
    }
    this.batchBytes += bytes;
    if (this.batchBytes < WRITE_BATCH_BYTES && !spillStarts) return callback();
    this.flush(callback);
  }

  /** Writes the batch (opening the spool file first if need be), then calls back. */
  private flush(callback: (error?: Error | null) => void): void {
    const pending = this.batch;
    const bytes = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    const ready = this.file ? Promise.resolve(this.file) : this.openSpill();
    ready
      .then(async (fh) => {
        await writeFully(fh, pending);
        this.written += bytes;
        this.syncInBackground(fh);
      })
      .then(
        () => callback(),
        (err: unknown) => callback(toBlobStoreError(err, 'writing staging file') as Error),
      );
  }

  /** Starts a datasync of what was written so far when enough is unsynced and none is running. */
  private syncInBackground(fh: FileHandle): void {
    if (this.backgroundSync || this.written - this.syncedUpTo < BACKGROUND_SYNC_BYTES) return;
    this.syncedUpTo = this.written;
    this.backgroundSync = fh.datasync().then(
      () => {
        this.backgroundSync = null;
      },
      (err: unknown) => {
        this.syncError ??= err;
        this.backgroundSync = null;
      },
    );
  }

  /** Waits for a background sync still running: its descriptor must not be closed under it. */
  private async settleSync(): Promise<void> {
    await this.backgroundSync;
    if (this.syncError) throw this.syncError;
  }

  private async openSpill(): Promise<FileHandle> {
    await this.prepare();
    // 'wx': a random name that already exists is someone else's file; never write into it.
    // A durable spool becomes the blob: read-only from the start (the mode applies to later
    // opens; this descriptor may still write), so it needs no chmod before it is linked.
    const fh = await open(this.filePath, 'wx', this.durable ? 0o444 : 0o600);
    if (this.destroyed) {
      // Destroyed while the open was in flight: nobody else will close or remove this file.
      await fh.close().catch(() => undefined);
      await unlink(this.filePath).catch(() => undefined);
      throw new Error('staged blob was destroyed before it finished');
    }
    this.file = fh;
    this.spilled = true;
    return fh;
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.memory) for (const b of this.memory) this.hash.update(b);
    const direct = this.direct;
    if (direct) {
      // Every byte is written and hashed before 'finish'; the flush runs on, as for a buffered spill below.
      direct.end().then(() => direct.digest()).then(
        (digest) => {
          this.digested = digest;
          const synced = direct.syncAndClose();
          synced.catch(() => undefined); // a part discarded after its end never asks
          this.synced = synced;
          callback();
        },
        (err: unknown) => {
          void direct.abort().then(() => callback(toBlobStoreError(err, 'writing staging file') as Error));
        },
      );
      return;
    }
    if (this.batchBytes > 0) {
      this.flush((err) => (err ? callback(err) : this._final(callback)));
      return;
    }
    const fh = this.file;
    this.file = null;
    if (fh && this.durable) {
      // The flush starts now, on this descriptor, and 'finish' does not wait for it: the caller
      // scans and claims meanwhile, and the commit waits for `synced` before anything points at
      // the file. Reopening at commit cost an open, a chmod and a close, and the flush only
      // started once the instance had been checked.
      const synced = this.settleSync()
        .then(() => fh.sync())
        .finally(() => fh.close());
      synced.catch(() => undefined); // a part discarded after its end never asks
      this.synced = synced;
      return callback();
    }
    // Close now so an abandoned staged blob does not hold a descriptor.
    const closed = fh ? this.settleSync().finally(() => fh.close()) : Promise.resolve();
    closed.then(
      () => callback(),
      (err: unknown) => callback(toBlobStoreError(err, 'writing staging file') as Error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // autoDestroy also runs this after a normal finish: the kept bytes then wait for commit.
    if (!this.writableFinished) this.releaseMemory();
    this.batch = [];
    this.batchBytes = 0;
    const direct = this.direct;
    if (direct && !this.synced) {
      // Not ended (or its end failed): its writes settle and its blocks go back before the callback.
      void direct.abort().then(() => callback(error));
      return;
    }
    const fh = this.file;
    this.file = null;
    if (!fh) return callback(error);
    this.settleSync()
      .catch(() => undefined)
      .then(() => fh.close())
      .then(
        () => callback(error),
        () => callback(error),
      );
  }
}

/** Writes all of `buffers` to an open file, continuing after short writes (which the OS may return near ENOSPC). */
export function writeFully(fh: FileHandle, buffers: readonly Buffer[]): Promise<void> {
  return writeAllWith(async (pending) => (await fh.writev(pending)).bytesWritten, buffers);
}

/**
 * Writes all of `buffers` with `writev` (one vectored write at the current position, resolving
 * with the bytes written), resuming after short writes.
 */
export async function writeAllWith(writev: (pending: Buffer[]) => Promise<number>, buffers: readonly Buffer[]): Promise<void> {
  let pending = buffers.filter((b) => b.length > 0);
  while (pending.length > 0) {
    let written = await writev(pending);
    if (written === 0) throw Object.assign(new Error('short write made no progress'), { code: 'EIO' });
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (written >= b.length) {
        written -= b.length;
      } else {
        rest.push(written > 0 ? b.subarray(written) : b);
        written = 0;
      }
    }
    pending = rest;
  }
}
