/**
 * A stored instance as Part 10 with its header rewritten: de-identified for researcher WADO-RS
 * instance retrieve (PS3.18 10.4; PS3.15 E.1 applied on the fly to the same stored bytes), or
 * with a data manager's identifier mask applied (src/dicomweb/identifier-mask.ts).
 *
 * Layout: a new File Meta Information (PS3.10 7.1: MediaStorageSOPInstanceUID as the rewritten
 * header says, our implementation UID and version), the rewritten header re-encoded, then the top-level
 * Pixel Data element with its value streamed UNCHANGED from the blob store by one ranged read:
 * the pixels are never held in memory, so a 2 GB instance streams. Encoding:
 * - Explicit VR Little Endian and every encapsulated Transfer Syntax (whose header is Explicit VR
 *   Little Endian, PS3.5 A.4) keep the stored Transfer Syntax and pixel bytes exactly;
 * - Implicit VR Little Endian and Explicit VR Big Endian are delivered as Explicit VR Little
 *   Endian (Big Endian pixel words swapped to Little Endian while streaming);
 * - Deflated Explicit VR Little Endian is inflated (the whole instance, as the deflate stream
 *   allows nothing else) and delivered as Explicit VR Little Endian.
 * Elements after Pixel Data (Digital Signatures, trailing padding) are dropped: the profile
 * removes signatures, and they would no longer verify.
 */
import { Readable } from 'node:stream';
import type { DeidContext } from '../privacy/privacy-types';
import type { BlobStore } from '../storage/blob-store';
import { buildFileMeta } from '../dicomweb/wado-rs';
import { convertToDicomJson } from './dicom-json';
import { encodeDicomJson, pairRawElements } from './deidentify-encode';
import { deidentifyDicomJson } from './deidentify-dataset';
import { readStoredDataSet, type StoredDataSet, type StoredPixelSource } from './pixel-source';
import { elementHeader } from './transcode-header';
import { TransferSyntaxUid } from './transfer-syntax';
import type { DicomJson, DicomJsonElement } from './types';
import type { RawElement } from './data-set-walker';

/** What deidentifyInstance needs of a stored instance (the fields of wado-index StoredInstance). */
export interface DeidInstanceSource extends StoredPixelSource {
  sopClassUID: string;
  sopInstanceUID: string;
  /** Blob size in bytes (bounds the ranged read of encapsulated pixel data). */
  size: number;
}

/** A de-identified header ready to stream: File Meta + data set bytes, and how the pixels follow. */
export interface DeidentifiedHeader {
  /** Preamble, File Meta and the de-identified data set, Explicit VR Little Endian. */
  prefix: Buffer;
  transferSyntaxUID: string;
  /** The de-identified data set as DICOM JSON (what the bytes encode). */
  dataset: DicomJson;
  stored: StoredDataSet;
}

const UNDEFINED = 0xffffffff;
const TAG_ITEM = 0xfffee000;
const TAG_SEQUENCE_DELIMITATION = 0xfffee0dd;
const SEQUENCE_END = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0x00, 0x00, 0x00, 0x00]);
const TAG_PIXEL_DATA = 0x7fe00010;
const TAG_BITS_ALLOCATED = 0x00280100;
const NATIVE_RECODED = new Set<string>([
  TransferSyntaxUid.ImplicitVRLittleEndian,
  TransferSyntaxUid.ExplicitVRBigEndian,
  TransferSyntaxUid.DeflatedExplicitVRLittleEndian,
]);

/** The Transfer Syntax a de-identified instance is delivered in (see the file comment). */
export function deidentifiedTransferSyntax(stored: string): string {
  return NATIVE_RECODED.has(stored) ? TransferSyntaxUid.ExplicitVRLittleEndian : stored;
}

/** Reads and de-identifies the header of a stored instance (PS3.15 E.1) and builds its File Meta (PS3.10 7.1). */
function deidentifyStoredHeader(blobs: BlobStore, instance: DeidInstanceSource, ctx: DeidContext): Promise<DeidentifiedHeader> {
  return rewriteStoredHeader(blobs, instance, (json) => deidentifyDicomJson(json, ctx), ctx.mapUid(instance.sopInstanceUID));
}

/** A header rewrite: the stored data set as DICOM JSON in, the one to deliver out (the input may be returned changed). */
export type HeaderRewrite = (dataset: DicomJson) => DicomJson;

/** Reads the header of a stored instance, rewrites it and builds its File Meta (with `sopInstanceUIDFallback` when the rewritten data set has no SOP Instance UID). */
async function rewriteStoredHeader(blobs: BlobStore, instance: DeidInstanceSource, rewrite: HeaderRewrite, sopInstanceUIDFallback: string): Promise<DeidentifiedHeader> {
  const stored = await readStoredDataSet(blobs, instance);
  const json = convertToDicomJson(stored.elements, stored.bytes);
  const raw = new Map<DicomJsonElement, RawElement>();
  pairRawElements(json, stored.elements, raw);
  const dataset = rewrite(json);
  const transferSyntaxUID = deidentifiedTransferSyntax(instance.transferSyntaxUID);
  const sopClassUID = firstString(dataset['00080016']) ?? instance.sopClassUID;
  const sopInstanceUID = firstString(dataset['00080018']) ?? sopInstanceUIDFallback;
  const meta = buildFileMeta({ sopClassUID, sopInstanceUID, transferSyntaxUID });
  return { prefix: Buffer.concat([meta, encodeDicomJson(dataset, { bytes: stored.bytes, raw })]), transferSyntaxUID, dataset, stored };
}

/** What a retrieve needs of a de-identified header: its bytes and how the Pixel Data follows. */
interface HeaderPlan {
  prefix: Buffer;
  pixel?: { tag: number; vr: string; valueOffset: number; length: number };
  /** The stored (inflated) header bytes, only kept when the pixels live in them (deflated data sets). */
  inlineBytes: Buffer | null;
}

/**
 * Recently de-identified headers (an OHIF viewer fetches the same instances again and again).
 * The key holds everything the output depends on: the content-addressed blob, the project, the
 * options, the patient's pseudonym and offset, and the mapped SOP Instance UID (which changes
 * with the UID key). Bounded in bytes; least recently used first out.
 */
const headerCache = new Map<string, HeaderPlan>();
let headerCacheBytes = 0;
const HEADER_CACHE_MAX_BYTES = 16 * 1024 * 1024;
const HEADER_CACHE_MAX_ENTRY = 256 * 1024;

/** Empties the de-identified header cache (tests; entries never go stale: the key covers every input). */
export function clearDeidentifiedHeaderCache(): void {
  headerCache.clear();
  headerCacheBytes = 0;
}

function deidCacheKey(instance: DeidInstanceSource, ctx: DeidContext): string {
  const o = ctx.options;
  const flags = [o.retainLongitudinalModifiedDates, o.retainPatientCharacteristics, o.retainDeviceIdentity, o.retainSafePrivate, o.cleanDescriptors].map(Number).join('');
  return JSON.stringify([instance.blobKey, instance.transferSyntaxUID, instance.pixelDataOffset, instance.headerLength, ctx.projectId, flags, ctx.patient.patientKey, ctx.patient.dateOffsetDays, ctx.mapUid(instance.sopInstanceUID)]);
}

async function headerPlan(key: string, instance: DeidInstanceSource, build: () => Promise<DeidentifiedHeader>): Promise<HeaderPlan> {
  const cached = headerCache.get(key);
  if (cached) {
    headerCache.delete(key); // re-inserted: most recently used
    headerCache.set(key, cached);
    return cached;
  }
  const header = await build();
  const pixel = header.stored.pixel;
  const inlineBytes = pixel && instance.pixelDataOffset === null ? header.stored.bytes : null;
  const plan: HeaderPlan = { prefix: header.prefix, pixel: pixel && { ...pixel, vr: pixel.length === UNDEFINED ? 'OB' : pixelVr(pixel, header.stored) }, inlineBytes };
  if (!inlineBytes && plan.prefix.length <= HEADER_CACHE_MAX_ENTRY) {
    headerCache.set(key, plan);
    headerCacheBytes += plan.prefix.length + key.length;
    for (const [k, v] of headerCache) {
      if (headerCacheBytes <= HEADER_CACHE_MAX_BYTES) break;
      headerCache.delete(k);
      headerCacheBytes -= v.prefix.length + k.length;
    }
  }
  return plan;
}

/**
 * Streams a stored instance de-identified for `ctx` as a Part 10 file (PS3.10 7; PS3.15 E.1):
 * `(blobs, instance, ctx) => Promise<Readable>`. The header is read and de-identified before the
 * stream is returned, so a missing blob or a damaged header fails here, not halfway through an
 * answer. The transfer syntax of the stream is `deidentifiedTransferSyntax(instance.transferSyntaxUID)`.
 */
export async function deidentifyInstance(blobs: BlobStore, instance: DeidInstanceSource, ctx: DeidContext): Promise<Readable> {
  return streamPlanned(blobs, instance, await headerPlan(deidCacheKey(instance, ctx), instance, () => deidentifyStoredHeader(blobs, instance, ctx)));
}

/**
 * Streams a stored instance as Part 10 with its header rewritten by `rewrite` (which keeps the
 * SOP Instance UID), as deidentifyInstance does. `rewriteKey` names the rewrite: equal keys must
 * mean equal output for the same stored header (the key of the header cache).
 */
export async function rewriteInstance(blobs: BlobStore, instance: DeidInstanceSource, rewrite: HeaderRewrite, rewriteKey: string): Promise<Readable> {
  const key = JSON.stringify([instance.blobKey, instance.transferSyntaxUID, instance.pixelDataOffset, instance.headerLength, rewriteKey]);
  return streamPlanned(blobs, instance, await headerPlan(key, instance, () => rewriteStoredHeader(blobs, instance, rewrite, instance.sopInstanceUID)));
}

async function streamPlanned(blobs: BlobStore, instance: DeidInstanceSource, header: HeaderPlan): Promise<Readable> {
  const pixel = header.pixel;
  if (!pixel) return Readable.from([header.prefix], { objectMode: false });
  const bytes = header.inlineBytes;
  const encapsulated = pixel.length === UNDEFINED;
  // The pixel stream is opened before answering, so a missing blob fails here, not mid-answer.
  let source: Readable;
  if (bytes) source = Readable.from([encapsulated ? bytes.subarray(pixel.valueOffset) : bytes.subarray(pixel.valueOffset, pixel.valueOffset + pixel.length)]);
  else if (encapsulated) source = await blobs.readRange(instance.blobKey, instance.pixelDataOffset!, instance.size - 1);
  else source = await blobs.readRange(instance.blobKey, instance.pixelDataOffset!, instance.pixelDataOffset! + pixel.length - 1);
  const bigEndian = instance.transferSyntaxUID === TransferSyntaxUid.ExplicitVRBigEndian;
  const word = bigEndian ? ({ OW: 2, OF: 4, OD: 8, OL: 4, OV: 8 } as Record<string, number>)[pixel.vr] ?? 1 : 1;
  const body = encapsulated ? encapsulatedBody(header.prefix, pixel.tag, source) : nativeBody(header.prefix, pixel.tag, pixel.vr, pixel.length, word, source);
  const out = Readable.from(body, { objectMode: false });
  out.once('close', () => source.destroy()); // also when the answer is discarded before it starts
  return out;
}

function firstString(el: DicomJsonElement | undefined): string | undefined {
  const v = el?.Value?.[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The explicit VR of native pixel data: as stored when explicit, else from Bits Allocated (PS3.5 8.2). */
function pixelVr(pixel: NonNullable<StoredDataSet['pixel']>, stored: StoredDataSet): string {
  if (pixel.tag === 0x7fe00008) return 'OF';
  if (pixel.tag === 0x7fe00009) return 'OD';
  if (pixel.vr === 'OB' || pixel.vr === 'OW') return pixel.vr;
  const bits = stored.elements.find((e) => e.tag === TAG_BITS_ALLOCATED);
  const bitsAllocated = bits && bits.length >= 2 ? (bits.littleEndian ? stored.bytes.readUInt16LE(bits.offset) : stored.bytes.readUInt16BE(bits.offset)) : 16;
  return bitsAllocated > 8 ? 'OW' : 'OB';
}

async function* nativeBody(prefix: Buffer, tag: number, vr: string, length: number, word: number, stream: Readable): AsyncGenerator<Buffer> {
  yield prefix;
  yield elementHeader(tag === TAG_PIXEL_DATA || tag === 0x7fe00008 || tag === 0x7fe00009 ? tag : TAG_PIXEL_DATA, vr, length + (length % 2));
  let carry: Buffer = Buffer.alloc(0);
  let sent = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (word === 1) {
        sent += chunk.length;
        yield chunk;
        continue;
      }
      // Big Endian: swap whole words only; a word split across chunks waits for its other half.
      const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
      const whole = data.length - (data.length % word);
      carry = Buffer.from(data.subarray(whole));
      if (whole) {
        sent += whole;
        yield swapWords(data.subarray(0, whole), word);
      }
    }
  } finally {
    stream.destroy();
  }
  if (carry.length) {
    sent += carry.length;
    yield carry;
  }
  if (sent !== length) throw new Error(`stored pixel data ended after ${sent} of ${length} bytes`);
  if (length % 2) yield Buffer.alloc(1);
}

/**
 * Encapsulated Pixel Data (PS3.5 A.4): the item headers and fragments are passed through as
 * stored, and the stream stops at the Sequence Delimitation Item, so anything stored after it
 * (signatures, padding) is never sent.
 */
async function* encapsulatedBody(prefix: Buffer, tag: number, stream: Readable): AsyncGenerator<Buffer> {
  yield prefix;
  yield elementHeader(tag, 'OB', UNDEFINED);
  let pending: Buffer = Buffer.alloc(0);
  let remaining = 0;
  let done = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let pos = 0;
      while (pos < chunk.length && !done) {
        if (remaining > 0) {
          const n = Math.min(remaining, chunk.length - pos);
          yield chunk.subarray(pos, pos + n);
          pos += n;
          remaining -= n;
          continue;
        }
        const take = chunk.subarray(pos, pos + 8 - pending.length);
        pending = pending.length ? Buffer.concat([pending, take]) : Buffer.from(take);
        pos += take.length;
        if (pending.length < 8) break;
        const itemTag = ((pending.readUInt16LE(0) << 16) | pending.readUInt16LE(2)) >>> 0;
        const length = pending.readUInt32LE(4);
        if (itemTag === TAG_ITEM && length !== UNDEFINED) {
          yield pending;
          remaining = length;
        } else if (itemTag === TAG_SEQUENCE_DELIMITATION) {
          done = true;
        } else {
          throw new Error(`stored encapsulated pixel data is malformed: found (${itemTag.toString(16)}) where an item was expected`);
        }
        pending = Buffer.alloc(0);
      }
      if (done) break;
    }
  } finally {
    stream.destroy();
  }
  if (remaining > 0 || pending.length > 0) throw new Error('stored encapsulated pixel data is truncated');
  yield SEQUENCE_END;
}

function swapWords(value: Buffer, word: number): Buffer {
  const out = Buffer.from(value);
  for (let at = 0; at + word <= out.length; at += word) out.subarray(at, at + word).reverse();
  return out;
}
