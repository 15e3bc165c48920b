import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { errnoCode } from './fs-error';
import { OffThreadHash } from './hash-worker';

/**
 * Direct I/O (O_DIRECT) for the staging file of a large durable part: its bytes go from a few
 * reused, page-aligned buffers straight to the device, without the copy into page-cache pages
 * that a buffered write makes. On this kind of machine that copy was the largest single cost of
 * storing a volume (a quarter of the server's CPU samples: every new blob needs fresh page-cache
 * pages, and first touches of guest memory are dear), while copying a socket read into a buffer
 * that is used again and again costs a fraction of it. The file is fsynced at the end as before
 * (metadata, the device's cache); what the direct writes skip is only the page cache.
 */

/** Bytes per aligned block written at once: a few large writes per volume, each its own device request. */
export const DIRECT_BLOCK_BYTES = 4 * 1024 * 1024;
/** Blocks a part holds: one filling while the others are being written. */
const BLOCKS_PER_SPOOL = 3;
/** Blocks in the process at most (8 parts spooling directly at once, 96 MiB); a part that finds none writes buffered. */
const MAX_BLOCKS = 24;
/** Alignment of the padded tail write: the largest logical block size of common devices. */
const TAIL_ALIGNMENT = 4096;
/** WebAssembly pages (64 KiB) per block. */
const WASM_PAGES_PER_BLOCK = DIRECT_BLOCK_BYTES / 65536;

/** The part of the WebAssembly API used here (the project's TypeScript libraries do not declare it). */
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => { buffer: SharedArrayBuffer } };

const CREATE_DIRECT = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_DIRECT ?? 0);

/**
 * Page-aligned blocks, used in turn by all parts of the process and kept for its life. Node has no API
 * for aligned memory; a WebAssembly memory is mapped from fresh pages by V8's page allocator, so
 * its first byte is page-aligned (and were it ever not, the first direct write fails with EINVAL
 * and the part goes on buffered).
 */
class AlignedBlockPool {
  private readonly free: Buffer[] = [];
  private made = 0;

  /** `count` blocks, or null when the process already holds its maximum. */
  take(count: number): Buffer[] | null {
    while (this.free.length < count && this.made + count - this.free.length <= MAX_BLOCKS) {
      // Shared, so that the hash worker reads the same bytes without a copy (hash-worker.ts).
      const memory = new WebAssembly.Memory({ initial: WASM_PAGES_PER_BLOCK, maximum: WASM_PAGES_PER_BLOCK, shared: true });
      this.free.push(Buffer.from(memory.buffer, 0, DIRECT_BLOCK_BYTES));
      this.made++;
    }
    if (this.free.length < count) return null;
    return this.free.splice(this.free.length - count, count);
  }

  give(blocks: Buffer[]): void {
    this.free.push(...blocks);
  }
}

/**
 * Copies as much of `source` from `sourceStart` as fits into `target` at `targetStart`; returns the
 * bytes copied. `target` is shared memory, where Buffer#copy (TypedArray#set) goes through V8's
 * relaxed, atomic-safe copy: 14% of the main thread's samples while storing volumes (perf,
 * bench/stow.ts phase b). Buffer#fill with a buffer value copies with a native memcpy instead
 * (2-4x faster measured on this host). The blocks are not read by another thread while filled.
 */
function copyIntoShared(target: Buffer, targetStart: number, source: Buffer, sourceStart: number): number {
  const n = Math.min(source.length - sourceStart, target.length - targetStart);
  // fill() refuses an empty value; append never asks for nothing (bytes left, room left).
  if (n > 0) target.fill(source.subarray(sourceStart, sourceStart + n), targetStart, targetStart + n);
  return n;
}

const pool = new AlignedBlockPool();
/** Set once a filesystem refused O_DIRECT: later parts of the process do not try again. */
let directRefused = false;

/** True when direct writes are worth trying (the platform has O_DIRECT and no filesystem refused it yet). */
export function directWritesAvailable(): boolean {
  return constants.O_DIRECT !== undefined && !directRefused;
}

/**
 * A staging file written with O_DIRECT from aligned blocks, and its SHA-256. `append` copies
 * bytes into the block being filled and hands every full block to the thread pool (to write) and
 * to the hash worker; it waits only when all blocks are being written or hashed. `end` writes the tail (padded to the alignment, then truncated to the true
 * size); `syncAndClose` fsyncs and closes. A filesystem that refuses direct I/O (EINVAL at open or
 * at the first write) gets the same bytes written buffered instead.
 */
export class DirectSpoolFile {
  private position = 0;
  private fill = 0;
  private size = 0;
  private current: Buffer | null;
  private readonly idle: Buffer[];
  /** Writes in flight, each removed once settled (its block back in `idle`). */
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown = null;
  private direct = true;
  private fh: FileHandle | null = null;
  private readonly opening: Promise<FileHandle>;
  private closed = false;
  private reopening: Promise<void> | null = null;
  private readonly hash = new OffThreadHash();

  private constructor(
    private readonly filePath: string,
    mode: number,
    prepare: () => Promise<void>,
    private readonly blocks: Buffer[],
  ) {
    this.current = blocks[0]!;
    this.idle = blocks.slice(1);
    this.opening = prepare().then(() => this.openFile(mode));
    this.opening.catch(() => undefined); // reported by the first write, or ignored by an abort
  }

  /**
   * Takes blocks for a part about to spill to `filePath` and starts creating the file (exclusive;
   * `mode` applies to later opens, so a blob-to-be is read-only from the start). Null when the
   * process holds no free blocks: the caller writes buffered.
   */
  static reserve(filePath: string, mode: number, prepare: () => Promise<void>): DirectSpoolFile | null {
    const blocks = pool.take(BLOCKS_PER_SPOOL);
    return blocks ? new DirectSpoolFile(filePath, mode, prepare, blocks) : null;
  }

  private async openFile(mode: number): Promise<FileHandle> {
    try {
      this.fh = await open(this.filePath, CREATE_DIRECT, mode);
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL') throw err;
      directRefused = true; // this filesystem has no direct I/O (an old tmpfs, some FUSE)
      this.direct = false;
      this.fh = await open(this.filePath, 'wx', mode);
    }
    return this.fh;
  }

  /**
   * Copies `buffers` in, starting the write of every block that fills. Returns null when all of
   * it was taken at once, or a promise that settles once it was (when every block was being
   * written, it waits for one): the common case costs no promise per chunk.
   */
  append(buffers: readonly Buffer[], first = 0, offset = 0): Promise<void> | null {
    if (this.failure) return Promise.reject(this.failure);
    for (let i = first; i < buffers.length; i++) {
      const b = buffers[i]!;
      let at = i === first ? offset : 0;
      while (at < b.length) {
        const n = copyIntoShared(this.current!, this.fill, b, at);
        at += n;
        this.fill += n;
        this.size += n;
        if (this.fill < DIRECT_BLOCK_BYTES) continue;
        this.writeCurrent(DIRECT_BLOCK_BYTES, DIRECT_BLOCK_BYTES);
        if (!this.current) {
          const [next, from] = at < b.length ? [i, at] : [i + 1, 0];
          return this.waitForBlock().then(() => this.append(buffers, next, from) ?? undefined);
        }
      }
    }
    return null;
  }

  /** Writes what is left and waits for every write; the file then holds exactly the bytes appended. */
  async end(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.fill > 0) {
      const length = this.direct ? Math.ceil(this.fill / TAIL_ALIGNMENT) * TAIL_ALIGNMENT : this.fill;
      this.current!.fill(0, this.fill, length);
      this.writeCurrent(length, this.fill);
    }
    await this.drain();
    // The padding of the last direct write is cut away (the true size goes with the fsync).
    if (this.position > this.size) {
      await this.opening;
      await this.fh!.truncate(this.size);
    }
  }

  /** The SHA-256 (hex) of every byte appended; after `end`. */
  digest(): Promise<string> {
    return this.hash.digest();
  }

  /** Flushes the file to stable storage and closes it; the blocks go back to the pool either way. */
  async syncAndClose(): Promise<void> {
    await this.close(true);
  }

  /** Waits for writes in flight (their outcome no longer matters), then closes. Never throws. */
  async abort(): Promise<void> {
    // An append waiting for a block stops at its next step: the blocks go back to the pool below.
    this.failure ??= new Error('staged blob was destroyed before it finished');
    await this.drain().catch(() => undefined);
    this.hash.drop();
    await this.close().catch(() => undefined);
  }

  /** Settles every write in flight; rejects with the first failure. */
  private async drain(): Promise<void> {
    // Also the write an append is waiting for: no block may go back to the pool while it is written from.
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
  }

  /**
   * Starts the write of the current block (`length` bytes, the tail padded) and the hash of its
   * first `bytes`, and moves to an idle block (none: `current` is null until `waitForBlock`).
   */
  private writeCurrent(length: number, bytes: number): void {
    const block = this.current!;
    const at = this.position;
    this.position += length;
    this.fill = 0;
    const write = Promise.all([this.writeBlock(block.subarray(0, length), at), this.hash.update(block.subarray(0, bytes))]).then(
      () => {
        this.idle.push(block);
      },
      (err: unknown) => {
        this.failure ??= err;
        this.idle.push(block);
      },
    );
    this.inFlight.add(write);
    void write.then(() => this.inFlight.delete(write));
    this.current = this.idle.shift() ?? null;
  }

  /** Waits until a block is idle and makes it the one being filled; rejects once a write failed (or the file was given up). */
  private async waitForBlock(): Promise<void> {
    while (this.idle.length === 0) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure; // also after an abort while this append waited
    this.current = this.idle.shift()!;
  }

  /** Writes all of `bytes` at `at`, resuming after short writes; goes buffered on EINVAL. */
  private async writeBlock(bytes: Buffer, at: number): Promise<void> {
    await this.opening;
    let done = 0;
    let reopened = false;
    while (done < bytes.length) {
      let n: number;
      try {
        ({ bytesWritten: n } = await this.fh!.write(bytes, done, bytes.length - done, at + done));
      } catch (err) {
        if (reopened || errnoCode(err) !== 'EINVAL') throw err;
        await this.reopenBuffered();
        reopened = true;
        continue;
      }
      if (n === 0) throw Object.assign(new Error('short write made no progress'), { code: 'EIO' });
      done += n;
    }
  }

  /** The filesystem took the open but not a direct write: the same file, written through the page cache from here on. */
  private reopenBuffered(): Promise<void> {
    this.reopening ??= (async () => {
      this.direct = false;
      directRefused = true;
      const old = this.fh!;
      this.fh = await open(this.filePath, constants.O_WRONLY);
      await old.close().catch(() => undefined);
    })();
    return this.reopening;
  }

  private async close(sync = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      const fh = await this.opening.catch((err: unknown) => {
        if (sync) throw err;
        return null;
      });
      if (fh && sync) await this.fh!.sync();
    } finally {
      pool.give(this.blocks);
      await this.fh?.close();
    }
  }
}
