/**
 * Finer statistics for token codes. A token search such as `Condition?code:below=H47.01` is
 * estimated from the (resource_type, param, code) MCV list and the code column's statistics;
 * with the default target (100 entries, 30,000 sampled rows) an ICD-10 code family that is 5% of
 * 1M Conditions is under 0.1% of the ~14M token rows, so whether it made the lists depended on
 * the sample: on the 1M-resource benchmark database, of four ANALYZE runs three estimated
 * 15,000-29,000 matches (the page then walks rids in order and stops: ~300 buffers, 1-25 ms) and
 * one estimated 336 (the plan then fetches and sorts all 50,000 matches: the 979 ms p50 of an
 * earlier benchmark run). At 1,000 the
 * estimate stayed at 22,000-23,000 over four runs. No index is built; ANALYZE samples 300,000
 * rows instead of 30,000 (about a minute on that table on a busy machine).
 */

const STATS = 'fhir_token_type_param_code_stats';

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('ALTER TABLE fhir_token ALTER COLUMN code SET STATISTICS 1000');
  await knex.raw(`ALTER STATISTICS ${STATS} SET STATISTICS 1000`);
  // The new targets only count from the next ANALYZE, which autovacuum may not run for a long
  // time on a large, slowly growing table.
  await knex.raw('ANALYZE fhir_token');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw(`ALTER STATISTICS ${STATS} SET STATISTICS -1`);
  await knex.raw('ALTER TABLE fhir_token ALTER COLUMN code SET STATISTICS -1');
};
