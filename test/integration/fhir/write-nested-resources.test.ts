import request from 'supertest';
import { startFhirTestApp, type FhirTestApp } from './helpers/fhir-app';

/**
 * Writes validate resources nested in the written one (contained, Bundle entries, Parameters
 * parts) against their own type, whatever types were loaded before (src/fhir/validation.ts).
 */
describe('validation of nested resources on write', () => {
  let f: FhirTestApp;
  const post = (path: string, body: unknown) => request(f.express).post(path).set('Content-Type', 'application/fhir+json').send(JSON.stringify(body));

  beforeAll(async () => {
    f = await startFhirTestApp();
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('an invalid resource inside a stored collection Bundle is rejected, naming its element', async () => {
    const res = await post('/fhir/Bundle', {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ fullUrl: 'urn:uuid:0b6c4e0e-4d1c-4bb8-9a59-8d1f0f0a9e11', resource: { resourceType: 'SupplyDelivery', status: 12 } }],
    });
    expect(res.status).toBe(422);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(res.body.issue)).toMatch(/status/);
  });

  test('a valid resource inside a stored collection Bundle is accepted', async () => {
    const res = await post('/fhir/Bundle', {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ fullUrl: 'urn:uuid:1b6c4e0e-4d1c-4bb8-9a59-8d1f0f0a9e12', resource: { resourceType: 'SupplyDelivery', status: 'completed' } }],
    });
    expect(res.status).toBe(201);
  });

  test('an invalid contained resource of another type is rejected', async () => {
    const res = await post('/fhir/Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      contained: [{ resourceType: 'VisionPrescription', id: 'v1', status: 12 }],
    });
    expect(res.status).toBe(422);
    expect(JSON.stringify(res.body.issue)).toMatch(/VisionPrescription|contained/);
  });
});
