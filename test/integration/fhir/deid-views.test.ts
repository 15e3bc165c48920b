import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * FHIR de-identified views (issue 6): a researcher of the project reads, vreads, searches (with
 * _include/_revinclude), pages history and runs batches over the same stored resources an admin
 * sees, and no byte of any answer carries the sentinel, the MRN or the original Study Instance
 * UID; dates are shifted by the patient's one offset; PHI searches are refused with a body.
 */
describe('FHIR de-identified views for researchers', () => {
  const S = 'PHI_SENTINEL';
  const DAY = 86_400_000;
  const project = `deid-${randomBytes(4).toString('hex')}`;
  const mrn = `MRN${Date.now() % 1e8}${randomBytes(2).toString('hex')}`;
  const FHIR_JSON = 'application/fhir+json';
  let t: TestApp;
  let researcher: string;
  let dm: string;
  let studyUid: string;
  let patientId: string;
  let studyId: string;
  let conditionId: string;
  let oldPatientId: string;
  let offset: number;
  let patientKey: string;

  const get = (token: string, path: string) => request(t.app.express).get(`/fhir/${path}`).set('Authorization', `Bearer ${token}`).set('Accept', FHIR_JSON);
  const asResearcher = (path: string) => get(researcher, path);
  /** Every researcher answer is checked byte for byte. */
  const expectClean = (res: request.Response) => {
    expect(res.text).not.toContain(S);
    expect(res.text).not.toContain(mrn);
    expect(res.text).not.toContain(studyUid);
  };
  const shiftDate = (d: string, days: number) => new Date(Date.parse(`${d}T00:00:00Z`) + days * DAY).toISOString().slice(0, 10);

  beforeAll(async () => {
    t = await startTestApp();
    researcher = await t.token('researcher', [project]);
    dm = await t.token('data-manager', [project]);
    const instance = createSyntheticInstance({
      patientID: mrn,
      issuerOfPatientID: 'HOSP-DEID',
      patientName: `${S}^Ada`,
      patientBirthDate: '19700415',
      studyDate: '20240302',
      studyTime: '101112',
      accessionNumber: `${S}1`,
      studyDescription: `${S} study`,
      seriesDescription: `${S} series`,
    });
    studyUid = instance.studyInstanceUID;
    const { body, contentType } = buildMultipart([instance.bytes]);
    const stow = await request(t.app.express).post('/dicomweb/studies').set('Authorization', `Bearer ${dm}`).set('Content-Type', contentType).send(body);
    expect(stow.status).toBe(200);
    const found = await get(dm, `ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${studyUid}`)}`);
    const study = found.body.entry[0].resource;
    studyId = study.id;
    patientId = study.subject.reference.split('/')[1];

    // The data manager fills the Patient with sentinels everywhere (the MRN identifier kept).
    const current = (await get(dm, `Patient/${patientId}`)).body;
    const patient = {
      ...current,
      text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${S} narrative</div>` },
      identifier: [...current.identifier, { system: 'urn:oid:1.2.3.4.5', value: `${S}-SSN` }],
      name: [{ family: S, given: [`${S}-given`] }],
      telecom: [{ system: 'phone', value: `${S}-555` }, { system: 'email', value: `${S}@example.org` }],
      address: [{ line: [`${S} street 1`], city: `${S}ville`, postalCode: '12345' }],
      contact: [{ name: { family: `${S}-mother` }, telecom: [{ system: 'phone', value: `${S}-556` }] }],
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName', valueString: `${S}-maiden` }],
      communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en' }], text: `${S} English` } }],
      generalPractitioner: [{ display: `Dr ${S}` }],
      birthDate: '1970-04-15',
      deceasedDateTime: '2025-06-01T08:30:00+02:00',
    };
    const put = await request(t.app.express).put(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${dm}`).set('Content-Type', FHIR_JSON).send(patient);
    expect(put.status).toBe(200);

    const condition = await request(t.app.express)
      .post('/fhir/Condition')
      .set('Authorization', `Bearer ${dm}`)
      .set('Content-Type', FHIR_JSON)
      .send({
        resourceType: 'Condition',
        identifier: [{ system: 'urn:hospital:problem', value: `${S}-problem` }],
        text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${S}</div>` },
        clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
        code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'H40.1111', display: 'Primary open-angle glaucoma, right eye, mild stage' }], text: `${S} glaucoma` },
        subject: { reference: `Patient/${patientId}`, display: `${S} Ada` },
        onsetDateTime: '2023-11-20T09:15:00Z',
        recordedDate: '2023-11-21',
        note: [{ text: `${S} note`, authorString: `${S} author` }],
      });
    expect(condition.status).toBe(201);
    conditionId = condition.body.id;

    const old = await request(t.app.express)
      .post('/fhir/Patient')
      .set('Authorization', `Bearer ${dm}`)
      .set('Content-Type', FHIR_JSON)
      .send({ resourceType: 'Patient', identifier: [{ system: 'urn:hospital:mrn', value: `${mrn}-old` }], name: [{ family: `${S}-old` }], birthDate: '1931-02-03' });
    expect(old.status).toBe(201);
    oldPatientId = old.body.id;

    const pseudonym = (await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [patientId])).get(patientId);
    expect(pseudonym).toBeDefined();
    offset = pseudonym!.dateOffsetDays;
    patientKey = pseudonym!.patientKey;
    expect(offset).not.toBe(0);
  });
  afterAll(async () => {
    await t?.close();
  });

  test('read: the Patient shows its PatientKey, shifted dates and nothing else identifying', async () => {
    const res = await asResearcher(`Patient/${patientId}`);
    expect(res.status).toBe(200);
    expectClean(res);
    expect(res.body.identifier).toEqual([{ system: 'urn:imaging-lake:patient-key', value: patientKey }]);
    expect(res.body.birthDate).toBe(shiftDate('1970-04-15', offset));
    expect(Date.parse(res.body.deceasedDateTime) - Date.parse('2025-06-01T08:30:00+02:00')).toBe(offset * DAY);
    for (const k of ['name', 'telecom', 'address', 'contact', 'text', 'extension', 'photo']) expect(res.body[k]).toBeUndefined();
    expect(res.body.communication[0].language.coding[0].code).toBe('en');
    expect(res.headers['last-modified']).toBeUndefined();
  });

  test('the FHIR and the DICOM view of one patient share one PatientKey and one offset', async () => {
    const row = await t.app.db.knex('patients').where({ fhir_id: patientId }).first('id');
    const dicom = (await t.app.privacy.pseudonymsForDicomPatients(t.app.db.knex, [Number(row.id)])).get(Number(row.id));
    expect(dicom).toEqual({ patientKey, dateOffsetDays: offset });
  });

  test('FHIR and DICOMweb show the researcher the same study date and the same study UID', async () => {
    const fhirStudy = (await asResearcher(`ImagingStudy/${studyId}`)).body;
    const qido = await request(t.app.express).get('/dicomweb/studies?includefield=00080020').set('Authorization', `Bearer ${researcher}`).set('Accept', 'application/dicom+json');
    expect(qido.status).toBe(200);
    expect(qido.text).not.toContain(studyUid);
    const shownUid = fhirStudy.identifier[0].value.replace(/^urn:oid:/, '');
    const match = (qido.body as Array<Record<string, { Value?: string[] }>>).find((d) => d['0020000D']?.Value?.[0] === shownUid);
    expect(match).toBeDefined();
    const studyDate = match!['00080020'].Value![0];
    expect(`${studyDate.slice(0, 4)}-${studyDate.slice(4, 6)}-${studyDate.slice(6, 8)}`).toBe(fhirStudy.started.slice(0, 10));
  });

  test('a study held by two of the researcher\'s projects shows the UIDs of the first, on FHIR and DICOMweb alike', async () => {
    const [first, second] = [`${project}-a`, `${project}-b`];
    const both = await t.token('data-manager', [second, first]);
    const instance = createSyntheticInstance({ patientID: `${mrn}-2`, issuerOfPatientID: 'HOSP-DEID', patientName: `${S}^Two` });
    const { body, contentType } = buildMultipart([instance.bytes]);
    const stow = await request(t.app.express).post('/dicomweb/studies').set('Authorization', `Bearer ${both}`).set('X-Project', `${first},${second}`).set('Content-Type', contentType).send(body);
    expect(stow.status).toBe(200);
    const reader = await t.token('researcher', [second, first]);
    const expected = t.app.privacy.uidMapper(first)(instance.studyInstanceUID);
    const fhir = await get(reader, `ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${expected}`)}`);
    expect(fhir.status).toBe(200);
    expect(fhir.text).not.toContain(instance.studyInstanceUID);
    expect(fhir.body.entry[0].resource.identifier).toEqual([{ use: 'official', system: 'urn:dicom:uid', value: `urn:oid:${expected}` }]);
    const qido = await request(t.app.express).get('/dicomweb/studies').set('Authorization', `Bearer ${reader}`).set('Accept', 'application/dicom+json');
    expect((qido.body as Array<Record<string, { Value?: string[] }>>).map((d) => d['0020000D']?.Value?.[0])).toContain(expected);
  });

  test('vread and history are de-identified too, version by version', async () => {
    const v1 = await asResearcher(`Patient/${patientId}/_history/1`);
    expect(v1.status).toBe(200);
    expectClean(v1);
    const v2 = await asResearcher(`Patient/${patientId}/_history/2`);
    expect(v2.status).toBe(200);
    expectClean(v2);
    expect(v2.body.birthDate).toBe(shiftDate('1970-04-15', offset));
    const history = await asResearcher(`Patient/${patientId}/_history`);
    expect(history.status).toBe(200);
    expectClean(history);
    expect(history.body.entry).toHaveLength(2);
    for (const e of history.body.entry) expect(e.response.lastModified).toBeUndefined();
    const type = await asResearcher('Condition/_history');
    expect(type.status).toBe(200);
    expectClean(type);
  });

  test('a Condition keeps its code and displays from the code system; its dates move by the patient offset', async () => {
    const res = await asResearcher(`Condition/${conditionId}`);
    expect(res.status).toBe(200);
    expectClean(res);
    expect(res.body.code).toEqual({ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'H40.1111', display: 'Primary open-angle glaucoma, right eye, mild stage' }] });
    expect(res.body.subject).toEqual({ reference: `Patient/${patientId}` });
    expect(res.body.note).toBeUndefined();
    expect(res.body.identifier).toBeUndefined();
    expect(Date.parse(res.body.onsetDateTime) - Date.parse('2023-11-20T09:15:00Z')).toBe(offset * DAY);
    expect(res.body.recordedDate).toBe(shiftDate('2023-11-21', offset));
  });

  test('the ImagingStudy shows the project UIDs, no accession, and keeps its exact interval to the Condition', async () => {
    const res = await asResearcher(`ImagingStudy/${studyId}`);
    expect(res.status).toBe(200);
    expectClean(res);
    const map = t.app.privacy.uidMapper(project);
    expect(res.body.identifier).toEqual([{ use: 'official', system: 'urn:dicom:uid', value: `urn:oid:${map(studyUid)}` }]);
    expect(res.body.series[0].uid).toBe(map((await get(dm, `ImagingStudy/${studyId}`)).body.series[0].uid));
    expect(res.body.description).toBeUndefined();
    const admin = (await get(t.adminToken, `ImagingStudy/${studyId}`)).body;
    const cond = (await asResearcher(`Condition/${conditionId}`)).body;
    expect(Date.parse(res.body.started) - Date.parse(cond.onsetDateTime)).toBe(Date.parse(admin.started) - Date.parse('2023-11-20T09:15:00Z'));
    // Found by the UID the researcher sees; not by the original one.
    const byShown = await asResearcher(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${map(studyUid)}`)}`);
    expect(byShown.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([studyId]);
    const byOriginal = await asResearcher(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${studyUid}`)}`);
    expect(byOriginal.status).toBe(200);
    expect(byOriginal.body.entry ?? []).toHaveLength(0);
    const seriesUid = (await get(dm, `ImagingStudy/${studyId}`)).body.series[0].uid;
    const bySeries = await asResearcher(`ImagingStudy?series=${map(seriesUid)}`);
    expect(bySeries.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([studyId]);
    const byOriginalSeries = await asResearcher(`ImagingStudy?series=${seriesUid}`);
    expect(byOriginalSeries.body.entry ?? []).toHaveLength(0);
  });

  test('search with _include and _revinclude: every entry de-identified', async () => {
    const res = await asResearcher(`Patient?_id=${patientId}&_revinclude=Condition:subject&_revinclude=ImagingStudy:subject`);
    expect(res.status).toBe(200);
    expectClean(res);
    const types = res.body.entry.map((e: { resource: { resourceType: string } }) => e.resource.resourceType).sort();
    expect(types).toEqual(['Condition', 'ImagingStudy', 'Patient']);
    const inc = await asResearcher(`Condition?subject=Patient/${patientId}&_include=Condition:subject`);
    expect(inc.status).toBe(200);
    expectClean(inc);
    expect(inc.body.entry).toHaveLength(2);
    const subset = await asResearcher(`Patient?_id=${patientId}&_elements=name,birthDate,identifier`);
    expectClean(subset);
    expect(subset.body.entry[0].resource.birthDate).toBe(shiftDate('1970-04-15', offset));
    const summary = await asResearcher(`Patient?_id=${patientId}&_summary=true`);
    expectClean(summary);
  });

  test('a batch of GETs answers every entry de-identified, PHI searches inside it refused', async () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${patientId}` } },
        { request: { method: 'GET', url: `Condition?subject=Patient/${patientId}&_include=Condition:subject` } },
        { request: { method: 'GET', url: `ImagingStudy/${studyId}` } },
        { request: { method: 'GET', url: `Patient?name=${S}` } },
      ],
    };
    const res = await request(t.app.express)
      .post('/fhir')
      .set('Authorization', `Bearer ${researcher}`)
      .set('Content-Type', FHIR_JSON)
      .set('Accept', FHIR_JSON)
      .send(JSON.stringify(bundle));
    expect(res.status).toBe(200);
    expectClean(res);
    const entries = (res.body as { entry: Array<{ resource?: any; response: { status: string; outcome?: any } }> }).entry;
    expect(entries.map((e) => e.response.status.slice(0, 3))).toEqual(['200', '200', '200', '400']);
    expect(entries[0].resource.identifier).toEqual([{ system: 'urn:imaging-lake:patient-key', value: patientKey }]);
    expect(entries[1].resource.entry).toHaveLength(2);
    expect(entries[3].response.outcome.issue[0].diagnostics).toContain('Search parameter name is not available in the de-identified view');
  });

  test('a researcher\'s cohort keeps its name (a label, not patient text) and is found by it', async () => {
    const label = `Glaucoma cohort ${randomBytes(3).toString('hex')}`;
    const group = { resourceType: 'Group', type: 'person', actual: true, name: label, member: [{ entity: { reference: `Patient/${patientId}`, display: `${S} member` } }] };
    const created = await request(t.app.express)
      .post('/fhir/Group')
      .set('Authorization', `Bearer ${researcher}`)
      .set('Content-Type', FHIR_JSON)
      .send(JSON.stringify(group));
    expect(created.status).toBe(201);
    expect(created.body.name).toBe(label);
    expectClean(created);
    const found = await asResearcher(`Group?name=${encodeURIComponent(label)}`);
    expect(found.status).toBe(200);
    expect(found.body.entry.map((e: any) => e.resource.name)).toEqual([label]);
    expect(found.body.entry[0].resource.member[0].entity).toEqual({ reference: `Patient/${patientId}` });
    expectClean(found);
  });

  test('a birth date implying an age over 89 is suppressed, year included', async () => {
    const res = await asResearcher(`Patient/${oldPatientId}`);
    expect(res.status).toBe(200);
    expectClean(res);
    expect(res.body.birthDate).toBeUndefined();
    // No year of the 1930s anywhere but in random ids, the PatientKey and the server's timestamp
    // (a UUID holds "193" about one time in a hundred).
    const { id: _id, identifier: _key, meta: _meta, ...rest } = res.body;
    expect(JSON.stringify(rest)).not.toMatch(/193\d/);
    expect(res.body._birthDate.extension[0]).toEqual({ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'masked' });
  });

  test('the PatientKey finds the Patient, directly and through a chain', async () => {
    const direct = await asResearcher(`Patient?identifier=${encodeURIComponent(`urn:imaging-lake:patient-key|${patientKey}`)}`);
    expect(direct.status).toBe(200);
    expect(direct.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([patientId]);
    const chained = await asResearcher(`Condition?subject:Patient.identifier=${encodeURIComponent(`urn:imaging-lake:patient-key|${patientKey}`)}`);
    expect(chained.status).toBe(200);
    expect(chained.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([conditionId]);
    const unknown = await asResearcher(`Patient?identifier=${encodeURIComponent('urn:imaging-lake:patient-key|PK-NOBODY')}`);
    expect(unknown.status).toBe(200);
    expect(unknown.body.entry ?? []).toHaveLength(0);
  });

  test.each([
    ['Patient?name=PHI', 'name'],
    ['Patient?family=PHI', 'family'],
    ['Patient?address-city=PHI', 'address-city'],
    ['Patient?phone=555', 'phone'],
    ['Patient?email=x%40example.org', 'email'],
    ['Patient?identifier=MRN1', 'identifier'],
    ['Patient?identifier=urn%3Aimaging-lake%3Aissuer%3AHOSP-DEID%7CMRN1', 'identifier'],
    ['Condition?subject:Patient.name=PHI', 'subject:Patient.name'],
    ['Condition?code:text=glaucoma', 'code'],
    ['Patient?_sort=birthdate', '_sort=birthdate'],
    ['Condition?subject:Patient.birthdate=1970', 'subject:Patient.birthdate'],
  ])('a PHI search is refused with a 400 OperationOutcome: %s', async (query, name) => {
    const res = await asResearcher(query);
    expect(res.status).toBe(400);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].diagnostics).toContain(`Search parameter ${name}`);
    expect(res.body.issue[0].diagnostics).toContain('de-identified view');
  });

  test('history _since is refused: it would compare the real lastUpdated', async () => {
    const res = await asResearcher(`Patient/${patientId}/_history?_since=2020-01-01T00:00:00Z`);
    expect(res.status).toBe(400);
    expect(res.body.issue[0].diagnostics).toMatch(/_since and _at/);
  });

  test('date searches match the shifted values the researcher sees, with honest totals', async () => {
    const seen = shiftDate('2023-11-21', offset);
    const hit = await asResearcher(`Condition?recorded-date=${seen}&_total=accurate`);
    expect(hit.status).toBe(200);
    expect(hit.body.total).toBe(1);
    expect(hit.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([conditionId]);
    const real = await asResearcher(`Condition?recorded-date=2023-11-21&_total=accurate`);
    expect(real.body.total).toBe(0);
    const birth = await asResearcher(`Patient?birthdate=${shiftDate('1970-04-15', offset)}`);
    expect(birth.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([patientId]);
    const range = await asResearcher(`Condition?onset-date=ge${shiftDate('2023-11-20', offset)}&onset-date=lt${shiftDate('2023-11-21', offset)}`);
    expect(range.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([conditionId]);
  });

  test('a post-filtered date search pages honestly: _count, next link and _total', async () => {
    const second = await request(t.app.express)
      .post('/fhir/Condition')
      .set('Authorization', `Bearer ${dm}`)
      .set('Content-Type', FHIR_JSON)
      .send({ resourceType: 'Condition', code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'H40.1111' }] }, subject: { reference: `Patient/${patientId}` }, recordedDate: '2023-12-01' });
    expect(second.status).toBe(201);
    const first = await asResearcher(`Condition?subject=Patient/${patientId}&recorded-date=ge${shiftDate('2023-11-01', offset)}&_count=1&_total=accurate`);
    expect(first.status).toBe(200);
    expect(first.body.total).toBe(2);
    expect(first.body.entry).toHaveLength(1);
    const next = first.body.link.find((l: { relation: string }) => l.relation === 'next');
    expect(next).toBeDefined();
    const page2 = await asResearcher(next.url.slice(next.url.indexOf('/fhir/') + '/fhir/'.length));
    expect(page2.status).toBe(200);
    expect(page2.body.entry).toHaveLength(1);
    expect(page2.body.link.find((l: { relation: string }) => l.relation === 'next')).toBeUndefined();
    const ids = [first.body.entry[0].resource.id, page2.body.entry[0].resource.id].sort();
    expect(ids).toEqual([conditionId, second.body.id].sort());
  });

  test('admin still sees everything as stored', async () => {
    const res = await get(t.adminToken, `Patient/${patientId}`);
    expect(res.status).toBe(200);
    expect(res.text).toContain(S);
    expect(res.text).toContain(mrn);
    expect(res.body.birthDate).toBe('1970-04-15');
    const byName = await get(t.adminToken, `Patient?name=${S}`);
    expect(byName.status).toBe(200);
    expect(byName.body.entry.length).toBeGreaterThan(0);
  });
});
