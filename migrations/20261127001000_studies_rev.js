/**
 * A revision number for each study's result text (issue 3): `studies.rev` grows by one whenever
 * `qido_json` or `study_uid` of the row changes, so that a server process may keep the bytes of a
 * study's result and know, from one bigint read with the page, whether they are still the row's
 * (src/dicomweb/study-result-cache.ts). The number comes from the row, not from any process, so
 * every process serving the same database agrees on it; study ids are never reused, so (id, rev)
 * names one version of one study's text.
 *
 * A BEFORE UPDATE trigger of its own bumps it (named after studies_qido_json, so it runs after
 * that one has written the new text: PostgreSQL fires triggers of one event in name order), on
 * the same columns plus study_uid (RetrieveURL is made from it). New rows start at 0. Adding a
 * NOT NULL column with a constant default is a catalogue change only.
 *
 * The covering page index studies_qido_page_idx (20261125001000) gets `rev` as well, so that the
 * study list by date can read the ids and revisions of a page from the index alone, without
 * the texts. It is built anew under the same name (same key, predicate and other columns;
 * 1.4 s at 100,000 studies; writes to studies wait meanwhile).
 */
const FITS = 'octet_length(qido_json) + octet_length(study_uid) + coalesce(octet_length(study_time), 0) <= 2400';
const ORDER = 'study_date DESC NULLS LAST, study_time DESC NULLS LAST, id DESC';

async function rebuildPageIndex(knex, included) {
  await knex.raw(`CREATE INDEX studies_qido_page_next_idx ON studies (${ORDER}) INCLUDE (${included}) WHERE ${FITS}`);
  await knex.raw('DROP INDEX studies_qido_page_idx');
  await knex.raw('ALTER INDEX studies_qido_page_next_idx RENAME TO studies_qido_page_idx');
}

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('ALTER TABLE studies ADD COLUMN rev bigint NOT NULL DEFAULT 0');
  await knex.raw(`CREATE FUNCTION studies_rev() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  NEW.rev := OLD.rev;
  IF NEW.qido_json IS DISTINCT FROM OLD.qido_json OR NEW.study_uid IS DISTINCT FROM OLD.study_uid THEN
    NEW.rev := OLD.rev + 1;
  END IF;
  RETURN NEW;
END
$fn$`);
  await knex.raw(`CREATE TRIGGER studies_rev BEFORE UPDATE OF dataset, modalities, num_series, num_instances, qido_json, study_uid, rev
    ON studies FOR EACH ROW EXECUTE FUNCTION studies_rev()`);
  await rebuildPageIndex(knex, 'study_uid, qido_json, rev');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await rebuildPageIndex(knex, 'study_uid, qido_json');
  await knex.raw('DROP TRIGGER IF EXISTS studies_rev ON studies');
  await knex.raw('DROP FUNCTION IF EXISTS studies_rev()');
  await knex.raw('ALTER TABLE studies DROP COLUMN IF EXISTS rev');
};
