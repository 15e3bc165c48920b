/**
 * The projects an access was made within (issue 5: the audit trail is searchable by PIs for their
 * projects). The AuditEvent resource names them as entities (urn:imaging-lake:project); this
 * column repeats them for search, as the other index columns repeat theirs. Not indexed: a PI's
 * search runs newest first and is bounded by its other criteria and its date range. Adding a
 * nullable column without a default changes the catalogue only (the partitions inherit it).
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('ALTER TABLE audit_events ADD COLUMN projects text[]');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw('ALTER TABLE audit_events DROP COLUMN projects');
};
