import { Readable } from 'node:stream';
import { readMultipart, MultipartError } from '../../../src/dicomweb/multipart';
import { parseMediaType } from '../../../src/dicomweb/media-type';

async function collect(body: Buffer, boundary: string, chunkSize: number) {
  const chunks: Buffer[] = [];
  for (let i = 0; i < body.length; i += chunkSize) chunks.push(body.subarray(i, i + chunkSize));
  const parts: Array<{ headers: Record<string, string>; data: Promise<Buffer> }> = [];
  const count = await readMultipart(Readable.from(chunks), boundary, (p) => {
    const data = (async () => {
      const out: Buffer[] = [];
      for await (const c of p.body) out.push(c as Buffer);
      return Buffer.concat(out);
    })();
    data.catch(() => undefined); // a failed body is reported by readMultipart itself
    parts.push({ headers: p.headers, data });
  });
  return { count, parts: await Promise.all(parts.map(async (p) => ({ headers: p.headers, data: await p.data }))) };
}

describe('readMultipart (RFC 2046 5.1.1)', () => {
  const a = Buffer.from('first part \r\n--notboundary\r\n bytes');
  const b = Buffer.alloc(70000, 7);
  const body = Buffer.concat([
    Buffer.from('preamble to ignore\r\n--BOUND\r\nContent-Type: application/dicom\r\nX-Extra:  v \r\n\r\n'),
    a,
    Buffer.from('\r\n--BOUND  \r\ncontent-type: application/dicom\r\n\r\n'),
    b,
    Buffer.from('\r\n--BOUND--\r\nepilogue'),
  ]);

  test.each([1, 3, 13, 64, 4096, 1 << 20])('splits parts exactly with %i-byte chunks', async (size) => {
    const { count, parts } = await collect(body, 'BOUND', size);
    expect(count).toBe(2);
    expect(parts[0].data.equals(a)).toBe(true);
    expect(parts[0].headers['x-extra']).toBe('v');
    expect(parts[1].headers['content-type']).toBe('application/dicom');
    expect(parts[1].data.equals(b)).toBe(true);
  });

  test('a part without headers is accepted', async () => {
    const { parts } = await collect(Buffer.from('--q\r\n\r\nabc\r\n--q--'), 'q', 2);
    expect(parts[0].data.toString()).toBe('abc');
    expect(parts[0].headers).toEqual({});
  });

  test('rejects a body without the closing delimiter', async () => {
    await expect(collect(Buffer.from('--q\r\n\r\nabc'), 'q', 4)).rejects.toBeInstanceOf(MultipartError);
  });

  test('rejects a body that never contains the boundary', async () => {
    await expect(collect(Buffer.from('nothing here'), 'q', 4)).rejects.toThrow(/no multipart boundary/);
  });
});

describe('parseMediaType', () => {
  test('quoted and unquoted parameters, any case', () => {
    expect(parseMediaType('Multipart/Related; TYPE="application/dicom"; Boundary=abc')).toEqual({
      type: 'multipart/related',
      params: { type: 'application/dicom', boundary: 'abc' },
    });
    expect(parseMediaType('multipart/related;type=application/dicom;boundary="a;b"')?.params.boundary).toBe('a;b');
  });

  test('null for garbage', () => {
    expect(parseMediaType('not a type')).toBeNull();
    expect(parseMediaType(undefined)).toBeNull();
  });
});
