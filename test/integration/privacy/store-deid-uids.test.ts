/**
 * The reverse map of de-identified UIDs (PS3.15 E.3.9): recorded at STOW for the study's
 * projects, resolved only within the asked projects, backfilled for links made outside the
 * ingest hook (at start, on a miss, and by `imaging-lake privacy backfill`).
 */
import { newUid } from '../../../src/generate/synthetic-dicom';
import { linkStudyToProjects } from '../../../src/auth/project-store';
import pino from 'pino';
import { createApp, shutdownApp } from '../../../src/app';
import { ensureAuditPartitions } from '../../../src/audit/audit-store';
import { loadConfig } from '../../../src/config';
import { main } from '../../../src/main';
import { deidentifyUid } from '../../../src/privacy/uid-map';
import { startTestApp, type TestApp } from '../../helpers/test-app';
import { randomMrn, stowInto } from './store-helpers';

describe('privacy store: de-identified UIDs', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });
  const knex = () => t.app.db.knex;

  test('a STOW records study, series and instance UIDs for its project, and they resolve there only', async () => {
    const inst = await stowInto(t, 'uid-a', { patientID: randomMrn() });
    const map = t.app.privacy.uidMapper('uid-a');
    const deid = [inst.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID].map(map);
    for (const d of deid) expect(d).toMatch(/^2\.25\.\d+$/);
    const resolved = await t.app.privacy.resolveDeidUids(knex(), ['uid-a'], deid);
    expect(resolved.get(deid[0])).toEqual({ uid: inst.studyInstanceUID, projectId: 'uid-a' });
    expect(resolved.get(deid[1])).toEqual({ uid: inst.seriesInstanceUID, projectId: 'uid-a' });
    expect(resolved.get(deid[2])).toEqual({ uid: inst.sopInstanceUID, projectId: 'uid-a' });
    const levels = await knex()('deid_uids').where('project_id', 'uid-a').whereIn('deid_uid', deid).pluck('level');
    expect(levels.sort()).toEqual(['instance', 'series', 'study']);
    // Another project's token finds nothing, and the original UID itself is not a de-identified one.
    expect((await t.app.privacy.resolveDeidUids(knex(), ['uid-b'], deid)).size).toBe(0);
    expect((await t.app.privacy.resolveDeidUids(knex(), ['uid-a'], [inst.studyInstanceUID])).size).toBe(0);
  });

  test('the same study in two projects maps to different UIDs; each project resolves its own', async () => {
    const study = newUid();
    const a = await stowInto(t, 'uid-a', { studyInstanceUID: study, patientID: randomMrn() });
    // An admin STOW into another project links the study there (a second instance, same study).
    const b = await stowInto(t, 'uid-b', { studyInstanceUID: study, seriesInstanceUID: a.seriesInstanceUID, patientID: 'x' });
    const da = t.app.privacy.uidMapper('uid-a')(study);
    const db = t.app.privacy.uidMapper('uid-b')(study);
    expect(da).not.toBe(db);
    expect((await t.app.privacy.resolveDeidUids(knex(), ['uid-b'], [db])).get(db)?.uid).toBe(study);
    // The instance stored before the study joined project B resolves for B too.
    const first = t.app.privacy.uidMapper('uid-b')(a.sopInstanceUID);
    const second = t.app.privacy.uidMapper('uid-b')(b.sopInstanceUID);
    const resolved = await t.app.privacy.resolveDeidUids(knex(), ['uid-b'], [first, second]);
    expect(resolved.get(first)?.uid).toBe(a.sopInstanceUID);
    expect(resolved.get(second)?.uid).toBe(b.sopInstanceUID);
  });

  test('later instances of a recorded study are recorded too', async () => {
    const a = await stowInto(t, 'uid-a', { patientID: randomMrn() });
    const b = await stowInto(t, 'uid-a', { studyInstanceUID: a.studyInstanceUID, patientID: 'y' });
    const map = t.app.privacy.uidMapper('uid-a');
    const rows = await knex()('deid_uids').where('project_id', 'uid-a').whereIn('deid_uid', [map(b.sopInstanceUID), map(b.seriesInstanceUID)]).count<{ count: string }[]>('* as count');
    expect(Number(rows[0].count)).toBe(2);
  });

  test('a study linked to a project outside the ingest hook resolves after a miss (lazy backfill)', async () => {
    const inst = await stowInto(t, 'uid-a', { patientID: randomMrn() });
    await knex()('projects').insert({ id: 'uid-late', name: 'uid-late' }).onConflict('id').ignore();
    const pk = (await knex()('studies').where('study_uid', inst.studyInstanceUID).first('id')).id;
    await linkStudyToProjects(knex(), pk, ['uid-late']);
    const d = t.app.privacy.uidMapper('uid-late')(inst.sopInstanceUID);
    expect((await knex()('deid_uids').where({ project_id: 'uid-late', deid_uid: d })).length).toBe(0);
    expect((await t.app.privacy.resolveDeidUids(knex(), ['uid-late'], [d])).get(d)).toEqual({ uid: inst.sopInstanceUID, projectId: 'uid-late' });
  });

  test('recordStudyUids records only for projects that hold the study', async () => {
    const inst = await stowInto(t, 'uid-a', { patientID: randomMrn() });
    const pk = Number((await knex()('studies').where('study_uid', inst.studyInstanceUID).first('id')).id);
    await t.app.privacy.recordStudyUids(knex(), [pk], ['uid-b']);
    const d = t.app.privacy.uidMapper('uid-b')(inst.studyInstanceUID);
    expect((await knex()('deid_uids').where({ project_id: 'uid-b', deid_uid: d })).length).toBe(0);
  });

  test('`imaging-lake privacy backfill` records links and keys that predate it', async () => {
    const inst = await stowInto(t, 'uid-a', { patientID: randomMrn() });
    const study = await knex()('studies').where('study_uid', inst.studyInstanceUID).first('id', 'patient_pk');
    // As if the study and its patient had been stored before the privacy tables existed.
    await knex()('deid_uids').where('project_id', 'uid-a').whereIn('uid', [inst.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID]).delete();
    await knex()('patients').where('id', study.patient_pk).update({ patient_key_id: null });
    const out: string[] = [];
    const write = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    try {
      await main(['node', 'imaging-lake', 'privacy', 'backfill'], { DATA_DIR: t.dataDir, DATABASE_URL: t.databaseUrl, LOG_LEVEL: 'silent' });
    } finally {
      write.mockRestore();
    }
    const report = JSON.parse(out.join('').trim().split('\n').pop()!);
    expect(report.studies).toBeGreaterThanOrEqual(1);
    expect(report.rows).toBeGreaterThanOrEqual(3);
    expect(report.patients).toBeGreaterThanOrEqual(1);
    const d = deidentifyUid(Buffer.from(require('node:fs').readFileSync(`${t.dataDir}/keys/privacy.key`, 'utf8').trim(), 'hex'), 'uid-a', inst.sopInstanceUID);
    expect(d).toBe(t.app.privacy.uidMapper('uid-a')(inst.sopInstanceUID));
    expect((await knex()('deid_uids').where({ project_id: 'uid-a', deid_uid: d }).first('uid'))?.uid).toBe(inst.sopInstanceUID);
    expect((await knex()('patients').where('id', study.patient_pk).first('patient_key_id')).patient_key_id).not.toBeNull();
    // Nothing missing: a second run records nothing.
    expect(await t.app.privacy.backfill(knex())).toEqual({ patients: 0, studies: 0, rows: 0 });
  });

  test('createApp backfills at start: a link with no recorded UIDs resolves right after start', async () => {
    const inst = await stowInto(t, 'uid-a', { patientID: randomMrn() });
    await knex()('deid_uids').where('project_id', 'uid-a').where('uid', inst.studyInstanceUID).delete();
    const second = await createApp(loadConfig({ DATA_DIR: t.dataDir, DATABASE_URL: t.databaseUrl, LOG_LEVEL: 'silent', SWEEP_INTERVAL_SECONDS: '0' }), { logger: pino({ level: 'silent' }) });
    try {
      const d = second.privacy.uidMapper('uid-a')(inst.studyInstanceUID);
      expect((await knex()('deid_uids').where({ project_id: 'uid-a', deid_uid: d }).first('uid'))?.uid).toBe(inst.studyInstanceUID);
    } finally {
      // The second app's start-up partition check runs in the background: let it finish before closing its pool.
      await ensureAuditPartitions(second.db.knex);
      await shutdownApp(second);
    }
  });
});
