import sharp from 'sharp';

/** Grey-level statistics of a screenshot, to tell a rendered image from an empty viewport. */
export interface PixelStats {
  width: number;
  height: number;
  mean: number;
  /** Variance of the luma over all pixels. */
  variance: number;
  /** Distinct luma values (0-255) seen. */
  distinctLevels: number;
  /** Share of pixels brighter than a near-black background (luma > 24). */
  litFraction: number;
}

/** Decodes a PNG (or any image sharp reads) and measures its luma. */
export async function measurePixels(image: Buffer): Promise<PixelStats> {
  const { data, info } = await sharp(image).removeAlpha().greyscale().raw().toBuffer({ resolveWithObject: true });
  let sum = 0;
  let sumSq = 0;
  let lit = 0;
  const seen = new Set<number>();
  for (const v of data) {
    sum += v;
    sumSq += v * v;
    if (v > 24) lit++;
    seen.add(v);
  }
  const n = data.length;
  const mean = sum / n;
  return { width: info.width, height: info.height, mean, variance: sumSq / n - mean * mean, distinctLevels: seen.size, litFraction: lit / n };
}
