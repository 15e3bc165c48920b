/**
 * RLE Lossless decoding (PS3.5 Annex G). Small enough to write ourselves: a 64-byte header of
 * segment offsets, then one PackBits-style run-length segment per byte plane, most significant
 * byte of each sample first (G.2, G.3.1). No library on npm is both small and maintained for it.
 */
import { PixelDecodeError, type PixelAttributes } from '../pixel-frame';

const HEADER_BYTES = 64;
const MAX_SEGMENTS = 15;

/**
 * Decodes one RLE frame into little-endian, color-by-pixel samples of `bitsAllocated` bits.
 * Bits Allocated 1 is not defined for RLE (PS3.5 G.2 works on whole bytes) and is refused.
 */
export function decodeRleFrame(frame: Buffer, a: PixelAttributes): Buffer {
  if (a.bitsAllocated % 8 !== 0) throw new PixelDecodeError(`RLE with ${a.bitsAllocated} bits allocated is not defined`);
  if (frame.length < HEADER_BYTES) throw new PixelDecodeError('RLE frame shorter than its 64-byte header');
  const bytesPerSample = a.bitsAllocated / 8;
  const segmentCount = frame.readUInt32LE(0);
  const expected = bytesPerSample * a.samplesPerPixel;
  if (segmentCount !== expected || segmentCount > MAX_SEGMENTS) {
    throw new PixelDecodeError(`RLE header has ${segmentCount} segments, ${expected} expected for ${a.samplesPerPixel} samples of ${a.bitsAllocated} bits`);
  }
  const offsets: number[] = [];
  for (let s = 0; s < segmentCount; s++) offsets.push(frame.readUInt32LE(4 + 4 * s));
  if (offsets[0] !== HEADER_BYTES) throw new PixelDecodeError(`RLE first segment offset is ${offsets[0]}, not 64`);

  const pixels = a.rows * a.columns;
  const out = Buffer.alloc(pixels * expected);
  const stride = expected; // bytes between one pixel and the next in the output
  const plane = Buffer.alloc(pixels);
  for (let s = 0; s < segmentCount; s++) {
    const start = offsets[s];
    const end = s + 1 < segmentCount ? offsets[s + 1] : frame.length;
    if (start > end || end > frame.length) throw new PixelDecodeError(`RLE segment ${s + 1} lies outside the frame`);
    unpackSegment(frame, start, end, plane);
    // Segment order: sample 0 MSB..LSB, sample 1 MSB..LSB, ... (G.2). Output byte for segment s:
    // sample = floor(s / bytesPerSample), little-endian byte = bytesPerSample - 1 - (s % bytesPerSample).
    const sample = Math.floor(s / bytesPerSample);
    const byte = bytesPerSample - 1 - (s % bytesPerSample);
    let at = sample * bytesPerSample + byte;
    for (let p = 0; p < pixels; p++, at += stride) out[at] = plane[p];
  }
  return out;
}

/** Expands one PackBits segment (G.3.1) into `into`, exactly filling it (shorter: zero fill; longer: cut). */
function unpackSegment(src: Buffer, start: number, end: number, into: Buffer): void {
  let i = start;
  let o = 0;
  const size = into.length;
  while (i < end && o < size) {
    const n = src[i++];
    if (n < 128) {
      // n + 1 literal bytes
      const count = Math.min(n + 1, end - i, size - o);
      src.copy(into, o, i, i + count);
      i += n + 1;
      o += count;
    } else if (n > 128) {
      // the next byte repeated 257 - n times
      if (i >= end) break;
      const value = src[i++];
      const count = Math.min(257 - n, size - o);
      into.fill(value, o, o + count);
      o += count;
    }
    // n === 128: no operation
  }
  if (o < size) into.fill(0, o);
}
