import { createHash } from 'node:crypto';
import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * Batched ingest (PS3.18 10.5): one STOW of many instances is indexed with multi-row
 * statements, yet the study/series aggregates and the FHIR ImagingStudy must be exact when the
 * response is sent, whatever the study held before and whoever else writes into it meanwhile.
 */
type Json = Record<string, { vr: string; Value?: any[] }>;

const referenced = (body: Json) => (body['00081199']?.Value ?? []) as Json[];
const value = (item: Json, tag: string) => item[tag]?.Value?.[0];
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface FhirInstance {
  uid: string;
  number?: number;
}
interface FhirSeries {
  uid: string;
  numberOfInstances: number;
  instance: FhirInstance[];
}

describe('STOW-RS batches: exact index and ImagingStudy', () => {
  let t: TestApp;
  const post = (parts: Buffer[]) => {
    const { body, contentType } = buildMultipart(parts);
    return request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
  };
  const small = (o: Parameters<typeof createSyntheticInstance>[0]) => createSyntheticInstance({ rows: 4, columns: 4, ...o });
  const imagingStudy = async (studyUid: string) => {
    const res = await request(t.http)
      .get(`/fhir/ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${studyUid}`)}`)
      .set('Accept', 'application/fhir+json');
    expect(res.status).toBe(200);
    expect(res.body.entry).toHaveLength(1);
    return res.body.entry[0].resource as { numberOfSeries: number; numberOfInstances: number; series: FhirSeries[]; meta: { versionId: string } };
  };
  const studyRow = (studyUid: string) => t.app.db.knex('studies').where({ study_uid: studyUid }).first();

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('50 instances into a study of 500 give an ImagingStudy listing all 550, each once, in instance order', async () => {
    const study = newUid();
    const series = [newUid(), newUid()];
    const make = (n: number) => small({ studyInstanceUID: study, seriesInstanceUID: series[n % 2], instanceNumber: n, patientID: 'BATCH-1' });
    for (let start = 0; start < 500; start += 50) {
      const res = await post(Array.from({ length: 50 }, (_, k) => make(start + k).bytes));
      expect(res.status).toBe(200);
    }
    const added = Array.from({ length: 50 }, (_, k) => make(500 + k));
    const res = await post(added.map((i) => i.bytes));
    expect(res.status).toBe(200);
    expect(referenced(res.body)).toHaveLength(50);

    const is = await imagingStudy(study);
    expect(is.numberOfInstances).toBe(550);
    expect(is.numberOfSeries).toBe(2);
    const uids = is.series.flatMap((s) => s.instance.map((i) => i.uid));
    expect(uids).toHaveLength(550);
    expect(new Set(uids).size).toBe(550);
    for (const i of added) expect(uids).toContain(i.sopInstanceUID);
    for (const s of is.series) {
      expect(s.numberOfInstances).toBe(275);
      expect(s.instance).toHaveLength(275);
      const numbers = s.instance.map((i) => i.number!);
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
    }
    const row = await studyRow(study);
    expect(row.num_instances).toBe(550);
    expect(row.num_series).toBe(2);
  });

  test('a batch of new, re-sent and changed instances reports each outcome and keeps old bytes', async () => {
    const study = newUid();
    const series = newUid();
    const kept = small({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: 1 });
    const changedUid = newUid();
    const before = small({ studyInstanceUID: study, seriesInstanceUID: series, sopInstanceUID: changedUid, instanceNumber: 2, seed: 1 });
    expect((await post([kept.bytes, before.bytes])).status).toBe(200);

    const after = small({ studyInstanceUID: study, seriesInstanceUID: series, sopInstanceUID: changedUid, instanceNumber: 2, seed: 2 });
    const fresh = small({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: 3 });
    const res = await post([kept.bytes, after.bytes, fresh.bytes]);
    expect(res.status).toBe(202);
    const items = referenced(res.body);
    expect(items.map((i) => value(i, '00081155'))).toEqual([kept.sopInstanceUID, changedUid, fresh.sopInstanceUID]);
    expect(items.map((i) => value(i, '00081196'))).toEqual([undefined, 0xb000, undefined]);

    const rows = await t.app.db.knex('instances').whereIn('sop_instance_uid', [kept.sopInstanceUID, changedUid, fresh.sopInstanceUID]).orderBy('instance_number');
    expect(rows.map((r: { version: number }) => r.version)).toEqual([1, 2, 1]);
    expect(rows[1].blob_key).toBe(sha256(after.bytes));
    const old = await t.app.db.knex('instance_versions').where({ sop_instance_uid: changedUid });
    expect(old.map((v: { blob_key: string }) => v.blob_key)).toEqual([sha256(before.bytes)]);
    expect((await studyRow(study)).num_instances).toBe(3);
    expect((await imagingStudy(study)).numberOfInstances).toBe(3);
  });

  test('the same SOP Instance UID twice in one request: the later part wins as version 2, one row', async () => {
    const study = newUid();
    const uid = newUid();
    // Two series: the later part wins whichever series UID sorts first; the emptied series goes.
    const [seriesA, seriesB] = [newUid(), newUid()].sort().reverse();
    const first = small({ studyInstanceUID: study, seriesInstanceUID: seriesA, sopInstanceUID: uid, seed: 3 });
    const second = small({ studyInstanceUID: study, seriesInstanceUID: seriesB, sopInstanceUID: uid, seed: 4 });
    const res = await post([first.bytes, second.bytes]);
    expect(res.status).toBe(202);
    const rows = await t.app.db.knex('instances').where({ sop_instance_uid: uid });
    expect(rows).toHaveLength(1);
    expect(rows[0].version).toBe(2);
    expect(rows[0].blob_key).toBe(sha256(second.bytes));
    const row = await studyRow(study);
    expect(row.num_instances).toBe(1);
    expect(row.num_series).toBe(1);
    expect((await imagingStudy(study)).series.map((s) => s.uid)).toEqual([seriesB]);
  });

  test('re-sending a whole batch stores nothing twice and leaves counts unchanged', async () => {
    const study = newUid();
    const batch = Array.from({ length: 20 }, (_, n) => small({ studyInstanceUID: study, instanceNumber: n + 1 }));
    expect((await post(batch.map((i) => i.bytes))).status).toBe(200);
    const again = await post(batch.map((i) => i.bytes));
    expect(again.status).toBe(200);
    expect(referenced(again.body).every((i) => value(i, '00081196') === undefined)).toBe(true);
    const rows = await t.app.db.knex('instances').join('studies', 'studies.id', 'instances.study_pk').where('studies.study_uid', study).count({ n: '*' });
    expect(Number(rows[0].n)).toBe(20);
    expect(await t.app.db.knex('instance_versions').whereIn('sop_instance_uid', batch.map((i) => i.sopInstanceUID))).toHaveLength(0);
    expect((await imagingStudy(study)).numberOfInstances).toBe(20);
  });

  test('eight concurrent 50-instance STOWs into one existing study leave an exact ImagingStudy', async () => {
    const study = newUid();
    const series = [newUid(), newUid(), newUid()];
    const seed = Array.from({ length: 30 }, (_, n) => small({ studyInstanceUID: study, seriesInstanceUID: series[n % 3], instanceNumber: n }));
    expect((await post(seed.map((i) => i.bytes))).status).toBe(200);
    const batches = Array.from({ length: 8 }, (_, b) =>
      Array.from({ length: 50 }, (_, k) => small({ studyInstanceUID: study, seriesInstanceUID: series[k % 3], instanceNumber: 100 + b * 50 + k })),
    );
    const results = await Promise.all(batches.map((b) => post(b.map((i) => i.bytes))));
    expect(results.map((r) => r.status)).toEqual(new Array(8).fill(200));

    const row = await studyRow(study);
    expect(row.num_instances).toBe(430);
    expect(row.num_series).toBe(3);
    const is = await imagingStudy(study);
    expect(is.numberOfInstances).toBe(430);
    const uids = is.series.flatMap((s) => s.instance.map((i) => i.uid));
    expect(new Set(uids).size).toBe(430);
    const expected = [...seed, ...batches.flat()].map((i) => i.sopInstanceUID);
    expect([...uids].sort()).toEqual([...expected].sort());
    const perSeries = await t.app.db.knex('series').where({ study_pk: row.id }).orderBy('series_uid');
    for (const s of is.series) {
      const db = perSeries.find((x: { series_uid: string }) => x.series_uid === s.uid);
      expect(s.numberOfInstances).toBe(db.num_instances);
      expect(s.instance).toHaveLength(db.num_instances);
    }
  });

  test('one request with two studies of one patient, two series each: exact counts, one Patient', async () => {
    const patientID = `BATCH-${newUid().slice(-8)}`;
    const studies = [newUid(), newUid()];
    const series = [newUid(), newUid(), newUid(), newUid()];
    const parts = Array.from({ length: 12 }, (_, n) =>
      small({ studyInstanceUID: studies[n % 2], seriesInstanceUID: series[n % 4], instanceNumber: n, patientID }),
    );
    expect((await post(parts.map((i) => i.bytes))).status).toBe(200);
    const patients = await t.app.db.knex('patients').where({ patient_id: patientID });
    expect(patients).toHaveLength(1);
    const subjects = new Set<string>();
    for (const uid of studies) {
      const row = await studyRow(uid);
      expect(row.patient_pk).toBe(patients[0].id);
      expect(row.num_series).toBe(2);
      expect(row.num_instances).toBe(6);
      const is = (await imagingStudy(uid)) as unknown as { numberOfInstances: number; subject: { reference: string } };
      expect(is.numberOfInstances).toBe(6);
      subjects.add(is.subject.reference);
    }
    expect(subjects.size).toBe(1);
  });

  test('instances of one study naming two patients in one request are all stored under the study', async () => {
    const study = newUid();
    const [first, second] = [`P-${newUid().slice(-8)}`, `Q-${newUid().slice(-8)}`].sort();
    const a = small({ studyInstanceUID: study, patientID: first });
    const b = small({ studyInstanceUID: study, patientID: second });
    const c = small({ studyInstanceUID: newUid(), patientID: second });
    const res = await post([a.bytes, b.bytes, c.bytes]);
    expect(res.status).toBe(200);
    expect(referenced(res.body)).toHaveLength(3);
    expect((await studyRow(study)).num_instances).toBe(2);
    expect((await studyRow(study)).num_series).toBe(2);
    const other = await studyRow(c.studyInstanceUID);
    const owner = await t.app.db.knex('patients').where({ id: other.patient_pk }).first();
    expect(owner.patient_id).toBe(second);
  });

  test('every blob of a batch is claimed in the ledger', async () => {
    const study = newUid();
    const batch = Array.from({ length: 30 }, (_, n) => small({ studyInstanceUID: study, instanceNumber: n }));
    expect((await post(batch.map((i) => i.bytes))).status).toBe(200);
    const keys = batch.map((i) => sha256(i.bytes));
    const ledger = await t.app.db.knex('blobs').whereIn('key', keys);
    expect(ledger).toHaveLength(30);
    for (const r of ledger) expect(Number(r.size)).toBe(batch[keys.indexOf(r.key)].bytes.length);
  });

  test('NUL characters in header strings are dropped from the stored JSON, not refused', async () => {
    const study = newUid();
    const inst = small({ studyInstanceUID: study, seriesDescription: 'Axial\u0000', studyDescription: 'Head\u0000' });
    const other = small({ studyInstanceUID: study });
    const res = await post([inst.bytes, other.bytes]);
    expect(res.status).toBe(200);
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID }).first();
    expect(JSON.stringify(row.dataset)).not.toContain('\\u0000');
    expect(row.dataset['0008103E'].Value[0]).toBe('Axial');
  });
});
