/**
 * Stores the AuditEvent resource as `json` (its text, checked for syntax) instead of `jsonb`.
 *
 * Every access inserts one AuditEvent before it is answered, and nothing reads the resource
 * with jsonb operators: AuditEvent search (src/audit/audit-store.ts) filters on the typed index
 * columns and returns the resource whole. Building the jsonb form of a ~2.2 kB event was paid on
 * every INSERT for nothing (measured with the group-commit writer, backend CPU per event: about
 * 25-45 µs less at 16 writers and 20-60 µs less at one, of 80-140 and 250-390). `json` keeps
 * PostgreSQL's check that the text is JSON, and drivers still hand the resource back parsed.
 *
 * - The column's type changes on the parent and every partition (a rewrite of the table). The
 *   change resets a column's compression, so LZ4 (20261124001000) is set again where the engine
 *   has it.
 * - The append-only trigger's read correction compared parts of the resource with jsonb
 *   equality (json has no equality operator): it now casts both sides to jsonb, on that rare
 *   path only, with the same rules (20261123004000).
 */

const CORRECTION_RULES = (cast) => `CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' THEN
        IF current_setting('imaging_lake.audit_correction', true) = OLD.id::text
           AND OLD.outcome = '0'
           AND OLD.recorded > now() - interval '1 hour'
           AND NEW.id = OLD.id
           AND NEW.recorded = OLD.recorded
           AND NEW.type_code = OLD.type_code
           AND NEW.subtype_code IS NOT DISTINCT FROM OLD.subtype_code
           AND NEW.action IS NOT DISTINCT FROM OLD.action
           AND NEW.agent_subject IS NOT DISTINCT FROM OLD.agent_subject
           AND NEW.agent_client_id IS NOT DISTINCT FROM OLD.agent_client_id
           AND NEW.agent_role IS NOT DISTINCT FROM OLD.agent_role
           AND NEW.agent_address IS NOT DISTINCT FROM OLD.agent_address
           AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
           AND (NEW.resource${cast})->'id' = (OLD.resource${cast})->'id'
           AND (NEW.resource${cast})->'recorded' = (OLD.resource${cast})->'recorded'
           AND (NEW.resource${cast})->'type' = (OLD.resource${cast})->'type'
           AND (NEW.resource${cast})->'subtype' IS NOT DISTINCT FROM (OLD.resource${cast})->'subtype'
           AND (NEW.resource${cast})->'action' IS NOT DISTINCT FROM (OLD.resource${cast})->'action'
           AND (NEW.resource${cast})->'agent' = (OLD.resource${cast})->'agent'
           AND (NEW.resource${cast})->'source' = (OLD.resource${cast})->'source'
        THEN
          RETURN NEW;
        END IF;
      END IF;
      RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END $$`;

/** audit_events and each of its partitions (none when the table is not partitioned). */
async function auditTables(knex) {
  const result = await knex.raw(`SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass`);
  const rows = Array.isArray(result) ? result : result.rows;
  return ['audit_events', ...rows.map((r) => r.name)];
}

/** LZ4 again on every table, where the engine has it (as 20261124001000_audit_events_lz4.js). */
async function compressWithLz4(knex) {
  await knex.raw('SAVEPOINT audit_compression');
  try {
    for (const table of await auditTables(knex)) {
      await knex.raw('ALTER TABLE ?? ALTER COLUMN resource SET COMPRESSION lz4', [table]);
    }
    await knex.raw('RELEASE SAVEPOINT audit_compression');
  } catch (err) {
    await knex.raw('ROLLBACK TO SAVEPOINT audit_compression');
    if (err?.code !== '0A000') throw err;
  }
}

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('ALTER TABLE audit_events ALTER COLUMN resource TYPE json USING resource::json');
  await compressWithLz4(knex);
  await knex.raw(CORRECTION_RULES('::jsonb'));
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw(CORRECTION_RULES(''));
  await knex.raw('ALTER TABLE audit_events ALTER COLUMN resource TYPE jsonb USING resource::jsonb');
  await compressWithLz4(knex);
};
