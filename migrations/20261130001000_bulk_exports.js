/**
 * FHIR Bulk Data exports (Bulk Data Access IG 2.0, `$export`): one row per kick-off, owned by
 * the token's issuer and subject (only they may poll it, download its files or cancel it), and
 * its output files (NDJSON, one resource type each) kept in the database until the export
 * expires. The job runs in the process that accepted it, with the kick-off's authorization held in
 * memory; that process beats `heartbeat_at` while it holds the job, so any process (replicas share
 * the table) can tell a job whose process stopped: it is reported and marked failed.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('bulk_exports', (t) => {
    t.uuid('id').primary();
    t.text('owner').notNullable();
    t.text('state').notNullable();
    t.text('request').notNullable();
    t.timestamp('transaction_time', { useTz: true }).notNullable();
    t.jsonb('output');
    t.jsonb('error');
    t.text('progress');
    t.timestamp('heartbeat_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finished_at', { useTz: true });
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.index(['expires_at']);
  });
  await knex.raw(`ALTER TABLE bulk_exports ADD CONSTRAINT bulk_exports_state_check
    CHECK (state IN ('accepted', 'in-progress', 'completed', 'failed'))`);
  await knex.schema.createTable('bulk_export_files', (t) => {
    t.uuid('export_id').notNullable().references('bulk_exports.id').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.text('resource_type').notNullable();
    t.integer('count').notNullable();
    t.binary('body').notNullable();
    t.primary(['export_id', 'seq']);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('bulk_export_files');
  await knex.schema.dropTableIfExists('bulk_exports');
};
