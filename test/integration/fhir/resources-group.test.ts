import request from 'supertest';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { uniq } from './helpers/fhir-app';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const SCT = 'http://snomed.info/sct';

/** Group cohorts through the whole app (t.http: an admin client). */
describe('Group cohorts: CRUD, member rules and search', () => {
  let t: TestApp;
  const api = () => request(t.http);
  const json = (req: request.Test) => req.set('Content-Type', 'application/fhir+json');
  const ids: Record<string, string> = {};
  const tag = uniq();
  const put = async (key: string, resource: Record<string, unknown>) => {
    const id = `${key}-${uniq()}`;
    const res = await json(api().put(`/fhir/${resource.resourceType}/${id}`)).send({ ...resource, id });
    if (res.status !== 201) throw new Error(`${key}: ${res.status} ${JSON.stringify(res.body)}`);
    ids[key] = id;
    return res.body;
  };
  const find = async (query: string) => {
    const res = await api().get(`/fhir/${query}`);
    if (res.status !== 200) throw new Error(`${query}: ${res.status} ${JSON.stringify(res.body)}`);
    const byId = new Map(Object.entries(ids).map(([k, v]) => [v, k]));
    return (res.body.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => byId.get(e.resource.id) ?? e.resource.id).sort();
  };
  const naionCharacteristic = {
    code: { coding: [{ system: SCT, code: '439401001', display: 'Diagnosis' }] },
    valueCodeableConcept: { coding: [{ system: ICD10, code: 'H47.011' }] },
    exclude: false,
  };

  beforeAll(async () => {
    t = await startTestApp();
    await put('p1', { resourceType: 'Patient', name: [{ family: 'Cohort' }] });
    await put('p2', { resourceType: 'Patient', name: [{ family: 'Member' }] });
    await put('naion', {
      resourceType: 'Group',
      meta: { tag: [{ system: 'urn:test', code: tag }] },
      type: 'person',
      actual: true,
      name: 'NAION right eye cohort',
      member: [{ entity: { reference: `Patient/${ids.p1}` } }, { entity: { reference: `Patient/${ids.p2}` }, period: { start: '2021-01-01' } }],
    });
    await put('definition', {
      resourceType: 'Group',
      meta: { tag: [{ system: 'urn:test', code: tag }] },
      type: 'person',
      actual: false,
      name: 'Glaucoma definition',
      characteristic: [naionCharacteristic],
    });
    await put('devices', { resourceType: 'Group', meta: { tag: [{ system: 'urn:test', code: tag }] }, type: 'device', actual: true, name: 'OCT scanners' });
  }, 120_000);
  afterAll(async () => {
    await t.close();
  });

  describe('CRUD', () => {
    test('an actual group with Patient members reads back with its members', async () => {
      const res = await api().get(`/fhir/Group/${ids.naion}`);
      expect(res.status).toBe(200);
      expect(res.body.member.map((m: any) => m.entity.reference)).toEqual([`Patient/${ids.p1}`, `Patient/${ids.p2}`]);
    });

    test('a characteristic-based definition is stored as it was sent', async () => {
      const res = await api().get(`/fhir/Group/${ids.definition}`);
      expect(res.body.characteristic).toEqual([naionCharacteristic]);
    });

    test('update replaces the members and bumps the version', async () => {
      const body = await put('update', { resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: `Patient/${ids.p1}` } }] });
      const res = await json(api().put(`/fhir/Group/${ids.update}`)).send({ ...body, member: [{ entity: { reference: `Patient/${ids.p2}` } }] });
      expect(res.status).toBe(200);
      expect(res.body.meta.versionId).toBe('2');
      expect(res.body.member).toEqual([{ entity: { reference: `Patient/${ids.p2}` } }]);
    });

    test('delete answers 200 and a later read is 410 Gone', async () => {
      await put('doomed', { resourceType: 'Group', type: 'person', actual: false });
      expect((await api().delete(`/fhir/Group/${ids.doomed}`)).status).toBe(200);
      const res = await api().get(`/fhir/Group/${ids.doomed}`);
      expect(res.status).toBe(410);
      expect(res.body.issue[0].code).toBe('deleted');
    });

    test('a person group with an Observation member is 422 naming the member', async () => {
      const res = await json(api().post('/fhir/Group')).send({ resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: `Patient/${ids.p1}` } }, { entity: { reference: 'Observation/o1' } }] });
      expect(res.status).toBe(422);
      expect(res.body.issue).toEqual([
        expect.objectContaining({ severity: 'error', code: 'business-rule', expression: ['Group.member[1].entity'], diagnostics: 'A person Group holds Patient members, not Observation' }),
      ]);
    });

    test('members on a group that is not actual are 422 (grp-1)', async () => {
      const res = await json(api().post('/fhir/Group')).send({ resourceType: 'Group', type: 'person', actual: false, member: [{ entity: { reference: `Patient/${ids.p1}` } }] });
      expect(res.status).toBe(422);
      expect(res.body.issue[0].details.text).toContain('grp-1');
    });

    test('a transaction creates a Patient and the cohort that references it by fullUrl', async () => {
      const res = await json(api().post('/fhir')).send({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:6a1e3b1c-0000-4000-8000-00000000000a', resource: { resourceType: 'Patient', active: true }, request: { method: 'POST', url: 'Patient' } },
          { resource: { resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: 'urn:uuid:6a1e3b1c-0000-4000-8000-00000000000a' } }] }, request: { method: 'POST', url: 'Group' } },
        ],
      });
      expect(res.status).toBe(200);
      const patientId = res.body.entry[0].resource.id;
      expect(res.body.entry[1].resource.member[0].entity.reference).toBe(`Patient/${patientId}`);
    });
  });

  describe('search', () => {
    test('member finds the groups a patient belongs to', async () => expect(await find(`Group?member=Patient/${ids.p2}&_tag=urn:test|${tag}`)).toEqual(['naion']));
    test('characteristic finds groups by characteristic code', async () => expect(await find(`Group?characteristic=${SCT}|439401001`)).toEqual(['definition']));
    test('value finds groups by characteristic value (an ICD-10-CM code)', async () => expect(await find(`Group?value=${ICD10}|H47.011`)).toEqual(['definition']));
    test('type finds device groups', async () => expect(await find(`Group?type=device&_tag=urn:test|${tag}`)).toEqual(['devices']));
    test('actual=false finds definitions only', async () => expect(await find(`Group?actual=false&_tag=urn:test|${tag}`)).toEqual(['definition']));
    test('name (our SearchParameter) matches a case-insensitive prefix', async () => expect(await find(`Group?name=naion&_tag=urn:test|${tag}`)).toEqual(['naion']));
    test('name:contains matches inside the name', async () => expect(await find(`Group?name:contains=scanner&_tag=urn:test|${tag}`)).toEqual(['devices']));
    test('name is listed in the CapabilityStatement for Group', async () => {
      const res = await api().get('/fhir/metadata');
      const group = res.body.rest[0].resource.find((r: any) => r.type === 'Group');
      expect(group.searchParam.find((p: any) => p.name === 'name')).toMatchObject({ type: 'string', definition: 'https://imaging-lake.org/fhir/SearchParameter/Group-name' });
    });
  });
});
