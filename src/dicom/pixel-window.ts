/**
 * Grayscale presentation math: the Modality LUT as Rescale Slope / Intercept (PS3.3 C.11.1)
 * and the VOI LUT functions LINEAR, LINEAR_EXACT and SIGMOID (PS3.3 C.11.2.1.2), mapping
 * modality values to 8-bit output (PS3.18: rendered images carry at most 8 bits per channel).
 */

/** VOI LUT Function (0028,1056) values, lower case as PS3.18 8.3.5.1.4 spells them. */
export type VoiFunction = 'linear' | 'linear_exact' | 'sigmoid';

/** A window: center and width in modality units, and the function that shapes it. */
export interface VoiWindow {
  center: number;
  width: number;
  function: VoiFunction;
}

/** Reads a VOI LUT Function value (DICOM `LINEAR_EXACT` or PS3.18 `linear-exact`), case-insensitive; null when unknown. */
export function parseVoiFunction(text: string | null | undefined): VoiFunction | null {
  if (!text) return null;
  const t = text.trim().toLowerCase().replace('-', '_');
  return t === 'linear' || t === 'linear_exact' || t === 'sigmoid' ? t : null;
}

/**
 * Maps a modality value to [0, 255] through a window (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2
 * LINEAR_EXACT, C.11.2.1.3.1 SIGMOID), with y_min = 0 and y_max = 255. LINEAR needs width >= 1,
 * the others width > 0; a smaller width is treated as the smallest legal one (a hard threshold).
 */
export function applyWindow(x: number, w: VoiWindow): number {
  const yMax = 255;
  if (w.function === 'sigmoid') {
    const width = Math.max(w.width, Number.EPSILON);
    return yMax / (1 + Math.exp((-4 * (x - w.center)) / width));
  }
  if (w.function === 'linear_exact') {
    const width = Math.max(w.width, Number.EPSILON);
    if (x <= w.center - width / 2) return 0;
    if (x > w.center + width / 2) return yMax;
    return ((x - w.center) / width + 0.5) * yMax;
  }
  const width = Math.max(w.width, 1);
  const c = w.center - 0.5;
  const half = (width - 1) / 2;
  if (x <= c - half) return 0;
  if (x > c + half) return yMax;
  // width 1: the two branches above cover every x (a pure threshold), so no division by zero here.
  return ((x - c) / (width - 1) + 0.5) * yMax;
}

/**
 * A 256-level lookup table from stored values to output bytes, for stored values
 * [minStored, maxStored]: Modality LUT (slope, intercept), then the window, then MONOCHROME1
 * inversion (PS3.3 C.7.6.3.1.2: minimum is white).
 */
export function buildGrayscaleLut(
  minStored: number,
  maxStored: number,
  rescale: { slope: number; intercept: number },
  window: VoiWindow,
  invert: boolean,
): Uint8Array {
  const size = maxStored - minStored + 1;
  const lut = new Uint8Array(size);
  for (let i = 0; i < size; i++) {
    const modality = (minStored + i) * rescale.slope + rescale.intercept;
    const y = Math.round(applyWindow(modality, window));
    lut[i] = invert ? 255 - y : y;
  }
  return lut;
}

/** The window that spans [min, max] exactly (LINEAR_EXACT), used when neither the request nor the header gives one. */
export function windowFromRange(min: number, max: number): VoiWindow {
  if (!(max > min)) return { center: min, width: 1, function: 'linear_exact' };
  return { center: (min + max) / 2, width: max - min, function: 'linear_exact' };
}
