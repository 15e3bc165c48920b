/**
 * The projects an access was made within (issue 5: the audit trail is searchable by PIs for their
 * projects). The AuditEvent resource names them as entities (urn:imaging-lake:project); this
 * column repeats them for search, as the other index columns repeat theirs. Not indexed: a PI's
 * search runs newest first and is bounded by its other criteria and its date range. Adding a
 * nullable column without a default changes the catalogue only (the partitions inherit it).
 *
 * The trail stays append-only: the one update it allows (the correction of an early read's
 * outcome, audit_events_append_only) compares the columns it knows; a trigger of its own keeps
 * this one as written.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('ALTER TABLE audit_events ADD COLUMN projects text[]');
  await knex.raw(`CREATE FUNCTION audit_events_projects_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.projects IS DISTINCT FROM OLD.projects THEN
        RAISE EXCEPTION 'audit_events is append-only: the projects of an event cannot change' USING ERRCODE = 'insufficient_privilege';
      END IF;
      RETURN NEW;
    END $$`);
  await knex.raw(`CREATE TRIGGER audit_events_projects_fixed BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_projects_fixed()`);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw('DROP TRIGGER IF EXISTS audit_events_projects_fixed ON audit_events');
  await knex.raw('DROP FUNCTION IF EXISTS audit_events_projects_fixed()');
  await knex.raw('ALTER TABLE audit_events DROP COLUMN projects');
};
