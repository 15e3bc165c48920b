/**
 * Which projects hold a stored study, changed over /admin (issue 5: a study belongs to one or
 * more projects, files stored once; data managers manage the projects they manage): a data
 * manager adds a study it sees to another of its projects, whose members then find it over
 * DICOMweb and FHIR; taking it out hides it again. A study the caller cannot see is as missing.
 */
import request from 'supertest';
import type { Role } from '../../../src/auth/roles';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { storeStudy, syntheticInstance } from '../access/access-fixtures';

describe('project studies', () => {
  let t: TestApp;
  const tokens: Record<string, string> = {};
  const as = (name: string) => ({ Authorization: `Bearer ${tokens[name]}` });
  const mint = (subject: string, role: Role, projects: string[]) => t.tokenOf(subject, role, projects);
  let study: string;
  let patientId: string;

  /** The studies a token finds over QIDO-RS, and the ImagingStudy and Patient resources over FHIR. */
  const seenBy = async (name: string) => {
    const qido = await request(t.http).get('/dicomweb/studies').set(as(name));
    expect([200, 204]).toContain(qido.status);
    const studies = qido.status === 204 ? [] : (qido.body as Array<Record<string, { Value?: unknown[] }>>);
    const imaging = await request(t.http).get('/fhir/ImagingStudy').set(as(name));
    const patients = await request(t.http).get('/fhir/Patient').set(as(name));
    return { studies: studies.length, imagingStudies: imaging.body.total ?? imaging.body.entry?.length ?? 0, patients: (patients.body.entry ?? []).length };
  };

  beforeAll(async () => {
    t = await startTestApp();
    for (const id of ['ps-a', 'ps-b', 'ps-c']) expect((await request(t.http).post('/admin/projects').send({ id, name: id })).status).toBe(201);
    tokens.dmAC = await mint('dm-ac@example.org', 'data-manager', ['ps-a', 'ps-c']);
    tokens.dmB = await mint('dm-b@example.org', 'data-manager', ['ps-b']);
    tokens.researcherC = await mint('res-c@example.org', 'researcher', ['ps-c']);
    tokens.dmC = await mint('dm-c@example.org', 'data-manager', ['ps-c']);
    const instance = syntheticInstance({ patientID: 'PS-PATIENT-1' });
    study = (await storeStudy(t, t.adminToken, 'ps-a', instance)).study;
    const patient = await request(t.http).get('/fhir/Patient?identifier=PS-PATIENT-1').set('X-Project', 'ps-a');
    patientId = patient.body.entry[0].resource.id;
  });
  afterAll(async () => {
    await t?.close();
  });

  test('a data manager adds a study it sees to another of its projects: that project\'s members find it', async () => {
    expect(await seenBy('researcherC')).toEqual({ studies: 0, imagingStudies: 0, patients: 0 });
    const linked = await request(t.http).put(`/admin/projects/ps-c/studies/${study}`).set(as('dmAC'));
    expect(linked.status).toBe(201);
    expect(linked.body).toEqual({ project: 'ps-c', study });
    expect(await seenBy('researcherC')).toEqual({ studies: 1, imagingStudies: 1, patients: 1 });
    // The researcher sees it de-identified: the study is found by its project's pseudonymous UID.
    const qido = await request(t.http).get('/dicomweb/studies').set(as('researcherC'));
    const uid = qido.body[0]['0020000D'].Value[0];
    expect(uid).not.toBe(study);
    expect((await request(t.http).get(`/dicomweb/studies/${uid}/metadata`).set(as('researcherC'))).status).toBe(200);
    const again = await request(t.http).put(`/admin/projects/ps-c/studies/${study}`).set(as('dmAC'));
    expect(again.status).toBe(200);
    expect((await request(t.http).get('/admin/projects/ps-c')).body.studies).toBe(1);
  });

  test('a study the data manager cannot see is as missing, and a project it does not hold is refused', async () => {
    const unseen = await request(t.http).put(`/admin/projects/ps-b/studies/${study}`).set(as('dmB'));
    const missing = await request(t.http).put('/admin/projects/ps-b/studies/1.2.3.999999').set(as('dmB'));
    expect(unseen.status).toBe(404);
    expect(missing.status).toBe(404);
    expect(unseen.body.issue[0].diagnostics.replace(study, 'X')).toBe(missing.body.issue[0].diagnostics.replace('1.2.3.999999', 'X'));
    expect((await request(t.http).get('/admin/projects/ps-b')).body.studies).toBe(0);
    const foreignProject = await request(t.http).put(`/admin/projects/ps-b/studies/${study}`).set(as('dmAC'));
    expect(foreignProject.status).toBe(403);
    expect((await request(t.http).put(`/admin/projects/ps-c/studies/${study}`).set(as('researcherC'))).status).toBe(403);
    const bad = await request(t.http).put('/admin/projects/ps-c/studies/not..a.uid').set(as('dmAC'));
    expect(bad.status).toBe(400);
    expect(bad.body.resourceType).toBe('OperationOutcome');
  });

  test('taking a study out of a project hides it, its ImagingStudy and (no other study left) its Patient there', async () => {
    expect((await request(t.http).put(`/admin/projects/ps-c/studies/${study}`).set(as('dmAC'))).status).toBe(200);
    const removed = await request(t.http).delete(`/admin/projects/ps-c/studies/${study}`).set(as('dmC'));
    expect(removed.status).toBe(204);
    expect(await seenBy('researcherC')).toEqual({ studies: 0, imagingStudies: 0, patients: 0 });
    expect((await request(t.http).get(`/fhir/Patient/${patientId}`).set(as('researcherC'))).status).toBe(404);
    // The other project keeps it, files included.
    const a = await request(t.http).get(`/dicomweb/studies/${study}/metadata`).set('X-Project', 'ps-a');
    expect(a.status).toBe(200);
    expect((await request(t.http).delete(`/admin/projects/ps-c/studies/${study}`).set(as('dmC'))).status).toBe(404);
  });
});
