import request from 'supertest';
import { startFhirTestApp, uniq, type FhirTestApp } from './helpers/fhir-app';

/**
 * _include and _revinclude (FHIR R4 3.1.1.5.4) beyond the basics in search.test.ts: wildcards,
 * :iterate over a frontier of several resource types, target-type restrictions, and the access
 * layer's row filter, which must hold for included resources as for matches.
 */
describe('FHIR search _include and _revinclude', () => {
  let f: FhirTestApp;
  /** Resources whose id is listed here are invisible through the row filter. */
  const hidden = new Set<string>();
  const tag = uniq();
  const id = (key: string) => `${key}-${tag}`;
  const api = () => request(f.express);
  const put = async (resource: Record<string, unknown>) => {
    const res = await api().put(`/fhir/${resource.resourceType}/${resource.id}`).set('Content-Type', 'application/fhir+json').send(resource);
    if (res.status !== 201) throw new Error(`${resource.id}: ${res.status} ${JSON.stringify(res.body)}`);
  };
  /** `mode:Type/id` of every entry, matches first as served, includes sorted. */
  const entries = async (query: string) => {
    const res = await api().get(`/fhir/${query}`);
    expect(res.status).toBe(200);
    const all = (res.body.entry ?? []).map((e: any) => `${e.search.mode}:${e.resource.resourceType}/${e.resource.id}`) as string[];
    return [...all.filter((e) => e.startsWith('match:')), ...all.filter((e) => !e.startsWith('match:')).sort()];
  };

  beforeAll(async () => {
    f = await startFhirTestApp({
      accessFilter: () => (alias) => ({ sql: `NOT (${alias}.id = ANY(?::text[]))`, bindings: [[...hidden]] }),
    });
    await put({ resourceType: 'Patient', id: id('p1'), name: [{ family: 'Visible' }] });
    await put({ resourceType: 'Patient', id: id('p2'), name: [{ family: 'Other' }] });
    await put({ resourceType: 'Condition', id: id('c1'), subject: { reference: `Patient/${id('p1')}` }, code: { text: 'one' } });
    await put({ resourceType: 'Condition', id: id('c2'), subject: { reference: `Patient/${id('p1')}` }, code: { text: 'two' } });
    await put({ resourceType: 'Condition', id: id('c3'), subject: { reference: `Patient/${id('p2')}` }, code: { text: 'three' } });
    await put({ resourceType: 'Condition', id: id('c-hidden'), subject: { reference: `Patient/${id('p1')}` }, code: { text: 'secret' } });
    await put({ resourceType: 'Patient', id: id('p-hidden'), name: [{ family: 'Hidden' }] });
    await put({ resourceType: 'Condition', id: id('c4'), subject: { reference: `Patient/${id('p-hidden')}` }, code: { text: 'four' } });
    await put({
      resourceType: 'Provenance',
      id: id('prov'),
      target: [{ reference: `Condition/${id('c3')}` }],
      recorded: '2020-03-02T00:00:00Z',
      agent: [{ who: { reference: `Patient/${id('p1')}` } }],
    });
    await put({ resourceType: 'Group', id: id('g'), type: 'person', actual: true, member: [{ entity: { reference: `Patient/${id('p2')}` } }] });
    hidden.add(id('c-hidden'));
    hidden.add(id('p-hidden'));
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('_revinclude brings every referring resource of each match, in one answer', async () => {
    expect(await entries(`Patient?_id=${id('p1')},${id('p2')}&_revinclude=Condition:patient`)).toEqual([
      `match:Patient/${id('p1')}`,
      `match:Patient/${id('p2')}`,
      `include:Condition/${id('c1')}`,
      `include:Condition/${id('c2')}`,
      `include:Condition/${id('c3')}`,
    ]);
  });

  test('_revinclude leaves out referring resources the row filter hides', async () => {
    expect(await entries(`Patient?_id=${id('p1')}&_revinclude=Condition:subject`)).not.toContain(`include:Condition/${id('c-hidden')}`);
  });

  test('_include leaves out targets the row filter hides', async () => {
    expect(await entries(`Condition?_id=${id('c4')}&_include=Condition:subject`)).toEqual([`match:Condition/${id('c4')}`]);
  });

  test('_revinclude=Type:* follows every reference parameter of the referring type', async () => {
    // The Provenance points at p1 as agent, not as target.
    expect(await entries(`Patient?_id=${id('p1')}&_revinclude=Provenance:*`)).toEqual([`match:Patient/${id('p1')}`, `include:Provenance/${id('prov')}`]);
    expect(await entries(`Patient?_id=${id('p1')}&_revinclude=Provenance:target`)).toEqual([`match:Patient/${id('p1')}`]);
  });

  test('_include=Type:* follows every reference parameter of the match', async () => {
    expect(await entries(`Provenance?_id=${id('prov')}&_include=Provenance:*`)).toEqual([
      `match:Provenance/${id('prov')}`,
      `include:Condition/${id('c3')}`,
      `include:Patient/${id('p1')}`,
    ]);
  });

  test('_include with a target type keeps only targets of that type', async () => {
    expect(await entries(`Provenance?_id=${id('prov')}&_include=Provenance:target:Patient`)).toEqual([`match:Provenance/${id('prov')}`]);
    expect(await entries(`Provenance?_id=${id('prov')}&_include=Provenance:target:Condition`)).toEqual([
      `match:Provenance/${id('prov')}`,
      `include:Condition/${id('c3')}`,
    ]);
  });

  /** The statements a request runs that read the reference index (the page and the include steps). */
  const includeStatements = async (query: string) => {
    const seen: string[] = [];
    const listen = (q: { sql: string }) => {
      if (q.sql.includes('fhir_reference')) seen.push(q.sql);
    };
    f.t.app.db.knex.on('query', listen);
    try {
      await entries(query);
    } finally {
      f.t.app.db.knex.removeListener('query', listen);
    }
    return seen.length;
  };

  test('the first round of _include and _revinclude is read in the same statement as the page', async () => {
    expect(await includeStatements(`Condition?_id=${id('c3')}&_include=Condition:subject&_revinclude=Provenance:target`)).toBe(1);
  });

  test(':iterate rounds after the first are read from the resources found so far', async () => {
    expect(await includeStatements(`Condition?_id=${id('c3')}&_include=Condition:subject&_revinclude=Provenance:target&_revinclude:iterate=Group:member`)).toBeGreaterThan(1);
  });

  test('includes follow the matches of the page only, not the row read to know whether a next page exists', async () => {
    expect(await entries(`Patient?_id=${id('p1')},${id('p2')}&_count=1&_revinclude=Condition:patient`)).toEqual([
      `match:Patient/${id('p1')}`,
      `include:Condition/${id('c1')}`,
      `include:Condition/${id('c2')}`,
    ]);
  });

  test(':iterate reverse-includes from a frontier of several resource types', async () => {
    // Round 1 adds the Patient (include) and the Provenance (revinclude); round 2 looks for
    // Groups pointing at either and finds the Patient's.
    expect(await entries(`Condition?_id=${id('c3')}&_include=Condition:subject&_revinclude=Provenance:target&_revinclude:iterate=Group:member`)).toEqual([
      `match:Condition/${id('c3')}`,
      `include:Group/${id('g')}`,
      `include:Patient/${id('p2')}`,
      `include:Provenance/${id('prov')}`,
    ]);
  });
});
