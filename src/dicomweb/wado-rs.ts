/**
 * WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data, answered from the index and
 * streamed from the blob store. Frame and bulk byte positions were recorded at ingest, so a frame
 * is ranged reads of its own bytes, never a parse of the instance.
 *
 * Decisions (the conformance statement repeats them):
 * - Missing study, series, instance or frame: 404 with a body naming what is missing; a
 *   malformed frame list: 400. An instance without pixel data asked for frames: 404.
 * - Frames the index could not locate (BitsAllocated 1 with unaligned frames, Deflated data sets)
 *   take a slower path that reads only what is needed (1-bit) or inflates the instance (Deflated).
 * - Frames of a video Transfer Syntax cannot be cut out: 406, naming the bulk data URI to use.
 * - Range (RFC 9110 14) is honoured on bulk data, single part or inside the one multipart part.
 */
import type { Knex } from 'knex';
import { effectiveFrameSyntax } from './jpeg-label';
import { inflateRawSync } from 'node:zlib';
import { Readable, type Writable } from 'node:stream';
import type { Database } from '../db/database';
import type { IndexChangeHook } from './index-change-hook';
import type { DeidView } from './deid-view';
import { coalesceChunks } from './deid-stream';
import type { IdentifierMask } from './identifier-mask';
import type { PreparedAnswer } from './prepared-answer';
import { deidentifiedTransferSyntax, rewriteInstance } from '../dicom/deidentify-instance';
import {
  findMetadataPage,
  findMissingLevel,
  findStoredFrames,
  findStoredInstance,
  findStoredInstances,
  type MetadataCursor,
  type PixelDescription,
  type RetrieveTarget,
  type StoredFrames,
  type StoredInstance,
  type StudyRestriction,
} from '../db/wado-index';
import { DataSetWalker, type RawElement } from '../dicom/data-set-walker';
import { describeTransferSyntax, EXPLICIT_LITTLE, type DataSetEncoding } from '../dicom/transfer-syntax';
import type { ByteRange, DicomJson } from '../dicom/types';
import { BINARY_WORD_SIZE } from '../dicom/value-representation';
import { HttpError, ServiceUnavailableError } from '../http/errors';
import type { Logger } from '../logger';
import { BlobNotFoundError, BlobStoreUnavailableError, type BlobStore } from '../storage/blob-store';
import { ReadBufferPool } from '../storage/read-buffer-pool';
import {
  describeSyntax,
  negotiateBulkValue,
  negotiateInstances,
  negotiateMetadata,
  negotiatePixels,
  notAcceptable,
  parseAccept,
  type Representation,
} from './accept';
import { closingLength, createBoundary, CRLF, MAX_QUEUED_BYTES, multipartContentType, MultipartWriter, partHeadText, partOverhead, writeWithBackpressure } from './multipart-writer';
import { fillRun, groupRuns, slabPool, type FilledRun, type PackablePart, type PartRun } from './packed-parts';

/** Optional seam for the transcoding engineer: converts stored bytes to another Transfer Syntax. */
export interface TranscodeHook {
  /** Cheap check, no I/O: can `from` be converted to `to`? */
  canTranscode(from: string, to: string): boolean;
  /** The whole instance re-encoded in `to`, as Part 10 with File Meta Information. `open` streams the stored instance as Part 10. */
  transcodeInstance(input: { instance: StoredInstance; open: () => Promise<Readable> }, to: string): Promise<Readable>;
  /** One frame's pixel data (as stored) re-encoded in `to`. */
  transcodeFrame(input: { frame: Buffer; frameNumber: number; from: string; pixel: PixelDescription }, to: string): Promise<Buffer>;
}

/** What WADO-RS needs from the rest of the server (a subset of DicomwebServices). */
export interface WadoServices {
  db: Database;
  blobs: BlobStore;
  logger: Logger;
  publicBaseUrl?: string;
  transcoder?: TranscodeHook;
  /** Work done in the same transaction as an index change (the FHIR ImagingStudy view). */
  onIndexChange?: IndexChangeHook;
}

/** Common request fields: the Accept header (or `accept` query parameter) and the row-level filter. */
export interface WadoRequest {
  accept?: string | string[];
  acceptQuery?: unknown;
  /** Limits the studies this request may see; filtered-out targets answer 404 like missing ones. */
  restrictStudies?: StudyRestriction;
  /** A researcher's view (PS3.15 Annex E): the target's UIDs are already resolved to the originals. */
  deid?: DeidView;
  /** A data manager's identifier mask (identifier-mask.ts): metadata and instances withhold what it names. */
  mask?: IdentifierMask;
}

/** A prepared answer: status and headers are final; `send` streams the body with backpressure. */
export type WadoAnswer = PreparedAnswer;

const MAX_FRAMES_PER_REQUEST = 10_000;
const METADATA_PAGE = 200;
/** Instances at most this size are read whole into memory instead of streamed. */
const WHOLE_READ_BYTES = 1024 * 1024;
/** Parts opened or read ahead of the one being written in a multi-instance answer ... */
const PREFETCH_PARTS = 16;
/** ... and their bytes (the next part is always opened, whatever its size). */
const PREFETCH_BYTES = 8 * 1024 * 1024;
/**
 * Read buffers of streamed instances, given back once their socket write has completed: a study
 * retrieve allocates no memory per chunk (see ReadBufferPool). 4 MiB per read: each read is a
 * hand-off to libuv's thread pool and each chunk a socket write, and an OCT visit retrieve took
 * 0.79 ms of server CPU per MB at 4 MiB against 1.09 at 1 MiB (2-core machine, interleaved runs).
 * A stream has two or three in use (being read or read ahead, being written); as many as one
 * stream needs stay allocated between answers.
 */
const instanceReadPool = new ReadBufferPool(4 * 1024 * 1024, 4);
const releaseReadBuffer = (chunk: Buffer) => instanceReadPool.release(chunk);

// ---------------------------------------------------------------- instances (PS3.18 10.4.1.1.1-3)

/** Retrieve Study (PS3.18 10.4.1.1.1): every instance of the study, multipart/related application/dicom. */
export function retrieveStudy(services: WadoServices, req: WadoRequest & { studyInstanceUID: string }): Promise<WadoAnswer> {
  return retrieveInstances(services, req, { studyInstanceUID: req.studyInstanceUID });
}

/** Retrieve Series (PS3.18 10.4.1.1.1). */
export function retrieveSeries(services: WadoServices, req: WadoRequest & { studyInstanceUID: string; seriesInstanceUID: string }): Promise<WadoAnswer> {
  return retrieveInstances(services, req, { studyInstanceUID: req.studyInstanceUID, seriesInstanceUID: req.seriesInstanceUID });
}

/** Retrieve Instance (PS3.18 10.4.1.1.1): multipart, or single part application/dicom when that is what is accepted. */
export function retrieveInstance(services: WadoServices, req: WadoRequest & Required<RetrieveTarget>): Promise<WadoAnswer> {
  return retrieveInstances(services, req, req);
}

async function retrieveInstances(services: WadoServices, req: WadoRequest, target: RetrieveTarget): Promise<WadoAnswer> {
  let instances = await findStoredInstances(services.db.knex, pickTarget(target), req.restrictStudies);
  if (instances.length === 0) throw await notFound(services.db.knex, target, req.restrictStudies);
  const deid = req.deid;
  if (deid) {
    // Withheld instances (burned-in annotation not cleared) are left out of a researcher's retrieve.
    const withheld = await deid.withheld(instances.map((i) => i.sopInstanceUID));
    instances = instances.filter((i) => !withheld.has(i.sopInstanceUID));
    if (instances.length === 0) throw new HttpError(404, `every instance of ${target.sopInstanceUID ?? target.seriesInstanceUID ?? target.studyInstanceUID} is withheld from researchers pending burned-in annotation review`);
  }
  const ctx = deid ? await deid.contextOf(target.studyInstanceUID) : undefined;
  const mask = deid ? undefined : req.mask;
  const ranges = parseAccept(req.accept, req.acceptQuery);
  // A researcher's instances come in the syntax the de-identifier writes (the stored one, or Explicit VR LE for native ones); masked ones alike.
  const delivered = (i: StoredInstance) => (deid ? deid.engine.transferSyntaxOf(i.transferSyntaxUID) : mask ? deidentifiedTransferSyntax(i.transferSyntaxUID) : i.transferSyntaxUID);
  const stored = [...new Set(instances.map(delivered))];
  // A researcher gets the stored syntax only: a transcoded header would not be de-identified (nor masked).
  const transcoder = deid || mask ? undefined : services.transcoder;
  const plan = negotiateInstances(ranges, stored, {
    singlePart: target.sopInstanceUID !== undefined,
    canTranscode: transcoder ? (from, to) => transcoder.canTranscode(from, to) : undefined,
  });
  if (!plan) {
    throw notAcceptable(
      ranges,
      `instances are offered as multipart/related; type="application/dicom" (transfer-syntax=* or ${stored.join(', ')})` +
        (target.sopInstanceUID ? ' or application/dicom' : '') +
        (deid || mask
          ? `; ${deid ? 'de-identified' : 'identifier-masked'} instances are offered in their stored transfer syntax only`
          : transcoder
            ? ''
            : '; no transcoder is configured, so no other transfer syntax can be produced'),
    );
  }
  const parts = instances.map((instance): InstancePart => {
    const ts = plan.transferSyntax === '*' ? delivered(instance) : plan.transferSyntax;
    const transcode = ts !== delivered(instance);
    const prefix = instance.hasFileMeta ? null : buildFileMeta(instance);
    const headers: Record<string, string> = { 'Content-Type': `application/dicom; transfer-syntax=${ts}` };
    if (deid && ctx) {
      // The header is rewritten (PS3.15 Annex E), so the length is known only once streamed.
      return { headers, length: undefined, body: async () => coalesceChunks(await deid.engine.deidentifyInstance(services.blobs, instance, ctx)) };
    }
    if (mask) return { headers, length: undefined, body: async () => coalesceChunks(await rewriteInstance(services.blobs, instance, mask.apply, mask.key)) };
    // The transcoder gets chunks it may keep: not from the pool, which takes back what the writer wrote.
    if (transcode) return { headers, length: undefined, body: () => transcoder!.transcodeInstance({ instance, open: () => openPart10(services.blobs, instance, prefix) }, ts) };
    const length = instance.size + (prefix?.length ?? 0);
    headers['Content-Length'] = String(length);
    // A small instance is one read into memory: no stream, no per-chunk work.
    if (instance.size <= WHOLE_READ_BYTES) return { headers, length, body: () => readPart10(services.blobs, instance, prefix), packable: { prefix, blobKey: instance.blobKey, size: instance.size } };
    return { headers, length, body: () => openPart10(services.blobs, instance, prefix, instanceReadPool), pooled: true };
  });

  if (!plan.multipart) {
    const part = parts[0];
    // The body is opened before answering, so a missing blob is a clean error, not a cut stream.
    const opened = part.body();
    await opened;
    return {
      status: 200,
      headers: { 'Content-Type': part.headers['Content-Type'], ...(part.length !== undefined ? { 'Content-Length': String(part.length) } : {}) },
      async send(out) {
        const body = await opened;
        if (Buffer.isBuffer(body)) await writeWithBackpressure(out, body);
        else await pump(body, out, part.pooled ? releaseReadBuffer : undefined);
        await endResponse(out);
      },
      discard: () => void opened.then((b) => Buffer.isBuffer(b) || b.destroy(), () => undefined),
    };
  }
  const boundary = createBoundary();
  const heads = parts.map((p) => partHeadText(boundary, p.headers));
  const total = parts.every((p) => p.length !== undefined)
    ? parts.reduce((n, p, i) => n + heads[i].length + CRLF.length + p.length!, 0) + closingLength(boundary)
    : undefined;
  const units = planUnits(parts, heads);
  // The first unit is read before answering, so a blob missing there is a clean error, not a cut stream.
  const prefetched: Array<Promise<UnitBody> | undefined> = [startUnit(services.blobs, units[0], parts)];
  const first = await prefetched[0]!;
  if (isFilledRun(first) && first.failed) {
    slabPool.release(first.slab);
    runFailure(first.failed, units[0] as RunUnit, parts, instances);
  }
  const discard = () => prefetched.forEach((p) => p?.then(releaseUnitBody, () => undefined));
  return {
    status: 200,
    headers: {
      'Content-Type': multipartContentType('application/dicom', boundary),
      ...(total !== undefined ? { 'Content-Length': String(total) } : {}),
    },
    async send(out) {
      const writer = new MultipartWriter(out, boundary);
      let ahead = 0; // units opened or read beyond the current one
      for (let u = 0; u < units.length; u++) {
        const body = await (prefetched[u] ?? startUnit(services.blobs, units[u], parts));
        prefetched[u] = undefined;
        ahead = Math.max(0, ahead - 1);
        // Read the next units while this one is written: their latency (a thread-pool read, an S3
        // round trip) is hidden. Bounded by count and bytes, since small bodies are read whole,
        // and by runs of packed parts (each a slab).
        let bytes = 0;
        let runs = 0;
        for (let k = u + 1; k < units.length && k <= u + PREFETCH_PARTS; k++) {
          const next = units[k];
          bytes += next.kind === 'run' ? next.run.bytes : (parts[next.index].length ?? WHOLE_READ_BYTES);
          if (next.kind === 'run') runs++;
          if (k > u + 1 && (bytes > PREFETCH_BYTES || runs > PREFETCH_RUNS)) break;
          if (k <= u + ahead) continue;
          prefetched[k] = startUnit(services.blobs, next, parts);
          prefetched[k]!.catch(() => undefined);
          ahead = k - u;
        }
        const unit = units[u];
        if (unit.kind === 'run') {
          await writeRun(writer, body as FilledRun, unit, parts, instances);
          continue;
        }
        const i = unit.index;
        const written = await writer.writePart(parts[i].headers, body as PartBody, parts[i].pooled ? releaseReadBuffer : undefined);
        if (parts[i].length !== undefined && written !== parts[i].length) {
          throw new Error(`instance ${instances[i].sopInstanceUID}: blob has ${written} bytes, the index says ${parts[i].length}`);
        }
      }
      await writer.end();
    },
    discard,
  };
}

/** Units of a multipart answer, in order: a run of small parts packed into one slab, or one part on its own. */
type Unit = RunUnit | { kind: 'part'; index: number };
type RunUnit = { kind: 'run'; first: number; run: PartRun<PackablePart> };

/** What a unit's read gives: a filled slab, or one part's body. */
type UnitBody = FilledRun | PartBody;

/** Runs of at most PREFETCH_RUNS slabs are read ahead of the one being written. */
const PREFETCH_RUNS = 2;

function isFilledRun(b: UnitBody): b is FilledRun {
  return !Buffer.isBuffer(b) && 'slab' in b;
}

/** Consecutive packable parts go in runs; every other part is a unit of its own. */
function planUnits(parts: InstancePart[], heads: string[]): Unit[] {
  const units: Unit[] = [];
  for (let i = 0; i < parts.length; ) {
    if (!parts[i].packable) {
      units.push({ kind: 'part', index: i++ });
      continue;
    }
    let j = i;
    const packable: PackablePart[] = [];
    for (; j < parts.length && parts[j].packable; j++) packable.push({ head: heads[j], ...parts[j].packable! });
    let first = i;
    for (const run of groupRuns(packable)) {
      units.push({ kind: 'run', first, run });
      first += run.parts.length;
    }
    i = j;
  }
  return units;
}

function startUnit(blobs: BlobStore, unit: Unit, parts: InstancePart[]): Promise<UnitBody> {
  return unit.kind === 'run' ? fillRun(blobs, unit.run) : parts[unit.index].body();
}

/** Gives back what an unsent unit holds: its slab, or its open stream. */
function releaseUnitBody(b: UnitBody): void {
  if (isFilledRun(b)) slabPool.release(b.slab);
  else if (!Buffer.isBuffer(b)) b.destroy();
}

/**
 * Writes a filled run in one write; its slab goes back to the pool once the write completed.
 * A part whose read failed ends the answer as it did part by part: the parts before it are
 * written whole, then (a blob shorter than the index says) its head and the bytes it has, and
 * the error is thrown.
 */
async function writeRun(writer: MultipartWriter, filled: FilledRun, unit: RunUnit, parts: InstancePart[], instances: StoredInstance[]): Promise<void> {
  const { slab, complete, failed } = filled;
  const release = () => slabPool.release(slab);
  if (!failed) {
    await writer.writeFramed(slab.subarray(0, complete), release);
    return;
  }
  const end = failed.error === undefined ? failed.bodyStart + failed.got! : complete;
  if (end > 0) await writer.writeFramed(slab.subarray(0, end), release);
  else release();
  if (failed.error === undefined) await writer.writeFramed(CRLF);
  runFailure(failed, unit, parts, instances);
}

/** Throws what a failed part of a run answers: the store's failure, or a blob shorter than the index says. */
function runFailure(failed: NonNullable<FilledRun['failed']>, unit: RunUnit, parts: InstancePart[], instances: StoredInstance[]): never {
  if (failed.error !== undefined) storeFailure(failed.error);
  const i = unit.first + failed.index;
  const written = (parts[i].packable!.prefix?.length ?? 0) + failed.got!;
  throw new Error(`instance ${instances[i].sopInstanceUID}: blob has ${written} bytes, the index says ${parts[i].length}`);
}

/** A part body: small instances as one buffer, others as a stream. */
type PartBody = Buffer | Readable;

/** One instance of a multi-instance answer: its part headers, length when known up front, and how to get its bytes. */
interface InstancePart {
  headers: Record<string, string>;
  length: number | undefined;
  body(): Promise<PartBody>;
  /** The body's chunks are buffers of instanceReadPool, to give back once written. */
  pooled?: boolean;
  /** A small instance with a known length, which a multipart answer packs with its neighbours (see packed-parts.ts). */
  packable?: Omit<PackablePart, 'head'>;
}

/** A stored instance as Part 10, read whole (a small instance): the blob behind generated File Meta Information when stored without one. */
async function readPart10(blobs: BlobStore, instance: StoredInstance, prefix: Buffer | null): Promise<Buffer> {
  const bytes = instance.size > 0 ? await blobs.readBuffer(instance.blobKey, 0, instance.size - 1).catch(storeFailure) : Buffer.alloc(0);
  return prefix ? Buffer.concat([prefix, bytes]) : bytes;
}

/**
 * A stored instance as Part 10: the blob, behind a generated File Meta Information group when it
 * was stored without one. With `pool`, the blob's chunks are its buffers (see BlobReadOptions).
 */
async function openPart10(blobs: BlobStore, instance: StoredInstance, prefix: Buffer | null, pool?: ReadBufferPool): Promise<Readable> {
  const stream = await blobs.read(instance.blobKey, pool ? { pool } : undefined).catch(storeFailure);
  if (!prefix) return stream;
  const joined = Readable.from(
    (async function* () {
      yield prefix;
      yield* stream as AsyncIterable<Buffer>;
    })(),
    { objectMode: false },
  );
  joined.on('close', () => stream.destroy());
  return joined;
}

// ---------------------------------------------------------------- metadata (PS3.18 10.4.1.1.2)

/** Retrieve Study Metadata (PS3.18 10.4.1.1.2): DICOM JSON of every instance, from the index. */
export function retrieveStudyMetadata(services: WadoServices, req: WadoRequest & { studyInstanceUID: string; baseUrl: string }): Promise<WadoAnswer> {
  return retrieveMetadata(services, req, { studyInstanceUID: req.studyInstanceUID });
}

/** Retrieve Series Metadata (PS3.18 10.4.1.1.2). */
export function retrieveSeriesMetadata(
  services: WadoServices,
  req: WadoRequest & { studyInstanceUID: string; seriesInstanceUID: string; baseUrl: string },
): Promise<WadoAnswer> {
  return retrieveMetadata(services, req, { studyInstanceUID: req.studyInstanceUID, seriesInstanceUID: req.seriesInstanceUID });
}

/** Retrieve Instance Metadata (PS3.18 10.4.1.1.2). */
export function retrieveInstanceMetadata(services: WadoServices, req: WadoRequest & Required<RetrieveTarget> & { baseUrl: string }): Promise<WadoAnswer> {
  return retrieveMetadata(services, req, req);
}

async function retrieveMetadata(services: WadoServices, req: WadoRequest & { baseUrl: string }, target: RetrieveTarget): Promise<WadoAnswer> {
  const ranges = parseAccept(req.accept, req.acceptQuery);
  const knex = services.db.knex;
  const t = pickTarget(target);
  const first = await findMetadataPage(knex, t, null, METADATA_PAGE, req.restrictStudies);
  if (first.length === 0) throw await notFound(knex, target, req.restrictStudies);
  const type = negotiateMetadata(ranges);
  if (!type) throw notAcceptable(ranges, 'metadata is offered as application/dicom+json only');
  const studies = `${req.baseUrl}/dicomweb/studies/`;
  const deid = req.deid;
  const ctx = deid ? await deid.contextOf(target.studyInstanceUID) : undefined;
  const render = (row: (typeof first)[number]) => {
    if (deid && ctx) {
      // De-identified (PS3.15 Annex E); BulkDataURIs point at the researcher's own (de-identified) paths.
      const base = `${studies}${ctx.mapUid(row.studyInstanceUID)}/series/${ctx.mapUid(row.seriesInstanceUID)}/instances/${ctx.mapUid(row.sopInstanceUID)}/`;
      const dataset = deid.engine.deidentifyJson(JSON.parse(row.json), ctx, (uri) => (uri.startsWith('bulkdata/') ? base + uri : null));
      return JSON.stringify(dataset);
    }
    const base = `${studies}${row.studyInstanceUID}/series/${row.seriesInstanceUID}/instances/${row.sopInstanceUID}/`;
    // jsonb renders keys as `"BulkDataURI": "..."`; an unescaped quote cannot occur inside a string value, so this matches keys only.
    const json = row.json.replaceAll('"BulkDataURI": "bulkdata/', `"BulkDataURI": ${JSON.stringify(base).slice(0, -1)}bulkdata/`);
    return req.mask ? JSON.stringify(req.mask.apply(JSON.parse(json) as DicomJson)) : json;
  };
  // Withheld instances are absent from a researcher's metadata.
  const visible = async (page: typeof first) => {
    if (!deid) return page;
    const withheld = await deid.withheld(page.map((r) => r.sopInstanceUID));
    return withheld.size === 0 ? page : page.filter((r) => !withheld.has(r.sopInstanceUID));
  };
  const firstVisible = await visible(first);
  if (deid && target.sopInstanceUID !== undefined && firstVisible.length === 0) {
    throw new HttpError(404, `instance ${target.sopInstanceUID} is withheld from researchers pending burned-in annotation review`);
  }
  return {
    status: 200,
    headers: { 'Content-Type': `${type}; charset=utf-8` },
    async send(out) {
      let page = first;
      let shown = firstVisible;
      let separator = '[';
      while (page.length > 0) {
        // One write per page keeps syscalls few while memory stays bounded by the page size.
        if (shown.length > 0) {
          const text = shown.map((row) => render(row)).join(',');
          await writeWithBackpressure(out, Buffer.from(separator + text, 'utf8'));
          separator = ',';
        }
        if (page.length < METADATA_PAGE) break;
        const cursor: MetadataCursor = page[page.length - 1].cursor;
        page = await findMetadataPage(knex, t, cursor, METADATA_PAGE, req.restrictStudies);
        shown = await visible(page);
      }
      await writeWithBackpressure(out, Buffer.from(separator === '[' ? '[]' : ']'));
      await endResponse(out);
    },
    discard() {},
  };
}

// ---------------------------------------------------------------- frames (PS3.18 10.4.1.1.4)

/** Parses a frame list (`1,3,5`, PS3.18 10.4.1.1.4): 1-based numbers; throws 400 when malformed. */
export function parseFrameList(text: string): number[] {
  const pieces = text.split(',').map((s) => s.trim());
  if (pieces.length > MAX_FRAMES_PER_REQUEST) throw new HttpError(400, `at most ${MAX_FRAMES_PER_REQUEST} frames per request`);
  return pieces.map((p) => {
    if (!/^\d{1,9}$/.test(p) || Number(p) < 1) throw new HttpError(400, `invalid frame list "${text.slice(0, 100)}": frame numbers are integers from 1, separated by commas`);
    return Number(p);
  });
}

/** Retrieve Frames (PS3.18 10.4.1.1.4): each frame's bytes by ranged reads, as stored or converted. */
export async function retrieveInstanceFrames(
  services: WadoServices,
  req: WadoRequest & Required<RetrieveTarget> & { frameList: string },
): Promise<WadoAnswer> {
  const numbers = parseFrameList(req.frameList);
  const target = pickTarget(req) as Required<RetrieveTarget>;
  const inst = await findStoredFrames(services.db.knex, target, numbers, req.restrictStudies);
  if (!inst) throw await notFound(services.db.knex, target, req.restrictStudies);
  // A Deflated instance records frames (all unlocatable) but no pixel data offset: its bytes are compressed.
  if (inst.frameCount === 0 || (inst.pixelDataOffset === null && !describeSyntax(inst.transferSyntaxUID).deflated)) {
    throw new HttpError(404, `instance ${inst.sopInstanceUID} has no pixel data, so no frames`);
  }
  const outside = numbers.find((n) => n > inst.frameCount);
  if (outside !== undefined) {
    throw new HttpError(404, `frame ${outside} does not exist: instance ${inst.sopInstanceUID} has ${inst.frameCount} frame(s)`);
  }
  return answerFrames(services, req, inst, numbers);
}

async function answerFrames(services: WadoServices, req: WadoRequest, stored: StoredFrames, numbers: number[]): Promise<WadoAnswer> {
  // Frames are labelled with what the stream really is (a mislabelled baseline JPEG stays decodable).
  const firstKnown = stored.locations.find((l) => l !== null) ?? undefined;
  const labelled = await effectiveFrameSyntax(services.blobs, stored.blobKey, stored.transferSyntaxUID, firstKnown);
  const inst: StoredFrames = labelled === stored.transferSyntaxUID ? stored : { ...stored, transferSyntaxUID: labelled };
  const syntax = describeSyntax(inst.transferSyntaxUID);
  if (syntax.video) {
    throw notAcceptable(
      'frames',
      `instance ${inst.sopInstanceUID} is a video (${syntax.name}); its frames cannot be cut out, retrieve its bulk data ${bulkPath(inst)}/bulkdata/7FE00010 as ${syntax.mediaType}`,
    );
  }
  const ranges = parseAccept(req.accept, req.acceptQuery);
  const rep = negotiatePixels(ranges, inst.transferSyntaxUID, {
    singlePart: numbers.length === 1,
    canTranscode: services.transcoder ? (f, t) => services.transcoder!.canTranscode(f, t) : undefined,
  });
  if (!rep) throw notAcceptable(ranges, offeredPixels(inst.transferSyntaxUID, numbers.length === 1, !!services.transcoder));
  const memory = new FrameMemory();
  const sources = await frameSources(services, inst, numbers, rep, memory);
  return pixelAnswer(rep, sources, { memory });
}

/** Spare buffers frames were read into, kept for the next reads (at most SPARE_FRAME_BUFFERS, each at most WHOLE_READ_BYTES). */
const spareFrameBuffers: Buffer[] = [];
const SPARE_FRAME_BUFFERS = 4;

/**
 * The memory one frame answer reads its frames into: buffers taken from those of earlier answers,
 * given back once the answer's last byte is handed to the operating system.
 *
 * Why: a frame read into fresh memory (a 381 kB OPT frame) allocates outside the JavaScript
 * heap, and a frame request allocates too little inside it for young-generation collections to
 * free that memory soon; V8 then starts full mark-compact collections for the external memory
 * alone. Measured at 1M instances (qido-wado frame-opt with the study result cache filled, so a
 * 68 MB heap): a full collection every ~1.2 s of frames, each with 80-125 ms of marking steps
 * run on the main thread between and inside requests: the frame p95.
 */
class FrameMemory {
  private readonly taken: Buffer[] = [];

  take(size: number): Buffer | undefined {
    if (size > WHOLE_READ_BYTES) return undefined;
    const at = spareFrameBuffers.findIndex((b) => b.length >= size);
    const buffer = at >= 0 ? spareFrameBuffers.splice(at, 1)[0] : Buffer.allocUnsafeSlow(Math.max(size, 64 << 10));
    this.taken.push(buffer);
    return buffer;
  }

  /** Call once no byte read into this memory is referenced any more (the answer is sent). */
  release(): void {
    for (const b of this.taken.splice(0)) if (spareFrameBuffers.length < SPARE_FRAME_BUFFERS) spareFrameBuffers.push(b);
  }
}

/** Where one answer part comes from: its length when known up front, and its bytes. */
interface PartSource {
  length?: number;
  body(): AsyncIterable<Buffer>;
}

async function frameSources(services: WadoServices, inst: StoredFrames, numbers: number[], rep: Representation, memory?: FrameMemory): Promise<PartSource[]> {
  const { blobs } = services;
  const frameBytes = frameSize(inst.pixel);
  let sources: PartSource[];
  if (inst.locations.every((l) => l !== null)) {
    const cursor = new RangeCursor(blobs, inst.blobKey, inst.locations.flatMap((l) => l!), undefined, memory);
    sources = inst.locations.map((l) => {
      const length = l!.reduce((n, r) => n + r.length, 0);
      return { length, body: () => cursor.take(length) };
    });
  } else if (inst.pixel.bitsAllocated === 1 && frameBytes !== null && describeSyntax(inst.transferSyntaxUID).native && !describeSyntax(inst.transferSyntaxUID).deflated) {
    sources = numbers.map((n) => {
      const bits = frameBitCount(inst.pixel)!;
      return { length: Math.ceil(bits / 8), body: () => readBitFrame(blobs, inst, n, bits) };
    });
  } else if (describeSyntax(inst.transferSyntaxUID).deflated && frameBytes !== null) {
    const pixels = await inflatedPixelData(services, inst);
    sources = numbers.map((n) => {
      const slice = pixels.subarray((n - 1) * frameBytes, n * frameBytes);
      return { length: slice.length, body: () => single(slice) };
    });
  } else {
    throw notAcceptable('frames', `the frames of instance ${inst.sopInstanceUID} (${describeSyntax(inst.transferSyntaxUID).name}) cannot be located; retrieve the instance`);
  }
  if (rep.conversion === 'stored') return sources;
  return sources.map((s, i) => ({
    length: rep.conversion === 'byteswap' ? s.length : undefined,
    body: () => convertFrame(services, inst, numbers[i], s, rep),
  }));
}

async function* convertFrame(services: WadoServices, inst: StoredFrames, frameNumber: number, source: PartSource, rep: Representation): AsyncGenerator<Buffer> {
  if (rep.conversion === 'byteswap') {
    yield* swapWords(source.body(), Math.max(1, Math.ceil((inst.pixel.bitsAllocated ?? 8) / 8)));
    return;
  }
  const frame = await collect(source.body());
  yield await services.transcoder!.transcodeFrame({ frame, frameNumber, from: inst.transferSyntaxUID, pixel: inst.pixel }, rep.transferSyntax);
}

function offeredPixels(stored: string, single: boolean, hasTranscoder: boolean): string {
  const info = describeSyntax(stored);
  const label = `${info.mediaType}; transfer-syntax=${info.native && !info.bigEndian ? '1.2.840.10008.1.2.1' : stored}`;
  return (
    `stored as ${info.name}; offered as multipart/related; type="${info.mediaType}" with transfer-syntax=* or ${stored}` +
    (single ? ` or single part ${label}` : '') +
    (hasTranscoder ? '' : '; no transcoder is configured, so no other transfer syntax can be produced')
  );
}

/** Builds the single part or multipart answer of pixel parts sharing one representation. */
function pixelAnswer(
  rep: Representation,
  sources: PartSource[],
  extra: { status?: number; headers?: Record<string, string>; partHeaders?: Record<string, string>; memory?: FrameMemory } = {},
): WadoAnswer {
  // Pixel media types say their transfer syntax (PS3.18 8.7.3.3); a video or document type is self-describing.
  const labelled = rep.partType === 'application/octet-stream' || rep.partType.startsWith('image/');
  const partType = labelled ? `${rep.partType}; transfer-syntax=${rep.transferSyntax}` : rep.partType;
  if (!rep.multipart) {
    const s = sources[0];
    return {
      status: extra.status ?? 200,
      headers: { 'Content-Type': partType, ...(s.length !== undefined ? { 'Content-Length': String(s.length) } : {}), ...extra.headers },
      async send(out) {
        for await (const chunk of s.body()) await writeWithBackpressure(out, chunk);
        await endResponse(out);
        // Only once sent: an answer cut short may still have bytes queued on its socket.
        extra.memory?.release();
      },
      discard() {},
    };
  }
  const boundary = createBoundary();
  const headers = (s: PartSource) => ({ 'Content-Type': partType, ...(s.length !== undefined ? { 'Content-Length': String(s.length) } : {}), ...extra.partHeaders });
  const total = sources.every((s) => s.length !== undefined)
    ? sources.reduce((n, s) => n + partOverhead(boundary, headers(s)) + s.length!, 0) + closingLength(boundary)
    : undefined;
  return {
    status: extra.status ?? 200,
    headers: {
      'Content-Type': multipartContentType(rep.partType, boundary, labelled ? rep.transferSyntax : undefined),
      ...(total !== undefined ? { 'Content-Length': String(total) } : {}),
      ...extra.headers,
    },
    async send(out) {
      const writer = new MultipartWriter(out, boundary);
      if (total !== undefined && total <= MAX_QUEUED_BYTES) {
        // A small answer (a frame or a few) is read before anything is written: the headers, the
        // part envelopes and the bytes then leave in one socket write, not one for the headers and
        // first envelope, one per frame and one for the closing delimiter.
        const bodies: Buffer[] = [];
        for (const s of sources) bodies.push(await collect(s.body()));
        for (let i = 0; i < sources.length; i++) await writer.writePart(headers(sources[i]), bodies[i]);
      } else {
        for (const s of sources) await writer.writePart(headers(s), s.body());
      }
      await writer.end();
      extra.memory?.release();
    },
    discard() {},
  };
}

// ---------------------------------------------------------------- bulk data (PS3.18 10.4.1.1.5)

const PIXEL_TAGS = new Set(['7FE00010', '7FE00008', '7FE00009']);

/** Parses a bulk data tag path (`00420011`, `00540016/0/00180031`): tags and 0-based item indexes alternating. */
export function parseBulkPath(segments: string[]): string[] {
  const path = segments.filter((s) => s !== '').map((s) => s.toUpperCase());
  const valid = path.length % 2 === 1 && path.every((s, i) => (i % 2 === 0 ? /^[0-9A-F]{8}$/.test(s) : /^\d{1,6}$/.test(s)));
  if (!valid) throw new HttpError(400, `invalid bulk data path "${segments.join('/').slice(0, 200)}": expected tag[/item/tag...] with 8 hex digit tags`);
  return path;
}

/** Retrieve Bulkdata (PS3.18 10.4.1.1.5): one bulk value (or Pixel Data) with HTTP Range support (RFC 9110 14). */
export async function retrieveBulkdata(
  services: WadoServices,
  req: WadoRequest & Required<RetrieveTarget> & { path: string[]; range?: string },
): Promise<WadoAnswer> {
  const path = parseBulkPath(req.path);
  const target = pickTarget(req) as Required<RetrieveTarget>;
  const knex = services.db.knex;
  if (path.length === 1 && PIXEL_TAGS.has(path[0])) return retrievePixelBulk(services, req, target, path[0]);
  const inst = await findStoredInstance(knex, target, req.restrictStudies);
  if (!inst) throw await notFound(knex, target, req.restrictStudies);
  const header = await readHeader(services, inst);
  const found = locateBulkValue(header, path);
  if (!found) throw new HttpError(404, `instance ${inst.sopInstanceUID} has no bulk data value at ${path.join('/')}`);
  const ranges = parseAccept(req.accept, req.acceptQuery);
  const chosen = negotiateBulkValue(ranges, found.mediaType);
  if (!chosen) throw notAcceptable(ranges, `bulk data is offered as application/octet-stream${found.mediaType ? ` or ${found.mediaType}` : ''}, single part or multipart/related`);
  const value = found.value;
  const rep: Representation = { multipart: chosen.multipart, partType: chosen.partType, transferSyntax: '1.2.840.10008.1.2.1', conversion: 'stored' };
  return rangedAnswer(rep, value.length, (start, end) => single(value.subarray(start, end + 1)), req.range);
}

async function retrievePixelBulk(services: WadoServices, req: WadoRequest & { range?: string }, target: Required<RetrieveTarget>, tag: string): Promise<WadoAnswer> {
  const knex = services.db.knex;
  const inst = await findStoredFrames(knex, target, [], req.restrictStudies);
  if (!inst) throw await notFound(knex, target, req.restrictStudies);
  const syntax = describeSyntax(inst.transferSyntaxUID);
  if (syntax.deflated) {
    const pixels = await inflatedPixelData(services, inst);
    const rep = negotiatePixelsOr406(services, req, inst, true);
    return rangedAnswer(rep, pixels.length, (s, e) => single(pixels.subarray(s, e + 1)), req.range);
  }
  if (inst.pixelDataOffset === null) throw new HttpError(404, `instance ${inst.sopInstanceUID} has no pixel data`);
  const element = await readPixelElementHeader(services.blobs, inst);
  if (element.tag !== tag) throw new HttpError(404, `instance ${inst.sopInstanceUID} has no ${tag} (its pixel data is ${element.tag})`);
  if (!element.encapsulated) {
    const rep = negotiatePixelsOr406(services, req, inst, true);
    const word = rep.conversion === 'byteswap' ? Math.max(1, Math.ceil((inst.pixel.bitsAllocated ?? 8) / 8)) : 1;
    const valueRanges = [{ offset: inst.pixelDataOffset, length: element.length }];
    return rangedAnswer(rep, element.length, (s, e) => readValueSlice(services.blobs, inst.blobKey, valueRanges, s, e, word), req.range);
  }
  if (syntax.video) {
    // One bit stream in fragments (PS3.5 8.2.5): served as one part of the video media type.
    const fragments = await listFragments(services.blobs, inst.blobKey, inst.pixelDataOffset);
    const ranges = parseAccept(req.accept, req.acceptQuery);
    const rep = negotiatePixels(ranges, inst.transferSyntaxUID, { singlePart: true });
    if (!rep) throw notAcceptable(ranges, `the pixel data is a ${syntax.name} stream, offered as ${syntax.mediaType} (single part or multipart/related)`);
    const length = fragments.reduce((n, r) => n + r.length, 0);
    return rangedAnswer(rep, length, (s, e) => readValueSlice(services.blobs, inst.blobKey, fragments, s, e, 1), req.range);
  }
  // Encapsulated images: the value is its frames, one part each (Range does not apply).
  const all = Array.from({ length: inst.frameCount }, (_, i) => i + 1);
  const withFrames = await findStoredFrames(knex, target, all, req.restrictStudies);
  if (!withFrames || withFrames.frameCount === 0) throw new HttpError(404, `instance ${inst.sopInstanceUID} has no frames`);
  return answerFrames(services, req, withFrames, all);
}

function negotiatePixelsOr406(services: WadoServices, req: WadoRequest, inst: StoredFrames, single: boolean): Representation {
  const ranges = parseAccept(req.accept, req.acceptQuery);
  const rep = negotiatePixels(ranges, inst.transferSyntaxUID, { singlePart: single });
  if (!rep || rep.conversion === 'transcode') throw notAcceptable(ranges, offeredPixels(inst.transferSyntaxUID, single, false));
  return rep;
}

/** Parses a single byte range (RFC 9110 14.1.2); null when absent, not bytes, or several ranges (then ignored: 200). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return null; // invalid: ignored (RFC 9110 14.1.1)
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function rangedAnswer(rep: Representation, size: number, read: (start: number, end: number) => AsyncIterable<Buffer>, rangeHeader: string | undefined): WadoAnswer {
  const range = parseRange(rangeHeader, size);
  if (range === 'unsatisfiable') {
    throw new HttpError(416, `range ${rangeHeader} cannot be satisfied: the value has ${size} bytes`, { 'Content-Range': `bytes */${size}` });
  }
  const [start, end] = range ? [range.start, range.end] : [0, size - 1];
  const length = size === 0 ? 0 : end - start + 1;
  const source: PartSource = { length, body: () => (length === 0 ? empty() : read(start, end)) };
  if (!range) return pixelAnswer(rep, [source], { headers: { 'Accept-Ranges': 'bytes' } });
  const contentRange = `bytes ${start}-${end}/${size}`;
  return pixelAnswer(rep, [source], {
    status: 206,
    headers: { 'Accept-Ranges': 'bytes', ...(rep.multipart ? {} : { 'Content-Range': contentRange }) },
    partHeaders: { 'Content-Range': contentRange },
  });
}

// ---------------------------------------------------------------- helpers

/** Blob store failures as answers: unreachable is 503 (retry); missing bytes behind an index row is a 500 that says so. */
function storeFailure(err: unknown): never {
  if (err instanceof BlobStoreUnavailableError) throw new ServiceUnavailableError('the blob store is unavailable');
  if (err instanceof BlobNotFoundError) throw new HttpError(500, `the stored bytes ${err.key} are missing from the blob store`);
  throw err;
}

function pickTarget(t: RetrieveTarget): RetrieveTarget {
  return { studyInstanceUID: t.studyInstanceUID, seriesInstanceUID: t.seriesInstanceUID, sopInstanceUID: t.sopInstanceUID };
}

function bulkPath(inst: StoredInstance): string {
  return `/dicomweb/studies/${inst.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`;
}

/** The 404 for a target, naming the level that is missing (or filtered out: same answer). */
export async function notFound(knex: Knex, target: RetrieveTarget, restrict?: StudyRestriction): Promise<HttpError> {
  const level = await findMissingLevel(knex, target, restrict);
  if (level === 'study' || level === null) return new HttpError(404, `study ${target.studyInstanceUID} not found`);
  if (level === 'series') return new HttpError(404, `series ${target.seriesInstanceUID} not found in study ${target.studyInstanceUID}`);
  return new HttpError(404, `instance ${target.sopInstanceUID} not found in series ${target.seriesInstanceUID} of study ${target.studyInstanceUID}`);
}

function frameBitCount(p: PixelDescription): number | null {
  if (!p.rows || !p.columns || !p.bitsAllocated) return null;
  return p.rows * p.columns * (p.samplesPerPixel ?? 1) * p.bitsAllocated;
}

function frameSize(p: PixelDescription): number | null {
  const bits = frameBitCount(p);
  return bits === null ? null : Math.ceil(bits / 8);
}

/** A 1-bit frame (PS3.5 8.1.1: bits packed from the least significant end, frames not byte aligned): one ranged read, re-aligned to bit 0. */
async function* readBitFrame(blobs: BlobStore, inst: StoredFrames, frameNumber: number, bits: number): AsyncGenerator<Buffer> {
  const firstBit = (frameNumber - 1) * bits;
  const startByte = Math.floor(firstBit / 8);
  const endByte = Math.ceil((firstBit + bits) / 8) - 1;
  const bytes = await collect(await blobs.readRange(inst.blobKey, inst.pixelDataOffset! + startByte, inst.pixelDataOffset! + endByte).catch(storeFailure));
  const shift = firstBit % 8;
  const out = Buffer.alloc(Math.ceil(bits / 8));
  for (let i = 0; i < out.length; i++) {
    out[i] = shift === 0 ? bytes[i] : ((bytes[i] >> shift) | ((bytes[i + 1] ?? 0) << (8 - shift))) & 0xff;
  }
  const spare = out.length * 8 - bits;
  if (spare > 0) out[out.length - 1] &= 0xff >> spare;
  yield out;
}

/** The header of an instance, enough to walk: bytes [0, header_length) by one ranged read, or the inflated data set (Deflated). */
async function readHeader(services: WadoServices, inst: StoredInstance): Promise<EncodedHeader> {
  const { blobs } = services;
  if (describeSyntax(inst.transferSyntaxUID).deflated) return inflateDataSet(await collect(await blobs.read(inst.blobKey).catch(storeFailure)));
  const bytes = inst.headerLength > 0 ? await collect(await blobs.readRange(inst.blobKey, 0, inst.headerLength - 1).catch(storeFailure)) : Buffer.alloc(0);
  return { bytes, hasFileMeta: inst.hasFileMeta, encoding: describeTransferSyntax(inst.transferSyntaxUID).encoding };
}

/** Pixel Data of a Deflated instance: the whole instance is inflated (the slow path, PS3.5 A.5). */
async function inflatedPixelData(services: WadoServices, inst: StoredInstance): Promise<Buffer> {
  const header = inflateDataSet(await collect(await services.blobs.read(inst.blobKey).catch(storeFailure)));
  if (!header.pixelData) throw new HttpError(404, `instance ${inst.sopInstanceUID} has no pixel data`);
  return header.pixelData;
}

/** The item ranges of an encapsulated value after its Basic Offset Table (PS3.5 A.4), by small ranged reads. */
async function listFragments(blobs: BlobStore, key: string, valueOffset: number): Promise<ByteRange[]> {
  const fragments: ByteRange[] = [];
  let pos = valueOffset;
  for (let n = 0; n < 1_000_000; n++) {
    const head = await collect(await blobs.readRange(key, pos, pos + 7).catch(storeFailure));
    if (head.length < 8) break;
    const tag = ((head.readUInt16LE(0) << 16) | head.readUInt16LE(2)) >>> 0;
    const length = head.readUInt32LE(4);
    if (tag !== 0xfffee000) break; // sequence delimiter (or damage): the value ends here
    if (n > 0 && length > 0) fragments.push({ offset: pos + 8, length });
    pos += 8 + length;
  }
  return fragments;
}

/** Bytes [start, end] of a value made of `ranges` laid end to end, byte-swapped by `word` when > 1. */
async function* readValueSlice(blobs: BlobStore, key: string, ranges: ByteRange[], start: number, end: number, word: number): AsyncGenerator<Buffer> {
  // Word swapping needs whole words: widen to word boundaries, then trim.
  const a = start - (start % word);
  const b = Math.min(end + (word - 1 - (end % word)), ranges.reduce((n, r) => n + r.length, 0) - 1);
  const wanted: ByteRange[] = [];
  let at = 0;
  for (const r of ranges) {
    const from = Math.max(a, at);
    const to = Math.min(b, at + r.length - 1);
    if (from <= to) wanted.push({ offset: r.offset + (from - at), length: to - from + 1 });
    at += r.length;
  }
  const cursor = new RangeCursor(blobs, key, wanted);
  const total = wanted.reduce((n, r) => n + r.length, 0);
  let source: AsyncIterable<Buffer> = cursor.take(total);
  if (word > 1) source = swapWords(source, word);
  let skip = start - a;
  let remaining = end - start + 1;
  for await (let chunk of source) {
    if (skip > 0) {
      const s = Math.min(skip, chunk.length);
      chunk = chunk.subarray(s);
      skip -= s;
    }
    if (chunk.length > remaining) chunk = chunk.subarray(0, remaining);
    remaining -= chunk.length;
    if (chunk.length) yield chunk;
    if (remaining === 0) break;
  }
}

/**
 * Reads byte ranges of one blob in order, merging neighbours (gaps up to 64 KiB, e.g. item
 * headers between fragments) into one ranged read; `take(n)` yields the next n bytes.
 */
class RangeCursor {
  private iterator: AsyncIterator<Buffer> | null = null;

  constructor(
    private readonly blobs: BlobStore,
    private readonly key: string,
    private readonly ranges: ByteRange[],
    private readonly maxGap = 64 * 1024,
    private readonly memory?: FrameMemory,
  ) {}

  async *take(length: number): AsyncGenerator<Buffer> {
    this.iterator ??= this.all()[Symbol.asyncIterator]();
    let got = 0;
    while (got < length) {
      const next = await this.iterator.next();
      if (next.done) throw new Error(`blob ${this.key} ended before the recorded byte ranges`);
      got += next.value.length;
      yield next.value;
    }
  }

  private async *all(): AsyncGenerator<Buffer> {
    const ranges = this.ranges.filter((r) => r.length > 0);
    let i = 0;
    while (i < ranges.length) {
      let j = i + 1;
      let end = ranges[i].offset + ranges[i].length;
      while (j < ranges.length && ranges[j].offset >= end && ranges[j].offset - end <= this.maxGap) {
        end = ranges[j].offset + ranges[j].length;
        j++;
      }
      const spanStart = ranges[i].offset;
      // A frame-sized span is one buffer (no stream per frame); a longer one streams.
      const stream = end - spanStart > WHOLE_READ_BYTES ? await this.blobs.readRange(this.key, spanStart, end - 1).catch(storeFailure) : null;
      const source: Iterable<Buffer> | AsyncIterable<Buffer> = stream ?? [await this.blobs.readBuffer(this.key, spanStart, end - 1, this.memory?.take(end - spanStart)).catch(storeFailure)];
      let pos = spanStart;
      let k = i;
      try {
        for await (const raw of source) {
          const chunkStart = pos;
          pos += raw.length;
          while (k < j) {
            const r = ranges[k];
            const from = Math.max(r.offset, chunkStart);
            const to = Math.min(r.offset + r.length, pos);
            if (from < to) yield raw.subarray(from - chunkStart, to - chunkStart);
            if (r.offset + r.length <= pos) k++;
            else break;
          }
        }
      } finally {
        stream?.destroy();
      }
      if (k < j) throw new Error(`blob ${this.key} ended before the recorded byte ranges`);
      i = j;
    }
  }
}

/** Streams `stream` into `out` with backpressure; `written` gets each chunk once its write has completed. */
async function pump(stream: Readable, out: Writable, written?: (chunk: Buffer) => void): Promise<void> {
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) await writeWithBackpressure(out, chunk, 0, written);
  } finally {
    stream.destroy();
  }
}

async function endResponse(out: Writable): Promise<void> {
  await new Promise<void>((resolve) => out.end(resolve));
}

/** The bytes of a source as one buffer: its only chunk as it is (the stores yield fresh buffers: no copy), or the chunks joined. */
async function collect(source: AsyncIterable<Buffer> | Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of source as AsyncIterable<Buffer>) chunks.push(c);
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

async function* single(buf: Buffer): AsyncGenerator<Buffer> {
  if (buf.length) yield buf;
}

async function* empty(): AsyncGenerator<Buffer> {}

// ---------------------------------------------------------------- DICOM bytes (PS3.10 7, PS3.5 7)

/** Identifies this server in generated File Meta Information (PS3.7 D.3.3.2; a UUID-derived UID, PS3.5 B.2). */
export const IMPLEMENTATION_CLASS_UID = '2.25.93334902647186893415485138498700129624';
export const IMPLEMENTATION_VERSION_NAME = 'IMAGING_LAKE_1';

/**
 * Preamble, "DICM" and the File Meta Information group (PS3.10 7.1) for an instance stored as a
 * raw data set, computed from the index, so it is served as a valid Part 10 file; with
 * `sourceAETitle`, the Source Application Entity Title (0002,0016) of a data set received over
 * the network (a DIMSE C-STORE).
 */
export function buildFileMeta(instance: Pick<StoredInstance, 'sopClassUID' | 'sopInstanceUID' | 'transferSyntaxUID'>, sourceAETitle?: string): Buffer {
  const elements = [
    metaElement(0x0001, 'OB', Buffer.from([0x00, 0x01])),
    metaElement(0x0002, 'UI', uidValue(instance.sopClassUID)),
    metaElement(0x0003, 'UI', uidValue(instance.sopInstanceUID)),
    metaElement(0x0010, 'UI', uidValue(instance.transferSyntaxUID)),
    metaElement(0x0012, 'UI', uidValue(IMPLEMENTATION_CLASS_UID)),
    metaElement(0x0013, 'SH', spacePadded(IMPLEMENTATION_VERSION_NAME)),
  ];
  if (sourceAETitle) elements.push(metaElement(0x0016, 'AE', spacePadded(sourceAETitle)));
  const body = Buffer.concat(elements);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(body.length);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM', 'latin1'), metaElement(0x0000, 'UL', groupLength), body]);
}

function spacePadded(text: string): Buffer {
  return Buffer.from(text.length % 2 ? `${text} ` : text, 'latin1');
}

function uidValue(uid: string): Buffer {
  return Buffer.from(uid.length % 2 ? `${uid}\0` : uid, 'latin1');
}

function metaElement(element: number, vr: string, value: Buffer): Buffer {
  const long = vr === 'OB';
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(0x0002, 0);
  head.writeUInt16LE(element, 2);
  head.write(vr, 4, 'latin1');
  if (long) head.writeUInt32LE(value.length, 8);
  else head.writeUInt16LE(value.length, 6);
  return Buffer.concat([head, value]);
}

/** The top-level Pixel Data element header, read from the blob at [header_length, pixel_data_offset). */
async function readPixelElementHeader(blobs: BlobStore, inst: StoredInstance): Promise<{ tag: string; length: number; encapsulated: boolean }> {
  const head = await collect(await blobs.readRange(inst.blobKey, inst.headerLength, inst.pixelDataOffset! - 1).catch(storeFailure));
  const little = describeTransferSyntax(inst.transferSyntaxUID).encoding.littleEndian;
  const u16 = (at: number) => (little ? head.readUInt16LE(at) : head.readUInt16BE(at));
  const u32 = (at: number) => (little ? head.readUInt32LE(at) : head.readUInt32BE(at));
  if (head.length !== 8 && head.length !== 12) throw new Error(`instance ${inst.sopInstanceUID}: unexpected pixel data element header of ${head.length} bytes`);
  const tag = (((u16(0) << 16) | u16(2)) >>> 0).toString(16).toUpperCase().padStart(8, '0');
  const length = u32(head.length - 4);
  return { tag, length, encapsulated: length === 0xffffffff };
}

/** Header bytes and how to walk them. */
interface EncodedHeader {
  bytes: Buffer;
  hasFileMeta: boolean;
  encoding: DataSetEncoding;
  /** The top-level Pixel Data value, when the header is a whole inflated data set. */
  pixelData?: Buffer;
}

const WALK_LIMITS = { maxDepth: 64, maxElements: 5_000_000 };

/** Walks a header's top level: File Meta Information first when present (PS3.10 7.1), then the data set. */
function walkHeader(header: EncodedHeader): { walker: DataSetWalker; pixel?: { valueOffset: number; length: number } } {
  const { bytes } = header;
  const walker = header.hasFileMeta ? new DataSetWalker(132, EXPLICIT_LITTLE, WALK_LIMITS, { metaOnly: true }) : new DataSetWalker(0, header.encoding, WALK_LIMITS);
  let outcome = walker.walk(bytes, bytes.length);
  if (outcome.kind === 'meta-end') {
    walker.beginDataSet(header.encoding);
    outcome = walker.walk(bytes, bytes.length);
  }
  return { walker, pixel: outcome.kind === 'pixel-data' ? { valueOffset: outcome.header.valueOffset, length: outcome.header.length } : undefined };
}

/** Inflates a Deflated Explicit VR Little Endian instance (PS3.5 A.5) into a walkable data set. */
function inflateDataSet(whole: Buffer): EncodedHeader {
  const meta = new DataSetWalker(132, EXPLICIT_LITTLE, WALK_LIMITS, { metaOnly: true });
  const outcome = meta.walk(whole, whole.length);
  if (outcome.kind !== 'meta-end') throw new Error('deflated instance without a complete File Meta Information group');
  const bytes = inflateRawSync(whole.subarray(meta.pos));
  const header: EncodedHeader = { bytes, hasFileMeta: false, encoding: EXPLICIT_LITTLE };
  const { pixel } = walkHeader(header);
  if (pixel && pixel.length !== 0xffffffff) header.pixelData = bytes.subarray(pixel.valueOffset, pixel.valueOffset + pixel.length);
  return header;
}

/**
 * Finds the value a bulk data path names (`tag[/item/tag...]`, as the scanner wrote its
 * BulkDataURIs) in a header. Big Endian words are swapped to the Little Endian of
 * application/octet-stream; a nested encapsulated value (an icon) is its fragments joined.
 * The media type is known for an Encapsulated Document (0042,0011) from (0042,0012).
 */
function locateBulkValue(header: EncodedHeader, path: string[]): { value: Buffer; mediaType?: string } | null {
  let list: RawElement[] = walkHeader(header).walker.elements.filter((e) => e.tag >>> 16 !== 0x0002);
  const { bytes } = header;
  for (let i = 0; i < path.length; i += 2) {
    const tag = parseInt(path[i], 16);
    const element = list.find((e) => e.tag === tag);
    if (!element) return null;
    if (i + 1 < path.length) {
      const item = element.items?.[Number(path[i + 1])];
      if (!item) return null;
      list = item;
      continue;
    }
    if (element.items) return null;
    if (element.fragments) {
      return { value: Buffer.concat(element.fragments.slice(1).map((f) => bytes.subarray(f.offset, f.offset + f.length))) };
    }
    if (element.offset + element.length > bytes.length) return null;
    let value = bytes.subarray(element.offset, element.offset + element.length);
    const word = BINARY_WORD_SIZE[element.vr === 'ox' || element.vr === 'lt' ? 'OW' : element.vr];
    if (!element.littleEndian && word) {
      value = Buffer.from(value);
      for (let at = 0; at + word <= value.length; at += word) value.subarray(at, at + word).reverse();
    }
    let mediaType: string | undefined;
    if (tag === 0x00420011) {
      const mime = list.find((e) => e.tag === 0x00420012);
      mediaType = mime ? bytes.subarray(mime.offset, mime.offset + mime.length).toString('latin1').replace(/[\0 ]+$/, '').trim() || undefined : undefined;
    }
    return { value, mediaType };
  }
  return null;
}

/** Reverses the bytes of each `word`-byte word (Big Endian to Little Endian), carrying partial words across chunks. */
async function* swapWords(source: AsyncIterable<Buffer>, word: number): AsyncGenerator<Buffer> {
  if (word <= 1) {
    yield* source;
    return;
  }
  let carry = Buffer.alloc(0);
  for await (const chunk of source) {
    const data = carry.length ? Buffer.concat([carry, chunk]) : Buffer.from(chunk);
    const whole = data.length - (data.length % word);
    for (let at = 0; at < whole; at += word) data.subarray(at, at + word).reverse();
    carry = Buffer.from(data.subarray(whole));
    if (whole) yield data.subarray(0, whole);
  }
  if (carry.length) yield carry;
}
