import type { Request, Response, Router } from 'express';
import { requestBaseUrl } from '../http/base-url';
import { HttpError } from '../http/errors';
import type { DeidView } from './deid-view';
import type { IdentifierMask } from './identifier-mask';
import type { ByteBuffers } from './query-results';
import { searchForInstances, searchForSeries, searchForStudies, type SearchRequest, type SearchResponse } from './qido-rs';
import type { DicomwebServices } from './routes';

const DICOM_JSON = 'application/dicom+json';
/** Media ranges answered with DICOM JSON (PS3.18 8.7.3: application/json is accepted as an alias). */
const JSON_RANGES = new Set([DICOM_JSON, 'application/json', 'application/*', '*/*']);

type Search = typeof searchForStudies;

/**
 * Mounts the QIDO-RS resources (PS3.18 10.6, Table 10.6.1-1) on a DICOMweb router. Call it
 * before the router's error handler so that 400/406/503 answers get the DICOM JSON error body.
 */
export function registerQidoRoutes(router: Router, services: DicomwebServices): void {
  const handle = (search: Search) => async (req: Request, res: Response) => {
    assertAcceptsJson(req.headers.accept);
    const request: SearchRequest = {
      query: req.query as Record<string, unknown>,
      studyInstanceUID: param(req, 'study'),
      seriesInstanceUID: param(req, 'series'),
      dicomwebBaseUrl: `${requestBaseUrl(req, services.publicBaseUrl)}/dicomweb`,
    };
    const result = await search(services, request, { restrictStudies: res.locals.restrictStudies, deid: res.locals.deidView as DeidView | undefined });
    const mask = res.locals.identifierMask as IdentifierMask | undefined;
    // A data manager's answers withhold patient identifiers (the policy's column level); the match itself is unchanged.
    send(res, mask ? { status: result.status, body: result.body.map((d) => mask.apply(d)), warnings: result.warnings } : result);
  };
  router.get('/studies', handle(searchForStudies));
  router.get('/series', handle(searchForSeries));
  router.get('/instances', handle(searchForInstances));
  router.get('/studies/:study/series', handle(searchForSeries));
  router.get('/studies/:study/instances', handle(searchForInstances));
  router.get('/studies/:study/series/:series/instances', handle(searchForInstances));
}

function param(req: Request, name: string): string | undefined {
  const v = req.params[name];
  return typeof v === 'string' ? v : undefined;
}

function send(res: Response, result: SearchResponse): void {
  for (const w of result.warnings.slice(0, 20)) res.append('Warning', `299 imaging-lake ${quoteWarning(w)}`);
  res.status(result.status).type(`${DICOM_JSON}; charset=utf-8`);
  if (result.writeBytes) {
    const { buffer, length } = result.writeBytes(responseBuffers);
    // 'finish': the last bytes are handed to the operating system, the buffer may serve the next answer.
    res.once('finish', () => responseBuffers.give(buffer));
    res.send(buffer.subarray(0, length));
    return;
  }
  res.send(encodeUtf8(result.json ?? JSON.stringify(result.body)));
}

/** Buffers of answers already sent, kept for the next ones (at most SPARE_COUNT, each at most SPARE_MAX_BYTES). */
const spareBuffers: Buffer[] = [];
const SPARE_COUNT = 4;
const SPARE_MAX_BYTES = 4 << 20;

/**
 * The buffers study answers are written into, taken from the spare buffers of earlier answers
 * when one is large enough. A study page of ~1 MB then costs one copy of its rows' texts, in
 * memory that was already paid for in page faults and garbage collections. A buffer is given
 * back once its bytes are sent; one never given back (the connection closed first) is left to
 * the garbage collector.
 */
export const responseBuffers: ByteBuffers = {
  take(size: number): Buffer {
    const at = spareBuffers.findIndex((b) => b.length >= size);
    return at >= 0 ? spareBuffers.splice(at, 1)[0] : Buffer.allocUnsafeSlow(Math.max(size, 64 << 10));
  },
  give(buffer: Buffer): void {
    if (buffer.length <= SPARE_MAX_BYTES && spareBuffers.length < SPARE_COUNT && !spareBuffers.includes(buffer)) spareBuffers.push(buffer);
  },
};

/**
 * The UTF-8 bytes of a response text. A text of ASCII characters only (byte length = length:
 * every other character takes two or more bytes) is copied as Latin-1, its bytes as they are,
 * which costs a fraction of the UTF-8 encoder's pass over a study page of ~1 MB (express would
 * otherwise encode the string itself).
 */
export function encodeUtf8(text: string): Buffer {
  return Buffer.from(text, Buffer.byteLength(text, 'utf8') === text.length ? 'latin1' : 'utf8');
}

/** 406 unless the Accept header allows DICOM JSON; XML (multipart/related; type=application/dicom+xml) is not offered. */
export function assertAcceptsJson(accept: string | undefined): void {
  if (!accept || accept.trim() === '') return;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';').map((s) => s.trim().toLowerCase());
    const q = params.find((p) => p.startsWith('q='));
    if (q && Number(q.slice(2)) === 0) continue;
    if (JSON_RANGES.has(type)) return;
  }
  throw new HttpError(406, `QIDO-RS answers ${DICOM_JSON} only (or application/json); the Accept header "${accept.slice(0, 200)}" does not allow it`);
}

function quoteWarning(text: string): string {
  return `"${text.replace(/[\r\n]+/g, ' ').replace(/["\\]/g, "'").slice(0, 500)}"`;
}
