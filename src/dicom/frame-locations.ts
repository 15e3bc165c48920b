/**
 * Where each frame's bytes are in the stored blob, so that WADO-RS can serve one frame with
 * ranged reads: native Pixel Data by arithmetic (PS3.5 8.1.1, PS3.3 C.7.6.3.1.4), encapsulated
 * Pixel Data by its offset tables or fragment structure (PS3.5 A.4).
 */
import { DicomInstanceError, FrameLocation, StatusCode } from './types';
import type { FragmentTable } from './encapsulated-pixel-data';
import type { TransferSyntaxTraits } from './transfer-syntax';
import type { RawElement } from './data-set-walker';

/** More frames than this is refused: each costs memory in the index, and no real instance needs it. */
export const MAX_FRAMES = 1_000_000;

/** Image geometry from the header; null where absent or unreadable. */
export interface FrameGeometry {
  rows: number | null;
  columns: number | null;
  samplesPerPixel: number | null;
  bitsAllocated: number | null;
  /** Number of Frames (0028,0008) when a positive integer. */
  numberOfFrames: number | null;
  /** Whether Number of Frames is present at all, even if empty or malformed. */
  numberOfFramesPresent: boolean;
  /** Photometric Interpretation (0028,0004): 4:2:2 subsampled YBR stores two samples' worth per pixel. */
  photometricInterpretation?: string | null;
}

function refuseFrameCount(count: number): void {
  if (count > MAX_FRAMES) {
    throw new DicomInstanceError(`${count} frames is more than the ${MAX_FRAMES} accepted`, StatusCode.OutOfResources);
  }
}

/** Frames that exist but cannot be cut out by byte ranges. */
export function unlocatableFrames(count: number): FrameLocation[] {
  refuseFrameCount(count);
  return new Array<FrameLocation>(count).fill(null);
}

/**
 * Native (defined-length) Pixel Data: frame i is bytes [i*size, (i+1)*size) of the value, with
 * size = Rows x Columns x Samples per Pixel x Bits Allocated / 8 (PS3.5 8.1.1). Pixel Data shorter
 * than its declared frames is refused with 0xC000: the header promises pixels that are not there.
 * Done with arithmetic only, so a declared 65535 x 65535 image allocates nothing.
 */
export function locateNativeFrames(valueOffset: number, valueLength: number, g: FrameGeometry): FrameLocation[] {
  const { rows, columns, bitsAllocated } = g;
  // Native YBR_FULL_422 / YBR_PARTIAL_422 hold Y Y Cb Cr per pixel pair (PS3.3 C.7.6.3.1.2): 2 values per pixel, not 3.
  const subsampled = /^YBR_(FULL|PARTIAL)_422$/.test(g.photometricInterpretation ?? '');
  const samplesPerPixel = subsampled && g.samplesPerPixel === 3 ? 2 : g.samplesPerPixel;
  const frameBits = rows && columns && samplesPerPixel && bitsAllocated ? rows * columns * samplesPerPixel * bitsAllocated : 0;
  let count = g.numberOfFrames ?? 1;
  if (g.numberOfFrames === null && g.numberOfFramesPresent && frameBits > 0) {
    // Number of Frames present but unreadable (e.g. IS '1A'): the pixel data says how many there are.
    count = Math.max(1, Math.floor((valueLength * 8) / frameBits));
  }
  if (frameBits === 0) return unlocatableFrames(count);
  // Checked before anything is allocated: a tiny value cannot back a huge declared image.
  if (count * frameBits > valueLength * 8) {
    throw new DicomInstanceError(
      `Pixel Data holds ${valueLength} bytes but ${count} frame(s) of ${rows}x${columns}x${samplesPerPixel} at ${bitsAllocated} bits need ${Math.ceil((count * frameBits) / 8)}`,
      StatusCode.CannotUnderstand,
    );
  }
  refuseFrameCount(count);
  // Bits Allocated 1 packs frames bit after bit: unless each frame fills whole bytes, they share bytes.
  if (frameBits % 8 !== 0) return unlocatableFrames(count);
  const size = frameBits / 8;
  const frames: FrameLocation[] = new Array(count);
  for (let i = 0; i < count; i++) frames[i] = [{ offset: valueOffset + i * size, length: size }];
  return frames;
}

export interface EncapsulatedLayout {
  fragments: FragmentTable;
  basicOffsetTable: number[];
  /** Extended Offset Table (7FE0,0001), offsets relative to the first fragment's item tag (PS3.3 C.7.6.3.1.8). */
  extendedOffsetTable: number[] | null;
  numberOfFrames: number | null;
}

/**
 * Encapsulated Pixel Data (PS3.5 A.4): frames from the Basic Offset Table, else the Extended
 * Offset Table, else one fragment per frame, else one frame of all fragments, else (JPEG family,
 * JPEG 2000) a new frame at each fragment that opens with the codec's start marker; frames that
 * still cannot be told apart are null. Each frame needs at least one fragment, so more frames
 * than fragments is refused with 0xC000.
 */
export function locateEncapsulatedFrames(layout: EncapsulatedLayout, traits: TransferSyntaxTraits): FrameLocation[] {
  const { fragments, numberOfFrames } = layout;
  const fragmentCount = fragments.count;
  if (fragmentCount === 0) throw new DicomInstanceError('encapsulated Pixel Data without fragments', StatusCode.CannotUnderstand);
  // A video stream is one bit stream for all frames (PS3.5 8.2.5): no frame is a byte range.
  if (traits.video) return unlocatableFrames(numberOfFrames ?? 1);

  const fits = (starts: number[] | null) => starts !== null && (numberOfFrames === null || starts.length === numberOfFrames);
  const fromBasic = layout.basicOffsetTable.length ? startsFromOffsets(layout.basicOffsetTable, fragments) : null;
  if (fits(fromBasic)) return framesFromStarts(fromBasic!, fragments);
  const fromExtended = layout.extendedOffsetTable?.length ? startsFromOffsets(layout.extendedOffsetTable, fragments) : null;
  if (fits(fromExtended)) return framesFromStarts(fromExtended!, fragments);

  const count = numberOfFrames ?? 1;
  refuseFrameCount(count);
  if (count > fragmentCount) {
    throw new DicomInstanceError(`${count} frames declared but only ${fragmentCount} fragments`, StatusCode.CannotUnderstand);
  }
  if (count === fragmentCount) return framesFromStarts(Array.from({ length: count }, (_, i) => i), fragments);
  if (count === 1) return framesFromStarts([0], fragments);
  const fromMarkers = startsFromMarkers(fragments, traits);
  if (fromMarkers && fromMarkers.length === count) return framesFromStarts(fromMarkers, fragments);
  return unlocatableFrames(count);
}

/** Fragment index where each frame starts, from offsets relative to the first fragment's item tag; null if any offset misses a fragment. */
function startsFromOffsets(offsets: number[], fragments: FragmentTable): number[] | null {
  const origin = fragments.itemOffset(0);
  const starts: number[] = [];
  let f = 0;
  for (const offset of offsets) {
    while (f < fragments.count && fragments.itemOffset(f) - origin < offset) f++;
    if (f === fragments.count || fragments.itemOffset(f) - origin !== offset) return null;
    if (starts.length && starts[starts.length - 1] === f) return null; // offsets must increase
    starts.push(f);
  }
  return starts[0] === 0 ? starts : null;
}

/** Fragments that open with SOI (JPEG, JPEG-LS) or SOC+SIZ (JPEG 2000) start a frame (PS3.5 A.4.1, A.4.4). */
function startsFromMarkers(fragments: FragmentTable, traits: TransferSyntaxTraits): number[] | null {
  if (!traits.frameStartMarker) return null;
  const starts: number[] = [];
  for (let f = 0; f < fragments.count; f++) {
    const isStart = traits.frameStartMarker === 'jpeg-soi' ? fragments.head(f, 2) === 0xffd8 : fragments.head(f, 4) === 0xff4fff51;
    if (isStart) starts.push(f);
  }
  return starts[0] === 0 ? starts : null;
}

function framesFromStarts(starts: number[], fragments: FragmentTable): FrameLocation[] {
  return starts.map((first, i) => {
    const last = i + 1 < starts.length ? starts[i + 1] : fragments.count;
    const ranges = [];
    for (let f = first; f < last; f++) ranges.push({ offset: fragments.valueOffset(f), length: fragments.length(f) });
    return ranges;
  });
}

/** Extended Offset Table (7FE0,0001): 64-bit Little Endian offsets (PS3.3 C.7.6.3.1.8); null when absent or malformed. */
export function readExtendedOffsetTable(elements: RawElement[], bytes: Buffer): number[] | null {
  const element = elements.find((e) => e.tag === 0x7fe00001);
  if (!element || element.length === 0 || element.length % 8 !== 0 || element.offset + element.length > bytes.length) return null;
  const offsets: number[] = [];
  for (let at = element.offset; at < element.offset + element.length; at += 8) {
    const value = bytes.readBigUInt64LE(at);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    offsets.push(Number(value));
  }
  return offsets;
}
