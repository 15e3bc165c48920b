import request from 'supertest';
import { startFhirTestApp, type FhirTestApp } from './helpers/fhir-app';

/** The seams later work plugs into: row-level access filters and types served elsewhere. */
describe('FHIR router seams', () => {
  let f: FhirTestApp;
  const api = () => request(f.express);

  beforeAll(async () => {
    f = await startFhirTestApp({
      // Only resources tagged with the caller's project (X-Test-Project) are visible.
      accessFilter: (req) => {
        const project = req.headers['x-test-project'];
        if (typeof project !== 'string') return undefined;
        return (a) => ({ sql: `${a}.content->'meta'->'tag' @> ?::jsonb`, bindings: [JSON.stringify([{ system: 'urn:project', code: project }])] });
      },
      typeHandlers: {
        AuditEvent: async (_ctx, req) => ({ status: 200, headers: {}, body: { resourceType: 'Bundle', type: 'searchset', total: 0, link: [{ relation: 'self', url: req.path }] } }),
      },
    });
    for (const project of ['a', 'b']) {
      await api().put(`/fhir/Patient/in-${project}`).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', id: `in-${project}`, gender: 'female', meta: { tag: [{ system: 'urn:project', code: project }] } });
    }
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('an access filter narrows search', async () => {
    const res = await api().get('/fhir/Patient?gender=female').set('X-Test-Project', 'a');
    expect(res.body.entry.map((e: any) => e.resource.id)).toEqual(['in-a']);
  });

  test('an access filter hides other rows from read (404, not 403: existence is not disclosed)', async () => {
    const res = await api().get('/fhir/Patient/in-b').set('X-Test-Project', 'a');
    expect(res.status).toBe(404);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  test('without a filter everything is visible', async () => {
    expect((await api().get('/fhir/Patient?gender=female')).body.entry).toHaveLength(2);
  });

  test('a type handler serves its type instead of the generic store', async () => {
    const res = await api().get('/fhir/AuditEvent?type=rest');
    expect(res.body).toMatchObject({ resourceType: 'Bundle', total: 0, link: [{ url: '/AuditEvent' }] });
  });
});
