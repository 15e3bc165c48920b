/**
 * Reading what pixel work needs from a stored instance: a frame's bytes by ranged reads of the
 * locations recorded at ingest, and the encoded header (for values kept as bulk data, such as
 * palette tables, and for transcoding). Deflated data sets (PS3.5 A.5) are the slow path: the
 * whole instance is inflated.
 */
import { inflateRawSync } from 'node:zlib';
import type { Readable } from 'node:stream';
import type { BlobStore } from '../storage/blob-store';
import { DataSetWalker, type RawElement } from './data-set-walker';
import { PixelDecodeError, PixelSyntax, type PixelAttributes } from './pixel-frame';
import { describeTransferSyntax, EXPLICIT_LITTLE, type DataSetEncoding } from './transfer-syntax';
import type { ByteRange, FrameLocation } from './types';

/** Where an instance's bytes are, as the index records them. */
export interface StoredPixelSource {
  blobKey: string;
  transferSyntaxUID: string;
  hasFileMeta: boolean;
  /** Offset of the top-level Pixel Data tag (or the end of the stream when there is none). */
  headerLength: number;
  /** Offset of the Pixel Data value, null without pixel data (or for a deflated data set). */
  pixelDataOffset: number | null;
}

/** A parsed header: its bytes, top-level elements (File Meta excluded) and the Pixel Data element, if reached. */
export interface StoredDataSet {
  bytes: Buffer;
  elements: RawElement[];
  encoding: DataSetEncoding;
  pixel?: { tag: number; vr: string; valueOffset: number; length: number };
}

const WALK_LIMITS = { maxDepth: 64, maxElements: 5_000_000 };

/** Gaps up to this size between a frame's fragments are read through rather than split into several requests. */
const MERGE_GAP = 64 * 1024;

/** A stream's bytes in one buffer; the stream is destroyed afterwards. */
export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks);
}

/** True for a Deflated Explicit VR Little Endian instance, whose data set is one deflate stream. */
export function isDeflatedDataSet(transferSyntaxUID: string): boolean {
  return transferSyntaxUID === PixelSyntax.DeflatedExplicitVRLittleEndian;
}

/**
 * Reads and walks the header: bytes [0, Pixel Data value) by one ranged read, so the walk ends at
 * the Pixel Data element; a deflated instance is read whole and inflated.
 */
export async function readStoredDataSet(blobs: BlobStore, src: StoredPixelSource): Promise<StoredDataSet> {
  if (isDeflatedDataSet(src.transferSyntaxUID)) {
    const whole = await collect(await blobs.read(src.blobKey));
    const meta = new DataSetWalker(src.hasFileMeta ? 132 : 0, EXPLICIT_LITTLE, WALK_LIMITS, { metaOnly: true });
    const outcome = meta.walk(whole, whole.length);
    if (outcome.kind !== 'meta-end') throw new PixelDecodeError('deflated instance without a complete File Meta Information group');
    let bytes: Buffer;
    try {
      bytes = inflateRawSync(whole.subarray(meta.pos));
    } catch (err) {
      throw new PixelDecodeError(`deflated data set cannot be inflated: ${(err as Error).message}`, err);
    }
    return walkDataSet(bytes, false, EXPLICIT_LITTLE);
  }
  const end = src.pixelDataOffset ?? src.headerLength;
  const bytes = end > 0 ? await collect(await blobs.readRange(src.blobKey, 0, end - 1)) : Buffer.alloc(0);
  return walkDataSet(bytes, src.hasFileMeta, describeTransferSyntax(src.transferSyntaxUID).encoding);
}

/** Walks File Meta (when present, PS3.10 7.1) and then the data set, stopping at the top-level Pixel Data. */
export function walkDataSet(bytes: Buffer, hasFileMeta: boolean, encoding: DataSetEncoding): StoredDataSet {
  let walker: DataSetWalker;
  let outcome;
  if (hasFileMeta) {
    walker = new DataSetWalker(132, EXPLICIT_LITTLE, WALK_LIMITS, { metaOnly: true });
    outcome = walker.walk(bytes, bytes.length);
    if (outcome.kind !== 'meta-end') throw new PixelDecodeError('stored header ends inside its File Meta Information');
    walker.beginDataSet(encoding);
  } else {
    walker = new DataSetWalker(0, encoding, WALK_LIMITS);
  }
  outcome = walker.walk(bytes, bytes.length);
  const elements = walker.elements.filter((e) => e.tag >>> 16 !== 0x0002);
  const result: StoredDataSet = { bytes, elements, encoding };
  if (outcome.kind === 'pixel-data') {
    const h = outcome.header;
    result.pixel = { tag: h.tag, vr: h.vr, valueOffset: h.valueOffset, length: h.length };
  }
  return result;
}

/** The value bytes of a top-level element (as encoded: Big Endian words stay swapped), or undefined. */
export function elementValue(ds: StoredDataSet, tag: number): Buffer | undefined {
  const e = ds.elements.find((x) => x.tag === tag);
  if (!e || e.items || e.fragments || e.offset + e.length > ds.bytes.length) return undefined;
  return ds.bytes.subarray(e.offset, e.offset + e.length);
}

/**
 * The stored bytes of frame `frameNumber` (1-based): its recorded byte ranges joined (neighbouring
 * ranges in one read); for frames the index could not locate, Bits Allocated 1 frames are cut out
 * bit-exactly and deflated data sets are inflated. `totalFrames` is the instance's frame count.
 */
export async function readFrameBytes(
  blobs: BlobStore,
  src: StoredPixelSource,
  attributes: PixelAttributes,
  frameNumber: number,
  location: FrameLocation,
): Promise<Buffer> {
  if (location && location.length > 0) return readRanges(blobs, src.blobKey, location);
  const frameBits = attributes.rows * attributes.columns * attributes.samplesPerPixel * attributes.bitsAllocated;
  if (isDeflatedDataSet(src.transferSyntaxUID)) {
    const ds = await readStoredDataSet(blobs, src);
    if (!ds.pixel || ds.pixel.length === 0xffffffff) throw new PixelDecodeError('deflated instance has no native Pixel Data');
    const value = ds.bytes.subarray(ds.pixel.valueOffset, ds.pixel.valueOffset + ds.pixel.length);
    return extractBits(value, (frameNumber - 1) * frameBits, frameBits);
  }
  if (attributes.bitsAllocated === 1 && src.pixelDataOffset !== null) {
    const firstBit = (frameNumber - 1) * frameBits;
    const startByte = Math.floor(firstBit / 8);
    const endByte = Math.ceil((firstBit + frameBits) / 8) - 1;
    const bytes = await collect(await blobs.readRange(src.blobKey, src.pixelDataOffset + startByte, src.pixelDataOffset + endByte));
    return extractBits(bytes, firstBit % 8, frameBits);
  }
  throw new PixelDecodeError(`frame ${frameNumber} cannot be located in the stored instance`);
}

/** Bits [firstBit, firstBit + count) of `bytes` (PS3.5 8.1.1: least significant bit first), re-aligned to bit 0. */
export function extractBits(bytes: Buffer, firstBit: number, count: number): Buffer {
  const skip = firstBit >> 3;
  const shift = firstBit & 7;
  const out = Buffer.alloc(Math.ceil(count / 8));
  for (let i = 0; i < out.length; i++) {
    const lo = bytes[skip + i] ?? 0;
    const hi = bytes[skip + i + 1] ?? 0;
    out[i] = shift === 0 ? lo : ((lo >> shift) | (hi << (8 - shift))) & 0xff;
  }
  const spare = out.length * 8 - count;
  if (spare > 0) out[out.length - 1] &= 0xff >> spare;
  return out;
}

/** Reads byte ranges of a blob and joins them; ranges closer than MERGE_GAP share one request. */
export async function readRanges(blobs: BlobStore, key: string, ranges: ByteRange[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  let i = 0;
  while (i < ranges.length) {
    let j = i + 1;
    let end = ranges[i].offset + ranges[i].length;
    while (j < ranges.length && ranges[j].offset >= end && ranges[j].offset - end <= MERGE_GAP) {
      end = ranges[j].offset + ranges[j].length;
      j++;
    }
    const start = ranges[i].offset;
    const span = end > start ? await collect(await blobs.readRange(key, start, end - 1)) : Buffer.alloc(0);
    for (let k = i; k < j; k++) {
      const from = ranges[k].offset - start;
      if (from + ranges[k].length > span.length) throw new PixelDecodeError(`blob ${key} ends before the recorded frame bytes`);
      parts.push(span.subarray(from, from + ranges[k].length));
    }
    i = j;
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}
