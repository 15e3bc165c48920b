import type { Knex } from 'knex';
import type { Actor } from '../auth/actor';
import { isRole, type Role } from '../auth/roles';
import { parseProjectId } from '../privacy/privacy-actor';
import { fhirError, notFound } from '../fhir/outcome';
import { objectBody, requiredText } from '../http/json-body';

/**
 * Projects and their members, administered over HTTP (src/admin/admin-routes.ts):
 *
 * - admins create, rename, move (facility) and delete projects; data managers rename the
 *   projects they manage; every member reads its projects;
 * - membership is approved: a member a data manager proposes is `requested` until a principal
 *   investigator of the project (or an admin) approves it; a PI or an admin adding a member
 *   approves it at once. Only PIs and admins remove members; only admins grant the admin role.
 *   Only `active` members count (sign-ins take their projects from them, project-store.ts).
 *
 * The access guard has already checked the role and that the path's project is one of the
 * caller's; these functions check what depends on the rows (existence, status, roles).
 */

/** Who administers: the caller as the access guard decided it. */
export type Administrator = Actor;

/** A project as the API shows it. */
export interface ProjectView {
  id: string;
  name: string;
  facility?: string;
  createdAt: string;
  /** Active members. */
  members: number;
  /** Members proposed and not yet approved. */
  requested: number;
  studies: number;
}

/** A member as the API shows it. */
export interface MemberView {
  project: string;
  subject: string;
  role: Role;
  status: 'active' | 'requested';
  requestedBy?: string;
  decidedBy?: string;
  decidedAt?: string;
  createdAt: string;
}

const SUBJECT_MAX = 256;

interface ProjectRow {
  id: string;
  name: string;
  facility: string | null;
  created_at: Date | string;
  members: string | number;
  requested: string | number;
  studies: string | number;
}

interface MemberRow {
  project_id: string;
  subject: string;
  role: Role;
  status: 'active' | 'requested';
  requested_by: string | null;
  decided_by: string | null;
  decided_at: Date | string | null;
  created_at: Date | string;
}

function projectQuery(knex: Knex): Knex.QueryBuilder {
  return knex('projects as p').select(
    'p.id',
    'p.name',
    'p.facility',
    'p.created_at',
    knex.raw(`(SELECT count(*) FROM project_members m WHERE m.project_id = p.id AND m.status = 'active') AS members`),
    knex.raw(`(SELECT count(*) FROM project_members m WHERE m.project_id = p.id AND m.status = 'requested') AS requested`),
    knex.raw('(SELECT count(*) FROM project_studies s WHERE s.project_id = p.id) AS studies'),
  );
}

/** The projects the caller holds (an admin: all), by id. */
export async function listProjects(knex: Knex, actor: Administrator): Promise<ProjectView[]> {
  const q = projectQuery(knex).orderBy('p.id');
  if (actor.projects !== 'all') q.whereIn('p.id', [...actor.projects]);
  return ((await q) as ProjectRow[]).map(projectView);
}

/** One project; 404 when there is none (the guard already refused projects of others). */
export async function getProject(knex: Knex, id: string): Promise<ProjectView> {
  const row = (await projectQuery(knex).where('p.id', id).first()) as ProjectRow | undefined;
  if (!row) throw notFound(`No project ${id}`);
  return projectView(row);
}

/** Creates a project from `{id, name, facility?}` (admin); 409 when the id is taken. */
export async function createProjectFrom(knex: Knex, body: unknown): Promise<ProjectView> {
  const b = objectBody(body, '{id, name, facility?}');
  const id = parseProjectId(b.id, 'id');
  const name = requiredText(b.name, 'name', 200);
  const facility = b.facility === undefined ? undefined : requiredText(b.facility, 'facility', 200);
  const inserted = await knex('projects')
    .insert({ id, name, facility: facility ?? null })
    .onConflict('id')
    .ignore()
    .returning('id');
  if (inserted.length === 0) throw fhirError(409, 'duplicate', `Project ${id} exists already`);
  return getProject(knex, id);
}

/** Renames a project, or (admin only) moves it to another facility: `{name?, facility?}`. */
export async function updateProject(knex: Knex, actor: Administrator, id: string, body: unknown): Promise<ProjectView> {
  const b = objectBody(body, '{name?, facility?}');
  const change: Record<string, unknown> = {};
  if (b.name !== undefined) change.name = requiredText(b.name, 'name', 200);
  if (b.facility !== undefined) {
    // The facility narrows who sees the project's rows: moving it is the admin's.
    if (actor.role !== 'admin') throw fhirError(403, 'forbidden', 'access denied: only an admin changes the facility of a project');
    change.facility = b.facility === null ? null : requiredText(b.facility, 'facility', 200);
  }
  if (Object.keys(change).length === 0) throw fhirError(400, 'invalid', 'nothing to change: send name or facility');
  const updated = await knex('projects').where({ id }).update(change);
  if (updated === 0) throw notFound(`No project ${id}`);
  return getProject(knex, id);
}

/**
 * Deletes an empty project (admin). A project that still holds studies or resources is kept
 * (409): removing it would silently take them away from every member; unlink them first.
 */
export async function deleteProject(knex: Knex, id: string): Promise<void> {
  await knex.transaction(async (trx) => {
    const row = await trx('projects').where({ id }).forUpdate().first('id');
    if (!row) throw notFound(`No project ${id}`);
    const [{ studies }] = await trx('project_studies').where({ project_id: id }).count({ studies: '*' });
    const [{ resources }] = await trx('project_resources').where({ project_id: id }).count({ resources: '*' });
    if (Number(studies) > 0 || Number(resources) > 0) {
      throw fhirError(409, 'conflict', `Project ${id} still holds ${Number(studies)} studies and ${Number(resources)} resources: only an empty project is deleted`);
    }
    await trx('projects').where({ id }).delete();
  });
}

/** The members of a project, `status` narrowing them (active or requested). */
export async function listMembers(knex: Knex, project: string, status?: unknown): Promise<MemberView[]> {
  if (status !== undefined && status !== 'active' && status !== 'requested') throw fhirError(400, 'invalid', 'status: active or requested');
  await getProjectRow(knex, project);
  const q = knex('project_members').where({ project_id: project }).orderBy('subject');
  if (status) q.where({ status });
  return ((await q.select('*')) as MemberRow[]).map(memberView);
}

/** One member (active or requested). */
export async function getMember(knex: Knex, project: string, subject: string): Promise<MemberView> {
  const row = (await knex('project_members').where({ project_id: project, subject }).first()) as MemberRow | undefined;
  if (!row) throw notFound(`No member ${subject} of project ${project}`);
  return memberView(row);
}

/**
 * Adds a member, or changes its role: `{role}`. A PI or an admin makes it active at once; a data
 * manager proposes it (`requested`, for a PI to approve) and cannot change an active member.
 * Only an admin grants or takes the admin role. Resolves with the member and whether it is new.
 */
export async function putMember(knex: Knex, actor: Administrator, project: string, subject: string, body: unknown): Promise<{ member: MemberView; created: boolean }> {
  checkSubject(subject);
  const b = objectBody(body, '{role}');
  if (!isRole(b.role)) throw fhirError(400, 'invalid', 'role: admin, data-manager, pi or researcher');
  const role = b.role;
  return knex.transaction(async (trx) => {
    await getProjectRow(trx, project);
    const existing = (await trx('project_members').where({ project_id: project, subject }).forUpdate().first()) as MemberRow | undefined;
    if (actor.role !== 'admin' && (role === 'admin' || existing?.role === 'admin')) {
      throw fhirError(403, 'forbidden', 'access denied: only an admin grants or changes the admin role');
    }
    const decides = actor.role === 'admin' || actor.role === 'pi';
    if (!decides && existing?.status === 'active') {
      throw fhirError(409, 'conflict', `${subject} is already an active member of project ${project}: a principal investigator or an admin changes its role`);
    }
    const row = decides
      ? { role, status: 'active', decided_by: actor.subject, decided_at: trx.fn.now(), requested_by: existing?.requested_by ?? actor.subject }
      : { role, status: 'requested', decided_by: null, decided_at: null, requested_by: actor.subject };
    const [saved] = (await trx('project_members')
      .insert({ project_id: project, subject, ...row })
      .onConflict(['project_id', 'subject'])
      .merge(row)
      .returning('*')) as MemberRow[];
    return { member: memberView(saved), created: !existing };
  });
}

/** Approves a requested member (PI of the project or admin); 409 unless it is requested. */
export async function approveMember(knex: Knex, actor: Administrator, project: string, subject: string): Promise<MemberView> {
  return knex.transaction(async (trx) => {
    const existing = await requestedMember(trx, project, subject);
    if (existing.role === 'admin' && actor.role !== 'admin') throw fhirError(403, 'forbidden', 'access denied: only an admin grants the admin role');
    const [saved] = (await trx('project_members')
      .where({ project_id: project, subject })
      .update({ status: 'active', decided_by: actor.subject, decided_at: trx.fn.now() })
      .returning('*')) as MemberRow[];
    return memberView(saved);
  });
}

/** Refuses a requested member: the request is removed. 409 unless it is requested. */
export async function refuseMember(knex: Knex, project: string, subject: string): Promise<void> {
  await knex.transaction(async (trx) => {
    await requestedMember(trx, project, subject);
    await trx('project_members').where({ project_id: project, subject, status: 'requested' }).delete();
  });
}

/** Removes a member (PI of the project or admin); only an admin removes an admin. */
export async function removeMember(knex: Knex, actor: Administrator, project: string, subject: string): Promise<void> {
  await knex.transaction(async (trx) => {
    const existing = (await trx('project_members').where({ project_id: project, subject }).forUpdate().first()) as MemberRow | undefined;
    if (!existing) throw notFound(`No member ${subject} of project ${project}`);
    if (existing.role === 'admin' && actor.role !== 'admin') throw fhirError(403, 'forbidden', 'access denied: only an admin removes an admin');
    await trx('project_members').where({ project_id: project, subject }).delete();
  });
}

async function requestedMember(trx: Knex, project: string, subject: string): Promise<MemberRow> {
  const existing = (await trx('project_members').where({ project_id: project, subject }).forUpdate().first()) as MemberRow | undefined;
  if (!existing) throw notFound(`No member ${subject} of project ${project}`);
  if (existing.status !== 'requested') throw fhirError(409, 'conflict', `${subject} is already an active member of project ${project}`);
  return existing;
}

async function getProjectRow(knex: Knex, id: string): Promise<void> {
  if (!(await knex('projects').where({ id }).first('id'))) throw notFound(`No project ${id}`);
}

function checkSubject(subject: string): void {
  if (subject.length === 0 || subject.length > SUBJECT_MAX || /[\u0000-\u001f]/.test(subject)) {
    throw fhirError(400, 'invalid', `subject: 1-${SUBJECT_MAX} printable characters`);
  }
}

function projectView(row: ProjectRow): ProjectView {
  const view: ProjectView = {
    id: row.id,
    name: row.name,
    createdAt: new Date(row.created_at).toISOString(),
    members: Number(row.members),
    requested: Number(row.requested),
    studies: Number(row.studies),
  };
  if (row.facility) view.facility = row.facility;
  return view;
}

function memberView(row: MemberRow): MemberView {
  const view: MemberView = { project: row.project_id, subject: row.subject, role: row.role, status: row.status, createdAt: new Date(row.created_at).toISOString() };
  if (row.requested_by) view.requestedBy = row.requested_by;
  if (row.decided_by) view.decidedBy = row.decided_by;
  if (row.decided_at) view.decidedAt = new Date(row.decided_at).toISOString();
  return view;
}
