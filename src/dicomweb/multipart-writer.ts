import { randomUUID } from 'node:crypto';
import type { Writable } from 'node:stream';

/**
 * Writes a `multipart/related` body (RFC 2387, RFC 2046 5.1.1) as WADO-RS answers it
 * (PS3.18 8.7.1.2): parts are streamed one after another straight into the response, honouring
 * backpressure, and writing stops as soon as the client goes away.
 */

/** The client closed the connection before the answer was complete: stop quietly. */
export class ClientGoneError extends Error {
  constructor() {
    super('the client closed the connection');
    this.name = 'ClientGoneError';
  }
}

/**
 * A fresh boundary: only characters that need no quoting (RFC 2046 bchars), 122 random bits.
 * randomUUID draws from a cached block of entropy; randomBytes(12) was one synchronous call
 * into OpenSSL per answer (~40 us of a frame request's main thread).
 */
export function createBoundary(): string {
  return `imaging-lake-${randomUUID()}`;
}

/** The Content-Type of a multipart/related answer whose parts are `partType`. */
export function multipartContentType(partType: string, boundary: string, transferSyntax?: string): string {
  const ts = transferSyntax ? `; transfer-syntax=${transferSyntax}` : '';
  return `multipart/related; type="${partType}"; boundary=${boundary}${ts}`;
}

/** What comes before a part's body: delimiter, header lines and the blank line, as latin1 text (one byte per character). */
export function partHeadText(boundary: string, headers: Record<string, string>): string {
  let lines = '';
  for (const k in headers) lines += `${k}: ${headers[k]}\r\n`;
  return `--${boundary}\r\n${lines}\r\n`;
}

function partHead(boundary: string, headers: Record<string, string>): Buffer {
  return Buffer.from(partHeadText(boundary, headers), 'latin1');
}

/** The line break that ends every part's body. */
export const CRLF = Buffer.from('\r\n');

/** Bytes a part adds around its body: delimiter, headers, blank line and trailing CRLF. */
export function partOverhead(boundary: string, headers: Record<string, string>): number {
  return partHeadText(boundary, headers).length + CRLF.length;
}

/** Bytes of the closing delimiter. */
export function closingLength(boundary: string): number {
  return Buffer.byteLength(`--${boundary}--\r\n`);
}

/**
 * Bytes a response may hold queued before a writer of small parts waits for 'drain'. With the
 * socket's own mark (16 KiB) every small part (a 34 kB CT slice) would be a socket write and a
 * drain of its own; up to this much, parts written in one tick leave in one writev. Streamed
 * (large) bodies keep the socket's mark: queueing their chunks too was measured to set off a
 * full garbage collection every few hundred milliseconds while a 23 MB instance streamed.
 */
export const MAX_QUEUED_BYTES = 1024 * 1024;

/**
 * Writes bytes to `out`, waiting for 'drain' when its buffer is full, or with `queueLimit` once
 * more than that many bytes are queued; throws ClientGoneError once the connection is closed,
 * so callers stop reading their sources. `written`, when given, is called with the chunk once
 * the write has completed (the bytes are in the kernel), never when it failed.
 */
export async function writeWithBackpressure(out: Writable, chunk: Buffer, queueLimit = 0, written?: (chunk: Buffer) => void): Promise<void> {
  if (out.destroyed || out.writableEnded) throw new ClientGoneError();
  const done = written && ((err: Error | null | undefined) => err || written(chunk));
  // write() returning false has set the need for a 'drain', so one comes once the queue empties.
  if (out.write(chunk, done) || out.writableLength < queueLimit) return;
  await new Promise<void>((resolve, reject) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', gone);
      resolve();
    };
    const gone = () => {
      out.off('drain', done);
      out.off('close', gone);
      reject(new ClientGoneError());
    };
    out.on('drain', done);
    out.on('close', gone);
  });
}

/** Streams parts into `out`. Call `writePart` for each part in order, then `end`. */
export class MultipartWriter {
  private written = 0;

  constructor(
    private readonly out: Writable,
    readonly boundary: string = createBoundary(),
  ) {}

  /**
   * Writes one part. The body is consumed fully; a source error or a client abort rejects. Returns
   * the body length. `written` is given each chunk of a streamed body once its write has completed
   * (a read buffer pool takes it back).
   */
  async writePart(headers: Record<string, string>, body: Buffer | AsyncIterable<Buffer>, written?: (chunk: Buffer) => void): Promise<number> {
    await this.write(partHead(this.boundary, headers), MAX_QUEUED_BYTES);
    let length = 0;
    if (Buffer.isBuffer(body)) {
      await this.write(body, MAX_QUEUED_BYTES);
      length = body.length;
    } else {
      for await (const chunk of body) {
        length += chunk.length;
        await this.write(chunk, 0, written);
      }
    }
    await this.write(CRLF, MAX_QUEUED_BYTES);
    return length;
  }

  /**
   * Writes bytes that are already whole parts, each framed as writePart frames it (delimiter,
   * headers, blank line, body, CRLF): several small parts laid out in one buffer leave in one
   * write. `written` gets the chunk once its write has completed.
   */
  async writeFramed(chunk: Buffer, written?: (chunk: Buffer) => void): Promise<void> {
    await this.write(chunk, MAX_QUEUED_BYTES, written);
  }

  /** Writes the closing delimiter and ends the response. */
  async end(): Promise<void> {
    await this.write(Buffer.from(`--${this.boundary}--\r\n`));
    await new Promise<void>((resolve) => this.out.end(resolve));
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    return this.written;
  }

  private async write(chunk: Buffer, queueLimit = 0, written?: (chunk: Buffer) => void): Promise<void> {
    this.written += chunk.length;
    await writeWithBackpressure(this.out, chunk, queueLimit, written);
  }
}
