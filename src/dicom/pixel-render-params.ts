/**
 * The rendering query parameters of PS3.18 8.3.5.1 that this server honours: `window`
 * (8.3.5.1.4), `viewport` (8.3.5.1.3) and `quality` (8.3.5.1.2). Malformed values are a
 * RenderParameterError (answered 400 with the message); unknown parameters are ignored, as
 * PS3.18 8.3.5.1 allows. `annotation`, `iccprofile` and `charset` are accepted and ignored.
 */
import { parseVoiFunction, type VoiWindow } from './pixel-window';

/** Source region and output size: `viewport=vw,vh[,sx,sy,sw,sh]`. Negative sw / sh flip the region. */
export interface Viewport {
  width: number;
  height: number;
  region?: { x: number; y: number; width: number; height: number };
}

export interface RenderParameters {
  window?: VoiWindow;
  viewport?: Viewport;
  /** WADO-URI sizing, resolved against the image once its size is known (used when `viewport` is absent). */
  uriViewport?: UriViewport;
  /** JPEG quality 1-100. */
  quality?: number;
}

/**
 * WADO-URI sizing (PS3.18 9.5.1.2.4 rows / columns, 9.5.1.2.5 region): a source region in
 * fractions of the image, and an output size where rows and columns are maxima that keep the
 * aspect ratio (one alone fixes that side; neither: the region at one pixel per pixel).
 */
export interface UriViewport {
  /** Top left (xmin, ymin) and bottom right (xmax, ymax) corners, 0.0-1.0 of the columns and rows. */
  region?: { xmin: number; ymin: number; xmax: number; ymax: number };
  rows?: number;
  columns?: number;
}

/** A rendering query parameter that cannot be honoured: the message names it and what is allowed. */
export class RenderParameterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RenderParameterError';
  }
}

/** Largest viewport side accepted: bounds the memory of one rendered image. */
export const MAX_VIEWPORT_SIDE = 8192;

/** Parses the rendering parameters from a query object (express `req.query`). */
export function parseRenderParameters(query: Record<string, unknown>): RenderParameters {
  const params: RenderParameters = {};
  const window = single(query, 'window');
  if (window !== undefined) params.window = parseWindow(window);
  const viewport = single(query, 'viewport');
  if (viewport !== undefined) params.viewport = parseViewport(viewport);
  const quality = single(query, 'quality');
  if (quality !== undefined) params.quality = parseQuality(quality);
  return params;
}

function single(query: Record<string, unknown>, name: string): string | undefined {
  const v = query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new RenderParameterError(`${name} must be given once`);
  return v;
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;

/** `window=center,width[,function]`: center and width as decimal numbers, function linear (default), linear-exact or sigmoid. */
export function parseWindow(text: string): VoiWindow {
  const parts = text.split(',').map((s) => s.trim());
  const usage = 'window must be center,width[,function] with numbers and function linear, linear-exact or sigmoid';
  if (parts.length < 2 || parts.length > 3 || !NUMBER.test(parts[0]) || !NUMBER.test(parts[1])) {
    throw new RenderParameterError(`invalid window "${text.slice(0, 100)}": ${usage}`);
  }
  const center = Number(parts[0]);
  const width = Number(parts[1]);
  const fn = parts.length === 3 && parts[2] !== '' ? parseVoiFunction(parts[2]) : 'linear';
  if (!fn) throw new RenderParameterError(`invalid window function "${parts[2].slice(0, 40)}": ${usage}`);
  if (!Number.isFinite(center) || !Number.isFinite(width)) throw new RenderParameterError(`invalid window "${text.slice(0, 100)}": ${usage}`);
  // PS3.3 C.11.2.1.2: width >= 1 for LINEAR, > 0 for LINEAR_EXACT and SIGMOID.
  if (fn === 'linear' ? width < 1 : width <= 0) {
    throw new RenderParameterError(`invalid window width ${width}: it must be ${fn === 'linear' ? 'at least 1 for linear' : 'greater than 0'}`);
  }
  return { center, width, function: fn };
}

/** `viewport=vw,vh[,sx,sy,sw,sh]`: positive output size; optional source region (sx, sy >= 0, sw, sh non-zero, negative flips). */
export function parseViewport(text: string): Viewport {
  const parts = text.split(',').map((s) => s.trim());
  const usage = `viewport must be vw,vh or vw,vh,sx,sy,sw,sh with integers, 1 <= vw, vh <= ${MAX_VIEWPORT_SIDE}`;
  if ((parts.length !== 2 && parts.length !== 6) || !parts.every((p) => INTEGER.test(p))) {
    throw new RenderParameterError(`invalid viewport "${text.slice(0, 100)}": ${usage}`);
  }
  const [vw, vh, sx, sy, sw, sh] = parts.map(Number);
  if (vw < 1 || vh < 1 || vw > MAX_VIEWPORT_SIDE || vh > MAX_VIEWPORT_SIDE) {
    throw new RenderParameterError(`invalid viewport "${text.slice(0, 100)}": ${usage}`);
  }
  if (parts.length === 2) return { width: vw, height: vh };
  if (sx < 0 || sy < 0 || sw === 0 || sh === 0) {
    throw new RenderParameterError(`invalid viewport source region "${parts.slice(2).join(',')}": sx and sy must be >= 0, sw and sh non-zero`);
  }
  return { width: vw, height: vh, region: { x: sx, y: sy, width: sw, height: sh } };
}

/** `quality=1..100` (JPEG); `name` is the parameter's name in the message (WADO-URI calls it imageQuality). */
export function parseQuality(text: string, name = 'quality'): number {
  const t = text.trim();
  const n = Number(t);
  if (!/^\d{1,3}$/.test(t) || n < 1 || n > 100) throw new RenderParameterError(`invalid ${name} "${text.slice(0, 20)}": it must be an integer from 1 to 100`);
  return n;
}

/**
 * The crop, flips and output size a viewport means for an image of `columns` x `rows`
 * (PS3.18 8.3.5.1.3): the region (default: the whole image) is cut out, flipped when sw / sh are
 * negative (the region then extends left / up from sx / sy), and scaled to fit vw x vh keeping its
 * aspect ratio. A region outside the image is a RenderParameterError.
 */
export function resolveViewport(viewport: Viewport | undefined, columns: number, rows: number): {
  crop: { left: number; top: number; width: number; height: number };
  flipHorizontal: boolean;
  flipVertical: boolean;
  width: number;
  height: number;
} {
  let crop = { left: 0, top: 0, width: columns, height: rows };
  let flipHorizontal = false;
  let flipVertical = false;
  const r = viewport?.region;
  if (r) {
    flipHorizontal = r.width < 0;
    flipVertical = r.height < 0;
    const left = r.width < 0 ? r.x + r.width : r.x;
    const top = r.height < 0 ? r.y + r.height : r.y;
    crop = { left, top, width: Math.abs(r.width), height: Math.abs(r.height) };
    if (left < 0 || top < 0 || left + crop.width > columns || top + crop.height > rows) {
      throw new RenderParameterError(`viewport source region ${r.x},${r.y},${r.width},${r.height} lies outside the ${columns}x${rows} image`);
    }
  }
  if (!viewport) return { crop, flipHorizontal, flipVertical, width: crop.width, height: crop.height };
  const scale = Math.min(viewport.width / crop.width, viewport.height / crop.height);
  return {
    crop,
    flipHorizontal,
    flipVertical,
    width: Math.max(1, Math.round(crop.width * scale)),
    height: Math.max(1, Math.round(crop.height * scale)),
  };
}

/**
 * The pixel viewport a WADO-URI sizing means for an image of `columns` x `rows` (PS3.18
 * 9.5.1.2.4-5); undefined when it asks for the whole image at its own size. Sides are capped at
 * MAX_VIEWPORT_SIDE, keeping the aspect ratio.
 */
export function resolveUriViewport(uri: UriViewport, columns: number, rows: number): Viewport | undefined {
  let region: Viewport['region'];
  let width = columns;
  let height = rows;
  if (uri.region) {
    const { xmin, ymin, xmax, ymax } = uri.region;
    const x = Math.min(columns - 1, Math.floor(xmin * columns));
    const y = Math.min(rows - 1, Math.floor(ymin * rows));
    width = Math.max(1, Math.min(columns, Math.round(xmax * columns)) - x);
    height = Math.max(1, Math.min(rows, Math.round(ymax * rows)) - y);
    region = { x, y, width, height };
  }
  if (!region && uri.rows === undefined && uri.columns === undefined) return undefined;
  let scale = 1;
  if (uri.columns !== undefined && uri.rows !== undefined) scale = Math.min(uri.columns / width, uri.rows / height);
  else if (uri.columns !== undefined) scale = uri.columns / width;
  else if (uri.rows !== undefined) scale = uri.rows / height;
  scale = Math.min(scale, MAX_VIEWPORT_SIDE / width, MAX_VIEWPORT_SIDE / height);
  const out: Viewport = { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
  if (region) out.region = region;
  return out;
}
