/**
 * The reverse map of de-identified UIDs (PS3.15 E.3.9 without Retain UIDs): per project, which
 * original Study, Series and SOP Instance UID a `2.25.` UID stands for, so a researcher's QIDO
 * and WADO requests on de-identified UIDs find the stored instances. Recorded when a study is
 * linked to a project (the ingest hook) and backfilled for links made any other way.
 */
import type { Knex } from 'knex';
import { keyedStatement, preparedRaw, singleKeys } from '../db/prepared-statement';
import type { ResolvedUid } from './privacy-types';
import { deidentifyUid } from './uid-map';

type Db = Knex | Knex.Transaction;

/** The level of a recorded UID. */
export type UidLevel = 'study' | 'series' | 'instance';

const CHUNK = 1000;

interface UidRow {
  project_id: string;
  deid_uid: string;
  uid: string;
  level: UidLevel;
}

async function insertRows(db: Db, rows: UidRow[]): Promise<number> {
  let written = 0;
  for (let i = 0; i < rows.length; i += CHUNK) {
    const result = (await db('deid_uids').insert(rows.slice(i, i + CHUNK)).onConflict(['project_id', 'deid_uid']).ignore().returning(['deid_uid'])) as unknown[];
    written += result.length;
  }
  return written;
}

function rowsFor(key: Buffer, projects: readonly string[], uids: Array<{ uid: string; level: UidLevel }>): UidRow[] {
  const out: UidRow[] = [];
  for (const project_id of projects) {
    for (const { uid, level } of uids) out.push({ project_id, deid_uid: deidentifyUid(key, project_id, uid), uid, level });
  }
  return out;
}

async function linkedProjects(db: Db, studyPk: number, only?: readonly string[]): Promise<string[]> {
  const q = db('project_studies').where('study_pk', studyPk);
  if (only) q.whereIn('project_id', [...only]);
  return (await q.pluck('project_id')) as string[];
}

/** The UIDs of a study in one round trip; `onlyNew`: the series and instances this transaction inserted. */
async function studyUids(db: Db, studyPk: number, onlyNew: boolean): Promise<Array<{ uid: string; level: UidLevel }>> {
  // created_at defaults to now(), the start of the current transaction: rows it inserted.
  const fresh = onlyNew ? 'AND created_at >= now()' : '';
  const result = await db.raw(
    `${onlyNew ? '' : `SELECT study_uid AS uid, 'study' AS level FROM studies WHERE id = ? UNION ALL `}
     SELECT series_uid AS uid, 'series' AS level FROM series WHERE study_pk = ? ${fresh}
     UNION ALL SELECT sop_instance_uid AS uid, 'instance' AS level FROM instances WHERE study_pk = ? ${fresh}`,
    onlyNew ? [studyPk, studyPk] : [studyPk, studyPk, studyPk],
  );
  return result.rows as Array<{ uid: string; level: UidLevel }>;
}

/**
 * Records every UID of the studies for the projects holding them (all of them, or those of
 * `projectIds` that hold them). Idempotent. Returns the number of rows added.
 */
export async function recordStudyUids(db: Db, key: Buffer, studyPks: readonly number[], projectIds?: readonly string[]): Promise<number> {
  let written = 0;
  for (const pk of [...new Set(studyPks.map(Number))]) {
    const projects = await linkedProjects(db, pk, projectIds);
    if (projects.length === 0) continue;
    written += await insertRows(db, rowsFor(key, projects, await studyUids(db, pk, false)));
  }
  return written;
}

/**
 * The ingest variant (in the STOW transaction): a study already recorded for a project gets
 * only the series and instances this transaction inserted; a study new to a project gets all.
 */
export async function recordChangedStudyUids(trx: Knex.Transaction, key: Buffer, studyPks: readonly number[], preread?: StudyLink[]): Promise<void> {
  const pks = [...new Set(studyPks.map(Number))];
  if (pks.length === 0) return;
  // One round trip: every (study, project) link of the change, and whether its study UID is recorded yet.
  const links = preread ?? ((singleKeys(pks) ? await preparedRaw(trx, STUDY_LINKS.one, [pks[0]]) : await preparedRaw(trx, STUDY_LINKS.many, [pks])).rows as StudyLink[]);
  const rows: UidRow[] = [];
  for (const pk of pks) {
    const mine = links.filter((l) => Number(l.id) === pk);
    const fresh = mine.filter((l) => !l.recorded).map((l) => l.project_id);
    const known = mine.filter((l) => l.recorded).map((l) => l.project_id);
    if (fresh.length > 0) rows.push(...rowsFor(key, fresh, await studyUids(trx, pk, false)));
    if (known.length > 0) rows.push(...rowsFor(key, known, await studyUids(trx, pk, true)));
  }
  await insertRows(trx, rows);
}

/** A (study, project) link and whether the study's UID is recorded for that project yet (a row of STUDY_LINKS). */
export interface StudyLink {
  id: string | number;
  study_uid: string;
  project_id: string;
  recorded: boolean;
}

/** Whether a study's UID is recorded for a project, as an SQL expression over `st` (studies) and `ps` (project_studies). */
export const STUDY_UID_RECORDED_SQL = `EXISTS (SELECT 1 FROM deid_uids d WHERE d.uid = st.study_uid AND d.project_id = ps.project_id AND d.level = 'study')`;

/** Every (study, project) link of some studies, and whether the study's UID is recorded for that project yet. */
const STUDY_LINKS = keyedStatement(`SELECT st.id, st.study_uid, ps.project_id,
    ${STUDY_UID_RECORDED_SQL} AS recorded
  FROM studies st JOIN project_studies ps ON ps.study_pk = st.id
  WHERE st.id {keys}`);

/**
 * Records the UIDs of every (project, study) link that has none yet: links made before this
 * code ran or outside the ingest hook. One anti-join over project_studies when nothing is missing.
 */
export async function backfillDeidUids(db: Db, key: Buffer, projectIds?: readonly string[]): Promise<{ studies: number; rows: number }> {
  const q = db('project_studies as ps')
    .join('studies as st', 'st.id', 'ps.study_pk')
    .whereNotExists(function recorded(this: Knex.QueryBuilder) {
      this.select(db.raw('1')).from('deid_uids as d').whereRaw('d.uid = st.study_uid').whereRaw('d.project_id = ps.project_id').where('d.level', 'study');
    })
    .select('ps.project_id', 'ps.study_pk');
  if (projectIds) q.whereIn('ps.project_id', [...projectIds]);
  const missing = (await q) as Array<{ project_id: string; study_pk: string | number }>;
  const byStudy = new Map<number, string[]>();
  for (const m of missing) {
    const pk = Number(m.study_pk);
    byStudy.set(pk, [...(byStudy.get(pk) ?? []), m.project_id]);
  }
  let rows = 0;
  for (const [pk, projects] of byStudy) rows += await insertRows(db, rowsFor(key, projects, await studyUids(db, pk, false)));
  return { studies: byStudy.size, rows };
}

/**
 * Original UIDs of de-identified ones, within `projectIds`. A miss backfills those projects
 * once (studies linked outside the ingest hook) and looks again.
 */
export async function resolveDeidUids(db: Db, key: Buffer, projectIds: readonly string[], deidUids: readonly string[]): Promise<Map<string, ResolvedUid>> {
  const out = new Map<string, ResolvedUid>();
  const wanted = [...new Set(deidUids.map((u) => u.trim()))].filter((u) => /^2\.25\.\d{1,39}$/.test(u));
  if (wanted.length === 0 || projectIds.length === 0) return out;
  const lookup = async () => {
    const rows = await db('deid_uids').whereIn('project_id', [...projectIds]).whereIn('deid_uid', wanted).select('project_id', 'deid_uid', 'uid');
    for (const r of rows) out.set(r.deid_uid, { uid: r.uid, projectId: r.project_id });
  };
  await lookup();
  if (out.size < wanted.length) {
    const added = await backfillDeidUids(db, key, projectIds);
    if (added.rows > 0) await lookup();
  }
  return out;
}
