/**
 * A bulk export whose server process stopped is taken over by another process (its grant and
 * request are kept with it) rather than failed; `attempts` counts the takeovers, so an export
 * that keeps stopping its process is failed after a few.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.alterTable('bulk_exports', (t) => {
    t.integer('attempts').notNullable().defaultTo(0);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.alterTable('bulk_exports', (t) => {
    t.dropColumn('attempts');
  });
};
