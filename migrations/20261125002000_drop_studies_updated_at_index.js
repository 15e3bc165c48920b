/**
 * Drops the B-tree index on studies.updated_at: no query reads it (nothing in the server
 * searches or sorts studies by updated_at), and it cost every STOW a non-HOT update of the
 * study row. A STOW adds its instances to the study's counts and bumps updated_at; with
 * updated_at indexed, PostgreSQL cannot make that update a heap-only tuple (HOT) update, so each
 * one inserted a new entry into all 28 indexes of studies (7 of them GIN) instead of none.
 * Without it the update is HOT whenever the page has room (measured: 0 of ~270 -> ~85% HOT
 * over 300 one-row updates, backend CPU per update transaction ~1.05 -> ~0.75 ms).
 * The column itself stays and is kept as before.
 *
 * Note: studies_qido_page_idx (20261125001000) holds qido_json, which the count update also
 * changes (the counts are part of the text), so while that index exists the update is not HOT
 * after all; measured together (bench/stow.ts --phases a, one instance per request at
 * concurrency 8) the covering index costs about 0.3 ms of PostgreSQL CPU per STOW into a known
 * study and saves about 3 ms per 30-day QIDO page. This drop still saves one index entry per
 * update.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('DROP INDEX IF EXISTS studies_updated_at_index');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw('CREATE INDEX IF NOT EXISTS studies_updated_at_index ON studies (updated_at)');
};
