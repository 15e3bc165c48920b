/**
 * Compresses the AuditEvent resource with LZ4 instead of PostgreSQL's default pglz.
 *
 * An AuditEvent row is about 2.2 kB, just over the size at which PostgreSQL compresses a row
 * before storing it (TOAST_TUPLE_THRESHOLD, ~2 kB), so every audit INSERT compressed its JSONB
 * resource, and pglz was the largest single item of the INSERT's backend CPU (perf: ~6% of a
 * durable one-row INSERT, more than all five indexes together). LZ4 does the same in a fraction
 * of the time (measured: 30-45 µs less backend CPU per event, durable or not) and stores the row
 * almost as small (1.34 kB against 1.25 kB), so 100M events still fit as before.
 *
 * Only rows written from now on are compressed with LZ4; older ones stay pglz and read as
 * before. New monthly partitions take the setting from the parent; existing partitions are set
 * here one by one (ALTER TABLE ... SET COMPRESSION does not recurse). A server built without
 * LZ4 support (or an engine that refuses it) keeps pglz: the migration then changes nothing.
 */

/** audit_events and each of its partitions (none when the table is not partitioned). */
async function auditTables(knex) {
  const result = await knex.raw(`SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass`);
  const rows = Array.isArray(result) ? result : result.rows;
  return ['audit_events', ...rows.map((r) => r.name)];
}

async function setCompression(knex, method) {
  await knex.raw('SAVEPOINT audit_compression');
  try {
    for (const table of await auditTables(knex)) {
      await knex.raw(`ALTER TABLE ?? ALTER COLUMN resource SET COMPRESSION ${method}`, [table]);
    }
    await knex.raw('RELEASE SAVEPOINT audit_compression');
  } catch (err) {
    await knex.raw('ROLLBACK TO SAVEPOINT audit_compression');
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
