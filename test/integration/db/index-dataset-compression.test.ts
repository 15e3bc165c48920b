import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

/** The stored headers of the index are compressed with LZ4 where the engine has it (migration 20261129001000). */
describe('index headers compression', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('the stored header of an instance is compressed with LZ4 on PostgreSQL (the embedded engine keeps pglz)', async () => {
    const study = newUid();
    // A header over the size at which PostgreSQL compresses a row (~2 kB).
    const comments = 'lorem ipsum dolor sit amet '.repeat(120);
    const bytes = createSyntheticInstance({ rows: 4, columns: 4, studyInstanceUID: study, extra: { ImageComments: comments } }).bytes;
    const { body, contentType } = buildMultipart([bytes]);
    const answer = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
    expect(answer.status).toBe(200);
    const rows = await t.app.db.knex.raw(
      `SELECT pg_column_compression(i.dataset) AS method FROM instances i JOIN studies st ON st.id = i.study_pk WHERE st.study_uid = ?`,
      [study],
    );
    expect(rows.rows).toEqual([{ method: testDbKind() === 'postgres' ? 'lz4' : 'pglz' }]);
    const metadata = await request(t.http).get(`/dicomweb/studies/${study}/metadata`).set('Accept', 'application/dicom+json');
    expect(metadata.status).toBe(200);
    expect(metadata.body[0]['00204000']).toEqual({ vr: 'LT', Value: [comments.trimEnd()] });
  });
});
