/** An append-only byte buffer that grows by doubling up to a hard limit (the header cap). */
export class GrowableBuffer {
  buf: Buffer;
  length = 0;

  constructor(private readonly limit: number, initialCapacity = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(Math.min(initialCapacity, limit));
  }

  /** Copies src[start, end) in, as far as the limit allows; returns how many bytes were taken. */
  append(src: Uint8Array, start: number, end: number): number {
    const take = Math.min(end - start, this.limit - this.length);
    if (take <= 0) return 0;
    const needed = this.length + take;
    if (needed > this.buf.length) {
      let capacity = Math.max(this.buf.length * 2, 1024);
      while (capacity < needed) capacity *= 2;
      const grown = Buffer.allocUnsafe(Math.min(capacity, this.limit));
      this.buf.copy(grown, 0, 0, this.length);
      this.buf = grown;
    }
    this.buf.set(src.subarray(start, start + take), this.length);
    this.length = needed;
    return take;
  }

  /** Drops the bytes (the parsed header keeps only what it decoded). */
  release(): void {
    this.buf = Buffer.alloc(0);
    this.length = 0;
  }
}
