/**
 * The blob ledger: one row per content address the server has written or is writing.
 * STOW claims a row (fresh `claimed_at`) before committing bytes, and the orphan sweeper
 * only deletes blobs whose row it holds locked with an old `claimed_at` and no index
 * reference, so a sweep can never remove bytes that an ingest is about to index.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('blobs', (t) => {
    t.string('key', 64).primary();
    t.bigInteger('size');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('claimed_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['claimed_at']);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('blobs');
};
