import request from 'supertest';
import { createSyntheticInstance, newUid, type SyntheticInstanceOptions } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { keyOfStudy, randomMrn, stowInto } from '../privacy/store-helpers';

/**
 * The index-change work of a STOW that links no project (src/dicomweb/index-change-sync.ts: one
 * statement for the mark, the key link and what the later steps read): it must leave what the
 * step-by-step order leaves: the study marked, its FHIR Patient created and keyed, and the
 * new UIDs recorded for the projects already holding the study.
 */
describe('index change of a single-study STOW without projects', () => {
  let t: TestApp;
  const knex = () => t.app.db.knex;
  /** An admin STOW with no X-Project: no project to link. */
  const stowPlain = async (options: SyntheticInstanceOptions) => {
    const inst = createSyntheticInstance({ rows: 4, columns: 4, ...options });
    const { body, contentType } = buildMultipart([inst.bytes]);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
    expect(res.status).toBe(200);
    return inst;
  };

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  test('a new patient gets a PatientKey, a FHIR Patient and the link between them', async () => {
    const inst = await stowPlain({ patientID: randomMrn() });
    expect(await keyOfStudy(t, inst.studyInstanceUID)).toBeDefined();
    const p = await knex()('studies as st').join('patients as p', 'p.id', 'st.patient_pk').where('st.study_uid', inst.studyInstanceUID).first('p.fhir_id', 'p.patient_key_id', 'st.fhir_id as study_fhir_id');
    expect(p.fhir_id).toBeTruthy();
    expect(p.study_fhir_id).toBeTruthy();
    const link = await knex()('fhir_patient_keys').where({ resource_id: p.fhir_id }).first('patient_key_id');
    expect(Number(link?.patient_key_id)).toBe(Number(p.patient_key_id));
  });

  test('a FHIR Patient link removed since is made again by the next STOW', async () => {
    const patientID = randomMrn();
    const first = await stowPlain({ patientID });
    const p = await knex()('studies as st').join('patients as p', 'p.id', 'st.patient_pk').where('st.study_uid', first.studyInstanceUID).first('p.fhir_id');
    await knex()('fhir_patient_keys').where({ resource_id: p.fhir_id }).delete();
    await stowPlain({ patientID, studyInstanceUID: first.studyInstanceUID, seriesInstanceUID: first.seriesInstanceUID });
    expect(await knex()('fhir_patient_keys').where({ resource_id: p.fhir_id }).first('patient_key_id')).toBeDefined();
  });

  test('an instance added to a study a project holds is recorded for that project', async () => {
    const a = await stowInto(t, 'sync-a', { patientID: randomMrn() });
    const b = await stowPlain({ studyInstanceUID: a.studyInstanceUID, seriesInstanceUID: newUid(), patientID: 'z' });
    const map = t.app.privacy.uidMapper('sync-a');
    const rows = await knex()('deid_uids').where('project_id', 'sync-a').whereIn('deid_uid', [map(b.sopInstanceUID), map(b.seriesInstanceUID)]).pluck('level');
    expect(rows.sort()).toEqual(['instance', 'series']);
  });

  test('the study is marked, and a FHIR read right after the answer sees the instance', async () => {
    const inst = await stowPlain({ patientID: randomMrn() });
    const res = await request(t.http)
      .get(`/fhir/ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${inst.studyInstanceUID}`)}`)
      .set('Accept', 'application/fhir+json');
    expect(res.status).toBe(200);
    expect(res.body.entry?.[0]?.resource?.series?.[0]?.instance?.[0]?.uid).toBe(inst.sopInstanceUID);
  });
});
