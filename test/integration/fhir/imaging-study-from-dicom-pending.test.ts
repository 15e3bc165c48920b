import request from 'supertest';
import { Client } from 'pg';
import { startImagingStudyFlusher } from '../../../src/fhir/dicom/imaging-study-flusher';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import type { Logger } from '../../../src/logger';
import { buildMultipart } from '../../helpers/multipart-body';
import { createTestDatabase, startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

/**
 * The ImagingStudy of a study is rewritten after the STOW-RS transaction (marked pending there),
 * yet every FHIR request that starts after the STOW-RS response sees the stored instances.
 * The background flusher is stopped in this suite (its stop() rewrites what is pending and
 * turns the timers off) so that only the rewrite a FHIR request does itself can make it visible.
 */
describe('ImagingStudy rewritten after the STOW-RS transaction', () => {
  let t: TestApp;
  const stow = async (parts: Buffer[]) => {
    const { body, contentType } = buildMultipart(parts);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    expect(res.status).toBe(200);
    return res;
  };
  const fhir = (path: string) => request(t.http).get(`/fhir/${path}`).set('Accept', 'application/fhir+json');
  const pendingCount = async () => Number((await t.app.db.knex('imaging_study_pending').count({ n: '*' }))[0].n);
  const instanceUids = (is: { series?: Array<{ instance?: Array<{ uid: string }> }> }) => (is.series ?? []).flatMap((s) => (s.instance ?? []).map((i) => i.uid));

  /** A study of one instance, rewritten; then one more instance STOWed: the study is pending again. */
  const studyWithPendingInstance = async () => {
    const study = newUid();
    const series = newUid();
    const first = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: 1, patientID: `PEND-${study.slice(-6)}` });
    await stow([first.bytes]);
    const found = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${study}`)}`);
    expect(found.body.entry).toHaveLength(1);
    const is = found.body.entry[0].resource;
    const second = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: 2, patientID: `PEND-${study.slice(-6)}` });
    await stow([second.bytes]);
    expect(await pendingCount()).toBe(1);
    return { study, id: is.id as string, patient: is.subject.reference as string, uids: [first.sopInstanceUID, second.sopInstanceUID] };
  };

  beforeAll(async () => {
    t = await startTestApp();
    await t.app.imagingStudies.stop();
  });
  afterAll(async () => {
    await t.close();
  });

  test('the STOW transaction marks the study pending, with its ImagingStudy id and Patient already assigned', async () => {
    const inst = createSyntheticInstance({ patientID: 'PEND-MARK', issuerOfPatientID: 'HOSP-P' });
    await stow([inst.bytes]);
    const row = await t.app.db.knex('studies as st').join('patients as p', 'p.id', 'st.patient_pk').where('st.study_uid', inst.studyInstanceUID).first('st.id', 'st.fhir_id', 'p.fhir_id as patient');
    expect(row.fhir_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await t.app.db.knex('imaging_study_pending').where({ study_pk: row.id }).first()).toBeDefined();
    expect(await t.app.db.knex('fhir_resource').where({ resource_type: 'ImagingStudy', id: row.fhir_id }).first()).toBeUndefined();
    expect(await t.app.db.knex('fhir_resource').where({ resource_type: 'Patient', id: row.patient, deleted: false }).first()).toBeDefined();
    // A Patient read cannot show an ImagingStudy: the study stays pending.
    expect((await fhir(`Patient/${row.patient}`)).status).toBe(200);
    expect(await t.app.db.knex('imaging_study_pending').where({ study_pk: row.id }).first()).toBeDefined();
    const read = await fhir(`ImagingStudy/${row.fhir_id}`);
    expect(read.status).toBe(200);
    expect(instanceUids(read.body)).toEqual([inst.sopInstanceUID]);
    expect(await t.app.db.knex('imaging_study_pending').where({ study_pk: row.id }).first()).toBeUndefined();
  });

  test('a read right after the STOW response lists the new instance', async () => {
    const s = await studyWithPendingInstance();
    const res = await fhir(`ImagingStudy/${s.id}`);
    expect(res.status).toBe(200);
    expect(res.body.numberOfInstances).toBe(2);
    expect(instanceUids(res.body)).toEqual(s.uids);
    expect(await pendingCount()).toBe(0);
  });

  test('a search right after the STOW response lists the new instance', async () => {
    const s = await studyWithPendingInstance();
    const res = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${s.study}`)}`);
    expect(res.body.entry[0].resource.numberOfInstances).toBe(2);
    expect(instanceUids(res.body.entry[0].resource)).toEqual(s.uids);
  });

  test('Patient?_revinclude=ImagingStudy:subject right after the STOW response lists the new instance', async () => {
    const s = await studyWithPendingInstance();
    const res = await fhir(`Patient?_id=${s.patient.split('/')[1]}&_revinclude=ImagingStudy:subject`);
    expect(res.status).toBe(200);
    const is = res.body.entry.map((e: { resource: { resourceType: string } }) => e.resource).find((r: { resourceType: string }) => r.resourceType === 'ImagingStudy');
    expect(is.numberOfInstances).toBe(2);
    expect(instanceUids(is)).toEqual(s.uids);
  });

  test('a batch Bundle GET right after the STOW response lists the new instance', async () => {
    const s = await studyWithPendingInstance();
    const res = await request(t.http)
      .post('/fhir')
      .set('Content-Type', 'application/fhir+json')
      .send({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `ImagingStudy/${s.id}` } }] });
    expect(res.status).toBe(200);
    expect(res.body.entry[0].response.status).toMatch(/^200/);
    expect(instanceUids(res.body.entry[0].resource)).toEqual(s.uids);
  });

  test('the system history right after the STOW response holds the new version', async () => {
    const s = await studyWithPendingInstance();
    const res = await fhir('_history?_count=5');
    expect(res.status).toBe(200);
    const latest = res.body.entry.map((e: { resource?: { resourceType: string; id: string } }) => e.resource).find((r?: { resourceType: string; id: string }) => r?.resourceType === 'ImagingStudy' && r.id === s.id);
    expect(instanceUids(latest)).toEqual(s.uids);
  });

  test('stop() rewrites pending studies within its budget and leaves the rest marked for the next start', async () => {
    const { study } = await studyWithPendingInstance();
    const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } as unknown as Logger;
    await startImagingStudyFlusher({ knex: t.app.db.knex, logger: silent, pollMs: 60_000, delayMs: 60_000, shutdownBudgetMs: 0 }).stop();
    expect(await pendingCount()).toBe(1);
    await startImagingStudyFlusher({ knex: t.app.db.knex, logger: silent, pollMs: 60_000, delayMs: 60_000 }).stop();
    expect(await pendingCount()).toBe(0);
    const found = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${study}`)}`);
    expect(instanceUids(found.body.entry[0].resource)).toHaveLength(2);
  });

  test('20 concurrent single-instance STOWs into one study: one ImagingStudy with all 20 instances, written once', async () => {
    const study = newUid();
    const series = newUid();
    const insts = Array.from({ length: 20 }, (_, i) => createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: i + 1, patientID: 'PEND-CONC' }));
    await Promise.all(insts.map((inst) => stow([inst.bytes])));
    const res = await fhir(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${study}`)}`);
    expect(res.body.entry).toHaveLength(1);
    const is = res.body.entry[0].resource;
    expect(is.numberOfSeries).toBe(1);
    expect(is.numberOfInstances).toBe(20);
    expect(is.series[0].numberOfInstances).toBe(20);
    expect(instanceUids(is)).toEqual(insts.map((i) => i.sopInstanceUID));
    const history = await fhir(`ImagingStudy/${is.id}/_history`);
    expect(history.body.entry).toHaveLength(1);
    expect(is.meta.versionId).toBe('1');
  });
});

describe('the background flusher', () => {
  test('rewrites studies shortly after STOW-RS, concurrent ones included, in fewer versions than STOWs', async () => {
    const t = await startTestApp();
    try {
      const study = newUid();
      const series = newUid();
      const insts = Array.from({ length: 20 }, (_, i) => createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: i + 1 }));
      const { body, contentType } = buildMultipart([insts[0].bytes]);
      expect((await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body)).status).toBe(200);
      await Promise.all(
        insts.slice(1).map(async (inst) => {
          const part = buildMultipart([inst.bytes]);
          expect((await request(t.http).post('/dicomweb/studies').set('Content-Type', part.contentType).send(part.body)).status).toBe(200);
        }),
      );
      const knex = t.app.db.knex;
      const fhirId = (await knex('studies').where({ study_uid: study }).first('fhir_id')).fhir_id as string;
      // Read by SQL, not through the API (which would rewrite the study itself).
      const deadline = Date.now() + 20_000;
      let row: { content: { numberOfInstances?: number }; version_id: string | number } | undefined;
      while (Date.now() < deadline) {
        row = await knex('fhir_resource').where({ resource_type: 'ImagingStudy', id: fhirId }).first('content', 'version_id');
        const pending = await knex('imaging_study_pending').count({ n: '*' });
        if (row?.content.numberOfInstances === 20 && Number(pending[0].n) === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(row?.content.numberOfInstances).toBe(20);
      expect(Number(row?.version_id)).toBeLessThan(20);
    } finally {
      await t.close();
    }
  });

  (testDbKind() === 'postgres' ? test : test.skip)('a study left pending by a crash is rewritten when the server starts again', async () => {
    const database = await createTestDatabase();
    try {
      const study = newUid();
      const first = await startTestApp({ DATABASE_URL: database.url });
      try {
        const { body, contentType } = buildMultipart([createSyntheticInstance({ studyInstanceUID: study }).bytes]);
        expect((await request(first.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body)).status).toBe(200);
        expect(await first.app.imagingStudies.flushAll()).toBeGreaterThanOrEqual(0);
      } finally {
        await first.close();
      }
      // What a crash between a change's commit and its rewrite leaves: the index changed, the mark kept.
      const sql = new Client({ connectionString: database.url });
      await sql.connect();
      try {
        await sql.query(`UPDATE studies SET study_description = 'Left by a crash' WHERE study_uid = $1`, [study]);
        await sql.query(`INSERT INTO imaging_study_pending (study_pk) SELECT id FROM studies WHERE study_uid = $1`, [study]);
        const fhirId = (await sql.query(`SELECT fhir_id FROM studies WHERE study_uid = $1`, [study])).rows[0].fhir_id;
        const second = await startTestApp({ DATABASE_URL: database.url });
        try {
          const deadline = Date.now() + 20_000;
          let description: string | undefined;
          while (Date.now() < deadline) {
            const r = await sql.query(
              `SELECT r.content->>'description' AS description, (SELECT count(*) FROM imaging_study_pending) AS pending
               FROM fhir_resource r WHERE r.resource_type = 'ImagingStudy' AND r.id = $1`,
              [fhirId],
            );
            description = r.rows[0]?.description;
            if (description === 'Left by a crash' && Number(r.rows[0].pending) === 0) break;
            await new Promise((res) => setTimeout(res, 100));
          }
          expect(description).toBe('Left by a crash');
        } finally {
          await second.close();
        }
      } finally {
        await sql.end();
      }
    } finally {
      await database.drop();
    }
  });
});
