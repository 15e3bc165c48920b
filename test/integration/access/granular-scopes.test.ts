/**
 * SMART 2.2 granular scopes narrow what a token sees (issue 5): `user/Condition.rs?code=...`
 * returns only matching Conditions from searches, reads, counts and includes; several granular
 * scopes on one type are a union; a type without a scope is not reached through `_include`; and
 * DICOMweb, governed as ImagingStudy, answers only the studies whose ImagingStudy a
 * `user/ImagingStudy.rs?modality=...` scope lets the token see.
 */
import request from 'supertest';
import { mintLocalToken } from '../../../src/auth/local-token';
import { createProject } from '../../../src/auth/project-store';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';

describe('granular SMART scopes narrow every row a request reads', () => {
  let t: TestApp;
  let patient: string;
  const conditions: Record<string, string> = {};
  const studies: Record<string, string> = {};

  const asToken = (token: string) => ({ Authorization: `Bearer ${token}` });
  const adminWith = (scope: string) => t.token('admin', [], scope);

  beforeAll(async () => {
    t = await startTestApp();
    const p = await request(t.http).post('/fhir/Patient').set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', name: [{ family: 'Scoped' }] });
    expect(p.status).toBe(201);
    patient = p.body.id;
    for (const code of ['H40.11', 'E11.9', 'H35.30']) {
      const c = await request(t.http)
        .post('/fhir/Condition')
        .set('Content-Type', 'application/fhir+json')
        .send({ resourceType: 'Condition', subject: { reference: `Patient/${patient}` }, code: { coding: [{ system: ICD10, code }] } });
      expect(c.status).toBe(201);
      conditions[code] = c.body.id;
    }
    for (const modality of ['CT', 'MR']) {
      const instance = createSyntheticInstance({ studyInstanceUID: newUid(), modality, patientID: `SCOPE-${modality}` });
      const body = buildMultipart([instance.bytes]);
      const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', body.contentType).send(body.body);
      expect(res.status).toBe(200);
      studies[modality] = instance.studyInstanceUID;
    }
    // The ImagingStudy of each stored study is written before a FHIR request can read it.
    const all = await request(t.http).get('/fhir/ImagingStudy?_count=100');
    expect(all.body.entry).toHaveLength(2);
  });
  afterAll(async () => {
    await t?.close();
  });

  const codesOf = (bundle: { entry?: Array<{ resource: { resourceType: string; code?: { coding?: Array<{ code: string }> } } }> }) =>
    (bundle.entry ?? [])
      .filter((e) => e.resource.resourceType === 'Condition')
      .map((e) => e.resource.code?.coding?.[0]?.code)
      .sort();

  test('a search returns only the Conditions the scope names', async () => {
    const token = await adminWith(`user/Condition.rs?code=${ICD10}|H40.11`);
    const res = await request(t.http).get('/fhir/Condition?_count=100').set(asToken(token));
    expect(res.status).toBe(200);
    expect(codesOf(res.body)).toEqual(['H40.11']);
    const count = await request(t.http).get('/fhir/Condition?_summary=count').set(asToken(token));
    expect(count.body.total).toBe(1);
  });

  test('two granular scopes on one type are a union', async () => {
    const token = await adminWith(`user/Condition.rs?code=${ICD10}|H40.11 user/Condition.rs?code=E11.9`);
    const res = await request(t.http).get('/fhir/Condition?_count=100').set(asToken(token));
    expect(codesOf(res.body)).toEqual(['E11.9', 'H40.11']);
  });

  test('an unrestricted scope on the type lifts the narrowing', async () => {
    const token = await adminWith(`user/Condition.rs?code=E11.9 user/Condition.rs`);
    const res = await request(t.http).get('/fhir/Condition?_count=100').set(asToken(token));
    expect(codesOf(res.body)).toEqual(['E11.9', 'H35.30', 'H40.11']);
  });

  test('a read of a Condition outside the scope is a 404, as for a missing id', async () => {
    const token = await adminWith(`user/Condition.rs?code=${ICD10}|H40.11`);
    const inside = await request(t.http).get(`/fhir/Condition/${conditions['H40.11']}`).set(asToken(token));
    expect(inside.status).toBe(200);
    const outside = await request(t.http).get(`/fhir/Condition/${conditions['E11.9']}`).set(asToken(token));
    expect(outside.status).toBe(404);
    expect(outside.body.resourceType).toBe('OperationOutcome');
  });

  test('_include does not reach a type the token has no scope for; with one, it does', async () => {
    const conditionOnly = await adminWith(`user/Condition.rs?code=${ICD10}|H40.11`);
    const res = await request(t.http).get('/fhir/Condition?_include=Condition:subject').set(asToken(conditionOnly));
    expect(res.status).toBe(200);
    expect(res.body.entry.map((e: { resource: { resourceType: string } }) => e.resource.resourceType)).toEqual(['Condition']);
    const withPatients = await adminWith(`user/Condition.rs?code=${ICD10}|H40.11 user/Patient.r`);
    const both = await request(t.http).get('/fhir/Condition?_include=Condition:subject').set(asToken(withPatients));
    expect(both.body.entry.map((e: { resource: { resourceType: string } }) => e.resource.resourceType).sort()).toEqual(['Condition', 'Patient']);
  });

  test('_revinclude brings only the Conditions the scope names', async () => {
    const token = await adminWith(`user/Patient.rs user/Condition.rs?code=E11.9`);
    const res = await request(t.http).get(`/fhir/Patient?_id=${patient}&_revinclude=Condition:subject`).set(asToken(token));
    expect(res.status).toBe(200);
    expect(codesOf(res.body)).toEqual(['E11.9']);
  });

  test('a scope with a parameter this server cannot evaluate grants nothing', async () => {
    const token = await adminWith('user/Condition.rs?no-such-parameter=1');
    const res = await request(t.http).get('/fhir/Condition?_count=100').set(asToken(token));
    expect(res.status).toBe(200);
    expect(res.body.entry ?? []).toEqual([]);
  });

  test('DICOMweb answers only the studies whose ImagingStudy the scope names', async () => {
    const token = await adminWith('user/ImagingStudy.rs?modality=CT');
    const qido = await request(t.http).get('/dicomweb/studies').set(asToken(token));
    expect(qido.status).toBe(200);
    const uids = (qido.body as Array<Record<string, { Value: string[] }>>).map((s) => s['0020000D'].Value[0]);
    expect(uids).toEqual([studies.CT]);
    const hidden = await request(t.http).get(`/dicomweb/studies/${studies.MR}/metadata`).set(asToken(token));
    expect(hidden.status).toBe(404);
    const shown = await request(t.http).get(`/dicomweb/studies/${studies.CT}/metadata`).set(asToken(token));
    expect(shown.status).toBe(200);
    const fhir = await request(t.http).get('/fhir/ImagingStudy').set(asToken(token));
    expect(fhir.body.entry).toHaveLength(1);
  });

  test('a study stored a moment ago is there at once for a token whose ImagingStudy scope matches it', async () => {
    const token = await adminWith('user/ImagingStudy.rs?modality=OPT');
    const instance = createSyntheticInstance({ studyInstanceUID: newUid(), modality: 'OPT', patientID: 'SCOPE-OPT' });
    const body = buildMultipart([instance.bytes]);
    expect((await request(t.http).post('/dicomweb/studies').set('Content-Type', body.contentType).send(body.body)).status).toBe(200);
    const qido = await request(t.http).get(`/dicomweb/studies?StudyInstanceUID=${instance.studyInstanceUID}`).set(asToken(token));
    expect(qido.status).toBe(200);
    expect((qido.body as Array<Record<string, { Value: string[] }>>).map((s) => s['0020000D'].Value[0])).toEqual([instance.studyInstanceUID]);
  });

  test('a DICOMweb store or delete is checked against granular ImagingStudy scopes (granular-dicomweb-write-scopes.test.ts has the rest)', async () => {
    const instance = createSyntheticInstance({ studyInstanceUID: newUid(), modality: 'CT', patientID: 'SCOPE-STORE' });
    const body = buildMultipart([instance.bytes]);
    const narrow = await adminWith('user/ImagingStudy.cd?modality=OPT user/ImagingStudy.rs');
    // The guard lets it through; the instance itself is refused (0124H, Refused: Not Authorized) and nothing is kept.
    const refused = await request(t.http).post('/dicomweb/studies').set(asToken(narrow)).set('Content-Type', body.contentType).send(body.body);
    expect(refused.status).toBe(409);
    expect(refused.body['00081198'].Value[0]['00081197'].Value).toEqual([0x0124]);
    expect(refused.headers.warning).toMatch(/the scopes granting c on ImagingStudy are limited by search parameters/);
    const none = await request(t.http).get(`/dicomweb/studies?StudyInstanceUID=${instance.studyInstanceUID}`);
    expect(none.status).toBe(200);
    expect(none.body).toEqual([]);
    const deleted = await request(t.http).delete(`/dicomweb/studies/${studies.CT}`).set(asToken(narrow));
    expect(deleted.status).toBe(403);
    expect(deleted.headers['www-authenticate']).toMatch(/insufficient_scope.*limited by search parameters/);
    expect((await request(t.http).get(`/dicomweb/studies/${studies.CT}/metadata`)).status).toBe(200);
    // An unrestricted scope stores (another instance of a study already there: the other tests count studies).
    const whole = await adminWith('user/ImagingStudy.crs');
    const more = buildMultipart([createSyntheticInstance({ studyInstanceUID: studies.CT, modality: 'CT', patientID: 'SCOPE-CT' }).bytes]);
    expect((await request(t.http).post('/dicomweb/studies').set(asToken(whole)).set('Content-Type', more.contentType).send(more.body)).status).toBe(200);
  });

  test("a token's facility narrows FHIR rows to its projects of that facility, as DICOMweb", async () => {
    const knex = t.app.db.knex;
    await createProject(knex, { id: 'fac-north', name: 'North', facility: 'north' });
    await createProject(knex, { id: 'fac-south', name: 'South', facility: 'south' });
    const ids: Record<string, string> = {};
    for (const project of ['fac-north', 'fac-south']) {
      const res = await request(t.http).post('/fhir/Patient').set({ 'Content-Type': 'application/fhir+json', 'X-Project': project }).send({ resourceType: 'Patient', name: [{ family: project }] });
      expect(res.status).toBe(201);
      ids[project] = res.body.id;
    }
    const { accessToken } = await mintLocalToken({ role: 'researcher', projects: ['fac-north', 'fac-south'], facility: 'north', ttlSeconds: 600 }, { config: t.config.auth });
    const north = await request(t.http).get(`/fhir/Patient/${ids['fac-north']}`).set(asToken(accessToken));
    expect(north.status).toBe(200);
    const south = await request(t.http).get(`/fhir/Patient/${ids['fac-south']}`).set(asToken(accessToken));
    expect(south.status).toBe(404);
  });

  test('the role default scopes (user/*) see everything', async () => {
    const token = await t.token('admin');
    const qido = await request(t.http).get('/dicomweb/studies').set(asToken(token));
    // The CT and MR studies, and the OPT one stored by the test above.
    expect(qido.body).toHaveLength(3);
    const res = await request(t.http).get('/fhir/Condition?_count=100').set(asToken(token));
    expect(codesOf(res.body)).toEqual(['E11.9', 'H35.30', 'H40.11']);
  });
});
