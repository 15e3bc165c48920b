import type { Knex } from 'knex';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import type { PatientPseudonym, PrivacyService } from '../../privacy/privacy-types';
import type { FhirDefinitions } from '../definitions';
import type { FhirResponse } from '../http/fhir-request';
import type { SearchView } from '../search/search-view';
import { patientLinkOf } from './patient-links';
import { maskResource } from './resource-masker';
import { createDeidSearchView } from './search-guard';

/**
 * The de-identified view of the FHIR API for researcher and pi tokens (issue 6): ONE answer
 * transformer applied to whatever a FHIR interaction returns (read, vread, history, search with
 * its included entries, batch/transaction responses, conditional and $validate bodies,
 * _elements/_summary subsets), plus the search view that keeps searches honest about what the
 * caller sees. New routes get it for free: the express adapter applies it to every answer.
 */
export interface DeidView {
  /** The answer as the caller may see it (body and headers). */
  transformAnswer(answer: FhirResponse): Promise<FhirResponse>;
  /** De-identified copies of resources, in order (pseudonyms and study projects looked up once for all). */
  deidentify(resources: readonly Resource[]): Promise<Resource[]>;
  /** Checks and plans the searches of the caller. */
  searchView: SearchView;
}

/** What a view is built from, per request. */
export interface DeidViewDeps {
  defs: FhirDefinitions;
  /** Where pseudonyms and project links are read (the root knex: the view runs after the interaction). */
  db: Knex;
  /**
   * Pseudonyms, date offsets and UID mappers. Absent (not wired): the view fails closed, hiding
   * the dates of patient-linked resources and showing no PatientKey.
   */
  privacy?: PrivacyService;
  /** The token's projects (the access decision's row filter). */
  projects: readonly string[] | 'all';
  now: () => Date;
  /** Largest |date offset| the privacy service draws, for widening date searches in SQL; undefined: not widened but dropped. */
  maxOffsetDays?: number;
}

/** Builds the view of one request. */
export function createDeidView(deps: DeidViewDeps): DeidView {
  // One request may mask the same stored object twice (a date search's exact filter, then its
  // answer): the first copy is reused.
  const seen = new WeakMap<Resource, Resource>();
  const deidentify = async (resources: readonly Resource[]) => {
    const todo = resources.filter((r) => !seen.has(r));
    const masked = await deidentifyResources(deps, todo);
    todo.forEach((r, i) => seen.set(r, masked[i]));
    return resources.map((r) => seen.get(r) as Resource);
  };
  return {
    deidentify,
    transformAnswer: (answer) => transformAnswerWith(answer, deidentify),
    searchView: createDeidSearchView({ ...deps, deidentify }),
  };
}

/** Types whose answers carry no patient data: served as they are. */
const PASS_THROUGH = new Set(['OperationOutcome', 'CapabilityStatement', 'StructureDefinition', 'SearchParameter', 'ValueSet', 'CodeSystem', 'OperationDefinition', 'CompartmentDefinition']);

/** An answer with each resource it carries (in Bundles too) replaced by what `deidentify` makes of it; Last-Modified dropped. */
export async function transformAnswerWith(answer: FhirResponse, deidentify: DeidView['deidentify']): Promise<FhirResponse> {
  // Last-Modified is the real lastUpdated; meta.lastUpdated carries the shifted one.
  const { 'Last-Modified': _lastModified, ...headers } = answer.headers;
  const body = answer.body;
  if (!body || PASS_THROUGH.has(body.resourceType)) return { ...answer, headers };
  const slots: Array<{ resource: Resource; put: (r: Resource) => void }> = [];
  let out: Resource;
  if (isAnswerBundle(body)) out = collectBundle(body as Bundle, slots);
  else {
    out = body;
    slots.push({ resource: body, put: (r) => (out = r) });
  }
  const masked = await deidentify(slots.map((s) => s.resource));
  slots.forEach((s, i) => s.put(masked[i]));
  return { ...answer, headers, body: out };
}

/** Bundles the server composes as answers; a stored Bundle (document, collection, ...) is a resource like any other. */
const ANSWER_BUNDLES = new Set(['searchset', 'history', 'batch-response', 'transaction-response']);
const isAnswerBundle = (r: Resource) => r.resourceType === 'Bundle' && ANSWER_BUNDLES.has(String((r as Bundle).type));

/** A copy of the Bundle whose entries' resources are slots to fill (nested Bundles followed). */
function collectBundle(bundle: Bundle, slots: Array<{ resource: Resource; put: (r: Resource) => void }>): Bundle {
  const entry = (bundle.entry ?? []).map((e): BundleEntry => {
    const copy: BundleEntry = { ...e };
    if (e.response) {
      const { lastModified: _lm, ...response } = e.response;
      copy.response = response;
    }
    const r = e.resource;
    if (!r || PASS_THROUGH.has(r.resourceType)) return copy;
    if (isAnswerBundle(r)) copy.resource = collectBundle(r as Bundle, slots);
    else slots.push({ resource: r, put: (m) => (copy.resource = m) });
    return copy;
  });
  return { ...bundle, ...(bundle.entry ? { entry } : {}) };
}

async function deidentifyResources(deps: DeidViewDeps, resources: readonly Resource[]): Promise<Resource[]> {
  if (resources.length === 0) return [];
  const links = resources.map((r) => patientLinkOf(deps.defs, r));
  const patientIds = [...new Set(links.map((l) => l.patientId).filter((id): id is string => !!id))];
  const studies = [...new Set(resources.filter((r) => r.resourceType === 'ImagingStudy' && r.id).map((r) => r.id as string))];
  const [pseudonyms, studyProjects] = await Promise.all([
    deps.privacy && patientIds.length ? deps.privacy.pseudonymsForFhirPatients(deps.db, patientIds) : Promise.resolve(new Map<string, PatientPseudonym>()),
    deps.privacy && studies.length ? projectsHolding(deps.db, 'ImagingStudy', studies, deps.projects) : Promise.resolve(new Map<string, string>()),
  ]);
  const mappers = new Map<string, (uid: string) => string>();
  const mapperOf = (projectId: string | undefined) => {
    if (!projectId || !deps.privacy) return undefined;
    let m = mappers.get(projectId);
    if (!m) mappers.set(projectId, (m = deps.privacy.uidMapper(projectId)));
    return m;
  };
  const now = deps.now();
  return resources.map((r, i) => {
    const link = links[i];
    const p = link.patientId ? pseudonyms.get(link.patientId) : undefined;
    return maskResource(deps.defs, r, {
      linked: link.linked,
      offsetDays: p?.dateOffsetDays,
      patientKey: r.resourceType === 'Patient' ? p?.patientKey : undefined,
      mapUid: r.resourceType === 'ImagingStudy' && r.id ? mapperOf(studyProjects.get(r.id)) : undefined,
      now,
    });
  });
}

/**
 * For each resource, the alphabetically first of the caller's projects holding it
 * (project_resources): the project whose UID mapping the caller sees. `min(project_id)` in the
 * database's collation, exactly as DICOMweb picks it (db/wado-index findStudyPrivacyRows), so
 * both protocols show one study with the same UIDs.
 */
async function projectsHolding(db: Knex, resourceType: string, ids: string[], projects: readonly string[] | 'all'): Promise<Map<string, string>> {
  const q = db('project_resources').where('resource_type', resourceType).whereIn('resource_id', ids).groupBy('resource_id').select('resource_id', db.raw('min(project_id) as project_id'));
  if (projects !== 'all') q.whereIn('project_id', [...projects]);
  const rows = (await q) as Array<{ resource_id: string; project_id: string }>;
  return new Map(rows.map((r) => [r.resource_id, r.project_id]));
}
