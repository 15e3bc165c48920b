/**
 * Projects and their members over /admin (issue 5: admins administer projects, data managers
 * manage theirs, PIs approve the members of their projects): who may do what, membership
 * waiting for a PI's approval, and only active members counting as members.
 */
import request from 'supertest';
import { projectsOfSubject } from '../../../src/auth/project-store';
import type { Role } from '../../../src/auth/roles';
import { startTestApp, type TestApp } from '../../helpers/test-app';

describe('project governance', () => {
  let t: TestApp;
  const tokens: Record<string, string> = {};
  const as = (name: string) => ({ Authorization: `Bearer ${tokens[name]}` });
  const mint = (subject: string, role: Role, projects: string[]) => t.tokenOf(subject, role, projects);

  beforeAll(async () => {
    t = await startTestApp();
    for (const id of ['gov-a', 'gov-b']) {
      const res = await request(t.http).post('/admin/projects').send({ id, name: `Project ${id}` });
      expect(res.status).toBe(201);
    }
    tokens.piA = await mint('pi-a@example.org', 'pi', ['gov-a']);
    tokens.piB = await mint('pi-b@example.org', 'pi', ['gov-b']);
    tokens.dmA = await mint('dm-a@example.org', 'data-manager', ['gov-a']);
    tokens.researcherA = await mint('res-a@example.org', 'researcher', ['gov-a']);
  });
  afterAll(async () => {
    await t?.close();
  });

  test('an admin creates a project; a taken id is 409 and a bad one 400, both OperationOutcomes', async () => {
    const res = await request(t.http).post('/admin/projects').send({ id: 'gov-new', name: 'New', facility: 'north' });
    expect(res.status).toBe(201);
    expect(res.headers.location).toBe('/admin/projects/gov-new');
    expect(res.body).toMatchObject({ id: 'gov-new', name: 'New', facility: 'north', members: 0, requested: 0, studies: 0 });
    const again = await request(t.http).post('/admin/projects').send({ id: 'gov-new', name: 'Again' });
    expect(again.status).toBe(409);
    expect(again.body.resourceType).toBe('OperationOutcome');
    const bad = await request(t.http).post('/admin/projects').send({ id: '../x', name: 'Bad' });
    expect(bad.status).toBe(400);
    expect(bad.body.issue[0].diagnostics).toMatch(/project id/);
    const byPi = await request(t.http).post('/admin/projects').set(as('piA')).send({ id: 'gov-pi', name: 'Mine' });
    expect(byPi.status).toBe(403);
    expect((await request(t.http).get('/admin/projects/gov-pi')).status).toBe(404);
  });

  test('a token narrowed to some FHIR types governs nothing (403 insufficient_scope), whatever its role', async () => {
    const narrow = await t.token('admin', [], 'user/Patient.rs');
    const res = await request(t.http).post('/admin/projects').set('Authorization', `Bearer ${narrow}`).send({ id: 'gov-narrow', name: 'Narrow' });
    expect(res.status).toBe(403);
    expect(res.headers['www-authenticate']).toMatch(/insufficient_scope/);
    expect(res.body.issue[0].diagnostics).toMatch(/unrestricted user\/\* or system\/\* scope/);
    expect((await request(t.http).get('/admin/projects/gov-narrow')).status).toBe(404);
  });

  test('members list their own projects only; another project is refused whether it exists or not', async () => {
    const list = await request(t.http).get('/admin/projects').set(as('researcherA'));
    expect(list.status).toBe(200);
    expect(list.body.projects.map((p: { id: string }) => p.id)).toEqual(['gov-a']);
    const own = await request(t.http).get('/admin/projects/gov-a').set(as('researcherA'));
    expect(own.status).toBe(200);
    expect(own.body.name).toBe('Project gov-a');
    const other = await request(t.http).get('/admin/projects/gov-b').set(as('researcherA'));
    const missing = await request(t.http).get('/admin/projects/gov-none').set(as('researcherA'));
    expect(other.status).toBe(403);
    expect(missing.status).toBe(403);
    expect(other.body.issue[0].diagnostics.replace('gov-b', 'X')).toBe(missing.body.issue[0].diagnostics.replace('gov-none', 'X'));
    const all = await request(t.http).get('/admin/projects');
    expect(all.body.projects.map((p: { id: string }) => p.id)).toEqual(expect.arrayContaining(['gov-a', 'gov-b']));
  });

  test('a data manager renames its project but cannot move it to another facility', async () => {
    const renamed = await request(t.http).patch('/admin/projects/gov-a').set(as('dmA')).send({ name: 'Glaucoma cohort' });
    expect(renamed.status).toBe(200);
    expect(renamed.body.name).toBe('Glaucoma cohort');
    const moved = await request(t.http).patch('/admin/projects/gov-a').set(as('dmA')).send({ facility: 'south' });
    expect(moved.status).toBe(403);
    expect(moved.body.issue[0].code).toBe('forbidden');
    expect((await request(t.http).get('/admin/projects/gov-a')).body.facility).toBeUndefined();
    const byResearcher = await request(t.http).patch('/admin/projects/gov-a').set(as('researcherA')).send({ name: 'Mine now' });
    expect(byResearcher.status).toBe(403);
    const otherProject = await request(t.http).patch('/admin/projects/gov-b').set(as('dmA')).send({ name: 'Taken' });
    expect(otherProject.status).toBe(403);
    expect((await request(t.http).get('/admin/projects/gov-b')).body.name).toBe('Project gov-b');
  });

  test('a member a data manager proposes counts only once a PI of the project approves it', async () => {
    const proposed = await request(t.http).put('/admin/projects/gov-a/members/new-1@example.org').set(as('dmA')).send({ role: 'researcher' });
    expect(proposed.status).toBe(201);
    expect(proposed.body).toMatchObject({ project: 'gov-a', subject: 'new-1@example.org', role: 'researcher', status: 'requested', requestedBy: 'dm-a@example.org' });
    expect(await projectsOfSubject(t.app.db.knex, 'new-1@example.org')).toEqual([]);
    const waiting = await request(t.http).get('/admin/projects/gov-a/members?status=requested').set(as('piA'));
    expect(waiting.body.members.map((m: { subject: string }) => m.subject)).toEqual(['new-1@example.org']);

    // A PI of another project cannot approve it; the request stays as it was.
    const foreign = await request(t.http).post('/admin/projects/gov-a/members/new-1@example.org/approve').set(as('piB'));
    expect(foreign.status).toBe(403);
    expect((await request(t.http).get('/admin/projects/gov-a/members/new-1@example.org')).body.status).toBe('requested');
    // Nor can the data manager who proposed it.
    expect((await request(t.http).post('/admin/projects/gov-a/members/new-1@example.org/approve').set(as('dmA'))).status).toBe(403);

    const approved = await request(t.http).post('/admin/projects/gov-a/members/new-1@example.org/approve').set(as('piA'));
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'active', decidedBy: 'pi-a@example.org', requestedBy: 'dm-a@example.org' });
    expect(await projectsOfSubject(t.app.db.knex, 'new-1@example.org')).toEqual(['gov-a']);
    const twice = await request(t.http).post('/admin/projects/gov-a/members/new-1@example.org/approve').set(as('piA'));
    expect(twice.status).toBe(409);
  });

  test('a PI refuses a proposed member: the request is gone', async () => {
    expect((await request(t.http).put('/admin/projects/gov-a/members/new-2@example.org').set(as('dmA')).send({ role: 'pi' })).status).toBe(201);
    const refused = await request(t.http).post('/admin/projects/gov-a/members/new-2@example.org/refuse').set(as('piA'));
    expect(refused.status).toBe(204);
    expect((await request(t.http).get('/admin/projects/gov-a/members/new-2@example.org')).status).toBe(404);
    expect(await projectsOfSubject(t.app.db.knex, 'new-2@example.org')).toEqual([]);
  });

  test('a PI adds members at once, but only an admin grants or removes the admin role', async () => {
    const added = await request(t.http).put('/admin/projects/gov-a/members/new-3@example.org').set(as('piA')).send({ role: 'data-manager' });
    expect(added.status).toBe(201);
    expect(added.body.status).toBe('active');
    const changed = await request(t.http).put('/admin/projects/gov-a/members/new-3@example.org').set(as('piA')).send({ role: 'researcher' });
    expect(changed.status).toBe(200);
    expect(changed.body.role).toBe('researcher');
    const grant = await request(t.http).put('/admin/projects/gov-a/members/boss@example.org').set(as('piA')).send({ role: 'admin' });
    expect(grant.status).toBe(403);
    expect(grant.body.issue[0].diagnostics).toMatch(/only an admin/);
    expect((await request(t.http).put('/admin/projects/gov-a/members/boss@example.org').send({ role: 'admin' })).status).toBe(201);
    expect((await request(t.http).delete('/admin/projects/gov-a/members/boss@example.org').set(as('piA'))).status).toBe(403);
    expect((await request(t.http).get('/admin/projects/gov-a/members/boss@example.org')).body.role).toBe('admin');
    const badRole = await request(t.http).put('/admin/projects/gov-a/members/x@example.org').set(as('piA')).send({ role: 'owner' });
    expect(badRole.status).toBe(400);
  });

  test('a data manager cannot change an active member, nor remove one; a PI removes it', async () => {
    expect((await request(t.http).put('/admin/projects/gov-a/members/new-4@example.org').set(as('piA')).send({ role: 'researcher' })).status).toBe(201);
    const change = await request(t.http).put('/admin/projects/gov-a/members/new-4@example.org').set(as('dmA')).send({ role: 'pi' });
    expect(change.status).toBe(409);
    expect((await request(t.http).get('/admin/projects/gov-a/members/new-4@example.org')).body).toMatchObject({ role: 'researcher', status: 'active' });
    expect((await request(t.http).delete('/admin/projects/gov-a/members/new-4@example.org').set(as('dmA'))).status).toBe(403);
    expect((await request(t.http).delete('/admin/projects/gov-a/members/new-4@example.org').set(as('piA'))).status).toBe(204);
    expect(await projectsOfSubject(t.app.db.knex, 'new-4@example.org')).toEqual([]);
  });

  test('researchers do not read member lists', async () => {
    const res = await request(t.http).get('/admin/projects/gov-a/members').set(as('researcherA'));
    expect(res.status).toBe(403);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(res.body)).not.toContain('@example.org');
  });

  test('only an empty project is deleted', async () => {
    expect((await request(t.http).post('/admin/projects').send({ id: 'gov-doomed', name: 'Doomed' })).status).toBe(201);
    expect((await request(t.http).post('/admin/projects').send({ id: 'gov-full', name: 'Full' })).status).toBe(201);
    const patient = await request(t.http).post('/fhir/Patient').set({ 'Content-Type': 'application/fhir+json', 'X-Project': 'gov-full' }).send({ resourceType: 'Patient' });
    expect(patient.status).toBe(201);
    expect((await request(t.http).delete('/admin/projects/gov-doomed').set(as('piA'))).status).toBe(403);
    expect((await request(t.http).delete('/admin/projects/gov-doomed')).status).toBe(204);
    expect((await request(t.http).get('/admin/projects/gov-doomed')).status).toBe(404);
    const full = await request(t.http).delete('/admin/projects/gov-full');
    expect(full.status).toBe(409);
    expect(full.body.issue[0].diagnostics).toMatch(/1 resources/);
  });

  test('every governance request is audited, refusals included', async () => {
    const before = await request(t.http).get('/fhir/AuditEvent?_count=1000');
    const count = (body: { entry?: unknown[] }) => (body.entry ?? []).length;
    expect((await request(t.http).post('/admin/projects/gov-a/members/ghost@example.org/approve').set(as('researcherA'))).status).toBe(403);
    expect((await request(t.http).get('/admin/projects').set(as('piA'))).status).toBe(200);
    const after = await request(t.http).get('/fhir/AuditEvent?_count=1000');
    expect(count(after.body)).toBeGreaterThanOrEqual(count(before.body) + 2);
    const denial = JSON.stringify(after.body).includes('ProjectMember');
    expect(denial).toBe(true);
  });
});
