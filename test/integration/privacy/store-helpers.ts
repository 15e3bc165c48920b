/**
 * Helpers of the privacy integration tests: STOW an instance into a project, create a FHIR
 * Patient in a project, read a patient's key rows.
 */
import request from 'supertest';
import { createSyntheticInstance, type SyntheticInstanceOptions } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import type { TestApp } from '../../helpers/test-app';

/** Stores one synthetic instance as admin into `project`; returns its UIDs. Fails the test on anything but 200. */
export async function stowInto(t: TestApp, project: string, options: SyntheticInstanceOptions = {}) {
  const inst = createSyntheticInstance(options);
  const { body, contentType } = buildMultipart([inst.bytes]);
  const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').set('X-Project', project).send(body);
  if (res.status !== 200) throw new Error(`STOW answered ${res.status}: ${res.text.slice(0, 300)}`);
  return inst;
}

/** Creates a FHIR Patient as admin in `project`; returns its id. */
export async function createFhirPatient(t: TestApp, project: string, identifier?: Array<{ system?: string; value: string; type?: unknown }>): Promise<string> {
  const res = await request(t.http)
    .post('/fhir/Patient')
    .set('Content-Type', 'application/fhir+json')
    .set('X-Project', project)
    .send(JSON.stringify({ resourceType: 'Patient', active: true, ...(identifier ? { identifier } : {}) }));
  if (res.status !== 201) throw new Error(`FHIR create answered ${res.status}: ${res.text.slice(0, 300)}`);
  return res.body.id as string;
}

/** The PatientKey and offset of the DICOM patient of a study (undefined while it has none). */
export async function keyOfStudy(t: TestApp, studyUid: string): Promise<{ patientKey: string; dateOffsetDays: number } | undefined> {
  const row = await t.app.db
    .knex('studies as st')
    .join('patients as p', 'p.id', 'st.patient_pk')
    .join('patient_keys as k', 'k.id', 'p.patient_key_id')
    .where('st.study_uid', studyUid)
    .first('k.patient_key', 'k.date_offset_days');
  return row ? { patientKey: row.patient_key, dateOffsetDays: Number(row.date_offset_days) } : undefined;
}

/** The primary key of the DICOM patient of a study. */
export async function patientPkOfStudy(t: TestApp, studyUid: string): Promise<number> {
  const row = await t.app.db.knex('studies').where('study_uid', studyUid).first('patient_pk');
  return Number(row.patient_pk);
}

/** A random MRN-like value. */
export function randomMrn(): string {
  return `MRN${Math.random().toString(36).slice(2, 10).toUpperCase()}`;
}
