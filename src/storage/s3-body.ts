import { Readable } from 'node:stream';
import { BlobStoreUnavailableError } from './blob-store';
import { toS3BlobStoreError } from './s3-error';

/** Where a GetObject body sits inside the object, from its Content-Range (absent on a 200). */
export interface BodyWindow {
  /** Offset of the body's first byte in the object. */
  first: number;
  /** Object size when the server said so. */
  total?: number;
}

/** Parses `bytes <first>-<last>/<total>`; a missing or unparsable header means the body starts at 0. */
export function parseContentRange(header: string | undefined): BodyWindow {
  const m = header ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim()) : null;
  if (!m) return { first: 0 };
  return { first: Number(m[1]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/**
 * Re-streams bytes [start, start + length) of an S3 response body that begins at object offset
 * `window.first`. Servers that ignore or widen the Range (s3rver answers `bytes=0-0` with the
 * whole object) still yield exactly the requested bytes, and the socket is released as soon as
 * they have passed. Mid-stream socket failures surface as BlobStoreUnavailableError, and a body
 * that ends short is an error rather than a silently truncated blob.
 */
export function sliceBody(body: Readable, window: BodyWindow, start: number, length: number, key: string): Readable {
  async function* slice(): AsyncGenerator<Buffer> {
    let skip = start - window.first;
    let left = length;
    if (skip < 0) throw new BlobStoreUnavailableError(`S3 returned bytes from ${window.first}, asked for ${start}`);
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        let piece = chunk;
        if (skip > 0) {
          if (piece.length <= skip) {
            skip -= piece.length;
            continue;
          }
          piece = piece.subarray(skip);
          skip = 0;
        }
        if (piece.length > left) piece = piece.subarray(0, left);
        left -= piece.length;
        if (piece.length > 0) yield piece;
        if (left === 0) return; // leaving the loop destroys the body: no need to drain a widened range
      }
    } catch (err) {
      throw toS3BlobStoreError(err, `reading blob ${key}`);
    }
    if (left > 0 && Number.isFinite(length)) {
      throw new BlobStoreUnavailableError(`reading blob ${key}: body ended ${left} bytes short`);
    }
  }
  return Readable.from(slice(), { objectMode: false });
}
