/**
 * DIMSE peers over /admin/dimse/peers (src/admin/dimse-peers.ts): admins add, change and remove
 * peers while the server runs, beside the read-only ones of DIMSE_PEERS; a running DIMSE
 * listener takes a change up (dcmtk's echoscu and storescu as the peer).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { startAppDimseListener, type DimseListener } from '../../../src/dimse/dimse-listener';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { dcmtk } from '../../helpers/dcmtk';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const AE = 'IMAGING_LAKE';

describe('DIMSE peers administered over /admin/dimse/peers', () => {
  let t: TestApp;
  let scp: DimseListener;
  let dir: string;

  beforeAll(async () => {
    // DIMSE_PEERS configures CONFIGURED; the listener of this test is started with the app's config.
    t = await startTestApp({ DIMSE_PORT: '0', DIMSE_HOST: '127.0.0.1', DIMSE_PEERS: JSON.stringify([{ aeTitle: 'CONFIGURED', services: ['store'] }]) });
    scp = await startAppDimseListener(t.app, t.config.dimse!, 'http://imaging-lake.test/dicomweb');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-peers-'));
  });
  afterAll(async () => {
    await scp?.close();
    await t?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('an admin adds, reads, changes and removes a peer; the configured ones are listed and cannot be changed here', async () => {
    const created = await request(t.http).put('/admin/dimse/peers/OCT_7').send({ host: '10.1.2.3', port: 104, projects: [], services: ['store', 'find'] });
    expect(created.status).toBe(201);
    expect(created.headers.location).toBe('/admin/dimse/peers/OCT_7');
    expect(created.body).toMatchObject({ aeTitle: 'OCT_7', host: '10.1.2.3', port: 104, services: ['store', 'find'], source: 'managed', updatedBy: expect.any(String) });

    const list = await request(t.http).get('/admin/dimse/peers');
    expect(list.status).toBe(200);
    expect(list.body.peers.map((p: { aeTitle: string; source: string }) => `${p.aeTitle}:${p.source}`)).toEqual(['CONFIGURED:configured', 'OCT_7:managed']);

    // PUT replaces the whole definition; services default to store, as in DIMSE_PEERS.
    const changed = await request(t.http).put('/admin/dimse/peers/OCT_7').send({ aeTitle: 'OCT_7', host: '10.1.2.4' });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ aeTitle: 'OCT_7', host: '10.1.2.4', services: ['store'], projects: [] });
    expect(changed.body.port).toBeUndefined();
    expect((await request(t.http).get('/admin/dimse/peers/OCT_7')).body).toMatchObject({ host: '10.1.2.4' });
    expect((await request(t.http).get('/admin/dimse/peers/CONFIGURED')).body).toMatchObject({ aeTitle: 'CONFIGURED', source: 'configured' });

    const configured = await request(t.http).put('/admin/dimse/peers/CONFIGURED').send({ services: ['store', 'find'] });
    expect(configured.status).toBe(409);
    expect(configured.body.issue[0].diagnostics).toMatch(/configured by DIMSE_PEERS/);
    expect((await request(t.http).delete('/admin/dimse/peers/CONFIGURED')).status).toBe(409);

    expect((await request(t.http).delete('/admin/dimse/peers/OCT_7')).status).toBe(204);
    expect((await request(t.http).get('/admin/dimse/peers/OCT_7')).status).toBe(404);
    expect((await request(t.http).delete('/admin/dimse/peers/OCT_7')).status).toBe(404);
  });

  test('bad definitions are 400 OperationOutcomes naming the field', async () => {
    const cases: Array<[string, unknown, RegExp]> = [
      ['OCT_8', { services: ['store', 'print'] }, /services\.1/],
      ['OCT_8', { port: 70000, host: '10.0.0.1' }, /port/],
      ['OCT_8', { projects: ['../x'] }, /projects\.0/],
      ['OCT_8', { aeTitle: 'OTHER' }, /not the path's AE title/],
      ['OCT_8', { colour: 'blue' }, /Unrecognized key/],
      ['OCT_8', ['store'], /a JSON object/],
      ['SEVENTEEN_CHARS_X', {}, /AE title/],
    ];
    for (const [ae, body, diagnostics] of cases) {
      const res = await request(t.http).put(`/admin/dimse/peers/${ae}`).send(body as object);
      expect(res.status).toBe(400);
      expect(res.body.resourceType).toBe('OperationOutcome');
      expect(res.body.issue[0].diagnostics).toMatch(diagnostics);
    }
    expect((await request(t.http).get('/admin/dimse/peers/OCT_8')).status).toBe(404);
  });

  test('only admins: other roles are refused, and every call is audited', async () => {
    for (const role of ['data-manager', 'pi', 'researcher'] as const) {
      const token = await t.token(role, ['p1']);
      expect((await request(t.app.express).get('/admin/dimse/peers').set('Authorization', `Bearer ${token}`)).status).toBe(403);
      expect((await request(t.app.express).put('/admin/dimse/peers/SNEAKY').set('Authorization', `Bearer ${token}`).send({})).status).toBe(403);
    }
    expect((await request(t.app.express).get('/admin/dimse/peers')).status).toBe(401);
    expect((await request(t.http).get('/admin/dimse/peers/SNEAKY')).status).toBe(404);

    await request(t.http).put('/admin/dimse/peers/AUDITED').send({});
    const rows = await t.app.db.knex('audit_events').select('resource');
    const events = rows.map((r: { resource: unknown }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource) as AuditEvent);
    const put = events.filter((e) => e.entity?.some((x) => x.what?.reference === 'DimsePeer/AUDITED'));
    expect(put.map((e) => `${e.action}:${e.outcome}`)).toEqual(['U:0']);
    const refused = events.filter((e) => e.entity?.some((x) => x.what?.reference === 'DimsePeer/SNEAKY'));
    // The three PUTs refused by role (the GETs too, audited as searches), and the admin's read of a peer there is not.
    expect(refused.filter((e) => /^access denied: role (data-manager|pi|researcher) may not update DimsePeer$/.test(e.outcomeDesc ?? ''))).toHaveLength(3);
    expect(refused.filter((e) => e.action === 'R').map((e) => e.outcome)).toEqual(['4']);
  });

  test('a running listener takes a new or changed peer up within a second, and turns it away once removed', async () => {
    const file = path.join(dir, 'one.dcm');
    const instance = createSyntheticInstance({ rows: 8, columns: 8, bitsAllocated: 8, patientID: 'PEERS-1' });
    await fs.writeFile(file, instance.bytes);
    const echo = () => dcmtk('echoscu', ['-aet', 'LATE_OCT', '-aec', AE, '127.0.0.1', String(scp.port)]);
    /** Echoes until the answer is `accepted` (or not), for at most 5 s: the listener reads the peers at most once a second. */
    const echoUntil = async (accepted: boolean) => {
      let run = await echo();
      for (let i = 0; i < 25 && (run.code === 0) !== accepted; i++) {
        await new Promise((r) => setTimeout(r, 200));
        run = await echo();
      }
      return run;
    };

    const before = await echo();
    expect(before.code).not.toBe(0);
    expect(before.output).toMatch(/Association Rejected/i);

    expect((await request(t.http).put('/admin/dimse/peers/LATE_OCT').send({ host: '127.0.0.1', services: ['store'] })).status).toBe(201);
    expect((await echoUntil(true)).code).toBe(0);
    const store = await dcmtk('storescu', ['-aet', 'LATE_OCT', '-aec', AE, '127.0.0.1', String(scp.port), file]);
    expect(store.code).toBe(0);
    expect(await t.app.db.knex('instances').where({ sop_instance_uid: instance.sopInstanceUID }).first('sop_instance_uid')).toBeDefined();

    // Bound to another address: this one is refused again.
    expect((await request(t.http).put('/admin/dimse/peers/LATE_OCT').send({ host: '10.9.9.9', services: ['store'] })).status).toBe(200);
    expect((await echoUntil(false)).output).toMatch(/Association Rejected/i);

    expect((await request(t.http).put('/admin/dimse/peers/LATE_OCT').send({ services: ['store'] })).status).toBe(200);
    expect((await echoUntil(true)).code).toBe(0);
    expect((await request(t.http).delete('/admin/dimse/peers/LATE_OCT')).status).toBe(204);
    expect((await echoUntil(false)).output).toMatch(/Association Rejected/i);
  });
});
