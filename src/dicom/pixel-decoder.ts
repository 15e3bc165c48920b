/**
 * Decodes one frame, given its bytes (read by ranges from the blob) and the instance's Image
 * Pixel attributes, into native pixels (see DecodedFrame). One entry point for every Transfer
 * Syntax the server can decode; anything else is an UnsupportedTransferSyntaxError (406).
 *
 * | syntax | decoder |
 * |---|---|
 * | Implicit / Explicit VR LE, Encapsulated Uncompressed (.98), Deflated data set (.99, inflated upstream) | none: the bytes are the pixels |
 * | Explicit VR Big Endian | byte swap per sample (PS3.5 A.3) |
 * | Deflated Image Frame Compression (1.2.840.10008.1.2.8.1) | node:zlib, raw deflate per frame |
 * | RLE Lossless | our own (PS3.5 Annex G), codecs/rle.ts |
 * | JPEG Baseline / Extended, 8-bit | libjpeg-turbo (WASM) |
 * | JPEG Extended, 12-bit | our own sequential DCT decoder, codecs/jpeg-dct.ts |
 * | JPEG Lossless (Process 14, SV1) | jpeg-lossless-decoder-js |
 * | JPEG-LS lossless / near-lossless | CharLS (WASM) |
 * | JPEG 2000 lossless / lossy | OpenJPEG (WASM) |
 * | HTJ2K (.201, .202, .203) | OpenJPH (WASM) |
 */
import { inflateRawSync, inflateSync } from 'node:zlib';
import { decodeJpegDct, JpegUnsupportedError } from './codecs/jpeg-dct';
import { decodeJpegLossless } from './codecs/jpeg-lossless';
import { decodeRleFrame } from './codecs/rle';
import { decodeWithWasm, type WasmCodecName, type WasmDecodeResult } from './codecs/wasm-codecs';
import {
  assertDecodableAttributes,
  nativeFrameLength,
  PixelDecodeError,
  PixelSyntax,
  UnsupportedTransferSyntaxError,
  type DecodedFrame,
  type PixelAttributes,
} from './pixel-frame';

const LITTLE_ENDIAN_NATIVE = new Set<string>([
  PixelSyntax.ImplicitVRLittleEndian,
  PixelSyntax.ExplicitVRLittleEndian,
  PixelSyntax.EncapsulatedUncompressed,
  PixelSyntax.DeflatedExplicitVRLittleEndian,
]);
const JPEG_DCT = new Set<string>([PixelSyntax.JpegBaseline, PixelSyntax.JpegExtended]);
const JPEG_LOSSLESS = new Set<string>([PixelSyntax.JpegLossless, PixelSyntax.JpegLosslessSV1]);
const JPEG_LS = new Set<string>([PixelSyntax.JpegLsLossless, PixelSyntax.JpegLsNearLossless]);
const JPEG_2000 = new Set<string>([PixelSyntax.Jpeg2000Lossless, PixelSyntax.Jpeg2000]);
const HTJ2K = new Set<string>([PixelSyntax.Htj2kLossless, PixelSyntax.Htj2kLosslessRpcl, PixelSyntax.Htj2k]);

/** Every Transfer Syntax `decodeFrame` accepts. */
export const DECODABLE_TRANSFER_SYNTAXES: ReadonlySet<string> = new Set<string>([
  ...LITTLE_ENDIAN_NATIVE,
  PixelSyntax.ExplicitVRBigEndian,
  PixelSyntax.DeflatedImageFrame,
  PixelSyntax.RleLossless,
  ...JPEG_DCT,
  ...JPEG_LOSSLESS,
  ...JPEG_LS,
  ...JPEG_2000,
  ...HTJ2K,
]);

/** True when frames of this Transfer Syntax can be decoded (cheap, no I/O). */
export function canDecodeTransferSyntax(uid: string): boolean {
  return DECODABLE_TRANSFER_SYNTAXES.has(uid);
}

/** True for syntaxes whose stored frame bytes already are native pixels (maybe byte-swapped). */
export function isNativeTransferSyntax(uid: string): boolean {
  return LITTLE_ENDIAN_NATIVE.has(uid) || uid === PixelSyntax.ExplicitVRBigEndian;
}

/**
 * Decodes one frame to native little-endian pixels (see DecodedFrame: compressed frames come out
 * color-by-pixel, native ones keep their planar configuration). CPU-bound on the calling thread.
 * Throws UnsupportedTransferSyntaxError (-> 406) or PixelDecodeError (damaged data).
 */
export async function decodeFrame(frame: Buffer, transferSyntaxUID: string, attributes: PixelAttributes): Promise<DecodedFrame> {
  if (!canDecodeTransferSyntax(transferSyntaxUID)) throw new UnsupportedTransferSyntaxError(transferSyntaxUID);
  assertDecodableAttributes(attributes);
  const a = attributes;
  if (LITTLE_ENDIAN_NATIVE.has(transferSyntaxUID)) return nativeResult(frame, a);
  if (transferSyntaxUID === PixelSyntax.ExplicitVRBigEndian) return nativeResult(swapSamples(frame, a.bitsAllocated), a);
  if (transferSyntaxUID === PixelSyntax.DeflatedImageFrame) return nativeResult(inflateFrame(frame), a);
  if (transferSyntaxUID === PixelSyntax.RleLossless) {
    // RLE carries each sample plane separately; the result is color-by-pixel whatever the header said (G.2).
    return { data: decodeRleFrame(frame, a), attributes: { ...a, planarConfiguration: 0 } };
  }
  if (a.bitsAllocated === 1) throw new PixelDecodeError(`${transferSyntaxUID} frames with 1 bit allocated are not defined`);
  if (JPEG_DCT.has(transferSyntaxUID) || JPEG_LOSSLESS.has(transferSyntaxUID)) {
    // The stream's own SOF marker decides, not the label: some writers put a baseline stream
    // under a lossless Transfer Syntax (e.g. the dcmjs OP sample), and decoders agree to follow the data.
    const sof = readJpegFrameHeader(frame);
    if (sof.marker === 0xc3) return decodeLosslessFrame(frame, transferSyntaxUID, a);
    if (sof.marker === 0xc0 || sof.marker === 0xc1 || sof.marker === 0xc2) return decodeJpegFrame(frame, transferSyntaxUID, a, sof.precision);
    throw new UnsupportedTransferSyntaxError(transferSyntaxUID, `JPEG process with SOF marker FF${sof.marker.toString(16).toUpperCase()} is not supported`);
  }
  if (JPEG_LS.has(transferSyntaxUID)) return fromWasm('charls', frame, transferSyntaxUID, a);
  if (JPEG_2000.has(transferSyntaxUID)) return fromWasm('openjpeg', frame, transferSyntaxUID, a);
  return fromWasm('openjph', frame, transferSyntaxUID, a);
}

function nativeResult(data: Buffer, a: PixelAttributes): DecodedFrame {
  // Native YBR_FULL_422 holds two bytes per pixel (Y1 Y2 Cb Cr per pair, PS3.3 C.7.6.3.1.2).
  const subsampled = a.photometricInterpretation === 'YBR_FULL_422' && a.bitsAllocated === 8 && a.samplesPerPixel === 3;
  const expected = subsampled ? a.rows * a.columns * 2 : nativeFrameLength(a);
  if (data.length < expected) throw new PixelDecodeError(`frame holds ${data.length} bytes, ${expected} expected`);
  return { data: data.length === expected ? data : data.subarray(0, expected), attributes: { ...a } };
}

/** Big Endian samples to Little Endian (PS3.5 A.3): bytes reversed within each sample of bitsAllocated > 8. */
export function swapSamples(data: Buffer, bitsAllocated: number): Buffer {
  const word = bitsAllocated > 8 ? Math.ceil(bitsAllocated / 8) : 1;
  if (word === 1) return data;
  const out = Buffer.from(data);
  if (word === 2) out.swap16();
  else if (word === 4) out.swap32();
  else for (let at = 0; at + word <= out.length; at += word) out.subarray(at, at + word).reverse();
  return out;
}

/** Deflated Image Frame Compression: each frame is a raw deflate stream (RFC 1951); a zlib wrapper (RFC 1950) is tolerated. */
function inflateFrame(frame: Buffer): Buffer {
  try {
    return inflateRawSync(frame);
  } catch (rawError) {
    try {
      return inflateSync(frame);
    } catch {
      throw new PixelDecodeError(`deflated frame cannot be inflated: ${(rawError as Error).message}`, rawError);
    }
  }
}

function decodeLosslessFrame(frame: Buffer, ts: string, a: PixelAttributes): DecodedFrame {
  const out = decodeJpegLossless(frame, a.bitsAllocated);
  checkGeometry(ts, a, out.width, out.height, out.components);
  const data = fitSampleWidth(out.data, out.width * out.height * out.components, a.bitsAllocated <= 8 ? 1 : 2, a.bitsAllocated);
  return { data, attributes: { ...a, planarConfiguration: 0 } };
}

/** 8-bit DCT JPEG (baseline, extended, progressive) through libjpeg-turbo, which returns RGB for YCbCr color; 12-bit through our DCT decoder. */
async function decodeJpegFrame(frame: Buffer, ts: string, a: PixelAttributes, precision: number): Promise<DecodedFrame> {
  if (precision === 8) {
    const out = await runWasm('libjpeg-turbo', frame, ts);
    checkGeometry(ts, a, out.width, out.height, out.componentCount);
    const data = fitSampleWidth(out.data, out.width * out.height * out.componentCount, 1, a.bitsAllocated);
    // libjpeg-turbo converts YCbCr to RGB for 3-component streams (its default output colour space).
    const photometric = out.componentCount === 3 ? 'RGB' : a.photometricInterpretation;
    return { data, attributes: { ...a, photometricInterpretation: photometric, planarConfiguration: 0 } };
  }
  let image;
  try {
    image = decodeJpegDct(frame);
  } catch (err) {
    if (err instanceof JpegUnsupportedError) throw new UnsupportedTransferSyntaxError(ts, err.message);
    throw new PixelDecodeError(`JPEG stream cannot be decoded: ${(err as Error).message}`, err);
  }
  checkGeometry(ts, a, image.width, image.height, image.components);
  const data = Buffer.alloc(image.samples.length * (a.bitsAllocated <= 8 ? 1 : 2));
  if (a.bitsAllocated <= 8) for (let i = 0; i < image.samples.length; i++) data[i] = image.samples[i];
  else for (let i = 0; i < image.samples.length; i++) data.writeUInt16LE(image.samples[i], 2 * i);
  return { data: fitSampleWidth(data, image.samples.length, a.bitsAllocated <= 8 ? 1 : 2, a.bitsAllocated), attributes: { ...a, planarConfiguration: 0 } };
}

/** The first SOF marker of a JPEG stream (FFC0-FFCF except DHT, JPG, DAC) and its sample precision. */
export function readJpegFrameHeader(frame: Buffer): { marker: number; precision: number } {
  let pos = 2;
  while (pos + 4 < frame.length) {
    if (frame[pos] !== 0xff) break;
    const marker = frame[pos + 1];
    if (marker === 0xff) {
      pos++;
      continue;
    }
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return { marker, precision: frame[pos + 4] };
    if (marker === 0xda) break;
    pos += 2 + frame.readUInt16BE(pos + 2);
  }
  throw new PixelDecodeError('JPEG stream without a frame header (SOF marker)');
}

async function runWasm(name: WasmCodecName, frame: Buffer, ts: string): Promise<WasmDecodeResult> {
  try {
    return await decodeWithWasm(name, frame);
  } catch (err) {
    const message = typeof err === 'number' ? `codec error ${err}` : String((err as Error)?.message ?? err);
    throw new PixelDecodeError(`${ts} frame cannot be decoded by ${name}: ${message}`, err);
  }
}

async function fromWasm(name: WasmCodecName, frame: Buffer, ts: string, a: PixelAttributes): Promise<DecodedFrame> {
  const out = await runWasm(name, frame, ts);
  checkGeometry(ts, a, out.width, out.height, out.componentCount);
  const bytes = out.bitsPerSample <= 8 ? 1 : 2;
  let data = fitSampleWidth(out.data, out.width * out.height * out.componentCount, bytes, a.bitsAllocated);
  if (name === 'charls' && out.componentCount > 1 && out.interleaveMode === 0) {
    // JPEG-LS "none" interleave decodes to one plane after another: make it color-by-pixel.
    data = interleavePlanes(data, out.width * out.height, out.componentCount, a.bitsAllocated <= 8 ? 1 : 2);
  }
  let photometric = a.photometricInterpretation;
  // JPEG 2000 decoders undo the reversible / irreversible component transform (PS3.5 A.4.4, 8.2.4).
  if (name !== 'charls' && out.componentCount === 3 && (photometric === 'YBR_RCT' || photometric === 'YBR_ICT')) photometric = 'RGB';
  return { data, attributes: { ...a, photometricInterpretation: photometric, planarConfiguration: 0 } };
}

function checkGeometry(ts: string, a: PixelAttributes, width: number, height: number, components: number): void {
  if (width !== a.columns || height !== a.rows || components !== a.samplesPerPixel) {
    throw new PixelDecodeError(
      `${ts} frame decodes to ${width}x${height}x${components}, the header says ${a.columns}x${a.rows}x${a.samplesPerPixel}`,
    );
  }
}

/** Re-packs `count` samples of `have` bytes into the bytes of `bitsAllocated` (8 -> 16 widening, 16 -> 8 narrowing). */
function fitSampleWidth(data: Buffer, count: number, have: number, bitsAllocated: number): Buffer {
  const want = bitsAllocated <= 8 ? 1 : bitsAllocated <= 16 ? 2 : 4;
  if (have === want) return data.length === count * want ? data : data.subarray(0, count * want);
  const out = Buffer.alloc(count * want);
  for (let i = 0; i < count; i++) {
    const v = have === 1 ? data[i] : data.readUInt16LE(2 * i);
    if (want === 1) out[i] = v & 0xff;
    else if (want === 2) out.writeUInt16LE(v, 2 * i);
    else out.writeUInt32LE(v, 4 * i);
  }
  return out;
}

function interleavePlanes(data: Buffer, pixels: number, planes: number, bytes: number): Buffer {
  const out = Buffer.alloc(data.length);
  for (let p = 0; p < planes; p++) {
    for (let i = 0; i < pixels; i++) {
      const from = (p * pixels + i) * bytes;
      const to = (i * planes + p) * bytes;
      for (let b = 0; b < bytes; b++) out[to + b] = data[from + b];
    }
  }
  return out;
}
