/**
 * FHIR Bulk Data export (Bulk Data Access IG 2.0.0): kick-off, status polling, NDJSON files,
 * cancellation; system, Patient and Group levels; _type, _since, _typeFilter, _elements; the
 * requester's projects, granular scopes and de-identified view; the job belonging to its owner.
 */
import request from 'supertest';
import pino from 'pino';
import type { Resource } from '@medplum/fhirtypes';
import { createBulkExports } from '../../../src/fhir/export/bulk-export';
import { parseExportRequest } from '../../../src/fhir/export/export-request';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { sweepUnreferenced } from '../../../src/db/blob-ledger';
import { createApp, shutdownApp } from '../../../src/app';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const SENTINEL = 'PHI_SENTINEL_EXPORT';

describe('FHIR Bulk Data export', () => {
  let t: TestApp;
  const ids: Record<string, string> = {};

  const create = async (resource: Record<string, unknown>, project?: string) => {
    const req = request(t.http).post(`/fhir/${resource.resourceType}`).set('Content-Type', 'application/fhir+json');
    if (project) req.set('X-Project', project);
    const res = await req.send(resource);
    expect(res.status).toBe(201);
    return res.body.id as string;
  };
  const condition = (patient: string, code: string) => ({ resourceType: 'Condition', subject: { reference: `Patient/${patient}` }, code: { coding: [{ system: ICD10, code }] } });

  /** Kicks an export off, polls it to completion and downloads every file: resources by type. */
  async function exportAll(path: string, token?: string, headers: Record<string, string> = {}, approver?: string) {
    const auth = { Authorization: `Bearer ${token ?? t.adminToken}` };
    const kick = await request(t.http).get(path).set(auth).set({ Accept: 'application/fhir+json', Prefer: 'respond-async', ...headers });
    expect(kick.status).toBe(202);
    const status = new URL(kick.headers['content-location']).pathname;
    // A researcher's export waits for a PI of its project (export-approval.test.ts).
    if (approver) expect((await request(t.http).post(`/admin/exports/${status.split('/').pop()}/approve`).set('Authorization', `Bearer ${approver}`)).status).toBe(200);
    let poll = await request(t.http).get(status).set(auth);
    for (let i = 0; poll.status === 202 && i < 200; i++) {
      expect(poll.headers['x-progress']).toBeTruthy();
      expect(poll.headers['retry-after']).toBeTruthy();
      await new Promise((r) => setTimeout(r, 50));
      poll = await request(t.http).get(status).set(auth);
    }
    expect(poll.status).toBe(200);
    const manifest = JSON.parse(poll.text);
    const byType: Record<string, Resource[]> = {};
    for (const out of manifest.output) {
      const file = await request(t.http).get(new URL(out.url).pathname).set(auth).buffer(true).parse((res, cb) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => cb(null, text));
      });
      expect(file.status).toBe(200);
      expect(file.headers['content-type']).toMatch(/^application\/fhir\+ndjson/);
      const lines = (file.body as string).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Resource);
      expect(lines).toHaveLength(out.count);
      for (const r of lines) expect(r.resourceType).toBe(out.type);
      (byType[out.type] ??= []).push(...lines);
    }
    return { manifest, byType, status, text: JSON.stringify(byType) };
  }

  beforeAll(async () => {
    t = await startTestApp();
    ids.patientA = await create({ resourceType: 'Patient', name: [{ family: `${SENTINEL}-A` }], identifier: [{ system: 'urn:mrn', value: `${SENTINEL}-MRN` }], birthDate: '1960-05-04' }, 'p-a');
    ids.patientB = await create({ resourceType: 'Patient', name: [{ family: 'Other-B' }] }, 'p-b');
    ids.glaucoma = await create(condition(ids.patientA, 'H40.11'), 'p-a');
    ids.diabetes = await create(condition(ids.patientA, 'E11.9'), 'p-a');
    ids.conditionB = await create(condition(ids.patientB, 'H35.30'), 'p-b');
    ids.organization = await create({ resourceType: 'Organization', name: 'Clinic' });
    ids.group = await create({ resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: `Patient/${ids.patientA}` } }] }, 'p-a');
  });
  afterAll(async () => {
    await t?.close();
  });

  test('system export as admin: a manifest per the IG and one NDJSON file per type', async () => {
    const { manifest, byType } = await exportAll('/fhir/$export');
    expect(manifest.requiresAccessToken).toBe(true);
    expect(manifest.request).toMatch(/\/fhir\/\$export$/);
    expect(Number.isNaN(Date.parse(manifest.transactionTime))).toBe(false);
    expect(manifest.error).toEqual([]);
    expect(byType.Patient.map((p) => p.id).sort()).toEqual([ids.patientA, ids.patientB].sort());
    expect(byType.Condition.map((c) => c.id).sort()).toEqual([ids.glaucoma, ids.diabetes, ids.conditionB].sort());
    expect(byType.Organization.map((o) => o.id)).toEqual([ids.organization]);
    expect(byType.Group.map((g) => g.id)).toEqual([ids.group]);
  });

  test('_type limits the types; POST with a Parameters body works as GET', async () => {
    const { byType } = await exportAll('/fhir/$export?_type=Condition&_outputFormat=application%2Ffhir%2Bndjson');
    expect(Object.keys(byType)).toEqual(['Condition']);
    const kick = await request(t.http)
      .post('/fhir/$export')
      .set({ Prefer: 'respond-async', 'Content-Type': 'application/fhir+json' })
      .send({ resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Organization' }] });
    expect(kick.status).toBe(202);
    let poll = await request(t.http).get(new URL(kick.headers['content-location']).pathname);
    for (let i = 0; poll.status === 202 && i < 200; i++) poll = await new Promise((r) => setTimeout(r, 50)).then(() => request(t.http).get(new URL(kick.headers['content-location']).pathname));
    expect(JSON.parse(poll.text).output.map((o: { type: string }) => o.type)).toEqual(['Organization']);
  });

  test('Group export: the members and their compartment only', async () => {
    const { byType } = await exportAll(`/fhir/Group/${ids.group}/$export`);
    expect(byType.Patient.map((p) => p.id)).toEqual([ids.patientA]);
    expect(byType.Condition.map((c) => c.id).sort()).toEqual([ids.glaucoma, ids.diabetes].sort());
    expect(byType.Organization).toBeUndefined();
  });

  test('Patient export: every patient compartment, no other types', async () => {
    const { byType } = await exportAll('/fhir/Patient/$export');
    expect(byType.Patient).toHaveLength(2);
    expect(byType.Condition).toHaveLength(3);
    expect(byType.Organization).toBeUndefined();
  });

  test('_typeFilter narrows a type with a search; _elements subsets and tags', async () => {
    const { byType } = await exportAll(`/fhir/Patient/$export?_type=Condition&_typeFilter=${encodeURIComponent(`Condition?code=${ICD10}|H40.11`)}&_elements=code`);
    expect(byType.Condition.map((c) => c.id)).toEqual([ids.glaucoma]);
    const c = byType.Condition[0] as Resource & { subject?: unknown; code?: unknown };
    expect(c.code).toBeDefined();
    expect(c.subject).toBeUndefined();
    expect(c.meta?.tag?.some((tag) => tag.code === 'SUBSETTED')).toBe(true);
  });

  test('_since exports only what changed after it', async () => {
    const before = new Date(Date.now() - 1000).toISOString();
    await new Promise((r) => setTimeout(r, 1100));
    const since = new Date().toISOString();
    const updated = await request(t.http)
      .put(`/fhir/Organization/${ids.organization}`)
      .set('Content-Type', 'application/fhir+json')
      .send({ resourceType: 'Organization', id: ids.organization, name: 'Clinic renamed' });
    expect(updated.status).toBe(200);
    const { byType } = await exportAll(`/fhir/$export?_since=${encodeURIComponent(since)}`);
    expect(Object.keys(byType)).toEqual(['Organization']);
    const all = await exportAll(`/fhir/$export?_type=Organization,Patient&_since=${encodeURIComponent(before)}`);
    expect(all.byType.Organization).toHaveLength(1);
    expect(all.manifest.deleted).toEqual([]);
  });

  test('_since reports what was deleted since, as transaction Bundles of DELETE entries', async () => {
    const doomed = await create({ resourceType: 'Organization', name: 'Closing down' });
    await new Promise((r) => setTimeout(r, 20));
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    expect((await request(t.http).delete(`/fhir/Organization/${doomed}`)).status).toBe(200);
    // Without _type too: the deletion is found among every type's.
    const { manifest } = await exportAll(`/fhir/$export?_since=${encodeURIComponent(since)}`);
    expect(manifest.output).toEqual([]);
    expect(manifest.deleted).toHaveLength(1);
    expect(manifest.deleted[0].type).toBe('Bundle');
    const file = await request(t.http).get(new URL(manifest.deleted[0].url).pathname).buffer(true).parse((res, cb) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('utf8')));
      res.on('end', () => cb(null, text));
    });
    const bundles = (file.body as string).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(bundles).toEqual([{ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `Organization/${doomed}` } }] }]);
  });

  test('a researcher exports its project only, de-identified', async () => {
    const token = await t.token('researcher', ['p-a']);
    const { byType, text } = await exportAll('/fhir/Patient/$export', token, {}, await t.token('pi', ['p-a']));
    expect(byType.Patient.map((p) => p.id)).toEqual([ids.patientA]);
    expect(byType.Condition.map((c) => c.id).sort()).toEqual([ids.glaucoma, ids.diabetes].sort());
    expect(text).not.toContain(SENTINEL);
    expect(text).not.toContain('Other-B');
    expect(text).not.toContain('1960-05-04');
  });

  test('granular scopes narrow what an export reads', async () => {
    const token = await t.token('admin', [], `user/Patient.rs user/Condition.rs?code=${ICD10}|E11.9`);
    const { byType } = await exportAll('/fhir/Patient/$export', token);
    expect(byType.Condition.map((c) => c.id)).toEqual([ids.diabetes]);
    expect(Object.keys(byType).sort()).toEqual(['Condition', 'Patient']);
    const refused = await request(t.http).get('/fhir/Patient/$export?_type=Organization').set({ Authorization: `Bearer ${token}`, Prefer: 'respond-async' });
    expect(refused.status).toBe(400);
    const denied = await request(t.http).get('/fhir/Patient/$export?_type=Observation').set({ Authorization: `Bearer ${token}`, Prefer: 'respond-async' });
    expect(denied.status).toBe(403);
    expect(denied.body.resourceType).toBe('OperationOutcome');
  });

  test('the status and files belong to the token that kicked the export off', async () => {
    const { manifest, status } = await exportAll('/fhir/$export?_type=Patient');
    const fileUrl = new URL(manifest.output[0].url).pathname;
    const other = await t.token('researcher', ['p-a']);
    for (const path of [status, fileUrl]) {
      const res = await request(t.http).get(path).set('Authorization', `Bearer ${other}`);
      expect(res.status).toBe(404);
      expect(res.body.resourceType).toBe('OperationOutcome');
      const anonymous = await request(t.app.express).get(path);
      expect(anonymous.status).toBe(401);
    }
    expect((await request(t.http).delete(status).set('Authorization', `Bearer ${other}`)).status).toBe(404);
    const cancelled = await request(t.http).delete(status);
    expect(cancelled.status).toBe(202);
    expect((await request(t.http).get(status)).status).toBe(404);
    expect((await request(t.http).get(fileUrl)).status).toBe(404);
  });

  test('output files are kept in the blob store; the orphan sweeper keeps them until their export is gone', async () => {
    // A resource no other export holds: content-addressed files of other exports stay referenced.
    await create({ resourceType: 'Organization', name: `Blob-${Date.now()}-${Math.random()}` });
    const { manifest, status } = await exportAll('/fhir/$export?_type=Organization');
    const id = status.split('/').pop() as string;
    const rows = (await t.app.db.knex('bulk_export_files').where({ export_id: id }).select('blob_key', 'body')) as Array<{ blob_key: string | null; body: Buffer | null }>;
    expect(rows).toHaveLength(manifest.output.length);
    for (const r of rows) {
      expect(r.body).toBeNull();
      expect(await t.app.blobs.stat(r.blob_key as string)).not.toBeNull();
    }
    // A sweep that would take every unreferenced blob, however new, leaves the export's files.
    const sweep = () => sweepUnreferenced(t.app.db.knex, new Date(Date.now() + 60_000), 10_000, (key) => t.app.blobs.delete(key));
    const kept = await sweep();
    for (const r of rows) expect(kept).not.toContain(r.blob_key);
    const file = await request(t.http).get(new URL(manifest.output[0].url).pathname).buffer(true).parse((res, cb) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('utf8')));
      res.on('end', () => cb(null, text));
    });
    expect(file.status).toBe(200);
    expect((file.body as string).split('\n').filter(Boolean)).toHaveLength(manifest.output[0].count);
    // Once the export is deleted, its files are unreferenced and go with the next sweep.
    expect((await request(t.http).delete(status)).status).toBe(202);
    const removed = await sweep();
    for (const r of rows) {
      expect(removed).toContain(r.blob_key);
      expect(await t.app.blobs.stat(r.blob_key as string)).toBeNull();
    }
  });

  test('a failed export answers its poll with a 500 OperationOutcome saying why', async () => {
    const { status } = await exportAll('/fhir/$export?_type=Organization');
    // As a job whose process stopped, taken over as often as it may be, looks to any other process.
    await t.app.db.knex('bulk_exports').where({ id: status.split('/').pop() }).update({ state: 'in-progress', heartbeat_at: new Date(Date.now() - 600_000), attempts: 3 });
    const res = await request(t.http).get(status);
    expect(res.status).toBe(500);
    expect(res.headers['content-type']).toMatch(/application\/fhir\+json/);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].diagnostics).toMatch(/The export failed: .*stopped/);
  });

  test('a job whose process stopped is taken over by the process polled for it and completes', async () => {
    const { status, manifest } = await exportAll('/fhir/$export?_type=Patient');
    const id = status.split('/').pop() as string;
    // As the job looks when its process died mid-way: running, its heartbeat old, a file written.
    await t.app.db.knex('bulk_exports').where({ id }).update({ state: 'in-progress', heartbeat_at: new Date(Date.now() - 600_000), output: null });
    let res = await request(t.http).get(status);
    for (let i = 0; res.status === 202 && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      res = await request(t.http).get(status);
    }
    expect(res.status).toBe(200);
    const again = JSON.parse(res.text);
    expect(again.output.map((o: { count: number }) => o.count)).toEqual(manifest.output.map((o: { count: number }) => o.count));
    const row = await t.app.db.knex('bulk_exports').where({ id }).first('attempts');
    expect(row.attempts).toBe(1);
    // Its files are those of the run that completed, once each.
    const files = await t.app.db.knex('bulk_export_files').where({ export_id: id }).select('seq');
    expect(files.map((f: { seq: number }) => f.seq).sort()).toEqual(again.output.map((_: unknown, i: number) => i + 1));
  });

  (testDbKind() === 'postgres' ? test : test.skip)('a process that stops hands its exports on; another takes them over', async () => {
    const other = await createApp(t.config, { logger: pino({ level: 'silent' }) });
    let stopped = false;
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const kick = await request(other.express).get('/fhir/$export').set({ Authorization: `Bearer ${t.adminToken}`, Prefer: 'respond-async' });
        expect(kick.status).toBe(202);
        ids.push(new URL(kick.headers['content-location']).pathname.split('/').pop() as string);
      }
      await shutdownApp(other);
      stopped = true;
      const rows = (await t.app.db.knex('bulk_exports').whereIn('id', ids).select('state')) as Array<{ state: string }>;
      for (const r of rows) expect(['completed', 'accepted']).toContain(r.state);
      for (const id of ids) {
        let res = await request(t.http).get(`/fhir/$export-status/${id}`);
        for (let i = 0; res.status === 202 && i < 200; i++) {
          await new Promise((r) => setTimeout(r, 50));
          res = await request(t.http).get(`/fhir/$export-status/${id}`);
        }
        expect(res.status).toBe(200);
      }
    } finally {
      if (!stopped) await shutdownApp(other);
    }
  });

  test('every kick-off, poll and download is an AuditEvent', async () => {
    const { status, manifest } = await exportAll('/fhir/$export?_type=Group');
    const jobId = status.split('/').pop() as string;
    const rows: Array<{ resource: unknown }> = await t.app.db.knex('audit_events').select('resource');
    const events = rows.map((r) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource)) as Array<{
      entity?: Array<{ what?: { reference?: string }; query?: string }>;
    }>;
    const queries = events.flatMap((e) => (e.entity ?? []).map((x) => (x.query ? Buffer.from(x.query, 'base64').toString('utf8') : '')));
    expect(queries).toContain('GET /fhir/$export?_type=Group');
    const naming = events.filter((e) => (e.entity ?? []).some((x) => x.what?.reference === `BulkExportJob/${jobId}`));
    // At least one poll and the one download.
    expect(naming.length).toBeGreaterThanOrEqual(2);
    expect(manifest.output).toHaveLength(1);
  });

  test.each([
    ['no Prefer: respond-async', '/fhir/$export', {}, 400],
    ['an output format other than NDJSON', '/fhir/$export?_outputFormat=text/csv', { Prefer: 'respond-async' }, 400],
    ['a _since that is not an instant', '/fhir/$export?_since=yesterday', { Prefer: 'respond-async' }, 400],
    ['an unknown type', '/fhir/$export?_type=Spaceship', { Prefer: 'respond-async' }, 400],
    ['a type outside the Patient compartment at Group level', '/fhir/Group/x/$export?_type=Organization', { Prefer: 'respond-async' }, 400],
    ['a _typeFilter with an unknown parameter', `/fhir/$export?_typeFilter=${encodeURIComponent('Condition?nope=1')}`, { Prefer: 'respond-async' }, 400],
    ['a Group that does not exist', '/fhir/Group/no-such-group/$export', { Prefer: 'respond-async' }, 404],
    ['an unknown export', '/fhir/$export-status/00000000-0000-4000-8000-000000000000', {}, 404],
    ['a malformed export id', '/fhir/$export-status/..%2F..', {}, 404],
  ])('%s: a clear OperationOutcome', async (_label, path, headers, status) => {
    const res = await request(t.http).get(path).set(headers as Record<string, string>);
    expect(res.status).toBe(status);
    expect(res.headers['content-type']).toMatch(/application\/fhir\+json/);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  test('pages by keyset and splits files, with nothing lost or repeated', async () => {
    const defs = loadFhirDefinitions();
    const patients: string[] = [];
    for (let i = 0; i < 9; i++) patients.push(await create({ resourceType: 'Patient', name: [{ family: `Paged-${i}` }] }));
    const exports = createBulkExports({ knex: t.app.db.knex, defs, logger: pino({ level: 'silent' }), pageSize: 2, resourcesPerFile: 3 });
    try {
      const req = parseExportRequest(defs, { kind: 'system' }, { _type: ['Patient'] }, undefined, { prefer: 'respond-async' });
      const id = await exports.kickOff(req, { owner: 'test', filterFor: () => undefined }, 'http://x/fhir/$export');
      let status = await exports.status(id, 'test');
      for (let i = 0; status?.state !== 'completed' && i < 200; i++) {
        await new Promise((r) => setTimeout(r, 25));
        status = await exports.status(id, 'test');
      }
      if (status?.state !== 'completed') throw new Error(`export did not complete: ${JSON.stringify(status)}`);
      const all = patients.length + 2;
      // 11 Patients (two from the start, nine here), three per file.
      expect(all).toBe(11);
      expect(status.manifest.output.map((o) => o.count)).toEqual([3, 3, 3, 2]);
      const seen: string[] = [];
      for (let seq = 1; seq <= status.manifest.output.length; seq++) {
        const file = await exports.file(id, seq, 'test');
        seen.push(...(file?.toString('utf8').split('\n').filter(Boolean) ?? []).map((l) => JSON.parse(l).id));
      }
      expect(seen).toHaveLength(all);
      expect(new Set(seen).size).toBe(all);
      for (const p of patients) expect(seen).toContain(p);
      expect(await exports.file(id, 1, 'someone else')).toBeUndefined();
      // A job whose process stopped beating its heartbeat is reported failed, by any process.
      await t.app.db.knex('bulk_exports').where({ id }).update({ state: 'in-progress', heartbeat_at: new Date(Date.now() - 600_000) });
      expect(await exports.status(id, 'test')).toEqual({ state: 'failed', message: expect.stringMatching(/stopped/) });
    } finally {
      await exports.stop();
    }
  });
});
