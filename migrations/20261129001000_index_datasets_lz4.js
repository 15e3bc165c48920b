/**
 * Compresses the stored headers of the DICOM index (`instances.dataset`, and the study and
 * series subsets `studies.dataset`, `series.dataset`) with LZ4 instead of PostgreSQL's default
 * pglz.
 *
 * An instance row with its header as JSONB is over the size at which PostgreSQL compresses a row
 * before storing it (TOAST_TUPLE_THRESHOLD, ~2 kB; a CT slice's header is ~2.2 kB of JSON), so
 * every STOW compressed it, and pglz_compress was the largest single function of the PostgreSQL
 * backends' CPU under single-instance STOWs (perf, bench/stow.ts x1 c8: ~2% of their samples).
 * LZ4 does the same in a fraction of the time (as for audit_events.resource, 20261124001000, and
 * studies.qido_json, 20261126001000) and stores the header almost as small (a CT slice: 1.37 kB
 * against 1.16 kB). The study and series subsets are compressed whenever a changed attribute
 * rewrites their row.
 *
 * SET COMPRESSION is a catalogue change: rows written from now on are compressed with LZ4,
 * older ones stay pglz and read as before. A server built without LZ4 support (or an engine that
 * refuses it, as the embedded one does) keeps pglz: the migration then changes nothing.
 */
const COLUMNS = [
  ['instances', 'dataset'],
  ['studies', 'dataset'],
  ['series', 'dataset'],
];

async function setCompression(knex, method) {
  await knex.raw('SAVEPOINT index_dataset_compression');
  try {
    for (const [table, column] of COLUMNS) {
      await knex.raw(`ALTER TABLE ?? ALTER COLUMN ?? SET COMPRESSION ${method}`, [table, column]);
    }
    await knex.raw('RELEASE SAVEPOINT index_dataset_compression');
  } catch (err) {
    await knex.raw('ROLLBACK TO SAVEPOINT index_dataset_compression');
    // No LZ4 in this build of the engine (feature_not_supported): keep its default.
    if (err?.code !== '0A000') throw err;
  }
}

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await setCompression(knex, 'lz4');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await setCompression(knex, 'pglz');
};
