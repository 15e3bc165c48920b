import request from 'supertest';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { applyWrites, prepareWrite } from '../../../src/fhir/store/resource-writer';
import { startFhirTestApp, uniq, type FhirTestApp } from './helpers/fhir-app';

/**
 * A search checks in its own page statement whether derived resources must be refreshed first
 * (routes deferRefresh), instead of a round trip before it: when the check holds, it refreshes
 * and searches again; searches that cannot check that way, and other interactions, refresh first.
 */
describe('FHIR search with a deferred refresh', () => {
  let f: FhirTestApp;
  const tag = uniq();
  const defs = loadFhirDefinitions();
  const marker = `refresh_marker_${tag}`;
  let refreshes = 0;
  let deferred = 0;
  let before = 0;
  const api = () => request(f.express);
  const knex = () => f.t.app.db.knex;
  /** What the refresh derives: the Patient it creates, once a marker row asks for it. */
  const refresh = async () => {
    refreshes++;
    const due = (await knex().raw(`DELETE FROM ${marker} RETURNING 1`)).rows.length > 0;
    if (!due) return;
    const w = prepareWrite(defs, { resourceType: 'Patient', id: `derived-${tag}`, name: [{ family: `Fam${tag}` }] }, undefined, 'PUT', new Date());
    await knex().transaction((trx) => applyWrites(trx, [w]));
  };
  const markDue = () => knex().raw(`INSERT INTO ${marker} VALUES (1)`);
  const familySearch = () => api().get(`/fhir/Patient?family=Fam${tag}`);
  const ids = (res: request.Response) => (res.body.entry ?? []).map((e: any) => e.resource.id).sort();

  beforeAll(async () => {
    f = await startFhirTestApp({
      refreshDerived: async () => {
        before++;
        await refresh();
      },
      deferRefresh: () => {
        deferred++;
        return { sql: `EXISTS (SELECT 1 FROM ${marker})`, refresh };
      },
    });
    await knex().raw(`CREATE TABLE ${marker} (x int)`);
    const res = await api().put(`/fhir/Patient/p-${tag}`).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', id: `p-${tag}`, name: [{ family: `Fam${tag}` }] });
    expect(res.status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });
  beforeEach(() => {
    refreshes = 0;
    deferred = 0;
    before = 0;
  });

  test('with nothing to refresh, the search runs once and does not refresh', async () => {
    const statements: string[] = [];
    const listen = (q: { sql: string }) => statements.push(q.sql);
    knex().on('query', listen);
    const res = await familySearch();
    knex().removeListener('query', listen);
    expect(res.status).toBe(200);
    expect(ids(res)).toEqual([`p-${tag}`]);
    expect([deferred, before, refreshes]).toEqual([1, 0, 0]);
    expect(statements.filter((s) => s.includes(marker))).toHaveLength(1);
  });

  test('when the check holds, the search refreshes and answers from the refreshed data', async () => {
    await markDue();
    const res = await familySearch();
    expect(res.status).toBe(200);
    expect(ids(res)).toEqual([`derived-${tag}`, `p-${tag}`]);
    expect([before, refreshes]).toEqual([0, 1]);
  });

  test('a count-only search (no page statement) refreshes first', async () => {
    const res = await api().get(`/fhir/Patient?family=Fam${tag}&_summary=count`);
    expect(res.status).toBe(200);
    expect([before, refreshes]).toEqual([0, 1]);
  });

  test('a search with _total=accurate refreshes first: its count runs in a statement of its own', async () => {
    const res = await api().get(`/fhir/Patient?family=Fam${tag}&_total=accurate`);
    expect(res.status).toBe(200);
    expect(res.body.total).toBe(ids(res).length);
    expect([before, refreshes]).toEqual([0, 1]);
  });

  test('a read refreshes before it runs', async () => {
    const res = await api().get(`/fhir/Patient/p-${tag}`);
    expect(res.status).toBe(200);
    expect([deferred, before, refreshes]).toEqual([0, 1, 1]);
  });
});
