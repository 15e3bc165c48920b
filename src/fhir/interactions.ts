import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { withTransaction } from '../db/database';
import { etagOf, parsePrefer, parseQueryString, type FhirContext, type FhirRequest, type FhirResponse, type WriteInteraction } from './http/fhir-request';
import { badRequest, fhirError, gone, informational, notAllowed, notFound, OperationOutcomeError, preconditionFailed } from './outcome';
import { findConditionalMatches } from './search/search-service';
import { applyWrites, prepareDelete, prepareWrite, type PendingWrite } from './store/resource-writer';
import { readCurrent, readHistory, readVersion, type StoredResource } from './store/resource-store';
import type { AccessFilter } from './store/access';
import { idsOutside } from './store/write-access';
import { assertResourceShape, assertValidResource, ID_PATTERN } from './validation';
import { assertResourceRules } from './resources/resource-rules';

/**
 * The FHIR R4 RESTful interactions on instances and types (http 3.1.0): read, vread, create,
 * update, delete (plain and conditional) and history. Writes run in their own transaction, or in
 * the enclosing one when called from a transaction Bundle.
 */

/** Resource types only the server writes (AuditEvent: the audit trail is not client-editable). */
export const SERVER_WRITTEN_TYPES: ReadonlySet<string> = new Set(['AuditEvent']);

/** Runs `work` in the context's transaction, or a new one. */
export function inTransaction<T>(ctx: FhirContext, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return ctx.trx ? work(ctx.trx) : withTransaction(ctx.knex, work);
}

/** Rejects a logical id that is not FHIR `id` syntax. */
export function assertId(id: string, resourceType: string): void {
  if (!ID_PATTERN.test(id)) throw badRequest(`Invalid id '${id}'`, [`${resourceType}.id`]);
}

/** Rejects client writes to server-written types (405). */
export function assertClientWritable(resourceType: string): void {
  if (SERVER_WRITTEN_TYPES.has(resourceType)) throw notAllowed(`${resourceType} is written by the server only`);
}

const SCOPE_LETTER: Record<WriteInteraction, string> = { create: 'c', update: 'u', delete: 'd' };

/**
 * The refusal of a write its granular scopes do not reach (403, rolled back with its transaction).
 * It names the restriction, not the resource's content, and does not tell whether the stored
 * resource or the one sent fell outside.
 */
export function outsideWriteScope(resourceType: string, interaction: WriteInteraction): OperationOutcomeError {
  const letter = SCOPE_LETTER[interaction];
  return fhirError(
    403,
    'forbidden',
    `access denied: the scopes granting ${letter} on ${resourceType} are limited by search parameters (SMART App Launch 2.2 granular scopes), and this ${interaction} touches a ${resourceType} that matches none of them`,
  );
}

/**
 * Refuses (403) a write whose rows fall outside the caller's granular scopes for it (SMART App
 * Launch 2.2, "Finer-grained resource constraints using search parameters"): checked on the
 * stored rows before an update or delete, and on the written rows after a create or update, with
 * the search engine's own SQL (src/fhir/search/scope-filter.ts), so the write's transaction
 * rolls back. Nothing to check when the scopes do not narrow the type.
 */
export async function assertWithinWriteScope(ctx: FhirContext, trx: Knex.Transaction, resourceType: string, ids: readonly string[], interaction: WriteInteraction): Promise<void> {
  const filter = ctx.writeAccess?.(resourceType, interaction);
  if (!filter) return;
  if ((await idsOutside(trx, filter, resourceType, ids)).length > 0) throw outsideWriteScope(resourceType, interaction);
}

const httpDate = (d: Date) => d.toUTCString();

/** Headers every answer about one version carries. */
export function versionHeaders(ctx: FhirContext, s: { resourceType: string; id: string; versionId: number; lastUpdated: Date | string }): Record<string, string> {
  return {
    ETag: etagOf(s.versionId),
    'Last-Modified': httpDate(new Date(s.lastUpdated)),
  };
}

function writeAnswer(ctx: FhirContext, req: FhirRequest, w: PendingWrite, status: number): FhirResponse {
  const location = `${ctx.baseUrl}/${w.resourceType}/${w.id}/_history/${w.versionId}`;
  const headers = { ...versionHeaders(ctx, w), [status === 201 ? 'Location' : 'Content-Location']: location };
  const prefer = parsePrefer(req.headers.prefer).return;
  if (prefer === 'minimal') return { status, headers };
  if (prefer === 'OperationOutcome') return { status, headers, body: informational(status === 201 ? `Created ${w.resourceType}/${w.id}` : `Updated ${w.resourceType}/${w.id}`) };
  return { status, headers, body: w.content as Resource };
}

/** read (3.1.0.2): 200, 404, or 410 after delete; honours If-None-Match with 304. */
export async function readResource(ctx: FhirContext, req: FhirRequest, resourceType: string, id: string): Promise<FhirResponse> {
  assertId(id, resourceType);
  const s = await readCurrent(ctx.db, resourceType, id, { access: ctx.access });
  if (!s) throw notFound(`${resourceType}/${id} not found`);
  if (s.deleted) throw new OperationOutcomeError(410, gone(`${resourceType}/${id} was deleted`).outcome, versionHeaders(ctx, s));
  const headers = versionHeaders(ctx, s);
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').some((t) => t.trim() === headers.ETag || t.trim() === `"${s.versionId}"`)) return { status: 304, headers };
  return { status: 200, headers, body: s.content as Resource };
}

/** vread (3.1.0.3). */
export async function vreadResource(ctx: FhirContext, resourceType: string, id: string, vid: string): Promise<FhirResponse> {
  assertId(id, resourceType);
  if (!/^\d+$/.test(vid)) throw notFound(`Version ${vid} of ${resourceType}/${id} not found`);
  const s = await readVersion(ctx.db, resourceType, id, Number(vid), ctx.access);
  if (!s) throw notFound(`Version ${vid} of ${resourceType}/${id} not found`);
  if (s.deleted) throw new OperationOutcomeError(410, gone(`Version ${vid} of ${resourceType}/${id} is a delete`).outcome, versionHeaders(ctx, s));
  return { status: 200, headers: versionHeaders(ctx, s), body: s.content as Resource };
}

/** create (3.1.0.7), conditional with If-None-Exist (3.1.0.8). */
export async function createResource(ctx: FhirContext, req: FhirRequest, resourceType: string): Promise<FhirResponse> {
  assertClientWritable(resourceType);
  const resource = assertResourceShape(ctx.defs, req.body, resourceType);
  assertValidResource(ctx.defs, resource);
  assertResourceRules(ctx.resourceRules, resource);
  return inTransaction(ctx, async (trx) => {
    const ifNoneExist = req.headers['if-none-exist'];
    if (ifNoneExist) {
      const query = parseQueryString(ifNoneExist.includes('?') ? ifNoneExist.slice(ifNoneExist.indexOf('?') + 1) : ifNoneExist);
      const matches = await findConditionalMatches({ ...ctx, db: trx, access: conditionalAccess(ctx, 'create', resourceType) }, resourceType, query);
      if (matches.length > 1) throw preconditionFailed(`If-None-Exist matched ${matches.length}+ ${resourceType} resources`);
      if (matches.length === 1) return { status: 200, headers: versionHeaders(ctx, matches[0]), body: matches[0].content as Resource };
    }
    const w = prepareWrite(ctx.defs, { ...resource, id: randomUUID() }, undefined, 'POST', ctx.now());
    await applyWrites(trx, [w]);
    await ctx.onCreate?.(trx, w.resourceType, w.id);
    await assertWithinWriteScope(ctx, trx, w.resourceType, [w.id], 'create');
    return writeAnswer(ctx, req, w, 201);
  });
}

/** update (3.1.0.4) with create-on-update for client ids and If-Match version checks. */
export async function updateResource(ctx: FhirContext, req: FhirRequest, resourceType: string, id: string): Promise<FhirResponse> {
  assertClientWritable(resourceType);
  assertId(id, resourceType);
  const resource = assertResourceShape(ctx.defs, req.body, resourceType);
  if (!resource.id) throw badRequest('The resource must carry an id for update', [`${resourceType}.id`]);
  if (resource.id !== id) throw badRequest(`Resource id ${resource.id} does not match the URL id ${id}`, [`${resourceType}.id`]);
  assertValidResource(ctx.defs, resource);
  assertResourceRules(ctx.resourceRules, resource);
  const ifMatch = ifMatchVersion(req);
  return inTransaction(ctx, async (trx) => {
    const existing = await readCurrent(trx, resourceType, id, { forUpdate: true });
    await assertVisible(ctx, trx, existing, resourceType, id);
    checkIfMatch(ifMatch, existing, resourceType, id);
    // A deleted resource is no longer in any scope: only what is written now is checked.
    if (existing && !existing.deleted) await assertWithinWriteScope(ctx, trx, resourceType, [id], 'update');
    const w = prepareWrite(ctx.defs, ctx.keepMasked ? ctx.keepMasked(resource, existing?.content) : resource, existing, 'PUT', ctx.now());
    await applyWrites(trx, [w]);
    if (!existing) await ctx.onCreate?.(trx, w.resourceType, w.id);
    await assertWithinWriteScope(ctx, trx, resourceType, [id], 'update');
    return writeAnswer(ctx, req, w, existing && !existing.deleted ? 200 : 201);
  });
}

/**
 * An id that exists outside the caller's row filter is not the caller's to write: answered as
 * not found (the id cannot be created either, it is taken), never overwritten.
 */
export async function assertVisible(ctx: FhirContext, trx: Knex.Transaction, existing: StoredResource | undefined, resourceType: string, id: string): Promise<void> {
  if (!existing || !ctx.access) return;
  if (!(await readCurrent(trx, resourceType, id, { access: ctx.access }))) throw notFound(`${resourceType}/${id} not found`);
}

function ifMatchVersion(req: FhirRequest): number | undefined {
  const raw = req.headers['if-match'];
  if (raw === undefined) return undefined;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(raw.trim());
  if (!m) throw badRequest(`Invalid If-Match value ${raw}`);
  return Number(m[1]);
}

/** 412 when If-Match names a version other than the current one (3.1.0.4.2). */
export function checkIfMatch(ifMatch: number | undefined, existing: StoredResource | undefined, resourceType: string, id: string): void {
  if (ifMatch === undefined) return;
  if (!existing || existing.deleted) throw preconditionFailed(`If-Match: ${resourceType}/${id} has no current version`);
  if (existing.versionId !== ifMatch) throw preconditionFailed(`If-Match: ${resourceType}/${id} is at version ${existing.versionId}, not ${ifMatch}`);
}

/**
 * The rows the search of a conditional write sees: those its token may search (FhirContext.
 * searchAccess). A token that may not search the type cannot make a conditional write (403).
 */
function conditionalAccess(ctx: FhirContext, what: string, resourceType: string): AccessFilter | undefined {
  if (!ctx.searchAccess) return ctx.access;
  const filter = ctx.searchAccess();
  if (filter === 'denied') throw fhirError(403, 'forbidden', `A conditional ${what} searches ${resourceType}: this token may not search ${resourceType}`);
  return filter ?? ctx.access;
}

/** Conditional update (3.1.0.4.3): 0 matches create, 1 updates, more is 412. */
export async function conditionalUpdate(ctx: FhirContext, req: FhirRequest, resourceType: string): Promise<FhirResponse> {
  assertClientWritable(resourceType);
  const resource = assertResourceShape(ctx.defs, req.body, resourceType);
  return inTransaction(ctx, async (trx) => {
    const matches = await findConditionalMatches({ ...ctx, db: trx, access: conditionalAccess(ctx, 'update', resourceType) }, resourceType, req.query);
    if (matches.length > 1) throw preconditionFailed(`Conditional update matched more than one ${resourceType}`);
    let id: string;
    if (matches.length === 1) {
      if (resource.id && resource.id !== matches[0].id) throw badRequest(`Resource id ${resource.id} does not match the resource the condition selects`, [`${resourceType}.id`]);
      id = matches[0].id;
    } else {
      id = resource.id ?? randomUUID();
    }
    return updateResource({ ...ctx, db: trx, trx }, { ...req, body: { ...resource, id } }, resourceType, id);
  });
}

/** delete (3.1.0.6): 200 with an OperationOutcome; later reads answer 410. */
export async function deleteResource(ctx: FhirContext, req: FhirRequest, resourceType: string, id: string): Promise<FhirResponse> {
  assertClientWritable(resourceType);
  assertId(id, resourceType);
  const ifMatch = ifMatchVersion(req);
  return inTransaction(ctx, async (trx) => {
    const existing = await readCurrent(trx, resourceType, id, { forUpdate: true, access: ctx.access });
    if (!existing) throw notFound(`${resourceType}/${id} not found`);
    checkIfMatch(ifMatch, existing, resourceType, id);
    if (existing.deleted) return { status: 200, headers: versionHeaders(ctx, existing), body: informational(`${resourceType}/${id} was already deleted`) };
    await assertWithinWriteScope(ctx, trx, resourceType, [id], 'delete');
    const w = prepareDelete(existing, ctx.now());
    await applyWrites(trx, [w]);
    return { status: 200, headers: versionHeaders(ctx, w), body: informational(`Deleted ${resourceType}/${id}`) };
  });
}

/** Conditional delete (3.1.0.6.1), single-match mode: more than one match is 412. */
export async function conditionalDelete(ctx: FhirContext, req: FhirRequest, resourceType: string): Promise<FhirResponse> {
  assertClientWritable(resourceType);
  return inTransaction(ctx, async (trx) => {
    const matches = await findConditionalMatches({ ...ctx, db: trx, access: conditionalAccess(ctx, 'delete', resourceType) }, resourceType, req.query);
    if (matches.length > 1) throw preconditionFailed(`Conditional delete matched more than one ${resourceType}`);
    if (matches.length === 0) return { status: 200, headers: {}, body: informational('No resource matched the condition; nothing deleted') };
    return deleteResource({ ...ctx, db: trx, trx }, { ...req, headers: { ...req.headers, 'if-match': undefined } }, resourceType, matches[0].id);
  });
}

const STATUS_OF_METHOD: Record<string, string> = { POST: '201 Created', PUT: '200 OK', DELETE: '204 No Content' };

/** history at instance, type or system level (3.1.0.9), newest first, paged with _count/_offset. */
export async function readHistoryBundle(ctx: FhirContext, req: FhirRequest, resourceType?: string, id?: string): Promise<FhirResponse> {
  if (id && resourceType) {
    assertId(id, resourceType);
    const exists = await readCurrent(ctx.db, resourceType, id, { access: ctx.access });
    if (!exists) throw notFound(`${resourceType}/${id} not found`);
  }
  const one = (k: string) => req.query[k]?.[req.query[k].length - 1];
  const count = one('_count') ? Number(one('_count')) : 20;
  const offset = one('_offset') ? Number(one('_offset')) : 0;
  if (!Number.isInteger(count) || count < 0 || !Number.isInteger(offset) || offset < 0) throw badRequest('_count and _offset must be non-negative integers');
  const instant = (k: string) => {
    const v = one(k);
    if (v === undefined) return undefined;
    const d = new Date(v);
    if (!/^\d{4}-\d{2}-\d{2}/.test(v) || Number.isNaN(d.getTime())) throw badRequest(`${k} must be an instant, not '${v}'`);
    return d;
  };
  if ((ctx as { searchView?: unknown }).searchView && (one('_since') !== undefined || one('_at') !== undefined)) {
    // They compare the real lastUpdated, which a de-identified caller sees shifted: bisecting it would reveal the offset.
    throw fhirError(400, 'not-supported', '_since and _at are not available in the de-identified view (lastUpdated is shifted per patient)');
  }
  const rows = await readHistory(ctx.db, { resourceType, id, since: instant('_since'), at: instant('_at'), count: Math.min(count, 1000), offset, access: ctx.access });
  const more = rows.length > count;
  const entry: BundleEntry[] = rows.slice(0, count).map((h) => {
    const e: BundleEntry = { fullUrl: `${ctx.baseUrl}/${h.resourceType}/${h.id}` };
    if (h.content) e.resource = h.content;
    e.request = { method: (h.method ?? 'PUT') as 'PUT', url: h.method === 'POST' ? h.resourceType : `${h.resourceType}/${h.id}` };
    e.response = { status: STATUS_OF_METHOD[h.method ?? 'PUT'] ?? '200 OK', etag: etagOf(h.versionId), lastModified: h.lastUpdated.toISOString() };
    return e;
  });
  const path = [resourceType, id, '_history'].filter(Boolean).join('/');
  const link = (o: number) => {
    const q = new URLSearchParams();
    for (const [k, vs] of Object.entries(req.query)) if (k !== '_offset' && k !== '_count') for (const v of vs) q.append(k, v);
    q.set('_count', String(count));
    if (o > 0) q.set('_offset', String(o));
    return `${ctx.baseUrl}/${path}?${q.toString()}`;
  };
  const links = [{ relation: 'self', url: link(offset) }];
  if (offset > 0) links.push({ relation: 'previous', url: link(Math.max(0, offset - count)) });
  if (more) links.push({ relation: 'next', url: link(offset + count) });
  const bundle: Bundle = { resourceType: 'Bundle', type: 'history', link: links, entry };
  return { status: 200, headers: {}, body: bundle };
}
