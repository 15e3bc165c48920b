import type { FileHandle } from 'node:fs/promises';

/** An open blob file and its size, shared by concurrent readers. */
export interface CachedHandle {
  readonly key: string;
  readonly fh: FileHandle;
  readonly size: number;
  /** Readers currently using `fh`; it is closed only when this is 0. */
  refs: number;
  /** Dropped from the cache: close once the last reader releases it. */
  evicted: boolean;
}

/**
 * A small LRU of open file descriptors for immutable blobs, so repeated small reads (frames of
 * the same volume) skip open/fstat/close. Positional reads make one descriptor safe to share.
 * An entry evicted while in use is closed by its last reader.
 */
export class HandleCache {
  private readonly entries = new Map<string, CachedHandle>();
  private readonly opening = new Map<string, Promise<CachedHandle>>();

  constructor(private readonly capacity: number) {}

  /** Number of descriptors held (for tests). */
  get size(): number {
    return this.entries.size;
  }

  /** The cached handle for `key` when there is one (counted as in use until `release`), else null; never opens. */
  acquireCached(key: string): CachedHandle | null {
    const hit = this.entries.get(key);
    if (!hit) return null;
    this.entries.delete(key);
    this.entries.set(key, hit);
    hit.refs++;
    return hit;
  }

  /** The cached handle for `key` (opened with `open` when absent), counted as in use until `release`. */
  async acquire(key: string, open: () => Promise<{ fh: FileHandle; size: number }>): Promise<CachedHandle> {
    // Re-inserted on a hit: Map order is the LRU order.
    const hit = this.acquireCached(key);
    if (hit) return hit;
    let pending = this.opening.get(key);
    if (!pending) {
      pending = open().then(
        ({ fh, size }) => {
          this.opening.delete(key);
          const entry: CachedHandle = { key, fh, size, refs: 0, evicted: false };
          this.entries.set(key, entry);
          this.trim();
          return entry;
        },
        (err: unknown) => {
          this.opening.delete(key);
          throw err;
        },
      );
      this.opening.set(key, pending);
    }
    const entry = await pending;
    // Evicted (and so closed) between its open and this reader's turn: open afresh.
    if (entry.evicted && entry.refs === 0) return this.acquire(key, open);
    entry.refs++;
    return entry;
  }

  /** Ends one reader's use of `entry`. */
  release(entry: CachedHandle): void {
    entry.refs--;
    if (entry.evicted && entry.refs === 0) void entry.fh.close().catch(() => undefined);
  }

  /** Drops `key` (its blob is being deleted); waits for an open in flight so it cannot come back. */
  async evict(key: string): Promise<void> {
    await this.opening.get(key)?.catch(() => undefined);
    const entry = this.entries.get(key);
    if (entry) this.drop(entry);
  }

  /** Drops every entry. */
  async clear(): Promise<void> {
    await Promise.all([...this.opening.values()].map((p) => p.catch(() => undefined)));
    for (const entry of [...this.entries.values()]) this.drop(entry);
  }

  private trim(): void {
    for (const entry of this.entries.values()) {
      if (this.entries.size <= this.capacity) break;
      this.drop(entry);
    }
  }

  private drop(entry: CachedHandle): void {
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
    entry.evicted = true;
    if (entry.refs === 0) void entry.fh.close().catch(() => undefined);
  }
}
