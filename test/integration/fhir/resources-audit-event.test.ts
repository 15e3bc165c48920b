import express, { type Express } from 'express';
import pino from 'pino';
import request from 'supertest';
import { buildAuditEvent, writeAuditEvent, type AuditEvent, type AuditInput } from '../../../src/audit';
import { createAuditEventTypeHandler } from '../../../src/fhir/audit-event-handler';
import { createFhirRouter } from '../../../src/fhir/routes';
import { startTestApp, withDefaultAuthorization, type TestApp } from '../../helpers/test-app';
import { uniq } from './helpers/fhir-app';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';

/**
 * AuditEvent read and search served from the audit trail. The router is composed here with the
 * handler exactly as app.ts composes it (typeHandlers.AuditEvent); once app.ts wires it, `api`
 * can call `t.http` instead with no other change.
 */
describe('AuditEvent from the audit trail', () => {
  let t: TestApp;
  let app: Express;
  const api = () => request(app);
  const json = (req: request.Test) => req.set('Content-Type', 'application/fhir+json');
  const user = `user-${uniq()}`;
  const other = `user-${uniq()}`;
  const patient = `Patient/p-${uniq()}`;
  const condition = `Condition/c-${uniq()}`;
  const studyUid = `2.25.${Date.now()}`;
  const events: Record<string, AuditEvent> = {};

  const record = async (key: string, input: Omit<AuditInput, 'agent'>, recorded: string, subject = user) => {
    const event = buildAuditEvent({ ...input, agent: { subject, role: 'researcher', address: '127.0.0.1' } }, { observer: 'imaging-lake-test' }, new Date(recorded));
    await writeAuditEvent(t.app.db.knex, event);
    events[key] = event;
  };
  /** Fixture keys of the matches of a search, in the order served. */
  const find = async (query: string) => {
    const res = await api().get(`/fhir/AuditEvent?${query}`);
    if (res.status !== 200) throw new Error(`${query}: ${res.status} ${JSON.stringify(res.body)}`);
    const byId = new Map(Object.entries(events).map(([k, e]) => [e.id, k]));
    return (res.body.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => byId.get(e.resource.id) ?? e.resource.id);
  };
  const pathOf = (url: string) => url.slice(url.indexOf('/fhir/'));

  beforeAll(async () => {
    t = await startTestApp();
    const router = express();
    router.use('/fhir', createFhirRouter({ db: t.app.db, logger: pino({ level: 'silent' }), typeHandlers: { AuditEvent: createAuditEventTypeHandler({ knex: t.app.db.knex }) } }));
    app = withDefaultAuthorization(router, t.adminToken);
    await record('read', { protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: patient.slice(8), patient, status: 200 }, '2026-01-10T10:00:00Z');
    await record('search', { protocol: 'fhir', action: 'search', resourceType: 'ImagingStudy', query: 'GET /fhir/ImagingStudy?modality=OPT', status: 200 }, '2026-01-11T10:00:00Z');
    await record('retrieve', { protocol: 'dicomweb', action: 'read', studyUids: [studyUid], patient, status: 200 }, '2026-01-12T10:00:00Z');
    await record('create', { protocol: 'fhir', action: 'create', resourceType: 'Condition', resourceId: condition.slice(10), status: 422 }, '2026-01-13T10:00:00Z');
    await record('login', { protocol: 'auth', action: 'login', status: 200 }, '2026-01-14T10:00:00Z', other);
  }, 120_000);
  afterAll(async () => {
    await t.close();
  });

  describe('read', () => {
    test('read by id answers the stored event as version 1', async () => {
      const res = await api().get(`/fhir/AuditEvent/${events.read.id}`);
      expect(res.status).toBe(200);
      expect(res.headers.etag).toBe('W/"1"');
      expect(res.body).toMatchObject({ resourceType: 'AuditEvent', id: events.read.id, meta: { versionId: '1', lastUpdated: '2026-01-10T10:00:00.000Z' }, outcome: '0' });
    });

    test('an unknown id is 404 with an OperationOutcome', async () => {
      const res = await api().get('/fhir/AuditEvent/3f0e5b1e-1111-4111-8111-111111111111');
      expect(res.status).toBe(404);
      expect(res.body.issue[0]).toMatchObject({ severity: 'error', code: 'not-found', diagnostics: 'AuditEvent/3f0e5b1e-1111-4111-8111-111111111111 not found' });
    });

    test('vread of version 1 answers the event; version 2 is 404', async () => {
      expect((await api().get(`/fhir/AuditEvent/${events.read.id}/_history/1`)).body.id).toBe(events.read.id);
      const res = await api().get(`/fhir/AuditEvent/${events.read.id}/_history/2`);
      expect(res.status).toBe(404);
      expect(res.body.issue[0].code).toBe('not-found');
    });

    test('instance history is a Bundle with the one version', async () => {
      const res = await api().get(`/fhir/AuditEvent/${events.create.id}/_history`);
      expect(res.body).toMatchObject({ type: 'history', entry: [{ resource: { id: events.create.id }, response: { status: '201 Created' } }] });
    });
  });

  describe('search', () => {
    test('agent finds one user\'s events, newest first', async () => expect(await find(`agent=${user}`)).toEqual(['create', 'retrieve', 'search', 'read']));
    test('type finds DICOM transfers by code', async () => expect(await find(`agent=${user}&type=110104`)).toEqual(['retrieve']));
    test('type with its system finds the same events', async () => expect(await find(`agent=${user}&type=${DCM}|110104`)).toEqual(['retrieve']));
    test('type with another system matches nothing', async () => expect(await find(`agent=${user}&type=http://example.org|110104`)).toEqual([]));
    test('subtype finds creates', async () => expect(await find(`agent=${user}&subtype=create`)).toEqual(['create']));
    test('entity finds events about a resource', async () => expect(await find(`entity=${condition}`)).toEqual(['create']));
    test('entity:identifier finds events about a study by its UID', async () => expect(await find(`entity:identifier=urn:dicom:uid|${studyUid}`)).toEqual(['retrieve']));
    test('patient finds events about a patient, with or without the type', async () => {
      expect(await find(`patient=${patient}`)).toEqual(['retrieve', 'read']);
      expect(await find(`patient=${patient.slice(8)}`)).toEqual(['retrieve', 'read']);
    });
    test('outcome=4 finds the refused write', async () => expect(await find(`agent=${user}&outcome=4`)).toEqual(['create']));
    test('date=ge selects from a day on', async () => expect(await find(`agent=${user}&date=ge2026-01-12`)).toEqual(['create', 'retrieve']));
    test('date=lt selects before a day', async () => expect(await find(`agent=${user}&date=lt2026-01-12`)).toEqual(['search', 'read']));
    test('date without a prefix is the whole day', async () => expect(await find(`agent=${user}&date=2026-01-11`)).toEqual(['search']));
    test('two dates AND into a window', async () => expect(await find(`agent=${user}&date=gt2026-01-10&date=le2026-01-12`)).toEqual(['retrieve', 'search']));
    test('POST _search takes form parameters', async () => {
      const res = await api().post('/fhir/AuditEvent/_search').type('form').send({ agent: other });
      expect(res.body.entry.map((e: any) => e.resource.id)).toEqual([events.login.id]);
    });

    test('paging: _count=2 gives a next link that serves the rest', async () => {
      const first = await api().get(`/fhir/AuditEvent?agent=${user}&_count=2`);
      expect(first.body.entry.map((e: any) => e.resource.id)).toEqual([events.create.id, events.retrieve.id]);
      const next = first.body.link.find((l: any) => l.relation === 'next');
      const second = await api().get(pathOf(next.url));
      expect(second.body.entry.map((e: any) => e.resource.id)).toEqual([events.search.id, events.read.id]);
      expect(second.body.link.map((l: any) => l.relation)).toEqual(['self']);
    });

    test('_summary=count answers the number of matches and no entries', async () => {
      const res = await api().get(`/fhir/AuditEvent?agent=${user}&_summary=count`);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: 4 });
      expect(res.body.entry).toBeUndefined();
      expect((await api().get(`/fhir/AuditEvent?agent=${user}&date=ge2026-01-12&_summary=count`)).body.total).toBe(2);
    });

    test('_total=accurate adds the total of all pages to a paged answer; a bad _total is 400', async () => {
      const res = await api().get(`/fhir/AuditEvent?agent=${user}&_count=1&_total=accurate`);
      expect(res.body.total).toBe(4);
      expect(res.body.entry).toHaveLength(1);
      expect((await api().get(`/fhir/AuditEvent?agent=${user}`)).body.total).toBeUndefined();
      const bad = await api().get(`/fhir/AuditEvent?agent=${user}&_total=all`);
      expect(bad.status).toBe(400);
      expect(bad.body.issue[0].diagnostics).toContain('_total must be none, estimate or accurate');
    });

    test('an unknown parameter is ignored with a warning entry', async () => {
      const res = await api().get(`/fhir/AuditEvent?agent=${other}&site=x`);
      expect(res.status).toBe(200);
      const warning = res.body.entry.find((e: any) => e.search.mode === 'outcome');
      expect(warning.resource.issue[0]).toMatchObject({ severity: 'warning', code: 'not-supported' });
      expect(warning.resource.issue[0].diagnostics).toContain('site');
    });

    test('an unknown parameter is 400 under Prefer: handling=strict', async () => {
      const res = await api().get(`/fhir/AuditEvent?agent=${other}&site=x`).set('Prefer', 'handling=strict');
      expect(res.status).toBe(400);
      expect(res.body.issue[0].diagnostics).toBe('Unknown or unsupported AuditEvent search parameter: site');
    });

    test('an OR list is 400 naming the parameter', async () => {
      const res = await api().get('/fhir/AuditEvent?type=rest,110104');
      expect(res.status).toBe(400);
      expect(res.body.issue[0].diagnostics).toContain('OR lists are not supported: type=rest,110104');
    });

    test('date=ne is 400', async () => {
      const res = await api().get('/fhir/AuditEvent?date=ne2026-01-11');
      expect(res.status).toBe(400);
      expect(res.body.issue[0].diagnostics).toBe('The prefix ne is not supported on AuditEvent date (one contiguous range only)');
    });

    test('a forged cursor is 400', async () => {
      const res = await api().get('/fhir/AuditEvent?_cursor=bm90LWEtY3Vyc29y');
      expect(res.status).toBe(400);
      expect(res.body.issue[0].diagnostics).toBe('Invalid _cursor: use the next link of the previous page');
    });
  });

  test('a caller whose reads are filtered otherwise than by project (no projects given) gets 403', async () => {
    const filtered = express();
    const handler = createAuditEventTypeHandler({ knex: t.app.db.knex });
    const projectFilter = () => (alias: string) => ({ sql: `${alias}.id = ANY(?::text[])`, bindings: [['none']] });
    filtered.use('/fhir', createFhirRouter({ db: t.app.db, logger: pino({ level: 'silent' }), accessFilter: projectFilter, typeHandlers: { AuditEvent: handler } }));
    const res = await request(withDefaultAuthorization(filtered, t.adminToken)).get(`/fhir/AuditEvent/${events.read.id}`);
    expect(res.status).toBe(403);
    expect(res.body.issue[0]).toMatchObject({ code: 'forbidden', diagnostics: 'The audit trail is filtered by project only: this token may not read it' });
  });

  describe('the trail is read-only', () => {
    const readOnly = 'AuditEvent is written by the server only: the audit trail is append-only';
    test('create is 405', async () => {
      const res = await json(api().post('/fhir/AuditEvent')).send(events.read);
      expect(res.status).toBe(405);
      expect(res.body.issue[0]).toMatchObject({ code: 'not-supported', diagnostics: `${readOnly} (POST /AuditEvent refused)` });
    });
    test('update is 405', async () => {
      const res = await json(api().put(`/fhir/AuditEvent/${events.read.id}`)).send(events.read);
      expect(res.status).toBe(405);
      expect(res.body.issue[0].diagnostics).toBe(`${readOnly} (PUT /AuditEvent/${events.read.id} refused)`);
    });
    test('delete is 405 and the event is still there', async () => {
      const res = await api().delete(`/fhir/AuditEvent/${events.read.id}`);
      expect(res.status).toBe(405);
      expect(res.body.issue[0].code).toBe('not-supported');
      expect((await api().get(`/fhir/AuditEvent/${events.read.id}`)).status).toBe(200);
    });
    test('patch is 405', async () => {
      const res = await api().patch(`/fhir/AuditEvent/${events.read.id}`).set('Content-Type', 'application/json-patch+json').send([{ op: 'replace', path: '/outcome', value: '0' }]);
      expect(res.status).toBe(405);
      expect(res.body.issue[0].code).toBe('not-supported');
    });
    test('a batch answers 405 for an AuditEvent create and still serves its search entry', async () => {
      const res = await json(api().post('/fhir')).send({
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { resource: { ...events.read, id: undefined }, request: { method: 'POST', url: 'AuditEvent' } },
          { request: { method: 'GET', url: `AuditEvent?agent=${other}` } },
        ],
      });
      expect(res.body.entry[0].response).toMatchObject({ status: '405 Method Not Allowed', outcome: { issue: [{ code: 'not-supported' }] } });
      expect(res.body.entry[1].resource.entry.map((e: any) => e.resource.id)).toEqual([events.login.id]);
    });
    test('a transaction with an AuditEvent delete is 405 as a whole', async () => {
      const res = await json(api().post('/fhir')).send({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `AuditEvent/${events.read.id}` } }] });
      expect(res.status).toBe(405);
      expect(res.body.issue[0].expression).toEqual(['Bundle.entry[0]']);
    });
  });
});
