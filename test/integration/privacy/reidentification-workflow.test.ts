/**
 * The audited re-identification workflow (HIPAA 164.514(c)): a PI files, an admin approves or
 * refuses, the PI who filed resolves the approved PatientKeys to issuer and MRN exactly once.
 * Every step, refusals included, is an AuditEvent with subtype reidentify, the purposeOfUse
 * and the patients as PatientKeys, read back here through GET /fhir/AuditEvent.
 */
import request from 'supertest';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { createFhirPatient, keyOfStudy, randomMrn, stowInto } from './store-helpers';
import { mintLocalToken } from '../../../src/auth/local-token';
import type { Role } from '../../../src/auth/roles';

type Event = {
  id: string;
  outcome: string;
  outcomeDesc?: string;
  subtype: Array<{ system?: string; code: string }>;
  purposeOfEvent?: Array<{ coding: Array<{ code: string }> }>;
  agent: Array<{ requestor: boolean; who?: { identifier?: { value: string } }; role?: Array<{ coding: Array<{ code: string }> }> }>;
  entity?: Array<{ what?: { reference?: string; identifier?: { system?: string; value: string } }; role?: { code: string }; detail?: Array<{ type: string; valueString: string }> }>;
};

describe('re-identification workflow', () => {
  let t: TestApp;
  const tok: Record<string, string> = {};
  const mrns: string[] = [];
  const keys: string[] = [];
  let otherProjectKey = '';

  const mint = async (role: Role, projects: string[], subject: string) => (await mintLocalToken({ role, projects, subject, ttlSeconds: 3600 }, { config: t.config.auth })).accessToken;
  const as = (token: string) => ({ Authorization: `Bearer ${token}` });
  const file = (token: string, body: Record<string, unknown>) => request(t.app.express).post('/privacy/reidentification-requests').set(as(token)).send(body);
  const filing = (extra: Record<string, unknown> = {}) => ({ project: 'ri-a', reason: 'incidental finding to report to the treating physician', approvalReference: 'IRB-2026-042', patientKeys: keys, ...extra });
  const outcomeOf = (res: request.Response) => {
    const body = JSON.parse(res.text);
    expect(body.resourceType).toBe('OperationOutcome');
    return body.issue[0] as { code: string; diagnostics: string };
  };
  const eventsOf = async (query: Record<string, string>): Promise<Event[]> => {
    const res = await request(t.http).get('/fhir/AuditEvent').query({ _count: '200', ...query });
    expect(res.status).toBe(200);
    return (res.body.entry ?? []).map((e: { resource: Event }) => e.resource);
  };
  const requestorOf = (e: Event) => e.agent.find((a) => a.requestor);
  const patientKeysOf = (e: Event) => (e.entity ?? []).filter((x) => x.role?.code === '1').map((x) => x.what?.identifier?.value);

  beforeAll(async () => {
    t = await startTestApp();
    tok.pi = await mint('pi', ['ri-a'], 'pi-alice');
    tok.pi2 = await mint('pi', ['ri-a'], 'pi-bob');
    tok.piOther = await mint('pi', ['ri-b'], 'pi-carol');
    tok.researcher = await mint('researcher', ['ri-a'], 'res-dave');
    tok.dataManager = await mint('data-manager', ['ri-a'], 'dm-erin');
    // Two DICOM patients and one FHIR-only patient in ri-a; one patient only in ri-b.
    for (let i = 0; i < 2; i++) {
      const mrn = randomMrn();
      mrns.push(mrn);
      const inst = await stowInto(t, 'ri-a', { patientID: mrn, issuerOfPatientID: 'GENERAL' });
      keys.push((await keyOfStudy(t, inst.studyInstanceUID))!.patientKey);
    }
    const fhirMrn = randomMrn();
    mrns.push(fhirMrn);
    const id = await createFhirPatient(t, 'ri-a', [{ system: 'urn:oid:1.2.3.4.5', value: fhirMrn }]);
    keys.push((await t.app.privacy.pseudonymsForFhirPatients(t.app.db.knex, [id])).get(id)!.patientKey);
    const other = await stowInto(t, 'ri-b', { patientID: randomMrn(), issuerOfPatientID: 'GENERAL' });
    otherProjectKey = (await keyOfStudy(t, other.studyInstanceUID))!.patientKey;
  });
  afterAll(async () => {
    await t?.close();
  });

  test('file, approve, resolve once: the PI gets issuer and MRN of exactly the filed keys; a second resolve is 409', async () => {
    const filed = await file(tok.pi, filing({ patientKeys: keys.slice(0, 2), purposeOfUse: 'PATRQT' }));
    expect(filed.status).toBe(201);
    expect(filed.body).toMatchObject({ project: 'ri-a', requester: 'pi-alice', status: 'requested', patientKeys: keys.slice(0, 2), purposeOfUse: 'PATRQT', approvalReference: 'IRB-2026-042' });
    const id = filed.body.id as string;

    const early = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi));
    expect(early.status).toBe(409);
    expect(outcomeOf(early).diagnostics).toMatch(/is requested, not approved/);

    const approved = await request(t.http).post(`/privacy/reidentification-requests/${id}/approve`);
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'approved', decidedBy: 'cli:admin' });

    const resolved = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi));
    expect(resolved.status).toBe(200);
    expect(resolved.body.request.status).toBe('resolved');
    expect(resolved.body.patients).toEqual([
      { patientKey: keys[0], issuer: 'urn:imaging-lake:issuer:GENERAL', mrn: mrns[0] },
      { patientKey: keys[1], issuer: 'urn:imaging-lake:issuer:GENERAL', mrn: mrns[1] },
    ]);
    // Only the filed keys: the third patient of the project is not in the answer.
    expect(resolved.text).not.toContain(mrns[2]);

    const again = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi));
    expect(again.status).toBe(409);
    expect(outcomeOf(again).diagnostics).toMatch(/already resolved/);
    expect(again.text).not.toContain(mrns[0]);

    // Every step is audited: subtype reidentify, purpose, PatientKeys, never an MRN.
    const events = await eventsOf({ entity: `ReidentificationRequest/${id}` });
    const steps = events.map((e) => (e.entity ?? []).flatMap((x) => x.detail ?? []).find((d) => d.type === 'step')?.valueString);
    expect(steps.sort()).toEqual(['approve', 'file', 'resolve', 'resolve', 'resolve'].sort());
    for (const e of events) {
      expect(e.subtype[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle', code: 'reidentify' });
      expect(e.purposeOfEvent?.[0].coding[0].code).toBe('PATRQT');
      expect(patientKeysOf(e).sort()).toEqual(keys.slice(0, 2).sort());
      for (const m of mrns) expect(JSON.stringify(e)).not.toContain(m);
    }
    expect(events.filter((e) => e.outcome === '0')).toHaveLength(3);
    expect(events.filter((e) => e.outcome === '4')).toHaveLength(2);
    const bySubtype = await eventsOf({ subtype: 'reidentify', agent: 'pi-alice' });
    expect(bySubtype.length).toBeGreaterThanOrEqual(4);
  });

  test('a researcher is refused (403) and the refusal is an AuditEvent admin reads back', async () => {
    const res = await file(tok.researcher, filing());
    expect(res.status).toBe(403);
    expect(res.text).toMatch(/access denied: role researcher may not reidentify ReidentificationRequest/);
    expect(JSON.parse(res.text)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden' }] });
    expect(res.text).not.toContain(mrns[0]);
    const events = await eventsOf({ agent: 'res-dave', outcome: '4' });
    expect(events).toHaveLength(1);
    expect(events[0].outcomeDesc).toMatch(/role researcher may not reidentify ReidentificationRequest/);
    expect(requestorOf(events[0])?.role?.[0].coding[0].code).toBe('researcher');
    const [filedByResearcher] = await t.app.db.knex('reidentification_requests').where('requester', 'res-dave').count<{ count: string | number }[]>('* as count');
    expect(Number(filedByResearcher.count)).toBe(0);
  });

  test('a data manager is refused too, and may not list requests', async () => {
    const res = await file(tok.dataManager, filing());
    expect(res.status).toBe(403);
    expect(res.text).toMatch(/access denied: role data-manager may not reidentify/);
    expect((await request(t.app.express).get('/privacy/reidentification-requests').set(as(tok.dataManager))).status).toBe(403);
  });

  test('a refused request can be neither resolved nor approved afterwards', async () => {
    const filed = await file(tok.pi, filing({ patientKeys: [keys[2]] }));
    const id = filed.body.id as string;
    const refused = await request(t.http).post(`/privacy/reidentification-requests/${id}/refuse`);
    expect(refused.status).toBe(200);
    expect(refused.body.status).toBe('refused');
    const resolve = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi));
    expect(resolve.status).toBe(409);
    expect(outcomeOf(resolve).diagnostics).toMatch(/is refused, not approved/);
    expect(resolve.text).not.toContain(mrns[2]);
    const approve = await request(t.http).post(`/privacy/reidentification-requests/${id}/approve`);
    expect(approve.status).toBe(409);
    expect(outcomeOf(approve).code).toBe('conflict');
    const events = await eventsOf({ entity: `ReidentificationRequest/${id}` });
    expect(events.map((e) => e.outcome).sort()).toEqual(['0', '0', '4', '4']);
  });

  test('a PI of another project cannot file for it, see its requests, or resolve them', async () => {
    const res = await file(tok.piOther, filing());
    expect(res.status).toBe(403);
    expect(outcomeOf(res).diagnostics).toMatch(/not a member of project ri-a/);
    const filed = await file(tok.pi, filing({ patientKeys: [keys[0]] }));
    const id = filed.body.id as string;
    await request(t.http).post(`/privacy/reidentification-requests/${id}/approve`);
    const read = await request(t.app.express).get(`/privacy/reidentification-requests/${id}`).set(as(tok.piOther));
    const missing = await request(t.app.express).get('/privacy/reidentification-requests/999999').set(as(tok.piOther));
    expect(read.status).toBe(404);
    expect(read.text.split(id).join('N')).toBe(missing.text.split('999999').join('N'));
    expect((await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.piOther))).status).toBe(404);
    const list = await request(t.app.express).get('/privacy/reidentification-requests').set(as(tok.piOther));
    expect(list.status).toBe(200);
    expect(list.body.requests).toEqual([]);
    // Still resolvable by the PI who filed it: the failed attempts used nothing up.
    const resolved = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi));
    expect(resolved.status).toBe(200);
    expect(resolved.body.patients).toEqual([{ patientKey: keys[0], issuer: 'urn:imaging-lake:issuer:GENERAL', mrn: mrns[0] }]);
  });

  test('only the PI who filed may resolve; another PI of the project is 403, an admin is refused by the policy', async () => {
    const filed = await file(tok.pi, filing({ patientKeys: [keys[1]] }));
    const id = filed.body.id as string;
    await request(t.http).post(`/privacy/reidentification-requests/${id}/approve`);
    const other = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi2));
    expect(other.status).toBe(403);
    expect(outcomeOf(other).diagnostics).toMatch(/only the PI who filed/);
    const admin = await request(t.http).post(`/privacy/reidentification-requests/${id}/resolve`);
    expect(admin.status).toBe(403);
    expect(admin.text).not.toContain(mrns[1]);
    // The other PI of the project may see it.
    expect((await request(t.app.express).get(`/privacy/reidentification-requests/${id}`).set(as(tok.pi2))).status).toBe(200);
  });

  test('keys of another project, or unknown keys, answer the same 404 without saying which exist', async () => {
    const elsewhere = await file(tok.pi, filing({ patientKeys: [keys[0], otherProjectKey] }));
    const unknown = await file(tok.pi, filing({ patientKeys: [keys[0], 'PKAAAAAAAAAAAAAAAAAAAA'] }));
    expect(elsewhere.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(elsewhere.text).toBe(unknown.text);
    expect(elsewhere.text).not.toContain(otherProjectKey);
    const [withOtherKey] = await t.app.db.knex('reidentification_requests').whereRaw('? = ANY(patient_keys)', [otherProjectKey]).count<{ count: string | number }[]>('* as count');
    expect(Number(withOtherKey.count)).toBe(0);
  });

  test('an approval cannot be widened: no route changes the keys, and approving twice is 409', async () => {
    const filed = await file(tok.pi, filing({ patientKeys: [keys[0]] }));
    const id = filed.body.id as string;
    expect((await request(t.http).post(`/privacy/reidentification-requests/${id}/approve`)).status).toBe(200);
    expect((await request(t.http).post(`/privacy/reidentification-requests/${id}/approve`)).status).toBe(409);
    for (const method of ['put', 'patch'] as const) {
      const res = await request(t.http)[method](`/privacy/reidentification-requests/${id}`).send({ patientKeys: keys });
      expect(res.status).toBe(404);
      const piTry = await request(t.app.express)[method](`/privacy/reidentification-requests/${id}`).set(as(tok.pi)).send({ patientKeys: keys });
      expect(piTry.status).toBe(403);
    }
    const resolved = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi)).send({ patientKeys: keys });
    expect(resolved.body.patients.map((p: { patientKey: string }) => p.patientKey)).toEqual([keys[0]]);
  });

  test('malformed filings are 400 OperationOutcomes; a data manager does not approve', async () => {
    const noReason = await file(tok.pi, filing({ reason: '' }));
    expect(noReason.status).toBe(400);
    expect(outcomeOf(noReason).diagnostics).toMatch(/reason/);
    const badKey = await file(tok.pi, filing({ patientKeys: ['MRN123'] }));
    expect(badKey.status).toBe(400);
    expect(outcomeOf(badKey).diagnostics).toMatch(/PatientKey/);
    const noApproval = await file(tok.pi, filing({ approvalReference: undefined }));
    expect(outcomeOf(noApproval).diagnostics).toMatch(/approvalReference/);
    const badPurpose = await file(tok.pi, filing({ purposeOfUse: 'because' }));
    expect(outcomeOf(badPurpose).diagnostics).toMatch(/purposeOfUse/);
    const filed = await file(tok.pi, filing({ patientKeys: [keys[0]] }));
    expect(filed.body.purposeOfUse).toBe('HRESCH');
    const dmApproves = await request(t.app.express).post(`/privacy/reidentification-requests/${filed.body.id}/approve`).set(as(tok.dataManager));
    expect(dmApproves.status).toBe(403);
    expect(dmApproves.text).toMatch(/role data-manager may not approve ReidentificationRequest/);
    expect((await request(t.http).get(`/privacy/reidentification-requests/${filed.body.id}`)).body.status).toBe('requested');
  });

  test('four eyes: the PI who filed may not decide its own request; another PI of the project may; a PI of another project finds none', async () => {
    const filed = await file(tok.pi, filing({ patientKeys: [keys[0]] }));
    const id = filed.body.id as string;
    for (const verb of ['approve', 'refuse']) {
      const own = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/${verb}`).set(as(tok.pi));
      expect(own.status).toBe(403);
      expect(outcomeOf(own).diagnostics).toMatch(/the PI who filed .* may not decide it/);
    }
    const elsewhere = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/approve`).set(as(tok.piOther));
    expect(elsewhere.status).toBe(404);
    expect((await request(t.http).get(`/privacy/reidentification-requests/${id}`)).body.status).toBe('requested');

    const approved = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/approve`).set(as(tok.pi2));
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'approved', decidedBy: 'pi-bob' });
    // The approval is the filer's to use, once; the approving PI cannot resolve it.
    const byApprover = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi2));
    expect(byApprover.status).toBe(403);
    const resolved = await request(t.app.express).post(`/privacy/reidentification-requests/${id}/resolve`).set(as(tok.pi));
    expect(resolved.status).toBe(200);
    expect(resolved.body.patients).toEqual([{ patientKey: keys[0], issuer: 'urn:imaging-lake:issuer:GENERAL', mrn: mrns[0] }]);

    // Every decision attempt is an AuditEvent: the filer's two refused, the other project's PI's
    // 404, the second PI's approval.
    const events = await eventsOf({ entity: `ReidentificationRequest/${id}` });
    const stepOf = (e: (typeof events)[number]) => (e.entity ?? []).flatMap((x) => x.detail ?? []).find((d) => d.type === 'step')?.valueString;
    const decisions = events.filter((e) => ['approve', 'refuse'].includes(stepOf(e) ?? ''));
    expect(decisions.map((e) => `${stepOf(e)}:${e.outcome}`).sort()).toEqual(['approve:0', 'approve:4', 'approve:4', 'refuse:4'].sort());
  });

  test('listing: admin sees every request, a PI those of their projects, filtered by status', async () => {
    const all = await request(t.http).get('/privacy/reidentification-requests');
    expect(all.status).toBe(200);
    expect(all.body.requests.length).toBeGreaterThanOrEqual(5);
    const mine = await request(t.app.express).get('/privacy/reidentification-requests?status=resolved').set(as(tok.pi));
    expect(mine.status).toBe(200);
    expect(mine.body.requests.length).toBeGreaterThanOrEqual(2);
    for (const r of mine.body.requests) expect(r).toMatchObject({ project: 'ri-a', status: 'resolved' });
    const bad = await request(t.app.express).get('/privacy/reidentification-requests?status=lost').set(as(tok.pi));
    expect(bad.status).toBe(400);
    expect((await request(t.app.express).get('/privacy/reidentification-requests').set(as(tok.researcher))).status).toBe(403);
  });
});
