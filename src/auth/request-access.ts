import type { Request } from 'express';
import type { Knex } from 'knex';
import type { IndexChange } from '../db/instance-index';
import { DicomInstanceError, StatusCode } from '../dicom/types';
import type { IndexChangeContext } from '../dicomweb/index-change-hook';
import type { AccessFilter } from '../fhir/store/access';
import type { WriteInteraction } from '../fhir/http/fhir-request';
import { requestedProjects, type AccessLocals } from './access-guard';
import { decide, scopeRowRules, type AccessDecision, type Interaction } from './policy';
import type { Principal } from './principal';
import { parseScopes } from './scopes';
import { fieldVisibility, type FieldVisibility } from './policy-fields';
import { loadFhirDefinitions } from '../fhir/definitions';
import { bothFilters, scopeRowFilter } from '../fhir/search/scope-filter';
import type { ExportCaller } from '../fhir/export/export-routes';
import { classifyFhirRequest } from './policy-routes';
import { linkResourceToProjects, linkStudyToProjects } from './project-store';

/**
 * Glue between the access guard's decision (res.locals.access) and the protocol services:
 * the FHIR row filters (of reads, and of writes by granular scopes), the project links a STOW
 * or a FHIR create writes in its transaction, and the per-entry decision for Bundles.
 */

/**
 * The FHIR row filter of a request: resources linked to one of the caller's projects (of its
 * facility, when the token names one), and of the types and granular scopes the token may see
 * (SMART 2.2 `user/Condition.rs?code=...` narrows what every search, include and read returns).
 * Undefined when nothing narrows it.
 */
export function fhirAccessFilter(req: Request): AccessFilter | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  if (!access) return undefined;
  return accessFilterFor(access.principal, access.decision, access.route.interaction, access.route.resourceType);
}

/**
 * The rows a search by the request's token would see (its projects and read scopes), whatever
 * the request is: a conditional write searches with it, so it neither finds nor answers with a
 * resource its token may not read. 'denied' when the token may not search the type.
 */
export function fhirSearchFilter(req: Request): AccessFilter | 'denied' | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  // A Bundle's entries search through its own filter, already narrowed by the read scopes of each type.
  if (!access || access.route.batch) return undefined;
  const type = access.route.resourceType;
  const decision = decide(access.principal, { resourceType: type, interaction: 'search', projectIds: requestedProjects(req) });
  if (!decision.allow) return 'denied';
  return accessFilterFor(access.principal, decision, 'search', type);
}

/** The rows a request's granular scopes let it change by a write `interaction` on `resourceType` (writeFilterFor); undefined when not narrowed. */
export function fhirWriteFilter(req: Request, resourceType: string, interaction: WriteInteraction): AccessFilter | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  if (!access) return undefined;
  return writeFilterFor(access.principal, requestedProjects(req), resourceType, interaction);
}

/**
 * The rows a write may change by the caller's granular scopes (SMART App Launch 2.2, "Finer-grained
 * resource constraints using search parameters"): the policy's own parameter sets for the
 * interaction on the type (`decide`: the scopes granting its letter, c, u or d, on the type or on
 * `*`; a union, lifted by one unrestricted scope), compiled by the search engine as for reads.
 * A set it cannot evaluate grants nothing; a write the policy refuses matches no row. Undefined
 * when nothing narrows the write (projects are the read filter's part).
 */
export function writeFilterFor(principal: Principal, projectIds: readonly string[], resourceType: string, interaction: WriteInteraction): AccessFilter | undefined {
  const decision = decide(principal, { resourceType, interaction, projectIds });
  if (!decision.allow) return () => ({ sql: 'FALSE', bindings: [] });
  if (decision.granularFilters.length === 0) return undefined;
  return scopeRowFilter(loadFhirDefinitions(), { whole: [], granular: new Map([[resourceType, decision.granularFilters]]), anyType: [] }, resourceType);
}

/** The row filter of one decision (fhirAccessFilter; a bulk export asks it per type). */
export function accessFilterFor(principal: Principal, decision: AccessDecision, interaction: Interaction, askedType: string): AccessFilter | undefined {
  const { projects, facility } = decision.rowFilter;
  const [join, onFacility] = facility === undefined ? ['', ''] : [' JOIN projects p ON p.id = pr.project_id', ' AND p.facility = ?'];
  const byProject: AccessFilter | undefined =
    projects === 'all'
      ? undefined
      : (alias) => ({
          sql: `EXISTS (SELECT 1 FROM project_resources pr${join} WHERE pr.resource_type = ${alias}.resource_type AND pr.resource_id = ${alias}.id AND pr.project_id = ANY(?::text[])${onFacility})`,
          bindings: facility === undefined ? [[...projects]] : [[...projects], facility],
        });
  const rows = scopeRowRules(principal, interaction);
  return bothFilters(byProject, rows ? scopeRowFilter(loadFhirDefinitions(), rows, askedType) : undefined);
}

/**
 * What a FHIR create must do in its transaction: link the new resource to the request's target
 * projects (the ones the policy allowed), so its creator's project can read it. Undefined when
 * there is nothing to link (no decision, or an admin naming no project).
 */
export function fhirCreateLinker(req: Request): ((trx: Knex.Transaction, resourceType: string, id: string) => Promise<void>) | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  const projects = access?.targetProjects ?? [];
  if (projects.length === 0) return undefined;
  return async (trx, resourceType, id) => {
    await ensureProjects(trx, projects);
    await linkResourceToProjects(trx, resourceType, id, projects);
  };
}

/**
 * The policy's answer for one entry of a batch or transaction Bundle (FHIR R4 3.1.0.11): the
 * guard decided on the Bundle as a whole, so each entry is asked again as the request it
 * stands for. Returns the reason of a denial, or undefined when the entry is allowed.
 */
export function bundleEntryDenial(req: Request, method: string, url: string): string | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  if (!access) return undefined;
  const path = url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]+/i, '').replace(/^\/?fhir(?=\/|$|\?)/, '').split('?')[0];
  const route = classifyFhirRequest(method, path.startsWith('/') ? path : `/${path}`);
  const decision = decide(access.principal, { resourceType: route.resourceType, interaction: route.interaction, projectIds: requestedProjects(req) });
  return decision.allow ? undefined : decision.reason;
}

/**
 * Links the studies a STOW touched, and the ImagingStudy and Patient derived from them, to
 * the request's target projects, in the ingest transaction. Projects named by a token that
 * are not registered yet are created (the identity provider is their source).
 *
 * A caller limited to its projects (`studyScope: 'projects'`) may add to a study only when it
 * is new or already in one of them: otherwise storing one instance under a known Study
 * Instance UID (or SOP Instance UID) would hand over another project's study. Such a change is
 * refused (FailureReason 0124H, Refused: Not Authorized) and rolls back. A Patient that another
 * project already holds is not linked: the same patient id must not open that project's record.
 */
export async function linkStowToProjects(trx: Knex.Transaction, change: IndexChange, context: IndexChangeContext): Promise<void> {
  const projects = [...new Set(context.projects ?? [])];
  if (context.studyScope === 'projects') await assertStudiesWithin(trx, change, projects);
  if (projects.length === 0 || change.studyPks.length === 0) return;
  await ensureProjects(trx, projects);
  for (const pk of change.studyPks) {
    await linkStudyToProjects(trx, pk, projects);
    const row = await trx('studies as st').join('patients as p', 'p.id', 'st.patient_pk').where('st.id', pk).first('st.fhir_id as study', 'p.fhir_id as patient');
    if (row?.study) await linkResourceToProjects(trx, 'ImagingStudy', row.study, projects);
    if (row?.patient && (context.studyScope !== 'projects' || !(await heldElsewhere(trx, 'Patient', row.patient, projects)))) {
      await linkResourceToProjects(trx, 'Patient', row.patient, projects);
    }
  }
}

async function ensureProjects(trx: Knex.Transaction, projects: string[]): Promise<void> {
  await trx('projects')
    .insert(projects.map((id) => ({ id, name: id })))
    .onConflict('id')
    .ignore();
}

/** Refuses a change that touched a study existing before this transaction outside `projects`, or emptied one. */
async function assertStudiesWithin(trx: Knex.Transaction, change: IndexChange, projects: string[]): Promise<void> {
  const refuse = () => {
    throw new DicomInstanceError('refused: the study is held by a project this request does not target', StatusCode.NotAuthorized);
  };
  // Emptying a study means every instance moved to another Study Instance UID: its links are gone already.
  if (change.removedStudies.length > 0) refuse();
  if (change.studyPks.length === 0) return;
  // created_at defaults to now(), the start of this transaction: older rows existed before it.
  const foreign = await trx('studies as st')
    .whereIn('st.id', change.studyPks)
    .whereRaw('st.created_at < now()')
    .whereNotExists(function linked(this: Knex.QueryBuilder) {
      this.select(trx.raw('1')).from('project_studies as ps').whereRaw('ps.study_pk = st.id').whereIn('ps.project_id', projects);
    })
    .first('st.id');
  if (foreign) refuse();
}

/** True when the resource is linked to some project, none of them in `projects`. */
async function heldElsewhere(trx: Knex.Transaction, resourceType: string, id: string, projects: string[]): Promise<boolean> {
  const links = (await trx('project_resources').where({ resource_type: resourceType, resource_id: id }).pluck('project_id')) as string[];
  return links.length > 0 && !links.some((p) => projects.includes(p));
}

/**
 * A bulk export's authorization, kept with its job (no secret: who, role, projects, scopes): an
 * export that waits for its approval runs later, in whichever process takes the approval.
 */
export interface ExportGrant {
  principal: Omit<Principal, 'scopes'> & { scopes: string[] };
  /** The type the kick-off named ('*' at system level). */
  resourceType: string;
  /** The projects the kick-off named (X-Project). */
  projectIds: string[];
}

/** Whose cohort exports wait for the approval of a PI of their projects: researchers' (default), or nobody's. */
export type ExportApprovalRule = 'researcher' | 'none';

/**
 * A bulk export's caller (src/fhir/export): the owner of the job it kicks off (the token's issuer
 * and subject), the row filter of each type it may export (decided as an `export` of that type,
 * with the request's projects, so projects, facility and granular scopes apply as to a search),
 * the projects of its de-identified view when it sees one, and, for a researcher, the projects
 * whose PI must approve the export.
 */
export function exportCallerOf(req: Request, rule: ExportApprovalRule = 'researcher'): ExportCaller | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  if (!access) return undefined;
  const { scopes, ...rest } = access.principal;
  const grant: ExportGrant = { principal: { ...rest, scopes: scopes.map((s) => s.raw) }, resourceType: access.route.resourceType, projectIds: requestedProjects(req) };
  return exportCallerFor(grant, rule);
}

/** The caller a grant stands for (exportCallerOf, again from the grant kept with the job). */
export function exportCallerFor(grant: ExportGrant, rule: ExportApprovalRule = 'researcher'): ExportCaller {
  const principal: Principal = { ...grant.principal, scopes: parseScopes(grant.principal.scopes) };
  const { projectIds } = grant;
  const decision = decide(principal, { resourceType: grant.resourceType, interaction: 'export', projectIds });
  const projects = decision.rowFilter.projects;
  const caller: ExportCaller = {
    owner: `${principal.issuer}|${principal.subject}`,
    filterFor: (type) => {
      const d = decide(principal, { resourceType: type, interaction: 'export', projectIds });
      return d.allow ? accessFilterFor(principal, d, 'export', type) : 'denied';
    },
    deidentifiedFor: decision.view === 'deidentified' ? projects : undefined,
    grant,
  };
  if (rule === 'researcher' && principal.role === 'researcher' && decision.allow && projects !== 'all') caller.approvalProjects = [...projects];
  return caller;
}

/**
 * The column-level policy of a request's caller when it sees identified data
 * (src/auth/policy-fields.ts): for a data manager, patient identifiers, telecom and addresses
 * masked (the admin's alone). The FHIR and the DICOMweb answers apply it (data managers do not
 * export). Undefined for admins and for de-identified callers (whose view withholds far more).
 */
export function fieldRulesOf(req: Request): ((resourceType: string) => FieldVisibility) | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  if (!access || access.decision.view !== 'identified' || access.principal.role === 'admin') return undefined;
  const role = access.principal.role;
  return (resourceType) => fieldVisibility(role, resourceType);
}

/** The projects a request's rows are confined to; undefined when it may see every project. */
export function fhirProjectsOf(req: Request): readonly string[] | undefined {
  const access = req.res?.locals.access as AccessLocals | undefined;
  const projects = access?.decision.rowFilter.projects;
  return projects === undefined || projects === 'all' ? undefined : projects;
}
