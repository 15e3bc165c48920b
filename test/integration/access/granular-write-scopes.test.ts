/**
 * SMART App Launch 2.2 granular scopes govern writes as they narrow reads ("Finer-grained resource
 * constraints using search parameters"): `user/Condition.cu?code=...` lets a token create and
 * update only Conditions with that code, and `user/Condition.d?code=...` delete only those. An
 * update must find the stored resource in scope and leave it there; a denied write answers 403
 * with an OperationOutcome, keeps nothing (its transaction rolls back) and is audited as a denial.
 * The same holds for conditional writes and for the entries of batch and transaction Bundles.
 */
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const TAG = 'urn:test:granular-write';
const FHIR_JSON = 'application/fhir+json';

describe('granular SMART scopes govern every write', () => {
  let t: TestApp;
  let patient: string;

  const asToken = (token: string) => ({ Authorization: `Bearer ${token}`, 'Content-Type': FHIR_JSON });
  const tokenWith = (scope: string) => t.token('admin', [], scope);
  const condition = (code: string, tag = randomUUID(), id?: string) => ({
    resourceType: 'Condition',
    ...(id ? { id } : {}),
    identifier: [{ system: TAG, value: tag }],
    subject: { reference: `Patient/${patient}` },
    code: { coding: [{ system: ICD10, code }] },
  });
  /** Creates a Condition as the unrestricted admin; returns its id. */
  const stored = async (code: string, tag = randomUUID()): Promise<string> => {
    const res = await request(t.http).post('/fhir/Condition').set('Content-Type', FHIR_JSON).send(condition(code, tag));
    expect(res.status).toBe(201);
    return res.body.id;
  };
  /** The Conditions carrying `tag`, as the unrestricted admin finds them. */
  const foundByTag = async (tag: string): Promise<Array<{ id: string; code?: { coding?: Array<{ code: string }> } }>> => {
    const res = await request(t.http).get(`/fhir/Condition?identifier=${encodeURIComponent(`${TAG}|${tag}`)}`);
    expect(res.status).toBe(200);
    return (res.body.entry ?? []).map((e: { resource: unknown }) => e.resource);
  };
  const currentOf = async (id: string) => request(t.http).get(`/fhir/Condition/${id}`);
  const expectForbidden = (res: request.Response) => {
    expect(res.status).toBe(403);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].code).toBe('forbidden');
    expect(res.body.issue[0].diagnostics).toMatch(/limited by search parameters/);
  };

  beforeAll(async () => {
    t = await startTestApp();
    const p = await request(t.http).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'WriteScoped' }] });
    expect(p.status).toBe(201);
    patient = p.body.id;
  });
  afterAll(async () => {
    await t?.close();
  });

  test('a create that matches the scope is stored (201)', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const res = await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition('H40.11', tag));
    expect(res.status).toBe(201);
    expect(await foundByTag(tag)).toHaveLength(1);
  });

  test('a create outside the scope is refused (403 OperationOutcome) and nothing is stored', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const res = await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition('E11.9', tag));
    expectForbidden(res);
    // The diagnostics name the restriction, nothing of the resource.
    expect(res.body.issue[0].diagnostics).not.toMatch(/E11\.9|H40\.11/);
    expect(await foundByTag(tag)).toEqual([]);
  });

  test('a denied write is audited as a denial, with its reason', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11`);
    const requestId = `granular-write-${randomUUID()}`;
    const res = await request(t.http).post('/fhir/Condition').set(asToken(token)).set('X-Request-Id', requestId).send(condition('E11.9'));
    expect(res.status).toBe(403);
    const rows = await t.app.db.knex('audit_events').where({ request_id: requestId }).select('resource');
    const events: AuditEvent[] = rows.map((r: { resource: AuditEvent | string }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource));
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ action: 'C', outcome: '4' });
    expect(events[0].outcomeDesc).toMatch(/^access denied: .*limited by search parameters/);
  });

  test('an update that would move a resource out of the scope is refused and the stored version is unchanged', async () => {
    const token = await tokenWith(`user/Condition.rs user/Condition.cu?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const id = await stored('H40.11', tag);
    const res = await request(t.http).put(`/fhir/Condition/${id}`).set(asToken(token)).send(condition('E11.9', tag, id));
    expectForbidden(res);
    const now = await currentOf(id);
    expect(now.body.meta.versionId).toBe('1');
    expect(now.body.code.coding[0].code).toBe('H40.11');
    // Within the scope, the same token updates it.
    const inside = await request(t.http).put(`/fhir/Condition/${id}`).set(asToken(token)).send({ ...condition('H40.11', tag, id), note: [{ text: 'seen' }] });
    expect(inside.status).toBe(200);
  });

  test('an update of a stored resource outside the scope is refused (403: an update reads through projects only), unchanged', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const id = await stored('E11.9', tag);
    const res = await request(t.http).put(`/fhir/Condition/${id}`).set(asToken(token)).send(condition('H40.11', tag, id));
    expectForbidden(res);
    const now = await currentOf(id);
    expect(now.body.meta.versionId).toBe('1');
    expect(now.body.code.coding[0].code).toBe('E11.9');
  });

  test('a delete of a resource outside the scope is refused and the resource stays', async () => {
    const token = await tokenWith(`user/Condition.d?code=${ICD10}|H40.11`);
    const outside = await stored('E11.9');
    const res = await request(t.http).delete(`/fhir/Condition/${outside}`).set(asToken(token));
    expectForbidden(res);
    expect((await currentOf(outside)).status).toBe(200);
    const inside = await stored('H40.11');
    expect((await request(t.http).delete(`/fhir/Condition/${inside}`).set(asToken(token))).status).toBe(200);
    expect((await currentOf(inside)).status).toBe(410);
  });

  test('two granular scopes on one type are a union', async () => {
    const token = await tokenWith(`user/Condition.c?code=${ICD10}|H40.11 user/Condition.c?code=E11.9`);
    for (const code of ['H40.11', 'E11.9']) {
      expect((await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition(code))).status).toBe(201);
    }
    const tag = randomUUID();
    expectForbidden(await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition('H35.30', tag)));
    expect(await foundByTag(tag)).toEqual([]);
  });

  test("a * scope's parameters apply to every type (and grant nothing where they cannot be evaluated)", async () => {
    const token = await tokenWith(`user/*.c?code=${ICD10}|H40.11`);
    expect((await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition('H40.11'))).status).toBe(201);
    expectForbidden(await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition('E11.9')));
    // Patient has no `code` search parameter: the scope grants no Patient.
    const family = `Star${randomUUID().slice(0, 8)}`;
    expectForbidden(await request(t.http).post('/fhir/Patient').set(asToken(token)).send({ resourceType: 'Patient', name: [{ family }] }));
    const found = await request(t.http).get(`/fhir/Patient?family=${family}`);
    expect(found.body.entry ?? []).toEqual([]);
  });

  test('one unrestricted scope lifts the restriction', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11 user/Condition.cud`);
    const id = await stored('H40.11');
    expect((await request(t.http).post('/fhir/Condition').set(asToken(token)).send(condition('E11.9'))).status).toBe(201);
    expect((await request(t.http).put(`/fhir/Condition/${id}`).set(asToken(token)).send(condition('H35.30', randomUUID(), id))).status).toBe(200);
    expect((await request(t.http).delete(`/fhir/Condition/${id}`).set(asToken(token))).status).toBe(200);
  });

  test('a transaction with one entry outside the scope is refused whole: nothing is stored', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11`);
    const [inTag, outTag] = [randomUUID(), randomUUID()];
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: `urn:uuid:${randomUUID()}`, resource: condition('H40.11', inTag), request: { method: 'POST', url: 'Condition' } },
        { fullUrl: `urn:uuid:${randomUUID()}`, resource: condition('E11.9', outTag), request: { method: 'POST', url: 'Condition' } },
      ],
    };
    const res = await request(t.http).post('/fhir').set(asToken(token)).send(bundle);
    expectForbidden(res);
    expect(res.body.issue[0].diagnostics).toMatch(/^Bundle\.entry\[1\]/);
    expect(await foundByTag(inTag)).toEqual([]);
    expect(await foundByTag(outTag)).toEqual([]);
  });

  test('a transaction update or delete of a stored resource outside the scope is refused whole', async () => {
    const token = await tokenWith(`user/Condition.rs user/Condition.cud?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const outside = await stored('E11.9', tag);
    const inside = await stored('H40.11');
    const update = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: condition('H40.11', tag, outside), request: { method: 'PUT', url: `Condition/${outside}` } },
        { request: { method: 'DELETE', url: `Condition/${inside}` } },
      ],
    };
    expectForbidden(await request(t.http).post('/fhir').set(asToken(token)).send(update));
    const remove = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `Condition/${outside}` } }, { request: { method: 'DELETE', url: `Condition/${inside}` } }] };
    expectForbidden(await request(t.http).post('/fhir').set(asToken(token)).send(remove));
    expect((await currentOf(outside)).body.meta.versionId).toBe('1');
    expect((await currentOf(inside)).status).toBe(200);
  });

  test('in a Bundle, a stored resource the read scopes hide is not found (404), as for a read', async () => {
    // A Bundle's entries read through its row filter, which the token's read scopes narrow.
    const token = await tokenWith(`user/Condition.rs?code=${ICD10}|H40.11 user/Condition.cud?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const hidden = await stored('E11.9', tag);
    const update = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: condition('H40.11', tag, hidden), request: { method: 'PUT', url: `Condition/${hidden}` } }] };
    const res = await request(t.http).post('/fhir').set(asToken(token)).send(update);
    expect(res.status).toBe(404);
    expect(res.body.issue[0].code).toBe('not-found');
    expect((await currentOf(hidden)).body.meta.versionId).toBe('1');
  });

  test('a batch entry outside the scope fails alone with 403; the others are stored', async () => {
    const token = await tokenWith(`user/Condition.cu?code=${ICD10}|H40.11`);
    const [inTag, outTag] = [randomUUID(), randomUUID()];
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { resource: condition('E11.9', outTag), request: { method: 'POST', url: 'Condition' } },
        { resource: condition('H40.11', inTag), request: { method: 'POST', url: 'Condition' } },
      ],
    };
    const res = await request(t.http).post('/fhir').set(asToken(token)).send(bundle);
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('batch-response');
    expect(res.body.entry[0].response.status).toMatch(/^403/);
    expect(res.body.entry[0].response.outcome.issue[0]).toMatchObject({ code: 'forbidden', diagnostics: expect.stringMatching(/limited by search parameters/) });
    expect(res.body.entry[1].response.status).toMatch(/^201/);
    expect(await foundByTag(outTag)).toEqual([]);
    expect(await foundByTag(inTag)).toHaveLength(1);
  });

  test('a conditional create outside the scope is refused and stores nothing; inside, it is stored', async () => {
    const token = await tokenWith(`user/Condition.crs?code=${ICD10}|H40.11`);
    const [outTag, inTag] = [randomUUID(), randomUUID()];
    const outside = await request(t.http).post('/fhir/Condition').set(asToken(token)).set('If-None-Exist', `identifier=${TAG}|${outTag}`).send(condition('E11.9', outTag));
    expectForbidden(outside);
    expect(await foundByTag(outTag)).toEqual([]);
    const inside = await request(t.http).post('/fhir/Condition').set(asToken(token)).set('If-None-Exist', `identifier=${TAG}|${inTag}`).send(condition('H40.11', inTag));
    expect(inside.status).toBe(201);
    expect(await foundByTag(inTag)).toHaveLength(1);
  });

  test('a conditional update or delete does not select a resource its token may not search', async () => {
    const token = await tokenWith(`user/Condition.uds?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const outside = await stored('E11.9', tag);
    const query = `identifier=${encodeURIComponent(`${TAG}|${tag}`)}`;
    // The search finds nothing in scope: the update creates a new Condition, the delete deletes nothing.
    const updated = await request(t.http).put(`/fhir/Condition?${query}`).set(asToken(token)).send(condition('H40.11', tag));
    expect(updated.status).toBe(201);
    expect(updated.body.id).not.toBe(outside);
    expect([200, 204]).toContain((await request(t.http).delete(`/fhir/Condition?${query}`).set(asToken(token))).status);
    const current = await currentOf(outside);
    expect(current.status).toBe(200);
    expect(current.body.code.coding[0].code).toBe('E11.9');
  });

  test('a conditional write needs the right to search its type', async () => {
    const token = await tokenWith(`user/Condition.cud?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    await stored('E11.9', tag);
    const query = `identifier=${encodeURIComponent(`${TAG}|${tag}`)}`;
    for (const res of [
      await request(t.http).put(`/fhir/Condition?${query}`).set(asToken(token)).send(condition('H40.11', tag)),
      await request(t.http).delete(`/fhir/Condition?${query}`).set(asToken(token)),
      await request(t.http).post('/fhir/Condition').set(asToken(token)).set('If-None-Exist', query).send(condition('H40.11', tag)),
    ]) {
      expect(res.status).toBe(403);
      expect(res.body.issue[0].diagnostics).toMatch(/may not search Condition/);
    }
    const [still] = await foundByTag(tag);
    expect(still.code?.coding?.[0].code).toBe('E11.9');
    expect(await foundByTag(tag)).toHaveLength(1);
  });

  test('a conditional create answers only with a resource its token may read', async () => {
    // Create-only on Patient: If-None-Exist must not hand over an existing Patient's record.
    const mrn = `MRN-${randomUUID()}`;
    const existing = await request(t.http).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', identifier: [{ system: 'urn:mrn', value: mrn }], name: [{ family: 'NotForYou' }] });
    expect(existing.status).toBe(201);
    const createOnly = await tokenWith('user/Patient.c');
    const refused = await request(t.http).post('/fhir/Patient').set(asToken(createOnly)).set('If-None-Exist', `identifier=urn:mrn|${mrn}`).send({ resourceType: 'Patient' });
    expect(refused.status).toBe(403);
    expect(JSON.stringify(refused.body)).not.toContain('NotForYou');
    // A Condition outside the read scope is not found by If-None-Exist, so it is not returned.
    const scoped = await tokenWith(`user/Condition.crs?code=${ICD10}|H40.11`);
    const tag = randomUUID();
    const hidden = await stored('E11.9', tag);
    const res = await request(t.http).post('/fhir/Condition').set(asToken(scoped)).set('If-None-Exist', `identifier=${TAG}|${tag}`).send(condition('H40.11', tag));
    expect(res.status).toBe(201);
    expect(res.body.id).not.toBe(hidden);
    expect(JSON.stringify(res.body)).not.toContain('E11.9');
  });
});
