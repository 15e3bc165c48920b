import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

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

  const blobCount = async () => Number((await t.app.db.knex('blobs').count({ n: '*' }))[0].n);
  const waitFor = async (done: () => Promise<boolean>) => {
    for (let i = 0; i < 400 && !(await done()); i++) await new Promise((r) => setTimeout(r, 25));
  };
  /**
   * Posts `parts` (one instance each) into study `st` while its row is locked here: the first is
   * indexed at once and waits for the lock, the others queue behind it in the server. Then the
   * lock is released and the answers returned, in the order of `parts`.
   */
  const postBehindFirst = async (st: string, parts: Buffer[]): Promise<request.Response[]> => {
    const holder = await t.app.db.knex.transaction();
    let answers: Promise<request.Response[]> | undefined;
    try {
      await holder('studies').where({ study_uid: st }).forUpdate().first('id');
      const before = await blobCount();
      // One base URL for all (supertest listens on a new port per request; requests are grouped per base URL).
      const postHere = (part: Buffer) => post([part]).set('X-Forwarded-Host', 'lake.test').then((r) => r);
      const first = postHere(parts[0]!);
      await waitFor(async () => (await blobCount()) >= before + 1);
      const rest = parts.slice(1).map(postHere);
      await waitFor(async () => (await blobCount()) >= before + parts.length);
      // The last ones on to the index step (generous: another suite may be running beside this one).
      await new Promise((r) => setTimeout(r, 1_000));
      answers = Promise.all([first, ...rest]);
      await holder.commit();
      return await answers;
    } finally {
      if (!holder.isCompleted()) await holder.rollback();
      await answers?.catch(() => undefined);
    }
  };

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

  // Requests that arrive while another single-instance STOW into their study is being indexed are
  // indexed together afterwards, in one transaction, each with its own AuditEvent.
  (testDbKind() === 'postgres' ? test : test.skip)('single-instance STOWs into one study that wait for another are indexed together, each audited', async () => {
    const st = newUid();
    const se = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: 0 }).bytes])).status).toBe(200);
    const knex = t.app.db.knex;
    const instances = [1, 2, 3, 4].map((i) => small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: i }));
    for (const a of await postBehindFirst(st, instances.map((x) => x.bytes))) {
      expect(a.status).toBe(200);
      expect(a.body['00081199'].Value).toHaveLength(1);
    }
    const uids = instances.map((x) => x.sopInstanceUID);
    const rows = await knex('instances').whereIn('sop_instance_uid', uids).select(knex.raw('sop_instance_uid, xmin::text AS tx'));
    const tx = new Map(rows.map((r: { sop_instance_uid: string; tx: string }) => [r.sop_instance_uid, r.tx]));
    expect(new Set(uids.slice(1).map((u) => tx.get(u))).size).toBe(1);
    expect(tx.get(uids[0]!)).not.toBe(tx.get(uids[1]!));
    expect(await study(st)).toMatchObject({ num_series: 1, num_instances: 5 });
    expect((await series(se)).num_instances).toBe(5);
    const audits = await knex.raw(`SELECT count(DISTINCT request_id)::int AS n FROM audit_events WHERE subtype_code = 'create' AND ? = ANY(entity)`, [st]);
    expect(audits.rows[0].n).toBe(5);
  });

  // The group is per process, not per study: requests into other studies that reach the index while
  // a transaction is in progress share the next one, each with its own AuditEvent and exact counts.
  (testDbKind() === 'postgres' ? test : test.skip)('single-instance STOWs into different studies that wait for another are indexed together', async () => {
    const st = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: newUid(), instanceNumber: 0 }).bytes])).status).toBe(200);
    const knex = t.app.db.knex;
    const others = [1, 2, 3].map((i) => small({ studyInstanceUID: newUid(), seriesInstanceUID: newUid(), instanceNumber: i }));
    const first = small({ studyInstanceUID: st, seriesInstanceUID: newUid(), instanceNumber: 1 });
    const answers = await postBehindFirst(st, [first.bytes, ...others.map((x) => x.bytes)]);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.body['00081199'].Value).toHaveLength(1);
    }
    const uids = others.map((x) => x.sopInstanceUID);
    const rows = await knex('instances').whereIn('sop_instance_uid', [first.sopInstanceUID, ...uids]).select(knex.raw('sop_instance_uid, xmin::text AS tx'));
    const tx = new Map(rows.map((r: { sop_instance_uid: string; tx: string }) => [r.sop_instance_uid, r.tx]));
    expect(new Set(uids.map((u) => tx.get(u))).size).toBe(1);
    expect(tx.get(first.sopInstanceUID)).not.toBe(tx.get(uids[0]!));
    for (const x of others) {
      expect(await study(x.studyInstanceUID)).toMatchObject({ num_series: 1, num_instances: 1 });
      const audits = await knex.raw(`SELECT count(*)::int AS n FROM audit_events WHERE subtype_code = 'create' AND ? = ANY(entity)`, [x.studyInstanceUID]);
      expect(audits.rows[0].n).toBe(1);
    }
    expect(await study(st)).toMatchObject({ num_series: 2, num_instances: 2 });
  });

  // On either engine: many single-instance STOWs into as many studies at once, every one exact.
  test('concurrent single-instance STOWs into many studies are each stored, counted and audited once', async () => {
    const knex = t.app.db.knex;
    const parts = Array.from({ length: 16 }, (_, i) => small({ studyInstanceUID: newUid(), seriesInstanceUID: newUid(), instanceNumber: i }));
    const answers = await Promise.all(parts.map((x) => post([x.bytes]).set('X-Forwarded-Host', 'lake.test').then((r) => r)));
    for (const a of answers) expect(a.status).toBe(200);
    for (const x of parts) {
      expect(await study(x.studyInstanceUID)).toMatchObject({ num_series: 1, num_instances: 1 });
      const audits = await knex.raw(`SELECT count(*)::int AS n FROM audit_events WHERE subtype_code = 'create' AND ? = ANY(entity)`, [x.studyInstanceUID]);
      expect((audits.rows ?? audits)[0].n).toBe(1);
    }
  });

  // A group's transaction that fails for one request's instance (here: a trigger refusing its row, as
  // a constraint would) is not the others' failure: each request is indexed again on its own.
  (testDbKind() === 'postgres' ? test : test.skip)('one instance the index refuses in a group of waiting STOWs fails alone; the others are stored', async () => {
    const st = newUid();
    const se = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: 0 }).bytes])).status).toBe(200);
    const knex = t.app.db.knex;
    const instances = [1, 2, 3, 4].map((i) => small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: i }));
    const refused = instances[2]!.sopInstanceUID;
    const fn = `il_test_refuse_${Date.now()}`;
    await knex.raw(`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`);
    await knex.raw(`CREATE TRIGGER ${fn} BEFORE INSERT ON instances FOR EACH ROW WHEN (NEW.sop_instance_uid = '${refused}') EXECUTE FUNCTION ${fn}()`);
    try {
      const [a1, a2, a3, a4] = await postBehindFirst(st, instances.map((x) => x.bytes));
      for (const a of [a1!, a2!, a4!]) {
        expect(a.status).toBe(200);
        expect(a.body['00081199'].Value).toHaveLength(1);
      }
      expect(a3!.status).toBe(409);
      expect(a3!.body['00081198'].Value).toHaveLength(1);
      expect(a3!.body['00081198'].Value[0]['00081155'].Value).toEqual([refused]);
    } finally {
      await knex.raw(`DROP TRIGGER IF EXISTS ${fn} ON instances`);
      await knex.raw(`DROP FUNCTION IF EXISTS ${fn}()`);
    }
    const stored = await knex('instances').whereIn('sop_instance_uid', instances.map((x) => x.sopInstanceUID)).pluck('sop_instance_uid');
    expect(new Set(stored)).toEqual(new Set(instances.map((x) => x.sopInstanceUID).filter((u) => u !== refused)));
    expect(await study(st)).toMatchObject({ num_series: 1, num_instances: 4 });
    expect((await series(se)).num_instances).toBe(4);
  });

  // In the database, a statement that waited for the study row works on an older snapshot and has to
  // re-check its updates (EvalPlanQual): the server lets one transaction per study in at a time.
  (testDbKind() === 'postgres' ? test : test.skip)('concurrent single-instance STOWs into one study wait their turn in the server, one at a time in the database', async () => {
    const st = newUid();
    const se = newUid();
    expect((await post([small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: 0 }).bytes])).status).toBe(200);
    const knex = t.app.db.knex;
    const lockWaiters = async () =>
      Number((await knex.raw(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)).rows[0].n);
    const holder = await knex.transaction();
    let answers: Promise<request.Response[]> | undefined;
    try {
      await holder('studies').where({ study_uid: st }).forUpdate().first('id');
      const parts = [1, 2, 3].map((i) => small({ studyInstanceUID: st, seriesInstanceUID: se, instanceNumber: i }).bytes);
      const before = Number((await knex('blobs').count({ n: '*' }))[0].n);
      answers = Promise.all(parts.map((p) => post([p]).then((r) => r)));
      // Every part is claimed (and then linked) before it is indexed: wait for all three claims.
      for (let i = 0; i < 400 && Number((await knex('blobs').count({ n: '*' }))[0].n) < before + 3; i++) await new Promise((done) => setTimeout(done, 25));
      let most = 0;
      for (let i = 0; i < 20; i++) {
        most = Math.max(most, await lockWaiters());
        await new Promise((done) => setTimeout(done, 25));
      }
      expect(most).toBe(1);
      await holder.commit();
      for (const a of await answers) expect(a.status).toBe(200);
    } finally {
      if (!holder.isCompleted()) await holder.rollback();
      await answers?.catch(() => undefined);
    }
    expect(await study(st)).toMatchObject({ num_series: 1, num_instances: 4 });
    expect((await series(se)).num_instances).toBe(4);
  });
});
