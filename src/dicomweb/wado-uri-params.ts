/**
 * The query of a WADO-URI request (PS3.18 chapter 9, URI Service): parsed and checked before any
 * I/O. A missing or malformed parameter is a 400 naming it (PS3.18 Table 8.1-1 for UIDs);
 * parameters this server does not honour are listed so the answer can say so in a Warning;
 * unknown parameters are ignored (PS3.18 8.3.2).
 */
import { isValidUid } from '../dicom/validate-instance';
import { MAX_VIEWPORT_SIDE, parseQuality, RenderParameterError, type RenderParameters, type UriViewport } from '../dicom/pixel-render-params';
import type { RetrieveTarget } from '../db/wado-index';
import { HttpError } from '../http/errors';
import { parseAccept, type MediaRange } from './accept';

/** A WADO-URI request, parsed. */
export interface WadoUriQuery {
  /** Study, series and SOP Instance UIDs as sent (a researcher's are de-identified ones). */
  target: Required<RetrieveTarget>;
  /** The `contentType` media types, most preferred first (PS3.18 9.1.2.2.1); empty when absent. */
  contentTypes: MediaRange[];
  /** `transferSyntax` (PS3.18 9.4.1.2): the Transfer Syntax UID wanted for application/dicom; `*` (any) is read as absent. */
  transferSyntax?: string;
  /** `frameNumber` (PS3.18 9.5.1.2.1), from 1. */
  frameNumber?: number;
  /** `windowCenter`/`windowWidth`, `imageQuality`, `rows`, `columns`, `region` as rendering options. */
  render: RenderParameters;
  /** `anonymize=yes` (PS3.18 9.4.1.2.3). */
  anonymize: boolean;
  /** Parameters understood but not honoured: the answer names them in a Warning. */
  ignored: string[];
}

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const UNSIGNED = /^\d{1,9}$/;

/** Parses a WADO-URI query (express `req.query`); throws HttpError 400 with a message naming the parameter. */
export function parseWadoUriQuery(query: Record<string, unknown>): WadoUriQuery {
  const requestType = single(query, 'requestType');
  if (requestType === undefined) throw new HttpError(400, 'requestType=WADO is required (PS3.18 9.1.2.1)');
  if (requestType !== 'WADO') throw new HttpError(400, `requestType "${requestType.slice(0, 40)}" is not supported: only WADO`);
  const target = {
    studyInstanceUID: uid(query, 'studyUID'),
    seriesInstanceUID: uid(query, 'seriesUID'),
    sopInstanceUID: uid(query, 'objectUID'),
  };

  const contentType = single(query, 'contentType');
  const contentTypes = contentType === undefined || contentType.trim() === '' ? [] : parseAccept(undefined, contentType);
  if (contentType !== undefined && contentType.trim() !== '' && contentTypes.length === 0) {
    throw new HttpError(400, `invalid contentType "${contentType.slice(0, 100)}": it must be a comma-separated list of media types, e.g. image/jpeg or application/dicom`);
  }

  // `*` (any syntax: as stored) is what OHIF's wadouri image loader sends, as in a WADO-RS Accept.
  const askedSyntax = single(query, 'transferSyntax');
  const transferSyntax = askedSyntax === '*' ? undefined : askedSyntax;
  if (transferSyntax !== undefined && !isValidUid(transferSyntax)) throw new HttpError(400, `invalid transferSyntax "${transferSyntax.slice(0, 70)}": it must be a Transfer Syntax UID`);

  const anonymizeText = single(query, 'anonymize');
  if (anonymizeText !== undefined && anonymizeText !== 'yes') throw new HttpError(400, `invalid anonymize "${anonymizeText.slice(0, 20)}": the only value is yes`);

  const frameText = single(query, 'frameNumber');
  const frameNumber = frameText === undefined ? undefined : positive(frameText, 'frameNumber');

  const ignored: string[] = [];
  for (const name of ['annotation', 'imageAnnotation', 'presentationUID', 'presentationSeriesUID']) {
    if (query[name] !== undefined) ignored.push(name);
  }
  return {
    target,
    contentTypes,
    ...(transferSyntax !== undefined ? { transferSyntax } : {}),
    ...(frameNumber !== undefined ? { frameNumber } : {}),
    render: parseRendering(query),
    anonymize: anonymizeText === 'yes',
    ignored,
  };
}

/** windowCenter/windowWidth (9.5.1.2.6), imageQuality (9.5.1.2.3), rows/columns (9.5.1.2.4), region (9.5.1.2.5). */
function parseRendering(query: Record<string, unknown>): RenderParameters {
  const render: RenderParameters = {};
  const center = single(query, 'windowCenter');
  const width = single(query, 'windowWidth');
  if ((center === undefined) !== (width === undefined)) throw new HttpError(400, 'windowCenter and windowWidth must be given together');
  if (center !== undefined && width !== undefined) {
    const c = decimal(center, 'windowCenter');
    const w = decimal(width, 'windowWidth');
    // PS3.3 C.11.2.1.2: a LINEAR window is at least 1 wide.
    if (w < 1) throw new HttpError(400, `invalid windowWidth ${width.slice(0, 30)}: it must be at least 1`);
    render.window = { center: c, width: w, function: 'linear' };
  }
  const quality = single(query, 'imageQuality');
  if (quality !== undefined) {
    try {
      render.quality = parseQuality(quality, 'imageQuality');
    } catch (err) {
      if (err instanceof RenderParameterError) throw new HttpError(400, err.message);
      throw err;
    }
  }
  const sizing: UriViewport = {};
  const rows = single(query, 'rows');
  if (rows !== undefined) sizing.rows = side(rows, 'rows');
  const columns = single(query, 'columns');
  if (columns !== undefined) sizing.columns = side(columns, 'columns');
  const region = single(query, 'region');
  if (region !== undefined) sizing.region = parseRegion(region);
  if (Object.keys(sizing).length > 0) render.uriViewport = sizing;
  return render;
}

/** `region=xmin,ymin,xmax,ymax`: fractions of the image, 0 <= min < max <= 1. */
function parseRegion(text: string): NonNullable<UriViewport['region']> {
  const parts = text.split(',').map((p) => p.trim());
  const usage = 'region must be xmin,ymin,xmax,ymax with decimals from 0.0 to 1.0 and min < max';
  if (parts.length !== 4 || !parts.every((p) => DECIMAL.test(p))) throw new HttpError(400, `invalid region "${text.slice(0, 100)}": ${usage}`);
  const [xmin, ymin, xmax, ymax] = parts.map(Number);
  if (!(xmin >= 0 && ymin >= 0 && xmax <= 1 && ymax <= 1 && xmin < xmax && ymin < ymax)) throw new HttpError(400, `invalid region "${text.slice(0, 100)}": ${usage}`);
  return { xmin, ymin, xmax, ymax };
}

function single(query: Record<string, unknown>, name: string): string | undefined {
  const v = query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new HttpError(400, `${name} must be given once`);
  return v;
}

function uid(query: Record<string, unknown>, name: string): string {
  const v = single(query, name);
  if (v === undefined || v === '') throw new HttpError(400, `${name} is required (PS3.18 9.1.2.1)`);
  if (!isValidUid(v)) throw new HttpError(400, `invalid ${name} "${v.slice(0, 70)}": it must be a UID (PS3.5 9.1)`);
  return v;
}

function decimal(text: string, name: string): number {
  const t = text.trim();
  const n = Number(t);
  if (!DECIMAL.test(t) || !Number.isFinite(n)) throw new HttpError(400, `invalid ${name} "${text.slice(0, 30)}": it must be a decimal number`);
  return n;
}

function positive(text: string, name: string): number {
  const t = text.trim();
  const n = Number(t);
  if (!UNSIGNED.test(t) || n < 1) throw new HttpError(400, `invalid ${name} "${text.slice(0, 30)}": it must be a positive integer`);
  return n;
}

function side(text: string, name: string): number {
  const n = positive(text, name);
  if (n > MAX_VIEWPORT_SIDE) throw new HttpError(400, `invalid ${name} ${n}: at most ${MAX_VIEWPORT_SIDE}`);
  return n;
}
