/**
 * Column-level policy for the identified view (issue 5): patient identifiers are the admin's
 * alone. A data manager reads them (and telecom, addresses, contacts) masked and the photo not at
 * all, in reads, searches and Bundles; writing a resource back as it was read keeps the stored
 * values, and a value the data manager does type in is kept.
 */
import request from 'supertest';
import { createFieldMask } from '../../../src/fhir/deid/field-mask';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const MRN = 'MRN-FIELD-4711';

describe('the column-level policy of the identified view', () => {
  let t: TestApp;
  let dm: string;
  let patientId: string;
  const json = 'application/fhir+json';

  beforeAll(async () => {
    t = await startTestApp();
    dm = await t.token('data-manager', ['p-f']);
    const created = await request(t.http)
      .post('/fhir/Patient')
      .set({ 'Content-Type': json, 'X-Project': 'p-f' })
      .send({
        resourceType: 'Patient',
        identifier: [{ system: 'urn:mrn', value: MRN }],
        name: [{ family: 'Fieldson', given: ['Ada'] }],
        telecom: [{ system: 'phone', value: '+44 20 7946 0000', use: 'home' }],
        address: [{ use: 'home', line: ['1 Secret Lane'], city: 'Leeds', postalCode: 'LS1 1AA' }],
        photo: [{ contentType: 'image/png', data: 'iVBORw0KGgo=' }],
        birthDate: '1970-01-02',
      });
    expect(created.status).toBe(201);
    patientId = created.body.id;
  });
  afterAll(async () => {
    await t?.close();
  });

  const asDm = () => ({ Authorization: `Bearer ${dm}` });

  test('a data manager reads identifiers, telecom and addresses masked and no photo; names and dates as stored', async () => {
    const res = await request(t.http).get(`/fhir/Patient/${patientId}`).set(asDm());
    expect(res.status).toBe(200);
    expect(res.text).not.toContain(MRN);
    expect(res.text).not.toContain('7946');
    expect(res.text).not.toContain('Secret Lane');
    expect(res.body.identifier).toEqual([{ system: 'urn:mrn', value: '***' }]);
    expect(res.body.telecom).toEqual([{ system: 'phone', use: 'home', value: '***' }]);
    expect(res.body.address).toEqual([{ use: 'home', text: '***' }]);
    expect(res.body.photo).toBeUndefined();
    expect(res.body.name).toEqual([{ family: 'Fieldson', given: ['Ada'] }]);
    expect(res.body.birthDate).toBe('1970-01-02');
    expect(res.body.meta.security).toEqual([expect.objectContaining({ code: 'REDACTED' })]);
    expect(res.headers['last-modified']).toBeDefined();
    expect(res.headers.etag).toBe('W/"1"');
  });

  test('searches and history mask the same way; the admin sees everything', async () => {
    const search = await request(t.http).get(`/fhir/Patient?identifier=urn:mrn|${MRN}`).set(asDm());
    expect(search.status).toBe(200);
    expect(search.body.entry).toHaveLength(1);
    // The self link repeats the caller's own query; the resource does not carry the value.
    expect(JSON.stringify(search.body.entry)).not.toContain(MRN);
    const history = await request(t.http).get(`/fhir/Patient/${patientId}/_history`).set(asDm());
    expect(history.status).toBe(200);
    expect(history.text).not.toContain(MRN);
    const admin = await request(t.http).get(`/fhir/Patient/${patientId}`);
    expect(admin.body.identifier).toEqual([{ system: 'urn:mrn', value: MRN }]);
    expect(admin.body.photo).toHaveLength(1);
    expect(admin.body.meta.security).toBeUndefined();
  });

  test('writing back what was read keeps the stored values; a value typed in is kept', async () => {
    const read = await request(t.http).get(`/fhir/Patient/${patientId}`).set(asDm());
    const edited = { ...read.body, name: [{ family: 'Fieldson-Smith', given: ['Ada'] }] };
    const put = await request(t.http).put(`/fhir/Patient/${patientId}`).set(asDm()).set('Content-Type', json).send(edited);
    expect(put.status).toBe(200);
    expect(put.text).not.toContain(MRN);
    let admin = await request(t.http).get(`/fhir/Patient/${patientId}`);
    expect(admin.body.name[0].family).toBe('Fieldson-Smith');
    expect(admin.body.identifier).toEqual([{ system: 'urn:mrn', value: MRN }]);
    expect(admin.body.telecom[0].value).toBe('+44 20 7946 0000');
    expect(admin.body.address[0].line).toEqual(['1 Secret Lane']);
    expect(admin.body.photo).toHaveLength(1);
    expect(admin.body.meta.security).toBeUndefined();

    const corrected = { ...edited, identifier: [{ system: 'urn:mrn', value: 'MRN-FIELD-4712' }] };
    expect((await request(t.http).put(`/fhir/Patient/${patientId}`).set(asDm()).set('Content-Type', json).send(corrected)).status).toBe(200);
    admin = await request(t.http).get(`/fhir/Patient/${patientId}`);
    expect(admin.body.identifier).toEqual([{ system: 'urn:mrn', value: 'MRN-FIELD-4712' }]);
    expect(admin.body.telecom[0].value).toBe('+44 20 7946 0000');
  });

  test('an identifier added beside a masked one: both kept; a masked value sent back changed: 422', async () => {
    const read = await request(t.http).get(`/fhir/Patient/${patientId}`).set(asDm());
    const added = { ...read.body, identifier: [...read.body.identifier, { system: 'urn:ssn', value: 'SSN-1' }] };
    expect((await request(t.http).put(`/fhir/Patient/${patientId}`).set(asDm()).set('Content-Type', json).send(added)).status).toBe(200);
    const admin = await request(t.http).get(`/fhir/Patient/${patientId}`);
    expect(admin.body.identifier).toEqual([
      { system: 'urn:mrn', value: 'MRN-FIELD-4712' },
      { system: 'urn:ssn', value: 'SSN-1' },
    ]);
    const reread = await request(t.http).get(`/fhir/Patient/${patientId}`).set(asDm());
    const changed = { ...reread.body, telecom: [{ system: 'phone', use: 'work', value: '***' }] };
    const refused = await request(t.http).put(`/fhir/Patient/${patientId}`).set(asDm()).set('Content-Type', json).send(changed);
    expect(refused.status).toBe(422);
    expect(refused.body.resourceType).toBe('OperationOutcome');
    expect((await request(t.http).get(`/fhir/Patient/${patientId}`)).body.telecom[0].value).toBe('+44 20 7946 0000');
  });

  test('a transaction Bundle update by a data manager keeps the stored values too', async () => {
    const read = await request(t.http).get(`/fhir/Patient/${patientId}`).set(asDm());
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: { ...read.body, gender: 'female' }, request: { method: 'PUT', url: `Patient/${patientId}` } }],
    };
    const res = await request(t.http).post('/fhir').set(asDm()).set('Content-Type', json).send(bundle);
    expect(res.status).toBe(200);
    const admin = await request(t.http).get(`/fhir/Patient/${patientId}`);
    expect(admin.body.gender).toBe('female');
    expect(admin.body.address[0].line).toEqual(['1 Secret Lane']);
    expect(admin.body.telecom[0].value).toBe('+44 20 7946 0000');
  });

  test('DICOM UIDs are names of stored objects, not of a person: they stay', () => {
    const mask = createFieldMask(() => ({ masked: ['identifier'], hidden: [] }));
    return mask
      .transformAnswer({
        status: 200,
        headers: {},
        body: {
          resourceType: 'ImagingStudy',
          status: 'available',
          subject: { reference: 'Patient/x' },
          identifier: [
            { system: 'urn:dicom:uid', value: 'urn:oid:1.2.3' },
            { system: 'urn:acc', value: 'ACC-1' },
          ],
        },
      })
      .then((answer) => {
        expect((answer.body as { identifier: unknown[] }).identifier).toEqual([
          { system: 'urn:dicom:uid', value: 'urn:oid:1.2.3' },
          { system: 'urn:acc', value: '***' },
        ]);
      });
  });
});
