import request from 'supertest';
import { startFhirTestApp, type FhirTestApp } from './helpers/fhir-app';

const PROFILE = 'https://imaging-lake.org/fhir/StructureDefinition/imaging-lake-imagingstudy';

describe('validation on write and $validate', () => {
  let f: FhirTestApp;
  const api = () => request(f.express);
  const json = (req: request.Test) => req.set('Content-Type', 'application/fhir+json');

  beforeAll(async () => {
    f = await startFhirTestApp();
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('create of a resource missing a required element is 422 naming it', async () => {
    const res = await json(api().post('/fhir/Observation')).send({ resourceType: 'Observation', code: { text: 'x' } });
    expect(res.status).toBe(422);
    expect(res.body.issue.map((i: any) => i.expression[0])).toEqual(['Observation.status']);
  });

  test('update with a wrongly typed element is 422 naming it', async () => {
    const res = await json(api().put('/fhir/Patient/v1')).send({ resourceType: 'Patient', id: 'v1', active: 'yes' });
    expect(res.status).toBe(422);
    expect(res.body.issue[0].expression).toEqual(['Patient.active']);
  });

  test('a claimed fhir-profiles/ profile is enforced on create', async () => {
    const res = await json(api().post('/fhir/ImagingStudy')).send({ resourceType: 'ImagingStudy', meta: { profile: [PROFILE] }, status: 'available', subject: { reference: 'Patient/1' } });
    expect(res.status).toBe(422);
    expect(res.body.issue.map((i: any) => i.expression[0])).toEqual(['ImagingStudy.identifier', 'ImagingStudy.started']);
  });

  test('$validate (type level) answers 200 with the issues of an invalid resource', async () => {
    const res = await json(api().post('/fhir/Patient/$validate')).send({ resourceType: 'Patient', birthDate: '31/12/1999' });
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0]).toMatchObject({ severity: 'error', expression: ['Patient.birthDate'] });
  });

  test('$validate of a valid resource answers All OK', async () => {
    const res = await json(api().post('/fhir/Patient/$validate')).send({ resourceType: 'Patient', gender: 'other' });
    expect(res.body.issue).toEqual([{ severity: 'information', code: 'informational', diagnostics: 'All OK', details: { text: 'All OK' } }]);
  });

  test('$validate takes a Parameters with a resource parameter', async () => {
    const res = await json(api().post('/fhir/Patient/$validate')).send({ resourceType: 'Parameters', parameter: [{ name: 'resource', resource: { resourceType: 'Patient', foo: 1 } }] });
    expect(res.body.issue[0].expression).toEqual(['Patient.foo']);
  });

  test('$validate at instance level checks the stored resource', async () => {
    await json(api().put('/fhir/Patient/v2')).send({ resourceType: 'Patient', id: 'v2' });
    const res = await api().get('/fhir/Patient/v2/$validate');
    expect(res.status).toBe(200);
    expect(res.body.issue[0].diagnostics).toBe('All OK');
  });

  test('$validate with a resource of another type is a 400', async () => {
    const res = await json(api().post('/fhir/Patient/$validate')).send({ resourceType: 'Observation' });
    expect(res.status).toBe(400);
  });
});
