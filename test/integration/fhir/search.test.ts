import request from 'supertest';
import { startFhirTestApp, type FhirTestApp } from './helpers/fhir-app';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const UCUM = 'http://unitsofmeasure.org';

describe('FHIR R4 search (3.1.1) over the index tables', () => {
  let f: FhirTestApp;
  const ids: Record<string, string> = {};
  const api = () => request(f.express);
  const put = async (key: string, resource: Record<string, unknown>) => {
    const id = `${key}-${Math.random().toString(36).slice(2, 8)}`;
    const res = await api().put(`/fhir/${resource.resourceType}/${id}`).set('Content-Type', 'application/fhir+json').send({ ...resource, id });
    if (res.status !== 201) throw new Error(`${key}: ${res.status} ${JSON.stringify(res.body)}`);
    ids[key] = id;
  };
  /** Ids (as fixture keys) of the matches of a search. */
  const find = async (query: string, headers: Record<string, string> = {}) => {
    const res = await api().get(`/fhir/${query}`).set(headers);
    if (res.status !== 200) throw new Error(`${query}: ${res.status} ${JSON.stringify(res.body)}`);
    const byId = new Map(Object.entries(ids).map(([k, v]) => [v, k]));
    return (res.body.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => byId.get(e.resource.id) ?? e.resource.id).sort();
  };

  beforeAll(async () => {
    f = await startFhirTestApp();
    await put('p1', {
      resourceType: 'Patient',
      identifier: [{ system: 'urn:mrn', value: 'A1' }],
      active: true,
      name: [{ family: 'Chalmers', given: ['Peter', 'James'] }],
      gender: 'male',
      birthDate: '1974-12-25',
      address: [{ city: 'Zürich' }],
      meta: { tag: [{ system: 'urn:cohort', code: 'glaucoma' }] },
    });
    await put('p2', { resourceType: 'Patient', identifier: [{ system: 'urn:mrn', value: 'A2' }], active: false, name: [{ family: 'chalmersson', given: ['Anna'] }], gender: 'female', birthDate: '1974-03-01' });
    await put('p3', { resourceType: 'Patient', identifier: [{ system: 'urn:other', value: 'A1' }], name: [{ family: 'Müller', given: ['Jörg'] }], gender: 'male', birthDate: '1990-06-15' });
    await put('p4', { resourceType: 'Patient', name: [{ family: 'Nobirth' }], gender: 'unknown' });
    await put('c1', {
      resourceType: 'Condition',
      subject: { reference: `Patient/${ids.p1}` },
      code: { coding: [{ system: ICD10, code: 'H47.011', display: 'Ischemic optic neuropathy, right eye' }], text: 'Ischemic optic neuropathy' },
      onsetDateTime: '2020-03-01',
    });
    await put('c2', { resourceType: 'Condition', subject: { reference: `Patient/${ids.p3}` }, code: { coding: [{ system: ICD10, code: 'H47.1', display: 'Papilledema' }] }, onsetPeriod: { start: '2021-01-10' } });
    await put('c3', { resourceType: 'Condition', subject: { reference: `Patient/${ids.p1}` }, code: { coding: [{ system: ICD10, code: 'E11.9', display: 'Type 2 diabetes mellitus' }] }, onsetDateTime: '2019-07' });
    await put('o1', { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] }, subject: { reference: `Patient/${ids.p1}` }, effectiveDateTime: '2020-03-01T10:00:00Z', valueQuantity: { value: 5.4, unit: 'mg', system: UCUM, code: 'mg' } });
    await put('o2', { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] }, subject: { reference: `Patient/${ids.p3}` }, effectiveDateTime: '2021-05-05T10:00:00Z', valueQuantity: { value: 120, unit: 'mg/dL', system: UCUM, code: 'mg/dL' } });
    await put('g1', { resourceType: 'Group', type: 'person', actual: true, name: 'Glaucoma cohort', member: [{ entity: { reference: `Patient/${ids.p1}` } }, { entity: { reference: `Patient/${ids.p3}` } }] });
    await put('r1', { resourceType: 'RiskAssessment', status: 'final', subject: { reference: `Patient/${ids.p1}` }, prediction: [{ probabilityDecimal: 0.52 }] });
    await put('r2', { resourceType: 'RiskAssessment', status: 'final', subject: { reference: `Patient/${ids.p3}` }, prediction: [{ probabilityDecimal: 0.9 }] });
    await put('v1', { resourceType: 'ValueSet', status: 'active', url: 'http://example.org/fhir/ValueSet/eyes' });
    await put('v2', { resourceType: 'ValueSet', status: 'active', url: 'http://example.org/other/ValueSet/ears' });
    await put('prov1', { resourceType: 'Provenance', target: [{ reference: `Condition/${ids.c1}` }], recorded: '2020-03-02T00:00:00Z', agent: [{ who: { reference: `Patient/${ids.p1}` } }] });
    await put('s1', {
      resourceType: 'ImagingStudy',
      status: 'available',
      subject: { reference: `Patient/${ids.p1}` },
      series: [{ uid: '1.2.3.4', modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' }, laterality: { system: 'http://snomed.info/sct', code: '24028007', display: 'Right' } }],
    });
    await put('s2', {
      resourceType: 'ImagingStudy',
      status: 'available',
      subject: { reference: `Patient/${ids.p3}`, identifier: { system: 'urn:mrn', value: 'B9' } },
      series: [{ uid: '1.2.3.5', modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' }, laterality: { system: 'http://snomed.info/sct', code: '7771000', display: 'Left' } }],
    });
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  describe('string', () => {
    test('matches a case-insensitive prefix by default', async () => expect(await find('Patient?family=chalm')).toEqual(['p1', 'p2']));
    test('ignores accents', async () => expect(await find('Patient?family=muller')).toEqual(['p3']));
    test(':exact matches the whole value, case and accents included', async () => {
      expect(await find('Patient?family:exact=Chalmers')).toEqual(['p1']);
      expect(await find('Patient?family:exact=chalmers')).toEqual([]);
    });
    test(':contains matches inside the value', async () => expect(await find('Patient?family:contains=almer')).toEqual(['p1', 'p2']));
    test('name matches any part of the HumanName', async () => expect(await find('Patient?name=jam')).toEqual(['p1']));
    test('address-city matches with accents folded', async () => expect(await find('Patient?address-city=zurich')).toEqual(['p1']));
  });

  describe('token', () => {
    test('code alone matches any system', async () => expect(await find('Patient?identifier=A1')).toEqual(['p1', 'p3']));
    test('system|code matches both', async () => expect(await find('Patient?identifier=urn:mrn|A1')).toEqual(['p1']));
    test('system| matches any code in the system', async () => expect(await find('Patient?identifier=urn:mrn|')).toEqual(['p1', 'p2']));
    test('|code matches codes without a system', async () => expect(await find('Patient?gender=|male')).toEqual(['p1', 'p3']));
    test('comma values are ORed', async () => expect(await find('Patient?gender=female,unknown')).toEqual(['p2', 'p4']));
    test('booleans are tokens', async () => expect(await find('Patient?active=false')).toEqual(['p2']));
    test(':not excludes matches, including resources without the value', async () => expect(await find('Patient?gender:not=male')).toEqual(['p2', 'p4']));
    test(':below matches an ICD-10 code prefix (H47.01 finds H47.011)', async () => {
      expect(await find(`Condition?code:below=${ICD10}|H47.01`)).toEqual(['c1']);
      expect(await find('Condition?code:below=H47')).toEqual(['c1', 'c2']);
    });
    test(':text matches a word prefix of the display or text', async () => expect(await find('Condition?code:text=optic')).toEqual(['c1']));
    test('_tag searches meta.tag', async () => expect(await find('Patient?_tag=urn:cohort|glaucoma')).toEqual(['p1']));
    test('our laterality SearchParameter finds right-eye studies', async () => expect(await find('ImagingStudy?laterality=http://snomed.info/sct|24028007')).toEqual(['s1']));
  });

  describe('date', () => {
    test('eq with day precision', async () => expect(await find('Patient?birthdate=1974-12-25')).toEqual(['p1']));
    test('eq with year precision matches any day in it', async () => expect(await find('Patient?birthdate=1974')).toEqual(['p1', 'p2']));
    test('gt and lt', async () => {
      expect(await find('Patient?birthdate=gt1980')).toEqual(['p3']);
      expect(await find('Patient?birthdate=lt1974-06')).toEqual(['p2']);
    });
    test('ge and le include the boundary day', async () => {
      expect(await find('Patient?birthdate=ge1974-12-25')).toEqual(['p1', 'p3']);
      expect(await find('Patient?birthdate=le1974-03-01')).toEqual(['p2']);
    });
    test('ne excludes the day', async () => expect(await find('Patient?birthdate=ne1974-12-25')).toEqual(['p2', 'p3']));
    test('sa and eb', async () => {
      expect(await find('Condition?onset-date=sa2020-12-31')).toEqual(['c2']);
      expect(await find('Condition?onset-date=eb2020-01-01')).toEqual(['c3']);
    });
    test('ap matches within 10% of the distance to now', async () => expect(await find('Observation?date=ap2021-05-01')).toEqual(['o2']));
    test('an open Period extends to infinity for gt', async () => expect(await find('Condition?onset-date=gt2030-01-01')).toEqual(['c2']));
    test('two date filters AND into a range', async () => expect(await find('Observation?date=ge2020-01-01&date=lt2021-01-01')).toEqual(['o1']));
    test(':missing=true finds resources without the value', async () => expect(await find('Patient?birthdate:missing=true')).toEqual(['p4']));
    test(':missing=false finds resources with the value', async () => expect(await find('Patient?birthdate:missing=false')).toEqual(['p1', 'p2', 'p3']));
    test('a malformed date is a 400 OperationOutcome', async () => {
      const res = await api().get('/fhir/Patient?birthdate=1974-13');
      expect(res.status).toBe(400);
      expect(res.body.issue[0].diagnostics).toMatch(/birthdate/);
    });
  });

  describe('number and quantity', () => {
    test('number eq uses the precision of the value: 0.5 matches 0.52', async () => expect(await find('RiskAssessment?probability=0.5')).toEqual(['r1']));
    test('number eq with more precision does not: 0.50', async () => expect(await find('RiskAssessment?probability=0.50')).toEqual([]));
    test('number gt', async () => expect(await find('RiskAssessment?probability=gt0.6')).toEqual(['r2']));
    test('quantity with system and code', async () => expect(await find(`Observation?value-quantity=5.4|${UCUM}|mg`)).toEqual(['o1']));
    test('quantity gt with only a code', async () => expect(await find('Observation?value-quantity=gt100||mg/dL')).toEqual(['o2']));
    test('quantity le without units', async () => expect(await find('Observation?value-quantity=le10')).toEqual(['o1']));
  });

  describe('reference', () => {
    test('Type/id', async () => expect(await find(`Condition?subject=Patient/${ids.p1}`)).toEqual(['c1', 'c3']));
    test('a bare id', async () => expect(await find(`Condition?subject=${ids.p3}`)).toEqual(['c2']));
    test('the patient parameter (subject restricted to Patient)', async () => expect(await find(`Observation?patient=${ids.p3}`)).toEqual(['o2']));
    test('a type modifier', async () => expect(await find(`Condition?subject:Patient=${ids.p3}`)).toEqual(['c2']));
    test('an absolute URL to this server', async () => {
      const res = await api().get(`/fhir/Condition?subject=http://127.0.0.1/fhir/Patient/${ids.p3}`).set('Host', '127.0.0.1');
      expect(res.body.entry.map((e: any) => e.resource.id)).toEqual([ids.c2]);
    });
    test(':identifier matches Reference.identifier', async () => expect(await find('ImagingStudy?subject:identifier=urn:mrn|B9')).toEqual(['s2']));
    test('Group member', async () => expect(await find(`Group?member=Patient/${ids.p3}`)).toEqual(['g1']));
  });

  describe('uri', () => {
    test('exact', async () => expect(await find('ValueSet?url=http://example.org/fhir/ValueSet/eyes')).toEqual(['v1']));
    test(':below matches a path prefix', async () => expect(await find('ValueSet?url:below=http://example.org/fhir')).toEqual(['v1']));
    test(':above matches a parent', async () => expect(await find('ValueSet?url:above=http://example.org/fhir/ValueSet/eyes/v2')).toEqual(['v1']));
  });

  describe('chains', () => {
    test('typed chain subject:Patient.identifier', async () => expect(await find('Condition?subject:Patient.identifier=urn:mrn|A1')).toEqual(['c1', 'c3']));
    test('untyped chain patient.name', async () => expect(await find('Observation?patient.name=jorg')).toEqual(['o2']));
    test('two-level chain', async () => expect(await find('Provenance?target:Condition.subject:Patient.family=chalmers')).toEqual(['prov1']));
  });

  describe('_id and _lastUpdated', () => {
    test('_id with several ids', async () => expect(await find(`Patient?_id=${ids.p1},${ids.p4}`)).toEqual(['p1', 'p4']));
    test('_lastUpdated gt a past instant finds everything; lt finds nothing', async () => {
      expect(await find('Patient?_lastUpdated=gt2000-01-01')).toEqual(['p1', 'p2', 'p3', 'p4']);
      expect(await find('Patient?_lastUpdated=lt2000-01-01')).toEqual([]);
    });
  });

  describe('includes', () => {
    test('_include adds the referenced patients with search mode include', async () => {
      const res = await api().get(`/fhir/Condition?code=${ICD10}|H47.1&_include=Condition:subject`);
      expect(res.body.entry.map((e: any) => [e.resource.resourceType, e.search.mode])).toEqual([
        ['Condition', 'match'],
        ['Patient', 'include'],
      ]);
      expect(res.body.entry[1].resource.id).toBe(ids.p3);
    });
    test('_revinclude adds resources pointing at the matches', async () => {
      const res = await api().get(`/fhir/Condition?_id=${ids.c1}&_revinclude=Provenance:target`);
      expect(res.body.entry.map((e: any) => e.resource.id)).toEqual([ids.c1, ids.prov1]);
    });
    test(':iterate follows included resources', async () => {
      const res = await api().get(`/fhir/Condition?_id=${ids.c2}&_include=Condition:subject&_revinclude:iterate=Group:member`);
      expect(res.body.entry.map((e: any) => e.resource.id)).toEqual([ids.c2, ids.p3, ids.g1]);
    });
  });

  describe('sorting and paging', () => {
    test('_sort ascending and descending on several keys', async () => {
      const ordered = async (q: string) => ((await api().get(`/fhir/${q}`)).body.entry as any[]).map((e) => e.resource.id);
      expect(await ordered('Patient?_sort=birthdate')).toEqual([ids.p2, ids.p1, ids.p3, ids.p4]);
      expect(await ordered('Patient?_sort=-birthdate')).toEqual([ids.p3, ids.p1, ids.p2, ids.p4]);
      expect(await ordered('Patient?_sort=gender,-family')).toEqual([ids.p2, ids.p3, ids.p1, ids.p4]);
    });
    test('next links walk every page exactly once, and previous links go back', async () => {
      const seen: string[] = [];
      let url: string | undefined = '/fhir/Patient?_sort=family&_count=3';
      let pages = 0;
      let last: any;
      while (url) {
        last = (await api().get(url)).body;
        seen.push(...last.entry.map((e: any) => e.resource.id));
        url = last.link.find((l: any) => l.relation === 'next')?.url.replace(/^https?:\/\/[^/]+/, '');
        pages++;
      }
      expect(pages).toBe(2);
      expect(seen).toEqual([ids.p1, ids.p2, ids.p3, ids.p4]);
      const prev = last.link.find((l: any) => l.relation === 'previous').url.replace(/^https?:\/\/[^/]+/, '');
      expect((await api().get(prev)).body.entry.map((e: any) => e.resource.id)).toEqual([ids.p1, ids.p2, ids.p3]);
    });
    test('the self link reproduces the search', async () => {
      const first = (await api().get('/fhir/Patient?gender=male&_count=1')).body;
      const self = first.link.find((l: any) => l.relation === 'self').url.replace(/^https?:\/\/[^/]+/, '');
      expect((await api().get(self)).body.entry[0].resource.id).toBe(first.entry[0].resource.id);
    });
  });

  describe('result parameters', () => {
    test('no total unless asked', async () => expect((await api().get('/fhir/Patient')).body.total).toBeUndefined());
    test('_total=accurate counts all matches, not the page', async () => expect((await api().get('/fhir/Patient?_total=accurate&_count=1')).body.total).toBe(4));
    test('_summary=count answers only the total', async () => {
      const body = (await api().get('/fhir/Patient?gender=male&_summary=count')).body;
      expect([body.total, body.entry]).toEqual([2, []]);
    });
    test('_elements returns only those elements and marks the resource SUBSETTED', async () => {
      const r = (await api().get(`/fhir/Patient?_id=${ids.p1}&_elements=gender`)).body.entry[0].resource;
      expect(Object.keys(r).sort()).toEqual(['gender', 'id', 'meta', 'resourceType']);
      expect(r.meta.tag.map((t: any) => t.code)).toContain('SUBSETTED');
    });
    test('_summary=true keeps summary elements only', async () => {
      const r = (await api().get(`/fhir/Patient?_id=${ids.p1}&_summary=true`)).body.entry[0].resource;
      expect(r.name).toBeDefined();
      expect(r.address).toBeDefined();
    });
  });

  describe('unknown parameters', () => {
    test('lenient (default): ignored, reported in an outcome entry, left out of the self link', async () => {
      const body = (await api().get('/fhir/Patient?family:exact=Chalmers&frobnicate=1')).body;
      expect(body.entry.filter((e: any) => e.search.mode === 'match').map((e: any) => e.resource.id)).toEqual([ids.p1]);
      const oo = body.entry.find((e: any) => e.search.mode === 'outcome').resource;
      expect(oo.issue[0].diagnostics).toMatch(/frobnicate/);
      expect(body.link[0].url).not.toMatch(/frobnicate/);
    });
    test('Prefer: handling=strict makes them a 400', async () => {
      const res = await api().get('/fhir/Patient?frobnicate=1').set('Prefer', 'handling=strict');
      expect(res.status).toBe(400);
      expect(res.body.issue[0].diagnostics).toMatch(/frobnicate/);
    });
  });

  test('POST _search with a form body', async () => {
    const res = await api().post('/fhir/Patient/_search').type('form').send({ family: 'chalm', gender: 'male' });
    expect(res.status).toBe(200);
    expect(res.body.entry.map((e: any) => e.resource.id)).toEqual([ids.p1]);
  });
});
