import { createHash, randomUUID, type Hash } from 'node:crypto';
import { open, readdir, lstat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { CommittedBlob, StagedBlob } from './blob-store';
import { errnoCode, toBlobStoreError } from './fs-error';

/** How much a staging writer buffers before `write()` returns false: bounds memory per upload. */
const SPOOL_HIGH_WATER_MARK = 1024 * 1024;

/**
 * A staged blob spooled to a local file while its SHA-256 is computed. Shared by both backends:
 * the key is only known after the last byte, so bytes must land somewhere before they can be
 * placed at their content address.
 */
export class SpooledBlob implements StagedBlob {
  readonly writable: Writable;
  readonly done: Promise<{ sha256: string; size: number }>;
  /** Resolves once the spool file descriptor is closed (after finish or destroy). */
  readonly closed: Promise<void>;
  /** Set by the owning store so commit/discard happen once. */
  settled: Promise<CommittedBlob> | 'discarded' | null = null;

  constructor(
    readonly owner: object,
    readonly path: string,
    prepare: () => Promise<void>,
  ) {
    const writer = new SpoolWriter(path, prepare);
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
}

/** Opens a staging writer at a fresh random path inside `dir`. */
export function createSpooledBlob(owner: object, dir: string, prepare: () => Promise<void>): SpooledBlob {
  return new SpooledBlob(owner, path.join(dir, randomUUID()), prepare);
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

/** Hashes and appends every chunk to the spool file; a chunk is acknowledged only once written. */
class SpoolWriter extends Writable {
  private readonly hash: Hash = createHash('sha256');
  private file: FileHandle | null = null;
  private digested: string | null = null;
  size = 0;

  constructor(
    private readonly filePath: string,
    private readonly prepare: () => Promise<void>,
  ) {
    super({ highWaterMark: SPOOL_HIGH_WATER_MARK });
  }

  digest(): string {
    this.digested ??= this.hash.digest('hex');
    return this.digested;
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.prepare()
      // 'wx': a random name that already exists is someone else's file; never write into it.
      .then(() => open(this.filePath, 'wx', 0o600))
      .then((fh) => {
        this.file = fh;
        callback();
      })
      .catch((err: unknown) => callback(toBlobStoreError(err, 'opening staging file') as Error));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    writeFully(this.file!, [chunk]).then(
      () => callback(),
      (err: unknown) => callback(toBlobStoreError(err, 'writing staging file') as Error),
    );
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    const buffers = chunks.map(({ chunk }) => chunk);
    for (const b of buffers) {
      this.hash.update(b);
      this.size += b.length;
    }
    writeFully(this.file!, buffers).then(
      () => callback(),
      (err: unknown) => callback(toBlobStoreError(err, 'writing staging file') as Error),
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Close now so an abandoned staged blob does not hold a descriptor; commit reopens to fsync.
    const fh = this.file;
    this.file = null;
    (fh ? fh.close() : Promise.resolve()).then(
      () => callback(),
      (err: unknown) => callback(toBlobStoreError(err, 'closing staging file') as Error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const fh = this.file;
    this.file = null;
    if (!fh) return callback(error);
    fh.close().then(
      () => callback(error),
      () => callback(error),
    );
  }
}

/** Writes all of `buffers`, continuing after short writes (which the OS may return near ENOSPC). */
async function writeFully(fh: FileHandle, buffers: Buffer[]): Promise<void> {
  let pending = buffers.filter((b) => b.length > 0);
  while (pending.length > 0) {
    let { bytesWritten } = await fh.writev(pending);
    if (bytesWritten === 0) throw Object.assign(new Error('short write made no progress'), { code: 'EIO' });
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (bytesWritten >= b.length) {
        bytesWritten -= b.length;
      } else {
        rest.push(bytesWritten > 0 ? b.subarray(bytesWritten) : b);
        bytesWritten = 0;
      }
    }
    pending = rest;
  }
}
