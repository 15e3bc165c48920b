import fs from 'node:fs';
import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * One truth for DICOM and FHIR: a study stored through STOW-RS is an ImagingStudy (and its
 * patient a Patient) when the STOW response is sent, kept in step by later STOWs and deletes.
 */
describe('ImagingStudy derived from the DICOM index', () => {
  let t: TestApp;
  const stow = async (parts: Buffer[]) => {
    const { body, contentType } = buildMultipart(parts);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    expect([200, 202]).toContain(res.status);
    return res;
  };
  const fhir = (path: string) => request(t.http).get(`/fhir/${path}`).set('Accept', 'application/fhir+json');

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('a STOWed study is an ImagingStudy with identifier, subject, counts, series, instances and endpoint', async () => {
    const study = newUid();
    const series = newUid();
    const insts = [1, 2, 3].map((n) =>
      createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: n, modality: 'OPT', laterality: 'R', patientID: 'FHIR-1', issuerOfPatientID: 'HOSP-A', patientName: 'Vision^Vera', studyDate: '20240302', accessionNumber: 'ACC-77' }),
    );
    await stow(insts.map((i) => i.bytes));
    const res = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${study}`)}`);
    expect(res.status).toBe(200);
    expect(res.body.entry).toHaveLength(1);
    const is = res.body.entry[0].resource;
    expect(is.status).toBe('available');
    expect(is.numberOfSeries).toBe(1);
    expect(is.numberOfInstances).toBe(3);
    expect(is.started).toBe('2024-03-02');
    expect(is.modality).toEqual([{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' }]);
    expect(is.identifier).toEqual(
      expect.arrayContaining([expect.objectContaining({ value: 'ACC-77' }), { use: 'official', system: 'urn:dicom:uid', value: `urn:oid:${study}` }]),
    );
    expect(is.series[0].uid).toBe(series);
    expect(is.series[0].laterality).toEqual({ system: 'http://snomed.info/sct', code: '24028007', display: 'Right' });
    expect(is.series[0].instance.map((i: { uid: string }) => i.uid)).toEqual(insts.map((i) => i.sopInstanceUID));
    expect(is.series[0].instance[0].sopClass.code).toBe(`urn:oid:${insts[0].sopClassUID}`);
    expect(is.endpoint).toEqual([{ reference: 'Endpoint/dicomweb' }]);

    const endpoint = await fhir('Endpoint/dicomweb');
    expect(endpoint.body.connectionType.code).toBe('dicom-wado-rs');
    expect(endpoint.body.address).toMatch(/\/dicomweb$/);

    const patient = await fhir(is.subject.reference);
    expect(patient.status).toBe(200);
    expect(patient.body.identifier[0]).toMatchObject({ system: 'urn:imaging-lake:issuer:HOSP-A', value: 'FHIR-1' });
    expect(patient.body.name[0]).toMatchObject({ family: 'Vision', given: ['Vera'] });
  });

  test('the same DICOM patient in a second study resolves to the same Patient', async () => {
    const a = createSyntheticInstance({ patientID: 'SAME-1', issuerOfPatientID: 'HOSP-B' });
    const b = createSyntheticInstance({ patientID: 'SAME-1', issuerOfPatientID: 'HOSP-B' });
    await stow([a.bytes]);
    await stow([b.bytes]);
    const res = await fhir(`ImagingStudy?subject:Patient.identifier=${encodeURIComponent('urn:imaging-lake:issuer:HOSP-B|SAME-1')}`);
    expect(res.status).toBe(200);
    expect(res.body.entry).toHaveLength(2);
    expect(new Set(res.body.entry.map((e: { resource: { subject: { reference: string } } }) => e.resource.subject.reference)).size).toBe(1);
  });

  test('a later STOW into the study updates its counts, and a clinical link added through FHIR survives it', async () => {
    const study = newUid();
    await stow([createSyntheticInstance({ studyInstanceUID: study }).bytes]);
    const found = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${study}`)}`);
    const is = found.body.entry[0].resource;
    const cond = await request(t.http)
      .post('/fhir/Condition')
      .set('Content-Type', 'application/fhir+json')
      .send({ resourceType: 'Condition', subject: is.subject, code: { text: 'glaucoma suspect' } });
    expect(cond.status).toBe(201);
    const put = await request(t.http)
      .put(`/fhir/ImagingStudy/${is.id}`)
      .set('Content-Type', 'application/fhir+json')
      .send({ ...is, reasonReference: [{ reference: `Condition/${cond.body.id}` }] });
    expect(put.status).toBe(200);
    await stow([createSyntheticInstance({ studyInstanceUID: study }).bytes]);
    const after = await fhir(`ImagingStudy/${is.id}`);
    expect(after.body.numberOfInstances).toBe(2);
    expect(after.body.reasonReference).toEqual([{ reference: `Condition/${cond.body.id}` }]);
  });

  test('deleting the study over DICOMweb deletes the ImagingStudy (410 Gone)', async () => {
    const inst = createSyntheticInstance();
    await stow([inst.bytes]);
    const found = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${inst.studyInstanceUID}`)}`);
    const id = found.body.entry[0].resource.id;
    expect((await request(t.http).delete(`/dicomweb/studies/${inst.studyInstanceUID}`)).status).toBe(204);
    expect((await fhir(`ImagingStudy/${id}`)).status).toBe(410);
  });

  test('BRAINIX is found by patient and by modality, and its endpoint leads to WADO-RS metadata', async () => {
    const dir = sharedData('dicom/series/orthanc-BRAINIX/Flair');
    await stow(fs.readdirSync(dir).map((f) => fs.readFileSync(`${dir}/${f}`)));
    const res = await fhir('ImagingStudy?modality=MR&_count=50');
    const brainix = res.body.entry.map((e: { resource: { description?: string } }) => e.resource).find((r: { numberOfInstances: number }) => r.numberOfInstances === 22);
    expect(brainix).toBeDefined();
    const byPatient = await fhir(`ImagingStudy?patient=${brainix.subject.reference}`);
    expect(byPatient.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toContain(brainix.id);
    const endpoint = await fhir(brainix.endpoint[0].reference);
    const studyUid = brainix.identifier.find((i: { system: string }) => i.system === 'urn:dicom:uid').value.replace('urn:oid:', '');
    const path = new URL(`${endpoint.body.address}/studies/${studyUid}/metadata`).pathname;
    const meta = await request(t.http).get(path).set('Accept', 'application/dicom+json');
    expect(meta.status).toBe(200);
    expect(meta.body).toHaveLength(22);
  });

  test('ImagingStudy?modality=OPT&laterality=right finds right-eye OCT studies only', async () => {
    const right = createSyntheticInstance({ modality: 'OPT', laterality: 'R' });
    const left = createSyntheticInstance({ modality: 'OPT', laterality: 'L' });
    await stow([right.bytes, left.bytes]);
    for (const q of ['laterality=right', `laterality=${encodeURIComponent('http://snomed.info/sct|24028007')}`]) {
      const res = await fhir(`ImagingStudy?modality=OPT&${q}&_count=100`);
      expect(res.status).toBe(200);
      const uids = res.body.entry.map((e: { resource: { identifier: Array<{ system: string; value: string }> } }) =>
        e.resource.identifier.find((i) => i.system === 'urn:dicom:uid')!.value,
      );
      expect(uids).toContain(`urn:oid:${right.studyInstanceUID}`);
      expect(uids).not.toContain(`urn:oid:${left.studyInstanceUID}`);
    }
  });
});
