/**
 * Shapes shared by pixel decoding, rendering and transcoding: the Image Pixel attributes a
 * decoder needs (PS3.3 C.7.6.3) and what a decoded frame looks like.
 */

/** Transfer Syntax UIDs the pixel code names (PS3.6 Annex A). */
export const PixelSyntax = {
  ImplicitVRLittleEndian: '1.2.840.10008.1.2',
  ExplicitVRLittleEndian: '1.2.840.10008.1.2.1',
  EncapsulatedUncompressed: '1.2.840.10008.1.2.1.98',
  DeflatedExplicitVRLittleEndian: '1.2.840.10008.1.2.1.99',
  ExplicitVRBigEndian: '1.2.840.10008.1.2.2',
  JpegBaseline: '1.2.840.10008.1.2.4.50',
  JpegExtended: '1.2.840.10008.1.2.4.51',
  JpegLossless: '1.2.840.10008.1.2.4.57',
  JpegLosslessSV1: '1.2.840.10008.1.2.4.70',
  JpegLsLossless: '1.2.840.10008.1.2.4.80',
  JpegLsNearLossless: '1.2.840.10008.1.2.4.81',
  Jpeg2000Lossless: '1.2.840.10008.1.2.4.90',
  Jpeg2000: '1.2.840.10008.1.2.4.91',
  Htj2kLossless: '1.2.840.10008.1.2.4.201',
  Htj2kLosslessRpcl: '1.2.840.10008.1.2.4.202',
  Htj2k: '1.2.840.10008.1.2.4.203',
  RleLossless: '1.2.840.10008.1.2.5',
  DeflatedImageFrame: '1.2.840.10008.1.2.8.1',
} as const;

/** The Image Pixel Module attributes (PS3.3 C.7.6.3.1) that say how a frame's samples are laid out. */
export interface PixelAttributes {
  rows: number;
  columns: number;
  samplesPerPixel: number;
  bitsAllocated: number;
  bitsStored: number;
  /** 0 unsigned, 1 two's complement. */
  pixelRepresentation: number;
  /** 0 color-by-pixel (R1G1B1R2...), 1 color-by-plane; only meaningful when samplesPerPixel > 1. */
  planarConfiguration: number;
  photometricInterpretation: string;
  /** Float (32) or Double Float (64) Pixel Data (7FE0,0008 / 7FE0,0009): IEEE samples, no Bits Stored (PS3.3 C.7.6.24). */
  floatingPoint?: boolean;
}

/**
 * One frame as native pixels, exactly as Explicit VR Little Endian would carry it: samples of
 * `bitsAllocated` bits, little endian. Frames decoded from a compressed syntax are color-by-pixel
 * (planar configuration 0); native frames keep the layout they were stored in, and `attributes`
 * always say which. Bits Allocated 1 stays bit-packed (PS3.5 8.1.1). The photometric
 * interpretation is the one that fits the decoded bytes: a codec that converts color (JPEG
 * YCbCr, JPEG 2000 RCT/ICT) yields RGB.
 */
export interface DecodedFrame {
  data: Buffer;
  attributes: PixelAttributes;
}

/** The frame is in a Transfer Syntax this server cannot decode: WADO and rendered answer 406. */
export class UnsupportedTransferSyntaxError extends Error {
  constructor(
    readonly transferSyntaxUID: string,
    detail?: string,
  ) {
    super(`transfer syntax ${transferSyntaxUID} cannot be decoded${detail ? `: ${detail}` : ''}`);
    this.name = 'UnsupportedTransferSyntaxError';
  }
}

/** The frame's bytes or the pixel attributes are damaged or inconsistent (answered as 500 / part failure, never a crash). */
export class PixelDecodeError extends Error {
  constructor(message: string, override readonly cause?: unknown) {
    super(message);
    this.name = 'PixelDecodeError';
  }
}

/** Refuse a decoded frame larger than this: a header declaring 65535 x 65535 must not allocate gigabytes. */
export const MAX_DECODED_FRAME_BYTES = 512 * 1024 * 1024;

/** Bytes of one native frame (bit-packed frames rounded up to whole bytes). */
export function nativeFrameLength(a: Pick<PixelAttributes, 'rows' | 'columns' | 'samplesPerPixel' | 'bitsAllocated'>): number {
  return Math.ceil((a.rows * a.columns * a.samplesPerPixel * a.bitsAllocated) / 8);
}

/** Throws PixelDecodeError when the attributes cannot describe a frame this server will decode. */
export function assertDecodableAttributes(a: PixelAttributes): void {
  const ok =
    Number.isInteger(a.rows) && a.rows > 0 &&
    Number.isInteger(a.columns) && a.columns > 0 &&
    (a.samplesPerPixel === 1 || a.samplesPerPixel === 3 || a.samplesPerPixel === 4) &&
    [1, 8, 16, 32, 64].includes(a.bitsAllocated) &&
    a.bitsStored >= 1 && a.bitsStored <= a.bitsAllocated;
  if (!ok) {
    throw new PixelDecodeError(
      `unsupported pixel layout: ${a.rows}x${a.columns}, ${a.samplesPerPixel} samples, ${a.bitsStored}/${a.bitsAllocated} bits`,
    );
  }
  if (nativeFrameLength(a) > MAX_DECODED_FRAME_BYTES) {
    throw new PixelDecodeError(`a ${a.rows}x${a.columns} frame is larger than the ${MAX_DECODED_FRAME_BYTES} bytes this server decodes`);
  }
}
