/**
 * Projects and their links: members, studies (many to many, files stored once) and FHIR
 * resources. The ingest and FHIR code call the link functions inside their own transaction.
 */
import type { Knex } from 'knex';
import { isRole, type Role } from './roles';

/** A project row. */
export interface Project {
  id: string;
  name: string;
  facility?: string;
}

/** A project id: 1-64 of letters, digits and ._- */
export const PROJECT_ID_RE = /^[\w.-]{1,64}$/;

/** Creates a project (idempotent: an existing id is left as it is). */
export async function createProject(knex: Knex, project: Project): Promise<void> {
  if (!PROJECT_ID_RE.test(project.id)) throw new Error('project id: 1-64 of letters, digits and ._-');
  await knex('projects')
    .insert({ id: project.id, name: project.name, facility: project.facility ?? null })
    .onConflict('id')
    .ignore();
}

/** Adds (or changes the role of) an active project member (the operator's CLI). */
export async function addProjectMember(knex: Knex, projectId: string, subject: string, role: Role): Promise<void> {
  if (!isRole(role)) throw new Error(`not a role: ${String(role)}`);
  await knex('project_members').insert({ project_id: projectId, subject, role, status: 'active' }).onConflict(['project_id', 'subject']).merge({ role, status: 'active' });
}

/** The projects a subject is an active member of (for sign-ins whose IdP does not send projects); proposed members not yet approved are not. */
export async function projectsOfSubject(knex: Knex, subject: string): Promise<string[]> {
  return (await knex('project_members').where({ subject, status: 'active' }).orderBy('project_id').select('project_id')).map((r: { project_id: string }) => r.project_id);
}

/** Links a study to projects (call it in the ingest transaction). */
export async function linkStudyToProjects(knex: Knex, studyPk: number | string, projectIds: readonly string[]): Promise<void> {
  if (projectIds.length === 0) return;
  await knex('project_studies')
    .insert([...new Set(projectIds)].map((project_id) => ({ project_id, study_pk: studyPk })))
    .onConflict(['project_id', 'study_pk'])
    .ignore();
}

/** Links a FHIR resource to projects (call it in the write's transaction). */
export async function linkResourceToProjects(knex: Knex, resourceType: string, resourceId: string, projectIds: readonly string[]): Promise<void> {
  if (projectIds.length === 0) return;
  await knex('project_resources')
    .insert([...new Set(projectIds)].map((project_id) => ({ project_id, resource_type: resourceType, resource_id: resourceId })))
    .onConflict(['project_id', 'resource_type', 'resource_id'])
    .ignore();
}
