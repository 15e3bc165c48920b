import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * The study result text (studies.qido_json, migrations 20261123002000 and 20261129002000): a
 * study row inserted without instances (as every STOW's levels upsert offers it, before the
 * count update of the same transaction) gets no text; the update that counts its instances
 * writes it, and the answers are those of the counted row.
 */
describe('studies.qido_json', () => {
  let t: TestApp;
  const post = (parts: Buffer[]) => {
    const { body, contentType } = buildMultipart(parts);
    return request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
  };
  const small = (o: Parameters<typeof createSyntheticInstance>[0]) => createSyntheticInstance({ rows: 4, columns: 4, ...o }).bytes;
  const text = async (studyUid: string) => {
    const row = await t.app.db.knex('studies').where({ study_uid: studyUid }).first('qido_json');
    return (row?.qido_json ?? null) as string | null;
  };

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('a study row inserted without instances has no text; counting its instances writes it', async () => {
    const knex = t.app.db.knex;
    const [patient] = await knex('patients').insert({ identity_key: `|QJ-${newUid().slice(-10)}`, patient_id: 'QJ' }).returning('id');
    const study = newUid();
    await knex('studies').insert({
      study_uid: study,
      patient_pk: patient.id,
      study_description: 'Counted later',
      dataset: JSON.stringify({ '0020000D': { vr: 'UI', Value: [study] }, '00081030': { vr: 'LO', Value: ['Counted later'] } }),
    });
    expect(await text(study)).toBeNull();
    await knex('studies').where({ study_uid: study }).update({ num_instances: 3, num_series: 1, modalities: ['CT'] });
    const written = JSON.parse((await text(study))!);
    expect(written['00201208']).toEqual({ vr: 'IS', Value: [3] });
    expect(written['00201206']).toEqual({ vr: 'IS', Value: [1] });
    expect(written['00080061']).toEqual({ vr: 'CS', Value: ['CT'] });
    expect(written['00081030']).toEqual({ vr: 'LO', Value: ['Counted later'] });
    expect(written['00080050']).toEqual({ vr: 'SH' });
  });

  test('a study row inserted with its counts gets its text at once', async () => {
    const knex = t.app.db.knex;
    const [patient] = await knex('patients').insert({ identity_key: `|QJ-${newUid().slice(-10)}`, patient_id: 'QJ' }).returning('id');
    const study = newUid();
    await knex('studies').insert({ study_uid: study, patient_pk: patient.id, num_instances: 2, num_series: 1, dataset: '{}' });
    expect(JSON.parse((await text(study))!)['00201208']).toEqual({ vr: 'IS', Value: [2] });
  });

  test('after STOWs into a known study the text holds the counts, and the search answers them', async () => {
    const study = newUid();
    const series = newUid();
    for (const n of [1, 2, 3]) {
      expect((await post([small({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: n, studyDescription: 'Three' })])).status).toBe(200);
    }
    const written = JSON.parse((await text(study))!);
    expect(written['00201208']).toEqual({ vr: 'IS', Value: [3] });
    const found = await request(t.http).get(`/dicomweb/studies?StudyInstanceUID=${study}`).set('Accept', 'application/dicom+json');
    expect(found.status).toBe(200);
    expect(found.body).toHaveLength(1);
    expect(found.body[0]['00201208']).toEqual({ vr: 'IS', Value: [3] });
    expect(found.body[0]['00081030']).toEqual({ vr: 'LO', Value: ['Three'] });
  });
});
