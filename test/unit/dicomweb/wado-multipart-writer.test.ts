import { PassThrough, Writable } from 'node:stream';
import { readMultipart } from '../../../src/dicomweb/multipart';
import { ClientGoneError, closingLength, MAX_QUEUED_BYTES, MultipartWriter, partOverhead, writeWithBackpressure } from '../../../src/dicomweb/multipart-writer';

async function* chunks(...parts: string[]): AsyncGenerator<Buffer> {
  for (const p of parts) yield Buffer.from(p);
}

describe('MultipartWriter (RFC 2387, PS3.18 8.7.1.2)', () => {
  test('writes parts that the STOW multipart reader reads back', async () => {
    const out = new PassThrough();
    const writer = new MultipartWriter(out);
    const done = (async () => {
      await writer.writePart({ 'Content-Type': 'application/dicom' }, Buffer.from('first'));
      await writer.writePart({ 'Content-Type': 'application/dicom' }, chunks('sec', 'ond'));
      await writer.end();
    })();
    const parts: Array<Promise<string>> = [];
    const headers: string[] = [];
    await readMultipart(out, writer.boundary, (part) => {
      headers.push(part.headers['content-type']);
      parts.push((async () => Buffer.concat(await part.body.toArray()).toString())());
    });
    await done;
    expect(await Promise.all(parts)).toEqual(['first', 'second']);
    expect(headers).toEqual(['application/dicom', 'application/dicom']);
  });

  test('each chunk of a streamed body is handed to `written` once its write has completed, the part head and trailer are not', async () => {
    const completed: Buffer[] = [];
    const writes: Array<() => void> = [];
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        writes.push(() => {
          completed.push(chunk);
          cb();
        });
      },
    });
    const a = Buffer.from('first chunk');
    const b = Buffer.from('second chunk');
    const handed: Buffer[] = [];
    const writer = new MultipartWriter(slow);
    const done = writer.writePart({ 'Content-Type': 'application/dicom' }, (async function* () {
      yield a;
      yield b;
    })(), (chunk) => {
      expect(completed).toContain(chunk); // never before its write completed
      handed.push(chunk);
    });
    for (let i = 0; i < 20 && !(writes.length === 0 && handed.length === 2); i++) {
      await new Promise((r) => setImmediate(r));
      writes.splice(0).forEach((w) => w());
    }
    await done;
    expect(handed).toEqual([a, b]);
  });

  test('a chunk whose write fails is not handed to `written`', async () => {
    const failing = new Writable({
      write(_chunk, _enc, cb) {
        cb(new Error('socket reset'));
      },
    });
    failing.on('error', () => undefined);
    const handed: Buffer[] = [];
    await writeWithBackpressure(failing, Buffer.from('x'), 0, (c) => handed.push(c)).catch(() => undefined);
    await new Promise((r) => setImmediate(r));
    expect(handed).toEqual([]);
  });

  test('partOverhead and closingLength predict the body size exactly', async () => {
    const out = new PassThrough();
    const writer = new MultipartWriter(out);
    const headers = { 'Content-Type': 'application/octet-stream', 'Content-Length': '3' };
    const collected = out.toArray();
    await writer.writePart(headers, Buffer.from('abc'));
    await writer.end();
    const body = Buffer.concat(await collected);
    expect(body.length).toBe(partOverhead(writer.boundary, headers) + 3 + closingLength(writer.boundary));
  });
});

describe('writeWithBackpressure', () => {
  test('waits for drain when the destination is full', async () => {
    let release: () => void = () => undefined;
    const slow = new Writable({
      highWaterMark: 4,
      write(_chunk, _enc, cb) {
        release = cb;
      },
    });
    let resolved = false;
    const pending = writeWithBackpressure(slow, Buffer.alloc(16)).then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    release();
    await pending;
    expect(resolved).toBe(true);
  });

  test('with a queue limit, small chunks queue up to it without waiting, then the writer waits', async () => {
    // A destination that accepts nothing: what the writer queues is all there is.
    const stuck = new Writable({ highWaterMark: 16, write() {} });
    const chunk = Buffer.alloc(34_000);
    let queued = 0;
    while (queued + chunk.length < MAX_QUEUED_BYTES) {
      await writeWithBackpressure(stuck, chunk, MAX_QUEUED_BYTES);
      queued += chunk.length;
    }
    let resolved = false;
    void writeWithBackpressure(stuck, chunk, MAX_QUEUED_BYTES).then(
      () => (resolved = true),
      () => undefined,
    );
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    expect(stuck.writableLength).toBeLessThan(MAX_QUEUED_BYTES + chunk.length);
    stuck.destroy();
  });

  test('rejects with ClientGoneError when the destination closes while waiting', async () => {
    const stuck = new Writable({ highWaterMark: 1, write() {} });
    const pending = writeWithBackpressure(stuck, Buffer.alloc(8));
    stuck.destroy();
    await expect(pending).rejects.toBeInstanceOf(ClientGoneError);
  });

  test('rejects at once on a destroyed destination', async () => {
    const gone = new PassThrough();
    gone.destroy();
    await expect(writeWithBackpressure(gone, Buffer.from('x'))).rejects.toBeInstanceOf(ClientGoneError);
  });
});
