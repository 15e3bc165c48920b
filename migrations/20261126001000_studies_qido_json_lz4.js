/**
 * Compresses the study result text (`studies.qido_json`) with LZ4 instead of PostgreSQL's
 * default pglz, in the table and in the covering index studies_qido_page_idx (20261125001000).
 *
 * The text (~0.9 kB) is longer than the size at which PostgreSQL compresses an index entry's
 * value (TOAST_INDEX_TARGET, 512 bytes), so every entry of the covering index holds it
 * compressed, and a study page read from that index decompresses each text it sends. Measured
 * at 1M instances on a 30-day page of 820 studies (named prepared statement, backend CPU per
 * query): 2.0-2.4 ms with pglz, 1.4-1.9 ms with LZ4; the index is 54 MB instead of 62 MB. Every
 * STOW into a known study rewrites the text (the counts are in it) and compresses it again,
 * which LZ4 also does faster. Stored uncompressed (STORAGE EXTERNAL) the index doubles to 112 MB
 * and the page costs 1.7-1.8 ms: more buffers to read than decompression saves.
 *
 * SET COMPRESSION changes the column and the index column that copies it (PostgreSQL applies it
 * to simple index columns as well); existing entries keep pglz until rebuilt, so the index is
 * rebuilt here (1.4 s at 100,000 studies; writes to studies wait meanwhile). A server built
 * without LZ4 support (or an engine that refuses it) keeps pglz: the migration then changes nothing.
 */

async function setCompression(knex, method) {
  await knex.raw('SAVEPOINT qido_json_compression');
  try {
    await knex.raw(`ALTER TABLE studies ALTER COLUMN qido_json SET COMPRESSION ${method}`);
    await knex.raw('RELEASE SAVEPOINT qido_json_compression');
  } catch (err) {
    await knex.raw('ROLLBACK TO SAVEPOINT qido_json_compression');
    // No LZ4 in this build of the engine (feature_not_supported): keep its default.
    if (err?.code !== '0A000') throw err;
    return;
  }
  await knex.raw('REINDEX INDEX studies_qido_page_idx');
}

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await setCompression(knex, 'lz4');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await setCompression(knex, 'pglz');
};
