import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

/**
 * The patient, study and series rows of a STOW (src/db/instance-index.ts upsertLevels): an
 * instance whose levels the index already holds with the same attributes leaves those rows as
 * they are (no new row version: each would re-index some 30 study indexes), while a changed
 * attribute is still written (the latest instance's values win), and concurrent single-instance
 * STOWs into new studies of one patient all land under that one patient.
 */
describe('STOW-RS: patient, study and series rows', () => {
  let t: TestApp;
  const post = (parts: Buffer[]) => {
    const { body, contentType } = buildMultipart(parts);
    return request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
  };
  const small = (o: Parameters<typeof createSyntheticInstance>[0]) => createSyntheticInstance({ rows: 4, columns: 4, ...o }).bytes;
  /** The row version (xmin) of a study's patient row, and the study's description. */
  const versions = async (studyUid: string) => {
    const row = await t.app.db
      .knex('studies as st')
      .join('patients as p', 'p.id', 'st.patient_pk')
      .where('st.study_uid', studyUid)
      .first(t.app.db.knex.raw('p.xmin::text AS patient'), 'st.study_description');
    return row as { patient: string; study_description: string };
  };

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('a second instance with the same attributes does not rewrite the patient row', async () => {
    const study = newUid();
    const series = newUid();
    const patientID = `LEVELS-${newUid().slice(-8)}`;
    expect((await post([small({ studyInstanceUID: study, seriesInstanceUID: series, patientID, instanceNumber: 1 })])).status).toBe(200);
    const before = await versions(study);
    expect((await post([small({ studyInstanceUID: study, seriesInstanceUID: series, patientID, instanceNumber: 2 })])).status).toBe(200);
    const after = await versions(study);
    expect(after.patient).toBe(before.patient);
    const counts = await t.app.db.knex('studies').where({ study_uid: study }).first('num_instances');
    expect(counts.num_instances).toBe(2);
  });

  test('a changed study attribute is written: the latest instance wins', async () => {
    const study = newUid();
    const series = newUid();
    expect((await post([small({ studyInstanceUID: study, seriesInstanceUID: series, studyDescription: 'First', seriesDescription: 'S1' })])).status).toBe(200);
    expect((await post([small({ studyInstanceUID: study, seriesInstanceUID: series, studyDescription: 'Second', seriesDescription: 'S2' })])).status).toBe(200);
    expect((await versions(study)).study_description).toBe('Second');
    const se = await t.app.db.knex('series').where({ series_uid: series }).first('series_description');
    expect(se.series_description).toBe('S2');
  });

  test('concurrent single-instance STOWs of new studies of one new patient share one patient row', async () => {
    const patientID = `LEVELS-C-${newUid().slice(-8)}`;
    const studies = Array.from({ length: 8 }, () => newUid());
    const answers = await Promise.all(studies.map((s) => post([small({ studyInstanceUID: s, seriesInstanceUID: newUid(), patientID })])));
    for (const a of answers) expect(a.status).toBe(200);
    const rows = await t.app.db.knex('studies').whereIn('study_uid', studies).distinct('patient_pk');
    expect(rows).toHaveLength(1);
    // count(*) is a bigint: a string from the pg driver, a number from the embedded engine.
    const [{ n }] = await t.app.db.knex('patients').where({ patient_id: patientID }).count({ n: '*' });
    expect(Number(n)).toBe(1);
  });

  // Concurrent STOWs into one study wait for its row lock in turn: the lock is held for as few
  // round trips as possible when the AuditEvent, which does not depend on it, is written first.
  (testDbKind() === 'postgres' ? test : test.skip)('a STOW writes its AuditEvent before it waits for the study row lock', async () => {
    const study = newUid();
    const series = newUid();
    expect((await post([small({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: 1 })])).status).toBe(200);
    const knex = t.app.db.knex;
    const holder = await knex.transaction();
    try {
      await holder('studies').where({ study_uid: study }).forUpdate().first('id');
      const second = post([small({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: 2 })]).then((r) => r);
      let waiting: number | undefined;
      for (let i = 0; i < 200 && waiting === undefined; i++) {
        const r = await knex.raw(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`);
        waiting = r.rows[0]?.pid;
        if (waiting === undefined) await new Promise((done) => setTimeout(done, 25));
      }
      expect(waiting).toBeDefined();
      const audit = await knex.raw(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE l.pid = ? AND l.granted AND l.mode = 'RowExclusiveLock' AND c.relname LIKE 'audit_events%'`,
        [waiting!],
      );
      expect(audit.rows[0].n).toBeGreaterThan(0);
      await holder.commit();
      expect((await second).status).toBe(200);
    } finally {
      if (!holder.isCompleted()) await holder.rollback();
    }
    expect(await knex('studies').where({ study_uid: study }).first('num_instances')).toEqual({ num_instances: 2 });
  });

  test('no index covers studies.updated_at, so the count update of a STOW can be a HOT update', async () => {
    const rows = await t.app.db.knex.raw(`SELECT indexname FROM pg_indexes WHERE tablename = 'studies' AND indexdef LIKE '%(updated_at)%'`);
    expect(rows.rows).toEqual([]);
  });
});
