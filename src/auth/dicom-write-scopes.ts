/**
 * SMART App Launch 2.2 granular scopes ("Finer-grained resource constraints using search
 * parameters", https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html#finer-grained-resource-constraints-using-search-parameters)
 * on DICOMweb writes, which the policy governs as ImagingStudy interactions: a STOW-RS instance
 * (`create`, letter c) must match one of the caller's parameter sets for ImagingStudy before it
 * is indexed, and a DELETE (`delete`, letter d) may remove only from a study whose ImagingStudy
 * matches one. Several sets are a union and one unrestricted scope lifts them (`decide`); a set
 * naming a parameter that cannot be evaluated grants nothing: a scope narrows, so failing to
 * evaluate it must never widen it. Tokens without granular sets (the role defaults) get nothing
 * from here, and nothing runs per instance or per delete for them.
 */
import type { AccessDecision } from './policy';
import { decide } from './policy';
import type { Principal } from './principal';
import { imagingStudyScopeRows, restrictStudiesToImagingStudies, restrictStudiesToProjects, bothStudyRestrictions, studyRestrictionFor } from './project-filters';
import { writeFilterFor } from './request-access';
import { wwwAuthenticate } from './auth-errors';
import type { ScannedInstance } from '../dicom/types';
import type { DeleteScope } from '../dicomweb/delete-rs';
import type { InstanceAdmission } from '../dicomweb/stow-rs';
import { loadFhirDefinitions } from '../fhir/definitions';
import { INSTANCE_DERIVED_PARAMS, provisionalImagingStudy } from '../fhir/dicom/provisional-imaging-study';
import { matchFilter } from '../fhir/search/row-match';
import { parseFilter, type SearchFilter } from '../fhir/search/search-request';
import { extractIndexRows } from '../fhir/store/index-rows';

/** What a DICOMweb write's granular scopes ask of the STOW-RS and delete services (AccessLocals). */
export interface DicomWriteScopes {
  /** STOW-RS: the check each instance passes before it is indexed (stow-rs.ts StoreRequest.admit). */
  admitInstance?: InstanceAdmission;
  /** DELETE: the studies the delete may reach, and how to refuse the others (delete-rs.ts). */
  deleteScope?: DeleteScope;
}

/**
 * The narrowing of a DICOMweb store or delete by the token's granular ImagingStudy scopes, or
 * undefined when the decision carries none (the common case: nothing more to check).
 */
export function dicomWriteScopesFor(principal: Principal, interaction: string, decision: AccessDecision, projectIds: readonly string[]): DicomWriteScopes | undefined {
  if (decision.granularFilters.length === 0) return undefined;
  if (interaction === 'create') return { admitInstance: instanceAdmissionFor(decision.granularFilters) };
  if (interaction === 'delete') return { deleteScope: deleteScopeFor(principal, decision, projectIds) };
  return undefined;
}

/** Why an instance was refused: the restriction, never the instance's values (as FHIR's outsideWriteScope). */
export const STORE_REFUSAL =
  'refused: the scopes granting c on ImagingStudy are limited by search parameters (SMART App Launch 2.2 granular scopes), and this instance matches none of them';

/**
 * The STOW-RS check of the c parameter sets: each set's parameters are parsed by the search
 * engine (`parseFilter`), and an instance passes a set when the index rows of the ImagingStudy it
 * alone would give its study (provisionalImagingStudy, extractIndexRows) match every one of them,
 * as a search would (row-match.ts). A set naming a parameter an instance does not determine
 * (INSTANCE_DERIVED_PARAMS), or one the engine refuses, is dropped. Answers the refusal text, or
 * undefined when the instance may be stored.
 */
export function instanceAdmissionFor(sets: ReadonlyArray<Record<string, string>>): InstanceAdmission {
  const compiled = sets.map(compileSet).filter((s): s is SearchFilter[] => s !== undefined);
  if (compiled.length === 0) return () => STORE_REFUSAL;
  const defs = loadFhirDefinitions();
  return (instance: ScannedInstance) => {
    try {
      const rows = extractIndexRows(defs, provisionalImagingStudy(instance.attributes, instance.dataset));
      const now = Date.now();
      return compiled.some((filters) => filters.every((f) => matchFilter(f, rows, now) === true)) ? undefined : STORE_REFUSAL;
    } catch {
      return STORE_REFUSAL; // what cannot be evaluated is not granted
    }
  };
}

function compileSet(params: Record<string, string>): SearchFilter[] | undefined {
  const filters: SearchFilter[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (!INSTANCE_DERIVED_PARAMS.has(key.split(/[:.]/)[0])) return undefined;
    try {
      const filter = parseFilter(loadFhirDefinitions(), 'ImagingStudy', key, value);
      if (filter.values.length === 0 || filter.chain) return undefined;
      filters.push(filter);
    } catch {
      return undefined;
    }
  }
  return filters.length > 0 ? filters : undefined;
}

/** The refusal of a delete whose study matches none of the caller's d sets. */
export const DELETE_REFUSAL =
  'access denied: the scopes granting d on ImagingStudy are limited by search parameters (SMART App Launch 2.2 granular scopes), and this delete touches a study whose ImagingStudy matches none of them';

/**
 * The delete's reach: the caller's projects, and the studies whose ImagingStudy passes the
 * search engine's row filter of its d sets (`writeFilterFor`, as a FHIR delete checks the stored
 * row), current (no rewrite pending: the app rewrites pending ones first). A study outside the
 * reach that the caller may read (projects and read scopes) is refused with 403, as the guard
 * refuses a forbidden interaction; one it may not read answers 404, as a missing one.
 */
function deleteScopeFor(principal: Principal, decision: AccessDecision, projectIds: readonly string[]): DeleteScope {
  const rows = writeFilterFor(principal, projectIds, 'ImagingStudy', 'delete');
  const byProject = studyRestrictionFor(decision);
  const reach = rows ? bothStudyRestrictions(byProject, restrictStudiesToImagingStudies(rows, { current: true })) : byProject;
  const read = decide(principal, { resourceType: 'ImagingStudy', interaction: 'read', projectIds });
  const readable = read.allow ? studyRestrictionFor(read, imagingStudyScopeRows(principal, 'read')) : restrictStudiesToProjects([]);
  return { reach, readable, refusal: { message: DELETE_REFUSAL, headers: { 'WWW-Authenticate': wwwAuthenticate('insufficient_scope', DELETE_REFUSAL) } } };
}
