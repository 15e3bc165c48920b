/**
 * Fixed-size buffers reused by streaming reads (BlobReadOptions.pool). A 1 MiB buffer allocated
 * per chunk is memory outside the JavaScript heap that V8 counts as pressure: a WADO-RS study
 * retrieve of 47.7 MB set off a full mark-and-sweep of the heap every few chunks, and its
 * concurrent marking and sweeping cost about as much CPU as moving the bytes. Reused buffers
 * allocate nothing per chunk.
 *
 * The caller that passes a pool to a read owns the chunks it gets: it gives each back with
 * `release` once nothing refers to it any more (a socket write has completed). A chunk never
 * given back is simply collected; a buffer the pool did not hand out, or one already given back,
 * is ignored, so a release can never let two reads fill the same memory.
 */
export class ReadBufferPool {
  private readonly idle: Buffer[] = [];
  /** Memory this pool handed out, and which of it is idle now (a second release is ignored). */
  private readonly owned = new WeakSet<ArrayBufferLike>();
  private readonly idleSet = new WeakSet<ArrayBufferLike>();

  /**
   * @param chunkSize bytes per buffer, i.e. per read
   * @param maxIdle buffers kept for reuse; more given back are left to the garbage collector
   */
  constructor(
    readonly chunkSize: number,
    private readonly maxIdle: number,
  ) {}

  /** Buffers waiting for reuse (for tests). */
  get idleCount(): number {
    return this.idle.length;
  }

  /** A buffer of `chunkSize` bytes, reused when one is idle; its contents are undefined. */
  take(): Buffer {
    const reused = this.idle.pop();
    if (reused) {
      this.idleSet.delete(reused.buffer);
      return reused;
    }
    const fresh = Buffer.allocUnsafeSlow(this.chunkSize);
    this.owned.add(fresh.buffer);
    return fresh;
  }

  /** Gives back a chunk (or a view of one) that `take` handed out; anything else is ignored. */
  release(chunk: Buffer): void {
    const memory = chunk.buffer;
    if (!this.owned.has(memory) || this.idleSet.has(memory) || this.idle.length >= this.maxIdle) return;
    this.idleSet.add(memory);
    this.idle.push(Buffer.from(memory, 0, this.chunkSize));
  }
}
