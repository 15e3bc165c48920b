import request from 'supertest';
import { fhirData, startFhirTestApp, syntheaBundles, uniq, type FhirTestApp } from './helpers/fhir-app';
import fs from 'node:fs';

const FHIR_JSON = 'application/fhir+json';

describe('batch and transaction Bundles (FHIR R4 http 3.1.0.11)', () => {
  let f: FhirTestApp;
  const api = () => request(f.express);
  const post = (bundle: object, headers: Record<string, string> = {}) => api().post('/fhir').set('Content-Type', FHIR_JSON).set(headers).send(bundle);
  const count = async (query: string) => (await api().get(`/fhir/${query}${query.includes('?') ? '&' : '?'}_summary=count`)).body.total as number;
  const tx = (entry: object[]) => ({ resourceType: 'Bundle', type: 'transaction', entry });
  const patientEntry = (fullUrl: string, system: string, value = '1') => ({
    fullUrl,
    resource: { resourceType: 'Patient', identifier: [{ system, value }], name: [{ family: 'Tx' }] },
    request: { method: 'POST', url: 'Patient' },
  });
  const obsEntry = (subject: string) => ({
    fullUrl: `urn:uuid:${crypto.randomUUID()}`,
    resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: subject } },
    request: { method: 'POST', url: 'Observation' },
  });

  beforeAll(async () => {
    f = await startFhirTestApp();
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('a transaction resolves urn:uuid references to the ids it assigns', async () => {
    const system = `urn:t:${uniq()}`;
    const pUrl = `urn:uuid:${crypto.randomUUID()}`;
    const res = await post(tx([obsEntry(pUrl), patientEntry(pUrl, system)]));
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('transaction-response');
    expect(res.body.entry.map((e: any) => e.response.status)).toEqual(['201 Created', '201 Created']);
    const patientId = res.body.entry[1].response.location.split('/')[1];
    const obs = await api().get(`/fhir/${res.body.entry[0].response.location.replace(/\/_history.*/, '')}`);
    expect(obs.body.subject.reference).toBe(`Patient/${patientId}`);
  });

  test('one invalid entry rolls the whole transaction back and names the entry', async () => {
    const system = `urn:t:${uniq()}`;
    const bad = { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final' } };
    const res = await post(tx([patientEntry(`urn:uuid:${crypto.randomUUID()}`, system), bad]));
    expect(res.status).toBe(422);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].expression).toContain('Bundle.entry[1]');
    expect(res.body.issue[0].expression).toContain('Bundle.entry[1].resource.Observation.code');
    expect(await count(`Patient?identifier=${system}|`)).toBe(0);
  });

  test('in a transaction large enough for the validation workers, an invalid last entry still rolls everything back', async () => {
    const system = `urn:t:${uniq()}`;
    const entries: object[] = Array.from({ length: 150 }, (_, i) => patientEntry(`urn:uuid:${crypto.randomUUID()}`, system, String(i)));
    entries.push({ request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final' } });
    const res = await post(tx(entries));
    expect(res.status).toBe(422);
    expect(res.body.issue[0].expression).toContain('Bundle.entry[150].resource.Observation.code');
    expect(await count(`Patient?identifier=${system}|`)).toBe(0);
  });

  test('a value that is invalid and also unwritable is reported as the invalid element', async () => {
    const system = `urn:t:${uniq()}`;
    const entries: object[] = Array.from({ length: 120 }, (_, i) => patientEntry(`urn:uuid:${crypto.randomUUID()}`, system, String(i)));
    // A NUL character is not a FHIR string, and PostgreSQL cannot store it either: the write of
    // the first chunk fails in the database while (or after) the validators reject the entry.
    const bad = patientEntry(`urn:uuid:${crypto.randomUUID()}`, system, 'bad') as { resource: Record<string, unknown> };
    bad.resource.name = [{ family: 'Nul\u0000Char' }];
    entries.unshift(bad);
    const res = await post(tx(entries));
    expect(res.status).toBe(422);
    expect(res.body.issue[0].expression).toContain('Bundle.entry[0].resource.Patient.name[0].family');
    expect(await count(`Patient?identifier=${system}|`)).toBe(0);
  });

  test('an entry for an unknown resource type rolls back with a 404', async () => {
    const system = `urn:t:${uniq()}`;
    const res = await post(tx([patientEntry(`urn:uuid:${crypto.randomUUID()}`, system), { request: { method: 'POST', url: 'Spaceship' }, resource: { resourceType: 'Spaceship' } }]));
    expect(res.status).toBe(404);
    expect(await count(`Patient?identifier=${system}|`)).toBe(0);
  });

  test('conditional create (ifNoneExist) reuses the match and rewrites references to it', async () => {
    const system = `urn:t:${uniq()}`;
    const existing = (await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', identifier: [{ system, value: '1' }] })).body;
    const pUrl = `urn:uuid:${crypto.randomUUID()}`;
    const entry = { ...patientEntry(pUrl, system), request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${system}|1` } };
    const res = await post(tx([entry, obsEntry(pUrl)]));
    expect(res.body.entry[0].response.status).toBe('200 OK');
    const obs = await api().get(`/fhir/${res.body.entry[1].response.location.replace(/\/_history.*/, '')}`);
    expect(obs.body.subject.reference).toBe(`Patient/${existing.id}`);
    expect(await count(`Patient?identifier=${system}|`)).toBe(1);
  });

  test('a conditional reference resolves to the one matching resource', async () => {
    const system = `urn:t:${uniq()}`;
    const existing = (await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', identifier: [{ system, value: '7' }] })).body;
    const res = await post(tx([obsEntry(`Patient?identifier=${system}|7`)]));
    expect(res.status).toBe(200);
    const obs = await api().get(`/fhir/${res.body.entry[0].response.location.replace(/\/_history.*/, '')}`);
    expect(obs.body.subject.reference).toBe(`Patient/${existing.id}`);
  });

  test('a conditional reference with no match fails the transaction with 412', async () => {
    const res = await post(tx([obsEntry(`Patient?identifier=urn:none:${uniq()}|7`)]));
    expect(res.status).toBe(412);
    expect(res.body.issue[0].diagnostics).toMatch(/matched no/);
  });

  test('GET entries run after the writes and see them (processing order DELETE, POST, PUT, GET)', async () => {
    const system = `urn:t:${uniq()}`;
    const res = await post(tx([{ request: { method: 'GET', url: `Patient?identifier=${system}|1` } }, patientEntry(`urn:uuid:${crypto.randomUUID()}`, system)]));
    expect(res.body.entry[0].response.status).toBe('200 OK');
    expect(res.body.entry[0].resource.entry).toHaveLength(1);
  });

  test('DELETE and PUT entries in one transaction', async () => {
    const a = (await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', gender: 'male' })).body;
    const id = `tx-${uniq()}`;
    const res = await post(
      tx([
        { request: { method: 'PUT', url: `Patient/${id}` }, resource: { resourceType: 'Patient', id, gender: 'female' } },
        { request: { method: 'DELETE', url: `Patient/${a.id}` } },
      ]),
    );
    expect(res.body.entry.map((e: any) => e.response.status)).toEqual(['201 Created', '204 No Content']);
    expect((await api().get(`/fhir/Patient/${a.id}`)).status).toBe(410);
    expect((await api().get(`/fhir/Patient/${id}`)).body.gender).toBe('female');
  });

  test('a PUT with a stale ifMatch fails the transaction with 412 and writes nothing', async () => {
    const id = `tx-${uniq()}`;
    await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', id });
    const system = `urn:t:${uniq()}`;
    const res = await post(tx([patientEntry(`urn:uuid:${crypto.randomUUID()}`, system), { request: { method: 'PUT', url: `Patient/${id}`, ifMatch: 'W/"5"' }, resource: { resourceType: 'Patient', id } }]));
    expect(res.status).toBe(412);
    expect(await count(`Patient?identifier=${system}|`)).toBe(0);
  });

  test('the same resource twice in one transaction is a 400', async () => {
    const id = `tx-${uniq()}`;
    const put = { request: { method: 'PUT', url: `Patient/${id}` }, resource: { resourceType: 'Patient', id } };
    expect((await post(tx([put, put]))).status).toBe(400);
  });

  test('a batch reports each entry on its own and keeps the good ones', async () => {
    const system = `urn:t:${uniq()}`;
    const res = await post({
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        patientEntry(`urn:uuid:${crypto.randomUUID()}`, system),
        { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final' } },
        { request: { method: 'GET', url: 'Patient/no-such-patient' } },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('batch-response');
    expect(res.body.entry.map((e: any) => e.response.status)).toEqual(['201 Created', '422 Unprocessable Entity', '404 Not Found']);
    expect(res.body.entry[1].response.outcome.issue[0].expression).toEqual(['Observation.code']);
    expect(await count(`Patient?identifier=${system}|`)).toBe(1);
  });

  test('Prefer: return=minimal leaves resources out of the response', async () => {
    const res = await post(tx([patientEntry(`urn:uuid:${crypto.randomUUID()}`, `urn:t:${uniq()}`)]), { Prefer: 'return=minimal' });
    expect(res.body.entry[0].resource).toBeUndefined();
    expect(res.body.entry[0].response.etag).toBe('W/"1"');
  });

  test('POST to the base with something other than a batch or transaction is a 400', async () => {
    expect((await post({ resourceType: 'Bundle', type: 'collection' })).status).toBe(400);
    expect((await post({ resourceType: 'Patient' })).status).toBe(400);
  });

  test('the R4 example transaction fails on its delete of a missing Patient (processed first) and writes nothing', async () => {
    const res = await post(fhirData('r4-examples', 'Bundle-bundle-transaction.json'));
    expect(res.status).toBe(404);
    expect(res.body.issue[0].diagnostics).toMatch(/^Bundle\.entry\[5\] \(DELETE Patient\/234\)/);
    expect((await api().get('/fhir/Patient/123')).status).toBe(404);
  });

  test('the Synthea transaction Bundles load as they are, with every reference resolved', async () => {
    let loaded = 0;
    for (const file of syntheaBundles()) {
      const bundle = JSON.parse(fs.readFileSync(file, 'utf8'));
      const res = await post(bundle, { Prefer: 'return=minimal' });
      expect(res.status).toBe(200);
      expect(res.body.entry.every((e: any) => e.response.status === '201 Created')).toBe(true);
      loaded += bundle.entry.length;
    }
    expect(loaded).toBe(759);
    const estrella = (await api().get('/fhir/Patient?given=estrella')).body.entry[0].resource;
    expect(await count(`Observation?subject=Patient/${estrella.id}`)).toBe(151);
    const eob = (await api().get(`/fhir/ExplanationOfBenefit?patient=${estrella.id}&_count=1`)).body.entry[0].resource;
    expect(eob.patient.reference).toBe(`Patient/${estrella.id}`);
    expect((await api().get(`/fhir/${eob.patient.reference}`)).status).toBe(200);
    expect(await count('ImagingStudy')).toBe(1);
  });
});
