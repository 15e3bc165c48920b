/**
 * Audit proof on the real app (createApp, the guard as app.ts composes it): each kind of access
 * writes exactly the AuditEvent it should (IHE BALP 1.1 shapes: type and subtype, action,
 * outcome, the requestor with role and client, the study or resource, the X-Request-Id), and an
 * audit store that cannot be written fails the request with 503 without serving or keeping
 * anything. Twice: each AuditEvent committed to the database before its answer, and through the
 * durable outbox (src/audit/audit-spool.ts, with AUDIT_SPOOL_DIR set), where an
 * event is durable on local disk before the answer and in `audit_events` shortly after.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { auditWriterFor } from '../../../src/audit/audit-writer';
import { registerClient } from '../../../src/auth/client-registry';
import { createProject } from '../../../src/auth/project-store';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { makeClientAssertion, makeClientKey, tokenForm, type ClientKey } from '../../helpers/tokens';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ROLE_SYSTEM = 'urn:imaging-lake:role';

const MODES = [
  { mode: 'committed before each answer', spool: false },
  { mode: 'through the durable outbox', spool: true },
];

describe.each(MODES)('audit proof ($mode): every access to the real app leaves exactly its AuditEvent', ({ spool }) => {
  let t: TestApp;
  let spoolDir: string | undefined;
  const project = `audit-${randomUUID().slice(0, 8)}`;
  const clientId = `audit-client-${randomUUID().slice(0, 8)}`;
  let clientKey: ClientKey;
  let dm: string;
  let researcher: string;
  let study: { study: string; series: string; sop: string };
  /** The study's UID as the researcher's view shows it. */
  let visibleStudy: string;
  let patientId: string;

  const rid = () => `audit-${randomUUID()}`;
  const eventsOf = async (requestId: string): Promise<AuditEvent[]> => {
    // Through the outbox, what was written so far is shipped first (as the AuditEvent endpoint does).
    await auditWriterFor(t.app.db.knex).flush();
    const rows = await t.app.db.knex('audit_events').where({ request_id: requestId }).select('resource');
    return rows.map((r: { resource: AuditEvent | string }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource));
  };
  const onlyEvent = async (requestId: string): Promise<AuditEvent> => {
    const events = await eventsOf(requestId);
    expect(events).toHaveLength(1);
    return events[0];
  };
  const requestor = (e: AuditEvent) => e.agent.find((a) => a.requestor)!;
  const studyEntity = (e: AuditEvent) => e.entity?.find((x) => x.what?.identifier?.system === 'urn:dicom:uid')?.what?.identifier?.value;
  const requestIdEntity = (e: AuditEvent) => e.entity?.find((x) => x.type?.code === 'XrequestId')?.what?.identifier?.value;
  const queryEntity = (e: AuditEvent) => {
    const q = e.entity?.find((x) => x.role?.code === '24')?.query;
    return q === undefined ? undefined : Buffer.from(q, 'base64').toString('utf8');
  };
  const stowBody = () => {
    const instance = createSyntheticInstance({ patientID: `PID-${randomUUID()}`, patientName: `Audit^Proof${randomUUID().slice(0, 6)}`, rows: 16, columns: 16, bitsAllocated: 8 });
    return { instance, ...buildMultipart([instance.bytes]) };
  };
  const clientToken = async () => {
    const assertion = await makeClientAssertion({ clientId, audience: t.config.auth.tokenEndpoint, key: clientKey });
    const res = await request(t.app.express).post('/oauth2/token').type('form').send(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(200);
    return res.body.access_token as string;
  };

  beforeAll(async () => {
    spoolDir = spool ? await fs.mkdtemp(path.join(os.tmpdir(), 'il-audit-spool-')) : undefined;
    t = await startTestApp(spoolDir ? { AUDIT_SPOOL_DIR: spoolDir } : {});
    dm = await t.token('data-manager', [project]);
    researcher = await t.token('researcher', [project]);
    clientKey = await makeClientKey('ES384');
    await createProject(t.app.db.knex, { id: project, name: 'audit proof' });
    await registerClient(t.app.db.knex, { clientId, name: 'audit proof client', jwks: { keys: [clientKey.publicJwk] }, scopes: ['system/*.rs'], role: 'researcher', projects: [project] });
  });
  afterAll(async () => {
    await t?.close();
    if (spoolDir) await fs.rm(spoolDir, { recursive: true, force: true });
  });

  test('STOW-RS: 110104 create, the stored study as entity, the data manager as requestor', async () => {
    const id = rid();
    const { instance, body, contentType } = stowBody();
    const res = await request(t.app.express).post('/dicomweb/studies').set('Authorization', `Bearer ${dm}`).set('X-Request-Id', id).set('Content-Type', contentType).send(body);
    expect(res.status).toBe(200);
    expect(res.headers['x-request-id']).toBe(id);
    study = { study: instance.studyInstanceUID, series: instance.seriesInstanceUID, sop: instance.sopInstanceUID };
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { system: DCM, code: '110104' }, subtype: [{ code: 'create' }], action: 'C', outcome: '0' });
    expect(requestor(e)).toMatchObject({ role: [{ coding: [{ system: ROLE_SYSTEM, code: 'data-manager' }] }], who: { identifier: { value: 'cli:data-manager' } } });
    expect(studyEntity(e)).toBe(study.study);
    expect(requestIdEntity(e)).toBe(id);
  });

  test('QIDO-RS by a backend client: 110112 query with the query text, the client as agent', async () => {
    const id = rid();
    // A researcher client sees the project's studies in its view (de-identified UIDs for researchers):
    // it asks for all of them (one so far) and keeps the UID it was shown for the retrieve below.
    const res = await request(t.app.express).get('/dicomweb/studies?includefield=0020000D').set('Authorization', `Bearer ${await clientToken()}`).set('X-Request-Id', id);
    expect(res.status).toBe(200);
    const found = JSON.parse(res.text) as Array<Record<string, { Value?: string[] }>>;
    expect(found).toHaveLength(1);
    visibleStudy = found[0]['0020000D'].Value![0];
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { system: DCM, code: '110112' }, subtype: [{ code: 'search-type' }], action: 'E', outcome: '0' });
    expect(requestor(e)).toMatchObject({ type: { coding: [{ code: '110150' }] }, role: [{ coding: [{ code: 'researcher' }] }], who: { identifier: { value: clientId } } });
    expect(queryEntity(e)).toBe('GET /dicomweb/studies?includefield=0020000D');
    expect(requestIdEntity(e)).toBe(id);
  });

  test('WADO-RS retrieve: 110104 read with the study as entity', async () => {
    const id = rid();
    const res = await request(t.app.express).get(`/dicomweb/studies/${visibleStudy}/metadata`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', id);
    expect(res.status).toBe(200);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: '110104' }, subtype: [{ code: 'read' }], action: 'R', outcome: '0' });
    expect(requestor(e).role?.[0].coding[0].code).toBe('researcher');
    expect(studyEntity(e)).toBe(visibleStudy);
  });

  test('FHIR read: rest/read with the resource as entity', async () => {
    const created = await request(t.app.express).post('/fhir/Patient').set('Authorization', `Bearer ${dm}`).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', name: [{ family: 'Audit' }] });
    expect(created.status).toBe(201);
    patientId = created.body.id;
    const id = rid();
    const res = await request(t.app.express).get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', id);
    expect(res.status).toBe(200);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: 'rest' }, subtype: [{ code: 'read' }], action: 'R', outcome: '0' });
    expect(e.entity).toEqual(expect.arrayContaining([expect.objectContaining({ what: { reference: `Patient/${patientId}` } })]));
    expect(requestor(e).role?.[0].coding[0].code).toBe('researcher');
  });

  test('FHIR create: rest/create names the created resource', async () => {
    const id = rid();
    const res = await request(t.app.express).post('/fhir/Patient').set('Authorization', `Bearer ${dm}`).set('X-Request-Id', id).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient' });
    expect(res.status).toBe(201);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: 'rest' }, subtype: [{ code: 'create' }], action: 'C', outcome: '0' });
    expect(e.entity).toEqual(expect.arrayContaining([expect.objectContaining({ what: { reference: `Patient/${res.body.id}` } })]));
  });

  test('FHIR search: rest/search-type with the query', async () => {
    const id = rid();
    const res = await request(t.app.express).get(`/fhir/Patient?_id=${patientId}`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', id);
    expect(res.status).toBe(200);
    expect(res.body.entry).toHaveLength(1);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: 'rest' }, subtype: [{ code: 'search-type' }], action: 'E', outcome: '0' });
    expect(queryEntity(e)).toBe(`GET /fhir/Patient?_id=${patientId}`);
  });

  test('a denied request (403): outcome 4 with the reason, the target as entity', async () => {
    const id = rid();
    const res = await request(t.app.express).delete(`/dicomweb/studies/${study.study}`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', id);
    expect(res.status).toBe(403);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: '110105' }, action: 'D', outcome: '4', outcomeDesc: 'access denied: role researcher may not delete ImagingStudy' });
    expect(requestor(e).role?.[0].coding[0].code).toBe('researcher');
    expect(studyEntity(e)).toBe(study.study);
  });

  test('an anonymous request (401): outcome 4, anonymous requestor, nothing else about a user', async () => {
    const id = rid();
    const res = await request(t.app.express).get(`/fhir/Patient/${patientId}`).set('X-Request-Id', id);
    expect(res.status).toBe(401);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: 'rest' }, subtype: [{ code: 'read' }], outcome: '4', outcomeDesc: 'authentication required: send Authorization: Bearer <token>' });
    expect(requestor(e).who).toEqual({ display: 'anonymous' });
    expect(requestor(e).role).toBeUndefined();
  });

  test('a failed token request: 110114/110122 with the client it claimed to be', async () => {
    const id = rid();
    const stranger = await makeClientKey('ES384');
    const assertion = await makeClientAssertion({ clientId, audience: t.config.auth.tokenEndpoint, key: stranger });
    const res = await request(t.app.express).post('/oauth2/token').set('X-Request-Id', id).type('form').send(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { system: DCM, code: '110114' }, subtype: [{ code: '110122' }], action: 'E', outcome: '4' });
    expect(e.outcomeDesc).toMatch(/^invalid_client: /);
    expect(JSON.stringify(e.entity)).toContain(clientId);
    expect(requestIdEntity(e)).toBe(id);
  });

  test('a DICOMweb delete by an admin: one 110105 event, written with the delete', async () => {
    const { instance, body, contentType } = stowBody();
    expect((await request(t.app.express).post('/dicomweb/studies').set('Authorization', `Bearer ${dm}`).set('Content-Type', contentType).send(body)).status).toBe(200);
    const id = rid();
    const res = await request(t.app.express).delete(`/dicomweb/studies/${instance.studyInstanceUID}`).set('Authorization', `Bearer ${t.adminToken}`).set('X-Request-Id', id);
    expect(res.status).toBe(204);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: '110105' }, subtype: [{ code: 'delete' }], action: 'D', outcome: '0' });
    expect(requestor(e).role?.[0].coding[0].code).toBe('admin');
    expect(studyEntity(e)).toBe(instance.studyInstanceUID);
  });

  test('a FHIR update: one rest/update event naming the resource, written with the change', async () => {
    const id = rid();
    const res = await request(t.app.express).put(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${dm}`).set('X-Request-Id', id).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', id: patientId, name: [{ family: 'Audit' }] });
    expect(res.status).toBe(200);
    const e = await onlyEvent(id);
    expect(e).toMatchObject({ type: { code: 'rest' }, subtype: [{ code: 'update' }], action: 'U', outcome: '0' });
    expect(e.entity).toEqual(expect.arrayContaining([expect.objectContaining({ what: { reference: `Patient/${patientId}` } })]));
  });

  if (spool) {
    describe('with the audit table unwritable, through the outbox', () => {
      const knex = () => t.app.db.knex;
      test('reads are served (their events are durable in the spool) and reach the trail, once, when the table is back', async () => {
        const ids = [rid(), rid()];
        await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_offline');
        try {
          const read = await request(t.app.express).get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', ids[0]);
          expect(read.status).toBe(200);
          const search = await request(t.app.express).get(`/dicomweb/studies?StudyInstanceUID=${study.study}`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', ids[1]);
          expect(search.status).toBe(200);
          await expect(auditWriterFor(knex()).flush()).rejects.toThrow();
        } finally {
          await knex().raw('ALTER TABLE audit_events_offline RENAME TO audit_events');
        }
        expect(await onlyEvent(ids[0])).toMatchObject({ subtype: [{ code: 'read' }], outcome: '0' });
        expect(queryEntity(await onlyEvent(ids[1]))).toContain(study.study);
      });

      test('a write, audited in its own transaction, still answers 503 and keeps nothing', async () => {
        const family = `Unaudited${randomUUID().slice(0, 8)}`;
        await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_offline');
        try {
          const res = await request(t.app.express).post('/fhir/Patient').set('Authorization', `Bearer ${dm}`).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', name: [{ family }] });
          expect(res.status).toBe(503);
        } finally {
          await knex().raw('ALTER TABLE audit_events_offline RENAME TO audit_events');
        }
        expect(await knex()('fhir_resource').where({ resource_type: 'Patient' }).whereRaw(`content::text LIKE ?`, [`%${family}%`]).first()).toBeUndefined();
      });

      test('a DICOMweb delete, audited in its own transaction, still answers 503 and the study stays', async () => {
        await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_offline');
        try {
          const res = await request(t.app.express).delete(`/dicomweb/studies/${study.study}`).set('Authorization', `Bearer ${t.adminToken}`);
          expect(res.status).toBe(503);
        } finally {
          await knex().raw('ALTER TABLE audit_events_offline RENAME TO audit_events');
        }
        expect(await knex()('studies').where({ study_uid: study.study }).first('id')).toBeDefined();
      });
    });
  }

  if (!spool) describe('with the audit table unwritable', () => {
    const knex = () => t.app.db.knex;
    beforeEach(async () => {
      await knex().raw('ALTER TABLE audit_events RENAME TO audit_events_offline');
    });
    afterEach(async () => {
      await knex().raw('ALTER TABLE audit_events_offline RENAME TO audit_events');
    });

    test('a WADO-RS retrieve answers 503 and serves no byte of the study', async () => {
      const res = await request(t.app.express).get(`/dicomweb/studies/${study.study}/series/${study.series}/instances/${study.sop}`).set('Authorization', `Bearer ${researcher}`);
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('5');
      expect(JSON.parse(res.text)['00000902'].Value[0]).toMatch(/audit trail unavailable/);
      expect(res.text).not.toContain('DICM');
      expect(res.text).not.toContain(study.sop);
    });

    test('a QIDO-RS search answers 503 without the study', async () => {
      const res = await request(t.app.express).get(`/dicomweb/studies?StudyInstanceUID=${study.study}`).set('Authorization', `Bearer ${researcher}`);
      expect(res.status).toBe(503);
      expect(res.text).not.toContain('Audit^Proof');
    });

    test('a FHIR read answers 503 with a transient OperationOutcome and no resource', async () => {
      const res = await request(t.app.express).get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${researcher}`);
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'audit trail unavailable: access refused' }] });
    });

    test('a STOW-RS answers 503 and keeps nothing (the study is not indexed)', async () => {
      const { instance, body, contentType } = stowBody();
      const res = await request(t.app.express).post('/dicomweb/studies').set('Authorization', `Bearer ${dm}`).set('Content-Type', contentType).send(body);
      expect(res.status).toBe(503);
      expect(await knex()('studies').where({ study_uid: instance.studyInstanceUID }).first()).toBeUndefined();
    });

    test('a FHIR create answers 503 and keeps nothing', async () => {
      const family = `Unaudited${randomUUID().slice(0, 8)}`;
      const res = await request(t.app.express).post('/fhir/Patient').set('Authorization', `Bearer ${dm}`).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', name: [{ family }] });
      expect(res.status).toBe(503);
      const kept = await knex()('fhir_resource').where({ resource_type: 'Patient' }).whereRaw(`content::text LIKE ?`, [`%${family}%`]).first();
      expect(kept).toBeUndefined();
    });

    test('a FHIR update answers 503 and the resource keeps its version', async () => {
      const before = (await knex()('fhir_resource').where({ resource_type: 'Patient', id: patientId }).first('version_id')).version_id;
      const res = await request(t.app.express).put(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${dm}`).set('Content-Type', 'application/fhir+json').send({ resourceType: 'Patient', id: patientId, name: [{ family: 'Unaudited' }] });
      expect(res.status).toBe(503);
      expect((await knex()('fhir_resource').where({ resource_type: 'Patient', id: patientId }).first('version_id')).version_id).toBe(before);
    });

    test('a DICOMweb delete answers 503 and the study stays', async () => {
      const res = await request(t.app.express).delete(`/dicomweb/studies/${study.study}`).set('Authorization', `Bearer ${t.adminToken}`);
      expect(res.status).toBe(503);
      expect(await knex()('studies').where({ study_uid: study.study }).first('id')).toBeDefined();
    });

    test('a token request answers 503 temporarily_unavailable and issues no token', async () => {
      const assertion = await makeClientAssertion({ clientId, audience: t.config.auth.tokenEndpoint, key: clientKey });
      const res = await request(t.app.express).post('/oauth2/token').type('form').send(tokenForm(assertion, 'system/*.rs'));
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
      expect(res.body.access_token).toBeUndefined();
    });
  });

  test('the trail is back once the table is: the same read is served and audited', async () => {
    const id = rid();
    const res = await request(t.app.express).get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${researcher}`).set('X-Request-Id', id);
    expect(res.status).toBe(200);
    await onlyEvent(id);
  });
});
