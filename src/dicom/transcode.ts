/**
 * Transcoding a stored instance to Explicit VR Little Endian (1.2.840.10008.1.2.1) with native
 * pixel data, for WADO-RS retrieve with `transfer-syntax=1.2.840.10008.1.2.1` (PS3.18 8.7.3.5).
 *
 * The answer is a stream: File Meta + the re-encoded header first, then Pixel Data with a defined
 * length (known up front from the pixel attributes), then one decoded frame at a time, read by
 * ranged reads of the frame's recorded byte ranges. At most one frame is held decoded, so a
 * 500-frame volume costs one frame of memory; the stream honours backpressure.
 *
 * Header rewrite (PS3.5 8.2, A.4): Transfer Syntax UID in the File Meta; Photometric
 * Interpretation as the decoder delivers it (JPEG YCbCr and JPEG 2000 RCT/ICT become RGB);
 * Planar Configuration 0 for color; Extended Offset Table (7FE0,0001/0002) dropped; Pixel Data
 * OB (8 bits) or OW with a defined length; a compressed Icon Image Sequence dropped; Lossy
 * Image Compression (0028,2110) set to "01" when the stored syntax is lossy (PS3.3 C.7.6.1.1.5);
 * method and ratio attributes are kept as stored.
 */
import { Readable } from 'node:stream';
import type { BlobStore } from '../storage/blob-store';
import { buildFileMeta } from '../dicomweb/wado-rs';
import { canDecodeTransferSyntax, decodeFrame, swapSamples } from './pixel-decoder';
import {
  nativeFrameLength,
  PixelDecodeError,
  PixelSyntax,
  UnsupportedTransferSyntaxError,
  type DecodedFrame,
  type PixelAttributes,
} from './pixel-frame';
import { readFrameBytes, readStoredDataSet, type StoredDataSet, type StoredPixelSource } from './pixel-source';
import { elementHeader, encodeExplicitLittle, textValue, usValue, type HeaderEdits } from './transcode-header';
import type { FrameLocation } from './types';

/** A stored instance as the index describes it: where its bytes are, its pixel attributes and frame locations. */
export interface TranscodeSource extends StoredPixelSource {
  sopClassUID: string;
  sopInstanceUID: string;
  /** Image Pixel attributes as stored (null when the instance has no image). */
  pixel: PixelAttributes | null;
  /** Frame locations recorded at ingest (empty without pixel data). */
  frames: FrameLocation[];
}

const TAG_PHOTOMETRIC = 0x00280004;
const TAG_PLANAR = 0x00280006;
const TAG_EXTENDED_OFFSET_TABLE = 0x7fe00001;
const TAG_EXTENDED_OFFSET_TABLE_LENGTHS = 0x7fe00002;
const TAG_PIXEL_DATA = 0x7fe00010;
const TAG_LOSSY_IMAGE_COMPRESSION = 0x00282110;
/** Lossy syntaxes: pixels decoded from them are lossy for good (PS3.3 C.7.6.1.1.5: Lossy Image Compression "01"). */
const LOSSY_SYNTAXES = new Set<string>([
  PixelSyntax.JpegBaseline,
  PixelSyntax.JpegExtended,
  PixelSyntax.JpegLsNearLossless,
  PixelSyntax.Jpeg2000,
  PixelSyntax.Htj2k,
]);
const UNDEFINED = 0xffffffff;

/** True when `transcodeInstanceToExplicitLittleEndian` handles instances stored in `transferSyntaxUID`. */
export function canTranscodeToExplicitLittleEndian(transferSyntaxUID: string): boolean {
  return transferSyntaxUID !== PixelSyntax.ExplicitVRLittleEndian && canDecodeTransferSyntax(transferSyntaxUID);
}

/**
 * Streams `source` as a Part 10 file in Explicit VR Little Endian with native pixel data.
 * The header and the first frame are read and decoded before the stream is returned, so an
 * unsupported or damaged instance fails here (UnsupportedTransferSyntaxError, PixelDecodeError),
 * not halfway through an answer. Later frames that fail to decode end the stream with an error.
 */
export async function transcodeInstanceToExplicitLittleEndian(blobs: BlobStore, source: TranscodeSource): Promise<Readable> {
  const ts = source.transferSyntaxUID;
  if (!canDecodeTransferSyntax(ts)) throw new UnsupportedTransferSyntaxError(ts);
  const ds = await readStoredDataSet(blobs, source);
  const prefix = buildFileMeta({ sopClassUID: source.sopClassUID, sopInstanceUID: source.sopInstanceUID, transferSyntaxUID: PixelSyntax.ExplicitVRLittleEndian });
  const pixelRepresentation = source.pixel?.pixelRepresentation ?? 0;
  if (!ds.pixel) {
    // No pixel data: only the encoding changes.
    const header = encodeExplicitLittle(ds.elements, ds.bytes, { pixelRepresentation }, plainEdits());
    return Readable.from([prefix, header], { objectMode: false });
  }
  if (!source.pixel) throw new PixelDecodeError(`instance ${source.sopInstanceUID} has pixel data but no usable image pixel attributes`);
  if (ds.pixel.length !== UNDEFINED) return nativeStream(blobs, source, ds, prefix, source.pixel);
  return encapsulatedStream(blobs, source, ds, prefix, source.pixel);
}

function plainEdits(extra: Partial<HeaderEdits> = {}): HeaderEdits {
  return {
    set: extra.set ?? new Map(),
    drop: (tag) => tag === TAG_EXTENDED_OFFSET_TABLE || tag === TAG_EXTENDED_OFFSET_TABLE_LENGTHS || (extra.drop?.(tag) ?? false),
  };
}

/** Native source (Implicit LE, Big Endian, Deflated): the Pixel Data value is copied (byte-swapped for Big Endian) as one range. */
async function nativeStream(blobs: BlobStore, source: TranscodeSource, ds: StoredDataSet, prefix: Buffer, a: PixelAttributes): Promise<Readable> {
  const pixel = ds.pixel!;
  const header = encodeExplicitLittle(ds.elements, ds.bytes, { pixelRepresentation: a.pixelRepresentation }, plainEdits());
  const vr = pixel.tag === TAG_PIXEL_DATA ? (a.bitsAllocated > 8 ? 'OW' : 'OB') : pixel.tag === 0x7fe00008 ? 'OF' : 'OD';
  const word = pixel.tag === TAG_PIXEL_DATA ? (a.bitsAllocated > 8 ? Math.ceil(a.bitsAllocated / 8) : 1) : pixel.tag === 0x7fe00008 ? 4 : 8;
  const bigEndian = source.transferSyntaxUID === PixelSyntax.ExplicitVRBigEndian;
  const length = pixel.length + (pixel.length % 2);
  const inline = source.pixelDataOffset === null ? ds.bytes.subarray(pixel.valueOffset, pixel.valueOffset + pixel.length) : null;
  async function* body(): AsyncGenerator<Buffer> {
    yield prefix;
    yield header;
    yield elementHeader(pixel.tag, vr, length);
    if (inline) yield inline;
    else {
      const stream = await blobs.readRange(source.blobKey, source.pixelDataOffset!, source.pixelDataOffset! + pixel.length - 1);
      let carry = Buffer.alloc(0);
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          if (!bigEndian || word === 1) {
            yield chunk;
            continue;
          }
          // Swap whole samples only; a sample split across chunks waits for its other half.
          const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
          const whole = data.length - (data.length % word);
          carry = Buffer.from(data.subarray(whole));
          if (whole) yield swapSamples(data.subarray(0, whole), word * 8);
        }
      } finally {
        stream.destroy();
      }
      if (carry.length) yield carry;
    }
    if (pixel.length % 2) yield Buffer.alloc(1);
  }
  return Readable.from(body(), { objectMode: false });
}

/** Encapsulated source: each frame read by its ranges, decoded, and written as native pixels. */
async function encapsulatedStream(blobs: BlobStore, source: TranscodeSource, ds: StoredDataSet, prefix: Buffer, a: PixelAttributes): Promise<Readable> {
  const frames = source.frames;
  if (frames.length === 0) throw new PixelDecodeError(`instance ${source.sopInstanceUID} has no recorded frames`);
  if (frames.some((f) => f === null)) {
    throw new UnsupportedTransferSyntaxError(source.transferSyntaxUID, `the frames of instance ${source.sopInstanceUID} cannot be located, so it cannot be transcoded`);
  }
  const decodeAt = async (i: number): Promise<DecodedFrame> =>
    decodeFrame(await readFrameBytes(blobs, source, a, i + 1, frames[i]), source.transferSyntaxUID, a);
  let first: DecodedFrame | null = await decodeAt(0);
  const out = first.attributes;
  const frameLength = nativeFrameLength(out);
  if ((out.rows * out.columns * out.samplesPerPixel * out.bitsAllocated) % 8 !== 0 && frames.length > 1) {
    throw new UnsupportedTransferSyntaxError(source.transferSyntaxUID, 'frames of 1 bit that do not fill whole bytes cannot be concatenated');
  }
  const set = new Map<number, { vr: string; value: Buffer }>();
  set.set(TAG_PHOTOMETRIC, { vr: 'CS', value: textValue(out.photometricInterpretation, 'CS') });
  if (out.samplesPerPixel > 1) set.set(TAG_PLANAR, { vr: 'US', value: usValue(out.planarConfiguration) });
  if (LOSSY_SYNTAXES.has(source.transferSyntaxUID)) set.set(TAG_LOSSY_IMAGE_COMPRESSION, { vr: 'CS', value: textValue('01', 'CS') });
  const header = encodeExplicitLittle(ds.elements, ds.bytes, { pixelRepresentation: a.pixelRepresentation }, plainEdits({ set }));
  const total = frameLength * frames.length;
  const vr = out.bitsAllocated > 8 ? 'OW' : 'OB';
  async function* body(): AsyncGenerator<Buffer> {
    yield prefix;
    yield header;
    yield elementHeader(TAG_PIXEL_DATA, vr, total + (total % 2));
    for (let i = 0; i < frames.length; i++) {
      const decoded: DecodedFrame = first ?? (await decodeAt(i));
      first = null; // hold one decoded frame at a time
      if (decoded.data.length !== frameLength || decoded.attributes.photometricInterpretation !== out.photometricInterpretation) {
        throw new PixelDecodeError(`frame ${i + 1} of instance ${source.sopInstanceUID} decodes differently from frame 1`);
      }
      yield decoded.data;
    }
    if (total % 2) yield Buffer.alloc(1);
  }
  return Readable.from(body(), { objectMode: false });
}

