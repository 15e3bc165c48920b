import type { Readable, Writable } from 'node:stream';
import type { ReadBufferPool } from './read-buffer-pool';

/**
 * The storage area port: immutable, content-addressed blobs (key = SHA-256 hex of the bytes).
 * Backends: filesystem (`fs-blob-store.ts`) and S3 protocol (`s3-blob-store.ts`).
 * Writes are staged first (hashing as bytes stream in) and made durable by `commit`,
 * which is what lets STOW write the blob before the index row.
 */
export interface BlobStore {
  /** Backend name for logs and health: `fs` or `s3`. */
  readonly kind: string;
  /** Opens a staging writer; bytes written to it are hashed and spooled, nothing is visible yet. */
  stage(): StagedBlob;
  /**
   * Makes a finished staged blob durable at its content address; identical content already stored is kept once.
   * Waits for `done`. Calling it again returns the same result. A failed commit is final: the spooled
   * bytes are dropped and the caller stages again. An existing blob comes back with a recent
   * lastModified (S3: within 10 minutes), so an age-based orphan sweep cannot remove it before its
   * index row is written.
   *
   * With `fence` (STOW: the blob ledger's claim, which keeps the orphan sweeper away from the
   * key), nothing is made visible under the key before `fence` resolves; the store may write and
   * flush the bytes meanwhile (filesystem). A rejected fence fails the commit like a storage error.
   */
  commit(staged: StagedBlob, fence?: Promise<unknown>): Promise<CommittedBlob>;
  /** Drops a staged blob (failed or rejected instance); a no-op after commit. Never throws. */
  discard(staged: StagedBlob): Promise<void>;
  /** Streams a whole blob. Rejects with BlobNotFoundError when absent, TypeError for a malformed key. */
  read(key: string, options?: BlobReadOptions): Promise<Readable>;
  /** Streams bytes [start, end] inclusive of a blob; `end` past the blob is clamped, `start` past it is a RangeError. */
  readRange(key: string, start: number, end: number): Promise<Readable>;
  /**
   * Bytes [start, end] inclusive of a blob in one buffer, with readRange's clamping and errors.
   * For ranges small enough to hold in memory (a frame, a header, a small instance): it skips
   * the per-chunk work of a stream. `into`, when given and large enough, is the memory read into
   * (the result is then a view of it): a caller that reuses its buffers (single frames) keeps
   * from allocating memory outside the JavaScript heap on every read. A store may ignore it.
   */
  readBuffer(key: string, start: number, end: number, into?: Buffer): Promise<Buffer>;
  /** Size and modification time, or null when absent. */
  stat(key: string): Promise<{ size: number; lastModified: Date } | null>;
  /** Removes a blob; absent is not an error. */
  delete(key: string): Promise<void>;
  /** Lists stored blob keys with their modification time (for the orphan sweeper). */
  list(): AsyncIterable<{ key: string; lastModified: Date }>;
  /** Removes staging leftovers older than the given age (crash leftovers). Returns how many. */
  cleanStaging(olderThanMs: number): Promise<number>;
  /** A time-limited URL for direct download, when the backend supports it. */
  presign?(key: string, expiresInSeconds: number): Promise<string>;
  /** Throws when the store cannot be reached or written. */
  checkHealth(): Promise<void>;
  /** Releases resources. */
  close(): Promise<void>;
}

/** How a whole-blob read may deliver its chunks. */
export interface BlobReadOptions {
  /**
   * Buffers to read into: the caller gives each chunk back (`pool.release`) once nothing refers
   * to it, so a long stream allocates no memory per chunk (see ReadBufferPool). A store whose
   * chunks come from elsewhere (S3: the HTTP client's) ignores it.
   */
  pool?: ReadBufferPool;
}

/** A blob being written. `writable` is piped into; `done` resolves when all bytes are spooled. */
export interface StagedBlob {
  readonly writable: Writable;
  /** Resolves with hash and size once `writable` has finished; rejects on write errors. */
  readonly done: Promise<{ sha256: string; size: number }>;
}

export interface CommittedBlob {
  key: string;
  sha256: string;
  size: number;
  /** True when an identical blob was already stored (nothing new written). */
  existed: boolean;
}

export class BlobNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`blob ${key} not found`);
    this.name = 'BlobNotFoundError';
  }
}

/** The store is out of space or refused for lack of resources (maps to STOW 0xA700). */
export class BlobStoreFullError extends Error {
  constructor(message: string, override readonly cause?: unknown) {
    super(message);
    this.name = 'BlobStoreFullError';
  }
}

/** The store cannot be reached (maps to 503 / 0x0110). */
export class BlobStoreUnavailableError extends Error {
  constructor(message: string, override readonly cause?: unknown) {
    super(message);
    this.name = 'BlobStoreUnavailableError';
  }
}
