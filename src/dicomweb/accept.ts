/**
 * Content negotiation for WADO-RS (PS3.18 8.7.3 Acceptable Media Types, 8.7.4 Accept query
 * parameter and header; RFC 9110 12.5.1 Accept). Tolerant of what real clients send: quoted or
 * unquoted parameters, several alternatives with q values, wildcards, missing `type` parameters
 * and the media type aliases dicomweb-client and OHIF use (image/x-jls, image/jhc ...).
 *
 * Policy, documented once here:
 * - Instances: `transfer-syntax=*` or no transfer-syntax means "as stored" (most archives do the
 *   same, although PS3.18 names Explicit VR Little Endian the default of application/dicom).
 * - Frames and pixel bulk data: `transfer-syntax=*` means as stored; `application/octet-stream`
 *   without it means uncompressed (PS3.18 8.7.3.5.2), so compressed frames then need the transcode
 *   hook; an image/* type without it is served as stored when the stored syntax has that type.
 */
import mediaTypeData from '../../dicomweb/media-types.json';
import { HttpError } from '../http/errors';
import { splitOutsideQuotes } from './media-type';

/** One alternative of an Accept header. */
export interface MediaRange {
  /** type/subtype, lower case; may be a wildcard (`*\/*`, `image/*`). Aliases are resolved. */
  type: string;
  /** Parameter names lower case, values unquoted; `q` removed. */
  params: Record<string, string>;
  q: number;
  /** Position in the header, the tie-breaker between equal q values. */
  index: number;
}

interface TransferSyntaxInfo {
  name: string;
  mediaType: string;
  native?: boolean;
  deflated?: boolean;
  bigEndian?: boolean;
  video?: boolean;
}

const SYNTAXES = mediaTypeData.transferSyntaxes as Record<string, TransferSyntaxInfo>;
const DEFAULT_SYNTAX = mediaTypeData.defaultTransferSyntax as Record<string, string>;
const ALIASES = mediaTypeData.aliases as Record<string, string>;

export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
export const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2';
export const EXPLICIT_VR_BIG_ENDIAN = '1.2.840.10008.1.2.2';
const OCTET_STREAM = 'application/octet-stream';
const DICOM = 'application/dicom';

/** Facts about a Transfer Syntax from `dicomweb/media-types.json`; unknown UIDs are treated as encapsulated, served as octet-stream. */
export function describeSyntax(uid: string): TransferSyntaxInfo {
  return SYNTAXES[uid] ?? { name: uid, mediaType: OCTET_STREAM };
}

/** Every Transfer Syntax this server knows a frame media type for (for the capabilities answer). */
export function knownTransferSyntaxes(): Array<{ uid: string } & TransferSyntaxInfo> {
  return Object.entries(SYNTAXES).map(([uid, info]) => ({ uid, ...info }));
}

/** Parses an Accept header (or the `accept` query parameter, which takes precedence: PS3.18 8.3.3.1). Absent means `*\/*`. Ranges with q=0 are dropped. */
export function parseAccept(header: string | string[] | undefined, queryAccept?: unknown): MediaRange[] {
  let text = typeof queryAccept === 'string' && queryAccept.trim() ? queryAccept : Array.isArray(header) ? header.join(',') : header;
  if (!text || !text.trim()) text = '*/*';
  const ranges: MediaRange[] = [];
  for (const piece of splitOutsideQuotes(text, ',')) {
    const parts = splitOutsideQuotes(piece, ';');
    const raw = parts.shift()?.trim().toLowerCase() ?? '';
    // A lone `*` is what some clients send for `*/*`.
    const type = raw === '*' ? '*/*' : raw;
    if (!/^[\w!#$&^.+*-]+\/[\w!#$&^.+*-]+$/.test(type)) continue;
    const params: Record<string, string> = {};
    let q = 1;
    for (const p of parts) {
      const eq = p.indexOf('=');
      if (eq <= 0) continue;
      const name = p.slice(0, eq).trim().toLowerCase();
      const value = unquote(p.slice(eq + 1).trim());
      if (name === 'q') {
        const n = Number(value);
        q = Number.isFinite(n) ? Math.min(1, Math.max(0, n)) : 1;
      } else {
        params[name] = name === 'type' ? canonicalType(value.toLowerCase()) : value;
      }
    }
    if (q > 0) ranges.push({ type: canonicalType(type), params, q, index: ranges.length });
  }
  return ranges.sort((a, b) => b.q - a.q || a.index - b.index);
}

function unquote(value: string): string {
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) return value.slice(1, -1).replace(/\\(.)/g, '$1');
  return value;
}

function canonicalType(type: string): string {
  return ALIASES[type] ?? type;
}

/** True when a media range (`*\/*`, `image/*`, `image/jpeg`) covers a concrete media type. */
export function rangeCovers(range: string, type: string): boolean {
  if (range === '*/*' || range === type) return true;
  return range.endsWith('/*') && type.startsWith(range.slice(0, -1));
}

/** A Transfer Syntax conversion the server can make, and its cost (0 = as stored). */
export type Conversion = 'stored' | 'byteswap' | 'transcode';

/** How to answer: one part or a multipart/related body, the part media type and its Transfer Syntax. */
export interface Representation {
  multipart: boolean;
  partType: string;
  transferSyntax: string;
  conversion: Conversion;
}

/** Answers whether the optional transcode hook converts `from` into `to`. */
export type CanTranscode = (from: string, to: string) => boolean;

/** One acceptable (multipart?, part type, requested transfer syntax) taken from a media range. */
interface Wish {
  multipart: boolean | 'either';
  partType: string;
  /** undefined: no transfer-syntax parameter; '*': any. */
  transferSyntax: string | undefined;
  q: number;
  index: number;
}

/** Expands media ranges into wishes for resources whose natural answer is multipart of `defaultPartType`. */
function wishes(ranges: MediaRange[], defaultPartType: string): Wish[] {
  const out: Wish[] = [];
  for (const r of ranges) {
    const ts = r.params['transfer-syntax'];
    if (r.type === 'multipart/related' || r.type === 'multipart/*') {
      out.push({ multipart: true, partType: r.params.type ?? defaultPartType, transferSyntax: ts, q: r.q, index: r.index });
    } else if (r.type === '*/*') {
      out.push({ multipart: 'either', partType: '*/*', transferSyntax: ts ?? '*', q: r.q, index: r.index });
    } else if (!r.type.startsWith('multipart/')) {
      out.push({ multipart: false, partType: r.type, transferSyntax: ts, q: r.q, index: r.index });
    }
  }
  return out;
}

/** Picks the highest-q wish that `serve` can satisfy, preferring the cheapest conversion among equal q. */
function choose(list: Wish[], serve: (w: Wish) => Representation | null): Representation | null {
  let best: { rep: Representation; q: number } | null = null;
  const cost: Record<Conversion, number> = { stored: 0, byteswap: 1, transcode: 2 };
  for (const w of list) {
    if (best && w.q < best.q) break;
    const rep = serve(w);
    if (!rep) continue;
    if (!best || cost[rep.conversion] < cost[best.rep.conversion]) best = { rep, q: w.q };
  }
  return best?.rep ?? null;
}

/**
 * Negotiates a DICOM instances answer (PS3.18 8.7.3.2, 10.4.1.1.1-3) over instances stored in
 * `storedSyntaxes`: multipart/related; type="application/dicom" always, single part
 * application/dicom only when `singlePart` (one instance). The answer is uniform: one requested
 * Transfer Syntax (or "as stored") for every instance; null when nothing acceptable can be served.
 */
export function negotiateInstances(
  ranges: MediaRange[],
  storedSyntaxes: string[],
  options: { singlePart: boolean; canTranscode?: CanTranscode },
): (Omit<Representation, 'transferSyntax' | 'conversion'> & { transferSyntax: string | '*' }) | null {
  const list = wishes(ranges, DICOM);
  let best: { multipart: boolean; transferSyntax: string; q: number; transcodes: number } | null = null;
  for (const w of list) {
    if (best && w.q < best.q) break;
    if (!rangeCovers(w.partType, DICOM)) continue;
    const multipart = w.multipart === 'either' ? true : w.multipart;
    if (!multipart && !options.singlePart) continue;
    const wanted = w.transferSyntax && w.transferSyntax !== '*' ? w.transferSyntax : '*';
    let transcodes = 0;
    let ok = true;
    if (wanted !== '*') {
      for (const stored of storedSyntaxes) {
        if (stored === wanted) continue;
        if (options.canTranscode?.(stored, wanted)) transcodes++;
        else ok = false;
      }
    }
    if (!ok) continue;
    if (!best || transcodes < best.transcodes) best = { multipart, transferSyntax: wanted, q: w.q, transcodes };
  }
  return best ? { multipart: best.multipart, partType: DICOM, transferSyntax: best.transferSyntax } : null;
}

/**
 * Negotiates frames or pixel bulk data (PS3.18 8.7.3.3, 10.4.1.1.4-5) stored in `stored`.
 * `singlePart` allows a bare media type (exactly one frame or value in the answer).
 */
export function negotiatePixels(
  ranges: MediaRange[],
  stored: string,
  options: { singlePart: boolean; canTranscode?: CanTranscode },
): Representation | null {
  const info = describeSyntax(stored);
  const storedType = info.mediaType;
  // Native Little Endian pixel bytes are the same in every LE syntax: label them with the standard's default.
  const storedLabel = samePixelBytes(stored, EXPLICIT_VR_LITTLE_ENDIAN) ? EXPLICIT_VR_LITTLE_ENDIAN : stored;
  const asStored = (multipart: boolean): Representation => ({ multipart, partType: storedType, transferSyntax: storedLabel, conversion: 'stored' });
  const convert = (multipart: boolean, target: string): Representation | null => {
    const partType = describeSyntax(target).mediaType;
    if (target === stored || samePixelBytes(stored, target)) return { multipart, partType, transferSyntax: target, conversion: 'stored' };
    if (info.bigEndian && samePixelBytes(target, EXPLICIT_VR_LITTLE_ENDIAN)) return { multipart, partType, transferSyntax: target, conversion: 'byteswap' };
    if (options.canTranscode?.(stored, target)) return { multipart, partType, transferSyntax: target, conversion: 'transcode' };
    return null;
  };
  const serve = (w: Wish): Representation | null => {
    const multipart = w.multipart === 'either' ? true : w.multipart;
    if (!multipart && !options.singlePart) return null;
    const specific = w.transferSyntax && w.transferSyntax !== '*' ? w.transferSyntax : undefined;
    if (w.partType.includes('*')) {
      if (specific) return rangeCovers(w.partType, describeSyntax(specific).mediaType) ? convert(multipart, specific) : null;
      if (rangeCovers(w.partType, storedType)) return asStored(multipart);
      return rangeCovers(w.partType, OCTET_STREAM) ? convert(multipart, EXPLICIT_VR_LITTLE_ENDIAN) : null;
    }
    if (specific) return describeSyntax(specific).mediaType === w.partType ? convert(multipart, specific) : null;
    // `transfer-syntax=*` allows the stored form (PS3.18 8.7.3.5.2): what OHIF sends as
    // `type=application/octet-stream; transfer-syntax=*` gets compressed frames under their own
    // media type (image/jpeg ...), labelled with their transfer syntax. No parameter means the
    // type's default syntax, except that an image type is served in whichever of its syntaxes is stored.
    if (w.transferSyntax === '*' && (w.partType === storedType || w.partType === OCTET_STREAM)) return asStored(multipart);
    if (w.partType === storedType && w.partType !== OCTET_STREAM && w.transferSyntax === undefined) return asStored(multipart);
    const fallback = DEFAULT_SYNTAX[w.partType];
    return fallback ? convert(multipart, fallback) : null;
  };
  return choose(wishes(ranges, OCTET_STREAM), serve);
}

/** Native Little Endian syntaxes share their pixel bytes. */
function samePixelBytes(a: string, b: string): boolean {
  return LITTLE_ENDIAN_PIXELS.has(a) && LITTLE_ENDIAN_PIXELS.has(b);
}

/** Syntaxes whose frames are plain Little Endian pixel bytes (the .98 fragments hold exactly those). */
const LITTLE_ENDIAN_PIXELS = new Set([IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, '1.2.840.10008.1.2.1.98']);

/**
 * Negotiates a non-pixel bulk data value (PS3.18 8.7.3.3.1): application/octet-stream, multipart
 * or single part, or the value's own media type when it has one (e.g. an encapsulated PDF).
 */
export function negotiateBulkValue(ranges: MediaRange[], ownType?: string): { multipart: boolean; partType: string } | null {
  const offered = [OCTET_STREAM, ...(ownType ? [ownType.toLowerCase()] : [])];
  for (const w of wishes(ranges, OCTET_STREAM)) {
    const multipart = w.multipart === 'either' ? true : w.multipart;
    const match = offered.find((t) => rangeCovers(w.partType, t));
    if (match) return { multipart, partType: w.partType === '*/*' ? OCTET_STREAM : match };
  }
  return null;
}

/** Negotiates a metadata answer (PS3.18 10.4.1.1.2): DICOM JSON only; XML is not offered. */
export function negotiateMetadata(ranges: MediaRange[]): string | null {
  for (const r of ranges) {
    if (r.type === 'application/json') return 'application/json';
    if (rangeCovers(r.type, 'application/dicom+json')) return 'application/dicom+json';
  }
  return null;
}

/** The 406 answer, naming what was asked and what is on offer. */
export function notAcceptable(ranges: MediaRange[] | string, offered: string): HttpError {
  const asked = typeof ranges === 'string' ? ranges : ranges.map(describeRange).join(', ') || '(nothing)';
  return new HttpError(406, `none of the acceptable media types (${asked}) can be served: ${offered}`);
}

function describeRange(r: MediaRange): string {
  const params = Object.entries(r.params).map(([k, v]) => `; ${k}=${v}`).join('');
  return `${r.type}${params}${r.q < 1 ? `; q=${r.q}` : ''}`;
}
