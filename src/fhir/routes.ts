import express, { type NextFunction, type Request, type Response } from 'express';
import { AuditWriteError } from '../audit/audit-store';
import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import type { TransactionAuditor } from '../audit/audit-response';
import type { Database } from '../db/database';
import { isRetryableDbError, withTransaction } from '../db/database';
import { requestBaseUrl } from '../http/base-url';
import { loggableUrl, type Logger } from '../logger';
import type { AccessLocals } from '../auth/access-guard';
import type { PrivacyService } from '../privacy/privacy-types';
import { createDeidView, type DeidView } from './deid/deid-view';
import { createFieldMask, type FieldRules } from './deid/field-mask';
import { loadFhirDefinitions } from './definitions';
import { handleFhirRequest } from './fhir-router';
import { checkRequestContentType, isJsonContentType, negotiateResponseType } from './http/format';
import { parseQueryString, type DeferredRefresh, type FhirContext, type FhirRequest, type FhirTypeHandler, type WriteInteraction } from './http/fhir-request';
import { fhirError, OperationOutcomeError } from './outcome';
import type { ResourceRules } from './resources/resource-rules';
import type { AccessFilter } from './store/access';

/** Methods that may change resources: run in one transaction with their AuditEvent. */
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Largest FHIR JSON body accepted (a big transaction Bundle). */
const MAX_JSON_BYTES = '64mb';

/** What the FHIR router is composed from. */
export interface FhirRouterDeps {
  db: Database;
  logger: Logger;
  publicBaseUrl?: string;
  /** Row-level security: the rows a request may read (its token's projects and scopes). */
  accessFilter?: (req: Request) => AccessFilter | undefined;
  /** The rows a request's granular scopes let it change by a write on a type (FhirContext.writeAccess); undefined: not narrowed. */
  writeFilter?: (req: Request, resourceType: string, interaction: WriteInteraction) => AccessFilter | undefined;
  /** The rows a search by the request's token sees, for the search of a conditional write (FhirContext.searchAccess). */
  searchFilter?: (req: Request) => AccessFilter | 'denied' | undefined;
  /** Work to do in the transaction of each resource the request creates (project links). */
  onCreate?: (req: Request) => FhirContext['onCreate'];
  /**
   * Asks the access policy about one entry of a batch or transaction Bundle: the reason it is
   * denied, or undefined. Any denied entry refuses the whole Bundle (403) before anything runs.
   */
  authorizeBundleEntry?: (req: Request, method: string, url: string) => string | undefined;
  /**
   * Writes the request's AuditEvent in the transaction of a write (src/audit), so a change that
   * cannot be audited is not kept. Absent: the audit gate alone (after the change committed).
   */
  auditInTransaction?: TransactionAuditor;
  /** Resource types served by another store (e.g. AuditEvent by the audit trail). */
  typeHandlers?: Readonly<Record<string, FhirTypeHandler>>;
  /** Per-type write rules (createResourceRules({ icd10cmCodesPath })); default: the shipped code lists. */
  resourceRules?: ResourceRules;
  /**
   * Pseudonyms, date offsets and UID mappers for de-identified views (researcher and pi tokens:
   * access decision view 'deidentified'). Absent, those views still hide names, identifiers and
   * free text, and hide the dates of patient-linked resources instead of shifting them.
   */
  privacy?: PrivacyService;
  /**
   * Brings resources derived elsewhere up to date before a request that could read them (the
   * ImagingStudy of studies a DICOM ingest marked pending). Runs before the request's own transaction.
   */
  refreshDerived?: (req: FhirRequest) => Promise<void>;
  /**
   * For a search (GET on a type): the refresh it may check in its own page statement instead
   * (one round trip less); undefined when it must run before, through refreshDerived.
   */
  deferRefresh?: (req: FhirRequest) => DeferredRefresh | undefined;
  /** The largest |date offset| the privacy service draws (widens date searches in SQL); absent: not widened. */
  maxDateOffsetDays?: number;
  /**
   * Column-level policy for callers who see identified data with some elements withheld (data
   * managers): the masked and hidden elements of each type. Undefined: everything as stored.
   */
  fieldRules?: (req: Request) => ((resourceType: string) => FieldRules) | undefined;
  /** The projects the caller's rows are confined to (undefined: all); the audit trail's handler filters by them. */
  projectsOf?: (req: Request) => readonly string[] | undefined;
}

/**
 * The express adapter of the FHIR core (STYLE 3): turns an express request into a FhirRequest,
 * calls `handleFhirRequest`, writes the FhirResponse; every failure becomes an OperationOutcome
 * with its status, never a stack trace. Mounted by the app at `/fhir`.
 */
export function createFhirRouter(deps: FhirRouterDeps): express.Router {
  const defs = loadFhirDefinitions();
  deps.logger.info({ fhirDefinitions: defs.stats }, 'FHIR R4 definitions loaded');
  const router = express.Router();

  router.use((req: Request, _res: Response, next: NextFunction) => {
    if (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH') {
      const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
      if (hasBody) checkRequestContentType(req.headers['content-type'], /\/_search$/.test(req.path));
    }
    next();
  });
  router.use(express.json({ type: (req) => isJsonContentType(req.headers['content-type'] as string | undefined), limit: MAX_JSON_BYTES, strict: false }));
  router.use(express.urlencoded({ extended: false, limit: '1mb' }));

  router.use(async (req: Request, res: Response, next: NextFunction) => {
    try {
      const query = parseQueryString(req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?') + 1) : '');
      const format = query._format?.[0];
      const contentType = negotiateResponseType(format, req.headers.accept);
      const pretty = query._pretty?.[0] === 'true';
      const fhirReq: FhirRequest = {
        method: req.method,
        path: req.path,
        query,
        headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v])),
        body: req.body,
      };
      const baseUrl = `${requestBaseUrl(req, deps.publicBaseUrl)}${req.baseUrl}`;
      if (deps.authorizeBundleEntry) authorizeBundle(req, fhirReq, deps.authorizeBundleEntry);
      const deferredRefresh = isTypeSearch(fhirReq) ? deps.deferRefresh?.(fhirReq) : undefined;
      if (!deferredRefresh && deps.refreshDerived) await deps.refreshDerived(fhirReq);
      const deid = deidViewOf(res, deps, defs);
      const fields = deid ? undefined : deps.fieldRules?.(req);
      const mask = fields ? createFieldMask(fields) : undefined;
      const run = (knex: Knex | Knex.Transaction) =>
        handleFhirRequest(
          {
            searchView: deid?.searchView,
            knex: knex as Knex,
            db: knex,
            defs,
            baseUrl,
            access: deps.accessFilter?.(req),
            writeAccess: writeAccessOf(req, deps.writeFilter),
            searchAccess: searchAccessOf(req, deps.searchFilter),
            onCreate: deps.onCreate?.(req),
            now: () => new Date(),
            typeHandlers: deps.typeHandlers,
            resourceRules: deps.resourceRules,
            deferredRefresh,
            keepMasked: mask?.keepStored,
            projects: deps.projectsOf?.(req),
          },
          fhirReq,
        );
      const auditor = deps.auditInTransaction;
      let result: Awaited<ReturnType<typeof run>>;
      if (auditor && res.locals.audit && WRITE_METHODS.has(req.method)) {
        // One transaction for the whole write (the interactions' own become savepoints): the
        // change and its AuditEvent commit together, or neither does.
        result = await withTransaction(deps.db.knex, async (trx) => {
          const r = await run(trx);
          noteCreated(res, r.status, r.headers);
          if (r.status < 400) await auditor(trx, req, res, { status: r.status });
          return r;
        });
      } else {
        result = await run(deps.db.knex);
        noteCreated(res, result.status, result.headers);
      }
      // Every answer of a de-identified caller goes through its view, whatever produced it.
      if (deid) result = await deid.transformAnswer(result);
      if (mask) result = await mask.transformAnswer(result);
      send(res, result.status, result.headers, result.body, contentType, pretty);
    } catch (err) {
      next(err);
    }
  });

  router.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = toOutcomeError(err);
    if (e.status >= 500) deps.logger.error({ err, url: loggableUrl(req.originalUrl) }, 'FHIR request failed');
    // A refusal decided past the guard (a Bundle entry, a granular write scope) is audited with its reason, as the guard's own.
    if (e.status === 403 && res.locals.audit) res.locals.audit = { ...res.locals.audit, outcomeDescription: e.message.slice(0, 300) };
    if (res.headersSent) return void res.destroy();
    // The real lastUpdated of a deleted resource (410) is not for a de-identified caller.
    const headers = isDeidentified(res) ? Object.fromEntries(Object.entries(e.headers).filter(([k]) => k !== 'Last-Modified')) : e.headers;
    send(res, e.status, headers, e.outcome, 'application/fhir+json; charset=utf-8', false);
  });
  return router;
}

/** The search filter of a write's conditional search, asked only when one is made. */
function searchAccessOf(req: Request, searchFilter: FhirRouterDeps['searchFilter']): FhirContext['searchAccess'] {
  if (!searchFilter || !WRITE_METHODS.has(req.method)) return undefined;
  return () => searchFilter(req);
}

/** The write filters of a request's changes, each asked once (a transaction Bundle asks per entry). */
function writeAccessOf(req: Request, writeFilter: FhirRouterDeps['writeFilter']): FhirContext['writeAccess'] {
  if (!writeFilter || !WRITE_METHODS.has(req.method)) return undefined;
  const asked = new Map<string, AccessFilter | undefined>();
  return (resourceType, interaction) => {
    const key = `${resourceType} ${interaction}`;
    if (!asked.has(key)) asked.set(key, writeFilter(req, resourceType, interaction));
    return asked.get(key);
  };
}

/** GET (or HEAD) on a resource type: a search (FHIR R4 3.1.1), answered by the search service alone. */
function isTypeSearch(req: FhirRequest): boolean {
  return (req.method === 'GET' || req.method === 'HEAD') && /^\/[A-Z][A-Za-z]+\/?$/.test(req.path);
}

function isDeidentified(res: Response): boolean {
  return (res.locals.access as AccessLocals | undefined)?.decision.view === 'deidentified';
}

/** The de-identified view of a request whose access decision asks for one (researcher, pi), else undefined. */
function deidViewOf(res: Response, deps: FhirRouterDeps, defs: ReturnType<typeof loadFhirDefinitions>): DeidView | undefined {
  const access = res.locals.access as AccessLocals | undefined;
  if (access?.decision.view !== 'deidentified') return undefined;
  return createDeidView({
    defs,
    db: deps.db.knex,
    privacy: deps.privacy,
    projects: access.decision.rowFilter.projects,
    now: () => new Date(),
    maxOffsetDays: deps.maxDateOffsetDays,
  });
}

/** A create's audit record (written before the answer leaves) names the resource it created (BALP Create). */
function noteCreated(res: Response, status: number, headers: Record<string, string>): void {
  const audit = res.locals.audit as { resourceType?: string; resourceId?: string } | undefined;
  const m = status === 201 ? /\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})\/_history\//.exec(headers.Location ?? '') : null;
  if (audit && m && !audit.resourceId) res.locals.audit = { ...audit, resourceType: m[1], resourceId: m[2] };
}

/**
 * Asks the policy about every entry of a Bundle POSTed to the base (FHIR R4 3.1.0.11): a denied
 * entry refuses a whole transaction (403), while in a batch only that entry answers 403.
 */
function authorizeBundle(req: Request, fhirReq: FhirRequest, ask: NonNullable<FhirRouterDeps['authorizeBundleEntry']>): void {
  const bundle = fhirReq.body as { resourceType?: unknown; type?: unknown; entry?: unknown } | undefined;
  if (fhirReq.method !== 'POST' || fhirReq.path.replace(/\/+$/, '') !== '' || bundle?.resourceType !== 'Bundle' || !Array.isArray(bundle.entry)) return;
  const denials = new Map<number, string>();
  bundle.entry.forEach((entry: { request?: { method?: unknown; url?: unknown } } | undefined, i) => {
    const method = entry?.request?.method;
    const url = entry?.request?.url;
    if (typeof method !== 'string' || typeof url !== 'string') return; // malformed: the Bundle service answers 400
    const denial = ask(req, method, url);
    if (!denial) return;
    const text = `Bundle.entry[${i}] (${method} ${url.slice(0, 200)}): access denied: ${denial}`;
    if (bundle.type !== 'batch') throw fhirError(403, 'forbidden', text);
    denials.set(i, text);
  });
  if (denials.size > 0) fhirReq.entryDenials = denials;
}

function send(res: Response, status: number, headers: Record<string, string>, body: Resource | undefined, contentType: string, pretty: boolean): void {
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) res.setHeader(k, v);
  res.status(status);
  if (body === undefined || status === 304) {
    res.end();
    return;
  }
  res.setHeader('Content-Type', contentType);
  res.send(pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body));
}

/** Maps any failure to an OperationOutcomeError: body-parser and PostgreSQL errors get their proper 4xx/503. */
export function toOutcomeError(err: unknown): OperationOutcomeError {
  if (err instanceof OperationOutcomeError) return err;
  // The change's AuditEvent could not be written in its transaction: refused, as the audit gate refuses.
  if (err instanceof AuditWriteError) return new OperationOutcomeError(503, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'audit trail unavailable: access refused' }] }, { 'Retry-After': '5' });
  const e = err as { type?: string; status?: number; code?: string; message?: string };
  if (e?.type === 'entity.parse.failed') return fhirError(400, 'structure', `The body is not valid JSON: ${e.message ?? ''}`);
  if (e?.type === 'entity.too.large') return fhirError(413, 'too-costly', `The body is larger than ${MAX_JSON_BYTES}`);
  if (e?.type === 'charset.unsupported' || e?.type === 'encoding.unsupported') return fhirError(415, 'not-supported', e.message ?? 'Unsupported encoding');
  if (typeof e?.code === 'string') {
    if (/^22/.test(e.code) || e.code === '54000') return fhirError(400, 'invalid', 'A value in the request cannot be stored or searched (out of range or malformed)');
    if (e.code === '23505') return fhirError(409, 'conflict', 'A concurrent write created the same resource; retry');
    if (isRetryableDbError(err)) return new OperationOutcomeError(503, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'The database is unavailable; retry' }] }, { 'Retry-After': '5' });
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return fhirError(e.status, 'invalid', e.message ?? 'Bad request');
  return fhirError(500, 'exception', 'Internal server error');
}
