/**
 * Retrieve Rendered and Thumbnail resources (PS3.18 10.4.1.1.3 and the thumbnail resources of
 * 10.4.1.1 / 10.4.3.3.4): frames decoded, windowed and encoded as image/jpeg or image/png.
 *
 * Decisions (the conformance statement repeats them):
 * - Media types: image/jpeg (default, baseline) and image/png; Accept header or `accept` query
 *   parameter, q values honoured; anything else is 406 naming what is offered.
 * - Instance rendered = its first frame; frames/{list}/rendered = one image, or multipart/related
 *   of one image per frame for several frames.
 * - Study / series rendered = multipart/related; type="image/..." with one part per image
 *   instance (its first frame), in series then instance number order; instances without pixel
 *   data are left out. A part that fails to render after the answer has started is skipped and logged.
 * - Thumbnail = one small image (longest side 128 px unless `viewport` says otherwise) of the
 *   middle image instance of the study / series (in that order) and the middle frame of an
 *   instance; cached in memory (see pixel-image-cache.ts).
 * - Parameters: window, viewport, quality (PS3.18 8.3.5.1); bad values are 400. Color images
 *   ignore `window`. Unknown parameters are ignored.
 * - No pixel data, an undecodable Transfer Syntax or an unrenderable photometric interpretation: 406.
 */
import type { Writable } from 'node:stream';
import type { Database } from '../db/database';
import { findPixelFrame, listPixelInstances, targetExists, type PixelFrameRow, type PixelInstanceRef } from '../db/rendered-index';
import type { RetrieveTarget, StudyRestriction } from '../db/wado-index';
import { decodeFrame } from '../dicom/pixel-decoder';
import { PixelDecodeError, UnsupportedTransferSyntaxError } from '../dicom/pixel-frame';
import { encodeRenderedImage, type RenderedMediaType } from '../dicom/pixel-image';
import { renderedImageKey, type RenderedImageCache } from '../dicom/pixel-image-cache';
import { paletteNeedsHeader, readPalette, readPixelAttributes, readPresentation } from '../dicom/pixel-presentation';
import { parseRenderParameters, RenderParameterError, type RenderParameters } from '../dicom/pixel-render-params';
import { renderFrame, UnsupportedRenderingError } from '../dicom/pixel-render';
import { elementValue, readFrameBytes, readStoredDataSet } from '../dicom/pixel-source';
import { HttpError } from '../http/errors';
import type { Logger } from '../logger';
import type { BlobStore } from '../storage/blob-store';
import { parseAccept, rangeCovers, type MediaRange } from './accept';
import { createBoundary, multipartContentType, MultipartWriter, writeWithBackpressure } from './multipart-writer';
import { notFound, parseFrameList } from './wado-rs';
import type { PreparedAnswer } from './prepared-answer';

/** What rendering needs from the rest of the server. */
export interface RenderedServices {
  db: Database;
  blobs: BlobStore;
  logger: Logger;
  /** Thumbnail cache; without one, thumbnails are rendered on every request. */
  thumbnailCache?: RenderedImageCache;
}

/** Common request fields: Accept (header or `accept` query parameter), the query, the row-level filter. */
export interface RenderedRequest {
  accept?: string | string[];
  acceptQuery?: unknown;
  query: Record<string, unknown>;
  /** Limits the studies this request may see; filtered-out targets answer 404 like missing ones. */
  restrictStudies?: StudyRestriction;
  /** Parameters already parsed (WADO-URI, PS3.18 9.5.1.2): used instead of reading them from `query`. */
  parameters?: RenderParameters;
  /** A researcher's withheld instances (burned-in annotation not cleared), of those given: left out of studies and series. */
  withheld?: (sopInstanceUIDs: string[]) => Promise<Set<string>>;
}

/** A prepared answer (src/dicomweb/prepared-answer.ts): status and headers final, `send` streams the body. */
export type RenderedAnswer = PreparedAnswer;

/** Longest side of a thumbnail when the request gives no viewport. */
export const THUMBNAIL_SIZE = 128;

const OFFERED = 'rendered images are offered as image/jpeg or image/png (multipart/related of those for studies, series and frame lists)';

// ---------------------------------------------------------------- rendered (PS3.18 10.4.1.1.3)

/** Retrieve Rendered Study: every image instance's first frame, multipart/related. */
export function retrieveRenderedStudy(services: RenderedServices, req: RenderedRequest & { studyInstanceUID: string }): Promise<RenderedAnswer> {
  return renderedCollection(services, req, { studyInstanceUID: req.studyInstanceUID });
}

/** Retrieve Rendered Series: every image instance's first frame, multipart/related. */
export function retrieveRenderedSeries(
  services: RenderedServices,
  req: RenderedRequest & { studyInstanceUID: string; seriesInstanceUID: string },
): Promise<RenderedAnswer> {
  return renderedCollection(services, req, { studyInstanceUID: req.studyInstanceUID, seriesInstanceUID: req.seriesInstanceUID });
}

/** Retrieve Rendered Instance: its first frame as one image. */
export async function retrieveRenderedInstance(services: RenderedServices, req: RenderedRequest & Required<RetrieveTarget>): Promise<RenderedAnswer> {
  const { params, mediaType } = prepare(req, false);
  const row = await loadFrame(services, req, pick(req), 1);
  return singleImage(await renderRow(services, row, 1, params, mediaType), mediaType);
}

/** Retrieve Rendered Frames: one image for one frame, multipart/related for several (PS3.18 10.4.1.1.3). */
export async function retrieveRenderedFrames(
  services: RenderedServices,
  req: RenderedRequest & Required<RetrieveTarget> & { frameList: string },
): Promise<RenderedAnswer> {
  const numbers = parseFrameList(req.frameList);
  const { params, mediaType } = prepare(req, numbers.length > 1);
  const target = pick(req);
  const first = await loadFrame(services, req, target, numbers[0]);
  const firstImage = await renderRow(services, first, numbers[0], params, mediaType);
  if (numbers.length === 1) return singleImage(firstImage, mediaType);
  for (const n of numbers) checkFrameNumber(first, n);
  return multipartImages(services, mediaType, numbers.length, async (i) => {
    if (i === 0) return firstImage;
    const row = await loadFrame(services, req, target, numbers[i]);
    return renderRow(services, row, numbers[i], params, mediaType);
  }, false);
}

async function renderedCollection(services: RenderedServices, req: RenderedRequest, target: RetrieveTarget): Promise<RenderedAnswer> {
  const { params, mediaType } = prepare(req, true);
  const instances = await listImages(services, req, target);
  const load = async (i: number) => {
    const ref = instances[i];
    const row = await loadFrame(services, req, { studyInstanceUID: ref.studyInstanceUID, seriesInstanceUID: ref.seriesInstanceUID, sopInstanceUID: ref.sopInstanceUID }, 1);
    return renderRow(services, row, 1, params, mediaType);
  };
  // The first part is rendered before answering: a study that cannot be rendered gets a clean error.
  const first = await load(0);
  return multipartImages(services, mediaType, instances.length, (i) => (i === 0 ? Promise.resolve(first) : load(i)), true);
}

// ---------------------------------------------------------------- thumbnails

/** Study thumbnail: the middle image instance of the study (series, then instance number order). */
export async function retrieveStudyThumbnail(services: RenderedServices, req: RenderedRequest & { studyInstanceUID: string }): Promise<RenderedAnswer> {
  const { params, mediaType } = prepare(req, false);
  const instances = await listImages(services, req, { studyInstanceUID: req.studyInstanceUID });
  return thumbnailOfInstance(services, req, middle(instances), params, mediaType);
}

/** Series thumbnail: the middle image instance of the series. */
export async function retrieveSeriesThumbnail(
  services: RenderedServices,
  req: RenderedRequest & { studyInstanceUID: string; seriesInstanceUID: string },
): Promise<RenderedAnswer> {
  const { params, mediaType } = prepare(req, false);
  const instances = await listImages(services, req, { studyInstanceUID: req.studyInstanceUID, seriesInstanceUID: req.seriesInstanceUID });
  return thumbnailOfInstance(services, req, middle(instances), params, mediaType);
}

/** Instance thumbnail: its middle frame. */
export async function retrieveInstanceThumbnail(services: RenderedServices, req: RenderedRequest & Required<RetrieveTarget>): Promise<RenderedAnswer> {
  const { params, mediaType } = prepare(req, false);
  const instances = await listImages(services, req, pick(req));
  return thumbnailOfInstance(services, req, instances[0], params, mediaType);
}

/** Frame thumbnail: that frame, small. */
export async function retrieveFrameThumbnail(
  services: RenderedServices,
  req: RenderedRequest & Required<RetrieveTarget> & { frameList: string },
): Promise<RenderedAnswer> {
  const numbers = parseFrameList(req.frameList);
  if (numbers.length !== 1) throw new HttpError(400, 'a thumbnail is one image: name exactly one frame');
  const { params, mediaType } = prepare(req, false);
  return thumbnail(services, req, pick(req), numbers[0], params, mediaType);
}

async function thumbnailOfInstance(services: RenderedServices, req: RenderedRequest, ref: PixelInstanceRef, params: RenderParameters, mediaType: RenderedMediaType): Promise<RenderedAnswer> {
  const frame = Math.floor((Math.max(ref.frameCount, 1) - 1) / 2) + 1;
  const target = { studyInstanceUID: ref.studyInstanceUID, seriesInstanceUID: ref.seriesInstanceUID, sopInstanceUID: ref.sopInstanceUID };
  return thumbnail(services, req, target, frame, params, mediaType);
}

async function thumbnail(
  services: RenderedServices,
  req: RenderedRequest,
  target: Required<RetrieveTarget>,
  frameNumber: number,
  params: RenderParameters,
  mediaType: RenderedMediaType,
): Promise<RenderedAnswer> {
  const row = await loadFrame(services, req, target, frameNumber);
  const cache = services.thumbnailCache;
  const key = renderedImageKey({ blobKey: row.blobKey, frameNumber, mediaType, params: { ...params, thumbnail: THUMBNAIL_SIZE } });
  const hit = cache?.get(key);
  if (hit) return singleImage(hit.body, mediaType);
  const body = await renderRow(services, row, frameNumber, params, mediaType, THUMBNAIL_SIZE);
  cache?.set(key, { body, mediaType });
  return singleImage(body, mediaType);
}

// ---------------------------------------------------------------- shared steps

function pick(t: Required<RetrieveTarget>): Required<RetrieveTarget> {
  return { studyInstanceUID: t.studyInstanceUID, seriesInstanceUID: t.seriesInstanceUID, sopInstanceUID: t.sopInstanceUID };
}

function middle<T>(list: T[]): T {
  return list[Math.floor((list.length - 1) / 2)];
}

/** Parses parameters (400) and negotiates the media type (406) before any I/O. */
function prepare(req: RenderedRequest, multipart: boolean): { params: RenderParameters; mediaType: RenderedMediaType } {
  let params: RenderParameters;
  try {
    params = req.parameters ?? parseRenderParameters(req.query);
  } catch (err) {
    if (err instanceof RenderParameterError) throw new HttpError(400, err.message);
    throw err;
  }
  const ranges = parseAccept(req.accept, req.acceptQuery);
  const mediaType = negotiateRenderedType(ranges, multipart);
  if (!mediaType) throw new HttpError(406, `none of the acceptable media types (${describeRanges(ranges)}) can be served: ${OFFERED}`);
  return { params, mediaType };
}

/**
 * Picks image/jpeg or image/png from Accept ranges (highest q first, PS3.18 8.7.5). For multipart
 * resources `multipart/related; type=...` and the bare image type both name the part type.
 */
export function negotiateRenderedType(ranges: MediaRange[], multipart: boolean): RenderedMediaType | null {
  const offered: RenderedMediaType[] = ['image/jpeg', 'image/png'];
  for (const r of ranges) {
    let type = r.type;
    if (type === 'multipart/related' || type === 'multipart/*') {
      if (!multipart) continue;
      type = r.params.type?.toLowerCase() ?? 'image/jpeg';
    }
    const match = offered.find((o) => rangeCovers(type, o));
    if (match) return match;
  }
  return null;
}

function describeRanges(ranges: MediaRange[]): string {
  return ranges.map((r) => `${r.type}${Object.entries(r.params).map(([k, v]) => `; ${k}=${v}`).join('')}${r.q < 1 ? `; q=${r.q}` : ''}`).join(', ') || '(nothing)';
}

/** The image instances of a target (404 when the target is missing, 406 when it holds no image). */
async function listImages(services: RenderedServices, req: RenderedRequest, target: RetrieveTarget): Promise<PixelInstanceRef[]> {
  const knex = services.db.knex;
  let instances = await listPixelInstances(knex, target, req.restrictStudies);
  if (req.withheld && instances.length > 0) {
    const withheld = await req.withheld(instances.map((i) => i.sopInstanceUID));
    instances = instances.filter((i) => !withheld.has(i.sopInstanceUID));
    if (instances.length === 0) throw new HttpError(404, `every image of ${describeTarget(target)} is withheld from researchers pending burned-in annotation review`);
  }
  if (instances.length > 0) return instances;
  if (!(await targetExists(knex, target, req.restrictStudies))) throw await notFound(knex, target, req.restrictStudies);
  throw new HttpError(406, `${describeTarget(target)} has no pixel data to render; ${OFFERED}`);
}

async function loadFrame(services: RenderedServices, req: RenderedRequest, target: Required<RetrieveTarget>, frameNumber: number): Promise<PixelFrameRow> {
  const knex = services.db.knex;
  const row = await findPixelFrame(knex, target, frameNumber, req.restrictStudies);
  if (!row) throw await notFound(knex, target, req.restrictStudies);
  if (row.frameCount === 0 || (row.pixelDataOffset === null && row.transferSyntaxUID !== '1.2.840.10008.1.2.1.99')) {
    throw new HttpError(406, `instance ${target.sopInstanceUID} has no pixel data to render; ${OFFERED}`);
  }
  checkFrameNumber(row, frameNumber);
  return row;
}

function checkFrameNumber(row: PixelFrameRow, n: number): void {
  if (n > row.frameCount) throw new HttpError(404, `frame ${n} does not exist: instance ${row.sopInstanceUID} has ${row.frameCount} frame(s)`);
}

function describeTarget(t: RetrieveTarget): string {
  if (t.sopInstanceUID) return `instance ${t.sopInstanceUID}`;
  if (t.seriesInstanceUID) return `series ${t.seriesInstanceUID}`;
  return `study ${t.studyInstanceUID}`;
}

/** Reads, decodes, renders and encodes one frame. Maps pixel errors to 406 / 400 / 500 with a message. */
async function renderRow(
  services: RenderedServices,
  row: PixelFrameRow,
  frameNumber: number,
  params: RenderParameters,
  mediaType: RenderedMediaType,
  maxSide?: number,
): Promise<Buffer> {
  try {
    const attributes = readPixelAttributes(row.dataset);
    const bytes = await readFrameBytes(services.blobs, row, attributes, frameNumber, row.location);
    const decoded = await decodeFrame(bytes, row.transferSyntaxUID, attributes);
    const presentation = readPresentation(row.dataset, row.frameGroups);
    if (decoded.attributes.photometricInterpretation === 'PALETTE COLOR') {
      presentation.palette = (await readPaletteOf(services, row)) ?? undefined;
    }
    const pixels = renderFrame(decoded, presentation, { window: params.window });
    return await encodeRenderedImage(pixels, { mediaType, viewport: params.viewport, uriViewport: params.uriViewport, quality: params.quality, maxSide });
  } catch (err) {
    if (err instanceof RenderParameterError) throw new HttpError(400, err.message);
    if (err instanceof UnsupportedTransferSyntaxError || err instanceof UnsupportedRenderingError) {
      throw new HttpError(406, `instance ${row.sopInstanceUID} cannot be rendered: ${err.message}`);
    }
    if (err instanceof PixelDecodeError) {
      services.logger.warn({ err, sopInstanceUID: row.sopInstanceUID, frameNumber }, 'frame cannot be decoded');
      throw new HttpError(500, `frame ${frameNumber} of instance ${row.sopInstanceUID} cannot be decoded: ${err.message}`);
    }
    throw err;
  }
}

/** The palette, from inline values in the index or (when kept as bulk data) from the stored header. */
async function readPaletteOf(services: RenderedServices, row: PixelFrameRow) {
  if (!paletteNeedsHeader(row.dataset)) return readPalette(row.dataset, () => undefined);
  const ds = await readStoredDataSet(services.blobs, row);
  return readPalette(row.dataset, (tag) => {
    const value = elementValue(ds, parseInt(tag, 16));
    if (!value || ds.encoding.littleEndian) return value;
    return Buffer.from(value).swap16(); // OW in Big Endian
  });
}

function singleImage(body: Buffer, mediaType: RenderedMediaType): RenderedAnswer {
  return {
    status: 200,
    headers: { 'Content-Type': mediaType, 'Content-Length': String(body.length) },
    async send(out) {
      await writeWithBackpressure(out, body);
      await new Promise<void>((resolve) => out.end(resolve));
    },
    discard() {},
  };
}

/** multipart/related of `count` images rendered one at a time while streaming (one image in memory at a time). */
function multipartImages(
  services: RenderedServices,
  mediaType: RenderedMediaType,
  count: number,
  render: (i: number) => Promise<Buffer>,
  skipFailures: boolean,
): RenderedAnswer {
  const boundary = createBoundary();
  return {
    status: 200,
    headers: { 'Content-Type': multipartContentType(mediaType, boundary) },
    async send(out) {
      const writer = new MultipartWriter(out, boundary);
      for (let i = 0; i < count; i++) {
        let body: Buffer;
        try {
          body = await render(i);
        } catch (err) {
          if (!skipFailures || i === 0) throw err;
          services.logger.warn({ err, part: i + 1 }, 'rendered part skipped');
          continue;
        }
        await writer.writePart({ 'Content-Type': mediaType, 'Content-Length': String(body.length) }, body);
      }
      await writer.end();
    },
    discard() {},
  };
}

