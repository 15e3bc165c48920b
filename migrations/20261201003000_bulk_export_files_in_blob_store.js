/**
 * Bulk export files are kept in the blob store (pooled S3-compatible storage in production),
 * content-addressed like instances: `blob_key` names the blob, and the orphan sweeper keeps any
 * blob an export file names. `body` stays for files written before, and for servers composed
 * without a blob store; exactly one of the two is set.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.alterTable('bulk_export_files', (t) => {
    t.text('blob_key');
  });
  await knex.raw('ALTER TABLE bulk_export_files ALTER COLUMN body DROP NOT NULL');
  await knex.raw(`ALTER TABLE bulk_export_files ADD CONSTRAINT bulk_export_files_content_check
    CHECK ((body IS NULL) <> (blob_key IS NULL))`);
  // The sweeper asks, for each unreferenced-looking blob, whether an export file names it.
  await knex.raw('CREATE INDEX bulk_export_files_blob_key ON bulk_export_files (blob_key) WHERE blob_key IS NOT NULL');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  // Files kept in the blob store cannot be served without this column: their exports go.
  await knex('bulk_exports').whereIn('id', knex('bulk_export_files').whereNotNull('blob_key').select('export_id')).delete();
  await knex.raw('DROP INDEX IF EXISTS bulk_export_files_blob_key');
  await knex.raw('ALTER TABLE bulk_export_files DROP CONSTRAINT bulk_export_files_content_check');
  await knex.raw('ALTER TABLE bulk_export_files ALTER COLUMN body SET NOT NULL');
  await knex.schema.alterTable('bulk_export_files', (t) => {
    t.dropColumn('blob_key');
  });
};
