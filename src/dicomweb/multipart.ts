import { Readable } from 'node:stream';

/**
 * A streaming reader for `multipart/related` bodies (RFC 2387, RFC 2046 5.1.1) as used by
 * STOW-RS (PS3.18 8.6.1.2). Written here because the well-kept multipart libraries (busboy,
 * formidable, multer) only speak multipart/form-data. Each part's body is handed out as a
 * stream while the request is still arriving; nothing is buffered beyond a boundary's length.
 */

export interface MultipartPart {
  /** Part headers, names lower case. */
  headers: Record<string, string>;
  body: Readable;
  /** 0-based position of the part in the request. */
  index: number;
}

/** The body is not a well-formed multipart entity. */
export class MultipartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MultipartError';
  }
}

const CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);
const HEADER_END = Buffer.from('\r\n\r\n');
const MAX_HEADER_BYTES = 16 * 1024;
/** Bytes a part's body may hold unread before reading of the request pauses. */
const PART_HIGH_WATER_MARK = 1024 * 1024;

type State = 'preamble' | 'afterDelimiter' | 'headers' | 'body' | 'epilogue';

/**
 * Reads `source` and calls `onPart` for each part as soon as its headers are known. The
 * callback must start consuming `part.body` (it is not awaited before the next bytes are
 * pushed); backpressure from the body stream pauses reading of the source.
 * Resolves with the number of parts once the closing delimiter has been seen.
 */
export async function readMultipart(
  source: AsyncIterable<Buffer>,
  boundary: string,
  onPart: (part: MultipartPart) => void,
): Promise<number> {
  if (!boundary || boundary.length > 200) throw new MultipartError('missing or invalid multipart boundary');
  const dashBoundary = Buffer.from(`--${boundary}`);
  const delimiter = Buffer.concat([CRLF, dashBoundary]);
  let state: State = 'preamble';
  let pending: Buffer = Buffer.alloc(0);
  let body: PartBody | null = null;
  let count = 0;

  const push = async (data: Buffer) => {
    // A consumer that gave up on a part (destroyed its body) gets no more bytes of it.
    if (data.length === 0 || !body || body.destroyed) return;
    if (!body.push(data)) await body.wanted();
  };
  const endBody = () => {
    if (body && !body.destroyed) body.push(null);
    body = null;
  };

  try {
    await consume();
  } catch (err) {
    // The source failed (client gone, size limit): the part being read fails with it.
    const current = body as PartBody | null;
    if (current && !current.destroyed) current.destroy(err as Error);
    throw err;
  }
  if ((state as State) !== 'epilogue') {
    const err = new MultipartError(
      state === 'preamble' ? 'no multipart boundary found in body' : 'multipart body ended before its closing boundary',
    );
    (body as PartBody | null)?.destroy(err);
    throw err;
  }
  return count;

  async function consume(): Promise<void> {
  for await (const raw of source) {
    let chunk: Buffer = raw;
    if (pending.length > 0) {
      if (state === 'body' && raw.length >= delimiter.length) {
        // Inside a body only the seam needs joining: a delimiter that starts in the kept tail ends
        // within the next delimiter-length bytes. Copying every chunk behind the tail would cost a
        // memcpy of the whole upload.
        const seam = Buffer.concat([pending, raw.subarray(0, delimiter.length - 1)]);
        const at = seam.indexOf(delimiter);
        if (at >= 0 && at < pending.length) {
          await push(seam.subarray(0, at));
          endBody();
          chunk = raw.subarray(at + delimiter.length - pending.length);
          state = 'afterDelimiter';
        } else {
          await push(pending);
        }
      } else {
        chunk = Buffer.concat([pending, raw]);
      }
      pending = EMPTY;
    }
    // Loop until the chunk is used up or more bytes are needed.
    for (;;) {
      if (state === 'preamble') {
        // The first delimiter may come without a leading CRLF.
        const at = chunk.indexOf(dashBoundary);
        if (at < 0) {
          pending = chunk.subarray(Math.max(0, chunk.length - dashBoundary.length));
          break;
        }
        chunk = chunk.subarray(at + dashBoundary.length);
        state = 'afterDelimiter';
      } else if (state === 'afterDelimiter') {
        if (chunk.length < 2) {
          pending = chunk;
          break;
        }
        if (chunk[0] === 0x2d && chunk[1] === 0x2d) {
          state = 'epilogue';
          break;
        }
        // Transport padding (spaces/tabs) may follow a delimiter before its CRLF.
        const eol = chunk.indexOf(CRLF);
        if (eol < 0) {
          if (chunk.length > 1024) throw new MultipartError('malformed multipart delimiter line');
          pending = chunk;
          break;
        }
        if (chunk.subarray(0, eol).toString('latin1').trim() !== '') {
          throw new MultipartError('malformed multipart delimiter line');
        }
        chunk = chunk.subarray(eol + 2);
        state = 'headers';
      } else if (state === 'headers') {
        // A part may have no headers at all: the blank line follows the delimiter directly.
        let end: number;
        let skip: number;
        if (chunk.length >= 2 && chunk[0] === 0x0d && chunk[1] === 0x0a) {
          end = 0;
          skip = 2;
        } else {
          end = chunk.indexOf(HEADER_END);
          skip = 4;
        }
        if (end < 0) {
          if (chunk.length > MAX_HEADER_BYTES) throw new MultipartError('multipart part headers too large');
          pending = chunk;
          break;
        }
        // The same limit when the whole header block arrived in one chunk: the outcome must not depend on chunking.
        if (end > MAX_HEADER_BYTES) throw new MultipartError('multipart part headers too large');
        const headers = parseHeaders(chunk.subarray(0, end).toString('latin1'));
        chunk = chunk.subarray(end + skip);
        body = new PartBody();
        onPart({ headers, body, index: count++ });
        state = 'body';
      } else if (state === 'body') {
        const at = chunk.indexOf(delimiter);
        if (at >= 0) {
          await push(chunk.subarray(0, at));
          endBody();
          chunk = chunk.subarray(at + delimiter.length);
          state = 'afterDelimiter';
          continue;
        }
        // Keep back only a tail that could be the start of a delimiter split across reads; most
        // reads have none and go on whole, as they came.
        const keep = partialDelimiterTail(chunk, delimiter);
        await push(keep === 0 ? chunk : chunk.subarray(0, chunk.length - keep));
        if (keep > 0) pending = Buffer.from(chunk.subarray(chunk.length - keep));
        break;
      } else {
        break; // epilogue: ignored
      }
    }
  }
  }
}

/**
 * One part's body: a plain Readable fed by the multipart reader. Chunks go to a flowing consumer
 * as they are (no copy, no Transform in between); `wanted` waits while the consumer is behind.
 */
class PartBody extends Readable {
  private waiting: (() => void) | null = null;

  constructor() {
    super({ highWaterMark: PART_HIGH_WATER_MARK });
  }

  override _read(): void {
    this.release();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.release();
    callback(err);
  }

  /** Resolves once the consumer wants more bytes, or has gone (destroyed). */
  wanted(): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  private release(): void {
    const resolve = this.waiting;
    this.waiting = null;
    resolve?.();
  }
}

/** Length of the longest tail of `chunk` that is a proper prefix of `delimiter` (0 if none). */
function partialDelimiterTail(chunk: Buffer, delimiter: Buffer): number {
  const first = delimiter[0];
  for (let at = Math.max(0, chunk.length - delimiter.length + 1); at < chunk.length; at++) {
    at = chunk.indexOf(first, at);
    if (at < 0) return 0;
    const tail = chunk.length - at;
    if (chunk.compare(delimiter, 0, tail, at) === 0) return tail;
  }
  return 0;
}

function parseHeaders(text: string): Record<string, string> {
  const headers: Record<string, string> = {};
  // Folded header lines (obsolete, RFC 5322 2.2.3) are unfolded.
  for (const line of text.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}
