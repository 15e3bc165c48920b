import { createHash } from 'node:crypto';
import { makeInstance, retrieveInstance, runPool, searchStudies, storedInstances, WriteLedger, type SentInstance } from '../../helpers/fault-client';
import { aggregateMismatches, danglingRows, duplicateRows, openIndex } from '../../helpers/fault-check';
import { createFaultEnv, report, type FaultEnv, type FaultServer } from '../../helpers/fault-server';
import { createRng, seededUid } from '../../helpers/fuzz-dicom';
import { testBlobKind } from '../../helpers/test-app';

/**
 * Two server processes on one PostgreSQL database and one blob store (the same DATA_DIR store,
 * or the same s3rver bucket under TEST_BLOBS=s3), taking concurrent STOW requests of
 * overlapping studies: each study split across both, some instances sent to both at once,
 * and some SOP Instance UIDs sent to both at once with different bytes. Aggregates must equal
 * counts from the instance rows, no row is duplicated, and every instance reads back
 * byte-identical through either process.
 */
const SEED = 4242;
const PER_SERIES = 30;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('scale-out: two processes, one database, one store', () => {
  let envA: FaultEnv;
  let envB: FaultEnv;
  let a: FaultServer;
  let b: FaultServer;

  beforeAll(async () => {
    envA = await createFaultEnv({ db: 'postgres', blobs: testBlobKind() });
    envB =
      envA.blobKind === 's3'
        ? await createFaultEnv({ databaseUrl: envA.databaseUrl, s3: envA.s3 })
        : await createFaultEnv({ databaseUrl: envA.databaseUrl, dataDir: envA.dataDir, blobs: 'fs' });
    // A first (it migrates), then B on the migrated schema.
    a = await envA.start();
    b = await envB.start();
  }, 120_000);

  afterAll(async () => {
    await envB?.close();
    await envA?.close();
  });

  test('concurrent overlapping STOWs through both: exact aggregates, no duplicates, byte-identical through either', async () => {
    const rng = createRng(SEED);
    const servers = [a, b];
    // 3 studies x 2 series x 30 instances; patient per study.
    const instances: SentInstance[] = [];
    const studies: Array<{ uid: string; series: string[] }> = [];
    for (let st = 0; st < 3; st++) {
      const study = { uid: seededUid(rng), series: [seededUid(rng), seededUid(rng)] };
      studies.push(study);
      for (const [k, series] of study.series.entries()) {
        for (let i = 0; i < PER_SERIES; i++) {
          instances.push(
            makeInstance({
              studyInstanceUID: study.uid,
              seriesInstanceUID: series,
              sopInstanceUID: seededUid(rng),
              patientID: `SCALE-${st}`,
              modality: k === 0 ? 'CT' : 'MR',
              instanceNumber: i + 1,
              seed: st * 1000 + k * 100 + i,
            }),
          );
        }
      }
    }
    // Same UID, different bytes, sent to both processes at once (one wins, the other is kept as a version).
    const conflicts = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => {
      const first = instances[i * 17];
      const second = makeInstance({
        studyInstanceUID: first.studyInstanceUID,
        seriesInstanceUID: first.seriesInstanceUID,
        sopInstanceUID: first.sopInstanceUID,
        patientID: `SCALE-${Math.floor((i * 17) / (2 * PER_SERIES))}`,
        modality: (i * 17) % (2 * PER_SERIES) < PER_SERIES ? 'CT' : 'MR',
        seed: 99_000 + i,
      });
      return { first, second };
    });
    const conflictUids = new Set(conflicts.map((c) => c.first.sopInstanceUID));

    // Requests: shuffled batches of 1-4 to a random process; every 5th batch to both at once.
    // (The raced UIDs go only through their race, so each ends as exactly two versions.)
    const order = instances.filter((i) => !conflictUids.has(i.sopInstanceUID)).sort(() => rng() - 0.5);
    type Job = Array<{ server: FaultServer; batch: SentInstance[] }>;
    const jobs: Job[] = [];
    for (let i = 0; i < order.length; ) {
      const n = 1 + Math.floor(rng() * 4);
      const batch = order.slice(i, i + n);
      i += n;
      if (jobs.length % 5 === 0) jobs.push([{ server: a, batch }, { server: b, batch }]);
      else jobs.push([{ server: servers[Math.floor(rng() * 2)], batch }]);
    }
    for (const c of conflicts) jobs.push([{ server: a, batch: [c.first] }, { server: b, batch: [c.second] }]);
    jobs.sort(() => rng() - 0.5);

    const ledger = new WriteLedger();
    const warnings: string[] = [];
    await runPool(jobs, 16, async (job) => {
      const answers = await Promise.all(job.map((j) => ledger.send(j.server.baseUrl, j.batch)));
      for (const r of answers) for (const s of storedInstances(r.body)) if (s.warning) warnings.push(s.sopInstanceUID);
    });
    // Everything stored: 200, or 202 with a warning for the different-bytes races only.
    const notOk = ledger.answers.filter((x) => x.status !== 200 && !(x.status === 202 && x.uids.every((u) => conflictUids.has(u))));
    expect(notOk).toEqual([]);
    expect(warnings.filter((u) => !conflictUids.has(u))).toEqual([]);
    report('scale-out', { requests: ledger.answers.length, statuses: ledger.statusCounts(), conflictsWarned: warnings.length });

    const view = await openIndex(envA.config);
    try {
      expect(await aggregateMismatches(view.knex)).toEqual([]);
      expect(await duplicateRows(view.knex)).toEqual([]);
      expect(await danglingRows(view)).toEqual([]);
      // The counts are the ones sent: 2 series per study, their instances, and nothing else indexed.
      const rows: Array<{ study_uid: string; num_series: number; num_instances: number; modalities: string[] }> = await view
        .knex('studies')
        .whereIn('study_uid', studies.map((s) => s.uid))
        .select('study_uid', 'num_series', 'num_instances', 'modalities');
      expect(rows.map((r) => [r.study_uid, Number(r.num_series), Number(r.num_instances), r.modalities]).sort()).toEqual(
        studies.map((s) => [s.uid, 2, 2 * PER_SERIES, ['CT', 'MR']]).sort(),
      );
      expect(Number((await view.knex('instances').count({ n: '*' }))[0].n)).toBe(instances.length);
      // Each race of different bytes: one current row, the other bytes kept as one older version.
      for (const c of conflicts) {
        const row = await view.knex('instances').where({ sop_instance_uid: c.first.sopInstanceUID }).first('blob_key', 'version');
        const versions: string[] = await view.knex('instance_versions').where({ sop_instance_uid: c.first.sopInstanceUID }).pluck('blob_key');
        expect([row.blob_key, ...versions].sort()).toEqual([sha(c.first.bytes), sha(c.second.bytes)].sort());
        expect(Number(row.version)).toBe(2);
      }
    } finally {
      await view.close();
    }

    // Byte-identical through either process (the current version for the races).
    const current = new Map(instances.map((i) => [i.sopInstanceUID, i]));
    const problems: string[] = [];
    {
      const v = await openIndex(envA.config);
      for (const c of conflicts) {
        const key = (await v.knex('instances').where({ sop_instance_uid: c.first.sopInstanceUID }).first('blob_key')).blob_key;
        current.set(c.first.sopInstanceUID, sha(c.first.bytes) === key ? c.first : c.second);
      }
      await v.close();
    }
    await runPool([...current.values()].flatMap((i) => [{ i, s: a }, { i, s: b }]), 8, async ({ i, s }) => {
      const got = await retrieveInstance(s.baseUrl, { study: i.studyInstanceUID, series: i.seriesInstanceUID, instance: i.sopInstanceUID });
      if (got.status !== 200 || !got.bytes?.equals(i.bytes)) problems.push(`${s.baseUrl} ${i.sopInstanceUID}: ${got.status}`);
    });
    expect(problems).toEqual([]);

    // QIDO through either process agrees on the study-level counts.
    for (const s of servers) {
      for (const [k, study] of studies.entries()) {
        const q = await searchStudies(s.baseUrl, { PatientID: `SCALE-${k}`, includefield: '00201206,00201208' });
        expect(q.status).toBe(200);
        const hit = (q.json as Array<Record<string, { Value?: unknown[] }>>).find((x) => x['0020000D']?.Value?.[0] === study.uid);
        expect([hit?.['00201206']?.Value?.[0], hit?.['00201208']?.Value?.[0]]).toEqual([2, 2 * PER_SERIES]);
      }
    }
    expect([...a.errorLines(), ...b.errorLines()]).toEqual([]);
  }, 180_000);
});
