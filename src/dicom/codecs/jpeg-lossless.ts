/**
 * JPEG Lossless, Non-Hierarchical (Process 14, all selection values; PS3.5 A.4.1, ISO 10918-1
 * Annex H) through `jpeg-lossless-decoder-js`: pure TypeScript, the decoder Cornerstone uses for
 * these syntaxes (libjpeg-turbo's WASM build has no lossless mode).
 */
import { PixelDecodeError } from '../pixel-frame';

interface LosslessDecoder {
  decode(buffer: ArrayBuffer, offset: number, length: number, numBytes?: number): Uint8Array | Uint16Array;
  numComp: number;
  xDim: number;
  yDim: number;
}

let DecoderClass: (new () => LosslessDecoder) | null = null;

/** Decodes one Process 14 code stream to little-endian samples (1 byte per sample when `bitsAllocated` is 8, else 2). */
export function decodeJpegLossless(frame: Buffer, bitsAllocated: number): { data: Buffer; width: number; height: number; components: number } {
  // The package ships no type declarations for its CommonJS build, hence the local interface.
  DecoderClass ??= (require('jpeg-lossless-decoder-js') as { Decoder: new () => LosslessDecoder }).Decoder;
  const decoder = new DecoderClass();
  // Own copy: the decoder reads through a DataView over the whole ArrayBuffer it is given.
  const copy = new Uint8Array(frame.length);
  copy.set(frame);
  let out: Uint8Array | Uint16Array;
  try {
    out = decoder.decode(copy.buffer, 0, copy.length, bitsAllocated <= 8 ? 1 : 2);
  } catch (err) {
    throw new PixelDecodeError(`JPEG lossless stream cannot be decoded: ${(err as Error)?.message ?? err}`, err);
  }
  if (!out) throw new PixelDecodeError('JPEG lossless stream produced no pixels');
  return {
    data: Buffer.from(out.buffer, out.byteOffset, out.byteLength),
    width: decoder.xDim,
    height: decoder.yDim,
    components: decoder.numComp,
  };
}
