import type { Knex } from 'knex';
import type { Group, Resource } from '@medplum/fhirtypes';
import type { Logger } from '../../logger';
import type { FhirDefinitions } from '../definitions';
import { compartmentParams } from '../deid/patient-links';
import type { DeidView } from '../deid/deid-view';
import { bothFilters } from '../search/scope-filter';
import { findMatches } from '../search/search-service';
import { parseSearchRequest } from '../search/search-request';
import { applyElements } from '../search/subset';
import type { AccessFilter } from '../store/access';
import { queryRows } from '../store/raw';
import type { StoredResource } from '../store/resource-store';
import type { ExportAccess } from './bulk-export';
import { inPatientCompartment, type ExportRequest } from './export-request';

/**
 * What a bulk export job reads (bulk-export.ts runs the jobs): the types it covers, each type's
 * resources through the FHIR search engine with the job's own row filter and view, keyset-paged
 * by rid up to the job's transactionTime, and the deletions since `_since`.
 */

/** A job as it runs. */
export interface ExportJob {
  id: string;
  request: ExportRequest;
  access: ExportAccess;
  transactionTime: Date;
  patients?: string[];
  cancelled: boolean;
}

/** Thrown by a read when its job was cancelled or its process is stopping. */
export class ExportCancelled extends Error {}

/** What the reads need. */
export interface ReaderDeps {
  knex: Knex;
  defs: FhirDefinitions;
  logger: Logger;
  /** Resources read per statement. */
  pageSize: number;
  /** True once the process is stopping: reads end at their next page. */
  isStopped(): boolean;
}

/** Patients per statement of a compartment search. */
const PATIENTS_PER_QUERY = 100;

/** The types a job exports: those named, or every stored type its level covers, that the caller may read. */
export async function exportedTypes(deps: ReaderDeps, job: ExportJob): Promise<string[]> {
  if (job.request.types) return job.request.types;
  // Each stored type once, by skip scan over the (resource_type, last_updated) index; types
  // whose resources are all deleted too (with _since, their deletions are reported).
  const rows = await queryRows<{ t: string }>(
    deps.knex,
    `WITH RECURSIVE types AS (
       SELECT min(resource_type) AS t FROM fhir_resource
       UNION ALL
       SELECT (SELECT min(resource_type) FROM fhir_resource WHERE resource_type > types.t) FROM types WHERE types.t IS NOT NULL)
     SELECT t FROM types WHERE t IS NOT NULL`,
    [],
  );
  return rows
    .map((r) => r.t)
    .filter((t) => deps.defs.resourceTypes.has(t) && (job.request.level.kind === 'system' || inPatientCompartment(t)) && job.access.filterFor(t) !== 'denied');
}

/** The searches that select a type's resources for a job (their union). */
function searchesOf(job: ExportJob, type: string): Array<Record<string, string[]>> {
  let base: Array<Record<string, string[]>>;
  const params = type === 'Patient' ? ['_id'] : (compartmentParams(type) ?? []);
  if (job.request.level.kind === 'system') base = [{}];
  else if (!job.patients) base = type === 'Patient' ? [{}] : params.slice(0, 1).map((p) => ({ [`${p}:missing`]: ['false'] }));
  else {
    base = [];
    for (let i = 0; i < job.patients.length; i += PATIENTS_PER_QUERY) {
      const chunk = job.patients.slice(i, i + PATIENTS_PER_QUERY);
      for (const p of params) base.push({ [p]: [chunk.map((id) => (p === '_id' ? id : `Patient/${id}`)).join(',')] });
    }
  }
  const filters = job.request.typeFilters.get(type);
  if (!filters) return base;
  return base.flatMap((b) => filters.map((f) => mergeQueries(b, f)));
}

export async function readTypeInto(deps: ReaderDeps, job: ExportJob, type: string, add: (resources: Resource[]) => Promise<void>): Promise<void> {
  const access = job.access.filterFor(type);
  if (access === 'denied') return;
  const searches = searchesOf(job, type);
  const seen = searches.length > 1 ? new Set<string>() : undefined;
  const view = job.access.deid?.();
  for (const search of searches) {
    const req = parseSearchRequest(deps.defs, type, search);
    // A search parameter this server cannot run would select every row: never exported so.
    if (req.ignored.length > 0) {
      deps.logger.warn({ exportId: job.id, type, ignored: req.ignored }, 'bulk export skipped a search it cannot run');
      continue;
    }
    let after = '0';
    for (;;) {
      if (job.cancelled || deps.isStopped()) throw new ExportCancelled();
      const window: AccessFilter = (a) => ({
        sql: `${a}.rid > ?::bigint AND ${a}.last_updated <= ?${job.request.since ? ` AND ${a}.last_updated > ?` : ''}`,
        bindings: [after, job.transactionTime, ...(job.request.since ? [job.request.since] : [])],
      });
      const page = await findMatches(
        { db: deps.knex, defs: deps.defs, baseUrl: '', access: bothFilters(access, window), searchView: view?.searchView },
        { ...req, count: deps.pageSize, offset: 0, sort: [], includes: [], revincludes: [], total: 'none', summary: undefined, elements: undefined },
      );
      const fresh = page.matches.filter((m) => !seen || (!seen.has(m.id) && seen.add(m.id)));
      if (fresh.length > 0) await add(await shape(job, view, fresh));
      if (!page.more || page.matches.length === 0) break;
      after = page.matches[page.matches.length - 1].rid;
    }
  }
}

/**
 * What was deleted since `_since` (IG: the manifest's `deleted` files): a transaction Bundle
 * with one DELETE entry per resource. A deleted resource keeps no content, so at Patient and
 * Group level only the deleted Patients themselves can be placed (the Group's members, or any
 * Patient the caller may read); other types are reported at system level.
 */
export async function readDeletionsInto(deps: ReaderDeps, job: ExportJob, type: string, add: (resources: Resource[]) => Promise<void>): Promise<void> {
  const access = job.access.filterFor(type);
  if (access === 'denied' || !job.request.since) return;
  if (job.request.level.kind !== 'system' && type !== 'Patient') return;
  const a = access ? access('r') : { sql: 'TRUE', bindings: [] };
  const members = job.patients && type === 'Patient' ? job.patients : undefined;
  let after = '0';
  for (;;) {
    if (job.cancelled || deps.isStopped()) throw new ExportCancelled();
    const rows = await queryRows<{ rid: string; id: string }>(
      deps.knex,
      `SELECT r.rid, r.id FROM fhir_resource r WHERE r.resource_type = ? AND r.deleted AND r.last_updated > ? AND r.last_updated <= ? AND r.rid > ?::bigint` +
        `${members ? ' AND r.id = ANY(?::text[])' : ''} AND (${a.sql}) ORDER BY r.rid LIMIT ?`,
      [type, job.request.since, job.transactionTime, after, ...(members ? [members] : []), ...a.bindings, deps.pageSize],
    );
    if (rows.length === 0) return;
    await add(rows.map((r) => ({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${type}/${r.id}` } }] }) as Resource));
    if (rows.length < deps.pageSize) return;
    after = String(rows[rows.length - 1].rid);
  }
}

async function shape(job: ExportJob, view: DeidView | undefined, stored: StoredResource[]): Promise<Resource[]> {
  let resources = stored.map((s) => s.content as Resource);
  if (view) resources = await view.deidentify(resources);
  const elements = job.request.elements;
  if (!elements) return resources;
  return resources.map((r) => {
    const names = [...(elements.get('*') ?? []), ...(elements.get(r.resourceType) ?? [])];
    return names.length > 0 ? applyElements(r, names) : r;
  });
}

/** The Patients a Group lists as current members. */
export function groupMembers(group: Group): string[] {
  const ids = new Set<string>();
  for (const m of group.member ?? []) {
    if (m.inactive) continue;
    const match = /^Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(m.entity?.reference ?? '');
    if (match) ids.add(match[1]);
  }
  return [...ids];
}

/** Two searches as one (their parameters ANDed). */
function mergeQueries(a: Record<string, string[]>, b: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const q of [a, b]) for (const [k, v] of Object.entries(q)) out[k] = [...(out[k] ?? []), ...v];
  return out;
}
