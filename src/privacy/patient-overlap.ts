/**
 * Cross-project overlap counted by PatientKey: how many patients several projects share, as a
 * number only, without any identifier leaving the server (the reason keys are recognised by a
 * keyed HMAC of issuer and MRN in the first place).
 */
import type { Knex } from 'knex';
import { fhirError } from '../fhir/outcome';
import { assignDicomPatientKeys, assignFhirPatientKeys, type PatientKeyOptions } from './patient-keys';
import { assertActorHolds, parseProjectId, type PrivacyActor } from './privacy-actor';

/** The answer: the projects asked about and how many PatientKeys all of them hold. */
export interface PatientOverlap {
  projects: string[];
  sharedPatients: number;
}

/** Parses `A,B[,C...]`: 2 to 20 distinct project ids. */
export function parseOverlapProjects(value: unknown): string[] {
  const raw = (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === 'string').flatMap((v) => v.split(','));
  const projects = [...new Set(raw.map((p) => p.trim()).filter(Boolean))];
  if (projects.length < 2 || projects.length > 20) throw fhirError(400, 'invalid', 'projects: 2 to 20 comma-separated project ids are required');
  return projects.map((p) => parseProjectId(p, 'projects'));
}

/** Gives keys to the projects' patients seen before keys existed (DICOM index and FHIR). */
async function assignMissingKeys(knex: Knex, options: PatientKeyOptions, projects: string[]): Promise<void> {
  const dicom = (await knex('project_studies as ps')
    .join('studies as st', 'st.id', 'ps.study_pk')
    .join('patients as p', 'p.id', 'st.patient_pk')
    .whereIn('ps.project_id', projects)
    .whereNull('p.patient_key_id')
    .distinct('p.id')
    .pluck('p.id')) as Array<string | number>;
  if (dicom.length > 0) await assignDicomPatientKeys(knex, options, dicom.map(Number));
  const fhir = (await knex('project_resources as pr')
    .where('pr.resource_type', 'Patient')
    .whereIn('pr.project_id', projects)
    .whereNotExists(function keyed(this: Knex.QueryBuilder) {
      this.select(knex.raw('1')).from('fhir_patient_keys as f').whereRaw('f.resource_id = pr.resource_id');
    })
    .distinct('pr.resource_id')
    .pluck('pr.resource_id')) as string[];
  if (fhir.length > 0) await assignFhirPatientKeys(knex, options, fhir);
}

/** How many PatientKeys every one of `projects` holds (admin, or a member of all of them). */
export async function countPatientOverlap(knex: Knex, options: PatientKeyOptions, actor: { projects: readonly string[] | 'all' }, projectsParam: unknown): Promise<PatientOverlap> {
  const projects = parseOverlapProjects(projectsParam);
  for (const p of projects) assertActorHolds({ subject: '', role: 'pi', projects: actor.projects }, p);
  await assignMissingKeys(knex, options, projects);
  const result = await knex.raw(
    `WITH held AS (
       SELECT ps.project_id, p.patient_key_id FROM project_studies ps
         JOIN studies st ON st.id = ps.study_pk JOIN patients p ON p.id = st.patient_pk
        WHERE ps.project_id = ANY(?::text[]) AND p.patient_key_id IS NOT NULL
       UNION
       SELECT pr.project_id, f.patient_key_id FROM project_resources pr
         JOIN fhir_patient_keys f ON f.resource_id = pr.resource_id
        WHERE pr.resource_type = 'Patient' AND pr.project_id = ANY(?::text[]))
     SELECT count(*)::int AS n FROM (SELECT patient_key_id FROM held GROUP BY patient_key_id HAVING count(DISTINCT project_id) = ?) shared`,
    [projects, projects, projects.length],
  );
  return { projects, sharedPatients: Number(result.rows[0].n) };
}
