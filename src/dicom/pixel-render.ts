/**
 * Turns a decoded frame into an 8-bit image for rendered media types (PS3.18 8.7.4: at most 8
 * bits per channel), following the grayscale and color pipelines of PS3.4 N.2:
 * - MONOCHROME1/2: stored values -> Modality LUT (Rescale Slope/Intercept) -> VOI window
 *   (request, else the header's first Window Center/Width, else the frame's min/max) -> 8 bits,
 *   inverted for MONOCHROME1.
 * - RGB, YBR_FULL, YBR_FULL_422 (native), PALETTE COLOR (PS3.3 C.7.6.3.1.5-6): converted to RGB;
 *   samples wider than 8 bits are scaled down. A window does not apply to color.
 * Modality LUT Sequence and VOI LUT Sequence tables are not applied (documented limitation).
 */
import type { DecodedFrame } from './pixel-frame';
import { buildGrayscaleLut, windowFromRange, applyWindow, type VoiFunction, type VoiWindow } from './pixel-window';

/** One channel of a palette: LUT Descriptor (entries, first mapped value, bits) and its data (PS3.3 C.7.6.3.1.5). */
export interface PaletteChannel {
  entries: number;
  firstMapped: number;
  bits: number;
  data: Uint16Array;
}

/** The presentation attributes of one frame (top level, or its functional groups for enhanced objects). */
export interface Presentation {
  rescaleSlope: number;
  rescaleIntercept: number;
  /** Window Center / Width pairs from the header, first one used. */
  windows: Array<{ center: number; width: number }>;
  voiFunction: VoiFunction;
  palette?: { red: PaletteChannel; green: PaletteChannel; blue: PaletteChannel };
}

/** An 8-bit image, channels interleaved, ready for an image encoder. */
export interface RenderedPixels {
  data: Buffer;
  width: number;
  height: number;
  channels: 1 | 3;
}

/** The frame cannot be rendered (e.g. an unknown photometric interpretation): answered as 406. */
export class UnsupportedRenderingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedRenderingError';
  }
}

/** Renders one frame to 8-bit gray or RGB. `window` from the request overrides the header. */
export function renderFrame(frame: DecodedFrame, presentation: Presentation, options: { window?: VoiWindow } = {}): RenderedPixels {
  const a = frame.attributes;
  const pi = a.photometricInterpretation.trim().toUpperCase();
  const width = a.columns;
  const height = a.rows;
  if (pi === 'MONOCHROME1' || pi === 'MONOCHROME2') {
    return { data: renderGrayscale(frame, presentation, options.window, pi === 'MONOCHROME1'), width, height, channels: 1 };
  }
  if (pi === 'PALETTE COLOR') {
    if (!presentation.palette) throw new UnsupportedRenderingError('PALETTE COLOR image without a usable Palette Color Lookup Table');
    return { data: renderPalette(frame, presentation.palette), width, height, channels: 3 };
  }
  if (a.samplesPerPixel !== 3) throw new UnsupportedRenderingError(`${pi} with ${a.samplesPerPixel} samples per pixel cannot be rendered`);
  if (pi === 'RGB') return { data: colorBytes(frame, false), width, height, channels: 3 };
  if (pi === 'YBR_FULL') return { data: colorBytes(frame, true), width, height, channels: 3 };
  if (pi === 'YBR_FULL_422') return { data: renderYbr422(frame), width, height, channels: 3 };
  throw new UnsupportedRenderingError(`photometric interpretation ${pi} cannot be rendered`);
}

/** Stored values of a single-sample frame, masked to Bits Stored and sign-extended (PS3.5 8.1.1, PS3.3 C.7.6.3.1.1). */
export function readStoredValues(frame: DecodedFrame): { values: Int32Array | Float64Array; min: number; max: number } {
  const { bitsAllocated, bitsStored, pixelRepresentation, rows, columns } = frame.attributes;
  const count = rows * columns;
  const d = frame.data;
  const signed = pixelRepresentation === 1 && bitsAllocated > 1;
  let values: Int32Array | Float64Array;
  if (frame.attributes.floatingPoint) {
    values = new Float64Array(count);
    const step = bitsAllocated / 8;
    for (let i = 0; i < count; i++) {
      const v = step === 4 ? d.readFloatLE(4 * i) : d.readDoubleLE(8 * i);
      values[i] = Number.isFinite(v) ? v : 0;
    }
  } else if (bitsAllocated === 1) {
    values = new Int32Array(count);
    for (let i = 0; i < count; i++) values[i] = (d[i >> 3] >> (i & 7)) & 1;
  } else if (bitsAllocated === 8 || bitsAllocated === 16) {
    const samples = bitsAllocated === 8 ? new Uint8Array(d.buffer, d.byteOffset, count) : uint16View(d, count);
    values = new Int32Array(count);
    // Shifting the stored bits to the top of 32 and back masks and sign-extends in one step.
    const up = 32 - bitsStored;
    if (signed) for (let i = 0; i < count; i++) values[i] = (samples[i] << up) >> up;
    else if (bitsStored >= bitsAllocated) values.set(samples);
    else for (let i = 0; i < count; i++) values[i] = (samples[i] << up) >>> up;
  } else {
    values = new Float64Array(count);
    const mask = bitsStored >= 32 ? 0xffffffff : 2 ** bitsStored - 1;
    const signBit = 2 ** (bitsStored - 1);
    for (let i = 0; i < count; i++) {
      let v = (d.readUInt32LE(4 * i) & mask) >>> 0;
      if (signed && v >= signBit) v -= 2 * signBit;
      values[i] = v;
    }
  }
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < count; i++) {
    const v = values[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { values, min, max };
}

/** A Uint16Array over little-endian 16-bit samples (copied when the buffer is not 2-byte aligned). */
function uint16View(d: Buffer, count: number): Uint16Array {
  if (d.byteOffset % 2 === 0) return new Uint16Array(d.buffer, d.byteOffset, count);
  const copy = new Uint8Array(count * 2);
  copy.set(d.subarray(0, count * 2));
  return new Uint16Array(copy.buffer);
}

/** The window a grayscale frame is shown with: the request's, else the header's first, else min/max (in modality units). */
export function chooseWindow(presentation: Presentation, requested: VoiWindow | undefined, storedMin: number, storedMax: number): VoiWindow {
  if (requested) return requested;
  const first = presentation.windows.find((w) => Number.isFinite(w.center) && Number.isFinite(w.width) && w.width > 0);
  if (first) return { center: first.center, width: first.width, function: presentation.voiFunction };
  const a = storedMin * presentation.rescaleSlope + presentation.rescaleIntercept;
  const b = storedMax * presentation.rescaleSlope + presentation.rescaleIntercept;
  return windowFromRange(Math.min(a, b), Math.max(a, b));
}

function renderGrayscale(frame: DecodedFrame, p: Presentation, requested: VoiWindow | undefined, invert: boolean): Buffer {
  if (frame.attributes.samplesPerPixel !== 1) throw new UnsupportedRenderingError('MONOCHROME image with more than one sample per pixel');
  const { values, min, max } = readStoredValues(frame);
  const window = chooseWindow(p, requested, min, max);
  const out = Buffer.alloc(values.length);
  const rescale = { slope: p.rescaleSlope, intercept: p.rescaleIntercept };
  if (values instanceof Int32Array && max - min < 1 << 20) {
    // One table entry per stored value that occurs: at most 2^16 entries for 16-bit data.
    const lut = buildGrayscaleLut(min, max, rescale, window, invert);
    for (let i = 0; i < values.length; i++) out[i] = lut[values[i] - min];
    return out;
  }
  for (let i = 0; i < values.length; i++) {
    const y = Math.round(applyWindow(values[i] * rescale.slope + rescale.intercept, window));
    out[i] = invert ? 255 - y : y;
  }
  return out;
}

/** Sample s of pixel i as an 8-bit value (wider samples scaled down by Bits Stored), for either planar configuration. */
function sampleReader(frame: DecodedFrame): (pixel: number, sample: number) => number {
  const { bitsAllocated, bitsStored, planarConfiguration, rows, columns, samplesPerPixel } = frame.attributes;
  const d = frame.data;
  const pixels = rows * columns;
  const index = planarConfiguration === 1 ? (i: number, s: number) => s * pixels + i : (i: number, s: number) => i * samplesPerPixel + s;
  if (bitsAllocated === 8) return (i, s) => d[index(i, s)];
  const shift = Math.max(0, bitsStored - 8);
  const mask = 2 ** bitsStored - 1;
  if (bitsAllocated === 16) return (i, s) => (d.readUInt16LE(2 * index(i, s)) & mask) >> shift;
  throw new UnsupportedRenderingError(`color images with ${bitsAllocated} bits allocated cannot be rendered`);
}

function colorBytes(frame: DecodedFrame, ybr: boolean): Buffer {
  const { rows, columns } = frame.attributes;
  const pixels = rows * columns;
  const read = sampleReader(frame);
  const out = Buffer.alloc(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    const a = read(i, 0);
    const b = read(i, 1);
    const c = read(i, 2);
    if (ybr) ybrToRgb(a, b, c, out, i * 3);
    else {
      out[i * 3] = a;
      out[i * 3 + 1] = b;
      out[i * 3 + 2] = c;
    }
  }
  return out;
}

/** YBR_FULL to RGB (PS3.3 C.7.6.3.1.2, the inverse of the equations given there). */
function ybrToRgb(y: number, cb: number, cr: number, out: Buffer, at: number): void {
  out[at] = clamp8(y + 1.402 * (cr - 128));
  out[at + 1] = clamp8(y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128));
  out[at + 2] = clamp8(y + 1.772 * (cb - 128));
}

function clamp8(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}

/** Native YBR_FULL_422: each pair of pixels is Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2), 8 bits. */
function renderYbr422(frame: DecodedFrame): Buffer {
  const { rows, columns, bitsAllocated } = frame.attributes;
  const pixels = rows * columns;
  if (bitsAllocated !== 8) throw new UnsupportedRenderingError('YBR_FULL_422 with more than 8 bits');
  const d = frame.data;
  if (d.length >= pixels * 3) return colorBytes({ ...frame, attributes: { ...frame.attributes, photometricInterpretation: 'YBR_FULL' } }, true);
  const out = Buffer.alloc(pixels * 3);
  for (let i = 0; i < pixels; i += 2) {
    const at = 2 * i;
    if (at + 3 >= d.length) break;
    const cb = d[at + 2];
    const cr = d[at + 3];
    ybrToRgb(d[at], cb, cr, out, i * 3);
    if (i + 1 < pixels) ybrToRgb(d[at + 1], cb, cr, out, (i + 1) * 3);
  }
  return out;
}

function renderPalette(frame: DecodedFrame, palette: NonNullable<Presentation['palette']>): Buffer {
  if (frame.attributes.samplesPerPixel !== 1) throw new UnsupportedRenderingError('PALETTE COLOR with more than one sample per pixel');
  const { values } = readStoredValues(frame);
  const out = Buffer.alloc(values.length * 3);
  const channels = [palette.red, palette.green, palette.blue].map(paletteTo8Bit);
  for (let c = 0; c < 3; c++) {
    const { firstMapped, table } = channels[c];
    const last = table.length - 1;
    for (let i = 0, at = c; i < values.length; i++, at += 3) {
      const idx = values[i] - firstMapped;
      out[at] = table[idx < 0 ? 0 : idx > last ? last : idx];
    }
  }
  return out;
}

/** A palette channel as 8-bit entries: 16-bit entries are scaled down unless all are already under 256 (a common encoder quirk). */
function paletteTo8Bit(ch: PaletteChannel): { firstMapped: number; table: Uint8Array } {
  const n = Math.min(ch.entries, ch.data.length);
  let max = 0;
  for (let i = 0; i < n; i++) if (ch.data[i] > max) max = ch.data[i];
  const shift = ch.bits > 8 && max > 255 ? ch.bits - 8 : 0;
  const table = new Uint8Array(Math.max(n, 1));
  for (let i = 0; i < n; i++) table[i] = Math.min(255, ch.data[i] >> shift);
  return { firstMapped: ch.firstMapped, table };
}
