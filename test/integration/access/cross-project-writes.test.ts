/**
 * Writes that must not cross from one project into another: storing under another project's
 * Study or SOP Instance UID, reusing its patient id, updating its FHIR resources directly or
 * inside a Bundle, and Bundle entries the role may not perform on their own.
 */
import { randomUUID } from 'node:crypto';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { createResource, resourceOf, seedProjects, send, stowBody, syntheticInstance, type ProjectData } from './access-fixtures';

const FHIR = 'application/fhir+json';
/** FailureReason 0124H, Refused: Not Authorized (PS3.7 C.4.2). */
const NOT_AUTHORIZED = 0x0124;

describe('writes stay inside the caller\'s projects', () => {
  let t: TestApp;
  let A: ProjectData;
  let B: ProjectData;
  let dmA: string;
  beforeAll(async () => {
    t = await startTestApp();
    ({ A, B } = await seedProjects(t));
    dmA = await t.token('data-manager', [A.id]);
  });
  afterAll(async () => {
    await t?.close();
  });

  const stow = (token: string, bytes: Buffer, path = '/dicomweb/studies') => {
    const { body, contentType } = stowBody(bytes);
    return send(t, { method: 'POST', path, body, contentType, headers: { Accept: 'application/dicom+json' } }, token);
  };
  const studyLinks = (uid: string) => t.app.db.knex('project_studies as ps').join('studies as st', 'st.id', 'ps.study_pk').where('st.study_uid', uid).orderBy('ps.project_id').pluck('ps.project_id');
  const failureReasons = (text: string): number[] => (JSON.parse(text)['00081198']?.Value ?? []).map((f: Record<string, { Value: number[] }>) => f['00081197'].Value[0]);
  const qidoAs = async (token: string, uid: string) => JSON.parse((await send(t, { method: 'GET', path: `/dicomweb/studies?StudyInstanceUID=${uid}`, headers: { Accept: 'application/dicom+json' } }, token)).text || '[]');

  test('storing an instance into another project\'s study is refused (0124H) and links nothing', async () => {
    const res = await stow(dmA, syntheticInstance({ studyInstanceUID: B.study.study }).bytes, `/dicomweb/studies/${B.study.study}`);
    expect(res.status).toBe(409);
    expect(failureReasons(res.text)).toEqual([NOT_AUTHORIZED]);
    expect(res.text).not.toContain(B.study.sop);
    expect(await studyLinks(B.study.study)).toEqual([B.id]);
    expect(await qidoAs(dmA, B.study.study)).toEqual([]);
    const [study] = await qidoAs(t.adminToken, B.study.study);
    expect(study['00201208'].Value).toEqual([1]);
  });

  test('the same, without naming the study in the path (POST /studies)', async () => {
    const res = await stow(dmA, syntheticInstance({ studyInstanceUID: B.study.study }).bytes);
    expect(res.status).toBe(409);
    expect(failureReasons(res.text)).toEqual([NOT_AUTHORIZED]);
    expect(await studyLinks(B.study.study)).toEqual([B.id]);
  });

  test('reusing another project\'s SOP Instance UID does not move or replace its instance', async () => {
    const forged = createSyntheticInstance({ sopInstanceUID: B.study.sop, patientID: `PID-${randomUUID()}`, rows: 16, columns: 16, bitsAllocated: 8, seed: 7 });
    const res = await stow(dmA, forged.bytes);
    expect(res.status).toBe(409);
    expect(failureReasons(res.text)).toEqual([NOT_AUTHORIZED]);
    const where = await t.app.db.knex('instances as i').join('studies as st', 'st.id', 'i.study_pk').where('i.sop_instance_uid', B.study.sop).first('st.study_uid');
    expect(where?.study_uid).toBe(B.study.study);
    expect(await qidoAs(dmA, forged.studyInstanceUID)).toEqual([]);
  });

  test('storing a study for a patient id another project holds does not open that project\'s Patient', async () => {
    const patientID = (await t.app.db.knex('patients').where({ fhir_id: B.fhir.dicomPatient }).first('patient_id')).patient_id as string;
    const res = await stow(dmA, syntheticInstance({ patientID, patientName: 'Other^Name' }).bytes);
    expect(res.status).toBe(200);
    const read = await send(t, { method: 'GET', path: `/fhir/Patient/${B.fhir.dicomPatient}`, headers: { Accept: FHIR } }, dmA);
    expect(read.status).toBe(404);
    expect(read.text).not.toContain(B.markers[3]);
  });

  test('a FHIR update of another project\'s resource is not found and changes nothing', async () => {
    const before = JSON.parse((await send(t, { method: 'GET', path: `/fhir/Condition/${B.fhir.Condition}`, headers: { Accept: FHIR } }, t.adminToken)).text);
    const res = await send(
      t,
      { method: 'PUT', path: `/fhir/Condition/${B.fhir.Condition}`, body: JSON.stringify({ ...resourceOf('Condition', A.fhir.Patient, 'overwrite'), id: B.fhir.Condition }), contentType: FHIR },
      dmA,
    );
    expect(res.status).toBe(404);
    expect(JSON.parse(res.text).issue[0].code).toBe('not-found');
    const after = JSON.parse((await send(t, { method: 'GET', path: `/fhir/Condition/${B.fhir.Condition}`, headers: { Accept: FHIR } }, t.adminToken)).text);
    expect(after.meta.versionId).toBe(before.meta.versionId);
  });

  test('a transaction Bundle cannot update another project\'s resource either', async () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: { ...resourceOf('Patient', '', 'takeover'), id: B.fhir.Patient }, request: { method: 'PUT', url: `Patient/${B.fhir.Patient}` } }],
    };
    const res = await send(t, { method: 'POST', path: '/fhir', body: JSON.stringify(bundle), contentType: FHIR }, dmA);
    expect(res.status).toBe(404);
    const after = JSON.parse((await send(t, { method: 'GET', path: `/fhir/Patient/${B.fhir.Patient}`, headers: { Accept: FHIR } }, t.adminToken)).text);
    expect(JSON.stringify(after.name)).not.toContain('takeover');
  });

  test('a Bundle entry the role may not perform alone refuses the Bundle (data manager deleting)', async () => {
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `Patient/${A.fhir.Patient}` } }] };
    const res = await send(t, { method: 'POST', path: '/fhir', body: JSON.stringify(bundle), contentType: FHIR }, dmA);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text).issue[0]).toMatchObject({ code: 'forbidden', diagnostics: `Bundle.entry[0] (DELETE Patient/${A.fhir.Patient}): access denied: role data-manager may not delete Patient` });
    expect((await send(t, { method: 'GET', path: `/fhir/Patient/${A.fhir.Patient}` }, dmA)).status).toBe(200);
  });

  test('a researcher may send a batch of reads: each entry is decided alone, writes in it refused', async () => {
    const researcher = await t.token('researcher', [A.id]);
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${A.fhir.Patient}` } },
        { request: { method: 'GET', url: `Patient/${B.fhir.Patient}` } },
        { resource: resourceOf('Patient', '', 'by-researcher'), request: { method: 'POST', url: 'Patient' } },
      ],
    };
    const res = await send(t, { method: 'POST', path: '/fhir', body: JSON.stringify(bundle), contentType: FHIR }, researcher);
    expect(res.status).toBe(200);
    const entries = JSON.parse(res.text).entry as Array<{ response: { status: string; outcome?: { issue: Array<{ code: string }> } } }>;
    expect(entries.map((e) => e.response.status.slice(0, 3))).toEqual(['200', '404', '403']);
    expect(entries[2].response.outcome?.issue[0].code).toBe('forbidden');
  });

  test('resources created in a transaction Bundle belong to the creator\'s project', async () => {
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ fullUrl: `urn:uuid:${randomUUID()}`, resource: resourceOf('Patient', '', 'inbundle'), request: { method: 'POST', url: 'Patient' } }] };
    const res = await send(t, { method: 'POST', path: '/fhir', body: JSON.stringify(bundle), contentType: FHIR }, dmA);
    expect(res.status).toBe(200);
    const id = /Patient\/([^/]+)/.exec(JSON.parse(res.text).entry[0].response.location)![1];
    expect((await send(t, { method: 'GET', path: `/fhir/Patient/${id}` }, dmA)).status).toBe(200);
    expect((await send(t, { method: 'GET', path: `/fhir/Patient/${id}` }, await t.token('data-manager', [B.id]))).status).toBe(404);
  });

  test('a conditional create does not match (or return) another project\'s resource', async () => {
    const res = await send(
      t,
      { method: 'POST', path: '/fhir/Patient', body: JSON.stringify(resourceOf('Patient', '', 'conditional')), contentType: FHIR, headers: { 'If-None-Exist': `_id=${B.fhir.Patient}` } },
      dmA,
    );
    expect(res.status).toBe(201);
    expect(JSON.parse(res.text).id).not.toBe(B.fhir.Patient);
  });

  test('an admin may still add to any study and link it to a project it names', async () => {
    const id = await createResource(t, t.adminToken, resourceOf('Patient', '', 'admin'), B.id);
    expect((await send(t, { method: 'GET', path: `/fhir/Patient/${id}` }, await t.token('researcher', [B.id]))).status).toBe(200);
    const res = await stow(t.adminToken, syntheticInstance({ studyInstanceUID: A.study.study }).bytes, `/dicomweb/studies/${A.study.study}`);
    expect(res.status).toBe(200);
  });
});
