import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { readMultipart, type MultipartPart } from '../../../src/dicomweb/multipart';
import { teeInto } from '../../../src/stream-tee';

/**
 * How part bodies stream (RFC 2046 5.1.1 framing, PS3.18 8.6.1.2 STOW-RS parts): delimiters
 * split at any point between socket reads, chunks handed over without copies, backpressure from
 * a slow consumer, and the tee that feeds the blob store and the scanner from one part.
 */

const MiB = 1024 * 1024;

function chunked(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

function body(boundary: string, parts: Buffer[]): Buffer {
  const pieces: Buffer[] = [];
  for (const p of parts) pieces.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), p, Buffer.from('\r\n'));
  pieces.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(pieces);
}

async function readParts(source: AsyncIterable<Buffer>, boundary: string): Promise<Buffer[]> {
  const parts: Array<Promise<Buffer>> = [];
  await readMultipart(source, boundary, (p) => {
    const data = (async () => {
      const out: Buffer[] = [];
      for await (const c of p.body) out.push(c as Buffer);
      return Buffer.concat(out);
    })();
    data.catch(() => undefined);
    parts.push(data);
  });
  return Promise.all(parts);
}

/** A sink that keeps what it is given; `delayMs` > 0 makes every write slow. */
function sink(delayMs = 0): { writable: Writable; data: () => Buffer } {
  const chunks: Buffer[] = [];
  const writable = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk);
      if (delayMs > 0) setTimeout(cb, delayMs);
      else cb();
    },
  });
  return { writable, data: () => Buffer.concat(chunks) };
}

describe('part bodies across read boundaries', () => {
  const boundary = 'b0und4ry-x';
  // Near-misses of the delimiter inside the data must stay data.
  const a = Buffer.concat([Buffer.alloc(3000, 1), Buffer.from('\r\n--b0und4ry-'), Buffer.alloc(3000, 2), Buffer.from('\r\n--b0und4ry')]);
  const b = Buffer.alloc(5000, 3);
  const whole = body(boundary, [a, b]);

  test('every split point of the body into two reads gives the same parts', async () => {
    for (let cut = 1; cut < whole.length; cut += 1) {
      // Every byte position around the first part's end and the near-misses; a coarser walk elsewhere.
      const interesting = Math.abs(cut - (whole.indexOf(b) - 2)) < 80 || Math.abs(cut - 3050) < 60 || Math.abs(cut - 6080) < 60;
      if (!interesting && cut % 97 !== 0) continue;
      const parts = await readParts(Readable.from([whole.subarray(0, cut), whole.subarray(cut)]), boundary);
      expect(parts.length).toBe(2);
      if (!parts[0].equals(a) || !parts[1].equals(b)) throw new Error(`parts differ when the body is split at byte ${cut}`);
    }
  });

  test('reads inside a part reach the tee targets as the same memory, not copies', async () => {
    const payload = Buffer.alloc(2 * MiB, 9);
    const framed = body(boundary, [payload]);
    const head = framed.indexOf(payload);
    const reads = [framed.subarray(0, head), ...chunked(framed.subarray(head), 64 * 1024)];
    const target = sink();
    const seen: Buffer[] = [];
    target.writable.on('pipe', () => undefined);
    const write = target.writable.write.bind(target.writable);
    target.writable.write = ((c: Buffer, ...rest: never[]) => {
      seen.push(c);
      return write(c, ...rest);
    }) as typeof target.writable.write;
    let tee: Promise<void> = Promise.resolve();
    await readMultipart(Readable.from(reads), boundary, (p) => {
      tee = teeInto(p.body, [target.writable]);
    });
    await tee;
    await finished(target.writable);
    expect(target.data().equals(payload)).toBe(true);
    // Every read wholly inside the part is handed on as it came (the last one holds the delimiter).
    const inside = reads.slice(2, -2);
    const same = inside.filter((r) => seen.some((c) => c.buffer === r.buffer && c.byteOffset === r.byteOffset && c.length === r.length));
    expect(same.length).toBe(inside.length);
  });
});

describe('backpressure', () => {
  test('a consumer that stops reading stops the reader after about a MiB; reading resumes with it', async () => {
    const boundary = 'bp';
    const payload = Buffer.alloc(16 * MiB, 5);
    const framed = body(boundary, [payload]);
    let pulled = 0;
    async function* source() {
      for (let i = 0; i < framed.length; i += 64 * 1024) {
        const chunk = framed.subarray(i, i + 64 * 1024);
        pulled += chunk.length;
        yield chunk;
      }
    }
    let part: MultipartPart | null = null;
    const done = readMultipart(source(), boundary, (p) => {
      part = p;
    });
    for (let i = 0; i < 100 && part === null; i++) await new Promise((r) => setTimeout(r, 50));
    expect(part).not.toBeNull();
    // Time for the reader to run ahead, if it would: nothing reads the part, so it must not.
    await new Promise((r) => setTimeout(r, 100));
    expect(pulled).toBeLessThan(3 * MiB);
    let received = 0;
    part!.body.on('data', (c: Buffer) => (received += c.length));
    await done;
    await new Promise((r) => setImmediate(r));
    expect(received).toBe(payload.length);
  });

  test('a part whose consumer gives up (destroys its body) does not hold back the next part', async () => {
    const boundary = 'gu';
    const framed = body(boundary, [Buffer.alloc(4 * MiB, 1), Buffer.from('second')]);
    const chunks: Buffer[] = [];
    for (let i = 0; i < framed.length; i += 64 * 1024) chunks.push(framed.subarray(i, i + 64 * 1024));
    const got: string[] = [];
    const count = await readMultipart(Readable.from(chunks), boundary, (p) => {
      if (p.index === 0) p.body.destroy();
      else p.body.on('data', (c: Buffer) => got.push(c.toString()));
    });
    expect(count).toBe(2);
    await new Promise((r) => setImmediate(r));
    expect(got.join('')).toBe('second');
  });
});

describe('teeInto from a part body', () => {
  const boundary = 'tee';

  test('a fast and a slow target both receive every byte, in order', async () => {
    const payload = Buffer.from(Array.from({ length: 3 * MiB }, (_, i) => (i * 7) & 0xff));
    const framed = body(boundary, [payload]);
    const chunks: Buffer[] = [];
    for (let i = 0; i < framed.length; i += 64 * 1024) chunks.push(framed.subarray(i, i + 64 * 1024));
    const fast = sink();
    const slow = sink(1);
    let tee: Promise<void> = Promise.resolve();
    await readMultipart(Readable.from(chunks), boundary, (p) => {
      tee = teeInto(p.body, [fast.writable, slow.writable]);
    });
    await tee;
    // The tee ends its targets; each then finishes writing what it holds.
    await Promise.all([finished(fast.writable), finished(slow.writable)]);
    expect(fast.data().equals(payload)).toBe(true);
    expect(slow.data().equals(payload)).toBe(true);
  });

  test('a target that fails is dropped; the other still gets everything', async () => {
    const payload = Buffer.alloc(2 * MiB, 4);
    const framed = body(boundary, [payload]);
    const chunks: Buffer[] = [];
    for (let i = 0; i < framed.length; i += 64 * 1024) chunks.push(framed.subarray(i, i + 64 * 1024));
    const good = sink();
    let writes = 0;
    const failing = new Writable({
      write(_c, _e, cb) {
        cb(++writes === 3 ? new Error('disk on fire') : null);
      },
    });
    failing.on('error', () => undefined);
    let tee: Promise<void> = Promise.resolve();
    await readMultipart(Readable.from(chunks), boundary, (p) => {
      tee = teeInto(p.body, [good.writable, failing]);
    });
    await tee;
    expect(failing.destroyed).toBe(true);
    expect(good.data().equals(payload)).toBe(true);
  });

  test('a request that breaks off mid-part rejects the tee and destroys the targets', async () => {
    const framed = body(boundary, [Buffer.alloc(2 * MiB, 4)]);
    async function* source() {
      yield framed.subarray(0, MiB);
      throw new Error('client went away');
    }
    const target = sink();
    let tee: Promise<void> = Promise.resolve();
    const reading = readMultipart(source(), boundary, (p) => {
      tee = teeInto(p.body, [target.writable]);
    });
    await expect(reading).rejects.toThrow('client went away');
    await expect(tee).rejects.toThrow('client went away');
    expect(target.writable.destroyed).toBe(true);
  });
});
