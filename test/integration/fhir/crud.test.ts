import request from 'supertest';
import { fhirData, startFhirTestApp, uniq, type FhirTestApp } from './helpers/fhir-app';

const FHIR_JSON = 'application/fhir+json';

describe('FHIR R4 instance and type interactions (http 3.1.0)', () => {
  let f: FhirTestApp;
  const api = () => request(f.express);
  const create = (resource: object) => api().post(`/fhir/${(resource as { resourceType: string }).resourceType}`).set('Content-Type', FHIR_JSON).send(resource);
  const patient = (family = `Fam${uniq()}`) => ({ resourceType: 'Patient', name: [{ family, given: ['Ann'] }], gender: 'female', birthDate: '1980-02-03' });
  const idOf = (location: string) => location.match(/\/Patient\/([^/]+)\/_history/)?.[1] as string;

  beforeAll(async () => {
    f = await startFhirTestApp();
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('create answers 201 with Location, ETag, Last-Modified and the stored resource', async () => {
    const res = await create(patient('Create'));
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
    expect(res.headers.location).toMatch(/\/fhir\/Patient\/[0-9a-f-]{36}\/_history\/1$/);
    expect(res.headers.etag).toBe('W/"1"');
    expect(new Date(res.headers['last-modified']).getTime()).toBeGreaterThan(Date.now() - 60000);
    expect(res.body).toMatchObject({ resourceType: 'Patient', id: idOf(res.headers.location), meta: { versionId: '1' }, name: [{ family: 'Create' }] });
  });

  test('create ignores a client id and assigns its own', async () => {
    const res = await create({ ...patient(), id: 'client-chosen' });
    expect(res.body.id).not.toBe('client-chosen');
  });

  test('read returns the current version with ETag and Last-Modified', async () => {
    const id = idOf((await create(patient('Read'))).headers.location);
    const res = await api().get(`/fhir/Patient/${id}`);
    expect(res.status).toBe(200);
    expect(res.headers.etag).toBe('W/"1"');
    expect(res.headers['last-modified']).toMatch(/GMT$/);
    expect(Object.keys(res.body).slice(0, 3)).toEqual(['resourceType', 'id', 'meta']);
    expect(res.body.name[0].family).toBe('Read');
  });

  test('read of an unknown id is a 404 OperationOutcome', async () => {
    const res = await api().get('/fhir/Patient/does-not-exist');
    expect(res.status).toBe(404);
    expect(res.body).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] });
  });

  test('read with a matching If-None-Match is 304', async () => {
    const id = idOf((await create(patient())).headers.location);
    const res = await api().get(`/fhir/Patient/${id}`).set('If-None-Match', 'W/"1"');
    expect(res.status).toBe(304);
  });

  test('an unknown resource type is a 404 OperationOutcome naming it', async () => {
    const res = await api().get('/fhir/Spaceship/1');
    expect(res.status).toBe(404);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].diagnostics).toMatch(/Spaceship/);
  });

  test('an invalid id is a 400', async () => {
    const res = await api().get('/fhir/Patient/bad$id');
    expect(res.status).toBe(400);
    expect(res.body.issue[0].diagnostics).toMatch(/Invalid id/);
  });

  test('update creates a new version; vread returns both', async () => {
    const id = idOf((await create(patient('V1'))).headers.location);
    const up = await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ ...patient('V2'), id });
    expect(up.status).toBe(200);
    expect(up.headers.etag).toBe('W/"2"');
    expect((await api().get(`/fhir/Patient/${id}/_history/1`)).body.name[0].family).toBe('V1');
    expect((await api().get(`/fhir/Patient/${id}/_history/2`)).body.name[0].family).toBe('V2');
  });

  test('vread of a missing version is 404', async () => {
    const id = idOf((await create(patient())).headers.location);
    expect((await api().get(`/fhir/Patient/${id}/_history/9`)).status).toBe(404);
  });

  test('update to a new client id creates it (201, version 1)', async () => {
    const id = `client-${uniq()}`;
    const res = await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ ...patient(), id });
    expect(res.status).toBe(201);
    expect(res.headers.location).toMatch(new RegExp(`/Patient/${id}/_history/1$`));
  });

  test('update with a body id other than the URL id is a 400', async () => {
    const res = await api().put('/fhir/Patient/abc').set('Content-Type', FHIR_JSON).send({ ...patient(), id: 'xyz' });
    expect(res.status).toBe(400);
    expect(res.body.issue[0].diagnostics).toMatch(/does not match/);
  });

  test('update without an id in the body is a 400', async () => {
    const res = await api().put('/fhir/Patient/abc').set('Content-Type', FHIR_JSON).send(patient());
    expect(res.status).toBe(400);
  });

  test('If-Match with the current version updates', async () => {
    const id = idOf((await create(patient())).headers.location);
    const res = await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).set('If-Match', 'W/"1"').send({ ...patient(), id });
    expect(res.status).toBe(200);
  });

  test('If-Match with a stale version is a 412 and changes nothing', async () => {
    const id = idOf((await create(patient('Keep'))).headers.location);
    await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ ...patient('Second'), id });
    const res = await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).set('If-Match', 'W/"1"').send({ ...patient('Lost'), id });
    expect(res.status).toBe(412);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect((await api().get(`/fhir/Patient/${id}`)).body.name[0].family).toBe('Second');
  });

  test('delete answers 200 and the next read is 410 Gone', async () => {
    const id = idOf((await create(patient())).headers.location);
    const del = await api().delete(`/fhir/Patient/${id}`);
    expect(del.status).toBe(200);
    expect(del.body.resourceType).toBe('OperationOutcome');
    const read = await api().get(`/fhir/Patient/${id}`);
    expect(read.status).toBe(410);
    expect(read.body.issue[0].code).toBe('deleted');
    expect(read.headers.etag).toBe('W/"2"');
  });

  test('a deleted resource is no longer found by search', async () => {
    const family = `Gone${uniq()}`;
    const id = idOf((await create(patient(family))).headers.location);
    await api().delete(`/fhir/Patient/${id}`);
    expect((await api().get(`/fhir/Patient?family=${family}`)).body.entry).toEqual([]);
  });

  test('update after delete revives the resource with the next version', async () => {
    const id = idOf((await create(patient())).headers.location);
    await api().delete(`/fhir/Patient/${id}`);
    const res = await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ ...patient(), id });
    expect(res.status).toBe(201);
    expect(res.headers.etag).toBe('W/"3"');
  });

  test('delete of an unknown id is 404', async () => {
    expect((await api().delete('/fhir/Patient/nope-nope')).status).toBe(404);
  });

  test('instance history lists every version newest first, the delete included', async () => {
    const id = idOf((await create(patient('H1'))).headers.location);
    await api().put(`/fhir/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ ...patient('H2'), id });
    await api().delete(`/fhir/Patient/${id}`);
    const res = await api().get(`/fhir/Patient/${id}/_history`);
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('history');
    expect(res.body.entry.map((e: any) => [e.request.method, e.response.etag, e.resource?.name?.[0]?.family])).toEqual([
      ['DELETE', 'W/"3"', undefined],
      ['PUT', 'W/"2"', 'H2'],
      ['POST', 'W/"1"', 'H1'],
    ]);
  });

  test('type history pages with working next links', async () => {
    const t0 = new Date().toISOString();
    for (let i = 0; i < 3; i++) await create({ resourceType: 'Group', type: 'person', actual: true, name: `g${i}` });
    const first = await api().get(`/fhir/Group/_history?_since=${encodeURIComponent(t0)}&_count=2`);
    expect(first.body.entry.map((e: any) => e.resource.name)).toEqual(['g2', 'g1']);
    const next = first.body.link.find((l: any) => l.relation === 'next').url.replace(/^https?:\/\/[^/]+/, '');
    const second = await api().get(next);
    expect(second.body.entry.map((e: any) => e.resource.name)).toEqual(['g0']);
    expect(second.body.link.some((l: any) => l.relation === 'next')).toBe(false);
  });

  test('conditional create with a match returns the existing resource and creates nothing', async () => {
    const system = `urn:test:${uniq()}`;
    const body = { ...patient(), identifier: [{ system, value: '1' }] };
    const first = await create(body);
    const again = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).set('If-None-Exist', `identifier=${system}|1`).send(body);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
    expect((await api().get(`/fhir/Patient?identifier=${system}|1&_summary=count`)).body.total).toBe(1);
  });

  test('conditional create with no match creates', async () => {
    const system = `urn:test:${uniq()}`;
    const res = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).set('If-None-Exist', `identifier=${system}|1`).send({ ...patient(), identifier: [{ system, value: '1' }] });
    expect(res.status).toBe(201);
  });

  test('conditional create matching several is 412', async () => {
    const family = `Dup${uniq()}`;
    await create(patient(family));
    await create(patient(family));
    const res = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).set('If-None-Exist', `family=${family}`).send(patient(family));
    expect(res.status).toBe(412);
  });

  test('conditional update with no match creates, with one match updates', async () => {
    const system = `urn:test:${uniq()}`;
    const body = { ...patient('C1'), identifier: [{ system, value: '9' }] };
    const created = await api().put(`/fhir/Patient?identifier=${system}|9`).set('Content-Type', FHIR_JSON).send(body);
    expect(created.status).toBe(201);
    const updated = await api().put(`/fhir/Patient?identifier=${system}|9`).set('Content-Type', FHIR_JSON).send({ ...body, name: [{ family: 'C2' }] });
    expect(updated.status).toBe(200);
    expect(updated.body.id).toBe(created.body.id);
    expect(updated.headers.etag).toBe('W/"2"');
  });

  test('conditional update matching several is 412', async () => {
    const family = `Many${uniq()}`;
    await create(patient(family));
    await create(patient(family));
    const res = await api().put(`/fhir/Patient?family=${family}`).set('Content-Type', FHIR_JSON).send(patient(family));
    expect(res.status).toBe(412);
  });

  test('conditional delete removes the single match', async () => {
    const system = `urn:test:${uniq()}`;
    const id = (await create({ ...patient(), identifier: [{ system, value: '5' }] })).body.id;
    expect((await api().delete(`/fhir/Patient?identifier=${system}|5`)).status).toBe(200);
    expect((await api().get(`/fhir/Patient/${id}`)).status).toBe(410);
  });

  test('Prefer: return=minimal answers without a body', async () => {
    const res = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).set('Prefer', 'return=minimal').send(patient());
    expect(res.status).toBe(201);
    expect(res.text).toBe('');
    expect(res.headers.location).toBeDefined();
  });

  test('Prefer: return=OperationOutcome answers with an OperationOutcome', async () => {
    const res = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).set('Prefer', 'return=OperationOutcome').send(patient());
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].severity).toBe('information');
  });

  test('application/json is accepted and answered as application/json when asked', async () => {
    const res = await api().post('/fhir/Patient').set('Content-Type', 'application/json').set('Accept', 'application/json').send(patient());
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
  });

  test('an XML body is 415 with an OperationOutcome', async () => {
    const res = await api().post('/fhir/Patient').set('Content-Type', 'application/fhir+xml').send('<Patient xmlns="http://hl7.org/fhir"/>');
    expect(res.status).toBe(415);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  test('asking for XML is 406 with an OperationOutcome', async () => {
    const res = await api().get('/fhir/Patient?_format=xml');
    expect(res.status).toBe(406);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.headers['content-type']).toMatch(/application\/fhir\+json/);
  });

  test('malformed JSON is a 400 OperationOutcome, not a 500', async () => {
    const res = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).send('{"resourceType": "Patient",');
    expect(res.status).toBe(400);
    expect(res.body.issue[0].code).toBe('structure');
  });

  test('a method the endpoint does not allow is 405', async () => {
    const res = await api().patch('/fhir/Patient/1').set('Content-Type', FHIR_JSON).send({});
    expect(res.status).toBe(405);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  test('a body type other than the URL type is a 400', async () => {
    const res = await api().post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Observation', status: 'final', code: { text: 'x' } });
    expect(res.status).toBe(400);
  });

  test('an invalid resource is a 422 naming the element', async () => {
    const res = await create({ resourceType: 'Patient', birthDate: 'not-a-date' });
    expect(res.status).toBe(422);
    expect(res.body.issue[0].expression).toEqual(['Patient.birthDate']);
  });

  test('a type valid in R4 but not specially handled (Claim) is stored and readable', async () => {
    const claim = fhirData('synthea-r4', 'Chet_Thompson_eda17701-070d-4fae-9f7d-c8cd6263b63a.json').entry.find((e: any) => e.resource.resourceType === 'Claim').resource;
    const res = await create({ ...claim, patient: { reference: 'Patient/x' }, provider: { reference: 'Organization/y' }, prescription: undefined, item: claim.item.map((i: any) => ({ ...i, encounter: undefined })) });
    expect(res.status).toBe(201);
    expect((await api().get(`/fhir/Claim/${res.body.id}`)).body.total.value).toBe(claim.total.value);
  });

  test('AuditEvent is server-written: client create is 405', async () => {
    const res = await create(fhirData('r4-examples', 'AuditEvent-example.json'));
    expect(res.status).toBe(405);
    expect(res.body.issue[0].diagnostics).toMatch(/server/);
  });

  test('metadata is an R4 CapabilityStatement in JSON', async () => {
    const res = await api().get('/fhir/metadata');
    expect(res.status).toBe(200);
    expect([res.body.resourceType, res.body.fhirVersion, res.body.format]).toEqual(['CapabilityStatement', '4.0.1', ['json']]);
    expect(res.body.rest[0].resource.find((r: any) => r.type === 'Patient').interaction.map((i: any) => i.code)).toContain('vread');
  });
});
