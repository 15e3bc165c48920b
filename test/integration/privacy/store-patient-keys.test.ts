/**
 * PatientKeys at first sight (HIPAA 164.514(c)): random, stable, one per person across projects
 * and across DICOM and FHIR, a different person per issuer, a non-zero offset within range,
 * and one key when two STOWs of the same new patient race.
 */
import request from 'supertest';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { createFhirPatient, keyOfStudy, patientPkOfStudy, randomMrn, stowInto } from './store-helpers';

describe('privacy store: PatientKeys', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ DATE_SHIFT_MAX_DAYS: '3' });
  });
  afterAll(async () => {
    await t?.close();
  });

  test('a STOW gives the patient a random PatientKey in the ingest transaction, and the same key on every later STOW', async () => {
    const mrn = randomMrn();
    const first = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'HOSP-A' });
    const key = await keyOfStudy(t, first.studyInstanceUID);
    expect(key?.patientKey).toMatch(/^PK[A-Z2-7]{20}$/);
    // Random, not derived from the MRN: nothing of it appears in the key.
    expect(key!.patientKey).not.toContain(mrn.slice(3));
    const second = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'HOSP-A' });
    expect(await keyOfStudy(t, second.studyInstanceUID)).toEqual(key);
    // The linkage table holds the identity; patient_keys holds only an HMAC of it.
    const row = await t.app.db.knex('patient_keys').where('patient_key', key!.patientKey).first();
    expect(row.identity_hmac).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(row)).not.toContain(mrn);
    const identities = await t.app.db.knex('patient_key_identities').where('patient_key_id', row.id).select('issuer', 'mrn');
    expect(identities).toEqual([{ issuer: 'urn:imaging-lake:issuer:HOSP-A', mrn }]);
  });

  test('the same person in two projects is one PatientKey', async () => {
    const mrn = randomMrn();
    const a = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: '1.2.3.4' });
    const b = await stowInto(t, 'pk-b', { patientID: mrn, issuerOfPatientID: '1.2.3.4' });
    expect(await keyOfStudy(t, b.studyInstanceUID)).toEqual(await keyOfStudy(t, a.studyInstanceUID));
  });

  test('the same MRN from another issuer is another person', async () => {
    const mrn = randomMrn();
    const a = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'HOSP-A' });
    const b = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'HOSP-B' });
    const ka = await keyOfStudy(t, a.studyInstanceUID);
    const kb = await keyOfStudy(t, b.studyInstanceUID);
    expect(ka!.patientKey).not.toBe(kb!.patientKey);
  });

  test('a FHIR Patient created through FHIR with the DICOM issuer and MRN gets the DICOM patient\'s key', async () => {
    const mrn = randomMrn();
    const inst = await stowInto(t, 'pk-a', { patientID: `  ${mrn}`, issuerOfPatientID: '1.2.840.99' });
    // The FHIR side spells the OID issuer as urn:oid: and pads nothing: normalisation meets the DICOM side.
    const id = await createFhirPatient(t, 'pk-c', [{ system: 'urn:oid:1.2.840.99', value: ` ${mrn} ` }]);
    const fhir = await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [id]);
    expect(fhir.get(id)).toEqual(await keyOfStudy(t, inst.studyInstanceUID));
  });

  test('a FHIR Patient seen first gives its key to the DICOM patient stored later', async () => {
    const mrn = randomMrn();
    const id = await createFhirPatient(t, 'pk-c', [{ system: 'urn:imaging-lake:issuer:CLINIC', value: mrn }]);
    const fhir = await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [id]);
    const inst = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'CLINIC' });
    expect(await keyOfStudy(t, inst.studyInstanceUID)).toEqual(fhir.get(id));
  });

  test('the FHIR Patient the DICOM sync creates shares the DICOM patient\'s key', async () => {
    const inst = await stowInto(t, 'pk-a', { patientID: randomMrn(), issuerOfPatientID: 'HOSP-A' });
    const row = await t.app.db.knex('patients').where('id', await patientPkOfStudy(t, inst.studyInstanceUID)).first('fhir_id');
    expect(row.fhir_id).toBeTruthy();
    const fhir = await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [row.fhir_id]);
    expect(fhir.get(row.fhir_id)).toEqual(await keyOfStudy(t, inst.studyInstanceUID));
  });

  test('a later STOW into a keyed patient links its FHIR Patient to the key again when the link is missing', async () => {
    const mrn = randomMrn();
    const first = await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'HOSP-A' });
    const patient = await t.app.db.knex('patients').where('id', await patientPkOfStudy(t, first.studyInstanceUID)).first('fhir_id', 'patient_key_id');
    expect(patient.patient_key_id).toBeTruthy();
    // A link lost (or made before FHIR Patients were keyed): the patient already has its key, so only the link is written.
    await t.app.db.knex('fhir_patient_keys').where('resource_id', patient.fhir_id).delete();
    await stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'HOSP-A', studyInstanceUID: first.studyInstanceUID });
    const link = await t.app.db.knex('fhir_patient_keys').where('resource_id', patient.fhir_id).first('patient_key_id');
    expect(Number(link?.patient_key_id)).toBe(Number(patient.patient_key_id));
  });

  test('a FHIR Patient without identifier gets its own random key, stable across calls', async () => {
    const a = await createFhirPatient(t, 'pk-c');
    const b = await createFhirPatient(t, 'pk-c');
    const first = await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [a, b, 'no-such-patient']);
    expect(first.has('no-such-patient')).toBe(false);
    expect(first.get(a)!.patientKey).not.toBe(first.get(b)!.patientKey);
    const again = await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [a, b]);
    expect(again.get(a)).toEqual(first.get(a));
    expect(again.get(b)).toEqual(first.get(b));
  });

  test('a DICOM patient without PatientID gets a random key of its own', async () => {
    const a = await stowInto(t, 'pk-a', { patientID: '' });
    const b = await stowInto(t, 'pk-a', { patientID: '' });
    const ka = await keyOfStudy(t, a.studyInstanceUID);
    const kb = await keyOfStudy(t, b.studyInstanceUID);
    expect(ka?.patientKey).toMatch(/^PK/);
    expect(ka!.patientKey).not.toBe(kb!.patientKey);
  });

  test('date offsets are never 0 and stay within DATE_SHIFT_MAX_DAYS (3 here)', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await createFhirPatient(t, 'pk-d', [{ system: 'urn:test:offsets', value: randomMrn() }]));
    const keys = await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, ids);
    const offsets = [...keys.values()].map((k) => k.dateOffsetDays);
    expect(offsets).toHaveLength(40);
    for (const o of offsets) {
      expect(o).not.toBe(0);
      expect(Math.abs(o)).toBeLessThanOrEqual(3);
      expect(Number.isInteger(o)).toBe(true);
    }
    // Both signs are drawn (40 draws from 6 values: all one sign has probability 2^-39).
    expect(offsets.some((o) => o < 0) && offsets.some((o) => o > 0)).toBe(true);
    // The database refuses a zero offset outright.
    await expect(t.app.db.knex('patient_keys').insert({ patient_key: 'PKAAAAAAAAAAAAAAAAAAAA', date_offset_days: 0 })).rejects.toThrow(/patient_keys_offset_nonzero/);
  });

  test('two STOWs of the same new patient at once end with one key', async () => {
    const mrn = randomMrn();
    const results = await Promise.all([0, 1, 2, 3].map(() => stowInto(t, 'pk-a', { patientID: mrn, issuerOfPatientID: 'RACE' })));
    const keys = await Promise.all(results.map((r) => keyOfStudy(t, r.studyInstanceUID)));
    expect(new Set(keys.map((k) => k!.patientKey)).size).toBe(1);
    const hmacRows = await t.app.db.knex('patient_key_identities').where({ issuer: 'urn:imaging-lake:issuer:RACE', mrn }).count<{ count: string }[]>('* as count');
    expect(Number(hmacRows[0].count)).toBe(1);
  });

  test('two concurrent first looks at the same FHIR Patients agree on their keys', async () => {
    const ids = [
      await createFhirPatient(t, 'pk-c', [{ system: 'urn:test:race', value: randomMrn() }]),
      await createFhirPatient(t, 'pk-c', [{ system: 'urn:test:race', value: randomMrn() }]),
    ];
    const [x, y] = await Promise.all([t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, ids), t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [...ids].reverse())]);
    for (const id of ids) expect(x.get(id)).toEqual(y.get(id));
  });

  test('pseudonymsForDicomPatients answers the key of index patients', async () => {
    const inst = await stowInto(t, 'pk-a', { patientID: randomMrn() });
    const pk = await patientPkOfStudy(t, inst.studyInstanceUID);
    const map = await t.app.privacy.pseudonymsForDicomPatients(t.app.db.knex, [pk, 987654321]);
    expect(map.get(pk)).toEqual(await keyOfStudy(t, inst.studyInstanceUID));
    expect(map.has(987654321)).toBe(false);
  });

  test('the privacy key is a file under DATA_DIR/keys with mode 0600 and never in the database', async () => {
    const fs = await import('node:fs');
    const path = await import('node:path');
    const file = path.join(t.dataDir, 'keys', 'privacy.key');
    const stat = fs.statSync(file);
    expect(stat.mode & 0o777).toBe(0o600);
    const key = fs.readFileSync(file, 'utf8').trim();
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    const dump = await t.app.db.knex.raw(`SELECT count(*)::int AS n FROM patient_keys WHERE identity_hmac = ? OR patient_key = ?`, [key, key]);
    expect(dump.rows[0].n).toBe(0);
    expect((await request(t.http).get('/healthz')).status).toBe(200);
  });
});
