import type { Knex } from 'knex';
import { withTransaction } from './database';
import { refreshAggregates, type OnIndexChange } from './instance-index';
import { applyStudyRestriction, type RetrieveTarget, type StudyRestriction } from './wado-index';

/** What a delete removed from the index. */
export interface DeleteOutcome {
  instances: number;
  /** Superseded versions of those instances removed with them. */
  versions: number;
  /** Blobs the removed rows referenced; the orphan sweeper decides which are now unreferenced. */
  blobKeys: string[];
}

/**
 * Removes a study, series or instance from the index in ONE transaction: the instance rows,
 * their superseded versions (a delete erases history too), then the emptied series, studies
 * and patients, with exact aggregates for what remains. Blobs are never deleted here: their
 * ledger rows are re-dated so the orphan sweeper removes the unreferenced ones only after the
 * grace period (a retrieve still streaming them keeps working), and never one another row uses.
 * Locks the study row first, as ingest does, so the two cannot deadlock. Null when the target
 * does not exist (or is outside `restrict`).
 */
export async function deleteIndexedInstances(
  knex: Knex,
  target: RetrieveTarget,
  restrict?: StudyRestriction,
  onChange?: OnIndexChange,
): Promise<DeleteOutcome | null> {
  return withTransaction(knex, async (trx) => {
    const studyQuery = trx('studies as st').where('st.study_uid', target.studyInstanceUID).forUpdate();
    if (restrict) applyStudyRestriction(trx, studyQuery, 'st.id', restrict);
    const study = await studyQuery.first('st.id', 'st.patient_pk');
    if (!study) return null;
    const studyPk = Number(study.id);

    const instanceQuery = trx('instances as i')
      .join('series as se', 'se.id', 'i.series_pk')
      .where('i.study_pk', studyPk)
      .orderBy('i.sop_instance_uid')
      .forUpdate('i');
    if (target.seriesInstanceUID !== undefined) instanceQuery.where('se.series_uid', target.seriesInstanceUID);
    if (target.sopInstanceUID !== undefined) instanceQuery.where('i.sop_instance_uid', target.sopInstanceUID);
    const rows: Array<{ id: string; series_pk: string; sop_instance_uid: string; blob_key: string }> = await instanceQuery.select(
      'i.id',
      'i.series_pk',
      'i.sop_instance_uid',
      'i.blob_key',
    );
    if (rows.length === 0) return null;

    const uids = rows.map((r) => r.sop_instance_uid);
    const versions: Array<{ blob_key: string }> = await trx('instance_versions').whereIn('sop_instance_uid', uids).delete().returning('blob_key');
    await trx('instances').whereIn('id', rows.map((r) => r.id)).delete();
    const seriesPks = [...new Set(rows.map((r) => Number(r.series_pk)))];
    const removedStudies = await refreshAggregates(trx, seriesPks, [studyPk]);
    await onChange?.(trx, { studyPks: removedStudies.length > 0 ? [] : [studyPk], removedStudies });
    await trx.raw(
      `DELETE FROM patients p WHERE p.id = ? AND NOT EXISTS (SELECT 1 FROM studies s WHERE s.patient_pk = p.id)`,
      [study.patient_pk],
    );
    const blobKeys = [...new Set([...rows.map((r) => r.blob_key), ...versions.map((v) => v.blob_key)])];
    // The grace period of the sweeper counts from the delete, not from the ingest.
    await trx.raw(`UPDATE blobs SET claimed_at = now() WHERE key = ANY(?::text[])`, [blobKeys]);
    return { instances: rows.length, versions: versions.length, blobKeys };
  });
}
