/**
 * Each project's de-identification options (PS3.15 Annex E, E.3 option columns of Table
 * E.1-1), stored in projects.deid_options; DEFAULT_DEID_OPTIONS where a project chose none.
 */
import type { Knex } from 'knex';
import { fhirError } from '../fhir/outcome';
import { objectBody } from '../http/json-body';
import { assertActorHolds, parseProjectId, type PrivacyActor } from './privacy-actor';
import { DEFAULT_DEID_OPTIONS, type DeidOptions } from './privacy-types';

type Db = Knex | Knex.Transaction;

const OPTION_NAMES = Object.keys(DEFAULT_DEID_OPTIONS) as Array<keyof DeidOptions>;

/** A project's options as the API shows them. */
export interface ProjectDeidOptions {
  project: string;
  /** False while the project uses the defaults. */
  selected: boolean;
  options: DeidOptions;
}

function merged(stored: unknown): DeidOptions {
  const out: DeidOptions = { ...DEFAULT_DEID_OPTIONS };
  if (stored && typeof stored === 'object') {
    for (const name of OPTION_NAMES) {
      const v = (stored as Record<string, unknown>)[name];
      if (typeof v === 'boolean') out[name] = v;
    }
  }
  return out;
}

/** Each project's options (defaults for projects without a choice, or unknown). */
export async function readProjectOptions(db: Db, projectIds: readonly string[]): Promise<Map<string, DeidOptions>> {
  const ids = [...new Set(projectIds)];
  const out = new Map<string, DeidOptions>(ids.map((id) => [id, { ...DEFAULT_DEID_OPTIONS }]));
  if (ids.length === 0) return out;
  const rows = await db('projects').whereIn('id', ids).whereNotNull('deid_options').select('id', 'deid_options');
  for (const r of rows) out.set(r.id, merged(typeof r.deid_options === 'string' ? JSON.parse(r.deid_options) : r.deid_options));
  return out;
}

/** Validates a PUT body: an object of the five boolean options (absent ones take their default). */
export function parseDeidOptions(body: unknown): DeidOptions {
  const b = objectBody(body, 'of de-identification options');
  const given = b.options !== undefined ? b.options : b;
  if (!given || typeof given !== 'object' || Array.isArray(given)) throw fhirError(400, 'invalid', 'options: a JSON object is required');
  const out: DeidOptions = { ...DEFAULT_DEID_OPTIONS };
  for (const [k, v] of Object.entries(given as Record<string, unknown>)) {
    if (k === 'project' || k === 'selected') continue;
    if (!(OPTION_NAMES as string[]).includes(k)) throw fhirError(400, 'invalid', `unknown option ${JSON.stringify(k).slice(0, 80)}: expected ${OPTION_NAMES.join(', ')}`);
    if (typeof v !== 'boolean') throw fhirError(400, 'invalid', `${k}: true or false expected`);
    out[k as keyof DeidOptions] = v;
  }
  return out;
}

async function projectRow(db: Db, project: string): Promise<{ deid_options: unknown } | undefined> {
  return db('projects').where('id', project).first('deid_options');
}

/** GET: the options of a project the actor holds (admin: any). */
export async function getProjectDeidOptions(db: Db, actor: PrivacyActor, projectParam: unknown): Promise<ProjectDeidOptions> {
  const project = parseProjectId(projectParam);
  assertActorHolds(actor, project);
  const row = await projectRow(db, project);
  if (!row) throw fhirError(404, 'not-found', `project ${project} not found`);
  return { project, selected: row.deid_options !== null && row.deid_options !== undefined, options: merged(row.deid_options) };
}

/** PUT: replaces the options of a project the actor holds (admin: any). */
export async function putProjectDeidOptions(db: Db, actor: PrivacyActor, projectParam: unknown, body: unknown): Promise<ProjectDeidOptions> {
  const project = parseProjectId(projectParam);
  assertActorHolds(actor, project);
  const options = parseDeidOptions(body);
  const updated = await db('projects').where('id', project).update({ deid_options: JSON.stringify(options) });
  if (!updated) throw fhirError(404, 'not-found', `project ${project} not found`);
  return { project, selected: true, options };
}
