/**
 * How HTTP requests map onto policy questions: FHIR R4 RESTful interactions (FHIR R4 3.1.0)
 * and DICOMweb services (PS3.18: QIDO-RS = ImagingStudy search, WADO-RS = ImagingStudy read,
 * STOW-RS = ImagingStudy create, delete = ImagingStudy delete). Pure, no express.
 */
import type { AuditAction } from '../audit/audit-event';
import type { Interaction } from './policy';

/** Paths anyone may call without a token. */
export const PUBLIC_PATHS: ReadonlySet<string> = new Set([
  '/healthz',
  '/readyz',
  '/fhir/metadata',
  '/.well-known/smart-configuration',
  '/fhir/.well-known/smart-configuration',
  '/oauth2/jwks',
  '/oauth2/token',
  // The sign-in flow itself (the IdP's answer authenticates the user).
  '/auth/saml/login',
  '/auth/saml/callback',
  '/auth/saml/metadata',
]);

/** True for a path that needs no token (exact match, trailing slash ignored). */
export function isPublicPath(path: string): boolean {
  const p = path.length > 1 ? path.replace(/\/+$/, '') : path;
  return PUBLIC_PATHS.has(p);
}

/** A request seen by the policy: what it asks, and what its audit record says. */
export interface RouteAccess {
  protocol: 'fhir' | 'dicomweb' | 'other';
  resourceType: string;
  interaction: Interaction;
  auditAction: AuditAction;
  resourceId?: string;
  studyUids?: string[];
  /** Searches record their query (BALP Query entity). */
  isSearch: boolean;
  /** Whether an AuditEvent must be written (patient data may be touched). */
  audited: boolean;
  /** FHIR batch/transaction: entries must be decided one by one by the FHIR engine. */
  batch?: boolean;
  /** The project the path names (governance API): the decision is made within it, whatever X-Project says. */
  projectIds?: string[];
}

const TYPE_RE = /^[A-Z][A-Za-z]{1,63}$/;

function fhirInteraction(interaction: Interaction, auditAction: AuditAction, resourceType: string, extra?: { resourceId?: string; batch?: boolean }): RouteAccess {
  // Plain literals, no object spread: this runs on every request and V8 clones slowly.
  const r: RouteAccess = { protocol: 'fhir', resourceType, interaction, auditAction, isSearch: interaction === 'search', audited: true };
  if (extra?.resourceId !== undefined) r.resourceId = extra.resourceId;
  if (extra?.batch) r.batch = true;
  return r;
}

/** Classifies a FHIR request (`path` relative to /fhir, no query string). */
export function classifyFhirRequest(method: string, path: string): RouteAccess {
  const m = method.toUpperCase();
  const seg = path.split('/').filter(Boolean).map(safeDecode);
  const read = m === 'GET' || m === 'HEAD';
  if (seg.length === 0) {
    if (m === 'POST') return fhirInteraction('batch', 'operation', 'Bundle', { batch: true });
    return fhirInteraction('search', 'search', '*');
  }
  const [first, second, third, fourth] = seg;
  if (first === '_history') return fhirInteraction('history', 'history', '*');
  if (first === '_search') return fhirInteraction('search', 'search', '*');
  // A bulk export's status and files: its job, which belongs to the token that kicked it off.
  if (first === '$export-status' || first === '$export-output') {
    return fhirInteraction(m === 'DELETE' ? 'delete' : 'read', m === 'DELETE' ? 'delete' : 'read', 'BulkExportJob', second ? { resourceId: second } : undefined);
  }
  if (first.startsWith('$')) return operation(m, first, '*');
  const type = TYPE_RE.test(first) ? first : 'Unknown';
  if (seg.length === 1) {
    if (m === 'POST') return fhirInteraction('create', 'create', type);
    if (m === 'DELETE') return fhirInteraction('delete', 'delete', type); // conditional delete
    if (m === 'PUT' || m === 'PATCH') return fhirInteraction('update', 'update', type); // conditional update
    return fhirInteraction('search', 'search', type);
  }
  if (second === '_search') return fhirInteraction('search', 'search', type);
  if (second === '_history') return fhirInteraction('history', 'history', type);
  if (second.startsWith('$')) return operation(m, second, type);
  const id = second;
  if (seg.length === 2) {
    if (m === 'PUT') return fhirInteraction('update', 'update', type, { resourceId: id });
    if (m === 'PATCH') return fhirInteraction('patch', 'patch', type, { resourceId: id });
    if (m === 'DELETE') return fhirInteraction('delete', 'delete', type, { resourceId: id });
    if (read) return fhirInteraction('read', 'read', type, { resourceId: id });
    return fhirInteraction('update', 'update', type, { resourceId: id });
  }
  if (third === '_history') {
    if (fourth) return fhirInteraction('vread', 'vread', type, { resourceId: id });
    return fhirInteraction('history', 'history', type, { resourceId: id });
  }
  if (third.startsWith('$')) return operation(m, third, type, id);
  return fhirInteraction(read ? 'read' : 'update', read ? 'read' : 'update', type, { resourceId: id });
}

function operation(method: string, name: string, type: string, id?: string): RouteAccess {
  if (name === '$export') return fhirInteraction('export', 'operation', type, { resourceId: id });
  // Other operations: reads for GET, writes for anything else; the FHIR engine may decide finer.
  const read = method === 'GET' || method === 'HEAD';
  return fhirInteraction(read ? (id ? 'read' : 'search') : 'update', 'operation', type, { resourceId: id });
}

/**
 * Classifies a DICOMweb request (`path` relative to /dicomweb, no query string). WADO-URI
 * (`GET /wado`, PS3.18 chapter 9) is a read of the study its `studyUID` query parameter names,
 * audited like a WADO-RS instance retrieve; given `query`, that study is recorded here, else
 * the route records it (src/dicomweb/wado-uri-routes.ts).
 */
export function classifyDicomwebRequest(method: string, path: string, query?: Record<string, unknown>): RouteAccess {
  const m = method.toUpperCase();
  const seg = path.split('/').filter(Boolean).map(safeDecode);
  const dicom = (interaction: Interaction, auditAction: AuditAction, studyUids: string[] | undefined): RouteAccess => {
    const r: RouteAccess = { protocol: 'dicomweb', resourceType: 'ImagingStudy', interaction, auditAction, isSearch: interaction === 'search', audited: true };
    if (studyUids) r.studyUids = studyUids;
    return r;
  };
  if (seg.length === 0) {
    // The capabilities document: server description, no patient data.
    return { protocol: 'dicomweb', resourceType: 'CapabilityStatement', interaction: 'read', auditAction: 'read', isSearch: false, audited: false };
  }
  const study = seg[0] === 'studies' && seg[1] ? [seg[1]] : undefined;
  if (m === 'POST' || m === 'PUT') return dicom('create', 'create', study);
  if (m === 'DELETE') return dicom('delete', 'delete', study);
  if (seg.length === 1 && seg[0] === 'wado') return dicom('read', 'read', query ? wadoUriStudyUids(query) : undefined);
  const last = seg[seg.length - 1];
  const qido = seg.length === 1 || ((last === 'series' || last === 'instances') && seg.length % 2 === 1);
  return qido ? dicom('search', 'search', study) : dicom('read', 'read', study);
}

/** The study a WADO-URI query names (`studyUID`, PS3.18 9.1.2.1), when it names exactly one. */
export function wadoUriStudyUids(query: Record<string, unknown>): string[] | undefined {
  const study = query.studyUID;
  return typeof study === 'string' && study !== '' ? [study] : undefined;
}

/**
 * Classifies a privacy request (`path` relative to /privacy, no query string): the pseudo-types
 * DeidOptions, BurnedInClearance, ReidentificationRequest and PatientOverlap that policy.ts
 * decides per role. Every one is audited; anything else under /privacy is administration.
 */
export function classifyPrivacyRequest(method: string, path: string): RouteAccess {
  const m = method.toUpperCase();
  const seg = path.split('/').filter(Boolean).map(safeDecode);
  const read = m === 'GET' || m === 'HEAD';
  const privacy = (resourceType: string, interaction: Interaction, auditAction: AuditAction, resourceId?: string): RouteAccess => {
    const r: RouteAccess = { protocol: 'other', resourceType, interaction, auditAction, isSearch: auditAction === 'search', audited: true };
    if (resourceId !== undefined) r.resourceId = resourceId;
    return r;
  };
  const [first, second, third] = seg;
  if (first === 'projects' && second && third === 'deid-options' && seg.length === 3) {
    if (read) return privacy('DeidOptions', 'read', 'read', second);
    if (m === 'PUT') return privacy('DeidOptions', 'update', 'update', second);
  }
  if (first === 'burned-in-clearances') {
    if (seg.length === 1 && m === 'POST') return privacy('BurnedInClearance', 'quarantine', 'create');
    if (seg.length === 2 && m === 'DELETE') return privacy('BurnedInClearance', 'quarantine', 'delete', second);
  }
  if (first === 'reidentification-requests') {
    if (seg.length === 1 && m === 'POST') return privacy('ReidentificationRequest', 'reidentify', 'create');
    if (seg.length === 1 && read) return privacy('ReidentificationRequest', 'search', 'search');
    if (seg.length === 2 && read) return privacy('ReidentificationRequest', 'read', 'read', second);
    if (seg.length === 3 && m === 'POST' && (third === 'approve' || third === 'refuse')) return privacy('ReidentificationRequest', 'approve', 'update', second);
    if (seg.length === 3 && m === 'POST' && third === 'resolve') return privacy('ReidentificationRequest', 'reidentify', 'operation', second);
  }
  if (first === 'overlap' && seg.length === 1 && read) return privacy('PatientOverlap', 'read', 'search');
  return { protocol: 'other', resourceType: 'Server', interaction: 'administer', auditAction: 'operation', isSearch: false, audited: true };
}

/**
 * Classifies a governance request (`path` relative to /admin, no query string): projects, their
 * members and studies, cohort export approvals and DIMSE peers (src/admin). Every one is audited; anything else under
 * /admin is administration (admin only).
 */
export function classifyAdminRequest(method: string, path: string): RouteAccess {
  const m = method.toUpperCase();
  const seg = path.split('/').filter(Boolean).map(safeDecode);
  const read = m === 'GET' || m === 'HEAD';
  const governed = (resourceType: string, interaction: Interaction, auditAction: AuditAction, resourceId?: string, project?: string): RouteAccess => {
    const r: RouteAccess = { protocol: 'other', resourceType, interaction, auditAction, isSearch: auditAction === 'search', audited: true };
    if (resourceId !== undefined) r.resourceId = resourceId;
    if (project !== undefined) r.projectIds = [project];
    return r;
  };
  const [first, second, third, fourth, fifth] = seg;
  if (first === 'projects') {
    if (seg.length === 1 && read) return governed('Project', 'search', 'search');
    if (seg.length === 1 && m === 'POST') return governed('Project', 'create', 'create');
    if (seg.length === 2 && read) return governed('Project', 'read', 'read', second, second);
    if (seg.length === 2 && (m === 'PATCH' || m === 'PUT')) return governed('Project', 'update', 'update', second, second);
    if (seg.length === 2 && m === 'DELETE') return governed('Project', 'delete', 'delete', second, second);
    if (third === 'members') {
      const member = fourth === undefined ? undefined : `${second}/${fourth}`;
      if (seg.length === 3 && read) return governed('ProjectMember', 'search', 'search', undefined, second);
      if (seg.length === 4 && read) return governed('ProjectMember', 'read', 'read', member, second);
      if (seg.length === 4 && m === 'PUT') return governed('ProjectMember', 'update', 'update', member, second);
      if (seg.length === 4 && m === 'DELETE') return governed('ProjectMember', 'delete', 'delete', member, second);
      if (seg.length === 5 && m === 'POST' && (fifth === 'approve' || fifth === 'refuse')) return governed('ProjectMember', 'approve', 'update', member, second);
    }
    if (third === 'studies' && seg.length === 4 && (m === 'PUT' || m === 'DELETE')) {
      const r = governed('ProjectStudy', m === 'PUT' ? 'update' : 'delete', m === 'PUT' ? 'update' : 'delete', `${second}/${fourth}`, second);
      r.studyUids = [fourth];
      return r;
    }
  }
  if (first === 'dimse' && second === 'peers') {
    if (seg.length === 2 && read) return governed('DimsePeer', 'search', 'search');
    if (seg.length === 3 && read) return governed('DimsePeer', 'read', 'read', third);
    if (seg.length === 3 && m === 'PUT') return governed('DimsePeer', 'update', 'update', third);
    if (seg.length === 3 && m === 'DELETE') return governed('DimsePeer', 'delete', 'delete', third);
  }
  if (first === 'exports') {
    if (seg.length === 1 && read) return governed('ExportApproval', 'search', 'search');
    if (seg.length === 2 && read) return governed('ExportApproval', 'read', 'read', second);
    if (seg.length === 3 && m === 'POST' && (third === 'approve' || third === 'refuse')) return governed('ExportApproval', 'approve', 'update', second);
  }
  return { protocol: 'other', resourceType: 'Server', interaction: 'administer', auditAction: 'operation', isSearch: false, audited: true };
}

/** Classifies any request by its full path (and, when given, its parsed query); null for public paths. */
export function classifyRequest(method: string, fullPath: string, query?: Record<string, unknown>): RouteAccess | null {
  if (isPublicPath(fullPath)) return null;
  // Authenticates its own caller (RFC 7662 2.1); see introspection.ts.
  if (fullPath === '/oauth2/introspect') return null;
  if (fullPath === '/fhir' || fullPath.startsWith('/fhir/')) return classifyFhirRequest(method, fullPath.slice(5));
  if (fullPath === '/dicomweb' || fullPath.startsWith('/dicomweb/')) return classifyDicomwebRequest(method, fullPath.slice(9), query);
  if (fullPath === '/privacy' || fullPath.startsWith('/privacy/')) return classifyPrivacyRequest(method, fullPath.slice(8));
  if (fullPath === '/admin' || fullPath.startsWith('/admin/')) return classifyAdminRequest(method, fullPath.slice(6));
  // Anything else (future admin routes): administration, admin only, safe by default.
  return { protocol: 'other', resourceType: 'Server', interaction: 'administer', auditAction: 'operation', isSearch: false, audited: false };
}

function safeDecode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
