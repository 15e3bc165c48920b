import express, { type Express } from 'express';
import { createHash } from 'node:crypto';
import request from 'supertest';
import { registerWadoRoutes } from '../../../src/dicomweb/wado-routes';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

// ---- helpers

function wadoApp(t: TestApp, before?: express.RequestHandler): Express {
  const router = express.Router();
  if (before) router.use(before);
  registerWadoRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger });
  router.use(dicomwebErrorHandler({ logger: t.app.logger }));
  const app = express();
  app.use('/dicomweb', router);
  return app;
}

async function stow(t: TestApp, files: Buffer[]): Promise<void> {
  const { body, contentType } = buildMultipart(files);
  const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
  if (res.status !== 200 && res.status !== 202) throw new Error(`STOW answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const errorText = (res: request.Response) => res.body['00000902']?.Value?.[0] as string;

function studyOf(uids: { studyInstanceUID: string; seriesInstanceUID: string; seriesNumber?: number }, n: number) {
  return Array.from({ length: n }, (_, i) => createSyntheticInstance({ ...uids, instanceNumber: i + 1, rows: 8, columns: 8, seed: Math.random() * 1e9 }));
}

// ---- tests

describe('DELETE studies, series and instances (dcm4chee / Orthanc / Google convention)', () => {
  let t: TestApp;
  let app: Express;
  beforeAll(async () => {
    t = await startTestApp({ ORPHAN_GRACE_SECONDS: '0' });
    app = t.http;
  });
  afterAll(async () => {
    await t.close();
  });

  test('deleting an instance answers 204, and it is gone while the rest stays', async () => {
    const ids = { studyInstanceUID: newUid(), seriesInstanceUID: newUid() };
    const [a, b] = studyOf(ids, 2);
    await stow(t, [a.bytes, b.bytes]);
    const res = await request(app).delete(`/dicomweb/studies/${ids.studyInstanceUID}/series/${ids.seriesInstanceUID}/instances/${a.sopInstanceUID}`);
    expect(res.status).toBe(204);
    expect(res.text).toBe('');
    const gone = await request(app).get(`/dicomweb/studies/${ids.studyInstanceUID}/series/${ids.seriesInstanceUID}/instances/${a.sopInstanceUID}`);
    expect(gone.status).toBe(404);
    const left = await request(app).get(`/dicomweb/studies/${ids.studyInstanceUID}/metadata`);
    expect(left.body.map((d: Record<string, { Value: string[] }>) => d['00080018'].Value[0])).toEqual([b.sopInstanceUID]);
  });

  test('aggregates of what remains are exact after a series delete', async () => {
    const study = newUid();
    const keep = studyOf({ studyInstanceUID: study, seriesInstanceUID: newUid(), seriesNumber: 1 }, 2);
    const drop = studyOf({ studyInstanceUID: study, seriesInstanceUID: newUid(), seriesNumber: 2 }, 3);
    await stow(t, [...keep, ...drop].map((x) => x.bytes));
    const res = await request(app).delete(`/dicomweb/studies/${study}/series/${drop[0].seriesInstanceUID}`);
    expect(res.status).toBe(204);
    const row = await t.app.db.knex('studies').where({ study_uid: study }).first();
    expect(row.num_series).toBe(1);
    expect(row.num_instances).toBe(2);
    expect(await t.app.db.knex('series').where({ series_uid: drop[0].seriesInstanceUID }).first()).toBeUndefined();
  });

  test('deleting a study removes its rows, its versions and its now-empty patient', async () => {
    const ids = { studyInstanceUID: newUid(), seriesInstanceUID: newUid() };
    const sop = newUid();
    const patientID = `DEL-${newUid().slice(-8)}`;
    const v1 = createSyntheticInstance({ ...ids, sopInstanceUID: sop, patientID, seed: 1 });
    const v2 = createSyntheticInstance({ ...ids, sopInstanceUID: sop, patientID, seed: 2 });
    await stow(t, [v1.bytes]);
    await stow(t, [v2.bytes]);
    expect(await t.app.db.knex('instance_versions').where({ sop_instance_uid: sop })).toHaveLength(1);
    const res = await request(app).delete(`/dicomweb/studies/${ids.studyInstanceUID}`);
    expect(res.status).toBe(204);
    expect(await t.app.db.knex('studies').where({ study_uid: ids.studyInstanceUID })).toHaveLength(0);
    expect(await t.app.db.knex('instance_versions').where({ sop_instance_uid: sop })).toHaveLength(0);
    expect(await t.app.db.knex('patients').where({ patient_id: patientID })).toHaveLength(0);
  });

  test('a delete never removes blobs itself; the sweeper does, after the grace period', async () => {
    const inst = createSyntheticInstance({ rows: 8, columns: 8 });
    await stow(t, [inst.bytes]);
    const del = jest.spyOn(t.app.blobs, 'delete');
    try {
      expect((await request(app).delete(`/dicomweb/studies/${inst.studyInstanceUID}`)).status).toBe(204);
      expect(del).not.toHaveBeenCalled();
    } finally {
      del.mockRestore();
    }
    expect(await t.app.blobs.stat(sha(inst.bytes))).not.toBeNull();
    await new Promise((r) => setTimeout(r, 20));
    await t.app.sweeper.sweep();
    expect(await t.app.blobs.stat(sha(inst.bytes))).toBeNull();
  });

  test('a blob another index row still references survives the delete and the sweep', async () => {
    const inst = createSyntheticInstance({ rows: 8, columns: 8 });
    await stow(t, [inst.bytes]);
    const key = sha(inst.bytes);
    // Another row holding the same bytes: a superseded version of some other instance.
    await t.app.db.knex('instance_versions').insert({
      sop_instance_uid: newUid(),
      version: 1,
      study_uid: newUid(),
      series_uid: newUid(),
      blob_key: key,
      size: inst.bytes.length,
      stored_at: new Date(),
    });
    expect((await request(app).delete(`/dicomweb/studies/${inst.studyInstanceUID}`)).status).toBe(204);
    await new Promise((r) => setTimeout(r, 20));
    await t.app.sweeper.sweep();
    expect(await t.app.blobs.stat(key)).not.toBeNull();
  });

  test('deleting a missing study is 404 with a body', async () => {
    const missing = newUid();
    const res = await request(app).delete(`/dicomweb/studies/${missing}`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toBe(`study ${missing} not found`);
  });

  test('deleting a missing instance of an existing series is 404 naming the instance', async () => {
    const ids = { studyInstanceUID: newUid(), seriesInstanceUID: newUid() };
    const [a] = studyOf(ids, 1);
    await stow(t, [a.bytes]);
    const res = await request(app).delete(`/dicomweb/studies/${ids.studyInstanceUID}/series/${ids.seriesInstanceUID}/instances/1.2.3`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/^instance 1\.2\.3 not found/);
  });

  test('a study outside restrictStudies cannot be deleted: 404, and nothing is removed', async () => {
    const ids = { studyInstanceUID: newUid(), seriesInstanceUID: newUid() };
    const [a] = studyOf(ids, 1);
    await stow(t, [a.bytes]);
    const restricted = wadoApp(t, (_req, res, next) => {
      res.locals.restrictStudies = (qb: { whereNot: (c: string, v: string) => void }) => qb.whereNot('studies.study_uid', ids.studyInstanceUID);
      next();
    });
    const res = await request(restricted).delete(`/dicomweb/studies/${ids.studyInstanceUID}`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toBe(`study ${ids.studyInstanceUID} not found`);
    expect(await t.app.db.knex('instances').where({ sop_instance_uid: a.sopInstanceUID })).toHaveLength(1);
  });
});
