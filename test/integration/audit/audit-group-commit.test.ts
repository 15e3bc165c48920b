/**
 * Group commit of the audit trail on the real app: concurrent requests share INSERTs, yet each
 * one still has exactly its own AuditEvent (readable through GET /fhir/AuditEvent) before it is
 * answered; a failing flush fails every request of the batch; shutdown commits what is queued.
 */
import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import request from 'supertest';
import { auditIndexColumns, buildAuditEvent, type AuditEvent } from '../../../src/audit/audit-event';
import { auditWriterFor, createAuditWriter } from '../../../src/audit/audit-writer';
import { shutdownApp } from '../../../src/app';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const CONCURRENT = 50;

describe('audit group commit', () => {
  let t: TestApp;
  const patientIds: string[] = [];
  const requestIdOf = (e: AuditEvent) => e.entity?.find((x) => x.type?.code === 'XrequestId')?.what?.identifier?.value;

  beforeAll(async () => {
    t = await startTestApp();
    const created = await Promise.all(
      Array.from({ length: CONCURRENT }, (_, i) =>
        request(t.http).post('/fhir/Patient').set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', name: [{ family: `GroupCommit${i}` }] }),
      ),
    );
    for (const res of created) {
      expect(res.status).toBe(201);
      patientIds.push(res.body.id);
    }
  });
  afterAll(async () => {
    await t?.close();
  });

  test(`${CONCURRENT} concurrent reads: each answered, each with exactly one AuditEvent found by GET /fhir/AuditEvent`, async () => {
    const researcher = await t.token('researcher', ['none-of-these']);
    const before = auditWriterFor(t.app.db.knex).stats();
    const sent = patientIds.map((id, i) => {
      const rid = `gc-${randomUUID()}`;
      // Half as admin (answered 200), half as a researcher outside every project (404): both are audited.
      const call = request(t.http).get(`/fhir/Patient/${id}`).set('X-Request-Id', rid);
      return { id, rid, expected: i % 2 === 0 ? 200 : 404, answer: i % 2 === 0 ? call : call.set('Authorization', `Bearer ${researcher}`) };
    });
    const answers = await Promise.all(sent.map((s) => s.answer));
    answers.forEach((res, i) => expect(res.status).toBe(sent[i].expected));

    for (const s of sent) {
      const res = await request(t.http).get(`/fhir/AuditEvent?entity=Patient/${s.id}&subtype=read`);
      expect(res.status).toBe(200);
      const events = (res.body.entry ?? []).filter((e: { search?: { mode?: string } }) => e.search?.mode === 'match').map((e: { resource: AuditEvent }) => e.resource);
      expect(events).toHaveLength(1);
      expect(requestIdOf(events[0])).toBe(s.rid);
      expect(events[0].outcome).toBe(s.expected === 200 ? '0' : '4');
    }
    const after = auditWriterFor(t.app.db.knex).stats();
    // Every one of them went through the group-commit writer (the searches above add theirs too).
    expect(after.events - before.events).toBeGreaterThanOrEqual(CONCURRENT);
    expect(after.failed).toBe(before.failed);
  });

  test.each([1, 3, 17, 40])('an INSERT of %i rows stores each event whole: its index columns and its resource, U+0000 replaced', async (size) => {
    const knex = t.app.db.knex;
    // Its own writer, so the batch is exactly the events of this test (one INSERT of `size` rows).
    const writer = createAuditWriter(knex);
    const marker = `rows-${size}-${randomUUID()}`;
    const events = Array.from({ length: size }, (_, i) =>
      buildAuditEvent(
        {
          protocol: i % 2 ? 'dicomweb' : 'fhir',
          action: i % 3 ? 'read' : 'search',
          resourceType: 'Patient',
          resourceId: `${marker}-${i}`,
          studyUids: i % 2 ? [`1.2.3.${i}`, `1.2.4.${i}`] : undefined,
          query: i % 3 ? undefined : `GET /fhir/Patient?name=${marker}`,
          patient: i % 2 ? `Patient/${marker}-${i}` : undefined,
          status: i % 4 ? 200 : 404,
          agent: { subject: marker, clientId: i % 2 ? 'viewer' : undefined, role: 'researcher', address: i % 5 ? '127.0.0.1' : 'nul\u0000addr', tokenId: `jti-${i}` },
          requestId: `${marker}-${i}`,
          details: i === 0 ? { note: 'a\u0000b' } : undefined,
        },
        { observer: 'test' },
      ),
    );
    await Promise.all(events.map((e) => writer.write(e)));
    expect(writer.stats()).toMatchObject({ events: size, batches: 1, largestBatch: size, failed: 0 });
    await writer.close();
    const rows = await knex('audit_events').where({ agent_subject: marker }).orderBy('request_id').select('*');
    expect(rows).toHaveLength(size);
    const byId = new Map(events.map((e) => [e.id, e]));
    for (const row of rows) {
      const stored = JSON.parse(JSON.stringify(byId.get(row.id)).replaceAll('\\u0000', '\ufffd')) as AuditEvent;
      const resource = typeof row.resource === 'string' ? JSON.parse(row.resource) : row.resource;
      expect(resource).toEqual(stored);
      expect(new Date(row.recorded).toISOString()).toBe(stored.recorded);
      const { id: _id, recorded: _recorded, resource: _resource, ...columns } = row;
      expect(columns).toEqual(auditIndexColumns(stored));
    }
  });

  test('a failing flush fails every request waiting on it (503, nothing served), and the next requests are audited again', async () => {
    const knex = t.app.db.knex;
    await knex.raw('ALTER TABLE audit_events RENAME TO audit_events_offline');
    let answers: request.Response[];
    try {
      answers = await Promise.all(patientIds.slice(0, 20).map((id) => request(t.http).get(`/fhir/Patient/${id}`)));
    } finally {
      await knex.raw('ALTER TABLE audit_events_offline RENAME TO audit_events');
    }
    for (const res of answers) {
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'audit trail unavailable: access refused' }] });
      expect(res.text).not.toContain('GroupCommit');
    }
    const rid = `gc-${randomUUID()}`;
    const again = await request(t.http).get(`/fhir/Patient/${patientIds[0]}`).set('X-Request-Id', rid);
    expect(again.status).toBe(200);
    expect(await knex('audit_events').where({ request_id: rid }).select('id')).toHaveLength(1);
  });

  test('shutdown commits the AuditEvents still queued before the database closes, then refuses new ones', async () => {
    const other = await startTestApp();
    let closed = false;
    try {
      const writer = auditWriterFor(other.app.db.knex);
      const marker = `shutdown-${randomUUID()}`;
      const events = Array.from({ length: 30 }, (_, i) =>
        buildAuditEvent({ protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: `${marker}-${i}`, agent: { subject: marker } }, { observer: 'test' }),
      );
      const waiting = events.map((e) => writer.write(e));
      await shutdownApp(other.app);
      closed = true;
      await expect(Promise.all(waiting)).resolves.toHaveLength(30);
      await expect(writer.write(events[0])).rejects.toThrow(/closed/);
      if (other.databaseUrl) {
        const c = new Client({ connectionString: other.databaseUrl });
        await c.connect();
        try {
          const { rows } = await c.query('SELECT count(*)::int AS n FROM audit_events WHERE agent_subject = $1', [marker]);
          expect(rows[0].n).toBe(30);
        } finally {
          await c.end();
        }
      }
    } finally {
      if (!closed) await shutdownApp(other.app);
      // close() shuts the app down again (idempotent) and drops the database.
      await other.close();
    }
  });
});
