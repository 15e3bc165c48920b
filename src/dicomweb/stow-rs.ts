import { Readable } from 'node:stream';
import type { Knex } from 'knex';
import { AuditWriteError, auditInsertsAsOne } from '../audit/audit-store';
import { queryPrepared } from '../db/prepared-statement';
import type { AppConfig } from '../config';
import type { Database } from '../db/database';
import { isRetryableDbError } from '../db/database';
import { blobClaimerOf } from '../db/blob-ledger';
import { indexInstances, type IndexOutcome, type InstanceToIndex, type LeadingInsert } from '../db/instance-index';
import { createInstanceScanner } from '../dicom/instance-scanner';
import { validateInstance } from '../dicom/validate-instance';
import { DicomInstanceError, StatusCode, type ScannedInstance } from '../dicom/types';
import { HttpError, ServiceUnavailableError } from '../http/errors';
import type { Logger } from '../logger';
import { BlobStoreFullError, BlobStoreUnavailableError, type BlobStore, type CommittedBlob } from '../storage/blob-store';
import { teeInto } from '../stream-tee';
import type { IndexChangeContext, IndexChangeHook } from './index-change-hook';
import { parseMediaType, type MediaType } from './media-type';
import { MultipartError, readMultipart, type MultipartPart } from './multipart';
import { buildStoreResponse, type PartOutcome } from './store-response';

/** What STOW-RS needs from the rest of the server. */
export interface StoreServices {
  db: Database;
  blobs: BlobStore;
  config: Pick<AppConfig, 'maxRequestBytes' | 'maxHeaderBytes'>;
  logger: Logger;
  /** Work done in the same transaction as the index rows (the FHIR ImagingStudy view, project links). */
  onIndexChange?: IndexChangeHook;
}

/** One Store Instances request (PS3.18 10.5), transport-neutral. */
export interface StoreRequest {
  contentType: string | undefined;
  contentLength: number | undefined;
  body: Readable;
  /** The StudyInstanceUID of the target resource (`/studies/{study}`), if any. */
  studyInstanceUID?: string;
  /** Base of RetrieveURLs, e.g. `http://host:8080/dicomweb`. */
  dicomwebBaseUrl: string;
  /** Projects the stored studies are linked to (from the access decision). */
  projects?: string[];
  /** Which existing studies this request may add to (from the access decision); default any. */
  studyScope?: 'all' | 'projects';
  /**
   * The caller's granular scopes on what it stores (src/auth/dicom-write-scopes.ts): an instance
   * it refuses is neither indexed nor kept (FailureReason 0124H). Undefined (the common case):
   * nothing is checked.
   */
  admit?: InstanceAdmission;
  /**
   * The SOP Class and Instance UIDs the instance must carry (a DIMSE C-STORE names them in its
   * command, PS3.7 9.1.1.1): another data set is refused (FailureReason A900H) and not kept.
   */
  expected?: { sopClassUID: string; sopInstanceUID: string };
  /**
   * The request's AuditEvent (naming the studies stored, and `refusal` when `admit` refused
   * some instances) as an INSERT that the index transaction sends within its first statement,
   * so nothing is kept when the audit trail cannot be written.
   */
  auditStatement?: (studyInstanceUIDs: string[], refusal?: string) => StoreAuditStatement;
}

/** Whether the caller may store an instance: undefined when it may, else why not (a FailedSOPSequence message). */
export type InstanceAdmission = (instance: ScannedInstance) => string | undefined;

/** An AuditEvent INSERT for the index transaction's first statement (src/audit auditStatementInTransaction). */
export interface StoreAuditStatement extends LeadingInsert {
  /** Whether an error of that statement came from the audit table. */
  isFailure(err: unknown): boolean;
}

/** The PS3.18 store response: HTTP status, DICOM JSON body, Warning header texts. */
export interface StoreResponse {
  status: number;
  body: Record<string, unknown>;
  warnings: string[];
  /** Study Instance UIDs of the instances stored (for the audit trail's entities). */
  studies: string[];
  /** The denial to record when `admit` refused instances (`access denied: n of m instances refused: ...`). */
  refusal?: string;
}

/** Media types of parts this server can store (PS3.18 8.6.1.2: DICOM Part 10 instances). */
const DICOM_TYPES = new Set(['application/dicom']);

/**
 * Store Instances (PS3.18 10.5): streams each part to a staged blob while its header is
 * scanned, commits the blob (content addressed, durable), then indexes every stored
 * instance in one transaction and answers with the store response dataset.
 */
export async function storeInstances(services: StoreServices, req: StoreRequest): Promise<StoreResponse> {
  const mediaType = parseMediaType(req.contentType);
  if (!mediaType) throw refused(415, 'Content-Type is required: multipart/related; type="application/dicom"');
  if (req.contentLength !== undefined && req.contentLength > services.config.maxRequestBytes) {
    throw refused(413, `request body of ${req.contentLength} bytes exceeds the limit of ${services.config.maxRequestBytes} bytes`);
  }
  const route = enterRoute(services.db.knex);
  try {
    return await storeReceived(services, req, mediaType, route);
  } finally {
    route.leave();
  }
}

async function storeReceived(services: StoreServices, req: StoreRequest, mediaType: MediaType, route: EnRoute): Promise<StoreResponse> {
  const limiter = { limit: services.config.maxRequestBytes, exceeded: false };
  const body = limitBytes(req.body, limiter);
  const pending: Array<Promise<PartResult>> = [];
  if (mediaType.type === 'multipart/related') {
    const partType = (mediaType.params.type ?? 'application/dicom').toLowerCase();
    if (!DICOM_TYPES.has(partType)) {
      throw refused(415, `multipart/related type "${partType}" is not supported; use type="application/dicom"`);
    }
    const boundary = mediaType.params.boundary;
    if (!boundary) throw refused(400, 'multipart/related Content-Type has no boundary parameter');
    try {
      await readMultipart(body, boundary, (part) => pending.push(processPart(services, part, req)));
    } catch (err) {
      await abandon(services, pending);
      if (limiter.exceeded) throw tooLarge(limiter.limit);
      if (err instanceof MultipartError) throw refused(400, `malformed multipart body: ${err.message}`);
      // The client went away mid-body: nothing was stored, and it is not a server fault (no 500, no error log).
      if (req.body.readableAborted) throw refused(400, 'the request body ended before it was complete');
      throw err;
    }
  } else if (DICOM_TYPES.has(mediaType.type)) {
    const single = Readable.from(body, { objectMode: false });
    pending.push(processPart(services, { headers: { 'content-type': mediaType.type }, body: single, index: 0 }, req));
  } else {
    throw refused(415, `Content-Type ${mediaType.type} is not supported; use multipart/related; type="application/dicom"`);
  }
  const parts = await Promise.all(pending);
  if (limiter.exceeded) throw tooLarge(limiter.limit);
  if (parts.length === 0) throw new HttpError(400, 'the request contains no instances');
  const unavailable = parts.find((p) => p.unavailable);
  if (unavailable) throw new ServiceUnavailableError(unavailable.unavailable!);
  route.leave();

  // Instances the caller's scopes refused: the AuditEvent records the denial with what was stored.
  const refusedParts = req.admit ? parts.filter((p) => p.refused) : [];
  const refusal = refusedParts.length > 0 ? `access denied: ${refusedParts.length} of ${parts.length} instances ${refusedParts[0]!.refused}` : undefined;
  const audited = req.auditStatement;
  const auditing = { auditStatement: audited && refusal ? (studies: string[]) => audited(studies, refusal) : audited };
  const outcomes = await indexStored(services, parts, { dicomwebBaseUrl: req.dicomwebBaseUrl, projects: req.projects, studyScope: req.studyScope }, auditing);
  const response = buildStoreResponse(outcomes, req.dicomwebBaseUrl, req.studyInstanceUID);
  // Failure messages quote values from the data set (a UID with a DEL byte, say); Node refuses
  // such bytes in a header, which would turn a per-part failure into a 500.
  const studies = [...new Set(outcomes.flatMap((o) => (o.kind === 'stored' ? [o.studyInstanceUID] : [])))];
  return { ...response, warnings: response.warnings.map(headerSafe), studies, refusal };
}

/** Keeps only visible ASCII and spaces, so the text can go into a Warning header (RFC 9110 5.5). */
function headerSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}

interface PartResult {
  index: number;
  scanned?: ScannedInstance;
  blob?: CommittedBlob;
  failure?: { reason: number; message: string };
  /** Why the caller's scopes refused the instance (StoreRequest.admit). */
  refused?: string;
  /** Set when a backing service failed: the whole request answers 503. */
  unavailable?: string;
}

/** What each part of a request is checked against. */
type PartChecks = Pick<StoreRequest, 'studyInstanceUID' | 'admit' | 'expected'>;

async function processPart(services: StoreServices, part: MultipartPart, checks: PartChecks): Promise<PartResult> {
  const { blobs, db } = services;
  const { studyInstanceUID: targetStudy, admit, expected } = checks;
  const partType = parseMediaType(part.headers['content-type'])?.type ?? 'application/dicom';
  if (!DICOM_TYPES.has(partType)) {
    part.body.resume();
    return { index: part.index, failure: { reason: StatusCode.CannotUnderstand, message: `part ${part.index + 1} has media type ${partType}, not application/dicom` } };
  }
  const staged = blobs.stage();
  const scanner = createInstanceScanner({ maxHeaderBytes: services.config.maxHeaderBytes });
  let teeError: unknown;
  await teeInto(part.body, [staged.writable, scanner.writable]).catch((err) => (teeError = err));
  const [spooled, scan] = await Promise.allSettled([staged.done, scanner.result]);
  const fail = async (reason: number, message: string): Promise<PartResult> => {
    await blobs.discard(staged);
    return { index: part.index, failure: { reason, message }, scanned: scan.status === 'fulfilled' ? scan.value : undefined };
  };
  if (teeError) return fail(StatusCode.ProcessingFailure, `part ${part.index + 1} was not received completely`);
  if (spooled.status === 'rejected') return storageFailure(services, part.index, spooled.reason, () => blobs.discard(staged));
  if (scan.status === 'rejected') {
    const err = scan.reason;
    if (err instanceof DicomInstanceError) return fail(err.failureReason, `part ${part.index + 1}: ${err.message}`);
    services.logger.warn({ err, part: part.index }, 'scanner failed unexpectedly');
    return fail(StatusCode.CannotUnderstand, `part ${part.index + 1} could not be parsed as DICOM`);
  }
  const scanned = scan.value;
  try {
    validateInstance(scanned);
  } catch (err) {
    if (err instanceof DicomInstanceError) return fail(err.failureReason, `part ${part.index + 1}: ${err.message}`);
    throw err;
  }
  if (targetStudy && scanned.attributes.studyInstanceUID !== targetStudy) {
    // PS3.18 10.5.3: an instance outside the target study is refused (data set does not match).
    return fail(
      StatusCode.DataSetDoesNotMatchSopClass,
      `part ${part.index + 1}: StudyInstanceUID ${scanned.attributes.studyInstanceUID} does not match the target study ${targetStudy}`,
    );
  }
  const mismatch = expected && mismatchOf(scanned, expected);
  if (mismatch) return fail(StatusCode.DataSetDoesNotMatchSopClass, `part ${part.index + 1}: ${mismatch}`);
  // Granular scopes (SMART 2.2): an instance they refuse is dropped before its blob is named or claimed.
  const denial = admit?.(scanned);
  if (denial !== undefined) return { ...(await fail(StatusCode.NotAuthorized, `part ${part.index + 1}: ${denial}`)), refused: denial };
  // Claim before the blob gets its name: the orphan sweeper can then never delete these bytes
  // under us. The store writes and flushes the bytes while the claim runs (commit's fence).
  // Claims of parts arriving together share one statement (blob-ledger group claim).
  let claimError: unknown;
  const claim = blobClaimerOf(db.knex)(spooled.value.sha256, spooled.value.size).catch((err: unknown) => {
    claimError = err;
    throw err;
  });
  claim.catch(() => undefined); // settled below, or left behind by a commit that failed first
  try {
    const blob = await blobs.commit(staged, claim);
    return { index: part.index, scanned, blob };
  } catch (err) {
    await claim.catch(() => undefined);
    if (claimError === undefined) return storageFailure(services, part.index, err, () => blobs.discard(staged), scanned);
    await blobs.discard(staged);
    services.logger.error({ err: claimError }, 'blob ledger claim failed');
    return { index: part.index, scanned, unavailable: 'the index database is unavailable' };
  }
}

/** How the data set differs from the UIDs its sender announced, or undefined when it does not. */
function mismatchOf(scanned: ScannedInstance, expected: NonNullable<StoreRequest['expected']>): string | undefined {
  const a = scanned.attributes;
  if (a.sopClassUID !== expected.sopClassUID) return `the data set's SOPClassUID ${a.sopClassUID} is not the announced ${expected.sopClassUID}`;
  if (a.sopInstanceUID !== expected.sopInstanceUID) return `the data set's SOPInstanceUID ${a.sopInstanceUID} is not the announced ${expected.sopInstanceUID}`;
  return undefined;
}

async function storageFailure(
  services: StoreServices,
  index: number,
  err: unknown,
  cleanup: () => Promise<void>,
  scanned?: ScannedInstance,
): Promise<PartResult> {
  await cleanup();
  if (err instanceof BlobStoreFullError) {
    services.logger.error({ err }, 'blob store is full');
    return { index, scanned, failure: { reason: StatusCode.OutOfResources, message: `part ${index + 1}: storage is full` } };
  }
  if (err instanceof BlobStoreUnavailableError) {
    services.logger.error({ err }, 'blob store unavailable');
    return { index, scanned, unavailable: 'the blob store is unavailable' };
  }
  services.logger.error({ err }, 'blob store write failed');
  return { index, scanned, failure: { reason: StatusCode.ProcessingFailure, message: `part ${index + 1}: storage failed` } };
}

async function indexStored(services: StoreServices, parts: PartResult[], context: IndexChangeContext, auditing: Pick<StoreRequest, 'auditStatement'>): Promise<PartOutcome[]> {
  const stored = parts.filter((p) => p.blob && p.scanned);
  const items: InstanceToIndex[] = stored.map((p) => ({
    scanned: p.scanned!,
    blobKey: p.blob!.key,
    size: p.blob!.size,
    order: p.index,
  }));
  let results: IndexResult[] = [];
  if (items.length === 1 && !context.projects?.length && context.studyScope !== 'projects') {
    results = [await indexTogether(services, items[0]!, context, auditing)];
  } else if (items.length > 0) {
    results = await indexRequests(services, [{ items, auditing }], context).then((r) => r[0]!);
  }
  const byIndex = new Map(stored.map((p, i) => [p.index, results[i]]));
  return parts.map((p): PartOutcome => {
    const sopClassUID = p.scanned?.attributes.sopClassUID;
    const sopInstanceUID = p.scanned?.attributes.sopInstanceUID;
    const studyInstanceUID = p.scanned?.attributes.studyInstanceUID;
    const seriesInstanceUID = p.scanned?.attributes.seriesInstanceUID;
    if (p.failure) return { kind: 'failed', sopClassUID, sopInstanceUID, reason: p.failure.reason, message: p.failure.message };
    const r = byIndex.get(p.index);
    if (!r || r.status === 'failed') {
      const refused = r && 'reason' in r && r.reason !== undefined ? { reason: r.reason, message: `part ${p.index + 1}: ${r.message}` } : undefined;
      return { kind: 'failed', sopClassUID, sopInstanceUID, reason: refused?.reason ?? StatusCode.ProcessingFailure, message: refused?.message ?? `part ${p.index + 1}: indexing failed` };
    }
    const ids = { sopClassUID: sopClassUID!, sopInstanceUID: sopInstanceUID!, studyInstanceUID: studyInstanceUID!, seriesInstanceUID: seriesInstanceUID! };
    if (r.status === 'replaced') {
      return {
        kind: 'stored',
        ...ids,
        warning: {
          reason: StatusCode.CoercionOfDataElements,
          message: `instance ${sopInstanceUID} was stored before with different content; kept as version ${r.version} (version ${r.previousVersion} retained)`,
        },
      };
    }
    return { kind: 'stored', ...ids };
  });
}

type IndexResult = IndexOutcome | { status: 'failed'; reason?: number; message?: string };

/** The instances of one request to index, and how its AuditEvent is written. */
interface RequestToIndex {
  items: InstanceToIndex[];
  auditing: Pick<StoreRequest, 'auditStatement'>;
}

/**
 * Indexes the instances of one or more requests in ONE transaction, each request's AuditEvent
 * with them; resolves with each request's outcomes. Throws ServiceUnavailableError when the
 * audit trail or the database is unavailable (nothing was kept).
 */
async function indexRequests(services: StoreServices, requests: RequestToIndex[], context: IndexChangeContext): Promise<IndexResult[][]> {
  const items = requests.flatMap((r) => r.items);
  const audits: StoreAuditStatement[] = [];
  try {
    const hook = services.onIndexChange;
    for (const r of requests) {
      // The AuditEvent names the studies of the request, known before any row is written.
      const studies = [...new Set(r.items.map((i) => i.scanned.attributes.studyInstanceUID))];
      const statement = r.auditing.auditStatement?.(studies);
      if (statement) audits.push(statement);
    }
    // One request's AuditEvent rides in the first statement; several go first, one statement each.
    const leading = requests.length === 1 ? audits[0] : undefined;
    const outcomes = await indexInstances(services.db.knex, items, {
      before: leading || audits.length === 0 ? undefined : (trx) => writeAudits(trx, audits),
      leading,
      onChange: hook ? (trx, change) => hook(trx, change, context) : undefined,
      alongside: hook?.alongsideFor?.(context),
    });
    let at = 0;
    return requests.map((r) => outcomes.slice(at, (at += r.items.length)));
  } catch (err) {
    let failed: IndexResult;
    if (err instanceof DicomInstanceError) {
      // The index-change hook refused the change (e.g. a study of another project): a client fault.
      services.logger.warn({ err: err.message }, 'index change refused');
      failed = { status: 'failed', reason: err.failureReason, message: err.message };
    } else {
      // Nothing is kept that the audit trail could not record (the whole change rolled back).
      if (err instanceof AuditWriteError || audits.some((a) => a.isFailure(err))) {
        throw new ServiceUnavailableError('the audit trail is unavailable');
      }
      services.logger.error({ err }, 'indexing failed');
      if (isRetryableDbError(err)) throw new ServiceUnavailableError('the index database is unavailable');
      failed = { status: 'failed' };
    }
    return requests.map((r) => r.items.map(() => failed));
  }
}

/** Writes the AuditEvents of the requests indexed together in their transaction, in one statement. */
async function writeAudits(trx: Knex.Transaction, audits: StoreAuditStatement[]): Promise<void> {
  const together = auditInsertsAsOne(audits);
  await queryPrepared(trx, together.sql, together.values);
  for (const a of audits) a.written(trx);
}

/** Most single-instance requests indexed in one transaction. */
const MAX_INDEXED_TOGETHER = 50;

/**
 * How long a single-instance request reaching an idle index queue waits for the other STOW
 * requests of this process still on their way there (receiving, scanning, writing their blob),
 * so that they share its transaction. It waits only while there are such requests, and stops
 * as soon as none is left on the way. Measured (bench/stow.ts x1 c8, two pairs each): 0 ms
 * 149-155 inst/s on the embedded engine and 136-176 on PostgreSQL; 2 ms 235-248 and 174-189;
 * 5 ms no better than 2.
 */
const GATHER_MS = 2;

/** STOW requests of this process (per database) that have not reached their index step yet. */
interface RouteCount {
  onTheWay: number;
  /** Called when `onTheWay` drops. */
  listeners: Set<() => void>;
}
const routes = new WeakMap<Knex, RouteCount>();

/** A request's place among those on the way to the index; `leave()` may be called more than once. */
interface EnRoute {
  leave(): void;
}

function enterRoute(knex: Knex): EnRoute {
  let count = routes.get(knex);
  if (!count) {
    count = { onTheWay: 0, listeners: new Set() };
    routes.set(knex, count);
  }
  const c = count;
  c.onTheWay++;
  let left = false;
  return {
    leave() {
      if (left) return;
      left = true;
      c.onTheWay--;
      for (const l of [...c.listeners]) l();
    },
  };
}

/** Resolves once no other request is on its way to the index, or after `GATHER_MS`. */
function gather(knex: Knex): Promise<void> {
  const count = routes.get(knex);
  if (!count || count.onTheWay <= 0 || GATHER_MS <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      count.listeners.delete(check);
      resolve();
    };
    const check = () => {
      if (count.onTheWay <= 0) done();
    };
    const timer = setTimeout(done, GATHER_MS);
    count.listeners.add(check);
  });
}

interface IndexQueue {
  waiting: Array<{ request: RequestToIndex; resolve: (r: IndexResult) => void; reject: (err: unknown) => void }>;
}

/** Per database, the single-instance requests (by base URL) waiting to be indexed. */
const indexQueues = new WeakMap<Knex, Map<string, IndexQueue>>();

/**
 * A single-instance request linking no project: indexed together with the other single-instance
 * requests of this process that reach the index meanwhile, in one transaction (group commit, as
 * the blob claims do). The first to find the queue idle gathers the requests still on their way
 * (at most GATHER_MS), then indexes every request waiting; requests arriving while that
 * transaction runs form the next one. Together they share a transaction, its commit (WAL flush),
 * the audit trail's statement and the count updates of their studies, instead of paying for them
 * one instance at a time. A batch of several studies locks their rows in UID order
 * (instance-index), as a request of several studies does.
 */
function indexTogether(services: StoreServices, item: InstanceToIndex, context: IndexChangeContext, auditing: RequestToIndex['auditing']): Promise<IndexResult> {
  const knex = services.db.knex;
  let queues = indexQueues.get(knex);
  if (!queues) {
    queues = new Map();
    indexQueues.set(knex, queues);
  }
  const byKey = queues;
  const key = context.dicomwebBaseUrl;
  return new Promise((resolve, reject) => {
    let queue = byKey.get(key);
    const waiting = { request: { items: [item], auditing }, resolve, reject };
    if (queue) {
      queue.waiting.push(waiting);
      return;
    }
    queue = { waiting: [waiting] };
    byKey.set(key, queue);
    const own = queue;
    void (async () => {
      await gather(knex);
      while (own.waiting.length > 0) {
        const batch = own.waiting.splice(0, MAX_INDEXED_TOGETHER);
        try {
          let results = await indexRequests(services, batch.map((w) => w.request), context);
          // The shared transaction failed, but not for want of the database or the audit trail (those
          // throw): the cause may be one request's instance, so each is indexed again on its own,
          // and only what fails alone fails.
          if (batch.length > 1 && results.every(([r]) => r?.status === 'failed')) {
            results = [];
            for (const w of batch) results.push((await indexRequests(services, [w.request], context))[0]!);
          }
          batch.forEach((w, i) => w.resolve(results[i]![0]!));
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
      byKey.delete(key);
    })();
  });
}

/** Waits for parts already started when the request failed, dropping what they staged. */
async function abandon(services: StoreServices, pending: Array<Promise<PartResult>>): Promise<void> {
  const results = await Promise.allSettled(pending);
  for (const r of results) {
    if (r.status === 'fulfilled' && r.value.blob) {
      // Committed bytes stay in the ledger unreferenced; the sweeper removes them after the grace period.
      services.logger.debug({ key: r.value.blob.key }, 'abandoned blob left for the sweeper');
    }
  }
}

/** Passes the body through, failing once more than `limit` bytes have arrived (answered as 413). */
async function* limitBytes(source: Readable, limiter: { limit: number; exceeded: boolean }): AsyncGenerator<Buffer> {
  let total = 0;
  // Leaving the loop early (a refusal mid-body) must not destroy the request: that would take
  // the socket, and the answer with it, before the refusal is sent. The unread rest is dropped
  // with the connection after the answer (`Connection: close`).
  for await (const chunk of source.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limiter.limit) {
      limiter.exceeded = true;
      throw tooLarge(limiter.limit);
    }
    yield chunk;
  }
}

function tooLarge(limit: number): HttpError {
  return refused(413, `request body exceeds the limit of ${limit} bytes`);
}

/**
 * An error answered before the body was read to its end. The rest of the body is not drained,
 * so the connection is closed, and `Connection: close` tells the client not to reuse it (the
 * error handler closes it either way; without the header a keep-alive client sends its next
 * request into a closing socket).
 */
function refused(status: number, message: string): HttpError {
  return new HttpError(status, message, { Connection: 'close' });
}
