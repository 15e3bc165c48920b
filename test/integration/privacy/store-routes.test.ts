/**
 * The /privacy administration routes: de-identification options per project (PS3.15 E.3),
 * burned-in annotation clearances and the withholding rule they lift, and the PatientKey
 * overlap count. Every route is tried by the roles it must refuse, and the bodies are checked.
 */
import request from 'supertest';
import { DEFAULT_DEID_OPTIONS } from '../../../src/privacy/privacy-types';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { inventoryRoutes } from '../access/route-inventory';
import { createFhirPatient, randomMrn, stowInto } from './store-helpers';

const SECONDARY_CAPTURE = '1.2.840.10008.5.1.4.1.1.7';

describe('privacy routes: options, clearances, overlap', () => {
  let t: TestApp;
  const tokens: Record<string, string> = {};
  beforeAll(async () => {
    t = await startTestApp();
    tokens.dmA = await t.token('data-manager', ['opt-a']);
    tokens.dmB = await t.token('data-manager', ['opt-b']);
    tokens.researcherA = await t.token('researcher', ['opt-a']);
    tokens.piA = await t.token('pi', ['opt-a']);
    tokens.piAB = await t.token('pi', ['opt-a', 'opt-b']);
    // Projects exist once something was stored into them.
    await stowInto(t, 'opt-a', { patientID: randomMrn() });
    await stowInto(t, 'opt-b', { patientID: randomMrn() });
  });
  afterAll(async () => {
    await t?.close();
  });
  const as = (token: string) => ({ Authorization: `Bearer ${token}` });
  const outcomeOf = (res: request.Response) => {
    const body = JSON.parse(res.text);
    expect(body.resourceType).toBe('OperationOutcome');
    return body.issue[0] as { code: string; diagnostics: string };
  };

  describe('bad bodies', () => {
    test('a body that is not JSON is 400 with an OperationOutcome', async () => {
      const res = await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA)).set('Content-Type', 'application/json').send('{"retainDeviceIdentity": tr');
      expect(res.status).toBe(400);
      expect(outcomeOf(res).diagnostics).toContain('not valid JSON');
    });
  });

  describe('deid-options', () => {
    test('a project without a choice shows the defaults, not selected', async () => {
      const res = await request(t.app.express).get('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA));
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ project: 'opt-a', selected: false, options: DEFAULT_DEID_OPTIONS });
    });

    test('the data manager of the project sets them; projectOptions answers them; absent fields take the default', async () => {
      const res = await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA)).send({ retainDeviceIdentity: true, cleanDescriptors: true });
      expect(res.status).toBe(200);
      expect(res.body.options).toEqual({ ...DEFAULT_DEID_OPTIONS, retainDeviceIdentity: true, cleanDescriptors: true });
      const read = await request(t.app.express).get('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA));
      expect(read.body.selected).toBe(true);
      const map = await t.app.privacy.projectOptions(t.app.db.knex, ['opt-a', 'opt-b', 'no-such']);
      expect(map.get('opt-a')).toEqual(res.body.options);
      expect(map.get('opt-b')).toEqual(DEFAULT_DEID_OPTIONS);
      expect(map.get('no-such')).toEqual(DEFAULT_DEID_OPTIONS);
    });

    test('admin reads and writes any project; an unknown project is 404', async () => {
      expect((await request(t.http).put('/privacy/projects/opt-b/deid-options').send({ retainPatientCharacteristics: true })).status).toBe(200);
      const missing = await request(t.http).get('/privacy/projects/nope/deid-options');
      expect(missing.status).toBe(404);
      expect(outcomeOf(missing).code).toBe('not-found');
    });

    test('a data manager of another project is refused with an OperationOutcome, and nothing changes', async () => {
      const res = await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(tokens.dmB)).send({ retainSafePrivate: true });
      expect(res.status).toBe(403);
      expect(outcomeOf(res)).toMatchObject({ code: 'forbidden', diagnostics: expect.stringMatching(/not a member of project opt-a/) });
      expect((await t.app.privacy.projectOptions(t.app.db.knex, ['opt-a'])).get('opt-a')!.retainSafePrivate).toBe(false);
    });

    test('researchers and PIs may not read or set them (the policy refuses, with a reason)', async () => {
      for (const token of [tokens.researcherA, tokens.piA]) {
        const res = await request(t.app.express).get('/privacy/projects/opt-a/deid-options').set(as(token));
        expect(res.status).toBe(403);
        expect(res.text).toMatch(/access denied: role (researcher|pi) may not read DeidOptions/);
        expect((await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(token)).send({})).status).toBe(403);
      }
    });

    test('bad bodies are 400 OperationOutcomes naming the problem', async () => {
      const unknown = await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA)).send({ retainEverything: true });
      expect(unknown.status).toBe(400);
      expect(outcomeOf(unknown).diagnostics).toMatch(/unknown option "retainEverything"/);
      const notBool = await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA)).send({ cleanDescriptors: 'yes' });
      expect(outcomeOf(notBool).diagnostics).toMatch(/cleanDescriptors: true or false/);
      const broken = await request(t.app.express).put('/privacy/projects/opt-a/deid-options').set(as(tokens.dmA)).set('Content-Type', 'application/json').send('{"cleanDescriptors":');
      expect(broken.status).toBe(400);
      expect(outcomeOf(broken).diagnostics).toMatch(/not valid JSON/);
    });

    test('no token is 401', async () => {
      expect((await request(t.app.express).get('/privacy/projects/opt-a/deid-options')).status).toBe(401);
    });
  });

  describe('burned-in annotation', () => {
    test('instances are withheld by BurnedInAnnotation YES, or by modality/SOP class unless declared NO', async () => {
      const yes = await stowInto(t, 'opt-a', { modality: 'CT', extra: { BurnedInAnnotation: 'YES' } });
      const plainCt = await stowInto(t, 'opt-a', { modality: 'CT' });
      const us = await stowInto(t, 'opt-a', { modality: 'US' });
      const usNo = await stowInto(t, 'opt-a', { modality: 'US', extra: { BurnedInAnnotation: 'NO' } });
      const sc = await stowInto(t, 'opt-a', { modality: 'OT', sopClassUID: SECONDARY_CAPTURE });
      const op = await stowInto(t, 'opt-a', { modality: 'OP' });
      const withheld = await t.app.privacy.withheldInstances(t.app.db.knex, [yes, plainCt, us, usNo, sc, op].map((i) => i.sopInstanceUID));
      expect([...withheld].sort()).toEqual([yes, us, sc, op].map((i) => i.sopInstanceUID).sort());
    });

    test('the data manager clears an instance of their project (201), which is then shown; removing the clearance withholds it again', async () => {
      const us = await stowInto(t, 'opt-a', { modality: 'US' });
      const cleared = await request(t.app.express).post('/privacy/burned-in-clearances').set(as(tokens.dmA)).send({ sopInstanceUID: us.sopInstanceUID, note: 'checked by eye' });
      expect(cleared.status).toBe(201);
      expect(cleared.body).toMatchObject({ sopInstanceUID: us.sopInstanceUID, note: 'checked by eye', clearedBy: expect.any(String) });
      expect((await t.app.privacy.withheldInstances(t.app.db.knex, [us.sopInstanceUID])).size).toBe(0);
      const removed = await request(t.app.express).delete(`/privacy/burned-in-clearances/${us.sopInstanceUID}`).set(as(tokens.dmA));
      expect(removed.status).toBe(204);
      expect((await t.app.privacy.withheldInstances(t.app.db.knex, [us.sopInstanceUID])).has(us.sopInstanceUID)).toBe(true);
      const again = await request(t.app.express).delete(`/privacy/burned-in-clearances/${us.sopInstanceUID}`).set(as(tokens.dmA));
      expect(again.status).toBe(404);
      expect(outcomeOf(again).diagnostics).toMatch(/no burned-in annotation clearance/);
    });

    test('a data manager of another project cannot clear it: 404 exactly like a missing instance', async () => {
      const us = await stowInto(t, 'opt-a', { modality: 'US' });
      const other = await request(t.app.express).post('/privacy/burned-in-clearances').set(as(tokens.dmB)).send({ sopInstanceUID: us.sopInstanceUID });
      const missing = await request(t.app.express).post('/privacy/burned-in-clearances').set(as(tokens.dmB)).send({ sopInstanceUID: '1.2.3.999' });
      expect(other.status).toBe(404);
      expect(other.text.split(us.sopInstanceUID).join('X')).toBe(missing.text.split('1.2.3.999').join('X'));
      expect((await t.app.privacy.withheldInstances(t.app.db.knex, [us.sopInstanceUID])).size).toBe(1);
    });

    test('researchers and PIs are refused by the policy; admin may clear anything', async () => {
      const us = await stowInto(t, 'opt-a', { modality: 'US' });
      for (const token of [tokens.researcherA, tokens.piA]) {
        const res = await request(t.app.express).post('/privacy/burned-in-clearances').set(as(token)).send({ sopInstanceUID: us.sopInstanceUID });
        expect(res.status).toBe(403);
        expect(res.text).toMatch(/access denied: role (researcher|pi) may not quarantine BurnedInClearance/);
      }
      expect((await request(t.http).post('/privacy/burned-in-clearances').send({ sopInstanceUID: us.sopInstanceUID })).status).toBe(201);
    });

    test('a malformed UID is 400', async () => {
      const res = await request(t.app.express).post('/privacy/burned-in-clearances').set(as(tokens.dmA)).send({ sopInstanceUID: 'not a uid' });
      expect(res.status).toBe(400);
      expect(outcomeOf(res).diagnostics).toMatch(/sopInstanceUID/);
    });

    test('clearance steps are in the audit trail, refusals included', async () => {
      const us = await stowInto(t, 'opt-a', { modality: 'US' });
      await request(t.app.express).post('/privacy/burned-in-clearances').set(as(tokens.dmA)).send({ sopInstanceUID: us.sopInstanceUID });
      expect((await request(t.app.express).delete(`/privacy/burned-in-clearances/${us.sopInstanceUID}`).set(as(tokens.dmA))).status).toBe(204);
      expect((await request(t.app.express).delete(`/privacy/burned-in-clearances/${us.sopInstanceUID}`).set(as(tokens.researcherA))).status).toBe(403);
      const res = await request(t.http).get('/fhir/AuditEvent').query({ entity: `BurnedInClearance/${us.sopInstanceUID}`, _count: 50 });
      expect(res.status).toBe(200);
      const events = (res.body.entry ?? []).map((e: { resource: { outcome: string; action: string; agent: Array<{ requestor: boolean; role?: Array<{ coding: Array<{ code: string }> }> }> } }) => ({
        outcome: e.resource.outcome,
        action: e.resource.action,
        role: e.resource.agent.find((a) => a.requestor)?.role?.[0].coding[0].code,
      }));
      expect(events).toEqual(expect.arrayContaining([{ outcome: '0', action: 'D', role: 'data-manager' }, { outcome: '4', action: 'D', role: 'researcher' }]));
    });
  });

  describe('overlap', () => {
    test('counts PatientKeys shared by the projects (DICOM and FHIR patients alike), a number only', async () => {
      const shared = randomMrn();
      await stowInto(t, 'ov-a', { patientID: shared, issuerOfPatientID: 'H' });
      await createFhirPatient(t, 'ov-b', [{ system: 'urn:imaging-lake:issuer:H', value: shared }]);
      await stowInto(t, 'ov-a', { patientID: randomMrn(), issuerOfPatientID: 'H' });
      await createFhirPatient(t, 'ov-b', [{ system: 'urn:imaging-lake:issuer:H', value: randomMrn() }]);
      const res = await request(t.http).get('/privacy/overlap?projects=ov-a,ov-b');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ projects: ['ov-a', 'ov-b'], sharedPatients: 1 });
      expect(res.text).not.toContain(shared);
      expect(res.text).not.toContain('PK');
    });

    test('a PI of every project may ask; a PI missing one is refused; researchers are refused; one project is 400', async () => {
      expect((await request(t.app.express).get('/privacy/overlap?projects=opt-a,opt-b').set(as(tokens.piAB))).status).toBe(200);
      const partial = await request(t.app.express).get('/privacy/overlap?projects=opt-a,opt-b').set(as(tokens.piA));
      expect(partial.status).toBe(403);
      expect(outcomeOf(partial).diagnostics).toMatch(/not a member of project opt-b/);
      const researcher = await request(t.app.express).get('/privacy/overlap?projects=opt-a,opt-b').set(as(tokens.researcherA));
      expect(researcher.status).toBe(403);
      const one = await request(t.http).get('/privacy/overlap?projects=opt-a');
      expect(one.status).toBe(400);
      expect(outcomeOf(one).diagnostics).toMatch(/2 to 20/);
    });
  });

  test('the access matrix sees every privacy route (it drives each one for every caller)', () => {
    const declared = inventoryRoutes(t.app.express).routes.map((r) => `${r.method} ${r.path}`);
    expect(declared).toEqual(
      expect.arrayContaining([
        'GET /privacy/projects/:project/deid-options',
        'PUT /privacy/projects/:project/deid-options',
        'POST /privacy/burned-in-clearances',
        'DELETE /privacy/burned-in-clearances/:sop',
        'POST /privacy/reidentification-requests',
        'GET /privacy/reidentification-requests',
        'GET /privacy/reidentification-requests/:id',
        'POST /privacy/reidentification-requests/:id/approve',
        'POST /privacy/reidentification-requests/:id/refuse',
        'POST /privacy/reidentification-requests/:id/resolve',
        'GET /privacy/overlap',
      ]),
    );
  });

  test('an unknown /privacy path is admin-only, and 404 for admin', async () => {
    expect((await request(t.app.express).get('/privacy/whatever').set(as(tokens.dmA))).status).toBe(403);
    const res = await request(t.http).get('/privacy/whatever');
    expect(res.status).toBe(404);
    expect(outcomeOf(res).code).toBe('not-found');
  });
});
