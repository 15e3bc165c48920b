/**
 * THE access policy: one pure function that FHIR, DICOMweb and the admin routes all ask.
 * A request is allowed only when the role permits the interaction on the resource type, the
 * token's SMART scopes permit it too, and the projects it touches are the principal's.
 * No express, no database: callers turn the answer into SQL (project-filters.ts) and views.
 */
import type { Principal } from './principal';
import type { Role } from './roles';
import type { ResourceScope, ScopePermission } from './scopes';
import type { ScopeRows } from '../fhir/search/scope-filter';

/** What a request wants to do. REST interactions follow FHIR R4 3.1.0; the rest are ours. */
export type Interaction =
  | 'read'
  | 'vread'
  | 'search'
  | 'history'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  /** Bulk or cohort export ($export). */
  | 'export'
  /** Move a study into or out of quarantine. */
  | 'quarantine'
  /** Approve a project member, a cohort export or a re-identification request. */
  | 'approve'
  /** See identified data for de-identified records (re-identification). */
  | 'reidentify'
  /** Server administration: client registrations, keys, projects. */
  | 'administer'
  /**
   * Submit a batch or transaction Bundle (FHIR R4 3.1.0.11-12). Open to every role: each entry is
   * decided again as the request it stands for (request-access.ts bundleEntryDenial).
   */
  | 'batch';

/** The question asked of the policy. */
export interface AccessRequest {
  /** FHIR resource type; DICOMweb requests are asked as `ImagingStudy`. */
  resourceType: string;
  interaction: Interaction;
  /** Projects the request targets explicitly (a create's projects, a search's `_project` filter). */
  projectIds?: readonly string[];
}

/** The policy's answer. */
export interface AccessDecision {
  allow: boolean;
  /** Why: a short, stable, loggable sentence (never PHI). */
  reason: string;
  /** Row-level security: which projects' rows the request may touch. */
  rowFilter: { projects: string[] | 'all'; facility?: string };
  /**
   * Granular SMART scopes (search-parameter restrictions), OR-ed (SMART 2.2: scopes on one type
   * combine as a union). Empty means no narrowing.
   */
  granularFilters: Array<Record<string, string>>;
  view: 'identified' | 'deidentified';
}

/** Resource types that describe the server itself: readable by every role. */
const CONFORMANCE_TYPES = new Set(['CapabilityStatement', 'StructureDefinition', 'SearchParameter', 'ValueSet', 'CodeSystem', 'OperationDefinition']);
/** Research artefacts researchers may create within their projects. */
const COHORT_TYPES = new Set(['Group']);
/** Our administrative pseudo-resources. */
const ADMIN_TYPES = new Set(['Client', 'SigningKey', 'Server']);
/**
 * Things that belong to the token that made them, whatever their content: a bulk export's job
 * (its status and files). Its service answers only the owner; no scope names them.
 */
const OWNED_TYPES = new Set(['BulkExportJob']);

type TypeClass = 'clinical' | 'conformance' | 'cohort' | 'admin' | 'audit' | 'owned';

function classify(resourceType: string): TypeClass {
  if (resourceType === 'AuditEvent') return 'audit';
  if (CONFORMANCE_TYPES.has(resourceType)) return 'conformance';
  if (COHORT_TYPES.has(resourceType)) return 'cohort';
  if (ADMIN_TYPES.has(resourceType)) return 'admin';
  if (OWNED_TYPES.has(resourceType)) return 'owned';
  return 'clinical';
}

const READS: Interaction[] = ['read', 'vread', 'search', 'history'];
const EDITS: Interaction[] = ['create', 'update', 'patch'];

/** The role matrix: which interactions a role may perform on each class of resource. */
const ROLE_MATRIX: Record<Role, Record<TypeClass, readonly Interaction[]>> = {
  admin: {
    clinical: [...READS, ...EDITS, 'delete', 'export', 'quarantine', 'approve', 'reidentify'],
    conformance: [...READS, ...EDITS, 'delete'],
    cohort: [...READS, ...EDITS, 'delete', 'export', 'approve'],
    admin: [...READS, ...EDITS, 'delete', 'administer', 'approve'],
    // Append-only: nobody, not even admin, changes an AuditEvent through any API.
    audit: READS,
    owned: ['read', 'delete'],
  },
  'data-manager': {
    clinical: [...READS, ...EDITS, 'quarantine'],
    conformance: READS,
    cohort: READS,
    admin: ['read', 'search', 'update'],
    audit: [],
    owned: [],
  },
  pi: {
    clinical: [...READS, 'export'],
    conformance: READS,
    cohort: [...READS, ...EDITS, 'export', 'approve'],
    admin: ['read', 'search', 'approve'],
    // The trail of accesses made within their projects (the handler filters by project).
    audit: READS,
    owned: ['read', 'delete'],
  },
  researcher: {
    clinical: [...READS, 'export'],
    conformance: READS,
    cohort: [...READS, ...EDITS, 'export'],
    admin: ['read', 'search'],
    audit: [],
    owned: ['read', 'delete'],
  },
};

/**
 * The privacy workflow's pseudo-resources (src/privacy, routes under /privacy) are decided per
 * type rather than per class: de-identification options and burned-in annotation clearances
 * belong to data managers, re-identification requests are filed and resolved by PIs and
 * decided by admins or by another PI of the request's project (HIPAA 164.514(c): the code's
 * holder controls re-identification; the four-eyes rule that the filer never decides its own
 * request is src/privacy/reidentification.ts's).
 */
const PRIVACY_RULES: Record<string, Record<Role, readonly Interaction[]>> = {
  DeidOptions: { admin: ['read', 'update'], 'data-manager': ['read', 'update'], pi: [], researcher: [] },
  BurnedInClearance: { admin: ['quarantine'], 'data-manager': ['quarantine'], pi: [], researcher: [] },
  ReidentificationRequest: { admin: ['read', 'search', 'approve'], 'data-manager': [], pi: ['read', 'search', 'reidentify', 'approve'], researcher: [] },
  PatientOverlap: { admin: ['read'], 'data-manager': [], pi: ['read'], researcher: [] },
};

/**
 * The governance API's pseudo-resources (src/admin, routes under /admin): projects, their
 * members, and the approval of cohort exports. Admins administer projects; data managers rename
 * the projects they manage, propose members and add the studies they see to their projects (or
 * take them out); PIs approve (or add and remove) the members of
 * their projects and approve their cohort exports. No SMART scope names these (scopes describe
 * FHIR resources): they are decided by role, for tokens holding an unrestricted `*` scope (a
 * token narrowed to some types governs nothing), and the path's project must be one of the caller's.
 */
const GOVERNANCE_RULES: Record<string, Record<Role, readonly Interaction[]>> = {
  Project: {
    admin: ['read', 'search', 'create', 'update', 'delete'],
    'data-manager': ['read', 'search', 'update'],
    pi: ['read', 'search'],
    researcher: ['read', 'search'],
  },
  ProjectMember: {
    admin: ['read', 'search', 'update', 'delete', 'approve'],
    'data-manager': ['read', 'search', 'update'],
    pi: ['read', 'search', 'update', 'delete', 'approve'],
    researcher: [],
  },
  ProjectStudy: { admin: ['update', 'delete'], 'data-manager': ['update', 'delete'], pi: [], researcher: [] },
  ExportApproval: { admin: ['read', 'search', 'approve'], 'data-manager': [], pi: ['read', 'search', 'approve'], researcher: [] },
  // Who may associate over DIMSE, and with which projects: server administration.
  DimsePeer: { admin: ['read', 'search', 'update', 'delete'], 'data-manager': [], pi: [], researcher: [] },
};

function allowedInteractions(role: Role, resourceType: string): readonly Interaction[] {
  return PRIVACY_RULES[resourceType]?.[role] ?? GOVERNANCE_RULES[resourceType]?.[role] ?? ROLE_MATRIX[role][classify(resourceType)];
}

/** Which SMART permission letters an interaction needs (SMART 2.2 scopes: c r u d s). */
const SCOPE_LETTERS: Record<Interaction, ScopePermission[] | null> = {
  read: ['r'],
  vread: ['r'],
  history: ['r'],
  search: ['s'],
  create: ['c'],
  update: ['u'],
  patch: ['u'],
  delete: ['d'],
  export: ['r', 's'],
  quarantine: ['u'],
  // Governed by role (and project) only: no FHIR scope expresses them.
  approve: null,
  reidentify: null,
  administer: null,
  // Each entry needs its own letters; the envelope needs none.
  batch: null,
};

/** The views each role sees: researchers never see identified data. */
const VIEW: Record<Role, AccessDecision['view']> = {
  admin: 'identified',
  'data-manager': 'identified',
  pi: 'deidentified',
  researcher: 'deidentified',
};

function deny(principal: Principal, reason: string): AccessDecision {
  return { allow: false, reason, rowFilter: { projects: [] }, granularFilters: [], view: VIEW[principal.role] ?? 'deidentified' };
}

/**
 * Decides one access request (the single enforcement point for FHIR and DICOMweb).
 * Pure and synchronous; a few microseconds per call.
 */
export function decide(principal: Principal, request: AccessRequest): AccessDecision {
  const role = principal.role;
  const matrix = ROLE_MATRIX[role];
  if (!matrix) return deny(principal, `unknown role`);
  const klass = classify(request.resourceType);
  if (request.interaction !== 'batch' && !allowedInteractions(role, request.resourceType).includes(request.interaction)) {
    return deny(principal, `role ${role} may not ${request.interaction} ${request.resourceType}`);
  }

  // Scopes: at least one scope must give every letter the interaction needs.
  let granularFilters: Array<Record<string, string>> = [];
  const letters = SCOPE_LETTERS[request.interaction];
  const governance = GOVERNANCE_RULES[request.resourceType] !== undefined;
  // A token narrowed to some FHIR types (an app's token) governs nothing: the role's rights are
  // cut by its scopes, and no scope names these types, so they take a whole-server (`*`) scope.
  if (governance && !principal.scopes.some((s) => s.context !== 'patient' && s.resourceType === '*' && Object.keys(s.params).length === 0)) {
    return deny(principal, `no scope grants ${request.resourceType}: governance needs a token with an unrestricted user/* or system/* scope`);
  }
  if (letters && klass !== 'conformance' && klass !== 'owned' && !governance) {
    const matching = principal.scopes.filter(
      (s) => s.context !== 'patient' && (s.resourceType === '*' || s.resourceType === request.resourceType) && letters.every((l) => s.permissions.has(l)),
    );
    if (matching.length === 0) {
      const patientOnly = principal.scopes.some((s) => s.context === 'patient');
      return deny(
        principal,
        patientOnly
          ? 'patient/ scopes need a patient launch context, which this server does not offer'
          : `no scope grants ${letters.join('')} on ${request.resourceType}`,
      );
    }
    // Union of granular scopes: one unrestricted scope lifts every restriction.
    if (!matching.some((s) => Object.keys(s.params).length === 0)) {
      granularFilters = uniqueFilters(matching);
    }
  }

  // Rows: admin sees everything; the others only their projects.
  const own = principal.projects;
  let projects: string[] | 'all';
  if (role === 'admin') {
    projects = request.projectIds && request.projectIds.length > 0 ? [...new Set(request.projectIds)] : 'all';
  } else {
    if (klass !== 'conformance' && own.length === 0) return deny(principal, `${role} belongs to no project`);
    if (request.projectIds && request.projectIds.length > 0) {
      const outside = request.projectIds.filter((p) => !own.includes(p));
      if (outside.length > 0) return deny(principal, `not a member of project ${outside.join(', ')}`);
      projects = [...new Set(request.projectIds)];
    } else if (['create', 'approve', 'administer'].includes(request.interaction) && klass !== 'conformance' && !governance) {
      // Writes must name their project (or the principal must have exactly one to default to).
      if (own.length !== 1) return deny(principal, `${request.interaction} needs a target project`);
      projects = [own[0]];
    } else {
      projects = klass === 'conformance' ? 'all' : [...own];
    }
  }
  const rowFilter: AccessDecision['rowFilter'] = { projects };
  if (principal.facility && role !== 'admin') rowFilter.facility = principal.facility;
  return { allow: true, reason: `role ${role} may ${request.interaction} ${request.resourceType}`, rowFilter, granularFilters, view: VIEW[role] };
}

/** Interactions whose rows the scopes narrow (scopeRowRules). */
const NARROWED_INTERACTIONS: ReadonlySet<Interaction> = new Set(['read', 'vread', 'search', 'history', 'export', 'batch']);

/**
 * What the scopes let a request see, type by type, of the rows it reads beyond the one type the
 * decision was asked about: a search's `_include` and `_revinclude`, a batch's entries, an
 * export's types. SMART 2.2 scopes are per type; the decision checks the type a request names,
 * and these rules narrow every row the request reads (the row filter, src/auth/request-access.ts).
 *
 * A type is visible when a scope on it (or on `*`) grants the interaction's letters or `r`. It is
 * visible whole when one such scope has no parameters; otherwise only rows matching one of the
 * scopes' parameter sets (a union, as `decide`). Undefined: no narrowing (an unrestricted `*`
 * scope). Writes are narrowed by the parameter sets `decide` returns for their letter
 * (`granularFilters`; src/auth/request-access.ts `writeFilterFor`).
 */
export function scopeRowRules(principal: Principal, interaction: Interaction): ScopeRows | undefined {
  if (!NARROWED_INTERACTIONS.has(interaction)) return undefined;
  const letters = SCOPE_LETTERS[interaction] ?? ['r'];
  const seeing = principal.scopes.filter((s) => s.context !== 'patient' && (s.permissions.has('r') || letters.every((l) => s.permissions.has(l))));
  if (seeing.some((s) => s.resourceType === '*' && Object.keys(s.params).length === 0)) return undefined;
  const whole = new Set<string>();
  const granular = new Map<string, Array<Record<string, string>>>();
  const anyType: Array<Record<string, string>> = [];
  for (const s of seeing) {
    if (s.resourceType === '*') anyType.push({ ...s.params });
    else if (Object.keys(s.params).length === 0) whole.add(s.resourceType);
    else granular.set(s.resourceType, [...(granular.get(s.resourceType) ?? []), { ...s.params }]);
  }
  for (const type of whole) granular.delete(type);
  return { whole: [...whole], granular, anyType };
}

function uniqueFilters(scopes: readonly ResourceScope[]): Array<Record<string, string>> {
  const seen = new Set<string>();
  const out: Array<Record<string, string>> = [];
  for (const s of scopes) {
    const key = JSON.stringify(Object.entries(s.params).sort());
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ ...s.params });
  }
  return out;
}

/** The interactions of the role matrix, for tests and documentation. */
export function roleMayPerform(role: Role, resourceType: string, interaction: Interaction): boolean {
  return allowedInteractions(role, resourceType).includes(interaction);
}
