/**
 * The access guard: the one middleware chain in front of every protocol router.
 *   1. audit gate   - no answer leaves before its AuditEvent is written (src/audit)
 *   2. describe     - what the request is (FHIR interaction / DICOMweb service) -> res.locals.audit
 *   3. authenticate - bearer token -> req.principal (401 otherwise)
 *   4. authorize    - policy decision -> 403, or res.locals.access + row filters for the routes
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Knex } from 'knex';
import { beginReadAudit, createAuditGate, type AuditLocals, type AuditRecorder } from '../audit/audit-response';
import type { AuthConfig } from './auth-config';
import { createAuthenticator, sendAuthError, type AuthenticatorOptions } from './authenticator';
import type { BearerVerifier } from './bearer-verifier';
import { decide, type AccessDecision } from './policy';
import { dicomWriteScopesFor, type DicomWriteScopes } from './dicom-write-scopes';
import { imagingStudyScopeRows, restrictResourcesToProjects, studyRestrictionFor } from './project-filters';
import { classifyRequest, type RouteAccess } from './policy-routes';
import type { Principal } from './principal';

/** What the guard leaves in `res.locals.access` for the routes. */
export interface AccessLocals {
  principal: Principal;
  route: RouteAccess;
  decision: AccessDecision;
  /** Projects a create (STOW, FHIR create) must link the new rows to. */
  targetProjects: string[];
  /**
   * Which existing studies a STOW may add to: any (admin), or only those already linked to one
   * of `targetProjects` (everyone else), so a known Study Instance UID opens no other project.
   */
  studyScope: 'all' | 'projects';
  /** Row filter for FHIR resources of `resourceType` whose logical id is in `idColumn`; undefined = all rows. */
  restrictResources(resourceType: string, idColumn: string): ((qb: Knex.QueryBuilder) => void) | undefined;
  /** A STOW-RS by granular c scopes on ImagingStudy: the check of each instance (src/auth/dicom-write-scopes.ts). */
  admitInstance?: DicomWriteScopes['admitInstance'];
  /** A DICOMweb delete by granular d scopes on ImagingStudy: the studies it may reach. */
  deleteScope?: DicomWriteScopes['deleteScope'];
}

/** Reads the target projects of a request: `X-Project` header(s) and `project` query parameter(s). */
export function requestedProjects(req: Request): string[] {
  const out: string[] = [];
  const header = req.headers['x-project'];
  for (const h of Array.isArray(header) ? header : header ? [header] : []) out.push(...h.split(','));
  const q = req.query.project;
  for (const v of Array.isArray(q) ? q : q !== undefined ? [q] : []) if (typeof v === 'string') out.push(...v.split(','));
  return [...new Set(out.map((p) => p.trim()).filter(Boolean))];
}

/** Options of the guard. */
export interface AccessGuardOptions extends AuthenticatorOptions {
  /**
   * Start the AuditEvent of an authorized read at once, overlapping its commit with the handler
   * (default true). False writes it only when the answer is ready (benchmarks compare the two).
   */
  earlyReadAudit?: boolean;
}

/** Builds the policy middleware (step 4 alone), for routers that authenticate elsewhere. */
export function createAuthorizer(options: Pick<AccessGuardOptions, 'earlyReadAudit'> = {}): RequestHandler {
  const early = options.earlyReadAudit ?? true;
  return (req: Request, res: Response, next: NextFunction) => {
    const path = req.originalUrl.split('?')[0];
    const route = (res.locals.route as RouteAccess | undefined) ?? classifyRequest(req.method, path);
    if (!route) return next();
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) return next();
    const principal = req.principal;
    if (!principal) return sendAuthError(req, res, 401, 'authentication required: send Authorization: Bearer <token>');
    const projectIds = route.projectIds ?? requestedProjects(req);
    const decision = decide(principal, { resourceType: route.resourceType, interaction: route.interaction, projectIds });
    if (!decision.allow) {
      const scopeProblem = /scope/.test(decision.reason);
      return sendAuthError(req, res, 403, `access denied: ${decision.reason}`, scopeProblem ? 'insufficient_scope' : undefined);
    }
    // A DICOMweb store or delete by granular scopes (`user/ImagingStudy.c?modality=OPT`) is
    // checked where the ImagingStudy is known: each stored instance, the deleted study
    // (src/auth/dicom-write-scopes.ts). Undefined for tokens without such scopes.
    const writeScopes = route.protocol === 'dicomweb' ? dicomWriteScopesFor(principal, route.interaction, decision, projectIds) : undefined;
    const access: AccessLocals = {
      ...writeScopes,
      principal,
      route,
      decision,
      targetProjects: decision.rowFilter.projects === 'all' ? projectIds : decision.rowFilter.projects,
      studyScope: principal.role === 'admin' ? 'all' : 'projects',
      restrictResources: (resourceType, idColumn) =>
        decision.rowFilter.projects === 'all'
          ? undefined
          : restrictResourcesToProjects(resourceType, decision.rowFilter.projects, { idColumn, facility: decision.rowFilter.facility }),
    };
    res.locals.access = access;
    // The projects the access is made within: the AuditEvent names them (PIs search the trail by them).
    const audit = res.locals.audit as AuditLocals | undefined;
    const within = decision.rowFilter.projects === 'all' ? projectIds : decision.rowFilter.projects;
    if (audit && within.length > 0) audit.projects = [...within];
    // The DICOMweb routes read this hook (src/dicomweb/wado-routes.ts, qido-rs.ts).
    const imagingStudyRows = route.protocol === 'dicomweb' ? imagingStudyScopeRows(principal, route.interaction) : undefined;
    res.locals.restrictStudies = studyRestrictionFor(decision, imagingStudyRows);
    // The studies such a token sees (or deletes) are decided by their ImagingStudy: the app brings pending ones up to date first.
    if (imagingStudyRows || writeScopes?.deleteScope) res.locals.studiesByImagingStudy = true;
    // Authorized reads of the protocol routers write nothing themselves: their AuditEvent's
    // commit starts now and overlaps the handler (the audit gate corrects it if the answer differs).
    if (early && (req.method === 'GET' || req.method === 'HEAD') && route.protocol !== 'other') beginReadAudit(res);
    next();
  };
}

/** Step 2: classify the request and describe it for the audit trail. */
function describeRequest(): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const path = req.originalUrl.split('?')[0];
    const route = classifyRequest(req.method, path);
    res.locals.route = route ?? undefined;
    const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
    if (route?.audited && !preflight) {
      const audit: AuditLocals = {
        protocol: route.protocol === 'dicomweb' ? 'dicomweb' : 'fhir',
        action: route.auditAction,
        resourceType: route.resourceType === '*' ? undefined : route.resourceType,
        resourceId: route.resourceId,
        studyUids: route.studyUids,
        query: route.isSearch || route.interaction === 'export' ? `${req.method} ${req.originalUrl}` : undefined,
      };
      res.locals.audit = audit;
    }
    next();
  };
}

/** Everything the guard needs. */
export interface AccessGuardDeps {
  verifier: BearerVerifier;
  config: AuthConfig;
  audit: AuditRecorder;
}

/**
 * The guard chain to mount once, before the protocol routers: `app.use(createAccessGuard(auth))`.
 * Public paths (health, discovery, JWKS, token endpoint, SAML sign-in, /fhir/metadata) pass.
 */
export function createAccessGuard(deps: AccessGuardDeps, options: AccessGuardOptions = {}): RequestHandler[] {
  const authorize = createAuthorizer(options);
  const extraPublic = new Set(options.publicPaths ?? []);
  return [
    createAuditGate(deps.audit),
    describeRequest(),
    createAuthenticator(deps, options),
    (req, res, next) => (extraPublic.has(req.originalUrl.split('?')[0]) ? next() : authorize(req, res, next)),
  ];
}
