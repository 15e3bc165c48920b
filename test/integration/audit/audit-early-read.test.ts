/**
 * Reads have their AuditEvent committed while the handler works (the access guard starts it at
 * authorization). The answer still waits for that commit, and when it turns out otherwise than
 * the early event says, the same event is corrected before the answer leaves.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Request, type Response } from 'express';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { beginReadAudit, createAuditGate } from '../../../src/audit/audit-response';
import { auditWriterFor } from '../../../src/audit/audit-writer';
import { startTestApp, type TestApp } from '../../helpers/test-app';

interface AuditRow {
  id: string;
  outcome: string;
  resource: AuditEvent;
}

describe('reads audited early', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });
  const knex = () => t.app.db.knex;
  const rowsFor = async (requestId: string): Promise<AuditRow[]> => {
    const rows = (await knex()('audit_events').where({ request_id: requestId }).select('id', 'outcome', 'resource')) as AuditRow[];
    return rows.map((r) => ({ ...r, resource: typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource }));
  };
  /** Polls until `probe` holds (the early commit runs beside the handler: no fixed delay to wait). */
  const until = async <T>(probe: () => Promise<T | undefined>): Promise<T> => {
    for (let i = 0; i < 500; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('condition not reached');
  };

  /**
   * An app with the audit gate whose read route, like the guard, starts the audit at once and
   * then lets the test decide the answer once the early event is committed.
   */
  function gatedApp(answer: (req: Request, res: Response, early: AuditRow) => Promise<void> | void): express.Express {
    const a = express();
    a.use((req, res, next) => {
      const id = String(req.headers['x-request-id'] ?? randomUUID());
      (req as Request & { id: string }).id = id;
      res.locals.audit = { protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: String(req.query.id ?? 'x') };
      next();
    });
    a.use(createAuditGate(t.app.auth.audit));
    a.get('/fhir/Patient', async (req, res) => {
      beginReadAudit(res);
      const rid = (req as Request & { id: string }).id;
      const early = await until(async () => (await rowsFor(rid))[0]);
      await answer(req, res, early);
    });
    return a;
  }

  const corrections = () => auditWriterFor(knex()).stats().corrected;

  test('successful reads and searches of the app keep their early event as written (no correction)', async () => {
    const created = await request(t.http).post('/fhir/Patient').set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient' });
    expect(created.status).toBe(201);
    const before = corrections();
    const calls = [`/fhir/Patient/${created.body.id}`, '/fhir/Patient?_id=' + created.body.id, '/dicomweb/studies?PatientID=nobody', '/fhir/AuditEvent?outcome=4'];
    for (const path of calls) {
      const rid = `early-${randomUUID()}`;
      const res = await request(t.http).get(path).set('X-Request-Id', rid);
      expect(res.status).toBe(200);
      expect((await rowsFor(rid)).map((r) => r.outcome)).toEqual(['0']);
    }
    expect(corrections()).toBe(before);
  });

  test('a FHIR read answered 404 is audited once, with the failure outcome', async () => {
    const rid = `early-${randomUUID()}`;
    const before = corrections();
    const res = await request(t.http).get(`/fhir/Patient/no-such-${randomUUID()}`).set('X-Request-Id', rid);
    expect(res.status).toBe(404);
    expect(corrections()).toBe(before + 1);
    expect(res.body.resourceType).toBe('OperationOutcome');
    const rows = await rowsFor(rid);
    expect(rows).toHaveLength(1);
    expect(rows[0].outcome).toBe('4');
    expect(rows[0].resource.outcome).toBe('4');
    expect(rows[0].resource.subtype?.[0].code).toBe('read');
  });

  test('a QIDO-RS search answered 400 is audited once, with the failure outcome', async () => {
    const rid = `early-${randomUUID()}`;
    const res = await request(t.http).get('/dicomweb/studies?limit=many').set('X-Request-Id', rid);
    expect(res.status).toBe(400);
    const rows = await rowsFor(rid);
    expect(rows.map((r) => r.outcome)).toEqual(['4']);
    expect(rows[0].resource.type.code).toBe('110112');
  });

  test('a successful read keeps the event committed before its handler answered', async () => {
    let seen: AuditRow | undefined;
    const a = gatedApp((_req, res, early) => {
      seen = early;
      res.status(200).json({ resourceType: 'Patient', id: 'x' });
    });
    const rid = `early-${randomUUID()}`;
    const res = await request(a).get('/fhir/Patient?id=x').set('X-Request-Id', rid);
    expect(res.status).toBe(200);
    expect(seen?.outcome).toBe('0');
    const rows = await rowsFor(rid);
    expect(rows).toHaveLength(1);
    expect(rows[0].id).toBe(seen?.id);
    expect(rows[0].outcome).toBe('0');
  });

  test('the early success is corrected, same event, before a failure answer leaves', async () => {
    const a = gatedApp((_req, res) => {
      res.status(404).json({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] });
    });
    const rid = `early-${randomUUID()}`;
    let early: AuditRow[] = [];
    // The answer's first byte arrives only after the correction: read the row the moment it does.
    const res = await new Promise<{ status: number; rows: AuditRow[] }>((resolve, reject) => {
      const server = http.createServer(a).listen(0, '127.0.0.1', () => {
        const port = (server.address() as AddressInfo).port;
        http
          .get({ host: '127.0.0.1', port, path: '/fhir/Patient?id=gone', headers: { 'X-Request-Id': rid } }, (r) => {
            rowsFor(rid).then(
              (rows) => {
                r.resume();
                r.on('end', () => server.close(() => resolve({ status: r.statusCode ?? 0, rows })));
              },
              reject,
            );
          })
          .on('error', reject);
      });
    });
    early = res.rows;
    expect(res.status).toBe(404);
    expect(early).toHaveLength(1);
    expect(early[0].outcome).toBe('4');
    expect(early[0].resource.outcome).toBe('4');
    expect(early[0].resource.entity).toEqual(expect.arrayContaining([expect.objectContaining({ what: { reference: 'Patient/gone' } })]));
  });

  test('a route that names more than was known at authorization gets the event corrected to say it', async () => {
    const a = gatedApp((_req, res) => {
      res.locals.audit = { ...res.locals.audit, studyUids: ['1.2.3.4.5'] };
      res.status(200).json({});
    });
    const rid = `early-${randomUUID()}`;
    expect((await request(a).get('/fhir/Patient?id=y').set('X-Request-Id', rid)).status).toBe(200);
    const rows = await rowsFor(rid);
    expect(rows).toHaveLength(1);
    expect(rows[0].outcome).toBe('0');
    expect(rows[0].resource.entity).toEqual(expect.arrayContaining([expect.objectContaining({ what: expect.objectContaining({ identifier: expect.objectContaining({ value: '1.2.3.4.5' }) }) })]));
  });

  test('when the correction cannot be written the client gets 503 and none of the answer', async () => {
    const a = gatedApp(async (_req, res) => {
      await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_away');
      res.status(404).json({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: 'secret-detail' }] });
    });
    const rid = `early-${randomUUID()}`;
    let res: request.Response;
    try {
      res = await request(a).get('/fhir/Patient?id=z').set('X-Request-Id', rid);
    } finally {
      await knex().raw('ALTER TABLE audit_events_away RENAME TO audit_events');
    }
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'audit trail unavailable: access refused' }] });
    expect(res.text).not.toContain('secret-detail');
  });

  test('a client that leaves before the answer does not leave a success behind', async () => {
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r));
    const a = gatedApp(async (_req, res) => {
      await answered;
      res.status(200).json({ resourceType: 'Patient' });
    });
    const rid = `early-${randomUUID()}`;
    const server = http.createServer(a).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const req = http.get({ host: '127.0.0.1', port, path: '/fhir/Patient?id=left', headers: { 'X-Request-Id': rid } });
      req.on('error', () => undefined);
      await until(async () => (await rowsFor(rid))[0]);
      req.destroy();
      const corrected = await until(async () => (await rowsFor(rid)).find((r) => r.outcome !== '0'));
      expect(corrected.outcome).toBe('4');
      expect(corrected.resource.outcomeDesc).toMatch(/closed the connection/);
      expect(await rowsFor(rid)).toHaveLength(1);
    } finally {
      answer();
      await new Promise((r) => server.close(r));
    }
  });

  test('50 concurrent reads, half of them 404: exactly one event each, with its own outcome', async () => {
    const ids = await Promise.all(
      Array.from({ length: 25 }, async (_, i) => {
        const res = await request(t.http).post('/fhir/Patient').set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', name: [{ family: `Early${i}` }] });
        expect(res.status).toBe(201);
        return res.body.id as string;
      }),
    );
    const calls = [...ids.map((id) => ({ id, expected: 200 })), ...ids.map(() => ({ id: `missing-${randomUUID()}`, expected: 404 }))].map((c) => ({ ...c, rid: `early-${randomUUID()}` }));
    const answers = await Promise.all(calls.map((c) => request(t.http).get(`/fhir/Patient/${c.id}`).set('X-Request-Id', c.rid)));
    answers.forEach((res, i) => expect(res.status).toBe(calls[i].expected));
    for (const c of calls) {
      const rows = await rowsFor(c.rid);
      expect(rows.map((r) => r.outcome)).toEqual([c.expected === 200 ? '0' : '4']);
    }
  });

  describe('the append-only trigger lets through only the correction of an early success', () => {
    const correct = async (id: string, change: Record<string, unknown>) =>
      knex().transaction(async (trx) => {
        await trx.raw(`SELECT set_config('imaging_lake.audit_correction', ?, true)`, [id]);
        await trx('audit_events').where({ id }).update(change);
      });

    test('not without naming the row, not the agent, not a failure already recorded', async () => {
      const rid = `early-${randomUUID()}`;
      expect((await request(t.http).get(`/fhir/Patient/no-such-${randomUUID()}`).set('X-Request-Id', rid)).status).toBe(404);
      const [failed] = await rowsFor(rid);
      // A failure is final.
      await expect(correct(failed.id, { outcome: '0' })).rejects.toThrow(/append-only/);

      const ok = `early-${randomUUID()}`;
      const created = await request(t.http).post('/fhir/Patient').set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient' });
      expect((await request(t.http).get(`/fhir/Patient/${created.body.id}`).set('X-Request-Id', ok)).status).toBe(200);
      const [success] = await rowsFor(ok);
      // Who acted never changes; a row not named by the transaction never changes.
      await expect(correct(success.id, { agent_subject: 'someone-else' })).rejects.toThrow(/append-only/);
      await expect(knex()('audit_events').where({ id: success.id }).update({ outcome: '4' })).rejects.toThrow(/append-only/);
      await expect(
        knex().transaction(async (trx) => {
          await trx.raw(`SELECT set_config('imaging_lake.audit_correction', ?, true)`, [success.id]);
          await trx('audit_events').where({ id: success.id }).delete();
        }),
      ).rejects.toThrow(/append-only/);
      expect((await rowsFor(ok)).map((r) => r.outcome)).toEqual(['0']);
    });
  });
});
