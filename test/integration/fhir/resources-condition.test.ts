import request from 'supertest';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { uniq } from './helpers/fhir-app';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const SCT = 'http://snomed.info/sct';
const CLINICAL = 'http://terminology.hl7.org/CodeSystem/condition-clinical';
const RIGHT_EYE = { system: SCT, code: '18944008', display: 'Right eye structure' };
const LEFT_EYE = { system: SCT, code: '8966001', display: 'Left eye structure' };
const BOTH_EYES = { system: SCT, code: '40638003', display: 'Structure of both eyes' };

/** Condition with ICD-10-CM codes through the whole app (t.http: an admin client). */
describe('Condition: ICD-10-CM codes, laterality and search', () => {
  let t: TestApp;
  const api = () => request(t.http);
  const json = (req: request.Test) => req.set('Content-Type', 'application/fhir+json');
  const ids: Record<string, string> = {};
  /** A Condition of the scratch patient pv, unless `extra` names another subject. */
  const condition = (code: string, extra: Record<string, unknown> = {}) => ({
    resourceType: 'Condition',
    subject: { reference: `Patient/${ids.pv}` },
    code: { coding: [{ system: ICD10, code }] },
    ...extra,
  });
  const put = async (key: string, resource: Record<string, unknown>) => {
    const id = `${key}-${uniq()}`;
    const res = await json(api().put(`/fhir/${resource.resourceType}/${id}`)).send({ ...resource, id });
    if (res.status !== 201) throw new Error(`${key}: ${res.status} ${JSON.stringify(res.body)}`);
    ids[key] = id;
  };
  /** Fixture keys of the matches of a search. */
  const find = async (query: string) => {
    const res = await api().get(`/fhir/${query}`);
    if (res.status !== 200) throw new Error(`${query}: ${res.status} ${JSON.stringify(res.body)}`);
    const byId = new Map(Object.entries(ids).map(([k, v]) => [v, k]));
    return (res.body.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => byId.get(e.resource.id) ?? e.resource.id).sort();
  };

  beforeAll(async () => {
    t = await startTestApp();
    await put('p1', { resourceType: 'Patient', name: [{ family: 'Iris' }] });
    await put('p2', { resourceType: 'Patient', name: [{ family: 'Retina' }] });
    await put('pv', { resourceType: 'Patient', name: [{ family: 'Scratch' }] });
    const p1 = { reference: `Patient/${ids.p1}` };
    await put('naionRight', condition('H47.011', {
      subject: p1,
      bodySite: [{ coding: [RIGHT_EYE] }],
      onsetDateTime: '2021-02-03',
      clinicalStatus: { coding: [{ system: CLINICAL, code: 'active' }] },
    }));
    await put('naionLeft', condition('H47.012', {
      subject: p1,
      bodySite: [{ coding: [LEFT_EYE] }],
      onsetDateTime: '2022-06-01',
      abatementDateTime: '2023-01-15',
      clinicalStatus: { coding: [{ system: CLINICAL, code: 'resolved' }] },
    }));
    await put('glaucoma', condition('H40.1131', { subject: { reference: `Patient/${ids.p2}` }, bodySite: [{ coding: [BOTH_EYES] }], onsetDateTime: '2019-11-20' }));
    await put('papilledema', condition('H47.10', { subject: p1, onsetDateTime: '2020-01-01', clinicalStatus: { coding: [{ system: CLINICAL, code: 'active' }] } }));
  }, 120_000);
  afterAll(async () => {
    await t.close();
  });

  describe('code validation', () => {
    test('create with a known ICD-10-CM code is 201', async () => {
      const res = await json(api().post('/fhir/Condition')).send(condition('H40.1131'));
      expect(res.status).toBe(201);
      expect(res.body.code.coding[0].code).toBe('H40.1131');
    });

    test('create with an unknown code is 422 naming the coding', async () => {
      const res = await json(api().post('/fhir/Condition')).send({ ...condition('H47.011'), code: { coding: [{ system: SCT, code: '73430006' }, { system: ICD10, code: 'H99.999' }] } });
      expect(res.status).toBe(422);
      expect(res.body.resourceType).toBe('OperationOutcome');
      expect(res.body.issue).toEqual([
        expect.objectContaining({ severity: 'error', code: 'code-invalid', expression: ['Condition.code.coding[1].code'], diagnostics: "Unknown ICD-10-CM code 'H99.999' (FY2021 code set)" }),
      ]);
    });

    test('a code without its dot is 422 with the dotted form as a hint', async () => {
      const res = await json(api().post('/fhir/Condition')).send(condition('H47011'));
      expect(res.status).toBe(422);
      expect(res.body.issue[0].diagnostics).toBe("Unknown ICD-10-CM code 'H47011' (FY2021 code set); FHIR writes ICD-10-CM codes with the dot: H47.011");
    });

    test('update to an unknown code is 422 and leaves the stored version alone', async () => {
      const res = await json(api().put(`/fhir/Condition/${ids.naionRight}`)).send({ ...condition('H47.0199', { subject: { reference: `Patient/${ids.p1}` } }), id: ids.naionRight });
      expect(res.status).toBe(422);
      expect(res.body.issue[0].expression).toEqual(['Condition.code.coding[0].code']);
      const read = await api().get(`/fhir/Condition/${ids.naionRight}`);
      expect(read.body.code.coding[0].code).toBe('H47.011');
    });

    test('a transaction with an unknown code is 422 naming the entry and writes nothing', async () => {
      const mrn = `tx-${uniq()}`;
      const res = await json(api().post('/fhir')).send({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:0c3d5a7e-0000-4000-8000-000000000001', resource: { resourceType: 'Patient', identifier: [{ system: 'urn:test', value: mrn }] }, request: { method: 'POST', url: 'Patient' } },
          {
            resource: { resourceType: 'Condition', subject: { reference: 'urn:uuid:0c3d5a7e-0000-4000-8000-000000000001' }, code: { coding: [{ system: ICD10, code: 'Q99.99' }] } },
            request: { method: 'POST', url: 'Condition' },
          },
        ],
      });
      expect(res.status).toBe(422);
      expect(res.body.issue[0].expression).toEqual(['Bundle.entry[1].resource.Condition.code.coding[0].code', 'Bundle.entry[1]']);
      expect(await find(`Patient?identifier=urn:test|${mrn}`)).toEqual([]);
    });

    test('a batch answers 422 for the entry with an unknown code and stores the others', async () => {
      const res = await json(api().post('/fhir')).send({
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { resource: condition('H47.013'), request: { method: 'POST', url: 'Condition' } },
          { resource: condition('ZZZ.9'), request: { method: 'POST', url: 'Condition' } },
        ],
      });
      expect(res.status).toBe(200);
      expect(res.body.entry.map((e: any) => e.response.status)).toEqual(['201 Created', '422 Unprocessable Entity']);
      expect(res.body.entry[1].response.outcome.issue[0]).toMatchObject({ code: 'code-invalid', expression: ['Condition.code.coding[0].code'] });
    });

    test('$validate reports an unknown code as an error issue', async () => {
      const res = await json(api().post('/fhir/Condition/$validate')).send(condition('H47.9999'));
      expect(res.status).toBe(200);
      expect(res.body.issue).toEqual([expect.objectContaining({ severity: 'error', code: 'code-invalid', expression: ['Condition.code.coding[0].code'] })]);
    });

    test('$validate warns that a category header is not billable', async () => {
      const res = await json(api().post('/fhir/Condition/$validate')).send(condition('H47.01'));
      expect(res.body.issue).toEqual([
        expect.objectContaining({ severity: 'warning', code: 'business-rule', diagnostics: 'ICD-10-CM H47.01 is a category header, not a billable code' }),
      ]);
    });

    test('a category header is accepted on create', async () => {
      const res = await json(api().post('/fhir/Condition')).send(condition('H47.01'));
      expect(res.status).toBe(201);
    });

    test('codes of other systems are not checked against ICD-10-CM', async () => {
      const res = await json(api().post('/fhir/Condition')).send({ ...condition('x'), code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'H99.999' }] } });
      expect(res.status).toBe(201);
    });
  });

  describe('search', () => {
    test('patient finds the conditions of one patient', async () => expect(await find(`Condition?patient=${ids.p2}`)).toEqual(['glaucoma']));
    test('code:below=H47.01 matches H47.011 and H47.012 but not H47.10', async () => {
      expect(await find(`Condition?patient=${ids.p1}&code:below=${ICD10}|H47.01`)).toEqual(['naionLeft', 'naionRight']);
    });
    test('code with system|code matches exactly', async () => expect(await find(`Condition?patient=${ids.p1}&code=${ICD10}|H47.10`)).toEqual(['papilledema']));
    test('body-site finds the right-eye condition by SNOMED code', async () => expect(await find(`Condition?body-site=${SCT}|18944008`)).toEqual(['naionRight']));
    test('body-site finds a both-eyes condition', async () => expect(await find(`Condition?body-site=${SCT}|40638003`)).toEqual(['glaucoma']));
    test('onset-date with ge and lt selects a window', async () => expect(await find(`Condition?patient=${ids.p1}&onset-date=ge2021-01-01&onset-date=lt2022-01-01`)).toEqual(['naionRight']));
    test('abatement-date finds the resolved condition', async () => expect(await find('Condition?abatement-date=2023-01')).toEqual(['naionLeft']));
    test('clinical-status=active excludes the resolved one', async () => expect(await find(`Condition?patient=${ids.p1}&clinical-status=${CLINICAL}|active`)).toEqual(['naionRight', 'papilledema']));
    test('_revinclude=Condition:patient brings the conditions with their patient', async () => {
      const res = await api().get(`/fhir/Patient?_id=${ids.p2}&_revinclude=Condition:patient`);
      expect(res.body.entry.map((e: any) => `${e.search.mode}:${e.resource.resourceType}/${e.resource.id}`)).toEqual([`match:Patient/${ids.p2}`, `include:Condition/${ids.glaucoma}`]);
    });
    test('an unknown code in a search is not an error: it matches nothing', async () => expect(await find(`Condition?code=${ICD10}|H99.999`)).toEqual([]));
  });
});
