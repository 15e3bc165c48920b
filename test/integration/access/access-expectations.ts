/**
 * What the access matrix expects, stated apart from src/auth/policy.ts so that a change to the
 * policy shows up here as a failing cell: which role may do what, which paths need no token,
 * and the checks every answer goes through (401/403 bodies, 404 like a missing id, no text of
 * another project anywhere in the answer).
 */
import type { Role } from '../../../src/auth/roles';
import type { Answer, Caller, Outgoing, ProjectData } from './access-fixtures';

/** What a request does, in the policy's terms. */
export type Interaction = 'read' | 'search' | 'create' | 'update' | 'delete';

type TypeClass = 'clinical' | 'cohort' | 'audit' | 'conformance';

/** The role matrix the project agreed on (README: roles). */
const MAY: Record<Role, Record<TypeClass, readonly Interaction[]>> = {
  admin: { clinical: ['read', 'search', 'create', 'update', 'delete'], cohort: ['read', 'search', 'create', 'update', 'delete'], audit: ['read', 'search'], conformance: ['read', 'search'] },
  'data-manager': { clinical: ['read', 'search', 'create', 'update'], cohort: ['read', 'search'], audit: [], conformance: ['read', 'search'] },
  pi: { clinical: ['read', 'search'], cohort: ['read', 'search', 'create', 'update'], audit: ['read', 'search'], conformance: ['read', 'search'] },
  researcher: { clinical: ['read', 'search'], cohort: ['read', 'search', 'create', 'update'], audit: [], conformance: ['read', 'search'] },
};

function classOf(resourceType: string): TypeClass {
  if (resourceType === 'AuditEvent') return 'audit';
  if (resourceType === 'Group') return 'cohort';
  if (resourceType === 'CapabilityStatement') return 'conformance';
  return 'clinical';
}

/** Whether `role` may perform `interaction` on `resourceType` (DICOMweb is ImagingStudy). */
export function roleMay(role: Role, resourceType: string, interaction: Interaction): boolean {
  return MAY[role][classOf(resourceType)].includes(interaction);
}

/** Paths any caller may use without a token (exact). */
export const PUBLIC_PATHS = new Set([
  '/healthz',
  '/readyz',
  '/fhir/metadata',
  '/.well-known/smart-configuration',
  '/fhir/.well-known/smart-configuration',
  '/oauth2/jwks',
  '/oauth2/token',
  '/auth/saml/login',
  '/auth/saml/callback',
  '/auth/saml/metadata',
]);

/**
 * The roles the policy lets through to each /privacy route (stated apart from policy.ts, like
 * MAY above); the route itself then decides by project. Every other role gets 403.
 */
const PRIVACY_ROUTE_ROLES: Record<string, readonly Role[]> = {
  'GET /privacy/projects/:project/deid-options': ['admin', 'data-manager'],
  'PUT /privacy/projects/:project/deid-options': ['admin', 'data-manager'],
  'POST /privacy/burned-in-clearances': ['admin', 'data-manager'],
  'DELETE /privacy/burned-in-clearances/:sop': ['admin', 'data-manager'],
  'POST /privacy/reidentification-requests': ['pi'],
  'GET /privacy/reidentification-requests': ['admin', 'pi'],
  'GET /privacy/reidentification-requests/:id': ['admin', 'pi'],
  'POST /privacy/reidentification-requests/:id/approve': ['admin', 'pi'],
  'POST /privacy/reidentification-requests/:id/refuse': ['admin', 'pi'],
  'POST /privacy/reidentification-requests/:id/resolve': ['pi'],
  'GET /privacy/overlap': ['admin', 'pi'],
};

/** The roles a /privacy route admits: undefined for any other route, admin alone for a /privacy route not listed. */
export function privacyRouteRoles(method: string, path: string): readonly Role[] | undefined {
  if (!path.startsWith('/privacy')) return undefined;
  return PRIVACY_ROUTE_ROLES[`${method} ${path}`] ?? ['admin'];
}

/**
 * The roles the policy lets through to the bulk export routes (src/fhir/export): export is a
 * right of admins, PIs and researchers (not data managers); a job's status and files then
 * answer only its owner (404 for a job id that is not the caller's).
 */
const EXPORT_ROUTES = new Set(['/fhir/$export', '/fhir/Patient/$export', '/fhir/Group/:id/$export', '/fhir/$export-status/:job', '/fhir/$export-output/:job/:file']);
const EXPORTERS: readonly Role[] = ['admin', 'pi', 'researcher'];

/** The roles a bulk export route admits; undefined for any other route. */
export function exportRouteRoles(path: string): readonly Role[] | undefined {
  return EXPORT_ROUTES.has(path) ? EXPORTERS : undefined;
}

/**
 * The roles the policy lets through to the governance routes (src/admin) that name no project:
 * every member lists its own projects; PIs and admins list and decide cohort exports (the job
 * ids here are nobody's: 404). Routes under /admin/projects/{id} name a project the callers of
 * the matrix do not hold (the literal ':project'): admin only, as any other /admin path.
 */
const GOVERNANCE_ROUTE_ROLES: Record<string, readonly Role[]> = {
  'GET /admin/projects': ['admin', 'data-manager', 'pi', 'researcher'],
  'GET /admin/exports': ['admin', 'pi'],
  'GET /admin/exports/:id': ['admin', 'pi'],
  'POST /admin/exports/:id/approve': ['admin', 'pi'],
  'POST /admin/exports/:id/refuse': ['admin', 'pi'],
};

/** The roles a governance route admits; undefined for any other route. */
export function governanceRouteRoles(method: string, path: string): readonly Role[] | undefined {
  return GOVERNANCE_ROUTE_ROLES[`${method} ${path}`];
}

/** One cell's result: the failures found (empty when the answer is as expected). */
export type Failures = string[];

const describe = (out: Outgoing, a: Answer) => `${out.method} ${out.path} -> ${a.status} ${a.text.slice(0, 160).replace(/\s+/g, ' ')}`;

/** 401 with `WWW-Authenticate: Bearer realm=...` (error="invalid_token" when a token was sent) and a protocol body. */
export function expectUnauthenticated(caller: Caller, out: Outgoing, a: Answer, failures: Failures): void {
  if (a.status !== 401) {
    failures.push(`expected 401: ${describe(out, a)}`);
    return;
  }
  const www = a.headers['www-authenticate'] ?? '';
  if (!www.startsWith('Bearer realm="imaging-lake"')) failures.push(`401 without WWW-Authenticate Bearer realm: ${describe(out, a)}`);
  if (caller.kind === 'bad-token' && !/error="invalid_token"/.test(www)) failures.push(`401 for a bad token without error="invalid_token" (${www}): ${describe(out, a)}`);
  expectErrorBody(out, a, 'login', failures);
}

/** 403 with a protocol body naming the denial. */
export function expectForbidden(out: Outgoing, a: Answer, failures: Failures, pattern: RegExp = /access denied/): void {
  if (a.status !== 403) {
    failures.push(`expected 403: ${describe(out, a)}`);
    return;
  }
  expectErrorBody(out, a, 'forbidden', failures, pattern);
}

function expectErrorBody(out: Outgoing, a: Answer, fhirCode: string, failures: Failures, pattern?: RegExp): void {
  if (out.path.startsWith('/fhir')) {
    const body = safeJson(a.text) as { resourceType?: string; issue?: Array<{ code?: string; diagnostics?: string }> } | undefined;
    if (body?.resourceType !== 'OperationOutcome' || body.issue?.[0]?.code !== fhirCode) failures.push(`expected an OperationOutcome (${fhirCode}): ${describe(out, a)}`);
    else if (pattern && !pattern.test(body.issue[0].diagnostics ?? '')) failures.push(`denial does not say why (${pattern}): ${describe(out, a)}`);
  } else if (out.path.startsWith('/dicomweb')) {
    const comment = (safeJson(a.text) as Record<string, { Value?: string[] }> | undefined)?.['00000902']?.Value?.[0];
    if (!comment) failures.push(`expected a DICOM JSON ErrorComment: ${describe(out, a)}`);
    else if (pattern && !pattern.test(comment)) failures.push(`denial does not say why (${pattern}): ${describe(out, a)}`);
  } else if (!a.text) {
    failures.push(`expected an error body: ${describe(out, a)}`);
  }
}

/** 2xx. */
export function expectSuccess(out: Outgoing, a: Answer, failures: Failures): void {
  if (a.status < 200 || a.status >= 300) failures.push(`expected success: ${describe(out, a)}`);
}

/**
 * The answer for another project's target must be exactly the answer for a missing one: same
 * status, media type and body once the requested ids are replaced by a placeholder.
 */
export function expectLikeMissing(other: { out: Outgoing; a: Answer; ids: string[] }, missing: { out: Outgoing; a: Answer; ids: string[] }, failures: Failures): void {
  // supertest serves each request on its own port: the base URL in links is not part of the answer's meaning.
  const norm = (text: string, ids: string[]) => ids.reduce((s, id) => s.split(id).join('<id>'), text).replace(/http:\/\/127\.0\.0\.1:\d+/g, '<base>');
  const same =
    other.a.status === missing.a.status &&
    (other.a.headers['content-type'] ?? '') === (missing.a.headers['content-type'] ?? '') &&
    norm(other.a.text, other.ids) === norm(missing.a.text, missing.ids);
  if (!same) failures.push(`another project's target answers unlike a missing one:\n    other:   ${describe(other.out, other.a)}\n    missing: ${describe(missing.out, missing.a)}`);
}

/**
 * No text of `projects` in the answer's body or headers, except what the request itself
 * carried (an id the caller typed is not a leak).
 */
export function expectNoLeak(out: Outgoing, a: Answer, projects: ProjectData[], failures: Failures): void {
  const sent = `${out.path} ${JSON.stringify(out.headers ?? {})} ${typeof out.body === 'string' ? out.body : Buffer.isBuffer(out.body) ? out.body.toString('latin1') : JSON.stringify(out.body ?? '')}`;
  const headers = Object.entries(a.headers)
    .filter(([k]) => k !== 'x-request-id')
    .map(([k, v]) => `${k}: ${v}`)
    .join('\n');
  for (const p of projects) {
    for (const marker of p.markers) {
      if (!marker || sent.includes(marker)) continue;
      if (a.text.includes(marker)) failures.push(`body shows ${p.id}'s "${marker}": ${describe(out, a)}`);
      if (headers.includes(marker)) failures.push(`headers show ${p.id}'s "${marker}": ${out.method} ${out.path}`);
    }
  }
}

/** The total of a FHIR searchset Bundle, or the number of rows of a QIDO answer. */
export function resultCount(a: Answer): number | undefined {
  const body = safeJson(a.text) as { resourceType?: string; total?: number; entry?: Array<{ search?: { mode?: string } }> } | unknown[] | undefined;
  if (Array.isArray(body)) return body.length;
  if (a.status === 204) return 0;
  // A server that does not count answers without `total`: its matches are what it found.
  if (body && !Array.isArray(body) && body.resourceType === 'Bundle') return body.total ?? (body.entry ?? []).filter((e) => (e.search?.mode ?? 'match') === 'match').length;
  return undefined;
}

export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
