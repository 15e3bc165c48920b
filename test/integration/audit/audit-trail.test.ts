import { randomUUID } from 'node:crypto';
import express from 'express';
import request from 'supertest';
import * as auditApi from '../../../src/audit';
import { auditInTransaction, createAuditGate } from '../../../src/audit/audit-response';
import { ensureAuditPartitions, searchAuditEvents } from '../../../src/audit/audit-store';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { mintLocalToken } from '../../../src/auth/local-token';
import { withTransaction } from '../../../src/db/database';
import { makeClientAssertion, makeClientKey, tokenForm } from '../../helpers/tokens';
import { startAuthTestApp, TOKEN_ENDPOINT, type AuthTestApp } from '../auth/auth-test-app';

function rowsOf<T>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}

describe('the audit trail', () => {
  let t: AuthTestApp;
  beforeAll(async () => {
    t = await startAuthTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });
  const knex = () => t.base.app.db.knex;
  const mint = (role: 'admin' | 'researcher' | 'data-manager', subject: string, scope?: string) =>
    mintLocalToken({ role, projects: ['p1'], subject, scope }, { config: t.config, keys: t.auth.keys }).then((r) => r.accessToken);
  const byRequest = async (requestId: string): Promise<AuditEvent[]> => (await searchAuditEvents(knex(), { requestId })).events;

  test('a FHIR read writes a BALP AuditEvent with agent, patient, resource and request id', async () => {
    const rid = `req-${randomUUID()}`;
    const res = await request(t.http).get('/fhir/Patient/p-42').set('Authorization', `Bearer ${await mint('researcher', 'alice')}`).set('X-Request-Id', rid).set('X-Forwarded-For', '10.1.2.3');
    expect(res.status).toBe(200);
    const [e] = await byRequest(rid);
    expect(e).toMatchObject({ resourceType: 'AuditEvent', type: { code: 'rest' }, subtype: [{ code: 'read' }], action: 'R', outcome: '0', source: { observer: { display: 'imaging-lake' } } });
    const user = e.agent.find((a) => a.requestor)!;
    expect(user.who?.identifier?.value).toBe('alice');
    expect(user.role?.[0].coding[0].code).toBe('researcher');
    expect(user.policy?.[0]).toEqual(expect.any(String));
    expect(e.agent.find((a) => a.type?.coding[0].code === '110153')?.network?.address).toEqual(expect.any(String));
    expect(e.entity).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ what: { reference: 'Patient/p-42' }, role: expect.objectContaining({ code: '1' }) }),
        expect.objectContaining({ what: { identifier: { value: rid } } }),
      ]),
    );
    const row = await knex()('audit_events').where({ request_id: rid }).first();
    expect(row).toMatchObject({ type_code: 'rest', subtype_code: 'read', action: 'R', outcome: '0', agent_subject: 'alice', agent_role: 'researcher', patient: 'Patient/p-42' });
  });

  test('a QIDO-RS search is a DICOM 110112 Query with the query base64 encoded', async () => {
    const rid = `req-${randomUUID()}`;
    const res = await request(t.http).get('/dicomweb/studies?PatientID=X1').set('Authorization', `Bearer ${await mint('admin', 'root')}`).set('X-Request-Id', rid);
    expect(res.status).toBe(200);
    const [e] = await byRequest(rid);
    expect(e.type).toMatchObject({ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110112' });
    expect(e.action).toBe('E');
    const query = e.entity!.find((x) => x.role?.code === '24')!.query!;
    expect(Buffer.from(query, 'base64').toString('utf8')).toBe('GET /dicomweb/studies?PatientID=X1');
  });

  test('a denial is audited (outcome 4, with the reason)', async () => {
    const rid = `req-${randomUUID()}`;
    const res = await request(t.http).delete('/dicomweb/studies/1.2.3').set('Authorization', `Bearer ${await mint('researcher', 'bob')}`).set('X-Request-Id', rid);
    expect(res.status).toBe(403);
    const [e] = await byRequest(rid);
    expect(e).toMatchObject({ type: { code: '110105' }, action: 'D', outcome: '4', outcomeDesc: 'access denied: role researcher may not delete ImagingStudy' });
    expect(e.entity).toEqual(expect.arrayContaining([expect.objectContaining({ what: expect.objectContaining({ identifier: expect.objectContaining({ value: '1.2.3' }) }) })]));
  });

  test('an anonymous attempt is audited with an anonymous requestor', async () => {
    const rid = `req-${randomUUID()}`;
    expect((await request(t.http).get('/fhir/Patient/p-1').set('X-Request-Id', rid)).status).toBe(401);
    const [e] = await byRequest(rid);
    expect(e.outcome).toBe('4');
    expect(e.agent.find((a) => a.requestor)?.who).toEqual({ display: 'anonymous' });
    expect(e.outcomeDesc).toBe('authentication required: send Authorization: Bearer <token>');
  });

  test('a failed sign-in at the token endpoint is audited as 110114 with the claimed client', async () => {
    const rid = `req-${randomUUID()}`;
    const key = await makeClientKey('ES384');
    const assertion = await makeClientAssertion({ clientId: 'ghost-client', audience: TOKEN_ENDPOINT, key });
    const res = await request(t.http).post('/oauth2/token').set('X-Request-Id', rid).type('form').send(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    const [e] = await byRequest(rid);
    expect(e).toMatchObject({ type: { code: '110114' }, subtype: [{ code: '110122' }], outcome: '4', outcomeDesc: 'invalid_client: unknown client' });
    expect(JSON.stringify(e.entity)).toContain('ghost-client');
  });

  test('search by patient, agent, type and entity uses the indexed columns', async () => {
    const who = `searcher-${randomUUID().slice(0, 6)}`;
    const token = await mint('researcher', who);
    await request(t.http).get('/fhir/Patient/p-search').set('Authorization', `Bearer ${token}`);
    await request(t.http).get('/fhir/Patient/p-search').set('Authorization', `Bearer ${token}`);
    const byPatient = await searchAuditEvents(knex(), { patient: 'Patient/p-search', count: 1 });
    expect(byPatient.events).toHaveLength(1);
    expect(byPatient.next).toEqual(expect.any(String));
    const page2 = await searchAuditEvents(knex(), { patient: 'Patient/p-search', count: 1, cursor: byPatient.next });
    expect(page2.events).toHaveLength(1);
    expect(page2.events[0].id).not.toBe(byPatient.events[0].id);
    expect((await searchAuditEvents(knex(), { entity: 'Patient/p-search', type: 'rest', subtype: 'read' })).events).toHaveLength(2);
    expect((await searchAuditEvents(knex(), { agent: who })).events).toHaveLength(2);
    expect((await searchAuditEvents(knex(), { agent: who, action: 'D' })).events).toHaveLength(0);
    expect((await searchAuditEvents(knex(), { type: '110112' })).events.length).toBeGreaterThan(0);
  });

  test('rows land in a monthly partition (declarative partitioning works on this engine)', async () => {
    await ensureAuditPartitions(knex(), 2);
    const month = new Date().toISOString().slice(0, 7).replace('-', '_');
    const parts = rowsOf<{ part: string; n: string }>(await knex().raw(`SELECT tableoid::regclass::text AS part, count(*) AS n FROM audit_events GROUP BY 1`));
    expect(parts.map((p) => p.part)).toContain(`audit_events_${month}`);
    expect(parts.map((p) => p.part)).not.toContain('audit_events_default');
    // Idempotent.
    expect(await ensureAuditPartitions(knex(), 2)).toEqual([]);
  });

  test('the resource column of the table and every partition, new ones included, is LZ4-compressed on PostgreSQL (the default elsewhere)', async () => {
    await ensureAuditPartitions(knex(), 4);
    const columns = rowsOf<{ rel: string; method: string }>(
      await knex().raw(`SELECT a.attrelid::regclass::text AS rel, a.attcompression::text AS method FROM pg_attribute a
        WHERE a.attname = 'resource' AND (a.attrelid = 'audit_events'::regclass OR a.attrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_events'::regclass))`),
    );
    expect(columns.length).toBeGreaterThanOrEqual(t.base.app.db.kind === 'postgres' ? 6 : 1);
    // 'l' is LZ4; '' is the engine's default (pglz), kept where the engine has no LZ4 (PGlite).
    const expected = t.base.app.db.kind === 'postgres' ? 'l' : '';
    expect(columns.filter((c) => c.method !== expected)).toEqual([]);
  });

  test('the resource is stored as the JSON text the server serialized (json, not re-encoded as jsonb) and reads back as the event', async () => {
    const rid = `req-${randomUUID()}`;
    const res = await request(t.http).get('/fhir/Patient/p-43').set('Authorization', `Bearer ${await mint('researcher', 'alice')}`).set('X-Request-Id', rid);
    expect(res.status).toBe(200);
    const [row] = rowsOf<{ type: string; text: string }>(await knex().raw(`SELECT pg_typeof(resource)::text AS type, resource::text AS text FROM audit_events WHERE request_id = ?`, [rid]));
    expect(row.type).toBe('json');
    const [e] = await byRequest(rid);
    // jsonb would reorder the keys (shorter first) and add spaces after ':' and ','.
    expect(row.text).toBe(JSON.stringify(e));
    expect(row.text.startsWith('{"resourceType":"AuditEvent","id":')).toBe(true);
  });

  test('append-only: the database refuses UPDATE, DELETE and TRUNCATE', async () => {
    await expect(knex()('audit_events').update({ outcome: '0' })).rejects.toThrow(/append-only/);
    await expect(knex()('audit_events').delete()).rejects.toThrow(/append-only/);
    await expect(knex().raw('TRUNCATE audit_events')).rejects.toThrow(/append-only/);
  });

  test('append-only: the audit module exports no way to change or delete an event', () => {
    const names = Object.keys(auditApi);
    expect(names.filter((n) => /update|delete|remove|patch|purge|truncate/i.test(n))).toEqual([]);
  });

  test('a change and its audit commit together; when the audit fails the change is rolled back and the request fails', async () => {
    const a = express();
    a.use((req, _res, next) => {
      (req as typeof req & { id: string }).id = randomUUID();
      next();
    });
    a.use(createAuditGate(t.auth.audit));
    a.post('/fhir/Project', async (req, res) => {
      res.locals.audit = { protocol: 'fhir', action: 'create', resourceType: 'Project', resourceId: String(req.query.id) };
      try {
        await withTransaction(knex(), async (trx) => {
          await trx('projects').insert({ id: String(req.query.id), name: 'tx test' });
          await auditInTransaction(trx, t.auth.audit, req, res, { status: 201 });
          if (req.query.fail) throw new Error('a later step of the change failed');
        });
        res.status(201).json({ ok: true });
      } catch {
        res.status(503).json({ error: 'audit trail unavailable' });
      }
    });
    expect((await request(a).post('/fhir/Project?id=tx-ok')).status).toBe(201);
    expect(await knex()('projects').where({ id: 'tx-ok' }).first()).toBeDefined();
    expect((await searchAuditEvents(knex(), { entity: 'Project/tx-ok' })).events).toHaveLength(1);

    await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_away');
    try {
      expect((await request(a).post('/fhir/Project?id=tx-fail')).status).toBe(503);
    } finally {
      await knex().raw('ALTER TABLE audit_events_away RENAME TO audit_events');
    }
    expect(await knex()('projects').where({ id: 'tx-fail' }).first()).toBeUndefined();

    // The audit was written, then a later step failed and rolled everything back: the trail
    // keeps no success that never happened, and the gate records the failed request instead.
    const late = await request(a).post('/fhir/Project?id=tx-late&fail=1');
    expect(late.status).toBe(503);
    expect(await knex()('projects').where({ id: 'tx-late' }).first()).toBeUndefined();
    const events = (await searchAuditEvents(knex(), { entity: 'Project/tx-late' })).events;
    expect(events.map((e) => e.outcome)).toEqual(['8']);
  });

  test('when the audit store is unavailable, reads and sign-ins fail instead of going unaudited', async () => {
    const token = await mint('admin', 'root');
    await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_away');
    try {
      const read = await request(t.http).get('/fhir/Patient/p-7').set('Authorization', `Bearer ${token}`);
      expect(read.status).toBe(503);
      expect(read.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'audit trail unavailable: access refused' }] });
      expect(read.text).not.toContain('p-7"');

      const qido = await request(t.http).get('/dicomweb/studies').set('Authorization', `Bearer ${token}`);
      expect(qido.status).toBe(503);
      expect(JSON.parse(qido.text)['00000902'].Value[0]).toMatch(/audit trail unavailable/);

      const key = await makeClientKey('ES384');
      const login = await request(t.http).post('/oauth2/token').type('form').send(tokenForm(await makeClientAssertion({ clientId: 'x', audience: TOKEN_ENDPOINT, key }), 'system/*.rs'));
      expect(login.status).toBe(503);
      expect(login.body.error).toBe('temporarily_unavailable');
    } finally {
      await knex().raw('ALTER TABLE audit_events_away RENAME TO audit_events');
    }
    expect((await request(t.http).get('/fhir/Patient/p-7').set('Authorization', `Bearer ${token}`)).status).toBe(200);
  });
});
