import { Readable } from 'node:stream';
import express from 'express';
import type { Knex } from 'knex';
import pino from 'pino';
import request from 'supertest';
import type { AuditInput } from '../../../src/audit/audit-event';
import { createAuditGate, sameAuditDescription } from '../../../src/audit/audit-response';

/** A stand-in for knex that records the rows of the audit INSERT, or fails it. */
function fakeKnex(behaviour: { fail?: boolean; delayMs?: number }) {
  const rows: Array<Record<string, unknown>> = [];
  const knex = {
    raw: async (sql: string, bindings: string[]) => {
      if (behaviour.delayMs) await new Promise((r) => setTimeout(r, behaviour.delayMs));
      if (behaviour.fail) throw new Error('relation "audit_events" does not exist');
      expect(sql).toMatch(/^INSERT INTO audit_events /);
      rows.push(...(JSON.parse(bindings[0]) as Array<Record<string, unknown>>));
    },
  } as unknown as Knex;
  return { knex, rows };
}

function app(knex: Knex, route: express.RequestHandler, path = '/fhir/Patient/1') {
  const a = express();
  a.use(createAuditGate({ knex, logger: pino({ level: 'silent' }), source: { observer: 'test' } }));
  a.use((req, res, next) => {
    res.locals.audit = { protocol: req.path.startsWith('/dicomweb') ? 'dicomweb' : 'fhir', action: 'read', resourceType: 'Patient', resourceId: '1' };
    next();
  });
  a.get(path, route);
  return a;
}

describe('the audit gate', () => {
  test('a successful answer is sent after its AuditEvent is written, with the answer status as outcome', async () => {
    const { knex, rows } = fakeKnex({ delayMs: 20 });
    const res = await request(app(knex, (_req, res) => void res.status(200).json({ ok: true }))).get('/fhir/Patient/1');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ ok: true });
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ type_code: 'rest', subtype_code: 'read', outcome: '0', entity: ['Patient/1'] });
  });

  test('when the audit cannot be written the answer is withheld and the request fails (FHIR: OperationOutcome)', async () => {
    const { knex } = fakeKnex({ fail: true });
    const res = await request(app(knex, (_req, res) => void res.status(200).set('ETag', 'W/"1"').json({ resourceType: 'Patient', id: '1', secret: 'PHI' }))).get('/fhir/Patient/1');
    expect(res.status).toBe(503);
    expect(res.headers.etag).toBeUndefined();
    expect(res.text).not.toContain('PHI');
    expect(res.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'audit trail unavailable: access refused' }] });
  });

  test('a failed audit on DICOMweb answers a DICOM JSON ErrorComment', async () => {
    const { knex } = fakeKnex({ fail: true });
    const res = await request(app(knex, (_req, res) => void res.status(200).send('pixels'), '/dicomweb/studies/1')).get('/dicomweb/studies/1');
    expect(res.status).toBe(503);
    expect(res.headers['content-type']).toMatch(/application\/dicom\+json/);
    expect(JSON.parse(res.text)['00000902'].Value[0]).toMatch(/audit trail unavailable/);
  });

  test('streamed bodies wait for the audit and then flow completely (backpressure honoured)', async () => {
    const { knex, rows } = fakeKnex({ delayMs: 30 });
    const chunks = Array.from({ length: 200 }, (_, i) => Buffer.alloc(16 * 1024, i % 251));
    const res = await request(
      app(knex, (_req, res) => {
        res.status(200).type('application/octet-stream');
        Readable.from(chunks).pipe(res);
      }),
    )
      .get('/fhir/Patient/1')
      .buffer(true)
      .parse((r, cb) => {
        const parts: Buffer[] = [];
        r.on('data', (c: Buffer) => parts.push(c));
        r.on('end', () => cb(null, Buffer.concat(parts)));
      });
    expect(res.status).toBe(200);
    expect((res.body as Buffer).length).toBe(200 * 16 * 1024);
    expect(rows).toHaveLength(1);
  });

  test('a streamed answer whose audit fails sends no byte of the stream', async () => {
    const { knex } = fakeKnex({ fail: true });
    const res = await request(
      app(knex, (_req, res) => {
        res.status(200).type('application/octet-stream');
        Readable.from([Buffer.from('SECRET-PIXELS'), Buffer.from('MORE')]).pipe(res);
      }),
    ).get('/fhir/Patient/1');
    expect(res.status).toBe(503);
    expect(res.text).not.toContain('SECRET');
  });

  test('a denial is audited with a failure outcome', async () => {
    const { knex, rows } = fakeKnex({});
    const res = await request(app(knex, (_req, res) => void res.status(403).json({ denied: true }))).get('/fhir/Patient/1');
    expect(res.status).toBe(403);
    expect(rows[0]).toMatchObject({ outcome: '4' });
  });

  test('requests that touch no patient data (no res.locals.audit) pass unaudited', async () => {
    const { knex, rows } = fakeKnex({ fail: true });
    const a = express();
    a.use(createAuditGate({ knex, logger: pino({ level: 'silent' }), source: { observer: 'test' } }));
    a.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));
    const res = await request(a).get('/healthz');
    expect(res.status).toBe(200);
    expect(rows).toHaveLength(0);
  });

  test('an event already written in the route transaction is not written twice', async () => {
    const { knex, rows } = fakeKnex({ fail: true });
    const res = await request(
      app(knex, (_req, res) => {
        res.locals.audit = { ...res.locals.audit, written: true };
        res.status(201).json({ created: true });
      }),
    ).get('/fhir/Patient/1');
    expect(res.status).toBe(201);
    expect(rows).toHaveLength(0);
  });
});

describe('sameAuditDescription (does the answer still say what the early event says?)', () => {
  const base: AuditInput = {
    protocol: 'dicomweb',
    action: 'search',
    resourceType: 'ImagingStudy',
    query: 'GET /dicomweb/studies?PatientID=1',
    studyUids: ['1.2.3'],
    status: 200,
    agent: { subject: 'alice', role: 'researcher', address: '127.0.0.1' },
    requestId: 'r1',
    details: { grant: 'client_credentials' },
  };

  test('equal descriptions, statuses of the same outcome, and keys set to undefined count as the same', () => {
    expect(sameAuditDescription(base, { ...base, studyUids: ['1.2.3'], agent: { ...base.agent }, details: { ...base.details } })).toBe(true);
    expect(sameAuditDescription(base, { ...base, status: 204 })).toBe(true);
    expect(sameAuditDescription(base, { ...base, status: undefined })).toBe(true);
    expect(sameAuditDescription(base, { ...base, agent: { ...base.agent, clientId: undefined } })).toBe(true);
    expect(sameAuditDescription({ ...base, details: undefined }, { ...base, details: {} })).toBe(true);
  });

  test.each<[string, Partial<AuditInput>]>([
    ['protocol', { protocol: 'fhir' }],
    ['action', { action: 'read' }],
    ['resource type', { resourceType: 'Patient' }],
    ['resource id', { resourceId: '7' }],
    ['query', { query: 'GET /dicomweb/studies?PatientID=2' }],
    ['patient', { patient: 'Patient/7' }],
    ['outcome of the status', { status: 404 }],
    ['explicit outcome', { outcome: '8' }],
    ['outcome description', { outcomeDescription: 'the client closed the connection before the answer' }],
    ['request id', { requestId: 'r2' }],
    ['one more study', { studyUids: ['1.2.3', '1.2.4'] }],
    ['another study', { studyUids: ['1.2.4'] }],
    ['no study', { studyUids: undefined }],
    ['agent', { agent: { ...base.agent, role: 'admin' } }],
    ['agent with one more key', { agent: { ...base.agent, tokenId: 'j1' } }],
    ['details', { details: { grant: 'password' } }],
    ['no details', { details: undefined }],
  ])('a different %s is a different event', (_name, change) => {
    expect(sameAuditDescription(base, { ...base, ...change })).toBe(false);
    expect(sameAuditDescription({ ...base, ...change }, base)).toBe(false);
  });
});
