/**
 * DIMSE peers managed through the admin API (/admin/dimse/peers), beside the ones DIMSE_PEERS
 * configures: one row per AE title, its settings as DIMSE_PEERS spells them.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('dimse_peers', (t) => {
    t.text('ae_title').primary();
    t.jsonb('definition').notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('updated_by').notNullable();
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTable('dimse_peers');
};
