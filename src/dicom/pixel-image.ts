/**
 * Encodes an 8-bit rendered frame as image/jpeg (baseline, PS3.18 8.7.4) or image/png with
 * sharp (libvips, prebuilt binaries shipped in npm packages), after the viewport's crop, flips
 * and scaling (PS3.18 8.3.5.1.3).
 */
import type SharpFactory from 'sharp';
import type { RenderedPixels } from './pixel-render';
import { resolveUriViewport, resolveViewport, type UriViewport, type Viewport } from './pixel-render-params';

/** Rendered media types this server produces. */
export type RenderedMediaType = 'image/jpeg' | 'image/png';

export interface EncodeOptions {
  mediaType: RenderedMediaType;
  viewport?: Viewport;
  /** WADO-URI sizing (rows, columns, fractional region), used when `viewport` is absent. */
  uriViewport?: UriViewport;
  /** JPEG quality 1-100; default 90. */
  quality?: number;
  /** Without a viewport: scale down (never up) so that the longer side is at most this (thumbnails). */
  maxSide?: number;
}

let sharpFactory: typeof SharpFactory | null = null;

/** sharp loads libvips: done on first use, not at import (STYLE 8). */
function loadSharp(): typeof SharpFactory {
  sharpFactory ??= require('sharp') as typeof SharpFactory;
  return sharpFactory;
}

/** Default JPEG quality when the request gives none. */
export const DEFAULT_JPEG_QUALITY = 90;

/** Encodes rendered pixels; throws RenderParameterError when the viewport region lies outside the image. */
export async function encodeRenderedImage(pixels: RenderedPixels, options: EncodeOptions): Promise<Buffer> {
  const viewport = options.viewport ?? (options.uriViewport ? resolveUriViewport(options.uriViewport, pixels.width, pixels.height) : undefined);
  const plan = resolveViewport(viewport, pixels.width, pixels.height);
  let image = loadSharp()(pixels.data, { raw: { width: pixels.width, height: pixels.height, channels: pixels.channels } });
  const { crop } = plan;
  if (crop.left !== 0 || crop.top !== 0 || crop.width !== pixels.width || crop.height !== pixels.height) image = image.extract(crop);
  if (plan.flipHorizontal) image = image.flop();
  if (plan.flipVertical) image = image.flip();
  if (viewport) {
    if (plan.width !== crop.width || plan.height !== crop.height) image = image.resize(plan.width, plan.height, { fit: 'fill' });
  } else if (options.maxSide && Math.max(crop.width, crop.height) > options.maxSide) {
    image = image.resize(options.maxSide, options.maxSide, { fit: 'inside', withoutEnlargement: true });
  }
  if (pixels.channels === 1) image = image.toColourspace('b-w');
  if (options.mediaType === 'image/png') return image.png({ compressionLevel: 6 }).toBuffer();
  // Baseline, Huffman, not progressive: what PS3.18 8.7.4 requires of image/jpeg.
  return image.jpeg({ quality: options.quality ?? DEFAULT_JPEG_QUALITY, progressive: false, mozjpeg: false, chromaSubsampling: '4:2:0' }).toBuffer();
}
