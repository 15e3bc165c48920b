import type { Knex } from 'knex';
import type { AuditEvent as FhirAuditEvent, Bundle, BundleEntry, BundleLink, Resource } from '@medplum/fhirtypes';
import { auditIndexColumns, countAuditEvents, readAuditEvent, searchAuditEvents, type AuditEvent } from '../audit';
import { etagOf, parsePrefer, type FhirContext, type FhirRequest, type FhirResponse, type FhirTypeHandler } from './http/fhir-request';
import { badRequest, fhirError, notAllowed, notFound, outcome } from './outcome';
import { CURSOR_PARAM, parseAuditEventQuery, type AuditEventQuery } from './resources/audit-event-search';
import { validateOperation } from './validate-operation';

/**
 * AuditEvent served from the durable audit trail (src/audit), not from the FHIR store: read,
 * vread of version 1, instance history, search (GET and POST _search) and type-level $validate.
 * The trail is append-only evidence, so create, update, patch and delete are 405 here and in
 * batch Bundles (transaction Bundles refuse them earlier: AuditEvent is a server-written type).
 * Installed through FhirRouterDeps.typeHandlers.
 */
export interface AuditEventHandlerDeps {
  /** The database holding `audit_events` (the root knex: reads never join a Bundle's transaction). */
  knex: Knex;
  /**
   * Resolves once the AuditEvents written so far are in `audit_events` (the outbox has shipped
   * them), so that a search sees every access made before it; a failure is not the reader's.
   */
  settle?: () => Promise<void>;
}

const READ_ONLY = 'AuditEvent is written by the server only: the audit trail is append-only';

/** Builds the `typeHandlers.AuditEvent` handler of the FHIR router. */
export function createAuditEventTypeHandler(deps: AuditEventHandlerDeps): FhirTypeHandler {
  return async (ctx: FhirContext, req: FhirRequest): Promise<FhirResponse> => {
    const [, second, third, fourth, ...rest] = req.path.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const refuse = (): never => {
      if (method === 'GET') throw notAllowed(`GET is not allowed on ${req.path}`);
      throw notAllowed(`${READ_ONLY} (${req.method} ${req.path} refused)`);
    };
    if (rest.length > 0) throw notFound(`No such endpoint: ${req.path}`);
    // A caller confined to projects (a PI) sees the accesses made within them; one whose rows are
    // filtered otherwise (granular scopes alone) sees none of the trail.
    if (ctx.access && !ctx.projects) throw fhirError(403, 'forbidden', 'The audit trail is filtered by project only: this token may not read it');

    if (method === 'GET' || method === 'POST') await deps.settle?.().catch(() => undefined);
    if (second === undefined) {
      if (method !== 'GET') refuse();
      return searchResponse(deps, ctx, req, req.query);
    }
    if (second === '_search' && third === undefined) {
      if (method !== 'POST') refuse();
      return searchResponse(deps, ctx, req, mergeParams(req.query, formParams(req.body)));
    }
    if (second === '$validate' && third === undefined) {
      if (method !== 'POST') refuse();
      return validateOperation(ctx, req, 'AuditEvent');
    }
    if (second === '_history') refuse();
    if (method !== 'GET') refuse();
    const event = await readAuditEvent(deps.knex, second);
    if (!event || (ctx.projects && !withinProjects(event, ctx.projects))) throw notFound(`AuditEvent/${second} not found`);
    if (third === undefined) return readAnswer(req, event);
    if (third !== '_history') throw notFound(`No such endpoint: ${req.path}`);
    if (fourth === undefined) return { status: 200, headers: {}, body: historyBundle(ctx, event) };
    if (fourth !== '1') throw notFound(`Version ${fourth} of AuditEvent/${second} not found: audit events have one version`);
    return readAnswer(req, event);
  };
}

/** True when the event names projects and every one of them is among `projects`. */
function withinProjects(event: AuditEvent, projects: readonly string[]): boolean {
  const named = auditIndexColumns(event).projects ?? [];
  return named.length > 0 && named.every((p) => projects.includes(p));
}

/** The stored event with the meta a FHIR read carries: one version, last updated when recorded. */
function served(event: AuditEvent): FhirAuditEvent {
  const { resourceType, id, meta, ...rest } = event;
  return { resourceType, id, meta: { ...meta, versionId: '1', lastUpdated: event.recorded }, ...rest } as unknown as FhirAuditEvent;
}

function readAnswer(req: FhirRequest, event: AuditEvent): FhirResponse {
  const headers = { ETag: etagOf(1), 'Last-Modified': new Date(event.recorded).toUTCString() };
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').some((t) => t.trim() === headers.ETag || t.trim() === '"1"')) return { status: 304, headers };
  return { status: 200, headers, body: served(event) as Resource };
}

function historyBundle(ctx: FhirContext, event: AuditEvent): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'history',
    link: [{ relation: 'self', url: `${ctx.baseUrl}/AuditEvent/${event.id}/_history` }],
    entry: [
      {
        fullUrl: `${ctx.baseUrl}/AuditEvent/${event.id}`,
        resource: served(event) as Resource,
        request: { method: 'POST', url: 'AuditEvent' },
        response: { status: '201 Created', etag: etagOf(1), lastModified: event.recorded },
      },
    ],
  };
}

/** Search (FHIR R4 3.1.1) over the trail: a searchset Bundle, newest first, with a keyset `next` link. */
async function searchResponse(deps: AuditEventHandlerDeps, ctx: FhirContext, req: FhirRequest, query: Record<string, string[]>): Promise<FhirResponse> {
  const strict = parsePrefer(req.headers.prefer).handling === 'strict';
  const q = parseAuditEventQuery(query, { strict, baseUrl: ctx.baseUrl });
  if (ctx.projects) q.params.withinProjects = ctx.projects;
  const visible = (e: AuditEvent | undefined): e is AuditEvent => e !== undefined && (!ctx.projects || withinProjects(e, ctx.projects));
  let events: AuditEvent[] = [];
  let next: string | undefined;
  let total: number | undefined;
  if (q.summaryCount || q.total) {
    if (q.ids) total = (await Promise.all(q.ids.map((id) => readAuditEvent(deps.knex, id)))).filter(visible).length;
    else total = q.empty ? 0 : await countAuditEvents(deps.knex, q.params);
  }
  if (q.summaryCount) {
    return { status: 200, headers: {}, body: { resourceType: 'Bundle', type: 'searchset', total, link: [{ relation: 'self', url: pageUrl(ctx.baseUrl, q, undefined) }] } };
  }
  if (q.ids) {
    const found = await Promise.all(q.ids.map((id) => readAuditEvent(deps.knex, id)));
    events = found.filter(visible);
  } else if (!q.empty) {
    try {
      ({ events, next } = await searchAuditEvents(deps.knex, { ...q.params, count: q.count }));
    } catch (err) {
      if (/invalid audit cursor|not a date/.test((err as Error)?.message ?? '')) throw badRequest(`Invalid ${CURSOR_PARAM}: use the next link of the previous page`);
      throw err;
    }
  }
  const entry: BundleEntry[] = events.map((e) => ({ fullUrl: `${ctx.baseUrl}/AuditEvent/${e.id}`, resource: served(e) as Resource, search: { mode: 'match' } }));
  if (q.ignored.length > 0) {
    entry.push({ resource: outcome('warning', 'not-supported', `Ignored search parameters: ${q.ignored.map((i) => `${i.name} (${i.reason})`).join('; ')}`), search: { mode: 'outcome' } });
  }
  const link: BundleLink[] = [{ relation: 'self', url: pageUrl(ctx.baseUrl, q, q.params.cursor) }];
  if (next) link.push({ relation: 'next', url: pageUrl(ctx.baseUrl, q, next) });
  return { status: 200, headers: {}, body: { resourceType: 'Bundle', type: 'searchset', ...(total !== undefined ? { total } : {}), link, entry } };
}

function pageUrl(baseUrl: string, q: AuditEventQuery, cursor: string | undefined): string {
  const params = new URLSearchParams();
  for (const [k, v] of q.applied) params.append(k, v);
  params.set('_count', String(q.count));
  if (cursor) params.set(CURSOR_PARAM, cursor);
  return `${baseUrl}/AuditEvent?${params.toString()}`;
}

function formParams(body: unknown): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (!body || typeof body !== 'object') return out;
  for (const [k, v] of Object.entries(body as Record<string, unknown>)) out[k] = (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === 'string');
  return out;
}

function mergeParams(a: Record<string, string[]>, b: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = [...(out[k] ?? []), ...v];
  return out;
}
