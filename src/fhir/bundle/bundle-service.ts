import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Bundle, BundleEntry, BundleEntryResponse, Resource } from '@medplum/fhirtypes';
import { withTransaction } from '../../db/database';
import { etagOf, parsePrefer, parseQueryString, type FhirContext, type FhirRequest, type FhirResponse, type WriteInteraction } from '../http/fhir-request';
import { assertClientWritable, assertId, assertVisible, assertWithinWriteScope, checkIfMatch, outsideWriteScope } from '../interactions';
import { badRequest, notFound, OperationOutcomeError, outcome, preconditionFailed } from '../outcome';
import { findConditionalMatches } from '../search/search-service';
import { applyWrites, prepareDelete, prepareWrite, type PendingWrite } from '../store/resource-writer';
import { readCurrent } from '../store/resource-store';
import { idsOutside } from '../store/write-access';
import { assertResourceShape } from '../validation';
import { startValidation } from '../validation-pool';
import { defaultResourceRules, hasErrors } from '../resources/resource-rules';
import { findReferences, isConditionalReference, rewriteReferenceSites } from './references';

/**
 * Batch and transaction Bundles (FHIR R4 http 3.1.0.11). A transaction is all-or-nothing in ONE
 * database transaction: entries are processed DELETE, POST, PUT, GET (3.1.0.11.2), fullUrl and
 * conditional references are resolved first, and all writes are applied together (multi-row
 * inserts). A batch runs each entry on its own and reports each outcome.
 */

/** Runs one request through the FHIR router (injected to keep this module free of the router). */
export type Dispatch = (ctx: FhirContext, req: FhirRequest) => Promise<FhirResponse>;

const REASON: Record<number, string> = { 200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 410: 'Gone', 412: 'Precondition Failed', 422: 'Unprocessable Entity', 500: 'Internal Server Error' };
const statusLine = (s: number) => `${s} ${REASON[s] ?? ''}`.trim();

/** Writes applied per multi-row statement group inside a transaction Bundle. */
const WRITE_CHUNK = 100;

interface ParsedEntry {
  index: number;
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE';
  resourceType?: string;
  id?: string;
  query?: Record<string, string[]>;
  path: string;
  fullUrl?: string;
  resource?: Resource;
  entry: BundleEntry;
}

/** POST to the base: a batch or transaction Bundle. */
export async function processBundle(ctx: FhirContext, req: FhirRequest, dispatch: Dispatch): Promise<FhirResponse> {
  const bundle = req.body as Bundle | undefined;
  if (!bundle || typeof bundle !== 'object' || bundle.resourceType !== 'Bundle') throw badRequest('POST to the base must carry a Bundle', ['Bundle']);
  if (bundle.type !== 'batch' && bundle.type !== 'transaction') throw badRequest(`Bundle.type must be batch or transaction, not ${String(bundle.type)}`, ['Bundle.type']);
  const entries = (bundle.entry ?? []).map((e, i) => parseEntry(ctx, e, i));
  const body = bundle.type === 'transaction' ? await runTransaction(ctx, req, entries, dispatch) : await runBatch(ctx, req, entries, dispatch);
  return { status: 200, headers: {}, body };
}

function parseEntry(ctx: FhirContext, entry: BundleEntry, index: number): ParsedEntry {
  const where = `Bundle.entry[${index}]`;
  const method = entry?.request?.method;
  let url = entry?.request?.url;
  if (!method || !['GET', 'HEAD', 'POST', 'PUT', 'DELETE'].includes(method)) throw badRequest(`${where}.request.method must be GET, HEAD, POST, PUT or DELETE`, [`${where}.request.method`]);
  if (!url) throw badRequest(`${where}.request.url is required`, [`${where}.request.url`]);
  if (url.startsWith(`${ctx.baseUrl}/`)) url = url.slice(ctx.baseUrl.length + 1);
  url = url.replace(/^\/+/, '');
  const q = url.indexOf('?');
  const path = q >= 0 ? url.slice(0, q) : url;
  const segments = path.split('/').filter(Boolean);
  const parsed: ParsedEntry = {
    index,
    method: method as ParsedEntry['method'],
    path: `/${path}`,
    query: q >= 0 ? parseQueryString(url.slice(q + 1)) : {},
    resourceType: segments[0],
    id: segments[1],
    fullUrl: entry.fullUrl,
    resource: entry.resource,
    entry,
  };
  if ((method === 'POST' || method === 'PUT') && !entry.resource) throw badRequest(`${where} has no resource`, [`${where}.resource`]);
  return parsed;
}

function atEntry(e: ParsedEntry, err: unknown): unknown {
  if (!(err instanceof OperationOutcomeError)) return err;
  const issue = (err.outcome.issue ?? []).map((i) => ({
    ...i,
    diagnostics: `Bundle.entry[${e.index}] (${e.method} ${e.path.slice(1)}): ${i.diagnostics ?? i.details?.text ?? ''}`,
    expression: [...(i.expression ?? []).map((x) => `Bundle.entry[${e.index}].resource.${x}`), `Bundle.entry[${e.index}]`],
  }));
  return new OperationOutcomeError(err.status, { ...err.outcome, issue }, err.headers);
}

async function runBatch(ctx: FhirContext, req: FhirRequest, entries: ParsedEntry[], dispatch: Dispatch): Promise<Bundle> {
  const out: BundleEntry[] = [];
  for (const e of entries) {
    const headers: Record<string, string | undefined> = {
      prefer: req.headers.prefer,
      'if-none-exist': e.entry.request?.ifNoneExist,
      'if-match': e.entry.request?.ifMatch,
      'if-none-match': e.entry.request?.ifNoneMatch,
    };
    const denial = req.entryDenials?.get(e.index);
    if (denial) {
      out.push({ response: { status: statusLine(403), outcome: outcome('error', 'forbidden', denial) } });
      continue;
    }
    try {
      const res = await dispatch(ctx, { method: e.method, path: e.path, query: e.query ?? {}, headers, body: e.resource });
      out.push(responseEntry(res));
    } catch (err) {
      if (!(err instanceof OperationOutcomeError)) throw err;
      out.push({ response: { status: statusLine(err.status), outcome: err.outcome } });
    }
  }
  return { resourceType: 'Bundle', type: 'batch-response', entry: out };
}

function responseEntry(res: FhirResponse): BundleEntry {
  const response: BundleEntryResponse = { status: statusLine(res.status) };
  const location = res.headers.Location ?? res.headers['Content-Location'];
  if (location) response.location = location;
  if (res.headers.ETag) response.etag = res.headers.ETag;
  if (res.headers['Last-Modified']) response.lastModified = new Date(res.headers['Last-Modified']).toISOString();
  const e: BundleEntry = { response };
  if (res.body && res.body.resourceType !== 'OperationOutcome') e.resource = res.body;
  else if (res.body) response.outcome = res.body;
  return e;
}

async function runTransaction(ctx: FhirContext, req: FhirRequest, entries: ParsedEntry[], dispatch: Dispatch): Promise<Bundle> {
  const prefer = parsePrefer(req.headers.prefer).return;
  return withTransaction(ctx.knex, async (trx) => {
    const tctx: FhirContext = { ...ctx, db: trx, trx };
    const now = ctx.now();
    const responses = new Map<number, BundleEntry>();
    const refMap = new Map<string, string>();
    const writes: Array<{ e: ParsedEntry; resource: Resource; method: 'POST' | 'PUT' }> = [];
    const targets = new Set<string>();
    const claim = (e: ParsedEntry, key: string) => {
      if (targets.has(key)) throw badRequest(`${key} appears in more than one entry of the transaction`);
      targets.add(key);
    };

    // 1. Identities: assign ids to creates, resolve conditional creates/updates/deletes.
    const order = { DELETE: 0, POST: 1, PUT: 2, GET: 3, HEAD: 3 } as const;
    const sorted = [...entries].sort((a, b) => order[a.method] - order[b.method] || a.index - b.index);
    const deletes: PendingWrite[] = [];
    for (const e of sorted) {
      try {
        if (e.method === 'GET' || e.method === 'HEAD') continue;
        const rt = e.resourceType as string;
        if (!ctx.defs.resourceTypes.has(rt)) throw notFound(`Unknown resource type ${rt}`);
        assertClientWritable(rt);
        if (e.method === 'DELETE') {
          const id = e.id ?? (await singleMatch(tctx, rt, e.query ?? {}, 'delete', true))?.id;
          if (!id) {
            responses.set(e.index, { response: { status: statusLine(204) } });
            continue;
          }
          assertId(id, rt);
          claim(e, `${rt}/${id}`);
          const existing = await readCurrent(trx, rt, id, { forUpdate: true, access: ctx.access });
          if (!existing) throw notFound(`${rt}/${id} not found`);
          checkIfMatch(ifMatchOf(e), existing, rt, id);
          if (existing.deleted) {
            responses.set(e.index, { response: { status: statusLine(204) } });
            continue;
          }
          await assertWithinWriteScope(ctx, trx, rt, [id], 'delete');
          const w = prepareDelete(existing, now);
          deletes.push(w);
          responses.set(e.index, { response: { status: statusLine(204), etag: etagOf(w.versionId), lastModified: w.lastUpdated } });
          continue;
        }
        const resource = assertResourceShape(ctx.defs, e.resource, rt);
        let id: string;
        if (e.method === 'POST') {
          const ifNoneExist = e.entry.request?.ifNoneExist;
          const match = ifNoneExist ? await singleMatch(tctx, rt, parseQueryString(ifNoneExist.replace(/^[^?]*\?/, '')), 'create', true) : undefined;
          if (match) {
            if (e.fullUrl) refMap.set(e.fullUrl, `${rt}/${match.id}`);
            responses.set(e.index, {
              ...(prefer === 'minimal' ? {} : { resource: match.content as Resource }),
              response: { status: statusLine(200), location: `${rt}/${match.id}/_history/${match.versionId}`, etag: etagOf(match.versionId), lastModified: match.lastUpdated.toISOString() },
            });
            continue;
          }
          id = randomUUID();
        } else if (e.id) {
          id = e.id;
          if (resource.id !== id) throw badRequest(`Resource id ${String(resource.id)} does not match the request URL id ${id}`, [`${rt}.id`]);
        } else {
          const match = await singleMatch(tctx, rt, e.query ?? {}, 'update', true);
          if (match && resource.id && resource.id !== match.id) throw badRequest('Resource id does not match the resource the condition selects', [`${rt}.id`]);
          id = match?.id ?? resource.id ?? randomUUID();
        }
        assertId(id, rt);
        claim(e, `${rt}/${id}`);
        if (e.fullUrl) refMap.set(e.fullUrl, `${rt}/${id}`);
        writes.push({ e, resource: { ...resource, id }, method: e.method as 'POST' | 'PUT' });
      } catch (err) {
        throw atEntry(e, err);
      }
    }

    // 2. Conditional references resolve to exactly one existing resource.
    const sites = writes.map((w) => findReferences(w.resource));
    for (const [i, { e }] of writes.entries()) {
      for (const { reference: ref } of sites[i]) {
        if (!isConditionalReference(ref) || refMap.has(ref)) continue;
        try {
          const [rt, query] = [ref.slice(0, ref.indexOf('?')), ref.slice(ref.indexOf('?') + 1)];
          if (!ctx.defs.resourceTypes.has(rt)) throw badRequest(`Unknown resource type in conditional reference ${ref}`);
          const matches = await findConditionalMatches(tctx, rt, parseQueryString(query));
          if (matches.length !== 1) throw preconditionFailed(`Conditional reference ${ref} matched ${matches.length === 0 ? 'no' : 'more than one'} resource`);
          refMap.set(ref, `${rt}/${matches[0].id}`);
        } catch (err) {
          throw atEntry(e, err);
        }
      }
    }

    // 3. Rewrite references, then validate and write at the same time: validation (the largest
    //    cost) runs in the worker threads while this thread prepares the writes (index rows) and
    //    the database applies them in chunks; then this thread validates what is left. Nothing
    //    commits before every resource has passed: an invalid one fails the whole transaction
    //    with its 422, which takes precedence over any error the writes met meanwhile (they may
    //    have been given the invalid resource).
    const rewritten = writes.map((w, i) => rewriteReferenceSites(w.resource, sites[i], refMap));
    const rules = ctx.resourceRules ?? defaultResourceRules();
    const validation = startValidation(ctx.defs, rewritten);
    const rejection: Promise<unknown> = validation.done.then(
      (issues) => {
        for (const [i, w] of writes.entries()) {
          const all = [...issues[i], ...rules.check(rewritten[i])];
          if (hasErrors(all)) return atEntry(w.e, new OperationOutcomeError(422, { resourceType: 'OperationOutcome', issue: all }));
        }
        return undefined;
      },
      (err: unknown) => err ?? new Error('validation failed'),
    );
    let inFlight: Promise<void> = applyWrites(trx, deletes);
    let chunk: PendingWrite[] = [];
    const created: PendingWrite[] = [];
    try {
      for (const [i, w] of writes.entries()) {
        try {
          const resource = rewritten[i];
          if (w.method === 'PUT') await inFlight;
          const existing = w.method === 'PUT' ? await readCurrent(trx, resource.resourceType, resource.id as string, { forUpdate: true }) : undefined;
          if (w.method === 'PUT') await assertVisible(ctx, trx, existing, resource.resourceType, resource.id as string);
          if (w.method === 'PUT') checkIfMatch(ifMatchOf(w.e), existing, resource.resourceType, resource.id as string);
          if (existing && !existing.deleted) await assertWithinWriteScope(ctx, trx, resource.resourceType, [resource.id as string], 'update');
          const p = prepareWrite(ctx.defs, ctx.keepMasked && existing ? ctx.keepMasked(resource, existing.content) : resource, existing, w.method, now);
          chunk.push(p);
          if (!existing && ctx.onCreate) created.push(p);
          const status = existing && !existing.deleted ? 200 : 201;
          responses.set(w.e.index, {
            ...(prefer === 'minimal' ? {} : { resource: p.content as Resource }),
            response: { status: statusLine(status), location: `${p.resourceType}/${p.id}/_history/${p.versionId}`, etag: etagOf(p.versionId), lastModified: p.lastUpdated },
          });
        } catch (err) {
          throw atEntry(w.e, err);
        }
        if (chunk.length >= WRITE_CHUNK) {
          const ready = chunk;
          chunk = [];
          inFlight = inFlight.then(() => applyWrites(trx, ready));
        }
      }
      const last = chunk;
      inFlight = inFlight.then(() => applyWrites(trx, last));
      // This thread is free now: it validates what the workers have not taken yet.
      validation.helpHere();
      await inFlight;
      const invalid = await rejection;
      if (invalid) throw invalid;
      for (const p of created) await ctx.onCreate!(trx, p.resourceType, p.id);
    } catch (err) {
      validation.helpHere();
      await inFlight.catch(() => undefined);
      throw (await rejection) ?? err;
    }
    await assertWritesWithinScope(ctx, trx, writes);

    // 4. Reads and searches see the transaction's own writes.
    for (const e of sorted.filter((x) => x.method === 'GET' || x.method === 'HEAD')) {
      try {
        const res = await dispatch(tctx, { method: 'GET', path: e.path, query: e.query ?? {}, headers: { 'if-none-match': e.entry.request?.ifNoneMatch }, body: undefined });
        responses.set(e.index, responseEntry(res));
      } catch (err) {
        throw atEntry(e, err);
      }
    }
    return { resourceType: 'Bundle', type: 'transaction-response', entry: entries.map((e) => responses.get(e.index) as BundleEntry) } as Bundle;
  });
}

/**
 * The written rows of a transaction, checked against the caller's granular write scopes (see
 * assertWithinWriteScope): one statement per type and interaction; the first entry outside
 * refuses the whole transaction.
 */
async function assertWritesWithinScope(ctx: FhirContext, trx: Knex.Transaction, writes: ReadonlyArray<{ e: ParsedEntry; resource: Resource; method: 'POST' | 'PUT' }>): Promise<void> {
  if (!ctx.writeAccess) return;
  const groups = new Map<string, { resourceType: string; interaction: WriteInteraction; writes: Array<{ e: ParsedEntry; id: string }> }>();
  for (const w of writes) {
    const interaction: WriteInteraction = w.method === 'POST' ? 'create' : 'update';
    const key = `${w.resource.resourceType} ${interaction}`;
    const group = groups.get(key) ?? { resourceType: w.resource.resourceType, interaction, writes: [] };
    group.writes.push({ e: w.e, id: w.resource.id as string });
    groups.set(key, group);
  }
  for (const { resourceType, interaction, writes: group } of groups.values()) {
    const filter = ctx.writeAccess(resourceType, interaction);
    if (!filter) continue;
    const outside = new Set(await idsOutside(trx, filter, resourceType, group.map((g) => g.id)));
    const first = group.find((g) => outside.has(g.id));
    if (first) throw atEntry(first.e, outsideWriteScope(resourceType, interaction));
  }
}

function ifMatchOf(e: ParsedEntry): number | undefined {
  const raw = e.entry.request?.ifMatch;
  if (!raw) return undefined;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(raw.trim());
  if (!m) throw badRequest(`Invalid ifMatch ${raw}`);
  return Number(m[1]);
}

async function singleMatch(ctx: FhirContext, rt: string, query: Record<string, string[]>, what: string, allowNone: boolean) {
  if (Object.keys(query).length === 0) throw badRequest(`Conditional ${what} needs search criteria`);
  const matches = await findConditionalMatches(ctx, rt, query);
  if (matches.length > 1) throw preconditionFailed(`Conditional ${what} matched more than one ${rt}`);
  if (matches.length === 0 && !allowNone) throw notFound(`Conditional ${what} matched no ${rt}`);
  return matches[0];
}
