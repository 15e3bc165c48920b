import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * A single-instance STOW indexes its instance in one statement (src/db/instance-index.ts
 * indexAlone): the counts and lists it brings up to date there are those of levels that existed
 * unchanged; a new series, a changed level or a UID already indexed take a second statement or
 * the general path. Whichever way, the figures of the study and series must be exact.
 */
describe('STOW-RS: one instance per request, figures of its study and series', () => {
  let t: TestApp;
  const post = (parts: Buffer[]) => {
    const { body, contentType } = buildMultipart(parts);
    return request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
  };
  const small = (o: Parameters<typeof createSyntheticInstance>[0]) => createSyntheticInstance({ rows: 4, columns: 4, ...o });
  const study = (uid: string) => t.app.db.knex('studies').where({ study_uid: uid }).first('num_series', 'num_instances', 'modalities', 'fhir_id');
  const series = (uid: string) => t.app.db.knex('series').where({ series_uid: uid }).first('num_instances', 'series_description');

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('instances into an existing series count exactly, and the study has its ImagingStudy id', async () => {
    const st = newUid();
    const se = newUid();
    for (let i = 1; i <= 3; i++) expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: i }).bytes])).status).toBe(200);
    expect(await study(st)).toMatchObject({ num_series: 1, num_instances: 3 });
    expect((await study(st)).fhir_id).toEqual(expect.any(String));
    expect((await series(se)).num_instances).toBe(3);
  });

  test('a new series of an existing study counts the series and its modality', async () => {
    const st = newUid();
    const [se1, se2] = [newUid(), newUid()];
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se1, modality: 'CT' }).bytes])).status).toBe(200);
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se2, modality: 'MR' }).bytes])).status).toBe(200);
    expect(await study(st)).toMatchObject({ num_series: 2, num_instances: 2, modalities: ['CT', 'MR'] });
    expect((await series(se2)).num_instances).toBe(1);
  });

  test('an instance that changes its series attributes is counted and the change is kept', async () => {
    const st = newUid();
    const se = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, seriesDescription: 'Before' }).bytes])).status).toBe(200);
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, seriesDescription: 'After' }).bytes])).status).toBe(200);
    expect(await series(se)).toEqual({ num_instances: 2, series_description: 'After' });
    expect((await study(st)).num_instances).toBe(2);
  });

  test('the same instance sent again is stored once', async () => {
    const st = newUid();
    const se = newUid();
    const instance = small({ studyInstanceUID: st, seriesInstanceUID: se }).bytes;
    expect((await post([instance])).status).toBe(200);
    const again = await post([instance]);
    expect(again.status).toBe(200);
    expect(again.body['00081199'].Value).toHaveLength(1);
    expect((await study(st)).num_instances).toBe(1);
    expect((await series(se)).num_instances).toBe(1);
  });

  test('concurrent single-instance STOWs into one series count every instance', async () => {
    const st = newUid();
    const se = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: 0 }).bytes])).status).toBe(200);
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => post([small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: i + 1 }).bytes])));
    for (const a of answers) expect(a.status).toBe(200);
    expect(await study(st)).toMatchObject({ num_series: 1, num_instances: 13 });
    expect((await series(se)).num_instances).toBe(13);
    const rows = await t.app.db.knex('instances').join('series', 'series.id', 'instances.series_pk').where('series.series_uid', se).count({ n: '*' });
    expect(Number(rows[0].n)).toBe(13);
  });

  test('concurrent single-instance STOWs of new series into one study count every series', async () => {
    const st = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: newUid() }).bytes])).status).toBe(200);
    const answers = await Promise.all(Array.from({ length: 8 }, () => post([small({ studyInstanceUID: st, seriesInstanceUID: newUid() }).bytes])));
    for (const a of answers) expect(a.status).toBe(200);
    expect(await study(st)).toMatchObject({ num_series: 9, num_instances: 9 });
  });
});
