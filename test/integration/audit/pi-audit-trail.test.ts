/**
 * The audit trail is searchable by PIs for their projects (issue 5): each AuditEvent names the
 * projects its access was made within, and a PI reads and searches the accesses made within
 * its own projects only; anything else is as missing. Researchers and data managers read none.
 */
import request from 'supertest';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const PROJECT_SYSTEM = 'urn:imaging-lake:project';

interface Event {
  id: string;
  entity?: Array<{ what?: { reference?: string; identifier?: { system?: string; value?: string } } }>;
}
const projectsOf = (e: Event) => (e.entity ?? []).filter((x) => x.what?.identifier?.system === PROJECT_SYSTEM).map((x) => x.what?.identifier?.value);
const references = (e: Event) => (e.entity ?? []).map((x) => x.what?.reference).filter(Boolean);

describe('PIs read the audit trail of their projects', () => {
  let t: TestApp;
  const patients: Record<string, string> = {};

  beforeAll(async () => {
    t = await startTestApp();
    for (const p of ['pa', 'pb']) {
      const res = await request(t.http).post('/fhir/Patient').set({ 'Content-Type': 'application/fhir+json', 'X-Project': p }).send({ resourceType: 'Patient', name: [{ family: `Audit-${p}` }] });
      expect(res.status).toBe(201);
      patients[p] = res.body.id;
    }
    // One read within each project, one within both, one by the admin across all.
    for (const [projects, patient] of [[['pa'], patients.pa], [['pb'], patients.pb], [['pa', 'pb'], patients.pb]] as const) {
      const token = await t.token('researcher', [...projects]);
      expect((await request(t.http).get(`/fhir/Patient/${patient}`).set('Authorization', `Bearer ${token}`)).status).toBe(200);
    }
    expect((await request(t.http).get(`/fhir/Patient/${patients.pa}`)).status).toBe(200);
  });
  afterAll(async () => {
    await t?.close();
  });

  test('each AuditEvent names the projects its access was made within', async () => {
    const all = await request(t.http).get('/fhir/AuditEvent?_count=1000');
    expect(all.status).toBe(200);
    const events: Event[] = all.body.entry.map((e: { resource: Event }) => e.resource);
    const reads = events.filter((e) => references(e).includes(`Patient/${patients.pb}`));
    expect(reads.map(projectsOf).map((p) => [...p].sort())).toEqual(expect.arrayContaining([['pb'], ['pa', 'pb']]));
  });

  test('a PI sees the accesses made within its projects, and nothing else', async () => {
    const pi = await t.token('pi', ['pa']);
    const res = await request(t.http).get('/fhir/AuditEvent?_count=1000').set('Authorization', `Bearer ${pi}`);
    expect(res.status).toBe(200);
    const events: Event[] = res.body.entry.filter((e: { resource: { resourceType: string } }) => e.resource.resourceType === 'AuditEvent').map((e: { resource: Event }) => e.resource);
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) expect(projectsOf(e).every((p) => p === 'pa')).toBe(true);
    expect(events.some((e) => references(e).includes(`Patient/${patients.pa}`))).toBe(true);
    expect(JSON.stringify(events)).not.toContain(patients.pb);
    // Counts too: the project's Patient was created within the project (X-Project) and read
    // within it by its researcher; the admin's read named no project.
    const count = await request(t.http).get(`/fhir/AuditEvent?_summary=count&entity=Patient/${patients.pa}`).set('Authorization', `Bearer ${pi}`);
    expect(count.body.total).toBe(2);
    const admin = await request(t.http).get(`/fhir/AuditEvent?_summary=count&entity=Patient/${patients.pa}`);
    expect(admin.body.total).toBe(3);
  });

  test('an event outside its projects reads as missing', async () => {
    const all = await request(t.http).get('/fhir/AuditEvent?_count=1000');
    const outside = (all.body.entry as Array<{ resource: Event }>).map((e) => e.resource).find((e) => references(e).includes(`Patient/${patients.pb}`));
    expect(outside).toBeDefined();
    const pi = await t.token('pi', ['pa']);
    const read = await request(t.http).get(`/fhir/AuditEvent/${outside!.id}`).set('Authorization', `Bearer ${pi}`);
    expect(read.status).toBe(404);
    expect((await request(t.http).get(`/fhir/AuditEvent?_id=${outside!.id}`).set('Authorization', `Bearer ${pi}`)).body.entry ?? []).toEqual([]);
    const own = (all.body.entry as Array<{ resource: Event }>).map((e) => e.resource).find((e) => projectsOf(e).join() === 'pa');
    expect((await request(t.http).get(`/fhir/AuditEvent/${own!.id}`).set('Authorization', `Bearer ${pi}`)).status).toBe(200);
  });

  test("an event's projects cannot change, even by the early read's correction", async () => {
    const knex = t.app.db.knex;
    const row = await knex('audit_events').whereNotNull('projects').where('outcome', '0').orderBy('recorded', 'desc').first('id', 'projects');
    expect(row).toBeDefined();
    const correcting = (update: (trx: typeof knex) => Promise<unknown>) =>
      knex.transaction(async (trx) => {
        await trx.raw(`SELECT set_config('imaging_lake.audit_correction', ?, true)`, [row.id]);
        await update(trx);
      });
    // The correction may rewrite a recent read's event as long as what it must keep stays...
    await correcting((trx) => trx('audit_events').where({ id: row.id }).update({ projects: row.projects }));
    // ...and the projects are among what it must keep.
    await expect(correcting((trx) => trx('audit_events').where({ id: row.id }).update({ projects: ['elsewhere'] }))).rejects.toThrow(/projects of an event cannot change/);
    expect((await knex('audit_events').where({ id: row.id }).first('projects')).projects).toEqual(row.projects);
  });

  test('researchers and data managers read none of the trail', async () => {
    for (const role of ['researcher', 'data-manager'] as const) {
      const token = await t.token(role, ['pa']);
      const res = await request(t.http).get('/fhir/AuditEvent').set('Authorization', `Bearer ${token}`);
      expect(res.status).toBe(403);
    }
  });
});
